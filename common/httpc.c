/*
 * httpc.c - HTTPS requests through libcurl's multi interface on the
 * caller's libevent loop: curl tells which sockets to watch and when to
 * wake it (socket and timer callbacks), the loop tells curl what happened
 * (curl_multi_socket_action). One multi handle keeps the connections alive
 * between requests; one share handle keeps the TLS sessions for resumption.
 */
#include <sys/queue.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "file.h"
#include "httpc.h"

#define HC_MAXCONNECTS	16		/* idle connections kept */
#define HC_MAXTOTAL	256		/* open at once; more wait in curl */
#define HC_FILE_MAX	(1024 * 1024)	/* a PEM bundle, certificate or key */

struct hc_xfer;

struct httpc {
	struct event_base	*base;
	LIST_HEAD(, hc_xfer)	 xfers;		/* under way */
	CURLM			*multi;
	CURLSH			*share;
	struct event		*timer;
	int			 adding;	/* in curl_multi_add_handle */
	struct curl_blob	 ca, cert, key;	/* len 0 = not set */
	const char		*protocols;
};

struct hc_xfer {
	LIST_ENTRY(hc_xfer)	 entry;
	struct httpc		*h;
	CURL			*easy;
	struct curl_slist	*hdrs;
	char			*url;
	char			*body;
	size_t			 len;
	int			 too_big;
	httpc_cb		 cb;
	void			*arg;
	char			 errbuf[CURL_ERROR_SIZE];
};

/* Read a whole (small) file now: after the privilege drop it may be closed. */
static int
hc_slurp(const char *path, struct curl_blob *b, char *err, size_t errlen)
{
	struct stat	 st;
	ssize_t		 n;
	int		 fd;

	if ((fd = file_open(path, &st)) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    st.st_size > HC_FILE_MAX ||
	    (b->data = malloc(st.st_size)) == NULL) {
		snprintf(err, errlen, "%s: not a regular file, empty or over "
		    "%d bytes", path, HC_FILE_MAX);
		close(fd);
		return -1;
	}
	n = read(fd, b->data, st.st_size);
	close(fd);
	if (n != st.st_size) {
		snprintf(err, errlen, "%s: short read", path);
		free(b->data);
		b->data = NULL;
		return -1;
	}
	b->len = (size_t)n;
	b->flags = CURL_BLOB_COPY;
	return 0;
}

static void
hc_blob_free(struct curl_blob *b)
{
	if (b->data != NULL)
		explicit_bzero(b->data, b->len);
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/*
 * curl reports a bad bundle or a certificate/key mismatch only at the first
 * handshake; OpenSSL tells at once (configuration load and uplink start),
 * so the error is not mistaken for an unreachable upstream.
 */
int
httpc_check(const struct httpc_opts *o, char *err, size_t errlen)
{
	SSL_CTX	*ctx = SSL_CTX_new(TLS_client_method());
	int	 rv = -1;

	if (ctx == NULL)
		snprintf(err, errlen, "SSL_CTX_new failed");
	else if (o->ca_file != NULL && *o->ca_file != '\0' &&
	    SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1)
		snprintf(err, errlen, "%s: no CA certificates in it",
		    o->ca_file);
	else if (o->client_cert != NULL &&
	    SSL_CTX_use_certificate_chain_file(ctx, o->client_cert) != 1)
		snprintf(err, errlen, "%s: not a PEM certificate",
		    o->client_cert);
	else if (o->client_cert != NULL &&
	    (SSL_CTX_use_PrivateKey_file(ctx, o->client_key,
	    SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1))
		snprintf(err, errlen, "%s: not the PEM key of %s",
		    o->client_key, o->client_cert);
	else
		rv = 0;
	SSL_CTX_free(ctx);
	return rv;
}

/* ---- the loop side ---- */

static void
hc_finish(struct hc_xfer *x, CURLcode rc)
{
	struct httpc_res	 r;
	curl_off_t		 up = 0, down = 0, ra = 0;
	long			 status = 0, hin = 0, hout = 0;

	memset(&r, 0, sizeof(r));
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &hout);
	curl_easy_getinfo(x->easy, CURLINFO_HEADER_SIZE, &hin);
	curl_easy_getinfo(x->easy, CURLINFO_SIZE_UPLOAD_T, &up);
	curl_easy_getinfo(x->easy, CURLINFO_SIZE_DOWNLOAD_T, &down);
	curl_easy_getinfo(x->easy, CURLINFO_RETRY_AFTER, &ra);
	r.bytes_out = (size_t)hout + (size_t)up;
	r.sent = hout > 0;
	r.bytes_in = (size_t)hin + (size_t)down;
	r.retry_after = ra > 0 ? (int)ra : -1;
	switch (rc) {
	case CURLE_OK:
		r.status = (int)status;
		r.body = x->body != NULL ? x->body : "";
		r.bodylen = x->len;
		break;
	case CURLE_OPERATION_TIMEDOUT:
		r.err = HTTPC_ETIMEOUT;
		break;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_CLIENTCERT:
		r.err = HTTPC_ETLS;
		break;
	case CURLE_WRITE_ERROR:
	case CURLE_FILESIZE_EXCEEDED:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
		r.err = HTTPC_EPROTO;
		break;
	default:
		r.err = HTTPC_ECONNECT;
	}
	if (x->too_big || rc == CURLE_FILESIZE_EXCEEDED)
		snprintf(x->errbuf, sizeof(x->errbuf), "response body over %d "
		    "bytes", HTTPC_BODY_MAX);
	r.errstr = x->errbuf[0] != '\0' ? x->errbuf : curl_easy_strerror(rc);
	x->cb(&r, x->arg);
}

static void
hc_xfer_free(struct hc_xfer *x)
{
	struct curl_slist *l;

	LIST_REMOVE(x, entry);
	if (x->easy != NULL) {
		curl_multi_remove_handle(x->h->multi, x->easy);
		curl_easy_cleanup(x->easy);
	}
	for (l = x->hdrs; l != NULL; l = l->next)	/* holds the key */
		explicit_bzero(l->data, strlen(l->data));
	curl_slist_free_all(x->hdrs);
	free(x->url);
	free(x->body);
	free(x);
}

/* Hand every finished transfer to its caller. */
static void
hc_reap(struct httpc *h)
{
	struct hc_xfer	*x;
	CURLMsg		*m;
	CURLcode	 rc;
	int		 left;

	while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
		if (m->msg != CURLMSG_DONE)
			continue;
		rc = m->data.result;	/* m dies with the removal below */
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		/* Off the multi first: the callback may start the next try. */
		curl_multi_remove_handle(h->multi, x->easy);
		hc_finish(x, rc);
		hc_xfer_free(x);
	}
}

static void
hc_event(evutil_socket_t fd, short what, void *arg)
{
	struct httpc	*h = arg;
	int		 running, flags = 0;

	if (what & EV_READ)
		flags |= CURL_CSELECT_IN;
	if (what & EV_WRITE)
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(h->multi, fd, flags, &running);
	hc_reap(h);
}

static void
hc_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct httpc	*h = arg;
	int		 running;

	(void)fd, (void)what;
	curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	hc_reap(h);
}

/* CURLMOPT_SOCKETFUNCTION: watch s for what curl waits on, or stop. */
static int
hc_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *sockp)
{
	struct httpc	*h = userp;
	struct event	*ev = sockp;
	short		 kind = EV_PERSIST;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (ev != NULL)
			event_free(ev);
		curl_multi_assign(h->multi, s, NULL);
		return 0;
	}
	if (what & CURL_POLL_IN)
		kind |= EV_READ;
	if (what & CURL_POLL_OUT)
		kind |= EV_WRITE;
	if (ev == NULL) {
		if ((ev = event_new(h->base, s, kind, hc_event, h)) == NULL)
			return -1;
		curl_multi_assign(h->multi, s, ev);
	} else {
		event_del(ev);
		event_assign(ev, h->base, s, kind, hc_event, h);
	}
	return event_add(ev, NULL);
}

/* CURLMOPT_TIMERFUNCTION: one timer for the whole multi handle. */
static int
hc_timer_cb(CURLM *multi, long ms, void *userp)
{
	struct httpc	*h = userp;
	struct timeval	 tv = { ms / 1000, (ms % 1000) * 1000 };

	(void)multi;
	if (ms < 0)
		return evtimer_del(h->timer);
	/*
	 * A new transfer asks for 0 ms: run it in this loop pass rather than
	 * after another epoll_wait, which is a wake-up on every miss. Only
	 * then: a 0 ms asked for from inside curl would spin this pass.
	 */
	if (ms == 0 && h->adding) {
		evtimer_del(h->timer);
		event_active(h->timer, EV_TIMEOUT, 1);
		return 0;
	}
	return evtimer_add(h->timer, &tv);
}

/* ---- setup ---- */

static int
hc_multi_init(struct httpc *h)
{
	if ((h->multi = curl_multi_init()) == NULL ||
	    (h->share = curl_share_init()) == NULL ||
	    (h->timer = evtimer_new(h->base, hc_timeout, h)) == NULL)
		return -1;
	curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, hc_socket_cb);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, hc_timer_cb);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)HC_MAXCONNECTS);
	curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
	    (long)HC_MAXTOTAL);
	return 0;
}

struct httpc *
httpc_new(struct event_base *base, const struct httpc_opts *o, char *err,
    size_t errlen)
{
	static int	 inited;
	struct httpc	*h;

	/*
	 * Before any thread (curl's resolver starts some) and as root. curl
	 * would write the TLS secrets to $SSLKEYLOGFILE: keys stay off disk.
	 */
	if (!inited)
		unsetenv("SSLKEYLOGFILE");
	if (!inited && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "curl_global_init failed");
		return NULL;
	}
	inited = 1;
	if (httpc_check(o, err, errlen) == -1)
		return NULL;
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	h->base = base;
	LIST_INIT(&h->xfers);
	h->protocols = o->allow_http ? "http,https" : "https";
	if ((o->ca_file != NULL && *o->ca_file != '\0' &&
	    hc_slurp(o->ca_file, &h->ca, err, errlen) == -1) ||
	    (o->client_cert != NULL && (hc_slurp(o->client_cert, &h->cert,
	    err, errlen) == -1 || hc_slurp(o->client_key, &h->key, err,
	    errlen) == -1))) {
		httpc_free(h);
		return NULL;
	}
	if (hc_multi_init(h) == -1) {
		snprintf(err, errlen, "curl_multi_init failed");
		httpc_free(h);
		return NULL;
	}
	return h;
}

void
httpc_free(struct httpc *h)
{
	if (h == NULL)
		return;
	while (!LIST_EMPTY(&h->xfers))
		hc_xfer_free(LIST_FIRST(&h->xfers));
	curl_multi_cleanup(h->multi);	/* closes the cached connections */
	curl_share_cleanup(h->share);
	if (h->timer != NULL)
		event_free(h->timer);
	hc_blob_free(&h->ca);
	hc_blob_free(&h->cert);
	hc_blob_free(&h->key);
	free(h);
}

/* ---- one request ---- */

/* CURLOPT_WRITEFUNCTION: the body, bounded. */
static size_t
hc_write(char *p, size_t size, size_t n, void *arg)
{
	struct hc_xfer	*x = arg;
	char		*nb;

	n *= size;
	if (x->len + n > HTTPC_BODY_MAX) {
		x->too_big = 1;
		return 0;	/* aborts with CURLE_WRITE_ERROR */
	}
	if ((nb = realloc(x->body, x->len + n + 1)) == NULL)
		return 0;
	x->body = nb;
	memcpy(x->body + x->len, p, n);
	x->len += n;
	x->body[x->len] = '\0';
	return n;
}

/* The request's URL, header list and body; -1 on a bad path or no memory. */
static int
hc_build(struct hc_xfer *x, const struct httpc_req *req)
{
	const char	*path = req->path != NULL ? req->path : "";
	size_t		 ul = strlen(req->url);
	struct curl_slist *l;
	char		 line[256];

	if (ul > 0 && req->url[ul - 1] == '/' && *path == '/')
		ul--;
	if (asprintf(&x->url, "%.*s%s", (int)ul, req->url, path) == -1) {
		x->url = NULL;
		return -1;
	}
	/*
	 * No Expect: 100-continue round trip before a usage batch, and not
	 * curl's default Accept header (any type): the upstream answers
	 * JSON anyway, and every refresh would carry its 13 bytes (issue
	 * 13, row 8).
	 */
	if ((x->hdrs = curl_slist_append(NULL, "Expect:")) == NULL ||
	    (l = curl_slist_append(x->hdrs, "Accept:")) == NULL)
		return -1;	/* hc_xfer_free frees what is in x->hdrs */
	x->hdrs = l;
	if (req->key != NULL) {
		snprintf(line, sizeof(line), "Authorization: Token %s",
		    req->key);
		x->hdrs = curl_slist_append(x->hdrs, line);
		explicit_bzero(line, sizeof(line));
		if (x->hdrs == NULL)
			return -1;
	}
	if (req->header != NULL &&
	    (x->hdrs = curl_slist_append(x->hdrs, req->header)) == NULL)
		return -1;
	if (req->ctype != NULL) {
		snprintf(line, sizeof(line), "Content-Type: %s", req->ctype);
		if ((x->hdrs = curl_slist_append(x->hdrs, line)) == NULL)
			return -1;
	}
	return 0;
}

static void
hc_setopts(struct hc_xfer *x, const struct httpc_req *req)
{
	struct httpc	*h = x->h;
	CURL		*e = x->easy;

	curl_easy_setopt(e, CURLOPT_URL, x->url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_SHARE, h->share);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, h->protocols);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_SSLVERSION, CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (h->ca.len > 0)
		curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &h->ca);
	if (h->cert.len > 0) {
		curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &h->cert);
		curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &h->key);
	}
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
	curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
	    (curl_off_t)HTTPC_BODY_MAX);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, hc_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
	/* A PUT with a body (seat grants) is a POST renamed, for curl. */
	if (strcmp(req->method, "POST") == 0 || req->body != NULL) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)req->bodylen);
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS,
		    req->body != NULL ? req->body : "");
	}
	if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "POST") != 0)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
}

int
httpc_request(struct httpc *h, const struct httpc_req *req, httpc_cb cb,
    void *arg)
{
	struct hc_xfer	*x;
	CURLMcode	 rc;

	if ((x = calloc(1, sizeof(*x))) == NULL)
		return -1;
	x->h = h;
	x->cb = cb;
	x->arg = arg;
	LIST_INSERT_HEAD(&h->xfers, x, entry);
	if ((x->easy = curl_easy_init()) == NULL || hc_build(x, req) == -1) {
		hc_xfer_free(x);
		return -1;
	}
	hc_setopts(x, req);
	/*
	 * Only arms the timer: the transfer starts from the loop (in this
	 * pass, see hc_timer_cb), never before this returns.
	 */
	h->adding = 1;
	rc = curl_multi_add_handle(h->multi, x->easy);
	h->adding = 0;
	if (rc != CURLM_OK) {
		hc_xfer_free(x);
		return -1;
	}
	return 0;
}

/*
 * httpc.c - one-shot HTTP/1.1 client for the uplink (libevent + OpenSSL).
 *
 * A proxy miss waits for its upstream request, so the connect and the
 * handshake are on a client's critical path: a connection whose response
 * had a known length is parked in a small idle pool and taken by the next
 * request to the same upstream.  Concurrent requests still open their own
 * connections, one request at a time on each (no pipelining).  A new
 * connection at least skips the full handshake: the last session per
 * upstream is kept and resumed.  One timer bounds the whole attempt.
 */

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/util.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "httpc.h"
#include "log.h"

#define HC_HDR_MAX	(16 * 1024)	/* status line + headers (+ trailers) */
#define HC_CHUNKLINE_MAX 1024
#define HC_TIMEOUT_DEF	30000
#define HC_SESS_MAX	16		/* upstreams with a resumable session */
#define HC_IDLE_PER	4		/* idle connections per upstream */
#define HC_IDLE_MAX	32		/* idle connections in all */
#define HC_IDLE_MS	30000		/* an idle connection lives this long */

enum hc_state {
	ST_CONNECT,		/* TCP to the server or the proxy */
	ST_PROXY,		/* waiting for the CONNECT answer */
	ST_TLS,			/* handshake */
	ST_STATUS,
	ST_HEADERS,
	ST_BODY,		/* Content-Length, or until close when clen < 0 */
	ST_CHUNK_SIZE,
	ST_CHUNK_DATA,
	ST_CHUNK_END,		/* CRLF after chunk data */
	ST_TRAILER,
	ST_DONE
};

struct hc_url {
	int		 tls;
	int		 port;
	int		 iplit;		/* host is an IPv4/IPv6 literal */
	char		 host[256];	/* without the [] of an IPv6 literal */
	const char	*path;		/* borrowed from the url string */
};

struct hc_conn {
	struct event_base	*base;
	struct evdns_base	*dns;
	httpc_cb		 cb;
	void			*arg;
	struct hc_url		 url;
	struct hc_url		 proxy;
	int			 proxied;
	int			 starting;	/* inside httpc_request() */
	int			 finished;
	int			 timeout_ms;
	int			 head;		/* HEAD: never a body */
	int			 proxy_st;	/* status of the CONNECT answer */
	int			 reused;	/* taken from the pool */
	int			 retried;	/* pooled one was stale */
	int			 noreuse;	/* response ends the conn */
	enum hc_state		 state;
	SSL_CTX			*ctx;
	unsigned long		 ctxid;		/* 0: no session cache */
	struct bufferevent	*sock;		/* TCP */
	struct bufferevent	*bev;		/* sock, or the TLS filter on it */
	struct evbuffer_cb_entry *cnt_in, *cnt_out;
	struct event		*timer;
	struct evbuffer		*req;
	struct evbuffer		*body;
	size_t			 hdrbytes;
	long long		 clen;
	int			 chunked;
	size_t			 chunkleft;
	struct httpc_res	 res;
	char			 errbuf[256];
};

/*
 * The session cache: a resumed handshake sends no certificate and makes no
 * signature or chain check, the costly part of a new upstream connection.
 * Skipping the check is safe only for the peer it was done for, so an entry
 * is only ever offered to the same host and port (the SNI follows from the
 * host) under the same SSL_CTX, i.e. the same trust store.
 */
struct hc_sess {
	unsigned long	 ctxid;		/* 0: slot unused */
	int		 port;
	char		 host[256];
	SSL_SESSION	*sess;
	unsigned long	 stamp;		/* last store or use, for LRU */
};

/*
 * An idle connection, keyed by everything that makes it the same upstream:
 * the loop it runs on, the trust store (as for sessions), scheme, host,
 * port, and the proxy the tunnel goes through.
 */
struct hc_idle {
	struct event_base	*base;		/* NULL: slot unused */
	unsigned long		 ctxid;
	int			 tls;
	int			 port;
	int			 proxied;
	int			 pport;
	char			 host[256];
	char			 phost[256];
	struct bufferevent	*sock, *bev;
	struct event		*timer;
	unsigned long		 stamp;		/* when parked, for LRU */
};

static struct hc_sess	 hc_sessions[HC_SESS_MAX];
static struct hc_idle	 hc_idle[HC_IDLE_MAX];
static unsigned long	 hc_idle_clock;
static int		 hc_idle_ms = -1;	/* -1: not read yet */
static unsigned long	 hc_sess_clock;
static unsigned long	 hc_ctx_ids;
static int		 hc_ctx_idx = -1;

static void	hc_eventcb(struct bufferevent *, short, void *);
static void	hc_readcb(struct bufferevent *, void *);

SSL_CTX *
httpc_ctx_new(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX		*ctx;
	char		 ebuf[256];

	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		snprintf(err, errlen, "SSL_CTX_new failed");
		goto fail;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		snprintf(err, errlen, "cannot set TLS 1.2 minimum");
		goto fail;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (ca_file != NULL && *ca_file != '\0') {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			ERR_error_string_n(ERR_peek_last_error(), ebuf,
			    sizeof(ebuf));
			snprintf(err, errlen, "ca_file %s: %s", ca_file, ebuf);
			goto fail;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		snprintf(err, errlen, "cannot load the system CA store");
		goto fail;
	}
	return ctx;
 fail:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

/*
 * A number for the context, kept in its ex_data.  Its address would not do:
 * a context freed on reload and a new one with another ca_file can land at
 * the same address, and must not inherit sessions the old one verified.
 */
static unsigned long
hc_ctx_id(SSL_CTX *ctx)
{
	void	*v;

	if (hc_ctx_idx == -1)
		hc_ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL,
		    NULL);
	if (hc_ctx_idx == -1)
		return 0;
	if ((v = SSL_CTX_get_ex_data(ctx, hc_ctx_idx)) != NULL)
		return (unsigned long)(uintptr_t)v;
	if (SSL_CTX_set_ex_data(ctx, hc_ctx_idx,
	    (void *)(uintptr_t)(hc_ctx_ids + 1)) != 1)
		return 0;
	return ++hc_ctx_ids;
}

static void
hc_sess_clear(struct hc_sess *e)
{
	SSL_SESSION_free(e->sess);
	memset(e, 0, sizeof(*e));
}

static struct hc_sess *
hc_sess_find(const struct hc_conn *c)
{
	struct hc_sess	*e;
	size_t		 i;

	if (c->ctxid == 0)
		return NULL;
	for (i = 0; i < HC_SESS_MAX; i++) {
		e = &hc_sessions[i];
		if (e->ctxid == c->ctxid && e->port == c->url.port &&
		    strcmp(e->host, c->url.host) == 0)
			return e;
	}
	return NULL;
}

/* Offer the cached session, unless it is spent or past its lifetime. */
static void
hc_sess_offer(struct hc_conn *c, SSL *ssl)
{
	struct hc_sess	*e;
	time_t		 now = time(NULL);

	if ((e = hc_sess_find(c)) == NULL)
		return;
	if (!SSL_SESSION_is_resumable(e->sess) ||
	    now - SSL_SESSION_get_time(e->sess) >=
	    SSL_SESSION_get_timeout(e->sess)) {
		hc_sess_clear(e);
		return;
	}
	/* a refused session is no error: the server just does a full one */
	if (SSL_set_session(ssl, e->sess) == 1)
		e->stamp = ++hc_sess_clock;
}

/* An unused slot, else the least recently used one. */
static struct hc_sess *
hc_sess_victim(void)
{
	struct hc_sess	*e, *lru = &hc_sessions[0];
	size_t		 i;

	for (i = 0; i < HC_SESS_MAX; i++) {
		e = &hc_sessions[i];
		if (e->ctxid == 0)
			return e;
		if (e->stamp < lru->stamp)
			lru = e;
	}
	return lru;
}

/* Forget a session the server's handshake failed on. */
static void
hc_sess_drop(struct hc_conn *c)
{
	struct hc_sess	*e;

	if ((e = hc_sess_find(c)) != NULL)
		hc_sess_clear(e);
}

/*
 * Keep the connection's session once the response is in: with TLS 1.3 the
 * tickets arrive after the handshake, ahead of the response.
 */
static void
hc_sess_save(struct hc_conn *c, SSL *ssl)
{
	SSL_SESSION	*s;
	struct hc_sess	*e;

	if (c->ctxid == 0 || (s = SSL_get1_session(ssl)) == NULL)
		return;
	if (!SSL_SESSION_is_resumable(s)) {
		SSL_SESSION_free(s);
		return;
	}
	if ((e = hc_sess_find(c)) == NULL)
		e = hc_sess_victim();
	hc_sess_clear(e);
	e->ctxid = c->ctxid;
	e->port = c->url.port;
	memcpy(e->host, c->url.host, sizeof(e->host));
	e->sess = s;
	e->stamp = ++hc_sess_clock;
}

/* Host names as DNS allows them; anything else could smuggle headers. */
static int
hc_host_ok(struct hc_url *u, int bracket)
{
	struct in6_addr	 a6;
	struct in_addr	 a4;
	const char	*p;

	if (bracket) {
		u->iplit = 1;
		return inet_pton(AF_INET6, u->host, &a6) == 1 ? 0 : -1;
	}
	if (inet_pton(AF_INET, u->host, &a4) == 1) {
		u->iplit = 1;
		return 0;
	}
	for (p = u->host; *p != '\0'; p++)
		if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' &&
		    *p != '_')
			return -1;
	return 0;
}

static int
hc_port(const char **sp, int *port)
{
	const char	*s = *sp;
	long		 v = 0;

	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		v = v * 10 + (*s - '0');
		if (v > 65535)
			return -1;
	}
	if (v == 0)
		return -1;
	*port = (int)v;
	*sp = s;
	return 0;
}

/* Printable, no spaces: safe to put on the request line. */
static int
hc_token_ok(const char *s, int spaces)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f ||
		    (*s == ' ' && !spaces))
			return 0;
	return 1;
}

/*
 * scheme://host[:port][/path].  A proxy url may omit the scheme and must be
 * plain http: TLS to the proxy itself is not supported.
 */
static int
hc_parse_url(const char *s, struct hc_url *u, int proxy)
{
	const char	*end;
	size_t		 hlen;
	int		 bracket;

	memset(u, 0, sizeof(*u));
	if (strncasecmp(s, "https://", 8) == 0 && !proxy) {
		u->tls = 1;
		u->port = 443;
		s += 8;
	} else if (strncasecmp(s, "http://", 7) == 0) {
		u->port = 80;
		s += 7;
	} else if (proxy && strstr(s, "://") == NULL)
		u->port = 80;
	else
		return -1;
	if ((bracket = *s == '[')) {
		if ((end = strchr(s, ']')) == NULL)
			return -1;
		hlen = end - s - 1;
		s++;
	} else {
		hlen = strcspn(s, ":/");
		end = s + hlen - 1;
	}
	if (hlen == 0 || hlen >= sizeof(u->host))
		return -1;
	memcpy(u->host, s, hlen);
	s = end + 1;
	if (*s == ':') {
		s++;
		if (hc_port(&s, &u->port) == -1)
			return -1;
	}
	if ((*s != '\0' && *s != '/') || !hc_token_ok(s, 0))
		return -1;
	u->path = s;
	return hc_host_ok(u, bracket);
}

/* host[:port] as in Host: and CONNECT, IPv6 literals in brackets. */
static void
hc_authority(const struct hc_url *u, int always_port, char *buf, size_t len)
{
	int	 v6 = strchr(u->host, ':') != NULL;
	int	 defport = u->port == (u->tls ? 443 : 80);

	if (always_port || !defport)
		snprintf(buf, len, "%s%s%s:%d", v6 ? "[" : "", u->host,
		    v6 ? "]" : "", u->port);
	else
		snprintf(buf, len, "%s%s%s", v6 ? "[" : "", u->host,
		    v6 ? "]" : "");
}

/*
 * NO_PROXY as curl reads it: comma list of host names, each matching the
 * host itself or any name under it ("example.com" and ".example.com" both
 * match "a.example.com"); "*" disables the proxy.  No CIDR ranges.
 */
static int
hc_no_proxy(const char *host)
{
	const char	*list, *tok;
	size_t		 hl = strlen(host), tl;

	if ((list = getenv("NO_PROXY")) == NULL || *list == '\0')
		list = getenv("no_proxy");
	if (list == NULL)
		return 0;
	while (*list != '\0') {
		list += strspn(list, ", \t");
		tok = list;
		tl = strcspn(list, ", \t");
		list += tl;
		if (tl == 1 && *tok == '*')
			return 1;
		if (tl > 0 && *tok == '.') {
			tok++;
			tl--;
		}
		if (tl == 0)
			continue;
		if (hl == tl && strncasecmp(host, tok, tl) == 0)
			return 1;
		if (hl > tl && host[hl - tl - 1] == '.' &&
		    strncasecmp(host + hl - tl, tok, tl) == 0)
			return 1;
	}
	return 0;
}

static int
hc_setup_proxy(struct hc_conn *c)
{
	const char	*env;

	if (c->url.tls) {
		if ((env = getenv("HTTPS_PROXY")) == NULL || *env == '\0')
			env = getenv("https_proxy");
	} else {
		if ((env = getenv("HTTP_PROXY")) == NULL || *env == '\0')
			env = getenv("http_proxy");
	}
	if (env == NULL || *env == '\0' || hc_no_proxy(c->url.host))
		return 0;
	if (hc_parse_url(env, &c->proxy, 1) == -1 ||
	    (*c->proxy.path != '\0' && strcmp(c->proxy.path, "/") != 0)) {
		log_warnx("httpc: unusable proxy \"%s\" (want http://host:port)",
		    env);
		return -1;
	}
	c->proxied = 1;
	return 0;
}

/* The url's path prefix and req->path joined with exactly one '/'. */
static int
hc_add_path(struct evbuffer *b, const char *prefix, const char *path)
{
	size_t	 pl = strlen(prefix);

	if (path == NULL)
		path = "";
	if (!hc_token_ok(path, 0))
		return -1;
	if (pl > 0 && prefix[pl - 1] == '/' && *path == '/')
		pl--;
	if (pl == 0 && *path != '/')
		evbuffer_add(b, "/", 1);
	evbuffer_add(b, prefix, pl);
	return evbuffer_add(b, path, strlen(path));
}

static int
hc_build(struct hc_conn *c, const struct httpc_req *req)
{
	struct evbuffer	*b = c->req;
	const char	*m = req->method ? req->method : "GET";
	char		 auth[300];
	int		 nobody;

	if (*m == '\0' || strspn(m, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(m))
		return -1;
	if ((req->key != NULL && !hc_token_ok(req->key, 0)) ||
	    (req->ctype != NULL && !hc_token_ok(req->ctype, 1)) ||
	    (req->bodylen > 0 && req->body == NULL))
		return -1;
	c->head = strcmp(m, "HEAD") == 0;
	nobody = c->head || strcmp(m, "GET") == 0;
	hc_authority(&c->url, 0, auth, sizeof(auth));
	evbuffer_add_printf(b, "%s ", m);
	if (hc_add_path(b, c->url.path, req->path) == -1)
		return -1;
	evbuffer_add_printf(b, " HTTP/1.1\r\nHost: %s\r\n", auth);
	if (req->key != NULL)
		evbuffer_add_printf(b, "Authorization: Token %s\r\n",
		    req->key);
	evbuffer_add_printf(b, "User-Agent: licproxy\r\n"
	    "Accept: application/json\r\nConnection: keep-alive\r\n");
	if (req->ctype != NULL)
		evbuffer_add_printf(b, "Content-Type: %s\r\n", req->ctype);
	/* a POST without Content-Length may get 411 */
	if (req->bodylen > 0 || !nobody)
		evbuffer_add_printf(b, "Content-Length: %zu\r\n",
		    req->bodylen);
	evbuffer_add(b, "\r\n", 2);
	if (req->bodylen > 0 && evbuffer_add(b, req->body, req->bodylen) == -1)
		return -1;
	return 0;
}

static void
hc_count_in(struct evbuffer *b, const struct evbuffer_cb_info *i, void *arg)
{
	struct hc_conn	*c = arg;

	(void)b;
	c->res.bytes_in += i->n_added;
}

static void
hc_count_out(struct evbuffer *b, const struct evbuffer_cb_info *i, void *arg)
{
	struct hc_conn	*c = arg;

	(void)b;
	c->res.bytes_out += i->n_deleted;
}

/* Byte counters on the raw socket: TLS records count, not just plaintext. */
static int
hc_count(struct hc_conn *c)
{
	c->cnt_in = evbuffer_add_cb(bufferevent_get_input(c->sock),
	    hc_count_in, c);
	c->cnt_out = evbuffer_add_cb(bufferevent_get_output(c->sock),
	    hc_count_out, c);
	return c->cnt_in == NULL || c->cnt_out == NULL ? -1 : 0;
}

static void
hc_uncount(struct hc_conn *c)
{
	if (c->sock != NULL) {
		if (c->cnt_in != NULL)
			evbuffer_remove_cb_entry(bufferevent_get_input(c->sock),
			    c->cnt_in);
		if (c->cnt_out != NULL)
			evbuffer_remove_cb_entry(
			    bufferevent_get_output(c->sock), c->cnt_out);
	}
	c->cnt_in = c->cnt_out = NULL;
}

/*
 * clean: the last exchange on the connection finished.  We close without
 * close_notify; SSL_free would then call the session bad and spoil the
 * copy the session cache keeps.
 */
static void
hc_bev_free(struct bufferevent *bev, struct bufferevent *sock, int clean)
{
	SSL	*ssl;

	if (bev == NULL && (bev = sock) == NULL)
		return;
	if (clean && (ssl = bufferevent_openssl_get_ssl(bev)) != NULL)
		SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) |
		    SSL_SENT_SHUTDOWN);
	bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
	bufferevent_free(bev);		/* a TLS filter frees sock too */
}

static void
hc_close(struct hc_conn *c, int clean)
{
	hc_uncount(c);
	hc_bev_free(c->bev, c->sock, clean);
	/*
	 * A pending lookup keeps its own reference to sock (libevent 2.1 has
	 * no way to cancel it); the bufferevent goes when the resolver gives
	 * up or answers, with our callbacks already gone.
	 */
	c->bev = c->sock = NULL;
}

static int
hc_idle_match(const struct hc_idle *e, const struct hc_conn *c)
{
	return e->base == c->base && e->ctxid == c->ctxid &&
	    e->tls == c->url.tls && e->port == c->url.port &&
	    strcmp(e->host, c->url.host) == 0 && e->proxied == c->proxied &&
	    (!c->proxied || (e->pport == c->proxy.port &&
	    strcmp(e->phost, c->proxy.host) == 0));
}

static void
hc_idle_close(struct hc_idle *e)
{
	hc_bev_free(e->bev, e->sock, 1);
	event_free(e->timer);
	memset(e, 0, sizeof(*e));
}

/* Anything from an idle server, bytes or EOF, ends the connection. */
static void
hc_idle_readcb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	hc_idle_close(arg);
}

static void
hc_idle_eventcb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	hc_idle_close(arg);
}

static void
hc_idle_timercb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	hc_idle_close(arg);
}

/* LICPROXY_HTTPC_IDLE_MS shortens the idle life (tests); 0 = no pool. */
static int
hc_idle_timeout(void)
{
	const char	*s;
	char		*end;
	long		 v;

	if (hc_idle_ms != -1)
		return hc_idle_ms;
	hc_idle_ms = HC_IDLE_MS;
	if ((s = getenv("LICPROXY_HTTPC_IDLE_MS")) != NULL && *s != '\0') {
		errno = 0;
		v = strtol(s, &end, 10);
		if (*end == '\0' && errno == 0 && v >= 0 && v <= HC_IDLE_MS)
			hc_idle_ms = (int)v;
	}
	return hc_idle_ms;
}

/* Before a caller frees its loop: its parked connections go first. */
void
httpc_close_idle(struct event_base *base)
{
	size_t i;

	for (i = 0; i < HC_IDLE_MAX; i++)
		if (hc_idle[i].base == base)
			hc_idle_close(&hc_idle[i]);
}

/* The most recently parked connection to c's upstream, or NULL. */
static struct hc_idle *
hc_idle_take(struct hc_conn *c)
{
	struct hc_idle	*e, *best = NULL;
	size_t		 i;

	for (i = 0; i < HC_IDLE_MAX; i++) {
		e = &hc_idle[i];
		if (e->base == NULL || e->base != c->base)
			continue;
		if (hc_idle_match(e, c) && (best == NULL ||
		    e->stamp > best->stamp))
			best = e;
	}
	return best;
}

/*
 * A slot for c's connection: the oldest of its upstream's when that has
 * its share, else a free one, else the oldest on c's loop (another loop's
 * cannot be closed from here: it may be gone).  NULL: do not park.
 */
static struct hc_idle *
hc_idle_slot(const struct hc_conn *c)
{
	struct hc_idle	*e, *unused = NULL, *oldup = NULL, *oldest = NULL;
	size_t		 i;
	int		 n = 0;

	for (i = 0; i < HC_IDLE_MAX; i++) {
		e = &hc_idle[i];
		if (e->base == NULL) {
			if (unused == NULL)
				unused = e;
			continue;
		}
		if (e->base != c->base)
			continue;
		if (oldest == NULL || e->stamp < oldest->stamp)
			oldest = e;
		if (!hc_idle_match(e, c))
			continue;
		n++;
		if (oldup == NULL || e->stamp < oldup->stamp)
			oldup = e;
	}
	if (n >= HC_IDLE_PER)
		e = oldup;
	else if (unused != NULL)
		return unused;
	else
		e = oldest;
	if (e != NULL)
		hc_idle_close(e);
	return e;
}

static void
hc_idle_key(struct hc_idle *e, const struct hc_conn *c)
{
	e->base = c->base;
	e->ctxid = c->ctxid;
	e->tls = c->url.tls;
	e->port = c->url.port;
	memcpy(e->host, c->url.host, sizeof(e->host));
	e->proxied = c->proxied;
	e->pport = c->proxied ? c->proxy.port : 0;
	memcpy(e->phost, c->proxied ? c->proxy.host : "", c->proxied ?
	    sizeof(e->phost) : 1);
	e->stamp = ++hc_idle_clock;
}

/*
 * Keep c's connection for the next request to its upstream, if the
 * response left it reusable.  0: parked, c no longer owns it.
 */
static int
hc_idle_park(struct hc_conn *c)
{
	struct hc_idle	*e;
	struct timeval	 tv;
	int		 ms = hc_idle_timeout();

	if (ms == 0 || c->noreuse || c->bev == NULL ||
	    (c->url.tls && c->ctxid == 0) ||
	    evbuffer_get_length(bufferevent_get_input(c->bev)) > 0 ||
	    (e = hc_idle_slot(c)) == NULL)
		return -1;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	if ((e->timer = evtimer_new(c->base, hc_idle_timercb, e)) == NULL)
		return -1;
	if (evtimer_add(e->timer, &tv) == -1) {
		event_free(e->timer);
		e->timer = NULL;
		return -1;
	}
	hc_uncount(c);
	hc_idle_key(e, c);
	e->sock = c->sock;
	e->bev = c->bev;
	c->bev = c->sock = NULL;
	bufferevent_setcb(e->bev, hc_idle_readcb, NULL, hc_idle_eventcb, e);
	return 0;
}

static void
hc_free(struct hc_conn *c)
{
	if (c == NULL)
		return;
	hc_close(c, 0);
	if (c->timer != NULL)
		event_free(c->timer);
	if (c->req != NULL)
		evbuffer_free(c->req);
	if (c->body != NULL)
		evbuffer_free(c->body);
	free(c);
}

static void
hc_deliver(struct hc_conn *c)
{
	struct httpc_res	*res = &c->res;

	if (res->err == 0) {
		evbuffer_add(c->body, "", 1);
		res->bodylen = evbuffer_get_length(c->body) - 1;
		res->body = (const char *)evbuffer_pullup(c->body, -1);
	} else {
		res->errstr = c->errbuf;
		res->status = 0;
		res->body = NULL;
		res->bodylen = 0;
	}
	c->cb(res, c->arg);
	hc_free(c);
}

/*
 * Record the outcome and drop the connection at once; the callback runs
 * now, or from the timer when we are still inside httpc_request().
 */
static void
hc_finish(struct hc_conn *c, int err, const char *fmt, ...)
{
	struct timeval	 now = { 0, 0 };
	va_list		 ap;
	SSL		*ssl;

	if (c->finished)
		return;
	c->finished = 1;
	c->state = ST_DONE;
	c->res.err = err;
	if (err != 0 && fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(c->errbuf, sizeof(c->errbuf), fmt, ap);
		va_end(ap);
	}
	if (err == 0 && c->url.tls && c->bev != NULL &&
	    (ssl = bufferevent_openssl_get_ssl(c->bev)) != NULL)
		hc_sess_save(c, ssl);
	if (err != 0 || hc_idle_park(c) == -1)
		hc_close(c, err == 0);
	if (c->starting)
		evtimer_add(c->timer, &now);
	else
		hc_deliver(c);
}

static void
hc_timercb(evutil_socket_t fd, short ev, void *arg)
{
	static const char *const what[] = { "connect", "proxy CONNECT",
	    "TLS handshake", "response", "response headers", "response body",
	    "response body", "response body", "response body",
	    "response trailers", "done" };
	struct hc_conn	*c = arg;

	(void)fd;
	(void)ev;
	if (c->finished)
		hc_deliver(c);
	else
		hc_finish(c, HTTPC_ETIMEOUT, "timed out after %d ms (%s)",
		    c->timeout_ms, what[c->state]);
}

static void
hc_send_request(struct hc_conn *c)
{
	c->state = ST_STATUS;
	c->hdrbytes = 0;
	bufferevent_setcb(c->bev, hc_readcb, NULL, hc_eventcb, c);
	/* a copy: a stale pooled connection sends it once more */
	if (bufferevent_write(c->bev, evbuffer_pullup(c->req, -1),
	    evbuffer_get_length(c->req)) == -1 ||
	    bufferevent_enable(c->bev, EV_READ | EV_WRITE) == -1)
		hc_finish(c, HTTPC_ECONNECT, "cannot queue the request");
}

static void
hc_start_tls(struct hc_conn *c)
{
	struct bufferevent	*tls;
	SSL			*ssl;
	X509_VERIFY_PARAM	*vp;
	int			 ok;

	if ((ssl = SSL_new(c->ctx)) == NULL)
		goto fail;
	if (c->url.iplit) {
		/* SNI must not carry an address; check the IP SAN instead */
		vp = SSL_get0_param(ssl);
		ok = X509_VERIFY_PARAM_set1_ip_asc(vp, c->url.host);
	} else
		ok = SSL_set_tlsext_host_name(ssl, c->url.host) == 1 &&
		    SSL_set1_host(ssl, c->url.host) == 1;
	if (!ok) {
		SSL_free(ssl);
		goto fail;
	}
	c->ctxid = hc_ctx_id(c->ctx);
	hc_sess_offer(c, ssl);
	c->state = ST_TLS;
	tls = bufferevent_openssl_filter_new(c->base, c->sock, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (tls == NULL) {
		/* ssl and sock went with the failed filter */
		c->bev = c->sock = NULL;
		goto fail;
	}
	c->bev = tls;
	/*
	 * Without a Content-Length the body ends at close; many servers skip
	 * close_notify.  A cut body still fails the JSON parse and leases
	 * are signed, so a truncation buys an attacker nothing.
	 */
	bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
	bufferevent_setcb(tls, NULL, NULL, hc_eventcb, c);
	if (bufferevent_enable(tls, EV_READ | EV_WRITE) == -1)
		goto fail;
	return;
 fail:
	hc_finish(c, HTTPC_ETLS, "cannot set up TLS");
}

static void
hc_start_session(struct hc_conn *c)
{
	if (c->url.tls)
		hc_start_tls(c);
	else
		hc_send_request(c);
}

/* "HTTP/1.x NNN ...": the status, or -1. */
static int
hc_status_line(const char *l)
{
	int	 st;

	if (strncmp(l, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)l[7]) ||
	    l[8] != ' ')
		return -1;
	if (!isdigit((unsigned char)l[9]) || !isdigit((unsigned char)l[10]) ||
	    !isdigit((unsigned char)l[11]) || (l[12] != '\0' && l[12] != ' '))
		return -1;
	st = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
	return st >= 100 && st <= 599 ? st : -1;
}

/*
 * Read one CRLF line within the header budget.  Returns 1 with *line set,
 * 0 when more input is needed, -1 when the line cannot fit.
 */
static int
hc_getline(struct evbuffer *in, size_t max, char **line)
{
	size_t	 before = evbuffer_get_length(in), n;

	if ((*line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) == NULL)
		return before > max ? -1 : 0;
	if (before - evbuffer_get_length(in) > max) {
		free(*line);
		*line = NULL;
		return -1;
	}
	return 1;
}

static void
hc_proxy_readcb(struct bufferevent *bev, void *arg)
{
	struct hc_conn	*c = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	size_t		 before;
	char		*line;
	int		 r, st;

	for (;;) {
		before = evbuffer_get_length(in);
		if ((r = hc_getline(in, HC_HDR_MAX - c->hdrbytes,
		    &line)) <= 0)
			break;
		c->hdrbytes += before - evbuffer_get_length(in);
		if (c->proxy_st == 0) {
			st = c->proxy_st = hc_status_line(line);
			free(line);
			if (st / 100 != 2) {
				hc_finish(c, HTTPC_ECONNECT,
				    "proxy %s refused CONNECT (status %d)",
				    c->proxy.host, st);
				return;
			}
			continue;
		}
		r = *line == '\0';
		free(line);
		if (r) {
			hc_start_session(c);
			return;
		}
	}
	if (r == -1)
		hc_finish(c, HTTPC_ECONNECT, "proxy %s: answer too large",
		    c->proxy.host);
}

static void
hc_start_proxy(struct hc_conn *c)
{
	char	 auth[300];

	hc_authority(&c->url, 1, auth, sizeof(auth));
	c->state = ST_PROXY;
	c->hdrbytes = 0;
	bufferevent_setcb(c->sock, hc_proxy_readcb, NULL, hc_eventcb, c);
	if (evbuffer_add_printf(bufferevent_get_output(c->sock),
	    "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", auth, auth) == -1)
		hc_finish(c, HTTPC_ECONNECT, "cannot queue CONNECT");
}

static int
hc_retry_after(const char *v)
{
	char	*end;
	long	 n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (!isdigit((unsigned char)*v) || *end != '\0' || errno != 0 ||
	    n > INT_MAX)
		return -1;
	return (int)n;
}

static int
hc_content_length(struct hc_conn *c, const char *v)
{
	long long	 n = 0;
	const char	*p;

	if (*v == '\0')
		return -1;
	for (p = v; *p != '\0'; p++) {
		if (!isdigit((unsigned char)*p))
			return -1;
		n = n * 10 + (*p - '0');
		if (n > HTTPC_BODY_MAX) {
			snprintf(c->errbuf, sizeof(c->errbuf),
			    "response body too large (Content-Length %s)", v);
			return -1;
		}
	}
	/* two different lengths is how response splitting looks */
	if (c->clen >= 0 && c->clen != n)
		return -1;
	c->clen = n;
	return 0;
}

/* "close" among the Connection header's tokens */
static int
hc_conn_close(const char *v)
{
	size_t	 n;

	for (;;) {
		v += strspn(v, ", \t");
		if (*v == '\0')
			return 0;
		n = strcspn(v, ", \t");
		if (n == 5 && strncasecmp(v, "close", 5) == 0)
			return 1;
		v += n;
	}
}

static int
hc_header(struct hc_conn *c, char *line)
{
	char	*v, *e;

	if ((v = strchr(line, ':')) == NULL || v == line ||
	    strcspn(line, " \t") < (size_t)(v - line))
		return -1;
	*v++ = '\0';
	v += strspn(v, " \t");
	for (e = v + strlen(v); e > v && (e[-1] == ' ' || e[-1] == '\t'); e--)
		e[-1] = '\0';
	if (strcasecmp(line, "Content-Length") == 0)
		return hc_content_length(c, v);
	if (strcasecmp(line, "Transfer-Encoding") == 0) {
		/* nothing but chunked: we never offer a coding */
		if (strcasecmp(v, "chunked") != 0)
			return -1;
		c->chunked = 1;
	} else if (strcasecmp(line, "Retry-After") == 0)
		c->res.retry_after = hc_retry_after(v);
	else if (strcasecmp(line, "Connection") == 0 && hc_conn_close(v))
		c->noreuse = 1;
	return 0;
}

/* Headers are complete: decide how the body is framed. */
static void
hc_headers_done(struct hc_conn *c)
{
	int	 st = c->res.status;

	if (st / 100 == 1) {		/* interim: the real answer follows */
		c->state = ST_STATUS;
		c->clen = -1;
		c->chunked = 0;
		c->res.retry_after = -1;
	} else if (c->head || st == 204 || st == 304)
		c->state = ST_DONE;
	else if (c->chunked)
		c->state = ST_CHUNK_SIZE;
	else if (c->clen == 0)
		c->state = ST_DONE;
	else {
		c->state = ST_BODY;
		if (c->clen < 0)	/* ends at close: nothing to reuse */
			c->noreuse = 1;
	}
}

static int
hc_chunk_size(struct hc_conn *c, const char *line)
{
	unsigned long long	 n = 0;
	const char		*p;
	int			 d;

	for (p = line; isxdigit((unsigned char)*p); p++) {
		d = isdigit((unsigned char)*p) ? *p - '0' :
		    tolower((unsigned char)*p) - 'a' + 10;
		n = n * 16 + d;
		if (n > HTTPC_BODY_MAX)
			goto toobig;
	}
	if (p == line || (*p != '\0' && *p != ';' && *p != ' ' && *p != '\t'))
		return -1;
	if (evbuffer_get_length(c->body) + n > HTTPC_BODY_MAX)
		goto toobig;
	c->chunkleft = n;
	c->state = n == 0 ? ST_TRAILER : ST_CHUNK_DATA;
	return 0;
 toobig:
	snprintf(c->errbuf, sizeof(c->errbuf), "response body too large");
	return -1;
}

/* One line in a line-oriented state; -1 = malformed. */
static int
hc_line(struct hc_conn *c, char *line)
{
	switch (c->state) {
	case ST_STATUS:
		if ((c->res.status = hc_status_line(line)) == -1)
			return -1;
		/* 1.0 closes unless told otherwise; not worth the parse */
		if (line[7] == '0')
			c->noreuse = 1;
		c->state = ST_HEADERS;
		return 0;
	case ST_HEADERS:
		if (*line != '\0')
			return hc_header(c, line);
		hc_headers_done(c);
		return 0;
	case ST_CHUNK_SIZE:
		return hc_chunk_size(c, line);
	case ST_CHUNK_END:
		c->state = ST_CHUNK_SIZE;
		return *line == '\0' ? 0 : -1;
	case ST_TRAILER:
		if (*line == '\0')
			c->state = ST_DONE;
		return 0;
	default:
		return -1;
	}
}

static int
hc_body(struct hc_conn *c, struct evbuffer *in)
{
	size_t	 avail = evbuffer_get_length(in), want = avail, have;

	if (avail == 0)
		return 0;
	have = evbuffer_get_length(c->body);
	if (c->state == ST_CHUNK_DATA && want > c->chunkleft)
		want = c->chunkleft;
	else if (c->state == ST_BODY && c->clen >= 0 &&
	    want > (size_t)c->clen - have)
		want = (size_t)c->clen - have;
	if (have + want > HTTPC_BODY_MAX) {
		snprintf(c->errbuf, sizeof(c->errbuf),
		    "response body too large");
		return -1;
	}
	if (evbuffer_remove_buffer(in, c->body, want) != (int)want)
		return -1;
	have += want;
	if (c->state == ST_CHUNK_DATA) {
		if ((c->chunkleft -= want) == 0)
			c->state = ST_CHUNK_END;
	} else if (c->clen >= 0 && have == (size_t)c->clen)
		c->state = ST_DONE;
	return 1;
}

/* Eat what input there is: 1 = response complete, 0 = need more, -1 = bad */
static int
hc_consume(struct hc_conn *c)
{
	struct evbuffer	*in = bufferevent_get_input(c->bev);
	size_t		 before, max;
	char		*line;
	int		 r, hdr;

	while (c->state != ST_DONE) {
		if (c->state == ST_BODY || c->state == ST_CHUNK_DATA) {
			if ((r = hc_body(c, in)) <= 0)
				return r;
			continue;
		}
		hdr = c->state != ST_CHUNK_SIZE && c->state != ST_CHUNK_END;
		max = hdr ? HC_HDR_MAX - c->hdrbytes : HC_CHUNKLINE_MAX;
		before = evbuffer_get_length(in);
		if ((r = hc_getline(in, max, &line)) <= 0) {
			if (r == -1)
				snprintf(c->errbuf, sizeof(c->errbuf),
				    "response %s too large", hdr ?
				    "header" : "chunk line");
			return r;
		}
		if (hdr)
			c->hdrbytes += before - evbuffer_get_length(in);
		r = hc_line(c, line);
		free(line);
		if (r == -1)
			return -1;
	}
	return 1;
}

static void
hc_respond(struct hc_conn *c, int eof)
{
	int	 r;

	c->errbuf[0] = '\0';
	r = hc_consume(c);
	if (r == 0 && eof && c->state == ST_BODY && c->clen < 0)
		r = 1;			/* no length: the body ends at close */
	if (r == 1)
		hc_finish(c, 0, NULL);
	else if (r == -1) {
		if (c->errbuf[0] == '\0')
			snprintf(c->errbuf, sizeof(c->errbuf),
			    "malformed response");
		hc_finish(c, HTTPC_EPROTO, NULL);	/* errbuf says why */
	}
	else if (eof)
		hc_finish(c, HTTPC_EPROTO, "connection closed mid-response");
}

static void
hc_readcb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	hc_respond(arg, 0);
}

static void
hc_tls_error(struct hc_conn *c, struct bufferevent *bev)
{
	SSL		*ssl = bufferevent_openssl_get_ssl(bev);
	unsigned long	 e, first = 0;
	long		 v;
	char		 buf[200];

	while ((e = bufferevent_get_openssl_error(bev)) != 0)
		if (first == 0)
			first = e;
	ERR_clear_error();
	hc_sess_drop(c);
	if (ssl != NULL && (v = SSL_get_verify_result(ssl)) != X509_V_OK)
		hc_finish(c, HTTPC_ETLS, "%s: certificate verify failed: %s",
		    c->url.host, X509_verify_cert_error_string(v));
	else if (first != 0) {
		ERR_error_string_n(first, buf, sizeof(buf));
		hc_finish(c, HTTPC_ETLS, "%s: TLS handshake: %s",
		    c->url.host, buf);
	} else
		hc_finish(c, HTTPC_ETLS, "%s: TLS handshake: connection %s",
		    c->url.host, errno ? strerror(errno) : "closed");
}

static void
hc_conn_error(struct hc_conn *c, short what)
{
	const char	*host = c->proxied ? c->proxy.host : c->url.host;
	int		 port = c->proxied ? c->proxy.port : c->url.port;
	int		 dnserr, err = EVUTIL_SOCKET_ERROR();

	if (c->state == ST_PROXY)
		hc_finish(c, HTTPC_ECONNECT, "proxy %s:%d closed the "
		    "connection during CONNECT", host, port);
	else if ((dnserr = bufferevent_socket_get_dns_error(c->sock)) != 0)
		hc_finish(c, HTTPC_ECONNECT, "%s: %s", host,
		    evutil_gai_strerror(dnserr));
	else
		hc_finish(c, HTTPC_ECONNECT, "connect %s:%d%s: %s", host,
		    port, c->proxied ? " (proxy)" : "",
		    (what & BEV_EVENT_EOF) || err == 0 ? "connection closed" :
		    evutil_socket_error_to_string(err));
}

static int	hc_connect(struct hc_conn *);

/*
 * The server closed a pooled connection as we took it: nothing of the
 * response came, so the request goes once more on a fresh connection,
 * still under the attempt's timer.  Both calls are safe to repeat: the
 * license GET is idempotent, usage POSTs are de-duplicated upstream.
 */
static int
hc_retry(struct hc_conn *c)
{
	if (!c->reused || c->retried || c->state != ST_STATUS ||
	    c->hdrbytes != 0 ||
	    evbuffer_get_length(bufferevent_get_input(c->bev)) != 0)
		return 0;
	hc_close(c, 1);
	c->reused = 0;
	c->retried = 1;
	c->state = ST_CONNECT;
	if (hc_connect(c) == -1)
		hc_finish(c, HTTPC_ECONNECT, "cannot open a new connection");
	return 1;
}

static void
hc_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct hc_conn	*c = arg;

	if (what & BEV_EVENT_CONNECTED) {
		if (c->state == ST_TLS)
			hc_send_request(c);
		else if (c->proxied)
			hc_start_proxy(c);
		else
			hc_start_session(c);
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) || hc_retry(c))
		return;
	if (c->state == ST_CONNECT || c->state == ST_PROXY)
		hc_conn_error(c, what);
	else if (c->state == ST_TLS)
		hc_tls_error(c, bev);
	else if (what & BEV_EVENT_EOF)
		hc_respond(c, 1);
	else
		hc_finish(c, HTTPC_EPROTO, "connection lost mid-response: %s",
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static int
hc_connect(struct hc_conn *c)
{
	const struct hc_url	*to = c->proxied ? &c->proxy : &c->url;
	int			 starting = c->starting;

	c->sock = bufferevent_socket_new(c->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (c->sock == NULL)
		return -1;
	c->bev = c->sock;
	if (hc_count(c) == -1)
		return -1;
	bufferevent_setcb(c->sock, NULL, NULL, hc_eventcb, c);
	if (bufferevent_enable(c->sock, EV_READ | EV_WRITE) == -1)
		return -1;
	/* may fail (and call hc_eventcb) right here: hc_finish defers */
	c->starting = 1;
	if (bufferevent_socket_connect_hostname(c->sock, c->dns, AF_UNSPEC,
	    to->host, to->port) == -1)
		hc_finish(c, HTTPC_ECONNECT, "cannot connect to %s:%d",
		    to->host, to->port);
	c->starting = starting;
	return 0;
}

/* Send on an idle connection to the upstream if there is one; 1 if so. */
static int
hc_reuse(struct hc_conn *c)
{
	struct hc_idle	*e;

	if (hc_idle_timeout() == 0 || (e = hc_idle_take(c)) == NULL)
		return 0;
	c->sock = e->sock;
	c->bev = e->bev;
	event_free(e->timer);
	memset(e, 0, sizeof(*e));
	c->reused = 1;
	/* a write error can call back right here: hc_finish defers */
	c->starting = 1;
	if (hc_count(c) == -1)
		hc_finish(c, HTTPC_ECONNECT, "cannot count bytes");
	else
		hc_send_request(c);
	c->starting = 0;
	return 1;
}

/* Start the attempt's timer, then a pooled connection or a new one. */
static int
hc_start(struct hc_conn *c)
{
	struct timeval	 tv;

	tv.tv_sec = c->timeout_ms / 1000;
	tv.tv_usec = (c->timeout_ms % 1000) * 1000;
	if (evtimer_add(c->timer, &tv) == -1)
		return -1;
	if (c->url.tls)
		c->ctxid = hc_ctx_id(c->ctx);
	if (hc_reuse(c))
		return 0;
	return hc_connect(c);
}

int
httpc_request(struct event_base *base, struct evdns_base *dns, SSL_CTX *ctx,
    const struct httpc_req *req, httpc_cb cb, void *arg)
{
	struct hc_conn	*c;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		log_warn("httpc: calloc");
		return -1;
	}
	c->base = base;
	c->dns = dns;
	c->ctx = ctx;
	c->cb = cb;
	c->arg = arg;
	c->clen = -1;
	c->res.retry_after = -1;
	c->timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : HC_TIMEOUT_DEF;
	if (req->url == NULL || hc_parse_url(req->url, &c->url, 0) == -1) {
		log_warnx("httpc: bad url \"%s\"", req->url ? req->url : "");
		goto fail;
	}
	if (c->url.tls && ctx == NULL) {
		log_warnx("httpc: %s: no TLS context", req->url);
		goto fail;
	}
	if ((c->req = evbuffer_new()) == NULL ||
	    (c->body = evbuffer_new()) == NULL ||
	    (c->timer = evtimer_new(base, hc_timercb, c)) == NULL)
		goto fail;
	if (hc_build(c, req) == -1) {
		log_warnx("httpc: %s: bad request fields", req->url);
		goto fail;
	}
	if (hc_setup_proxy(c) == -1 || hc_start(c) == -1)
		goto fail;
	return 0;
 fail:
	hc_free(c);
	return -1;
}

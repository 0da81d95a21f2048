/*
 * test_httpc.c - the uplink's HTTP client against real servers: forked
 * blocking OpenSSL/plain servers and a CONNECT proxy on 127.0.0.1, with
 * certificates made by the openssl tool in a temp dir.
 */

#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "httpc.h"

#define KEY	"ABCDEFGHIJabcdefghij0123456789KLMNOPQRST"
#define REC_MAX	(1024 * 1024)

static char	 tmpdir[] = "/tmp/test_httpc.XXXXXX";
static char	 good_crt[300], good_key[300];
static char	 other_crt[300], other_key[300];
static char	 wrong_crt[300], wrong_key[300];
static SSL_CTX	*ctx_good, *ctx_wrong;

struct child {
	pid_t	 pid;
	int	 port;
	int	 port2;		/* second listener of a twin server */
	int	 rfd;		/* records written by the child */
};

/* How a test server runs; srv_start() uses all zeroes. */
struct srvopt {
	int	 maxver;	/* highest TLS version, 0 = library default */
	int	 report;	/* answer with what the handshake was */
	int	 port;		/* listen here, 0 = any free port */
	int	 twin;		/* one more listener, same process and keys */
};

/* children still running, killed after each test even when it failed */
static pid_t	 kids[8];

struct result {
	int	 called;
	int	 err;
	int	 status;
	int	 retry_after;
	char	*body;
	size_t	 bodylen;
	size_t	 in, out;
	char	 errstr[256];
};

/* ---------- helpers shared by the children ---------- */

/* want 0: any free port */
static int
listen_at(int family, int want, int *port)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in	*s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6	*s6 = (struct sockaddr_in6 *)&ss;
	socklen_t		 sl;
	int			 fd, one = 1;

	memset(&ss, 0, sizeof(ss));
	if ((fd = socket(family, SOCK_STREAM, 0)) == -1)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (family == AF_INET) {
		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		s4->sin_port = htons(want);
		sl = sizeof(*s4);
	} else {
		s6->sin6_family = AF_INET6;
		s6->sin6_addr = in6addr_loopback;
		s6->sin6_port = htons(want);
		sl = sizeof(*s6);
	}
	if (bind(fd, (struct sockaddr *)&ss, sl) == -1 ||
	    listen(fd, 16) == -1 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) == -1) {
		close(fd);
		return -1;
	}
	*port = ntohs(family == AF_INET ? s4->sin_port : s6->sin6_port);
	return fd;
}

static int
listen_on(int family, int *port)
{
	return listen_at(family, 0, port);
}

static int
free_port(void)
{
	int	 fd, port;

	fd = listen_on(AF_INET, &port);
	assert_true(fd != -1);
	close(fd);
	return port;
}

static int
io_read(SSL *ssl, int fd, void *buf, size_t n)
{
	return ssl ? SSL_read(ssl, buf, (int)n) : (int)read(fd, buf, n);
}

static void
io_write(SSL *ssl, int fd, const void *buf, size_t n)
{
	const char	*p = buf;
	int		 r;

	while (n > 0) {
		r = ssl ? SSL_write(ssl, p, (int)n) : (int)write(fd, p, n);
		if (r <= 0)
			return;
		p += r;
		n -= r;
	}
}

static void
write_record(int wfd, const char *buf, size_t len)
{
	uint32_t	 l = (uint32_t)len;

	if (write(wfd, &l, sizeof(l)) != sizeof(l))
		_exit(1);
	while (len > 0) {
		ssize_t r = write(wfd, buf, len);
		if (r <= 0)
			_exit(1);
		buf += r;
		len -= r;
	}
}

/* Read one request (head + Content-Length body) into buf. */
static size_t
read_request(SSL *ssl, int fd, char *buf, size_t max)
{
	size_t	 len = 0, want = 0;
	char	*end, *cl;
	int	 r;

	for (;;) {
		if (want == 0 && (end = memmem(buf, len, "\r\n\r\n", 4))) {
			want = end + 4 - buf;
			buf[len] = '\0';
			if ((cl = strcasestr(buf, "\r\nContent-Length:")))
				want += strtoul(cl + 17, NULL, 10);
		}
		if (want != 0 && len >= want)
			return len;
		if (len + 1 >= max ||
		    (r = io_read(ssl, fd, buf + len, max - len - 1)) <= 0)
			return len;
		len += r;
	}
}

/* fork with the child tied to us: a failed assert must not leave it */
static pid_t
spawn(void)
{
	pid_t	 ppid = getpid(), pid;
	size_t	 i;

	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid() != ppid)
			_exit(1);
		return 0;
	}
	for (i = 0; i < sizeof(kids) / sizeof(kids[0]); i++)
		if (kids[i] == 0) {
			kids[i] = pid;
			break;
		}
	return pid;
}

static void
reap(pid_t pid)
{
	size_t	 i;

	for (i = 0; i < sizeof(kids) / sizeof(kids[0]); i++)
		if (kids[i] != 0 && (pid == 0 || kids[i] == pid)) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
			kids[i] = 0;
		}
}

/* ---------- test server ---------- */

/* the ClientHello of the connection at hand offered a session to resume */
static int	 srv_offered;

static int
srv_hello_cb(SSL *ssl, int *al, void *arg)
{
	const unsigned char	*ext;
	size_t			 len;

	(void)al;
	(void)arg;
	/* TLS 1.3 resumes by PSK; 1.2 by ticket (empty = "I take one") */
	srv_offered = SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_psk, &ext,
	    &len) == 1 || (SSL_client_hello_get0_ext(ssl,
	    TLSEXT_TYPE_session_ticket, &ext, &len) == 1 && len > 0);
	return SSL_CLIENT_HELLO_SUCCESS;
}

static int
srv_accept(const int lfd[2])
{
	struct pollfd	 pfd[2] = { { lfd[0], POLLIN, 0 },
	    { lfd[1], POLLIN, 0 } };
	int		 i;

	if (poll(pfd, 2, -1) <= 0)
		return -1;
	for (i = 0; i < 2; i++)
		if (pfd[i].revents & POLLIN)
			return accept(lfd[i], NULL, NULL);
	return -1;
}

/* What the handshake was, as the body of a 200. */
static size_t
srv_report(SSL *ssl, char *buf, size_t len)
{
	char	 body[100];
	int	 n;

	n = snprintf(body, sizeof(body), "offered=%d resumed=%d %s",
	    srv_offered, (int)SSL_session_reused(ssl), SSL_get_version(ssl));
	return snprintf(buf, len, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
	    "\r\n%s", n, body);
}

static void
srv_loop(const int lfd[2], SSL_CTX *sctx, const char *resp, size_t rlen,
    int report, int wfd)
{
	static char	 buf[REC_MAX];
	char		 rbuf[200];
	const char	*sni;
	SSL		*ssl;
	size_t		 n;
	int		 fd;

	for (;;) {
		if ((fd = srv_accept(lfd)) == -1)
			continue;
		ssl = NULL;
		if (sctx != NULL) {
			ssl = SSL_new(sctx);
			SSL_set_fd(ssl, fd);
			if (SSL_accept(ssl) != 1) {
				SSL_free(ssl);
				close(fd);
				continue;
			}
		}
		sni = ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)
		    : NULL;
		n = snprintf(buf, 300, "SNI=%s\n", sni ? sni : "-");
		n += read_request(ssl, fd, buf + n, sizeof(buf) - n);
		if (report && ssl != NULL) {
			rlen = srv_report(ssl, rbuf, sizeof(rbuf));
			resp = rbuf;
		}
		if (resp != NULL)
			io_write(ssl, fd, resp, rlen);
		write_record(wfd, buf, n);
		if (resp == NULL)	/* silent: hold until the client gives up */
			while (io_read(ssl, fd, buf, sizeof(buf)) > 0)
				;
		if (ssl != NULL) {
			SSL_shutdown(ssl);
			SSL_free(ssl);
		}
		close(fd);
	}
}

static SSL_CTX *
srv_ctx(const char *crt, const char *key, const struct srvopt *o)
{
	SSL_CTX	*sctx;

	if ((sctx = SSL_CTX_new(TLS_server_method())) == NULL ||
	    SSL_CTX_use_certificate_chain_file(sctx, crt) != 1 ||
	    SSL_CTX_use_PrivateKey_file(sctx, key, SSL_FILETYPE_PEM) != 1)
		_exit(1);
	if (o->maxver != 0 &&
	    SSL_CTX_set_max_proto_version(sctx, o->maxver) != 1)
		_exit(1);
	SSL_CTX_set_client_hello_cb(sctx, srv_hello_cb, NULL);
	return sctx;
}

/* resp NULL = accept, read, never answer (unless o->report). */
static void
srv_start_opt(struct child *ch, int family, const char *crt, const char *key,
    const char *resp, size_t rlen, const struct srvopt *o)
{
	SSL_CTX	*sctx = NULL;
	int	 p[2], lfd[2] = { -1, -1 };

	lfd[0] = listen_at(family, o->port, &ch->port);
	assert_true(lfd[0] != -1);
	ch->port2 = 0;
	if (o->twin) {
		lfd[1] = listen_on(family, &ch->port2);
		assert_true(lfd[1] != -1);
	}
	assert_int_equal(pipe(p), 0);
	ch->pid = spawn();
	if (ch->pid == 0) {
		close(p[0]);
		if (crt != NULL)
			sctx = srv_ctx(crt, key, o);
		srv_loop(lfd, sctx, resp, rlen, o->report, p[1]);
		_exit(0);
	}
	close(p[1]);
	close(lfd[0]);
	if (lfd[1] != -1)
		close(lfd[1]);
	ch->rfd = p[0];
}

static void
srv_start(struct child *ch, int family, const char *crt, const char *key,
    const char *resp, size_t rlen)
{
	struct srvopt	 o = { 0 };

	srv_start_opt(ch, family, crt, key, resp, rlen, &o);
}

static void
child_stop(struct child *ch)
{
	reap(ch->pid);
	close(ch->rfd);
}

static int
read_full(int fd, void *buf, size_t n)
{
	char	*p = buf;
	ssize_t	 r;

	while (n > 0) {
		if ((r = read(fd, p, n)) <= 0)
			return -1;
		p += r;
		n -= r;
	}
	return 0;
}

/* One record from a child, NUL-terminated in *out (malloc); -1 if none. */
static int
child_record(struct child *ch, char **out, int timeout_ms)
{
	struct pollfd	 pfd = { ch->rfd, POLLIN, 0 };
	uint32_t	 len;

	*out = NULL;
	if (poll(&pfd, 1, timeout_ms) != 1)
		return -1;
	if (read_full(ch->rfd, &len, sizeof(len)) == -1)
		return -1;
	assert_true(len < REC_MAX);
	*out = malloc(len + 1);
	assert_non_null(*out);
	assert_int_equal(read_full(ch->rfd, *out, len), 0);
	(*out)[len] = '\0';
	return (int)len;
}

/* ---------- CONNECT proxy ---------- */

static void
splice_fds(int a, int b)
{
	struct pollfd	 pfd[2] = { { a, POLLIN, 0 }, { b, POLLIN, 0 } };
	char		 buf[16384];
	ssize_t		 n;
	int		 i;

	for (;;) {
		if (poll(pfd, 2, 10000) <= 0)
			return;
		for (i = 0; i < 2; i++) {
			if (pfd[i].revents == 0)
				continue;
			if ((n = read(pfd[i].fd, buf, sizeof(buf))) <= 0)
				return;
			io_write(NULL, pfd[!i].fd, buf, n);
		}
	}
}

static void
proxy_loop(int lfd, int reject, int wfd)
{
	struct sockaddr_in	 sin;
	char			 buf[8192];
	size_t			 n;
	int			 fd, up, port;
	const char		*ok = "HTTP/1.1 200 Connection established\r\n\r\n";
	const char		*no = "HTTP/1.1 407 Proxy Authentication "
				    "Required\r\nContent-Length: 0\r\n\r\n";

	for (;;) {
		if ((fd = accept(lfd, NULL, NULL)) == -1)
			continue;
		n = read_request(NULL, fd, buf, sizeof(buf));
		write_record(wfd, buf, n);
		buf[n] = '\0';
		if (reject || sscanf(buf, "CONNECT %*[^:]:%d ", &port) != 1) {
			io_write(NULL, fd, no, strlen(no));
			close(fd);
			continue;
		}
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons(port);
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		up = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(up, (struct sockaddr *)&sin, sizeof(sin)) == 0) {
			io_write(NULL, fd, ok, strlen(ok));
			splice_fds(fd, up);
		}
		close(up);
		close(fd);
	}
}

static void
proxy_start(struct child *ch, int reject)
{
	int	 p[2], lfd;

	lfd = listen_on(AF_INET, &ch->port);
	assert_true(lfd != -1);
	assert_int_equal(pipe(p), 0);
	ch->pid = spawn();
	if (ch->pid == 0) {
		close(p[0]);
		proxy_loop(lfd, reject, p[1]);
		_exit(0);
	}
	close(p[1]);
	close(lfd);
	ch->rfd = p[0];
}

/* ---------- client driver ---------- */

static void
on_done(const struct httpc_res *r, void *arg)
{
	struct result	*res = arg;

	res->called++;
	res->err = r->err;
	res->status = r->status;
	res->retry_after = r->retry_after;
	res->in = r->bytes_in;
	res->out = r->bytes_out;
	if (r->err != 0) {
		assert_non_null(r->errstr);
		snprintf(res->errstr, sizeof(res->errstr), "%s", r->errstr);
		assert_null(r->body);
		return;
	}
	assert_non_null(r->body);
	assert_int_equal(r->body[r->bodylen], '\0');
	res->body = malloc(r->bodylen + 1);
	assert_non_null(res->body);
	memcpy(res->body, r->body, r->bodylen + 1);
	res->bodylen = r->bodylen;
}

/* usedns: an evdns base whose only nameserver (at port usedns) is mute */
static int
run_req_dns(SSL_CTX *ctx, const struct httpc_req *req, struct result *res,
    int usedns)
{
	struct timeval		 tv = { 0, 600000 };
	char			 ns[64];

	struct event_base	*base;
	struct evdns_base	*dns = NULL;
	int			 rv;

	memset(res, 0, sizeof(*res));
	base = event_base_new();
	assert_non_null(base);
	if (usedns) {
		dns = evdns_base_new(base, 0);
		assert_non_null(dns);
		assert_int_equal(evdns_base_load_hosts(dns, NULL), 0);
		snprintf(ns, sizeof(ns), "127.0.0.1:%d", usedns);
		assert_int_equal(evdns_base_nameserver_ip_add(dns, ns), 0);
		assert_int_equal(evdns_base_set_option(dns, "timeout:", "0.3"),
		    0);
		assert_int_equal(evdns_base_set_option(dns, "attempts:", "1"),
		    0);
	}
	rv = httpc_request(base, dns, ctx, req, on_done, res);
	assert_int_equal(res->called, 0);	/* never from inside */
	if (rv == 0) {
		/* returns only once nothing of the request is left armed */
		if (dns == NULL)
			assert_int_equal(event_base_dispatch(base), 1);
		else {
			/* evdns keeps its socket armed: loop until done */
			while (res->called == 0)
				event_base_loop(base, EVLOOP_ONCE);
			/* a lookup httpc gave up on ends with evdns' timeout */
			event_base_loopexit(base, &tv);
			event_base_dispatch(base);
		}
		assert_int_equal(res->called, 1);
	}
	if (dns != NULL)
		evdns_base_free(dns, 0);
	event_base_free(base);
	return rv;
}

static int
run_req(SSL_CTX *ctx, const struct httpc_req *req, struct result *res)
{
	return run_req_dns(ctx, req, res, 0);
}

static void
run_get(SSL_CTX *ctx, const char *url, const char *path, int timeout_ms,
    struct result *res)
{
	struct httpc_req req = { "GET", url, path, KEY, NULL, NULL, 0,
	    timeout_ms };

	assert_int_equal(run_req(ctx, &req, res), 0);
}

static void
res_free(struct result *res)
{
	free(res->body);
	res->body = NULL;
}

static char *
url_of(const char *scheme, const char *host, int port, const char *path)
{
	static char	 buf[256];

	snprintf(buf, sizeof(buf), "%s://%s:%d%s", scheme, host, port, path);
	return buf;
}

static const char ok_resp[] = "HTTP/1.1 200 OK\r\nContent-Type: "
    "application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";

/* ---------- tests ---------- */

static void
test_get_ok(void **state)
{
	struct child	 srv;
	struct result	 res;
	char		*rec, host[64];

	(void)state;
	srv_start(&srv, AF_INET, good_crt, good_key, ok_resp,
	    sizeof(ok_resp) - 1);
	run_get(ctx_good, url_of("https", "127.0.0.1", srv.port, "/api"),
	    "/v1/license", 5000, &res);
	assert_int_equal(res.err, 0);
	assert_int_equal(res.status, 200);
	assert_int_equal(res.retry_after, -1);
	assert_string_equal(res.body, "{\"ok\":true}");
	assert_int_equal(res.bodylen, 11);
	/* TLS records and the handshake are counted, not just plaintext */
	assert_true(res.in > sizeof(ok_resp) + 100);
	assert_true(res.out > 150);
	assert_true(child_record(&srv, &rec, 3000) > 0);
	/* an IP literal is never sent as SNI */
	assert_true(strncmp(rec, "SNI=-\nGET /api/v1/license HTTP/1.1\r\n",
	    36) == 0);
	snprintf(host, sizeof(host), "\r\nHost: 127.0.0.1:%d\r\n", srv.port);
	assert_non_null(strstr(rec, host));
	assert_non_null(strstr(rec, "\r\nAuthorization: Token " KEY "\r\n"));
	assert_non_null(strstr(rec, "\r\nUser-Agent: licproxy\r\n"));
	assert_non_null(strstr(rec, "\r\nAccept: application/json\r\n"));
	assert_non_null(strstr(rec, "\r\nConnection: keep-alive\r\n"));
	assert_null(strstr(rec, "Content-Length"));
	free(rec);
	res_free(&res);
	child_stop(&srv);
}

static void
test_get_hostname_sni(void **state)
{
	struct child	 srv;
	struct result	 res;
	char		*rec;

	(void)state;
	srv_start(&srv, AF_INET, good_crt, good_key, ok_resp,
	    sizeof(ok_resp) - 1);
	run_get(ctx_good, url_of("https", "localhost", srv.port, "/"),
	    "/v1/license", 5000, &res);
	assert_int_equal(res.err, 0);
	assert_int_equal(res.status, 200);
	assert_true(child_record(&srv, &rec, 3000) > 0);
	/* prefix "/" + "/v1/license" joins with a single slash */
	assert_true(strncmp(rec, "SNI=localhost\nGET /v1/license HTTP/1.1\r\n",
	    40) == 0);
	free(rec);
	res_free(&res);
	child_stop(&srv);
}

/* The uplink's way: names resolved by evdns, not a blocking getaddrinfo. */
static void
test_evdns(void **state)
{
	struct httpc_req req = { "GET", NULL, "/v1/license", KEY, NULL, NULL,
	    0, 5000 };
	struct sockaddr_in sin;
	socklen_t	 sl = sizeof(sin);
	struct child	 srv;
	struct result	 res;
	int		 mute;

	(void)state;
	/* bound, never read: queries to it go unanswered */
	mute = socket(AF_INET, SOCK_DGRAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(mute, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(mute, (struct sockaddr *)&sin, &sl), 0);
	srv_start(&srv, AF_INET, good_crt, good_key, ok_resp,
	    sizeof(ok_resp) - 1);
	req.url = url_of("https", "localhost", srv.port, "");
	assert_int_equal(run_req_dns(ctx_good, &req, &res, ntohs(sin.sin_port)),
	    0);
	assert_int_equal(res.err, 0);
	assert_string_equal(res.body, "{\"ok\":true}");
	res_free(&res);
	/* no nameserver ever answers: the one timer bounds the lookup too */
	req.url = url_of("https", "no-such-host.invalid", srv.port, "");
	req.timeout_ms = 150;
	assert_int_equal(run_req_dns(ctx_good, &req, &res, ntohs(sin.sin_port)),
	    0);
	assert_int_equal(res.err, HTTPC_ETIMEOUT);
	assert_non_null(strstr(res.errstr, "150 ms (connect)"));
	close(mute);
	child_stop(&srv);
}

static void
test_post_body(void **state)
{
	struct child	 srv;
	struct result	 res;
	struct httpc_req req = { 0 };
	unsigned char	*body;
	char		*rec, *p, hdr[64];
	size_t		 i, n = 200000;
	int		 len;

	(void)state;
	body = malloc(n);
	assert_non_null(body);
	for (i = 0; i < n; i++)
		body[i] = (unsigned char)(i * 7 + (i >> 8));
	srv_start(&srv, AF_INET, good_crt, good_key, ok_resp,
	    sizeof(ok_resp) - 1);
	req.method = "POST";
	req.url = url_of("https", "127.0.0.1", srv.port, "");
	req.path = "/v1/usage";
	req.key = KEY;
	req.ctype = "application/json; charset=utf-8";
	req.body = body;
	req.bodylen = n;
	req.timeout_ms = 5000;
	assert_int_equal(run_req(ctx_good, &req, &res), 0);
	assert_int_equal(res.err, 0);
	assert_int_equal(res.status, 200);
	assert_true(res.out > n);
	assert_true((len = child_record(&srv, &rec, 3000)) > 0);
	assert_true(strncmp(rec, "SNI=-\nPOST /v1/usage HTTP/1.1\r\n", 31) == 0);
	assert_non_null(strstr(rec,
	    "\r\nContent-Type: application/json; charset=utf-8\r\n"));
	snprintf(hdr, sizeof(hdr), "\r\nContent-Length: %zu\r\n", n);
	assert_non_null(strstr(rec, hdr));
	p = strstr(rec, "\r\n\r\n");
	assert_non_null(p);
	p += 4;
	assert_int_equal((size_t)(rec + len - p), n);
	assert_memory_equal(p, body, n);
	free(rec);
	free(body);
	res_free(&res);
	child_stop(&srv);
}

static void
test_403_retry_after(void **state)
{
	static const char resp[] = "HTTP/1.1 403 Forbidden\r\nRetry-After: "
	    "30\r\nContent-Length: 26\r\n\r\n{\"error\":\"key_rejected\"}\r\n";
	struct child	 srv;
	struct result	 res;

	(void)state;
	srv_start(&srv, AF_INET, good_crt, good_key, resp, sizeof(resp) - 1);
	run_get(ctx_good, url_of("https", "127.0.0.1", srv.port, ""),
	    "/v1/license", 5000, &res);
	assert_int_equal(res.err, 0);
	assert_int_equal(res.status, 403);
	assert_int_equal(res.retry_after, 30);
	assert_string_equal(res.body, "{\"error\":\"key_rejected\"}\r\n");
	res_free(&res);
	child_stop(&srv);
}

static void
test_untrusted_ca(void **state)
{
	struct child	 srv;
	struct result	 res;
	char		*rec;

	(void)state;
	srv_start(&srv, AF_INET, other_crt, other_key, ok_resp,
	    sizeof(ok_resp) - 1);
	run_get(ctx_good, url_of("https", "127.0.0.1", srv.port, ""),
	    "/v1/license", 5000, &res);
	assert_int_equal(res.err, HTTPC_ETLS);
	assert_non_null(strstr(res.errstr, "certificate verify failed"));
	assert_int_equal(res.status, 0);
	/* nothing of the request may have reached the server */
	assert_int_equal(child_record(&srv, &rec, 200), -1);
	child_stop(&srv);
}

static void
test_name_mismatch(void **state)
{
	struct child	 srv;
	struct result	 res;

	(void)state;
	/* the cert is trusted (ctx_wrong) but names only other.example */
	srv_start(&srv, AF_INET, wrong_crt, wrong_key, ok_resp,
	    sizeof(ok_resp) - 1);
	run_get(ctx_wrong, url_of("https", "127.0.0.1", srv.port, ""),
	    "/v1/license", 5000, &res);
	assert_int_equal(res.err, HTTPC_ETLS);
	assert_non_null(strstr(res.errstr, "IP address mismatch"));
	run_get(ctx_wrong, url_of("https", "localhost", srv.port, ""),
	    "/v1/license", 5000, &res);
	assert_int_equal(res.err, HTTPC_ETLS);
	assert_non_null(strstr(res.errstr, "hostname mismatch"));
	child_stop(&srv);
}

static long
now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

static void
test_timeout(void **state)
{
	struct child	 srv;
	struct result	 res;
	long		 t0, dt;
	char		*rec;

	(void)state;
	srv_start(&srv, AF_INET, good_crt, good_key, NULL, 0);
	t0 = now_ms();
	run_get(ctx_good, url_of("https", "127.0.0.1", srv.port, ""),
	    "/v1/license", 300, &res);
	dt = now_ms() - t0;
	assert_int_equal(res.err, HTTPC_ETIMEOUT);
	assert_non_null(strstr(res.errstr, "300 ms"));
	assert_true(dt >= 290 && dt < 1500);
	/* the request did go out: the timer covered the response wait */
	assert_true(child_record(&srv, &rec, 3000) > 0);
	free(rec);
	child_stop(&srv);
}

static void
test_refused(void **state)
{
	struct result	 res;
	int		 port = free_port();

	(void)state;
	run_get(ctx_good, url_of("https", "127.0.0.1", port, ""), "/x", 5000,
	    &res);
	assert_int_equal(res.err, HTTPC_ECONNECT);
	assert_non_null(strstr(res.errstr, "refused"));
	run_get(NULL, url_of("http", "127.0.0.1", port, ""), "/x", 5000, &res);
	assert_int_equal(res.err, HTTPC_ECONNECT);
}

static void
expect_proto(const char *resp, int tls, const char *errpart)
{
	struct child	 srv;
	struct result	 res;

	srv_start(&srv, AF_INET, tls ? good_crt : NULL, good_key, resp,
	    strlen(resp));
	run_get(tls ? ctx_good : NULL, url_of(tls ? "https" : "http",
	    "127.0.0.1", srv.port, ""), "/v1/license", 5000, &res);
	assert_int_equal(res.err, HTTPC_EPROTO);
	if (errpart != NULL && strstr(res.errstr, errpart) == NULL)
		fail_msg("errstr \"%s\" lacks \"%s\"", res.errstr, errpart);
	assert_null(res.body);
	child_stop(&srv);
}

static char *
resp_with_header(size_t vlen)
{
	static const char tail[] = "\r\nContent-Length: 2\r\n\r\nok";
	char	*r;
	size_t	 n;

	r = malloc(vlen + 64);
	assert_non_null(r);
	n = snprintf(r, 64, "HTTP/1.1 200 OK\r\nX-Big: ");
	memset(r + n, 'a', vlen);
	memcpy(r + n + vlen, tail, sizeof(tail));
	return r;
}

static void
test_big_header(void **state)
{
	struct child	 srv;
	struct result	 res;
	char		*r;

	(void)state;
	r = resp_with_header(20000);
	expect_proto(r, 1, "header too large");
	free(r);
	/* just under the 16 KiB bound still works */
	r = resp_with_header(16000);
	srv_start(&srv, AF_INET, good_crt, good_key, r, strlen(r));
	run_get(ctx_good, url_of("https", "127.0.0.1", srv.port, ""), "/",
	    5000, &res);
	assert_int_equal(res.err, 0);
	assert_string_equal(res.body, "ok");
	res_free(&res);
	child_stop(&srv);
	free(r);
}

static void
test_malformed(void **state)
{
	(void)state;
	expect_proto("HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n", 0,
	    "too large");
	expect_proto("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
	    "Content-Length: 4\r\n\r\nabcd", 0, NULL);
	expect_proto("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", 1,
	    "closed mid-response");
	expect_proto("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "zz\r\nhello\r\n0\r\n\r\n", 0, NULL);
	expect_proto("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nx", 0,
	    NULL);
	expect_proto("HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", 0, NULL);
	expect_proto("SSH-2.0-OpenSSH_9.6\r\n", 0, NULL);
	expect_proto("HTTP/1.1 20 OK\r\n\r\n", 1, NULL);
	expect_proto("", 0, "closed mid-response");
}

static void
test_chunked(void **state)
{
	static const char resp[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
	    "Chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n"
	    "a\r\n, chunked!\r\n0\r\nX-Trailer: y\r\n\r\n";
	struct child	 srv;
	struct result	 res;

	(void)state;
	srv_start(&srv, AF_INET, good_crt, good_key, resp, sizeof(resp) - 1);
	run_get(ctx_good, url_of("https", "127.0.0.1", srv.port, ""), "/",
	    5000, &res);
	assert_int_equal(res.err, 0);
	assert_int_equal(res.status, 200);
	assert_string_equal(res.body, "hello world, chunked!");
	assert_int_equal(res.bodylen, 21);
	res_free(&res);
	child_stop(&srv);
}

static void
test_until_close(void **state)
{
	static const char resp[] = "HTTP/1.0 200 OK\r\n\r\nno length here";
	struct child	 srv;
	struct result	 res;
	int		 tls;

	(void)state;
	for (tls = 0; tls < 2; tls++) {
		srv_start(&srv, AF_INET, tls ? good_crt : NULL, good_key, resp,
		    sizeof(resp) - 1);
		run_get(tls ? ctx_good : NULL, url_of(tls ? "https" : "http",
		    "127.0.0.1", srv.port, ""), "/", 5000, &res);
		assert_int_equal(res.err, 0);
		assert_string_equal(res.body, "no length here");
		res_free(&res);
		child_stop(&srv);
	}
}

static void
test_interim_and_head(void **state)
{
	static const char resp[] = "HTTP/1.1 100 Continue\r\n\r\n"
	    "HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\ndone";
	static const char hresp[] = "HTTP/1.1 200 OK\r\nContent-Length: 99"
	    "\r\n\r\n";
	struct httpc_req req = { "HEAD", NULL, "/", KEY, NULL, NULL, 0, 5000 };
	struct child	 srv;
	struct result	 res;

	(void)state;
	srv_start(&srv, AF_INET, NULL, NULL, resp, sizeof(resp) - 1);
	run_get(NULL, url_of("http", "127.0.0.1", srv.port, ""), "/", 5000,
	    &res);
	assert_int_equal(res.err, 0);
	assert_int_equal(res.status, 202);
	assert_string_equal(res.body, "done");
	res_free(&res);
	child_stop(&srv);
	/* HEAD: the Content-Length describes a body that is not sent */
	srv_start(&srv, AF_INET, NULL, NULL, hresp, sizeof(hresp) - 1);
	req.url = url_of("http", "127.0.0.1", srv.port, "");
	assert_int_equal(run_req(NULL, &req, &res), 0);
	assert_int_equal(res.err, 0);
	assert_int_equal(res.status, 200);
	assert_int_equal(res.bodylen, 0);
	res_free(&res);
	child_stop(&srv);
}

/* Plain http: the byte counters must match the wire exactly. */
static void
test_plain_counts(void **state)
{
	struct child	 srv;
	struct result	 res;
	char		*rec;
	int		 len;

	(void)state;
	srv_start(&srv, AF_INET, NULL, NULL, ok_resp, sizeof(ok_resp) - 1);
	run_get(NULL, url_of("http", "127.0.0.1", srv.port, "/pre/"),
	    "v1/license", 5000, &res);
	assert_int_equal(res.err, 0);
	assert_int_equal(res.status, 200);
	assert_int_equal(res.in, sizeof(ok_resp) - 1);
	assert_true((len = child_record(&srv, &rec, 3000)) > 0);
	assert_int_equal(res.out, len - 6);	/* minus "SNI=-\n" */
	assert_true(strncmp(rec + 6, "GET /pre/v1/license HTTP/1.1\r\n",
	    30) == 0);
	free(rec);
	res_free(&res);
	child_stop(&srv);
}

static void
test_ipv6_literal(void **state)
{
	struct child	 srv;
	struct result	 res;
	char		*rec, url[128], host[64];
	int		 fd, port;

	(void)state;
	if ((fd = listen_on(AF_INET6, &port)) == -1) {
		skip();
		return;
	}
	close(fd);
	srv_start(&srv, AF_INET6, NULL, NULL, ok_resp, sizeof(ok_resp) - 1);
	snprintf(url, sizeof(url), "http://[::1]:%d", srv.port);
	run_get(NULL, url, "/v1/license", 5000, &res);
	assert_int_equal(res.err, 0);
	assert_string_equal(res.body, "{\"ok\":true}");
	assert_true(child_record(&srv, &rec, 3000) > 0);
	snprintf(host, sizeof(host), "\r\nHost: [::1]:%d\r\n", srv.port);
	assert_non_null(strstr(rec, host));
	free(rec);
	res_free(&res);
	child_stop(&srv);
}

static void
set_proxy(const char *var, int port)
{
	char	 buf[64];

	snprintf(buf, sizeof(buf), "http://127.0.0.1:%d", port);
	assert_int_equal(setenv(var, buf, 1), 0);
}

static void
clear_proxy_env(void)
{
	unsetenv("HTTPS_PROXY");
	unsetenv("https_proxy");
	unsetenv("HTTP_PROXY");
	unsetenv("http_proxy");
	unsetenv("NO_PROXY");
	unsetenv("no_proxy");
}

static void
test_proxy_connect(void **state)
{
	struct child	 srv, px;
	struct result	 res;
	char		*rec, line[128];

	(void)state;
	srv_start(&srv, AF_INET, good_crt, good_key, ok_resp,
	    sizeof(ok_resp) - 1);
	proxy_start(&px, 0);
	set_proxy("HTTPS_PROXY", px.port);
	run_get(ctx_good, url_of("https", "localhost", srv.port, ""),
	    "/v1/license", 5000, &res);
	assert_int_equal(res.err, 0);
	assert_int_equal(res.status, 200);
	assert_string_equal(res.body, "{\"ok\":true}");
	assert_true(child_record(&px, &rec, 3000) > 0);
	snprintf(line, sizeof(line), "CONNECT localhost:%d HTTP/1.1\r\n"
	    "Host: localhost:%d\r\n\r\n", srv.port, srv.port);
	assert_string_equal(rec, line);
	free(rec);
	/* TLS ran end to end through the tunnel, SNI included */
	assert_true(child_record(&srv, &rec, 3000) > 0);
	assert_true(strncmp(rec, "SNI=localhost\nGET /v1/license", 29) == 0);
	free(rec);
	res_free(&res);
	clear_proxy_env();
	child_stop(&px);
	child_stop(&srv);
}

static void
test_proxy_plain_http(void **state)
{
	struct child	 srv, px;
	struct result	 res;
	char		*rec;

	(void)state;
	srv_start(&srv, AF_INET, NULL, NULL, ok_resp, sizeof(ok_resp) - 1);
	proxy_start(&px, 0);
	/* HTTPS_PROXY is not for http:// urls */
	set_proxy("HTTPS_PROXY", free_port());
	set_proxy("http_proxy", px.port);
	run_get(NULL, url_of("http", "127.0.0.1", srv.port, ""), "/a", 5000,
	    &res);
	assert_int_equal(res.err, 0);
	assert_string_equal(res.body, "{\"ok\":true}");
	assert_true(child_record(&px, &rec, 3000) > 0);
	assert_true(strncmp(rec, "CONNECT 127.0.0.1:", 18) == 0);
	free(rec);
	res_free(&res);
	clear_proxy_env();
	child_stop(&px);
	child_stop(&srv);
}

static void
no_proxy_case(const char *var, const char *list, const char *host)
{
	struct child	 srv, px;
	struct result	 res;
	char		*rec;

	srv_start(&srv, AF_INET, good_crt, good_key, ok_resp,
	    sizeof(ok_resp) - 1);
	proxy_start(&px, 0);
	set_proxy("https_proxy", px.port);
	assert_int_equal(setenv(var, list, 1), 0);
	run_get(ctx_good, url_of("https", host, srv.port, ""), "/v1/license",
	    5000, &res);
	assert_int_equal(res.err, 0);
	assert_int_equal(res.status, 200);
	assert_int_equal(child_record(&px, &rec, 200), -1);
	assert_true(child_record(&srv, &rec, 3000) > 0);
	free(rec);
	res_free(&res);
	clear_proxy_env();
	child_stop(&px);
	child_stop(&srv);
}

static void
test_no_proxy(void **state)
{
	(void)state;
	no_proxy_case("NO_PROXY", "127.0.0.1", "127.0.0.1");
	no_proxy_case("no_proxy", "example.com, .localhost", "localhost");
	no_proxy_case("NO_PROXY", "*", "localhost");
}

static void
test_no_proxy_nomatch(void **state)
{
	struct child	 px;
	struct result	 res;
	char		*rec;

	(void)state;
	/* "host.localhost" is no suffix match of "localhost"'s parent */
	proxy_start(&px, 1);
	set_proxy("HTTPS_PROXY", px.port);
	assert_int_equal(setenv("NO_PROXY", "calhost,127.0.0.2", 1), 0);
	run_get(ctx_good, "https://localhost:1/", "/x", 5000, &res);
	assert_int_equal(res.err, HTTPC_ECONNECT);
	assert_non_null(strstr(res.errstr, "407"));
	assert_true(child_record(&px, &rec, 3000) > 0);
	assert_true(strncmp(rec, "CONNECT localhost:1 HTTP/1.1\r\n", 30) == 0);
	free(rec);
	clear_proxy_env();
	child_stop(&px);
}

static void
test_proxy_down(void **state)
{
	struct result	 res;

	(void)state;
	set_proxy("HTTPS_PROXY", free_port());
	run_get(ctx_good, "https://localhost:1/", "/x", 5000, &res);
	assert_int_equal(res.err, HTTPC_ECONNECT);
	assert_non_null(strstr(res.errstr, "proxy"));
	clear_proxy_env();
}

static void
expect_bad(SSL_CTX *ctx, const char *url, const char *path, const char *key)
{
	struct httpc_req req = { "GET", url, path, key, NULL, NULL, 0, 1000 };
	struct result	 res;

	assert_int_equal(run_req(ctx, &req, &res), -1);
}

static void
test_bad_requests(void **state)
{
	struct httpc_req req = { "get", "https://a.example", "/", KEY, NULL,
	    NULL, 0, 1000 };
	struct result	 res;

	(void)state;
	expect_bad(ctx_good, "ftp://a.example/", "/", KEY);
	expect_bad(ctx_good, "a.example", "/", KEY);
	expect_bad(ctx_good, "https://", "/", KEY);
	expect_bad(ctx_good, "https://:443/", "/", KEY);
	expect_bad(ctx_good, "https://a.example:0/", "/", KEY);
	expect_bad(ctx_good, "https://a.example:65536/", "/", KEY);
	expect_bad(ctx_good, "https://a.example:12ab/", "/", KEY);
	expect_bad(ctx_good, "https://a.example:/", "/", KEY);
	expect_bad(ctx_good, "https://user@a.example/", "/", KEY);
	expect_bad(ctx_good, "https://a example/", "/", KEY);
	expect_bad(ctx_good, "https://a.example/p q", "/", KEY);
	expect_bad(ctx_good, "https://[::1/", "/", KEY);
	expect_bad(ctx_good, "https://[127.0.0.1]/", "/", KEY);
	expect_bad(ctx_good, "https://[a.example]/", "/", KEY);
	expect_bad(ctx_good, "https://a.example?x", "/", KEY);
	expect_bad(ctx_good, "https://a.example", "/v1\r\nX-Evil: 1", KEY);
	expect_bad(ctx_good, "https://a.example", "/v1 HTTP/1.0", KEY);
	expect_bad(ctx_good, "https://a.example", "/", "KEY\r\nX-Evil: 1");
	expect_bad(ctx_good, "https://a.example", "/", "two words");
	expect_bad(NULL, "https://a.example", "/", KEY);	/* no ctx */
	expect_bad(ctx_good, NULL, "/", KEY);
	assert_int_equal(run_req(ctx_good, &req, &res), -1);	/* method */
	req.method = "POST";
	req.bodylen = 10;					/* no body */
	assert_int_equal(run_req(ctx_good, &req, &res), -1);
	req.bodylen = 0;
	req.ctype = "text/plain\r\nX-Evil: 1";
	assert_int_equal(run_req(ctx_good, &req, &res), -1);
	/* a proxy we cannot use is refused up front, not silently bypassed */
	setenv("HTTPS_PROXY", "https://proxy.example:3128", 1);
	expect_bad(ctx_good, "https://a.example", "/", KEY);
	setenv("HTTPS_PROXY", "http://u:p@proxy.example:3128", 1);
	expect_bad(ctx_good, "https://a.example", "/", KEY);
	setenv("HTTPS_PROXY", "http://proxy.example:3128/path", 1);
	expect_bad(ctx_good, "https://a.example", "/", KEY);
	clear_proxy_env();
}

static void
test_ctx_new(void **state)
{
	SSL_CTX	*ctx;
	char	 err[256], path[400];
	FILE	*f;

	(void)state;
	ctx = httpc_ctx_new(NULL, err, sizeof(err));
	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
	assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER);
	SSL_CTX_free(ctx);
	ctx = httpc_ctx_new("", err, sizeof(err));
	assert_non_null(ctx);
	SSL_CTX_free(ctx);
	err[0] = '\0';
	snprintf(path, sizeof(path), "%s/missing.pem", tmpdir);
	assert_null(httpc_ctx_new(path, err, sizeof(err)));
	assert_non_null(strstr(err, path));
	snprintf(path, sizeof(path), "%s/garbage.pem", tmpdir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("-----BEGIN CERTIFICATE-----\nnot base64 !!\n"
	    "-----END CERTIFICATE-----\n", f);
	fclose(f);
	err[0] = '\0';
	assert_null(httpc_ctx_new(path, err, sizeof(err)));
	assert_non_null(strstr(err, path));
}

/* ---------- TLS session resumption ---------- */

static SSL_CTX *
ctx_new_good(void)
{
	SSL_CTX	*ctx;
	char	 err[256];

	ctx = httpc_ctx_new(good_crt, err, sizeof(err));
	assert_non_null(ctx);
	return ctx;
}

/* GET from a reporting server: must succeed, and its side of the handshake
 * must read "offered=X resumed=Y VERSION". */
static void
expect_hs(SSL_CTX *ctx, const char *host, int port, const char *want)
{
	struct result	 res;

	run_get(ctx, url_of("https", host, port, ""), "/", 5000, &res);
	if (res.err != 0)
		fail_msg("%s:%d: %s", host, port, res.errstr);
	assert_int_equal(res.status, 200);
	if (strcmp(res.body, want) != 0)
		fail_msg("%s:%d: server saw \"%s\", want \"%s\"", host, port,
		    res.body, want);
	res_free(&res);
}

static void
test_resume(void **state)
{
	static const struct { int maxver; const char *v; } vers[] = {
		{ 0, "TLSv1.3" }, { TLS1_2_VERSION, "TLSv1.2" } };
	static const char *const hosts[] = { "localhost", "127.0.0.1" };
	struct srvopt	 o = { 0 };
	struct child	 srv;
	SSL_CTX		*ctx;
	char		 full[64], resumed[64];
	size_t		 i, h;

	(void)state;
	for (i = 0; i < 2; i++) {
		o.maxver = vers[i].maxver;
		o.report = 1;
		srv_start_opt(&srv, AF_INET, good_crt, good_key, NULL, 0, &o);
		snprintf(full, sizeof(full), "offered=0 resumed=0 %s",
		    vers[i].v);
		snprintf(resumed, sizeof(resumed), "offered=1 resumed=1 %s",
		    vers[i].v);
		ctx = ctx_new_good();
		for (h = 0; h < 2; h++) {
			expect_hs(ctx, hosts[h], srv.port, full);
			expect_hs(ctx, hosts[h], srv.port, resumed);
			/* a resumed connection leaves a resumable session */
			expect_hs(ctx, hosts[h], srv.port, resumed);
		}
		SSL_CTX_free(ctx);
		child_stop(&srv);
	}
}

/* A session is for its host, port and context only. */
static void
test_resume_other_upstream(void **state)
{
	struct srvopt	 o = { 0 };
	struct child	 srv;
	SSL_CTX		*ctx, *ctx2;
	const char	*full = "offered=0 resumed=0 TLSv1.3";
	const char	*resumed = "offered=1 resumed=1 TLSv1.3";

	(void)state;
	/* two ports, one process: either would take the other's tickets */
	o.report = 1;
	o.twin = 1;
	srv_start_opt(&srv, AF_INET, good_crt, good_key, NULL, 0, &o);
	ctx = ctx_new_good();
	expect_hs(ctx, "localhost", srv.port, full);
	expect_hs(ctx, "localhost", srv.port, resumed);
	expect_hs(ctx, "127.0.0.1", srv.port, full);	/* other host */
	expect_hs(ctx, "localhost", srv.port2, full);	/* other port */
	expect_hs(ctx, "localhost", srv.port, resumed);	/* still cached */
	expect_hs(ctx, "127.0.0.1", srv.port, resumed);
	expect_hs(ctx, "localhost", srv.port2, resumed);
	/* another context may trust other CAs: never its sessions */
	ctx2 = ctx_new_good();
	expect_hs(ctx2, "localhost", srv.port, full);
	expect_hs(ctx2, "localhost", srv.port, resumed);
	/* a context made after one is freed (maybe at its address) neither */
	SSL_CTX_free(ctx2);
	ctx2 = ctx_new_good();
	expect_hs(ctx2, "localhost", srv.port, full);
	SSL_CTX_free(ctx2);
	SSL_CTX_free(ctx);
	child_stop(&srv);
}

/* The server restarts with new ticket keys: a full handshake, no error. */
static void
test_resume_restart(void **state)
{
	static const struct { int maxver; const char *v; } vers[] = {
		{ 0, "TLSv1.3" }, { TLS1_2_VERSION, "TLSv1.2" } };
	struct srvopt	 o = { 0 };
	struct child	 srv;
	SSL_CTX		*ctx;
	char		 want[64];
	size_t		 i;

	(void)state;
	ctx = ctx_new_good();
	for (i = 0; i < 2; i++) {
		o.maxver = vers[i].maxver;
		o.report = 1;
		o.port = 0;
		srv_start_opt(&srv, AF_INET, good_crt, good_key, NULL, 0, &o);
		snprintf(want, sizeof(want), "offered=0 resumed=0 %s",
		    vers[i].v);
		expect_hs(ctx, "localhost", srv.port, want);
		snprintf(want, sizeof(want), "offered=1 resumed=1 %s",
		    vers[i].v);
		expect_hs(ctx, "localhost", srv.port, want);
		child_stop(&srv);
		o.port = srv.port;
		srv_start_opt(&srv, AF_INET, good_crt, good_key, NULL, 0, &o);
		snprintf(want, sizeof(want), "offered=1 resumed=0 %s",
		    vers[i].v);
		expect_hs(ctx, "localhost", srv.port, want);
		/* and the new server's session replaced the dead one */
		snprintf(want, sizeof(want), "offered=1 resumed=1 %s",
		    vers[i].v);
		expect_hs(ctx, "localhost", srv.port, want);
		child_stop(&srv);
	}
	SSL_CTX_free(ctx);
}

/* A failed handshake drops the upstream's session. */
static void
test_resume_tls_fail(void **state)
{
	struct srvopt	 o = { 0 };
	struct child	 srv;
	struct result	 res;
	SSL_CTX		*ctx;

	(void)state;
	ctx = ctx_new_good();
	o.report = 1;
	srv_start_opt(&srv, AF_INET, good_crt, good_key, NULL, 0, &o);
	expect_hs(ctx, "localhost", srv.port, "offered=0 resumed=0 TLSv1.3");
	expect_hs(ctx, "localhost", srv.port, "offered=1 resumed=1 TLSv1.3");
	child_stop(&srv);
	/* same address, a certificate we do not trust: verified in full */
	o.port = srv.port;
	srv_start_opt(&srv, AF_INET, other_crt, other_key, NULL, 0, &o);
	run_get(ctx, url_of("https", "localhost", srv.port, ""), "/", 5000,
	    &res);
	assert_int_equal(res.err, HTTPC_ETLS);
	assert_non_null(strstr(res.errstr, "certificate verify failed"));
	child_stop(&srv);
	srv_start_opt(&srv, AF_INET, good_crt, good_key, NULL, 0, &o);
	expect_hs(ctx, "localhost", srv.port, "offered=0 resumed=0 TLSv1.3");
	child_stop(&srv);
	SSL_CTX_free(ctx);
}

/* 16 upstreams are kept; the 17th pushes out the least recently used. */
static void
test_resume_lru(void **state)
{
	const char	*full = "offered=0 resumed=0 TLSv1.3";
	const char	*resumed = "offered=1 resumed=1 TLSv1.3";
	struct srvopt	 o = { 0 };
	struct child	 srv;
	SSL_CTX		*ctx[17];
	size_t		 i;

	(void)state;
	o.report = 1;
	srv_start_opt(&srv, AF_INET, good_crt, good_key, NULL, 0, &o);
	for (i = 0; i < 17; i++)
		ctx[i] = ctx_new_good();
	for (i = 0; i < 16; i++)
		expect_hs(ctx[i], "localhost", srv.port, full);
	expect_hs(ctx[0], "localhost", srv.port, resumed);
	expect_hs(ctx[16], "localhost", srv.port, full);
	expect_hs(ctx[1], "localhost", srv.port, full);		/* evicted */
	expect_hs(ctx[0], "localhost", srv.port, resumed);
	expect_hs(ctx[16], "localhost", srv.port, resumed);
	for (i = 0; i < 17; i++)
		SSL_CTX_free(ctx[i]);
	child_stop(&srv);
}

/* ---------- keep-alive ---------- */

#define KA_IDLE_MS	500	/* LICPROXY_HTTPC_IDLE_MS for this run */
#define KA_PORTS	9

/* How a keep-alive server answers each request on a connection. */
enum ka_mode {
	KA_KEEP,		/* Content-Length, stays open */
	KA_CLOSE_EACH,		/* closes after each answer, says nothing */
	KA_SAY_CLOSE,		/* "Connection: close", but stays open */
	KA_HTTP10,		/* HTTP/1.0 with a length, stays open */
	KA_UNTIL_CLOSE,		/* no length: the body ends at close */
	KA_LATE_CLOSE,		/* reads the 2nd request, closes unanswered */
	KA_DROP_AFTER_FIRST	/* as LATE_CLOSE, later conns never answer */
};

struct ka_srv {
	struct child	 ch;
	int		 ports[KA_PORTS];
};

/* One record in one write: children of one server share the pipe. */
static void
ka_record(int wfd, const char *fmt, ...)
{
	char		 buf[4000];
	uint32_t	 l;
	va_list		 ap;
	int		 n;

	va_start(ap, fmt);
	n = vsnprintf(buf + sizeof(l), sizeof(buf) - sizeof(l), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf) - sizeof(l))
		n = sizeof(buf) - sizeof(l) - 1;
	l = (uint32_t)n;
	memcpy(buf, &l, sizeof(l));
	if (write(wfd, buf, sizeof(l) + n) != (ssize_t)(sizeof(l) + n))
		_exit(1);
}

/* 0: answer and go on, 1: answer and close, -1: close unanswered */
static int
ka_answer(int mode, int conn, int req, char *resp, size_t len)
{
	char	 body[64];
	int	 n;

	if ((mode == KA_LATE_CLOSE && req == 2) ||
	    (mode == KA_DROP_AFTER_FIRST && (conn > 1 || req > 1)))
		return -1;
	n = snprintf(body, sizeof(body), "conn=%d req=%d", conn, req);
	if (mode == KA_UNTIL_CLOSE) {
		snprintf(resp, len, "HTTP/1.1 200 OK\r\n\r\n%s", body);
		return 1;
	}
	snprintf(resp, len, "HTTP/1.%d 200 OK\r\n%sContent-Length: %d\r\n"
	    "\r\n%s", mode == KA_HTTP10 ? 0 : 1, mode == KA_SAY_CLOSE ?
	    "Connection: close\r\n" : "", n, body);
	return mode == KA_CLOSE_EACH;
}

static void
ka_conn(SSL_CTX *sctx, int fd, int conn, int mode, int wfd)
{
	static char	 buf[8192];
	char		 resp[256];
	SSL		*ssl = NULL;
	size_t		 n;
	int		 req, r;

	if (sctx != NULL) {
		ssl = SSL_new(sctx);
		SSL_set_fd(ssl, fd);
		if (SSL_accept(ssl) != 1)
			_exit(0);
	}
	for (req = 1;; req++) {
		if ((n = read_request(ssl, fd, buf, sizeof(buf))) == 0) {
			ka_record(wfd, "eof conn=%d", conn);
			break;
		}
		buf[n] = '\0';
		ka_record(wfd, "conn=%d req=%d\n%s", conn, req, buf);
		if ((r = ka_answer(mode, conn, req, resp, sizeof(resp))) == -1)
			break;
		io_write(ssl, fd, resp, strlen(resp));
		if (r == 1)
			break;
	}
	if (ssl != NULL)
		SSL_free(ssl);
	close(fd);
	_exit(0);
}

/* A process per connection; conn numbers count accepts over all ports. */
static void
ka_loop(const int *lfd, int nl, SSL_CTX *sctx, int mode, int wfd)
{
	struct pollfd	 pfd[KA_PORTS];
	pid_t		 ppid = getpid();
	int		 i, fd, conn = 0;

	signal(SIGCHLD, SIG_IGN);
	for (i = 0; i < nl; i++) {
		pfd[i].fd = lfd[i];
		pfd[i].events = POLLIN;
	}
	for (;;) {
		if (poll(pfd, nl, -1) <= 0)
			continue;
		for (i = 0; i < nl; i++) {
			if (!(pfd[i].revents & POLLIN) ||
			    (fd = accept(lfd[i], NULL, NULL)) == -1)
				continue;
			conn++;
			if (fork() == 0) {
				if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 ||
				    getppid() != ppid)
					_exit(1);
				ka_conn(sctx, fd, conn, mode, wfd);
			}
			close(fd);
		}
	}
}

static void
ka_start(struct ka_srv *s, int tls, int mode, int nports)
{
	struct srvopt	 o = { 0 };
	SSL_CTX		*sctx = NULL;
	int		 p[2], lfd[KA_PORTS], i;

	for (i = 0; i < nports; i++) {
		lfd[i] = listen_on(AF_INET, &s->ports[i]);
		assert_true(lfd[i] != -1);
	}
	s->ch.port = s->ports[0];
	assert_int_equal(pipe(p), 0);
	s->ch.pid = spawn();
	if (s->ch.pid == 0) {
		close(p[0]);
		if (tls)
			sctx = srv_ctx(good_crt, good_key, &o);
		ka_loop(lfd, nports, sctx, mode, p[1]);
		_exit(0);
	}
	close(p[1]);
	for (i = 0; i < nports; i++)
		close(lfd[i]);
	s->ch.rfd = p[0];
}

/* Start a GET on base; the caller runs the loop. */
static void
ka_start_get(struct event_base *base, SSL_CTX *ctx, const char *url,
    struct result *res)
{
	struct httpc_req req = { "GET", url, "/", KEY, NULL, NULL, 0, 5000 };

	memset(res, 0, sizeof(*res));
	assert_int_equal(httpc_request(base, NULL, ctx, &req, on_done, res),
	    0);
}

/* One GET on base, which keeps running: its pool outlives the call. */
static void
ka_get(struct event_base *base, SSL_CTX *ctx, const char *url,
    const char *want, struct result *res)
{
	ka_start_get(base, ctx, url, res);
	while (res->called == 0)
		event_base_loop(base, EVLOOP_ONCE);
	if (res->err != 0)
		fail_msg("%s: %s", url, res->errstr);
	assert_int_equal(res->status, 200);
	if (want != NULL && strcmp(res->body, want) != 0)
		fail_msg("%s: got \"%s\", want \"%s\"", url, res->body, want);
}

static void
ka_get1(struct event_base *base, SSL_CTX *ctx, const char *url,
    const char *want)
{
	struct result	 res;

	ka_get(base, ctx, url, want, &res);
	res_free(&res);
}

/* Run base until nothing is armed (idle connections time out), free it. */
static long
ka_drain(struct event_base *base)
{
	struct timespec	 t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(event_base_dispatch(base), 1);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	event_base_free(base);
	return (t1.tv_sec - t0.tv_sec) * 1000 +
	    (t1.tv_nsec - t0.tv_nsec) / 1000000;
}

/* Next record that starts with prefix (others skipped), or fail. */
static char *
ka_expect(struct ka_srv *s, const char *prefix, int timeout_ms)
{
	char	*rec;

	for (;;) {
		if (child_record(&s->ch, &rec, timeout_ms) < 0)
			fail_msg("no server record \"%s\"", prefix);
		if (strncmp(rec, prefix, strlen(prefix)) == 0)
			return rec;
		free(rec);
	}
}

/* Sequential requests share one connection, TLS or not. */
static void
test_ka_reuse(void **state)
{
	struct ka_srv		 s;
	struct event_base	*base;
	struct result		 res;
	SSL_CTX			*ctx;
	char			*rec;
	const char		*url;
	size_t			 in1;
	int			 tls;

	(void)state;
	for (tls = 0; tls < 2; tls++) {
		ctx = tls ? ctx_good : NULL;
		ka_start(&s, tls, KA_KEEP, 1);
		url = url_of(tls ? "https" : "http", "127.0.0.1", s.ports[0],
		    "");
		assert_non_null(base = event_base_new());
		ka_get(base, ctx, url, "conn=1 req=1", &res);
		in1 = res.in;
		res_free(&res);
		ka_get(base, ctx, url, "conn=1 req=2", &res);
		/* per request: no handshake the second time */
		if (tls)
			assert_true(res.in < in1 && res.in > 12);
		else
			assert_int_equal(res.in, in1);
		assert_true(res.out > 100);
		res_free(&res);
		ka_get1(base, ctx, url, "conn=1 req=3");
		rec = ka_expect(&s, "conn=1 req=1\n", 3000);
		assert_non_null(strstr(rec, "\r\nConnection: keep-alive\r\n"));
		free(rec);
		/* the idle connection is closed after its timeout */
		assert_true(ka_drain(base) >= KA_IDLE_MS - 50);
		free(ka_expect(&s, "eof conn=1", 3000));
		child_stop(&s.ch);
	}
}

/* The server drops the idle connection: the next request still works. */
static void
test_ka_server_closes(void **state)
{
	struct ka_srv		 s;
	struct event_base	*base;
	const char		*url;
	int			 tls;

	(void)state;
	for (tls = 0; tls < 2; tls++) {
		ka_start(&s, tls, KA_CLOSE_EACH, 1);
		url = url_of(tls ? "https" : "http", "localhost", s.ports[0],
		    "");
		assert_non_null(base = event_base_new());
		ka_get1(base, ctx_good, url, "conn=1 req=1");
		/* the server's EOF ends the idle connection, not the timer */
		assert_true(ka_drain(base) < KA_IDLE_MS - 200);
		assert_non_null(base = event_base_new());
		ka_get1(base, ctx_good, url, "conn=2 req=1");
		ka_get1(base, ctx_good, url, "conn=3 req=1");
		ka_drain(base);
		child_stop(&s.ch);
	}
}

/* Closed as it was taken: the request goes again on a new connection. */
static void
test_ka_stale_retry(void **state)
{
	struct ka_srv		 s;
	struct event_base	*base;
	struct result		 res;
	const char		*url;
	int			 tls;

	(void)state;
	for (tls = 0; tls < 2; tls++) {
		ka_start(&s, tls, KA_LATE_CLOSE, 1);
		url = url_of(tls ? "https" : "http", "127.0.0.1", s.ports[0],
		    "");
		assert_non_null(base = event_base_new());
		ka_get1(base, ctx_good, url, "conn=1 req=1");
		ka_get1(base, ctx_good, url, "conn=2 req=1");
		free(ka_expect(&s, "conn=1 req=2\n", 3000));	/* dropped */
		ka_get1(base, ctx_good, url, "conn=3 req=1");
		free(ka_expect(&s, "conn=2 req=2\n", 3000));
		ka_drain(base);
		child_stop(&s.ch);
	}
	/* only once: the fresh connection failing too is the answer */
	ka_start(&s, 0, KA_DROP_AFTER_FIRST, 1);
	url = url_of("http", "127.0.0.1", s.ports[0], "");
	assert_non_null(base = event_base_new());
	ka_get1(base, NULL, url, "conn=1 req=1");
	ka_start_get(base, NULL, url, &res);
	while (res.called == 0)
		event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(res.err, HTTPC_EPROTO);
	assert_non_null(strstr(res.errstr, "closed mid-response"));
	free(ka_expect(&s, "conn=1 req=2\n", 3000));
	free(ka_expect(&s, "conn=2 req=1\n", 3000));
	ka_drain(base);
	assert_int_equal(child_record(&s.ch, &res.body, 300), -1);
	child_stop(&s.ch);
}

/* Responses that end the connection leave nothing in the pool. */
static void
test_ka_not_pooled(void **state)
{
	static const int modes[] = { KA_SAY_CLOSE, KA_HTTP10, KA_UNTIL_CLOSE };
	struct ka_srv		 s;
	struct event_base	*base;
	const char		*url;
	size_t			 i;

	(void)state;
	for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		ka_start(&s, 1, modes[i], 1);
		url = url_of("https", "127.0.0.1", s.ports[0], "");
		assert_non_null(base = event_base_new());
		ka_get1(base, ctx_good, url, "conn=1 req=1");
		/* the client hung up at once (until-close: the server did) */
		if (modes[i] != KA_UNTIL_CLOSE)
			free(ka_expect(&s, "eof conn=1", 1000));
		ka_get1(base, ctx_good, url, "conn=2 req=1");
		assert_true(ka_drain(base) < KA_IDLE_MS - 200);
		child_stop(&s.ch);
	}
}

/* Pools are per scheme, host, port, TLS context and proxy route. */
static void
test_ka_separate_pools(void **state)
{
	struct ka_srv		 s;
	struct child		 px;
	struct event_base	*base;
	SSL_CTX			*ctx2;
	char			 a[256], b[256], c[256], err[256], *rec;

	(void)state;
	ka_start(&s, 1, KA_KEEP, 2);
	snprintf(a, sizeof(a), "%s", url_of("https", "127.0.0.1", s.ports[0],
	    ""));
	snprintf(b, sizeof(b), "%s", url_of("https", "127.0.0.1", s.ports[1],
	    ""));
	snprintf(c, sizeof(c), "%s", url_of("https", "localhost", s.ports[0],
	    ""));
	assert_non_null(ctx2 = httpc_ctx_new(good_crt, err, sizeof(err)));
	assert_non_null(base = event_base_new());
	ka_get1(base, ctx_good, a, "conn=1 req=1");
	ka_get1(base, ctx_good, b, "conn=2 req=1");
	ka_get1(base, ctx_good, c, "conn=3 req=1");
	ka_get1(base, ctx_good, a, "conn=1 req=2");
	ka_get1(base, ctx_good, b, "conn=2 req=2");
	ka_get1(base, ctx_good, c, "conn=3 req=2");
	ka_get1(base, ctx2, a, "conn=4 req=1");
	/* through a proxy: its own connection, reused through the tunnel */
	proxy_start(&px, 0);
	set_proxy("HTTPS_PROXY", px.port);
	ka_get1(base, ctx_good, a, "conn=5 req=1");
	ka_get1(base, ctx_good, a, "conn=5 req=2");
	clear_proxy_env();
	ka_get1(base, ctx_good, a, "conn=1 req=3");
	assert_true(child_record(&px, &rec, 3000) > 0);
	assert_true(strncmp(rec, "CONNECT 127.0.0.1:", 18) == 0);
	free(rec);
	ka_drain(base);
	/* one CONNECT in all */
	assert_int_equal(child_record(&px, &rec, 300), -1);
	SSL_CTX_free(ctx2);
	child_stop(&px);
	child_stop(&s.ch);
}

/* n concurrent GETs to each of ports[0..np-1]; returns how many reused. */
static int
ka_burst(struct event_base *base, const struct ka_srv *s, int first, int np,
    int n)
{
	struct result	 res[KA_PORTS * 5];
	int		 i, k = np * n, done, reused = 0;

	assert_true(k <= KA_PORTS * 5);
	for (i = 0; i < k; i++)
		ka_start_get(base, NULL, url_of("http", "127.0.0.1",
		    s->ports[first + i / n], ""), &res[i]);
	do {
		event_base_loop(base, EVLOOP_ONCE);
		for (done = 0, i = 0; i < k; i++)
			done += res[i].called;
	} while (done < k);
	for (i = 0; i < k; i++) {
		assert_int_equal(res[i].err, 0);
		assert_int_equal(res[i].status, 200);
		if (strstr(res[i].body, " req=1") == NULL)
			reused++;
		res_free(&res[i]);
	}
	return reused;
}

/* At most 4 idle connections per upstream and 32 in all. */
static void
test_ka_bounds(void **state)
{
	struct ka_srv		 s;
	struct event_base	*base;

	(void)state;
	ka_start(&s, 0, KA_KEEP, KA_PORTS);
	assert_non_null(base = event_base_new());
	assert_int_equal(ka_burst(base, &s, 0, 1, 5), 0);
	assert_int_equal(ka_burst(base, &s, 0, 1, 5), 4);
	/* 8 more upstreams, 4 each: the first one's are the oldest, out */
	assert_int_equal(ka_burst(base, &s, 1, KA_PORTS - 1, 4), 0);
	assert_int_equal(ka_burst(base, &s, 1, KA_PORTS - 1, 4), 32);
	assert_int_equal(ka_burst(base, &s, 0, 1, 4), 0);
	ka_drain(base);
	child_stop(&s.ch);
}

/* An idle connection lives KA_IDLE_MS, then the next one is new. */
static void
test_ka_idle_timeout(void **state)
{
	struct timeval		 tv = { 0, 200000 };
	struct ka_srv		 s;
	struct event_base	*base;
	const char		*url;

	(void)state;
	ka_start(&s, 1, KA_KEEP, 1);
	url = url_of("https", "127.0.0.1", s.ports[0], "");
	assert_non_null(base = event_base_new());
	ka_get1(base, ctx_good, url, "conn=1 req=1");
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	ka_get1(base, ctx_good, url, "conn=1 req=2");
	tv.tv_usec = (KA_IDLE_MS + 200) * 1000;
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	free(ka_expect(&s, "eof conn=1", 1000));
	ka_get1(base, ctx_good, url, "conn=2 req=1");
	ka_drain(base);
	child_stop(&s.ch);
}

/*
 * A caller that frees its loop (the CLI does) closes the connections parked
 * on it first: the next loop, even at the same address, connects afresh,
 * and a loop that lives on reuses its connection.
 */
static void
test_ka_close_idle(void **state)
{
	struct ka_srv		 s;
	struct event_base	*base;
	char			 want[32];
	const char		*url;
	int			 i;

	(void)state;
	ka_start(&s, 1, KA_KEEP, 1);
	url = url_of("https", "127.0.0.1", s.ports[0], "");
	for (i = 1; i <= 3; i++) {
		assert_non_null(base = event_base_new());
		snprintf(want, sizeof(want), "conn=%d req=1", i);
		ka_get1(base, ctx_good, url, want);
		/* What a caller does before freeing its loop. */
		httpc_close_idle(base);
		event_base_free(base);
	}
	assert_non_null(base = event_base_new());
	ka_get1(base, ctx_good, url, "conn=4 req=1");
	ka_get1(base, ctx_good, url, "conn=4 req=2");
	ka_drain(base);
	child_stop(&s.ch);
}

/* ---------- fixtures ---------- */

static int
mkcert(const char *name, const char *san, char *crt, char *key)
{
	char	 cmd[1200];

	snprintf(crt, 300, "%s/%s.crt", tmpdir, name);
	snprintf(key, 300, "%s/%s.key", tmpdir, name);
	snprintf(cmd, sizeof(cmd), "openssl req -x509 -newkey ed25519 -nodes "
	    "-subj /CN=%s -addext subjectAltName=%s -days 2 -keyout %s "
	    "-out %s >/dev/null 2>&1", name, san, key, crt);
	return system(cmd) == 0 ? 0 : -1;
}

static int
group_setup(void **state)
{
	char	 err[256];

	(void)state;
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	if (mkcert("good", "DNS:localhost,IP:127.0.0.1", good_crt,
	    good_key) == -1 ||
	    mkcert("other", "DNS:localhost,IP:127.0.0.1", other_crt,
	    other_key) == -1 ||
	    mkcert("wrong", "DNS:other.example", wrong_crt, wrong_key) == -1)
		return -1;
	if ((ctx_good = httpc_ctx_new(good_crt, err, sizeof(err))) == NULL ||
	    (ctx_wrong = httpc_ctx_new(wrong_crt, err, sizeof(err))) == NULL) {
		fprintf(stderr, "httpc_ctx_new: %s\n", err);
		return -1;
	}
	return 0;
}

static int
group_teardown(void **state)
{
	char	 cmd[300];

	(void)state;
	SSL_CTX_free(ctx_good);
	SSL_CTX_free(ctx_wrong);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static int
test_setup(void **state)
{
	(void)state;
	alarm(30);	/* a hung loop must fail the run, not stall it */
	clear_proxy_env();
	return 0;
}

static int
test_teardown(void **state)
{
	(void)state;
	alarm(0);
	reap(0);
	return 0;
}

#define T(f)	cmocka_unit_test_setup_teardown(f, test_setup, test_teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_get_ok),
		T(test_get_hostname_sni),
		T(test_evdns),
		T(test_post_body),
		T(test_403_retry_after),
		T(test_untrusted_ca),
		T(test_name_mismatch),
		T(test_timeout),
		T(test_refused),
		T(test_big_header),
		T(test_malformed),
		T(test_chunked),
		T(test_until_close),
		T(test_interim_and_head),
		T(test_plain_counts),
		T(test_ipv6_literal),
		T(test_proxy_connect),
		T(test_proxy_plain_http),
		T(test_no_proxy),
		T(test_no_proxy_nomatch),
		T(test_proxy_down),
		T(test_bad_requests),
		T(test_ctx_new),
		T(test_resume),
		T(test_resume_other_upstream),
		T(test_resume_restart),
		T(test_resume_tls_fail),
		T(test_resume_lru),
		T(test_ka_reuse),
		T(test_ka_server_closes),
		T(test_ka_stale_retry),
		T(test_ka_not_pooled),
		T(test_ka_separate_pools),
		T(test_ka_bounds),
		T(test_ka_idle_timeout),
		T(test_ka_close_idle),
	};

	signal(SIGPIPE, SIG_IGN);
	/* idle connections would otherwise hold each loop for 30 s */
	setenv("LICPROXY_HTTPC_IDLE_MS", "500", 1);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

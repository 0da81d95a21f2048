/*
 * tlsload.c - one HTTPS request per TLS connection, for rows 2 and 3 of
 * `make bench` (the cost of a handshake to the server).
 *
 * N threads, each in a loop for D seconds: connect -> TLS handshake ->
 * one GET with "Connection: close" -> read the whole response -> close.
 * Without -r every handshake is a full one: the client keeps no session
 * (its session cache is off and it never offers one).  With -r each thread
 * offers the newest resumable session it was given (a TLS 1.3 ticket or a
 * TLS 1.2 ticket/id), and SSL_session_reused() tells whether the server
 * accepted it, so the output says how many handshakes really resumed.
 * wrk cannot be told either way (it keeps its SSL object across
 * reconnects, so it offers the old session), which is why this exists.
 *
 * Usage: tlsload [-r] [-c CONNS] [-d SECS] [-H HEADER]... HOST PORT PATH
 * Prints one line: BENCH_JSON {...} with requests (complete 200 answers),
 * handshakes, reused, bad, errors, duration_us and latency percentiles
 * (connect to last byte, per connection).
 */
#include <sys/socket.h>
#include <sys/time.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define TL_MAXCONNS	256
#define TL_MAXHDRS	16
#define TL_REQMAX	4096
#define TL_RESPMAX	65536
/* Latency histogram: 10 us buckets to 100 ms, 1 ms buckets to 10.1 s. */
#define TL_FINE_US	10
#define TL_FINE_END	100000
#define TL_COARSE_US	1000
#define TL_BUCKETS	20000

struct tl_conf {
	struct sockaddr_in	 addr;
	SSL_CTX			*ctx;
	char			 req[TL_REQMAX];
	size_t			 reqlen;
	int			 resume;
	double			 deadline;
};

struct tl_thread {
	pthread_t		 tid;
	const struct tl_conf	*conf;
	SSL_SESSION		*sess;
	uint64_t		 requests, handshakes, reused, bad, errors;
	uint64_t		 notify;	/* answers ended by close_notify */
	uint32_t		 hist[TL_BUCKETS + 1];
};

static double
tl_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
tl_usage(void)
{
	fprintf(stderr, "usage: tlsload [-r] [-c conns] [-d secs] "
	    "[-H header]... host port path\n");
	exit(2);
}

/* 1 when buf[0..len) holds a complete "200" answer, 0 when more is
 * needed, -1 when it is complete but not a 200 or not parseable. */
static int
tl_complete(const char *buf, size_t len)
{
	const char	*eoh, *cl;
	long		 clen;

	if ((eoh = memmem(buf, len, "\r\n\r\n", 4)) == NULL)
		return 0;
	cl = memmem(buf, eoh - buf, "\r\nContent-Length:", 17);
	if (cl == NULL)
		cl = memmem(buf, eoh - buf, "\r\ncontent-length:", 17);
	if (cl == NULL)
		return -1;
	clen = strtol(cl + 17, NULL, 10);
	if ((size_t)(eoh + 4 - buf) + clen > len)
		return 0;
	return strncmp(buf, "HTTP/1.1 200 ", 13) == 0 ? 1 : -1;
}

/* Reads until the answer is complete and the server has closed (it was
 * asked to: "Connection: close"), so its side of the close is counted. */
static int
tl_read_answer(SSL *ssl)
{
	char	buf[TL_RESPMAX];
	size_t	len = 0;
	int	n, done = 0;

	for (;;) {
		n = SSL_read(ssl, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			break;
		len += n;
		if ((done = tl_complete(buf, len)) != 0 ||
		    len == sizeof(buf) - 1)
			break;
	}
	if (done == 1) {
		/* Drain to the server's close_notify/FIN. */
		while (SSL_read(ssl, buf, sizeof(buf)) > 0)
			;
	}
	return done;
}

static int
tl_connect(const struct tl_conf *c)
{
	int	fd, one = 1;

	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (const struct sockaddr *)&c->addr,
	    sizeof(c->addr)) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

static void
tl_record(struct tl_thread *t, double secs)
{
	long	us = (long)(secs * 1e6), b;

	if (us < TL_FINE_END)
		b = us / TL_FINE_US;
	else
		b = TL_FINE_END / TL_FINE_US + (us - TL_FINE_END) / TL_COARSE_US;
	t->hist[b < TL_BUCKETS ? b : TL_BUCKETS]++;
}

static uint64_t
tl_bucket_us(int b)
{
	if (b < TL_FINE_END / TL_FINE_US)
		return (uint64_t)b * TL_FINE_US + TL_FINE_US / 2;
	return TL_FINE_END + (uint64_t)(b - TL_FINE_END / TL_FINE_US) *
	    TL_COARSE_US + TL_COARSE_US / 2;
}

/* A new session (a TLS 1.3 ticket arrives after the handshake, a 1.2 one
 * at its end): the thread keeps the newest to offer next time. */
static int
tl_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct tl_thread	*t = SSL_get_app_data(ssl);
	SSL_SESSION		*dup;

	if (t == NULL || !SSL_SESSION_is_resumable(sess))
		return 0;
	/*
	 * A copy: a server may end its answer with a bare FIN instead of a
	 * close_notify, which OpenSSL 3 takes for a fatal error and marks
	 * the connection's own session not resumable.  The output counts
	 * such ends (answers - close_notify); they must not hide resumption.
	 */
	if ((dup = SSL_SESSION_dup(sess)) == NULL)
		return 0;
	SSL_SESSION_free(t->sess);
	t->sess = dup;
	return 0;	/* the library keeps its reference to sess */
}

/* One connection: handshake (offering t->sess when resuming), request,
 * answer, close.  Keeps the newest resumable session for the next one. */
static void
tl_one(struct tl_thread *t)
{
	const struct tl_conf	*c = t->conf;
	SSL			*ssl;
	double			 t0 = tl_now();
	int			 fd, ok;

	if ((fd = tl_connect(c)) == -1) {
		t->errors++;
		return;
	}
	if ((ssl = SSL_new(c->ctx)) == NULL || SSL_set_fd(ssl, fd) != 1)
		goto err;
	SSL_set_app_data(ssl, t);
	if (c->resume && t->sess != NULL)
		SSL_set_session(ssl, t->sess);
	if (SSL_connect(ssl) != 1)
		goto err;
	t->handshakes++;
	if (SSL_session_reused(ssl))
		t->reused++;
	if (SSL_write(ssl, c->req, c->reqlen) != (int)c->reqlen)
		goto err;
	ok = tl_read_answer(ssl);
	if (ok == 1) {
		t->requests++;
		tl_record(t, tl_now() - t0);
		if (SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN)
			t->notify++;
	} else
		t->bad++;
	SSL_free(ssl);
	close(fd);
	return;
err:
	t->errors++;
	ERR_clear_error();
	SSL_free(ssl);
	close(fd);
}

static void *
tl_run(void *arg)
{
	struct tl_thread	*t = arg;

	while (tl_now() < t->conf->deadline)
		tl_one(t);
	SSL_SESSION_free(t->sess);
	return NULL;
}

static SSL_CTX *
tl_ctx(int resume)
{
	SSL_CTX	*ctx;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		return NULL;
	/* The bench's certificate is self-made; checking it is not what is
	 * measured (the signature over the handshake is still verified). */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	/* Sessions are kept by hand (t->sess, from the new-session callback),
	 * never in the library's cache; without -r there is no callback and
	 * no cache, so a run can never resume by accident. */
	if (resume) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
		    SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(ctx, tl_new_session);
	} else
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	return ctx;
}

static uint64_t
tl_pct(const uint32_t *hist, uint64_t total, double p)
{
	uint64_t	want = (uint64_t)(p / 100.0 * total), seen = 0;
	int		i;

	for (i = 0; i <= TL_BUCKETS; i++) {
		seen += hist[i];
		if (seen > want)
			return tl_bucket_us(i);
	}
	return tl_bucket_us(TL_BUCKETS);
}

static void
tl_report(struct tl_thread *th, int n, double secs)
{
	static uint32_t	hist[TL_BUCKETS + 1];
	uint64_t	req = 0, hs = 0, reu = 0, bad = 0, err = 0, cn = 0;
	int		i, j;

	for (i = 0; i < n; i++) {
		req += th[i].requests;
		hs += th[i].handshakes;
		reu += th[i].reused;
		bad += th[i].bad;
		err += th[i].errors;
		cn += th[i].notify;
		for (j = 0; j <= TL_BUCKETS; j++)
			hist[j] += th[i].hist[j];
	}
	printf("BENCH_JSON {\"requests\":%llu,\"handshakes\":%llu,"
	    "\"reused\":%llu,\"bad\":%llu,\"errors\":%llu,\"close_notify\":%llu,"
	    "\"duration_us\":%llu,\"p50_us\":%llu,\"p90_us\":%llu,"
	    "\"p99_us\":%llu}\n", (unsigned long long)req,
	    (unsigned long long)hs, (unsigned long long)reu,
	    (unsigned long long)bad, (unsigned long long)err,
	    (unsigned long long)cn,
	    (unsigned long long)(secs * 1e6),
	    (unsigned long long)tl_pct(hist, req, 50),
	    (unsigned long long)tl_pct(hist, req, 90),
	    (unsigned long long)tl_pct(hist, req, 99));
}

static void
tl_request(struct tl_conf *c, const char *host, const char *path,
    char **hdrs, int nhdrs)
{
	int	i, n;

	n = snprintf(c->req, sizeof(c->req), "GET %s HTTP/1.1\r\nHost: %s\r\n",
	    path, host);
	for (i = 0; i < nhdrs && n < (int)sizeof(c->req); i++)
		n += snprintf(c->req + n, sizeof(c->req) - n, "%s\r\n",
		    hdrs[i]);
	if (n < (int)sizeof(c->req))
		n += snprintf(c->req + n, sizeof(c->req) - n,
		    "Connection: close\r\n\r\n");
	if (n >= (int)sizeof(c->req)) {
		fprintf(stderr, "tlsload: request too long\n");
		exit(2);
	}
	c->reqlen = n;
}

int
main(int argc, char **argv)
{
	static struct tl_thread	 th[TL_MAXCONNS];
	struct tl_conf		 conf;
	char			*hdrs[TL_MAXHDRS];
	double			 secs = 5, t0;
	int			 ch, i, conns = 64, nhdrs = 0;

	memset(&conf, 0, sizeof(conf));
	while ((ch = getopt(argc, argv, "rc:d:H:")) != -1) {
		switch (ch) {
		case 'r':
			conf.resume = 1;
			break;
		case 'c':
			conns = atoi(optarg);
			break;
		case 'd':
			secs = atof(optarg);
			break;
		case 'H':
			if (nhdrs == TL_MAXHDRS)
				tl_usage();
			hdrs[nhdrs++] = optarg;
			break;
		default:
			tl_usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 3 || conns < 1 || conns > TL_MAXCONNS || secs <= 0)
		tl_usage();
	conf.addr.sin_family = AF_INET;
	conf.addr.sin_port = htons(atoi(argv[1]));
	if (inet_pton(AF_INET, argv[0], &conf.addr.sin_addr) != 1)
		tl_usage();
	tl_request(&conf, argv[0], argv[2], hdrs, nhdrs);
	if ((conf.ctx = tl_ctx(conf.resume)) == NULL) {
		fprintf(stderr, "tlsload: SSL_CTX_new failed\n");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);	/* a write to a server that closed */
	t0 = tl_now();
	conf.deadline = t0 + secs;
	for (i = 0; i < conns; i++) {
		th[i].conf = &conf;
		if (pthread_create(&th[i].tid, NULL, tl_run, &th[i]) != 0) {
			fprintf(stderr, "tlsload: pthread_create failed\n");
			return 1;
		}
	}
	for (i = 0; i < conns; i++)
		pthread_join(th[i].tid, NULL);
	tl_report(th, conns, tl_now() - t0);
	SSL_CTX_free(conf.ctx);
	return 0;
}

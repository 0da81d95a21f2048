/*
 * access.c - log.access: one line per request on the TLS port, text or
 * JSON, never the key. Lines collect in memory and leave in writes of at
 * most PIPE_BUF bytes, each only when the log can take it at once, so a
 * slow journal or a full pipe delays lines (or, past ACCESS_MAX, drops and
 * counts them) but never stalls the worker.
 */
#include <sys/stat.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conf.h"
#include "log.h"
#include "proc.h"
#include "token.h"
#include "worker.h"

#define ACCESS_MAX	(1024 * 1024)	/* bytes waiting; more are dropped */
#define ACCESS_LINE	2048	/* < PIPE_BUF: one line, one write */

static struct {
	int		 on, json, sock;
	struct evbuffer	*buf;
	struct event	*flush;		/* next loop turn, or a retry */
	uint64_t	 dropped;
	time_t		 told;
} acc;

static void	access_flush(evutil_socket_t, short, void *);

int
access_init(const struct conf *cf, struct event_base *base)
{
	struct stat st;

	if (!cf->log.access)
		return 0;
	acc.on = 1;
	acc.json = cf->log.json;
	acc.sock = fstat(STDERR_FILENO, &st) == 0 && S_ISSOCK(st.st_mode);
	if ((acc.buf = evbuffer_new()) == NULL ||
	    (acc.flush = evtimer_new(base, access_flush, NULL)) == NULL)
		return -1;
	return 0;
}

int
access_enabled(void)
{
	return acc.on;
}

/* One write of whole lines, at most PIPE_BUF: atomic beside the others. */
static int
access_write1(void)
{
	size_t			 len = evbuffer_get_length(acc.buf), n;
	unsigned char		*data;
	ssize_t			 w;

	n = len < PIPE_BUF ? len : PIPE_BUF;
	data = evbuffer_pullup(acc.buf, n);
	if (n < len)	/* cut after the last whole line (< ACCESS_LINE) */
		while (n > 0 && data[n - 1] != '\n')
			n--;
	if (acc.sock)
		w = send(STDERR_FILENO, data, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	else
		w = write(STDERR_FILENO, data, n);
	if (w <= 0)
		return -1;
	evbuffer_drain(acc.buf, (size_t)w);
	return 0;
}

static void
access_flush(evutil_socket_t fd, short ev, void *arg)
{
	struct pollfd	 pfd = { STDERR_FILENO, POLLOUT, 0 };
	struct timeval	 retry = { 0, 50 * 1000 };

	(void)fd, (void)ev, (void)arg;
	while (evbuffer_get_length(acc.buf) > 0) {
		/* poll says a pipe has a free page: PIPE_BUF cannot block */
		if (poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLOUT) ||
		    access_write1() == -1) {
			evtimer_add(acc.flush, &retry);
			return;
		}
	}
}

static void
access_queue(const char *line, size_t n)
{
	if (evbuffer_get_length(acc.buf) + n > ACCESS_MAX) {
		acc.dropped++;
		if (time(NULL) - acc.told >= 60) {
			acc.told = time(NULL);
			log_warnx("access log: the log cannot keep up; %llu "
			    "lines dropped so far", (unsigned long long)
			    acc.dropped);
		}
		return;
	}
	evbuffer_add(acc.buf, line, n);
	if (!evtimer_pending(acc.flush, NULL))
		event_active(acc.flush, EV_TIMEOUT, 0);
}

/* Exiting: what is left goes out now, blocking or not. */
void
access_close(void)
{
	if (!acc.on)
		return;
	while (evbuffer_get_length(acc.buf) > 0 &&
	    evbuffer_write(acc.buf, STDERR_FILENO) > 0)
		;
}

static void
access_remote(int fd, char *buf, size_t len)
{
	struct sockaddr_storage	 ss;
	socklen_t		 sl = sizeof(ss);

	snprintf(buf, len, "-");
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == -1)
		return;
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf,
		    len);
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr,
		    buf, len);
}

/* The caller's key_id, from its well-formed key only; never the key. */
static int
access_kid(const struct http_req *req, char kid[TOKEN_KID_LEN + 1])
{
	unsigned char	 sha[32];
	const char	*key;

	if (http_auth_key(req, &key) != TOKEN_KEY_LEN ||
	    !token_key_valid(key, TOKEN_KEY_LEN))
		return 0;
	token_key_hash(key, TOKEN_KEY_LEN, sha);
	token_kid_from_hash(sha, kid);
	explicit_bzero(sha, sizeof(sha));
	return 1;
}

/* "2026-12-01T20:31:47.120Z": the seconds formatted once a second. */
static void
access_ts(char *buf, size_t len)
{
	static time_t	 last = -1;
	static char	 secs[24];
	struct timespec	 now;
	struct tm	 tm;

	clock_gettime(CLOCK_REALTIME, &now);
	if (now.tv_sec != last) {
		last = now.tv_sec;
		gmtime_r(&now.tv_sec, &tm);
		strftime(secs, sizeof(secs), "%Y-%m-%dT%H:%M:%S", &tm);
	}
	snprintf(buf, len, "%s.%03ldZ", secs, now.tv_nsec / 1000000);
}

static const char *const method_names[] = {
	"GET", "POST", "HEAD", "PUT", "DELETE", "-"
};

/*
 * The path as received, quote and backslash escaped: as JSON does in a
 * JSON line, as nginx does (\x22) in a text line.
 */
static void
access_path(const struct access_rec *a, int json, char *out, size_t len)
{
	const char	*p = a->have_head ? a->req->path : "-";
	size_t		 o = 0;

	for (; *p != '\0' && o + 5 < len; p++) {
		if (*p != '"' && *p != '\\')
			out[o++] = *p;
		else if (json) {
			out[o++] = '\\';
			out[o++] = *p;
		} else
			o += snprintf(out + o, len - o, "\\x%02X", *p);
	}
	out[o] = '\0';
}

/*
 * Rendered by hand, not with jansson: a ten-member object built and freed
 * per request was most of what a line cost (measured in
 * docs/PERFORMANCE.md). Every field is ours or validated (path 0x21-0x7e
 * with quote and backslash escaped by access_path, instance
 * [A-Za-z0-9._-], key_id hex).
 */
static int
access_json(char *line, size_t len, const char *ts, const char *remote,
    const char *method, const char *path, const struct access_rec *a,
    const char *kid)
{
	const char	*inst = a->req->instance;
	char		 k[24] = "null", in[HTTP_INSTANCE_MAX + 3] = "null";
	char		 so[16] = "null";

	if (kid != NULL)
		snprintf(k, sizeof(k), "\"%s\"", kid);
	if (inst[0] != '\0')
		snprintf(in, sizeof(in), "\"%s\"", inst);
	if (a->source != NULL)
		snprintf(so, sizeof(so), "\"%s\"", a->source);
	return snprintf(line, len, "{\"ts\":\"%s\",\"remote\":\"%s\","
	    "\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,\"bytes\":%zu,"
	    "\"us\":%lld,\"key_id\":%s,\"instance\":%s,\"source\":%s}\n", ts,
	    remote, method, path, a->code, a->bytes, (long long)a->us, k, in, so);
}

/* Called for every answer on the TLS port. */
void
access_log(const struct access_rec *a)
{
	char		 line[ACCESS_LINE], ts[40], remote[INET6_ADDRSTRLEN];
	char		 kid[TOKEN_KID_LEN + 1], path[4 * HTTP_PATH_MAX + 8];
	const char	*method = a->have_head ?
			    method_names[a->req->method] : "-";
	const char	*inst = a->req->instance;
	int		 n, haskid = access_kid(a->req, kid);

	access_ts(ts, sizeof(ts));
	access_remote(a->fd, remote, sizeof(remote));
	access_path(a, acc.json, path, sizeof(path));
	if (acc.json)
		n = access_json(line, sizeof(line), ts, remote, method, path, a,
		    haskid ? kid : NULL);
	else
		n = snprintf(line, sizeof(line), "%s %s %s \"%s\" %d %zu %lld "
		    "%s %s %s\n", ts, remote, method, path, a->code, a->bytes,
		    (long long)a->us, haskid ? kid : "-",
		    inst[0] ? inst : "-", a->source ? a->source : "-");
	if (n <= 0 || (size_t)n >= sizeof(line))
		return;
	access_queue(line, (size_t)n);
}

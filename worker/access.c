/*
 * access.c - log.access: one line per request on the TLS port, text or
 * JSON, never the key. Lines collect in memory (up to ACCESS_LINGER_MS)
 * and leave together. To a pipe or socket (the journal) a write is at most
 * PIPE_BUF bytes, so the workers' lines never interleave, and is made only
 * when the log can take it at once: a slow journal or a full pipe delays
 * lines (or, past ACCESS_MAX, drops and counts them) but never stalls the
 * worker. To a regular file (log.file, O_APPEND) each write appends whole
 * lines atomically whatever its size, and never waits for a reader, so
 * lines leave without a poll, in one write once ACCESS_FILE_WRITE
 * bytes wait.
 */
#include <sys/stat.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf.h"
#include "log.h"
#include "proc.h"
#include "stats.h"
#include "token.h"
#include "worker.h"

#define ACCESS_MAX	(1024 * 1024)	/* bytes waiting; more are dropped */
#define ACCESS_LINE	2048	/* < PIPE_BUF: one line, one write */
#define ACCESS_TS_LEN	24	/* 2026-12-01T20:31:47.120Z */
#define ACCESS_LINGER_MS 10	/* the longest a line waits for company */
#define ACCESS_FILE_WRITE (64 * 1024) /* queued to a file: write now */

static struct {
	int		 on, json, sock;
	int		 file;		/* stderr is a regular file */
	char		*buf;		/* ACCESS_MAX bytes of whole lines */
	size_t		 off, len;	/* what waits: buf[off..len) */
	struct event	*flush;		/* the linger, next turn, or a retry */
	int		 armed;		/* flush is pending */
	int		 retrying;	/* flush is the 50 ms retry timer */
	uint64_t	 dropped;
	time_t		 told;
} acc;

static void	access_flush(evutil_socket_t, short, void *);

/* What stderr is now: log_reopen (SIGUSR1) may have replaced it. */
static void
access_what(void)
{
	struct stat st;

	if (fstat(STDERR_FILENO, &st) == -1)
		st.st_mode = 0;
	acc.sock = S_ISSOCK(st.st_mode);
	acc.file = S_ISREG(st.st_mode);
}

int
access_init(const struct conf *cf, struct event_base *base)
{
	if (!cf->log.access)
		return 0;
	acc.on = 1;
	acc.json = cf->log.json;
	access_what();
	/* a flat buffer: lines are rendered in place, written from it */
	if ((acc.buf = malloc(ACCESS_MAX)) == NULL ||
	    (acc.flush = evtimer_new(base, access_flush, NULL)) == NULL)
		return -1;
	return 0;
}

int
access_enabled(void)
{
	return acc.on;
}

/*
 * One write from the front of the buffer: to a pipe or socket at most
 * PIPE_BUF, cut after a whole line, so it is atomic beside the other
 * workers' (and a pipe with a free page takes it whole); to a file all
 * of it, since a cut would let another worker's line in between.
 */
static int
access_write1(void)
{
	char	*p = acc.buf + acc.off;
	size_t	 n = acc.len - acc.off;
	ssize_t	 w;

	if (!acc.file && n > PIPE_BUF) {
		n = PIPE_BUF;
		while (n > 0 && p[n - 1] != '\n')
			n--;
	}
	if (acc.sock)
		w = send(STDERR_FILENO, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	else
		w = write(STDERR_FILENO, p, n);
	if (w <= 0)
		return -1;
	if ((acc.off += (size_t)w) == acc.len)
		acc.off = acc.len = 0;
	return 0;
}

static void
access_flush(evutil_socket_t fd, short ev, void *arg)
{
	struct pollfd	 pfd = { STDERR_FILENO, POLLOUT, 0 };
	struct timeval	 retry = { 0, 50 * 1000 };

	(void)fd, (void)ev, (void)arg;
	acc.armed = acc.retrying = 0;
	access_what();
	while (acc.len > 0) {	/* a write that empties it zeroes len */
		/* a file never waits for a reader; a pipe may be full */
		if (!acc.file && (poll(&pfd, 1, 0) != 1 ||
		    !(pfd.revents & POLLOUT)))
			break;
		if (access_write1() == -1)
			break;	/* full pipe, slow journal, full disk */
	}
	if (acc.len > 0) {
		acc.armed = acc.retrying = 1;
		evtimer_add(acc.flush, &retry);
	}
}

/* Room for one more line, or NULL (counted, and told once a minute). */
static char *
access_room(void)
{
	if (acc.len + ACCESS_LINE > ACCESS_MAX && acc.off > 0) {
		/* behind a slow log: what was written makes room */
		memmove(acc.buf, acc.buf + acc.off, acc.len - acc.off);
		acc.len -= acc.off;
		acc.off = 0;
	}
	if (acc.len + ACCESS_LINE <= ACCESS_MAX)
		return acc.buf + acc.len;
	acc.dropped++;
	/* the warning may not get through either: the metric does */
	if (stats_slot_self() != NULL)
		stats_slot_self()->access_dropped++;
	if (time(NULL) - acc.told >= 60) {
		acc.told = time(NULL);
		log_warnx("access log: the log cannot keep up; %llu lines "
		    "dropped so far", (unsigned long long)acc.dropped);
	}
	return NULL;
}

/*
 * A line was rendered at access_room(). A poll and a write per loop turn
 * were most of what the log cost under load: lines wait up to
 * ACCESS_LINGER_MS, or until a write's worth is ready, then leave
 * together.
 */
static void
access_queued(size_t n)
{
	static const struct timeval linger = { 0, ACCESS_LINGER_MS * 1000 };

	acc.len += n;
	if (acc.retrying)
		return;		/* the retry timer is set */
	if (acc.len - acc.off >= (acc.file ? ACCESS_FILE_WRITE : PIPE_BUF)) {
		if (acc.armed)
			evtimer_del(acc.flush);
		acc.armed = 1;
		event_active(acc.flush, EV_TIMEOUT, 0);
	} else if (!acc.armed) {
		acc.armed = 1;
		evtimer_add(acc.flush, &linger);
	}
}

/* Exiting: what is left goes out now, blocking or not. */
void
access_close(void)
{
	if (!acc.on)
		return;
	while (acc.len > 0 && access_write1() == 0)
		;
}

/* The peer's address as text; once per connection (conn.c keeps it). */
void
access_peer(int fd, char *buf, size_t len)
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

/*
 * The caller's key_id, from its well-formed key only; never the key. The
 * license check usually hashed it already (a->sha).
 */
static int
access_kid(const struct access_rec *a, char kid[TOKEN_KID_LEN + 1])
{
	/* the last hash and its key_id: keep-alive clients repeat a key */
	static unsigned char	 last[32];
	static char		 lastkid[TOKEN_KID_LEN + 1];
	unsigned char		 sha[32];
	const char		*key;

	if (a->sha != NULL) {
		if (lastkid[0] == '\0' || memcmp(a->sha, last, 32) != 0) {
			memcpy(last, a->sha, 32);
			token_kid_from_hash(a->sha, lastkid);
		}
		memcpy(kid, lastkid, sizeof(lastkid));
		return 1;
	}
	if (http_auth_key(a->req, &key) != TOKEN_KEY_LEN ||
	    !token_key_valid(key, TOKEN_KEY_LEN))
		return 0;
	token_key_hash(key, TOKEN_KEY_LEN, sha);
	token_kid_from_hash(sha, kid);
	explicit_bzero(sha, sizeof(sha));
	return 1;
}

/* "2026-12-01T20:31:47.120Z": the seconds formatted once a second. */
static void
access_ts(char buf[ACCESS_TS_LEN + 1])
{
	static time_t	 last = -1;
	static char	 secs[24];
	struct timespec	 now;
	struct tm	 tm;
	long		 ms;

	clock_gettime(CLOCK_REALTIME, &now);
	if (now.tv_sec != last) {
		last = now.tv_sec;
		gmtime_r(&now.tv_sec, &tm);
		strftime(secs, sizeof(secs), "%Y-%m-%dT%H:%M:%S", &tm);
	}
	ms = now.tv_nsec / 1000000;
	/* By hand, as the rest of the line: snprintf was a third of it. */
	memcpy(buf, secs, 19);
	buf[19] = '.';
	buf[20] = '0' + ms / 100;
	buf[21] = '0' + ms / 10 % 10;
	buf[22] = '0' + ms % 10;
	buf[23] = 'Z';
	buf[24] = '\0';
}

static const char *const method_names[] = {
	"GET", "POST", "HEAD", "PUT", "DELETE", "-"
};

/*
 * The path as received, quote and backslash escaped: as JSON does in a
 * JSON line, as nginx does (\x22) in a text line.
 */
/* Letters and digits from p on, as many as a license key has, or more. */
static size_t
access_keylike(const char *p)
{
	size_t n = 0;

	while (isalnum((unsigned char)p[n]))
		n++;
	return n >= TOKEN_KEY_LEN ? n : 0;
}

/*
 * A client that puts its key in the path (GET /KEY) must not get it
 * into the log: a run of 40 or more letters and digits is written as
 * "[redacted]".
 */
static void
access_path(const struct access_rec *a, int json, char *out, size_t len)
{
	static const char	 hidden[] = "[redacted]";
	const char		*start = a->have_head ? a->req->path : "-", *p;
	size_t			 o = 0, run;

	for (p = start; *p != '\0' && o + 5 < len; p++) {
		if ((p == start || !isalnum((unsigned char)p[-1])) &&
		    (run = access_keylike(p)) > 0 &&
		    o + sizeof(hidden) + 5 < len) {
			o += (size_t)(stpcpy(out + o, hidden) - (out + o));
			p += run - 1;
		} else if (*p != '"' && *p != '\\')
			out[o++] = *p;
		else if (json) {
			out[o++] = '\\';
			out[o++] = *p;
		} else
			o += snprintf(out + o, len - o, "\\x%02X", *p);
	}
	out[o] = '\0';
}

/* Appenders for a line whose every field is bounded (see access_log). */
static char *
access_put(char *p, const char *s)
{
	return stpcpy(p, s);
}

/* The JSON or the text form of a separator: lengths known when compiled. */
#define ACCESS_LIT(p, json, j, t) ((json) ? \
	mempcpy((p), (j), sizeof(j) - 1) : mempcpy((p), (t), sizeof(t) - 1))

/* v in decimal; the fields are counts and durations, never below 0. */
static char *
access_num(char *p, long long v)
{
	unsigned long long	 u = v < 0 ? 0 : (unsigned long long)v, t;
	char			*end = p + 1;

	for (t = u; t >= 10; t /= 10)
		end++;
	p = end;
	do
		*--p = '0' + u % 10;
	while ((u /= 10) != 0);
	return end;
}

/* "value" when present, else null (JSON) or - (text). */
static char *
access_opt(char *p, const char *v, int json)
{
	if (v == NULL || *v == '\0')
		return ACCESS_LIT(p, json, "null", "-");
	if (!json)
		return access_put(p, v);
	*p++ = '"';
	p = access_put(p, v);
	*p++ = '"';
	return p;
}

/*
 * Rendered by hand, not with jansson or snprintf: a ten-member object
 * built and freed per request, then snprintf's parsing of the format,
 * were most of what a line cost (docs/PERFORMANCE.md). Every field is
 * ours or validated (path 0x21-0x7e with quote and backslash escaped by
 * access_path, instance [A-Za-z0-9._-], key_id hex).
 */
static size_t
access_render(char *line, const char *ts, const char *method,
    const char *path, const struct access_rec *a, const char *kid)
{
	int	 json = acc.json;
	char	*p = line;

	p = ACCESS_LIT(p, json, "{\"ts\":\"", "");
	p = mempcpy(p, ts, ACCESS_TS_LEN);
	p = ACCESS_LIT(p, json, "\",\"remote\":\"", " ");
	p = access_put(p, a->remote);
	p = ACCESS_LIT(p, json, "\",\"method\":\"", " ");
	p = access_put(p, method);
	p = ACCESS_LIT(p, json, "\",\"path\":\"", " \"");
	p = access_put(p, path);
	p = ACCESS_LIT(p, json, "\",\"status\":", "\" ");
	p = access_num(p, a->code);
	p = ACCESS_LIT(p, json, ",\"bytes\":", " ");
	p = access_num(p, (long long)a->bytes);
	p = ACCESS_LIT(p, json, ",\"us\":", " ");
	p = access_num(p, (long long)a->us);
	p = ACCESS_LIT(p, json, ",\"key_id\":", " ");
	p = access_opt(p, kid, json);
	p = ACCESS_LIT(p, json, ",\"instance\":", " ");
	p = access_opt(p, a->req->instance, json);
	p = ACCESS_LIT(p, json, ",\"source\":", " ");
	p = access_opt(p, a->source, json);
	p = ACCESS_LIT(p, json, "}\n", "\n");
	return (size_t)(p - line);
}

/*
 * Called for every answer on the TLS port. The line fits: path at most
 * 4 * HTTP_PATH_MAX escaped, the rest well under 400 bytes.
 */
void
access_log(const struct access_rec *a)
{
	char		*line, ts[ACCESS_TS_LEN + 1];
	char		 kid[TOKEN_KID_LEN + 1], path[4 * HTTP_PATH_MAX + 8];
	const char	*method = a->have_head ?
			    method_names[a->req->method] : "-";
	int		 haskid = access_kid(a, kid);

	if ((line = access_room()) == NULL)
		return;
	access_ts(ts);
	access_path(a, acc.json, path, sizeof(path));
	access_queued(access_render(line, ts, method, path, a,
	    haskid ? kid : NULL));
}

/*
 * conn.c - one client connection: TLS (or plain, on the status listener),
 * a strict bounded request reader, routing, and replies written as one
 * buffer so each response leaves in a single TLS record.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "conf.h"
#include "log.h"
#include "proc.h"
#include "stats.h"
#include "worker.h"

#define REPLY_MAX	8192

static void	conn_read(struct bufferevent *, void *);
static void	conn_event(struct bufferevent *, short, void *);
static void	conn_reply_full(struct conn *, int, const char *, const char *,
		    const char *, size_t);

/*
 * One timer per connection, re-armed (never reallocated) as the phase
 * changes: accept -> end of head, end of head -> end of body, reply ->
 * first byte of the next request. Totals, not gaps between bytes.
 */
static void
conn_deadline(struct conn *c, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(c->timer, &tv);
}

/*
 * TLS accepts pause only while the port is full and nothing is idle; the
 * status listener never pauses. The warning is once a minute at most: a
 * flood flips this on every accept.
 */
static void
conn_budget(void)
{
	static time_t	warned;
	time_t		now;
	int		full = worker->ntls >= worker->cf->server.max_connections &&
			    TAILQ_EMPTY(&worker->idle);

	if (worker->l_tls == NULL || full == worker->tls_paused)
		return;
	worker->tls_paused = full;
	if (!full) {
		evconnlistener_enable(worker->l_tls);
		return;
	}
	evconnlistener_disable(worker->l_tls);
	if ((now = time(NULL)) - warned >= 60) {
		warned = now;
		log_warnx("TLS port full: %d connections, none idle "
		    "(server.max_connections); accepts paused", worker->ntls);
	}
}

static void
conn_count(enum stats_close why)
{
	if (stats_self != NULL)
		__atomic_add_fetch(&stats_self->closed[why], 1,
		    __ATOMIC_RELAXED);
}

static void
conn_set_idle(struct conn *c, int idle)
{
	if (c->idle == idle)
		return;
	c->idle = idle;
	if (c->is_status)
		return;		/* status conns stay on status_q */
	if (idle)
		TAILQ_INSERT_TAIL(&worker->idle, c, qentry);
	else
		TAILQ_REMOVE(&worker->idle, c, qentry);
	conn_budget();
}

static void
conn_free(struct conn *c)
{
	if (c->rid != 0)
		license_forget(c);
	usage_forget(c);
	conn_set_idle(c, 0);
	TAILQ_REMOVE(&worker->conns, c, entry);
	worker->nconns--;
	if (c->is_status) {
		TAILQ_REMOVE(&worker->status_q, c, qentry);
		worker->nstatus--;
	} else
		worker->ntls--;
	event_free(c->timer);
	bufferevent_free(c->bev);
	free(c->body);
	explicit_bzero(c->key, sizeof(c->key));
	free(c);
	conn_budget();
}

/*
 * Room for one more on a full listener. The TLS port closes its oldest
 * idle keep-alive connection; the status listener, which must always
 * answer /healthz, closes its oldest connection of any kind (status
 * requests are answered at once, so that one is slow or idle).
 */
static int
conn_make_room(int is_status)
{
	struct conn *old;

	if (is_status) {
		if (worker->nstatus < WORKER_STATUS_CONNS)
			return 0;
		old = TAILQ_FIRST(&worker->status_q);
	} else {
		if (worker->ntls < worker->cf->server.max_connections)
			return 0;
		old = TAILQ_FIRST(&worker->idle);
	}
	if (old == NULL)
		return -1;
	log_debug("%s listener full: oldest %s connection closed",
	    is_status ? "status" : "TLS", is_status ? "status" : "idle");
	conn_count(is_status ? CLOSE_STATUS_EVICTED : CLOSE_IDLE_EVICTED);
	conn_free(old);
	return 0;
}

static void
conn_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct conn *c = arg;

	(void)fd, (void)ev;
	if (c->state != CONN_READING || c->idle) {
		conn_free(c);	/* keep-alive idle, or an unread answer */
		return;
	}
	log_debug("slow client: request %s not complete in time",
	    c->have_head ? "body" : "head");
	conn_count(c->have_head ? CLOSE_BODY_TIMEOUT : CLOSE_HEADER_TIMEOUT);
	/* Part of a request arrived: say why we close. */
	if (c->have_head ||
	    evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
		c->req.keepalive = 0;
		conn_error(c, 408, "timeout", c->have_head ?
		    "request body too slow" : "request head too slow",
		    NULL, NULL);
	} else
		conn_free(c);
}

void
conn_accept(int fd, int is_status)
{
	struct conn	*c;
	SSL		*ssl;
	int		 one = 1;

	/* Without NODELAY keep-alive replies wait for the peer's delayed ACK. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (conn_make_room(is_status) == -1 ||
	    (c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return;
	}
	if ((c->timer = evtimer_new(worker->base, conn_timeout, c)) == NULL) {
		close(fd);
		free(c);
		return;
	}
	c->is_status = is_status;
	if (is_status)
		c->bev = bufferevent_socket_new(worker->base, fd,
		    BEV_OPT_CLOSE_ON_FREE);
	else if ((ssl = SSL_new(worker->env->tls)) != NULL) {
		c->bev = bufferevent_openssl_socket_new(worker->base, fd, ssl,
		    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
		if (c->bev == NULL)
			SSL_free(ssl);
		else
			bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	}
	if (c->bev == NULL) {
		close(fd);
		event_free(c->timer);
		free(c);
		return;
	}
	TAILQ_INSERT_TAIL(&worker->conns, c, entry);
	worker->nconns++;
	if (is_status) {
		TAILQ_INSERT_TAIL(&worker->status_q, c, qentry);
		worker->nstatus++;
	} else
		worker->ntls++;
	conn_budget();
	c->state = CONN_READING;
	bufferevent_setcb(c->bev, conn_read, NULL, conn_event, c);
	/* From accept: the TLS handshake counts against header_timeout. */
	conn_deadline(c, worker->cf->server.header_timeout_ms);
	/* Bound what a client can make us buffer. */
	bufferevent_setwatermark(c->bev, EV_READ, 0,
	    worker->cf->server.max_header + worker->cf->server.max_body + 4096);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void
conn_closed_write(struct bufferevent *bev, void *arg)
{
	(void)bev;
	conn_free(arg);
}

void
conn_reply(struct conn *c, int code, const char *extra, const char *body,
    size_t len)
{
	conn_reply_full(c, code, NULL, extra, body, len);
}

void
conn_reply_type(struct conn *c, int code, const char *ctype, const char *body,
    size_t len)
{
	conn_reply_full(c, code, ctype, NULL, body, len);
}

/* Where a lease answer came from, as its body and the access log say. */
const char *
conn_source(const struct conn *c)
{
	return worker->cf->mode == CONF_AUTHORITY ? "authority" :
	    c->source_up ? "upstream" : "cache";
}

static void
conn_reply_full(struct conn *c, int code, const char *ctype, const char *extra,
    const char *body, size_t len)
{
	char	buf[REPLY_MAX], *out = buf, *big = NULL;
	int	keep = c->req.keepalive && !worker->draining && !c->peer_eof &&
		    worker->cf->server.keepalive_timeout_ms > 0, n;
	size_t	cap = sizeof(buf);

	if (len + 1024 > cap) {
		cap = len + 1024;
		if ((out = big = malloc(cap)) == NULL) {
			out = buf;
			cap = sizeof(buf);
			code = 500;
			body = "{\"error\":\"internal\"}";
			len = strlen(body);
			c->req.keepalive = keep = 0;
		}
	}
	n = http_reply_build(out, cap, code, keep, ctype, extra, body, len);
	if (n > 0 && c->req.method == HTTP_HEAD)
		n -= (int)len;	/* same head, Content-Length of the GET */
	stats_request(c->have_head ? c->ep : EP_OTHER, code);
	if (!c->is_status && access_enabled())
		access_log(c, code, n > 0 ? (size_t)n : 0,
		    c->have_head && c->ep == EP_LICENSE && code == 200 ?
		    conn_source(c) : NULL);
	if (n <= 0) {
		static const char oops[] = "HTTP/1.1 500 Internal Server Error"
		    "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
		bufferevent_write(c->bev, oops, sizeof(oops) - 1);
	} else
		bufferevent_write(c->bev, out, n);
	free(big);
	free(c->body);
	c->body = NULL;
	c->have_head = 0;
	c->after_ipc = c->source_up = 0;
	if (n <= 0 || !keep) {
		c->state = CONN_CLOSING;
		bufferevent_disable(c->bev, EV_READ);
		/* Never freed here: callers may still hold c. */
		bufferevent_setcb(c->bev, NULL, conn_closed_write, conn_event, c);
		/* A client that does not read its answer is not waited for. */
		conn_deadline(c, worker->cf->server.header_timeout_ms);
		return;
	}
	c->state = CONN_READING;
	conn_set_idle(c, 1);
	conn_deadline(c, worker->cf->server.keepalive_timeout_ms);
	/* A pipelined request may already be buffered (not when conn_read's
	 * own loop is below us: it picks it up without recursing). */
	if (!c->in_read && evbuffer_get_length(bufferevent_get_input(c->bev)))
		conn_read(c->bev, c);
}

void
conn_error(struct conn *c, int code, const char *error, const char *msg,
    const char *more, const char *extra)
{
	char	body[512];
	int	n;

	n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\"%s}",
	    error, msg, more != NULL ? more : "");
	if (n < 0 || (size_t)n >= sizeof(body))
		n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", error);
	conn_reply(c, code, extra, body, (size_t)n);
}

static void
conn_parse_error(struct conn *c, int r)
{
	c->req.keepalive = 0;
	switch (r) {
	case HTTP_PARSE_TOOBIG:
		conn_error(c, 431, "header_too_large",
		    "request header exceeds the limit", NULL, NULL);
		break;
	case HTTP_PARSE_URI:
		conn_error(c, 414, "uri_too_long", "request target too long",
		    NULL, NULL);
		break;
	case HTTP_PARSE_VERSION:
		conn_error(c, 505, "version_not_supported",
		    "only HTTP/1.0 and HTTP/1.1", NULL, NULL);
		break;
	case HTTP_PARSE_NOTIMPL:
		conn_error(c, 501, "not_implemented",
		    "unsupported Transfer-Encoding", NULL, NULL);
		break;
	default:
		conn_error(c, 400, "bad_request", "malformed HTTP request",
		    NULL, NULL);
	}
}

static void
conn_method_not_allowed(struct conn *c, const char *allow)
{
	char extra[64];

	snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
	conn_error(c, 405, "method_not_allowed", "method not allowed here",
	    NULL, extra);
}

void
conn_dispatch(struct conn *c)
{
	struct http_req *r = &c->req;

	/*
	 * Reading stays enabled (toggling it costs epoll_ctl calls on every
	 * request); conn_read leaves bytes buffered while the state is BUSY,
	 * bounded by the read watermark.
	 */
	c->state = CONN_BUSY;
	/* Waiting on the uplink is not the client being slow. */
	evtimer_del(c->timer);
	if (c->is_status) {
		status_handle(c);
		return;
	}
	if (c->ep == EP_LICENSE) {
		if (r->method != HTTP_GET && r->method != HTTP_HEAD)
			conn_method_not_allowed(c, "GET, HEAD");
		else
			license_handle(c);
	} else if (c->ep == EP_USAGE) {
		if (r->method != HTTP_POST)
			conn_method_not_allowed(c, "POST");
		else
			usage_handle(c);
	} else if (c->ep == EP_SEATS || c->ep == EP_SEATS_GRANT)
		seats_handle(c);
	else
		conn_error(c, 404, "not_found", "no such endpoint", NULL, NULL);
}

/*
 * Expect: 100-continue: the client holds the body back until told; not
 * when some of it already came (RFC 9110 10.1.1 lets us omit it then).
 */
static void
conn_continue(struct conn *c)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

	if (c->req.expect_continue &&
	    evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
		bufferevent_write(c->bev, cont, sizeof(cont) - 1);
}

/* Head parsed: decide about the body before reading any of it. */
static int
conn_check_body(struct conn *c)
{
	struct http_req *r = &c->req;

	if (r->chunked) {
		r->keepalive = 0;
		conn_error(c, 411, "length_required",
		    "send the body with Content-Length", NULL, NULL);
		return -1;
	}
	if (r->content_length > (int64_t)worker->cf->server.max_body) {
		r->keepalive = 0;	/* we will not read that body */
		conn_error(c, 413, "too_large", "body exceeds server.max_body",
		    NULL, NULL);
		return -1;
	}
	if (r->content_length > 0) {
		conn_deadline(c, worker->cf->server.body_timeout_ms);
		conn_continue(c);
	}
	return 0;
}

static int
conn_read_head(struct conn *c, struct evbuffer *in)
{
	size_t	len = evbuffer_get_length(in), max = worker->cf->server.max_header;
	char	*p;
	int	 r;

	if (len > max + 4)
		len = max + 4;
	p = (char *)evbuffer_pullup(in, len);
	r = http_parse(p, len, max, &c->req, &c->headlen);
	if (r == HTTP_PARSE_MORE)
		return 0;	/* the deadline timer bounds the wait */
	if (r != HTTP_PARSE_OK) {
		conn_parse_error(c, r);
		return -1;
	}
	c->have_head = 1;
	c->ep = stats_endpoint(c->req.path);
	if (access_enabled())
		c->t0_us = proc_now_us();
	evbuffer_drain(in, c->headlen);
	return conn_check_body(c) == 0 ? 1 : -1;
}

static void
conn_read(struct bufferevent *bev, void *arg)
{
	struct conn	*c = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	size_t		 need;

	c->in_read = 1;
	while (c->state == CONN_READING && evbuffer_get_length(in) > 0) {
		if (!c->have_head) {
			if (c->idle) {
				/* Next request: header_timeout from its first byte. */
				conn_set_idle(c, 0);
				conn_deadline(c,
				    worker->cf->server.header_timeout_ms);
			}
			if (conn_read_head(c, in) <= 0)
				break;
		}
		need = c->req.content_length > 0 ?
		    (size_t)c->req.content_length : 0;
		if (evbuffer_get_length(in) < need)
			break;
		c->bodylen = need;
		if (need > 0) {
			if ((c->body = malloc(need + 1)) == NULL) {
				c->req.keepalive = 0;
				conn_error(c, 500, "internal", "out of memory",
				    NULL, NULL);
				break;
			}
			evbuffer_remove(in, c->body, need);
			c->body[need] = '\0';
		}
		conn_dispatch(c);
	}
	c->in_read = 0;
}

/*
 * OpenSSL recognises "GET ", "POST ", "HEAD ", "PUT " as a first record
 * (SSL_R_HTTP_REQUEST). Answer those in plain HTTP, as nginx does, so the
 * operator sees why instead of a reset. What the client already sent is
 * read first: closing with unread bytes would reset the answer away.
 */
static void
conn_plain_http(struct conn *c)
{
	static const char body[] = "{\"error\":\"plain_http\",\"message\":"
	    "\"plain HTTP request sent to the TLS port; use https://\"}";
	char		 buf[512];
	unsigned long	 e;
	int		 plain = 0, fd = bufferevent_getfd(c->bev), n, i;

	while ((e = bufferevent_get_openssl_error(c->bev)) != 0)
		if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
		    ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST)
			plain = 1;
	if (!plain || fd == -1)
		return;
	for (i = 0; i < 64 && read(fd, buf, sizeof(buf)) > 0; i++)
		;
	n = http_reply_build(buf, sizeof(buf), 400, 0, NULL, NULL, body,
	    sizeof(body) - 1);
	if (n > 0 && write(fd, buf, n) == n)
		stats_request(EP_OTHER, 400);
}

static void
conn_event(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	if ((what & BEV_EVENT_EOF) && c->state == CONN_BUSY) {
		/* A half-close after the request still gets its answer. */
		c->peer_eof = 1;
		bufferevent_disable(bev, EV_READ);
		return;
	}
	if ((what & BEV_EVENT_ERROR) && !c->is_status)
		conn_plain_http(c);
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
		conn_free(c);
}

/* Draining: idle keep-alive connections go now; busy ones after replying. */
void
conn_close_idle(void)
{
	struct conn *c, *next;

	for (c = TAILQ_FIRST(&worker->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if (c->state == CONN_READING && !c->have_head &&
		    evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
			conn_free(c);
	}
}

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

static void
conn_set_timeout(struct conn *c, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	bufferevent_set_timeouts(c->bev, &tv, &tv);
}

static void
conn_free(struct conn *c)
{
	if (c->rid != 0)
		license_forget(c);
	usage_forget(c);
	TAILQ_REMOVE(&worker->conns, c, entry);
	worker->nconns--;
	bufferevent_free(c->bev);
	free(c->body);
	explicit_bzero(c->key, sizeof(c->key));
	free(c);
	if (worker->paused && worker->nconns < worker->cf->server.max_connections) {
		worker->paused = 0;
		if (worker->l_tls != NULL)
			evconnlistener_enable(worker->l_tls);
		if (worker->l_status != NULL)
			evconnlistener_enable(worker->l_status);
	}
}

void
conn_accept(int fd, int is_status)
{
	struct conn	*c;
	SSL		*ssl;
	int		 one = 1;

	/* Without NODELAY keep-alive replies wait for the peer's delayed ACK. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
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
		free(c);
		return;
	}
	TAILQ_INSERT_TAIL(&worker->conns, c, entry);
	worker->nconns++;
	c->state = CONN_READING;
	bufferevent_setcb(c->bev, conn_read, NULL, conn_event, c);
	conn_set_timeout(c, worker->cf->server.header_timeout_ms);
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

static void
conn_reply_full(struct conn *c, int code, const char *ctype, const char *extra,
    const char *body, size_t len)
{
	char	buf[REPLY_MAX], *out = buf, *big = NULL;
	int	keep = c->req.keepalive && !worker->draining && !c->peer_eof, n;
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
		return;
	}
	c->state = CONN_READING;
	conn_set_timeout(c, worker->cf->server.keepalive_timeout_ms);
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
	} else
		conn_error(c, 404, "not_found", "no such endpoint", NULL, NULL);
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
	return 0;
}

static int
conn_read_head(struct conn *c, struct evbuffer *in)
{
	size_t	len = evbuffer_get_length(in), max = worker->cf->server.max_header;
	char	*p;
	int	 r;

	if (c->started_ms == 0)
		c->started_ms = proc_now_ms();
	if (len > max + 4)
		len = max + 4;
	p = (char *)evbuffer_pullup(in, len);
	r = http_parse(p, len, max, &c->req, &c->headlen);
	if (r == HTTP_PARSE_MORE) {
		if (proc_now_ms() - c->started_ms >
		    worker->cf->server.header_timeout_ms) {
			c->req.keepalive = 0;
			conn_error(c, 408, "timeout", "request header too slow",
			    NULL, NULL);
		}
		return 0;
	}
	if (r != HTTP_PARSE_OK) {
		conn_parse_error(c, r);
		return -1;
	}
	c->have_head = 1;
	c->ep = stats_endpoint(c->req.path);
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
			conn_set_timeout(c, worker->cf->server.header_timeout_ms);
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
		c->started_ms = 0;
		conn_dispatch(c);
	}
	c->in_read = 0;
}

static void
conn_event(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) &&
	    c->state == CONN_BUSY) {
		/* Waiting on the uplink is not the client being slow. */
		bufferevent_enable(bev, EV_READ);
		return;
	}
	if ((what & BEV_EVENT_EOF) && c->state == CONN_BUSY) {
		/* A half-close after the request still gets its answer. */
		c->peer_eof = 1;
		bufferevent_disable(bev, EV_READ);
		return;
	}
	if ((what & BEV_EVENT_TIMEOUT) && c->state == CONN_READING &&
	    (c->have_head || evbuffer_get_length(bufferevent_get_input(bev)))) {
		c->req.keepalive = 0;
		conn_error(c, 408, "timeout", "request too slow", NULL, NULL);
		return;
	}
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

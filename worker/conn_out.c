/*
 * conn_out.c - a connection's I/O (conn.c is the request state machine):
 * the bounded input buffer filled by SSL_read (or read, on the status
 * listener), and replies built into one buffer, counted, access-logged and
 * sent so that each leaves in one TLS record with one write, a small
 * output queue for what does not leave at once; and the clean TLS close.
 *
 * No bufferevent: bufferevent_openssl copied every record into an evbuffer
 * that the parser then pulled up and drained (~3,000 instructions a cached
 * GET), and it could not use OpenSSL's read-ahead (a pipelined request
 * left in OpenSSL's buffer would wait for bytes that may never come).
 * Here each fill runs SSL_read until OpenSSL holds nothing more.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "conf.h"
#include "proc.h"
#include "stats.h"
#include "worker.h"

#define REPLY_MAX	8192	/* replies larger than this are malloc'ed */
#define IN_FIRST	2048	/* a request head fits; grown up to conn_in_max */

static int
conn_has_head(const struct conn *c)
{
	return c->state == CONN_BODY || c->state == CONN_LEASE ||
	    c->state == CONN_COMMIT;
}

/* What a client can make us buffer: one head, one body, some slack. */
static size_t
conn_in_max(void)
{
	return worker->cf->server.max_header + worker->cf->server.max_body +
	    4096;
}

/* OpenSSL's SSL_get_error reads the thread's error queue: keep it empty. */
static void
conn_err_clean(void)
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
}

/* The bytes at c->in + c->inoff were parsed: they go. */
void
conn_in_consume(struct conn *c, size_t n)
{
	c->inoff += n;
	if (c->inoff >= c->inend)
		c->inoff = c->inend = 0;
}

/* Idle with nothing buffered: a grown buffer goes back. */
void
conn_in_shrink(struct conn *c)
{
	if (c->inend == 0 && c->incap > IN_FIRST) {
		explicit_bzero(c->in, c->incap);	/* keys */
		free(c->in);
		c->in = NULL;
		c->incap = 0;
	}
}

int
conn_in_full(const struct conn *c)
{
	return c->inend - c->inoff >= conn_in_max();
}

/* No more reading: a parked request's half-close, or the closing reply. */
void
conn_in_stop(struct conn *c)
{
	if (c->reading)
		event_del(c->rev);
	c->reading = 0;
}

/*
 * Reading again once the buffer has room: OpenSSL may hold records the
 * socket will not signal again, so the read callback runs in any case.
 */
void
conn_in_resume(struct conn *c)
{
	if (c->reading || c->peer_eof || c->state == CONN_CLOSING ||
	    conn_in_full(c))
		return;
	c->reading = 1;
	event_add(c->rev, NULL);
	event_active(c->rev, EV_READ, 1);
}

/* Room at the end of the buffer: moved up, or grown to its bound. */
static size_t
conn_in_room(struct conn *c)
{
	size_t	 max = conn_in_max(), ncap;
	char	*p;

	if (c->inend < c->incap)
		return c->incap - c->inend;
	if (c->inoff > 0) {
		memmove(c->in, c->in + c->inoff, c->inend - c->inoff);
		c->inend -= c->inoff;
		c->inoff = 0;
		if (c->inend < c->incap)
			return c->incap - c->inend;
	}
	if (c->incap >= max)
		return 0;
	ncap = c->incap == 0 ? IN_FIRST : c->incap * 2;
	if (ncap > max)
		ncap = max;
	/* Not realloc: the old block may hold a key, and is wiped first. */
	if ((p = malloc(ncap)) == NULL)
		return 0;
	if (c->in != NULL) {
		memcpy(p, c->in, c->inend);
		explicit_bzero(c->in, c->incap);
		free(c->in);
	}
	c->in = p;
	c->incap = ncap;
	return c->incap - c->inend;
}

/*
 * The first record is no TLS at all: OpenSSL names "GET ", "POST ",
 * "HEAD ", "PUT " and "CONNECT"; any other first bytes (DELETE, OPTIONS,
 * a lowercase method) fail its version check before any handshake
 * message. Those are answered in plain HTTP (conn_out_plain_http), as
 * nginx answers whatever does not start like TLS.
 */
static int
conn_tls_not_tls(struct conn *c, int reason)
{
	return reason == SSL_R_HTTP_REQUEST ||
	    reason == SSL_R_HTTPS_PROXY_REQUEST ||
	    (reason == SSL_R_WRONG_VERSION_NUMBER &&
	    SSL_get_state(c->ssl) == TLS_ST_BEFORE);
}

/* Why SSL_read or SSL_write did not move bytes, as an IO_ result. */
static enum conn_io
conn_tls_why(struct conn *c, int r, int reading)
{
	unsigned long	e;
	int		err = SSL_get_error(c->ssl, r);

	switch (err) {
	case SSL_ERROR_WANT_READ:
		return reading ? IO_OK : IO_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return IO_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:	/* close_notify, or a bare FIN */
		return IO_EOF;
	}
	while ((e = ERR_get_error()) != 0)
		if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
		    conn_tls_not_tls(c, ERR_GET_REASON(e)))
			c->plain_http = 1;
	return IO_ERR;
}

/*
 * Whatever the peer sent, into the buffer: until OpenSSL has nothing more
 * (with read-ahead one read(2) takes every record the kernel holds), the
 * buffer is full (IO_FULL: conn.c stops reading until it has room), or the
 * end. SSL_read also runs the handshake; its IO_WANT_WRITE (a handshake or
 * a KeyUpdate answer that did not leave) retries from the write event.
 */
enum conn_io
conn_in_fill(struct conn *c)
{
	size_t	room;
	ssize_t	n;

	for (;;) {
		if ((room = conn_in_room(c)) == 0)
			return conn_in_full(c) ? IO_FULL : IO_ERR;
		if (room > INT_MAX)
			room = INT_MAX;
		if (c->ssl == NULL) {
			if ((n = read(c->fd, c->in + c->inend, room)) > 0) {
				c->inend += (size_t)n;
				continue;
			}
			if (n == 0)
				return IO_EOF;
			return errno == EAGAIN || errno == EINTR ? IO_OK :
			    IO_ERR;
		}
		conn_err_clean();
		if ((n = SSL_read(c->ssl, c->in + c->inend, (int)room)) <= 0)
			return conn_tls_why(c, (int)n, 1);
		c->inend += (size_t)n;
		if (!SSL_has_pending(c->ssl))
			return IO_OK;
	}
}

/* One try to move bytes out: how many left, or -1 with *why. */
static ssize_t
conn_out_try(struct conn *c, const char *buf, size_t n, enum conn_io *why)
{
	ssize_t w;

	*why = IO_OK;
	if (n > INT_MAX)
		n = INT_MAX;
	if (c->ssl == NULL) {
		if ((w = write(c->fd, buf, n)) >= 0)
			return w;
		*why = errno == EAGAIN || errno == EINTR ? IO_WANT_WRITE :
		    IO_ERR;
		return -1;
	}
	conn_err_clean();
	if ((w = SSL_write(c->ssl, buf, (int)n)) > 0)
		return w;
	*why = conn_tls_why(c, (int)w, 0);
	return -1;
}

/* What did not leave waits: the write event, or a read OpenSSL wants. */
static void
conn_out_wait(struct conn *c, enum conn_io why)
{
	if (why == IO_WANT_WRITE)
		event_add(c->wev, NULL);
	else if (why != IO_WANT_READ) {
		c->io_err = 1;		/* conn.c frees c from the event */
		event_active(c->wev, EV_WRITE, 1);
	}
}

/*
 * Bytes out: straight to SSL_write (or write) when nothing is queued, the
 * rest queued. A TLS record that would block stays pending inside OpenSSL;
 * its retry (conn_out_flush) passes the same bytes from the front of the
 * queue (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, common/tls.c).
 */
void
conn_out_write(struct conn *c, const char *buf, size_t n)
{
	enum conn_io	why = IO_OK;
	ssize_t		w = 0;

	if (c->io_err || n == 0)
		return;
	if (evbuffer_get_length(c->out) == 0) {
		if ((w = conn_out_try(c, buf, n, &why)) < 0)
			w = 0;
		if ((size_t)w == n)
			return;
		if (why == IO_OK)
			why = IO_WANT_WRITE;	/* a short write(2) */
	}
	if (evbuffer_add(c->out, buf + w, n - (size_t)w) == -1)
		why = IO_ERR;
	conn_out_wait(c, why);
}

/* The queue, from the write event: 1 empty, 0 waiting, -1 failed. */
int
conn_out_flush(struct conn *c)
{
	enum conn_io	 why;
	size_t		 len;
	ssize_t		 w;
	char		*p;

	if (c->io_err)
		return -1;
	while ((len = evbuffer_get_length(c->out)) > 0) {
		if ((p = (char *)evbuffer_pullup(c->out, -1)) == NULL)
			return -1;
		if ((w = conn_out_try(c, p, len, &why)) < 0) {
			if (why == IO_WANT_WRITE)
				event_add(c->wev, NULL);
			else if (why != IO_WANT_READ)
				return -1;
			return 0;
		}
		evbuffer_drain(c->out, (size_t)w);
	}
	return 1;
}

/* The reply into one buffer, counted and logged, then written. */
int
conn_out_reply(struct conn *c, struct reply *rp, int *keep)
{
	char			 buf[REPLY_MAX], *out = buf, *big = NULL;
	size_t			 cap = sizeof(buf);
	int			 n, head = conn_has_head(c);
	struct access_rec	 a;

	if (rp->len + 1024 > cap) {
		cap = rp->len + 1024;
		if ((out = big = malloc(cap)) == NULL) {
			out = buf;
			cap = sizeof(buf);
			free(rp->owned);
			reply_init(rp);		/* a 500 {"error":"internal"} */
			c->req.keepalive = *keep = 0;
		}
	}
	n = http_reply_build(out, cap, rp->code, *keep, rp->ctype,
	    rp->extra[0] != '\0' ? rp->extra : NULL, rp->body, rp->len);
	if (n > 0 && c->req.method == HTTP_HEAD)
		n -= (int)rp->len;	/* same head, Content-Length of the GET */
	stats_request(head ? c->ep : EP_OTHER, rp->code);
	if (c->kind == LISTEN_TLS && access_enabled()) {
		/* The peer does not change: one getpeername per connection. */
		if (c->peer[0] == '\0')
			access_peer(c->fd, c->peer,
			    sizeof(c->peer));
		a = (struct access_rec){ &c->req, head, c->peer,
		    head ? license_key_sha(&c->hs) : NULL,
		    head ? proc_now_us() - c->t0_us : 0, rp->code,
		    n > 0 ? (size_t)n : 0, rp->source };
		access_log(&a);
	}
	if (n <= 0) {
		static const char oops[] = "HTTP/1.1 500 Internal Server Error"
		    "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
		conn_out_write(c, oops, sizeof(oops) - 1);
	} else
		conn_out_write(c, out, (size_t)n);
	free(big);
	return n;
}

/*
 * A first record that is no TLS (conn_tls_not_tls), most likely plain
 * HTTP: answer in plain HTTP, as nginx does, so the operator sees why
 * instead of a reset. What the client already sent is
 * read first: closing with unread bytes would reset the answer away.
 */
void
conn_out_plain_http(struct conn *c)
{
	struct reply	 rp;
	char		 buf[512];
	int		 n, i;

	if (!c->plain_http)
		return;
	for (i = 0; i < 64 && read(c->fd, buf, sizeof(buf)) > 0; i++)
		;
	reply_init(&rp);
	reply_error(&rp, 400, "plain_http",
	    "plain HTTP request sent to the TLS port; use https://", NULL);
	n = http_reply_build(buf, sizeof(buf), 400, 0, NULL, NULL, rp.body,
	    rp.len);
	if (n > 0 && write(c->fd, buf, n) == n)
		stats_request(EP_OTHER, 400);
}

/* What conn.c's conn_io_new made; the fd is closed by the caller. */
void
conn_io_free(struct conn *c)
{
	if (c->rev != NULL)
		event_free(c->rev);
	if (c->wev != NULL)
		event_free(c->wev);
	if (c->timer != NULL)
		event_free(c->timer);
	if (c->out != NULL)
		evbuffer_free(c->out);
	SSL_free(c->ssl);
}

/*
 * A close_notify before the FIN of a TLS connection we end: without one an
 * OpenSSL 3 client reads the close as a truncation and drops the session,
 * so it could never resume. Best effort: one non-blocking try, nothing
 * waited for, and the error queue left clean for the other connections.
 */
void
conn_out_close(struct conn *c)
{
	if (c->ssl == NULL || !SSL_is_init_finished(c->ssl))
		return;
	conn_err_clean();
	(void)SSL_shutdown(c->ssl);
	ERR_clear_error();
}

/*
 * conn_out.c - the output half of a connection (conn.c): a reply built
 * into one buffer, counted and access-logged, and sent so that it leaves
 * in one TLS record with one write; and the clean TLS close.
 */
#include <limits.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "proc.h"
#include "stats.h"
#include "worker.h"

#define REPLY_MAX	8192	/* replies larger than this are malloc'ed */

static int
conn_has_head(const struct conn *c)
{
	return c->state == CONN_BODY || c->state == CONN_LEASE ||
	    c->state == CONN_COMMIT;
}

/*
 * A keep-alive reply goes straight to SSL_write when nothing is queued or
 * pending ahead of it: bufferevent_openssl (2.1) writes only from its
 * EV_WRITE callback, which cost two epoll_ctl and one more loop turn per
 * request. Whatever does not leave goes to the bufferevent: its SSL_write
 * retry then finishes a record left pending (the bytes are the same, at
 * the front of its buffer; SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, see
 * common/tls.c), or meets the error and closes the connection. A closing
 * reply always takes the bufferevent: its drain is what frees c.
 */
static void
conn_out_tls(struct conn *c, const char *buf, size_t n, int keep)
{
	SSL	*ssl;
	int	 r = 0;

	if (keep && c->kind == LISTEN_TLS && n > 0 && n <= INT_MAX &&
	    (ssl = bufferevent_openssl_get_ssl(c->bev)) != NULL &&
	    !SSL_want_write(ssl) &&
	    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		r = SSL_write(ssl, buf, (int)n);
	if (r < 0)
		r = 0;
	if ((size_t)r < n)
		bufferevent_write(c->bev, buf + r, n - (size_t)r);
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
			access_peer(bufferevent_getfd(c->bev), c->peer,
			    sizeof(c->peer));
		a = (struct access_rec){ &c->req, head, c->peer,
		    head ? license_key_sha(&c->hs, &c->req) : NULL,
		    head ? proc_now_us() - c->t0_us : 0, rp->code,
		    n > 0 ? (size_t)n : 0, rp->source };
		access_log(&a);
	}
	if (n <= 0) {
		static const char oops[] = "HTTP/1.1 500 Internal Server Error"
		    "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
		bufferevent_write(c->bev, oops, sizeof(oops) - 1);
	} else
		conn_out_tls(c, out, (size_t)n, *keep);
	free(big);
	return n;
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
	SSL *ssl;

	if (c->kind != LISTEN_TLS ||
	    (ssl = bufferevent_openssl_get_ssl(c->bev)) == NULL ||
	    !SSL_is_init_finished(ssl))
		return;
	(void)SSL_shutdown(ssl);
	ERR_clear_error();
}

/* httpc.h - async HTTPS client for the uplink (libevent + OpenSSL). */
#ifndef HTTPC_H
#define HTTPC_H

#include <stddef.h>
#include <openssl/ssl.h>

struct event_base;
struct evdns_base;

#define HTTPC_BODY_MAX	(4 * 1024 * 1024)

struct httpc_req {
	const char	*method;	/* "GET", "POST" */
	const char	*url;		/* https://host[:port][/prefix] */
	const char	*path;		/* appended to the url's path: "/v1/license" */
	const char	*key;		/* sent as "Authorization: Token KEY" */
	const char	*ctype;		/* Content-Type of body, or NULL */
	const void	*body;
	size_t		 bodylen;
	int		 timeout_ms;	/* bounds the whole attempt */
};

struct httpc_res {
	int		 err;		/* 0, or an HTTPC_E* */
	const char	*errstr;	/* human text when err != 0 */
	int		 status;	/* HTTP status when err == 0 */
	int		 retry_after;	/* seconds, -1 if absent */
	const char	*body;		/* NUL-terminated, valid during callback */
	size_t		 bodylen;
	size_t		 bytes_out, bytes_in;	/* on the wire, for metrics */
};

#define HTTPC_ECONNECT	1	/* DNS, TCP or proxy CONNECT failure */
#define HTTPC_ETLS	2	/* handshake or certificate verification */
#define HTTPC_ETIMEOUT	3
#define HTTPC_EPROTO	4	/* malformed or oversized response */

typedef void (*httpc_cb)(const struct httpc_res *, void *arg);

/*
 * Client TLS context: verifies the peer against ca_file (or the system
 * store when NULL/""), TLS 1.2 minimum.
 */
SSL_CTX	*httpc_ctx_new(const char *ca_file, char *err, size_t errlen);

/*
 * Start one request; cb is called exactly once, later, from the loop (never
 * from inside httpc_request). Honours HTTPS_PROXY/https_proxy and NO_PROXY
 * (HTTP CONNECT). Host name verified against the url's host.
 * Returns 0, or -1 if the request could not be started (bad url).
 */
int	 httpc_request(struct event_base *, struct evdns_base *, SSL_CTX *,
	    const struct httpc_req *, httpc_cb, void *arg);

/*
 * Finished responses leave their connection parked on the caller's loop for
 * reuse; close those before freeing that loop (the uplink's never ends).
 */
void	 httpc_close_idle(struct event_base *);

#endif

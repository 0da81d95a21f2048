/*
 * httpc.h - the uplink's HTTPS client: libcurl's multi interface driven by
 * the caller's libevent loop.
 */
#ifndef HTTPC_H
#define HTTPC_H

#include <stddef.h>

struct event_base;
struct httpc;

#define HTTPC_BODY_MAX	(4 * 1024 * 1024)

struct httpc_opts {
	const char	*ca_file;	/* NULL or "" = the system store */
	const char	*client_cert;	/* PEM chain presented upstream, or NULL */
	const char	*client_key;	/* its PEM key, set with client_cert */
	int		 allow_http;	/* the CLI's status reads http:// too */
};

struct httpc_req {
	const char	*method;	/* "GET", "POST" */
	const char	*url;		/* https://host[:port][/prefix] */
	const char	*path;		/* appended to the url's path: "/v1/license" */
	const char	*key;		/* sent as "Authorization: Token KEY" */
	const char	*header;	/* one more header line ("Name: value"), or NULL */
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
	size_t		 bytes_out, bytes_in;	/* headers + bodies, for metrics */
	int		 sent;		/* the request went out: unanswered, */
					/* it may still have been applied */
};

#define HTTPC_ECONNECT	1	/* DNS, TCP or proxy CONNECT failure */
#define HTTPC_ETLS	2	/* handshake or certificate verification */
#define HTTPC_ETIMEOUT	3
#define HTTPC_EPROTO	4	/* malformed or oversized response */

typedef void (*httpc_cb)(const struct httpc_res *, void *arg);

/*
 * A client on base: one connection cache (keep-alive) and one TLS session
 * cache for all its requests. The CA bundle and the client certificate and
 * key are read here, once, so that a caller may drop privileges after;
 * the peer is verified against them (host name too), TLS 1.2 minimum.
 * HTTPS_PROXY/https_proxy and NO_PROXY/no_proxy apply (HTTP CONNECT).
 * Returns NULL with err set.
 */
struct httpc	*httpc_new(struct event_base *, const struct httpc_opts *,
		    char *err, size_t errlen);

/* The files of o are usable: the bundle has certificates, key fits cert. */
int		 httpc_check(const struct httpc_opts *, char *err,
		    size_t errlen);

/*
 * Start one request; cb is called exactly once, later, from the loop (never
 * from inside httpc_request). Returns 0, or -1 if it could not be started.
 */
int		 httpc_request(struct httpc *, const struct httpc_req *,
		    httpc_cb, void *arg);

/* Drops the requests under way without calling back, closes connections. */
void		 httpc_free(struct httpc *);

#endif

/* http.h - a small strict HTTP/1.1 request-head parser and reply builder. */
#ifndef HTTP_H
#define HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "token.h"

enum http_method {
	HTTP_GET, HTTP_POST, HTTP_HEAD, HTTP_PUT, HTTP_DELETE, HTTP_OTHER
};

#define HTTP_PATH_MAX		256
#define HTTP_AUTH_MAX		128
#define HTTP_CTYPE_MAX		128

struct http_req {
	enum http_method method;
	char		 path[HTTP_PATH_MAX + 1];	/* query string removed */
	int		 minor;			/* 0 or 1 (HTTP/1.x) */
	int		 keepalive;		/* after Connection + version */
	char		 auth[HTTP_AUTH_MAX + 1];	/* Authorization value */
	int		 auth_present;
	int		 auth_long;	/* Token or Bearer, a value too long */
	char		 ctype[HTTP_CTYPE_MAX + 1];	/* Content-Type value */
	int64_t		 content_length;	/* -1 when absent */
	int		 chunked;		/* Transfer-Encoding: chunked */
	char		 instance[TOKEN_INSTANCE_MAX + 1];	/* X-Instance-Id */
	int		 instance_bad;		/* present but malformed */
	int		 expect_continue;	/* Expect: 100-continue, 1.1 */
	int		 minimal;		/* Prefer: return=minimal */
};

/* Results of http_parse(). */
#define HTTP_PARSE_OK		1
#define HTTP_PARSE_MORE		0	/* head not complete yet */
#define HTTP_PARSE_BAD		(-400)
#define HTTP_PARSE_TOOBIG	(-431)	/* head larger than max_head */
#define HTTP_PARSE_URI		(-414)
#define HTTP_PARSE_VERSION	(-505)
#define HTTP_PARSE_NOTIMPL	(-501)	/* e.g. unsupported Transfer-Encoding */

/*
 * Parse one request head from buf[0..len). On HTTP_PARSE_OK *headlen is the
 * number of bytes of the head including the blank line.
 */
int	 http_parse(const char *buf, size_t len, size_t max_head,
	    struct http_req *req, size_t *headlen);

/* Extract the key from "Token K" or "Bearer K"; returns its length or -1. */
int	 http_auth_key(const struct http_req *req, const char **key);
/* Content-Type application/json, parameters (charset) allowed. */
int	 http_json_type(const struct http_req *req);

const char *http_reason(int code);
/* Unix seconds as RFC 3339 UTC, "2026-11-26T16:00:00Z" (the API's times). */
void	 http_time(int64_t t, char *buf, size_t sz);

/*
 * Write a complete response (status line, Date-less fixed headers,
 * Content-Type: application/json, Content-Length, Cache-Control: no-store,
 * Connection, extra (already "\r\n"-terminated lines or NULL), body) into
 * out. Returns the length, or -1 if outsz is too small.
 */
int	 http_reply_build(char *out, size_t outsz, int code, int keepalive,
	    const char *ctype, const char *extra, const char *body,
	    size_t bodylen);

#endif

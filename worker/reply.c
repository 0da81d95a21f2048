/*
 * reply.c - how handlers describe an answer for conn.c to send. Error
 * bodies are built by jansson, so a message may hold any character; only
 * the hot lease 200 (license.c) and the metrics text are rendered by hand.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "worker.h"

/* Used when even building the error body fails (out of memory). */
static const char internal_body[] = "{\"error\":\"internal\"}";

void
reply_init(struct reply *rp)
{
	/* Field by field: buf is large and written only when used. */
	rp->code = 500;
	rp->ctype = NULL;
	rp->extra[0] = '\0';
	rp->body = internal_body;
	rp->len = sizeof(internal_body) - 1;
	rp->owned = NULL;
	rp->source = NULL;
	rp->rid = 0;
}

void
reply_body(struct reply *rp, int code, const char *ctype, const char *body,
    size_t len)
{
	rp->code = code;
	rp->ctype = ctype;
	rp->body = body;
	rp->len = len;
}

/* body came from malloc; conn.c frees it once written. */
void
reply_owned(struct reply *rp, int code, const char *ctype, char *body,
    size_t len)
{
	reply_body(rp, code, ctype, body, len);
	rp->owned = body;
}

void
reply_header(struct reply *rp, const char *fmt, ...)
{
	va_list	ap;
	size_t	o = strlen(rp->extra);

	va_start(ap, fmt);
	vsnprintf(rp->extra + o, sizeof(rp->extra) - o, fmt, ap);
	va_end(ap);
}

void
reply_error(struct reply *rp, int code, const char *error, const char *msg,
    const char *reason)
{
	json_t	*j;
	size_t	 n = 0;

	j = json_pack("{s:s, s:s, s:s*}", "error", error, "message", msg,
	    "reason", reason);
	if (j != NULL)
		n = json_dumpb(j, rp->buf, sizeof(rp->buf), JSON_COMPACT);
	json_decref(j);
	rp->code = code;
	if (n == 0 || n > sizeof(rp->buf))
		reply_body(rp, code, NULL, internal_body,
		    sizeof(internal_body) - 1);
	else
		reply_body(rp, code, NULL, rp->buf, n);
}

/* What http_parse refused, as the client hears it. */
void
reply_parse_error(struct reply *rp, int r)
{
	switch (r) {
	case HTTP_PARSE_TOOBIG:
		reply_error(rp, 431, "header_too_large",
		    "request header exceeds the limit", NULL);
		break;
	case HTTP_PARSE_URI:
		reply_error(rp, 414, "uri_too_long", "request target too long",
		    NULL);
		break;
	case HTTP_PARSE_VERSION:
		reply_error(rp, 505, "version_not_supported",
		    "only HTTP/1.0 and HTTP/1.1", NULL);
		break;
	case HTTP_PARSE_NOTIMPL:
		reply_error(rp, 501, "not_implemented",
		    "unsupported Transfer-Encoding", NULL);
		break;
	default:
		reply_error(rp, 400, "bad_request", "malformed HTTP request",
		    NULL);
	}
}

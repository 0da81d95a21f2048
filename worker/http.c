/*
 * http.c - a strict HTTP/1.1 request-head parser and reply builder.
 *
 * The parser is handed everything received so far and re-parses the head
 * from the start on every call: heads are small (max_head), and not keeping
 * state between reads means a partial head can never leave a half-filled
 * request behind. Anything ambiguous about framing is rejected rather than
 * guessed at, because a front proxy may have guessed differently.
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "http.h"

#define CLEN_MAX	(INT64_C(1) << 53)	/* exact in a JSON double */

/* Per-parse facts that do not belong in struct http_req. */
struct hctx {
	int	conn_close;
	int	conn_keep;
	int	seen_te;
	int	seen_instance;
};

typedef int hdr_fn(struct http_req *, struct hctx *, const char *, size_t);

struct hdr_handler {
	const char	*name;
	size_t		 namelen;
	hdr_fn		*fn;
};

static hdr_fn	hdr_auth, hdr_ctype, hdr_clen, hdr_te, hdr_conn;
static hdr_fn	hdr_instance, hdr_expect, hdr_prefer;

#define HDR(n, f)	{ n, sizeof(n) - 1, f }
static const struct hdr_handler hdr_handlers[] = {
	HDR("authorization", hdr_auth),
	HDR("content-type", hdr_ctype),
	HDR("content-length", hdr_clen),
	HDR("transfer-encoding", hdr_te),
	HDR("connection", hdr_conn),
	HDR("x-instance-id", hdr_instance),
	HDR("expect", hdr_expect),
	HDR("prefer", hdr_prefer),
};
#undef HDR

static int
lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* ASCII-only, so the result never depends on the process locale. */
static int
ieq(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t i;

	if (alen != blen)
		return 0;
	for (i = 0; i < alen; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return 0;
	return 1;
}

static int
is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return 1;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int
is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/*
 * Only the first max_head bytes are searched: a terminator beyond them is
 * as bad as none, and it bounds the work a slow sender can cause per read.
 * A bare LF is refused as soon as it arrives: some parsers take it for a
 * line end, and waiting for a CRLF that never comes would turn a
 * malformed request into a timeout.
 */
static int
find_head_end(const char *buf, size_t len, size_t max_head, size_t *headlen)
{
	const char	*p, *end;
	size_t		 n;

	n = len < max_head ? len : max_head;
	end = buf + n;
	for (p = buf; (p = memchr(p, '\n', end - p)) != NULL; p++) {
		if (p == buf || p[-1] != '\r')
			return HTTP_PARSE_BAD;
		/* Every earlier LF had its CR, so this is CRLF CRLF. */
		if (p - buf >= 3 && p[-2] == '\n') {
			*headlen = (size_t)(p - buf) + 1;
			return HTTP_PARSE_OK;
		}
	}
	return len >= max_head ? HTTP_PARSE_TOOBIG : HTTP_PARSE_MORE;
}

static int
parse_method(const char *s, size_t n, struct http_req *req, size_t *used)
{
	size_t i;

	for (i = 0; i < n && s[i] >= 'A' && s[i] <= 'Z'; i++)
		;
	if (i == 0 || i == n || s[i] != ' ')
		return HTTP_PARSE_BAD;
	if (i == 3 && memcmp(s, "GET", 3) == 0)
		req->method = HTTP_GET;
	else if (i == 4 && memcmp(s, "POST", 4) == 0)
		req->method = HTTP_POST;
	else if (i == 4 && memcmp(s, "HEAD", 4) == 0)
		req->method = HTTP_HEAD;
	else if (i == 3 && memcmp(s, "PUT", 3) == 0)
		req->method = HTTP_PUT;
	else if (i == 6 && memcmp(s, "DELETE", 6) == 0)
		req->method = HTTP_DELETE;
	else
		req->method = HTTP_OTHER;
	*used = i + 1;
	return 0;
}

/* The query is validated like the path but dropped: no endpoint takes one. */
static int
parse_target(const char *s, size_t n, struct http_req *req, size_t *used)
{
	size_t i, plen = 0;
	int inquery = 0;

	if (n == 0 || s[0] != '/')
		return HTTP_PARSE_BAD;
	for (i = 0; i < n && s[i] != ' '; i++) {
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return HTTP_PARSE_BAD;
		if (s[i] == '?')
			inquery = 1;
		if (!inquery)
			plen++;
	}
	if (i == n)
		return HTTP_PARSE_BAD;
	if (plen > HTTP_PATH_MAX)
		return HTTP_PARSE_URI;
	memcpy(req->path, s, plen);
	req->path[plen] = '\0';
	*used = i + 1;
	return 0;
}

static int
parse_version(const char *s, size_t n, struct http_req *req)
{
	if (n != 8 || memcmp(s, "HTTP/", 5) != 0 ||
	    s[5] < '0' || s[5] > '9' || s[6] != '.' ||
	    s[7] < '0' || s[7] > '9')
		return HTTP_PARSE_BAD;
	if (s[5] != '1' || (s[7] != '0' && s[7] != '1'))
		return HTTP_PARSE_VERSION;
	req->minor = s[7] - '0';
	return 0;
}

static int
parse_reqline(const char *s, size_t n, struct http_req *req)
{
	size_t	used;
	int	rv;

	if ((rv = parse_method(s, n, req, &used)) != 0)
		return rv;
	s += used;
	n -= used;
	if ((rv = parse_target(s, n, req, &used)) != 0)
		return rv;
	return parse_version(s + used, n - used, req);
}

/*
 * A value longer than its field is kept empty, never truncated: a cut
 * key or content type could pass a prefix check; empty never does.
 */
static void
hdr_copy(char *dst, size_t max, const char *v, size_t n)
{
	if (n > max)
		n = 0;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

static int
hdr_auth(struct http_req *req, struct hctx *ctx, const char *v, size_t n)
{
	const char *sp;

	(void)ctx;
	/* Two credentials are ambiguous: which would a front proxy check? */
	if (req->auth_present)
		return HTTP_PARSE_BAD;
	req->auth_present = 1;
	/* Too long to keep, yet a key by its scheme: malformed, not missing. */
	if (n > HTTP_AUTH_MAX && (sp = memchr(v, ' ', n)) != NULL &&
	    (ieq(v, (size_t)(sp - v), "token", 5) ||
	    ieq(v, (size_t)(sp - v), "bearer", 6)))
		req->auth_long = 1;
	hdr_copy(req->auth, HTTP_AUTH_MAX, v, n);
	return 0;
}

static int
hdr_ctype(struct http_req *req, struct hctx *ctx, const char *v, size_t n)
{
	(void)ctx;
	hdr_copy(req->ctype, HTTP_CTYPE_MAX, v, n);
	return 0;
}

static int
hdr_clen(struct http_req *req, struct hctx *ctx, const char *v, size_t n)
{
	int64_t	val = 0;
	size_t	i;

	(void)ctx;
	if (n == 0)
		return HTTP_PARSE_BAD;
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return HTTP_PARSE_BAD;
		val = val * 10 + (v[i] - '0');
		if (val > CLEN_MAX)
			return HTTP_PARSE_BAD;
	}
	/* Two different lengths is the classic request-smuggling setup. */
	if (req->content_length != -1 && req->content_length != val)
		return HTTP_PARSE_BAD;
	req->content_length = val;
	return 0;
}

static int
hdr_te(struct http_req *req, struct hctx *ctx, const char *v, size_t n)
{
	/* A repeated field would mean chunked applied twice, or a list. */
	if (ctx->seen_te || n == 0)
		return HTTP_PARSE_BAD;
	ctx->seen_te = 1;
	if (!ieq(v, n, "chunked", 7))
		return HTTP_PARSE_NOTIMPL;
	req->chunked = 1;
	return 0;
}

/* The next element of a comma-separated list: v[*start..*end); 0 at its end. */
static int
list_next(const char *v, size_t n, size_t *i, size_t *start, size_t *end)
{
	if (*i >= n)
		return 0;
	*start = *i;
	while (*i < n && v[*i] != ',')
		(*i)++;
	*end = (*i)++;
	return 1;
}

/* v[*start..*end) without the whitespace around it. */
static void
ows_trim(const char *v, size_t *start, size_t *end)
{
	while (*start < *end && is_ows(v[*start]))
		(*start)++;
	while (*end > *start && is_ows(v[*end - 1]))
		(*end)--;
}

static int
hdr_conn(struct http_req *req, struct hctx *ctx, const char *v, size_t n)
{
	size_t	i = 0, start, end;

	(void)req;
	while (list_next(v, n, &i, &start, &end)) {
		ows_trim(v, &start, &end);
		if (ieq(v + start, end - start, "close", 5))
			ctx->conn_close = 1;
		else if (ieq(v + start, end - start, "keep-alive", 10))
			ctx->conn_keep = 1;
	}
	return 0;
}

/* RFC 9110 10.1.1: an HTTP/1.0 client's expectation is ignored. */
static int
hdr_expect(struct http_req *req, struct hctx *ctx, const char *v, size_t n)
{
	(void)ctx;
	if (req->minor == 1 && ieq(v, n, "100-continue", 12))
		req->expect_continue = 1;
	return 0;
}

/*
 * RFC 7240: "return=minimal" (name and value case-insensitive, the value
 * may be quoted, parameters after ';' ignored) asks for a lease answer
 * of the token alone; a proxy asks for it upstream (PERFORMANCE.md,
 * "Upstream bytes"). Any other preference is not ours and is ignored.
 */
static int
hdr_prefer(struct http_req *req, struct hctx *ctx, const char *v, size_t n)
{
	size_t	i = 0, start, end, eq, vs;

	(void)ctx;
	while (list_next(v, n, &i, &start, &end)) {
		for (eq = start; eq < end && v[eq] != ';' && v[eq] != '='; eq++)
			;
		if (eq == end || v[eq] != '=')
			continue;
		for (vs = eq + 1; vs < end && v[vs] != ';'; vs++)
			;
		end = vs;	/* the value ends at its first ';' */
		vs = eq + 1;
		ows_trim(v, &start, &eq);
		ows_trim(v, &vs, &end);
		if (end - vs >= 2 && v[vs] == '"' && v[end - 1] == '"')
			vs++, end--;
		if (ieq(v + start, eq - start, "return", 6) &&
		    ieq(v + vs, end - vs, "minimal", 7))
			req->minimal = 1;
	}
	return 0;
}

/* Only a label for status and metrics, so a bad one is noted, not fatal. */
static int
hdr_instance(struct http_req *req, struct hctx *ctx, const char *v, size_t n)
{
	req->instance[0] = '\0';
	if (ctx->seen_instance++ || !token_instance_valid(v, n)) {
		req->instance_bad = 1;
		return 0;
	}
	memcpy(req->instance, v, n);
	req->instance[n] = '\0';
	return 0;
}

static int
parse_header(const char *s, size_t n, struct http_req *req, struct hctx *ctx)
{
	const char	*v;
	size_t		 i, nlen, vlen;

	/* Covers obs-fold too: a line may not start with whitespace. */
	for (nlen = 0; nlen < n && is_tchar((unsigned char)s[nlen]); nlen++)
		;
	if (nlen == 0 || nlen == n || s[nlen] != ':')
		return HTTP_PARSE_BAD;
	v = s + nlen + 1;
	vlen = n - nlen - 1;
	for (i = 0; i < vlen; i++) {
		unsigned char c = v[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return HTTP_PARSE_BAD;
	}
	while (vlen > 0 && is_ows(v[0])) {
		v++;
		vlen--;
	}
	while (vlen > 0 && is_ows(v[vlen - 1]))
		vlen--;
	for (i = 0; i < sizeof(hdr_handlers) / sizeof(hdr_handlers[0]); i++) {
		if (ieq(s, nlen, hdr_handlers[i].name, hdr_handlers[i].namelen))
			return hdr_handlers[i].fn(req, ctx, v, vlen);
	}
	return 0;
}

/* Framing and connection rules that need the whole head. */
static int
parse_finish(struct http_req *req, const struct hctx *ctx)
{
	if (ctx->seen_te && req->content_length != -1)
		return HTTP_PARSE_BAD;
	/* RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing. */
	if (ctx->seen_te && req->minor == 0)
		return HTTP_PARSE_BAD;
	if (req->minor == 1)
		req->keepalive = !ctx->conn_close;
	else
		req->keepalive = ctx->conn_keep && !ctx->conn_close;
	return HTTP_PARSE_OK;
}

int
http_parse(const char *buf, size_t len, size_t max_head,
    struct http_req *req, size_t *headlen)
{
	struct hctx	 ctx;
	const char	*line, *nl, *end;
	size_t		 hlen = 0;
	int		 rv;

	memset(req, 0, sizeof(*req));
	memset(&ctx, 0, sizeof(ctx));
	req->content_length = -1;
	if ((rv = find_head_end(buf, len, max_head, &hlen)) != HTTP_PARSE_OK)
		return rv;
	/* end points at the final CRLF: every line before it ends in CRLF. */
	end = buf + hlen - 2;
	for (line = buf; line < end; line = nl + 1) {
		nl = memchr(line, '\n', end - line);
		if (nl == NULL || nl == line || nl[-1] != '\r')
			return HTTP_PARSE_BAD;
		if (line == buf)
			rv = parse_reqline(line, nl - 1 - line, req);
		else
			rv = parse_header(line, nl - 1 - line, req, &ctx);
		if (rv != 0)
			return rv;
	}
	if ((rv = parse_finish(req, &ctx)) == HTTP_PARSE_OK)
		*headlen = hlen;
	return rv;
}

int
http_json_type(const struct http_req *req)
{
	const char	*ct = req->ctype;
	size_t		 n = strlen("application/json");

	return strncasecmp(ct, "application/json", n) == 0 &&
	    (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

int
http_auth_key(const struct http_req *req, const char **key)
{
	const char	*s = req->auth, *sp;
	size_t		 slen;

	if (!req->auth_present || (sp = strchr(s, ' ')) == NULL)
		return -1;
	slen = sp - s;
	if (!ieq(s, slen, "token", 5) && !ieq(s, slen, "bearer", 6))
		return -1;
	while (*sp == ' ')
		sp++;
	if (*sp == '\0')
		return -1;
	*key = sp;
	return (int)strlen(sp);
}

const char *
http_reason(int code)
{
	switch (code) {
	case 200: return "OK";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	case 507: return "Insufficient Storage";
	default: return "Unknown";
	}
}

/* Decimal digits of v into the tail of tmp; returns where they start. */
static char *
fmt_size(char tmp[24], size_t v)
{
	char *p = tmp + 24;

	do {
		*--p = '0' + v % 10;
		v /= 10;
	} while (v != 0);
	return p;
}

static char *
put(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

int
http_reply_build(char *out, size_t outsz, int code, int keepalive,
    const char *ctype, const char *extra, const char *body, size_t bodylen)
{
	static const char h1[] = "\r\nContent-Type: ";
	static const char h2[] = "\r\nContent-Length: ";
	static const char h3[] = "\r\nCache-Control: no-store\r\nConnection: ";
	const char	*reason, *conn, *num;
	char		 tmp[24], st[13], *p;
	size_t		 rlen, clen, xlen, nlen, connlen, total;

	if (code < 100 || code > 999 || (body == NULL && bodylen > 0))
		return -1;
	if (ctype == NULL)
		ctype = "application/json";
	reason = http_reason(code);
	conn = keepalive ? "keep-alive\r\n" : "close\r\n";
	connlen = keepalive ? 12 : 7;
	rlen = strlen(reason);
	clen = strlen(ctype);
	xlen = extra != NULL ? strlen(extra) : 0;
	num = fmt_size(tmp, bodylen);
	nlen = tmp + sizeof(tmp) - num;
	memcpy(st, "HTTP/1.1 ", 9);
	st[9] = '0' + code / 100;
	st[10] = '0' + code / 10 % 10;
	st[11] = '0' + code % 10;
	st[12] = ' ';
	total = sizeof(st) + rlen + sizeof(h1) - 1 + clen + sizeof(h2) - 1 +
	    nlen + sizeof(h3) - 1 + connlen + xlen + 2;
	if (bodylen > SIZE_MAX - total || total + bodylen > outsz ||
	    total + bodylen > INT_MAX)
		return -1;
	p = put(out, st, sizeof(st));
	p = put(p, reason, rlen);
	p = put(p, h1, sizeof(h1) - 1);
	p = put(p, ctype, clen);
	p = put(p, h2, sizeof(h2) - 1);
	p = put(p, num, nlen);
	p = put(p, h3, sizeof(h3) - 1);
	p = put(p, conn, connlen);
	if (xlen > 0)
		p = put(p, extra, xlen);
	p = put(p, "\r\n", 2);
	if (bodylen > 0)
		p = put(p, body, bodylen);
	return (int)(p - out);
}

void
http_time(int64_t t, char *buf, size_t sz)
{
	time_t		tt = (time_t)t;
	struct tm	tm;

	gmtime_r(&tt, &tm);
	strftime(buf, sz, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

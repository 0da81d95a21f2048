/* test_http.c - request-head parser and reply builder. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "http.h"

#define MAXH	8192

static struct http_req	req;
static size_t		hlen;

static int
parse(const char *s)
{
	hlen = 0;
	return http_parse(s, strlen(s), MAXH, &req, &hlen);
}

/* Parse "REQLINE\r\n" + hdr + "\r\n" and return the result. */
static int
parse_hdr(const char *hdr)
{
	char buf[4096];

	snprintf(buf, sizeof(buf), "POST /v1/usage HTTP/1.1\r\n%s\r\n", hdr);
	return parse(buf);
}

static void
t_simple_get(void **state)
{
	const char *s = "GET /v1/license HTTP/1.1\r\nHost: x\r\n\r\n";

	(void)state;
	assert_int_equal(parse(s), HTTP_PARSE_OK);
	assert_int_equal(hlen, strlen(s));
	assert_int_equal(req.method, HTTP_GET);
	assert_string_equal(req.path, "/v1/license");
	assert_int_equal(req.minor, 1);
	assert_int_equal(req.keepalive, 1);
	assert_int_equal(req.auth_present, 0);
	assert_int_equal(req.content_length, -1);
	assert_int_equal(req.chunked, 0);
	assert_string_equal(req.ctype, "");
	assert_string_equal(req.instance, "");
	assert_int_equal(req.instance_bad, 0);
}

static void
t_post_clen(void **state)
{
	(void)state;
	assert_int_equal(parse_hdr("Content-Type:   application/json  \r\n"
	    "content-LENGTH: 42\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.method, HTTP_POST);
	assert_string_equal(req.path, "/v1/usage");
	assert_string_equal(req.ctype, "application/json");
	assert_int_equal(req.content_length, 42);
	/* Same value twice is harmless. */
	assert_int_equal(parse_hdr("Content-Length: 7\r\n"
	    "Content-Length: 007\r\n"),
	    HTTP_PARSE_OK);
	assert_int_equal(req.content_length, 7);
	assert_int_equal(parse_hdr("Content-Length: 9007199254740992\r\n"),
	    HTTP_PARSE_OK);
	assert_int_equal(req.content_length, INT64_C(9007199254740992));
	assert_int_equal(parse_hdr("Content-Length: 0\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.content_length, 0);
}

static void
t_methods(void **state)
{
	(void)state;
	assert_int_equal(parse("HEAD / HTTP/1.1\r\n\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.method, HTTP_HEAD);
	assert_int_equal(parse("PUT / HTTP/1.1\r\n\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.method, HTTP_PUT);
	assert_int_equal(parse("DELETE /x HTTP/1.1\r\n\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.method, HTTP_DELETE);
	assert_int_equal(parse("PATCH /x HTTP/1.1\r\n\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.method, HTTP_OTHER);
	assert_int_equal(parse("GETS / HTTP/1.1\r\n\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.method, HTTP_OTHER);
}

static void
t_keepalive(void **state)
{
	(void)state;
	assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.minor, 0);
	assert_int_equal(req.keepalive, 0);
	assert_int_equal(parse("GET / HTTP/1.0\r\n"
	    "Connection: Keep-Alive\r\n\r\n"),
	    HTTP_PARSE_OK);
	assert_int_equal(req.keepalive, 1);
	assert_int_equal(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"),
	    HTTP_PARSE_OK);
	assert_int_equal(req.keepalive, 0);
	assert_int_equal(parse("GET / HTTP/1.1\r\n"
	    "Connection: keep-alive\r\n\r\n"),
	    HTTP_PARSE_OK);
	assert_int_equal(req.keepalive, 1);
	/* Tokens in a list, any case, and across repeated fields. */
	assert_int_equal(parse("GET / HTTP/1.1\r\n"
	    "Connection: Upgrade ,  CLOSE\r\n\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.keepalive, 0);
	assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: foo\r\n"
	    "Connection: te,keep-alive\r\n\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.keepalive, 1);
	/* close wins over keep-alive. */
	assert_int_equal(parse("GET / HTTP/1.0\r\n"
	    "Connection: keep-alive, close\r\n\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.keepalive, 0);
	/* Only whole tokens count. */
	assert_int_equal(parse("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n"),
	    HTTP_PARSE_OK);
	assert_int_equal(req.keepalive, 1);
	assert_int_equal(parse("GET / HTTP/1.0\r\n"
	    "Connection: keep-alive2\r\n\r\n"),
	    HTTP_PARSE_OK);
	assert_int_equal(req.keepalive, 0);
}

static void
t_partial(void **state)
{
	const char	*s = "POST /v1/usage?x=1 HTTP/1.1\r\n"
			    "Authorization: Token abc\r\n"
			    "Content-Length: 12\r\n"
			    "X-Instance-Id: node-1\r\n\r\n";
	size_t		 i, n = strlen(s), h;

	(void)state;
	/* Exact-size heap copies let ASan see any read past the data. */
	for (i = 0; i < n; i++) {
		char *cp = malloc(i + 1);

		assert_non_null(cp);
		memcpy(cp, s, i);
		h = 12345;
		assert_int_equal(http_parse(cp, i, MAXH, &req, &h),
		    HTTP_PARSE_MORE);
		assert_int_equal(h, 12345);	/* untouched unless OK */
		free(cp);
	}
	assert_int_equal(http_parse(s, n, MAXH, &req, &h), HTTP_PARSE_OK);
	assert_int_equal(h, n);
	assert_string_equal(req.path, "/v1/usage");
	assert_string_equal(req.auth, "Token abc");
	assert_int_equal(req.content_length, 12);
	assert_string_equal(req.instance, "node-1");
}

static void
t_toobig(void **state)
{
	const char	*s = "GET / HTTP/1.1\r\nX-Pad: aaaaaaaaaa\r\n\r\n";
	size_t		 n = strlen(s), h;
	char		*big;

	(void)state;
	/* Exactly max_head fits. */
	assert_int_equal(http_parse(s, n, n, &req, &h), HTTP_PARSE_OK);
	assert_int_equal(h, n);
	/* Complete, but the end lies past max_head. */
	assert_int_equal(http_parse(s, n, n - 1, &req, &h), HTTP_PARSE_TOOBIG);
	assert_int_equal(http_parse(s, n, 20, &req, &h), HTTP_PARSE_TOOBIG);
	/* No end yet: more is wanted until max_head bytes are in. */
	assert_int_equal(http_parse(s, 19, 20, &req, &h), HTTP_PARSE_MORE);
	assert_int_equal(http_parse(s, 20, 20, &req, &h), HTTP_PARSE_TOOBIG);
	big = malloc(MAXH + 100);
	assert_non_null(big);
	memset(big, 'a', MAXH + 100);
	memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
	assert_int_equal(http_parse(big, MAXH - 1, MAXH, &req, &h),
	    HTTP_PARSE_MORE);
	assert_int_equal(http_parse(big, MAXH, MAXH, &req, &h),
	    HTTP_PARSE_TOOBIG);
	assert_int_equal(http_parse(big, MAXH + 100, MAXH, &req, &h),
	    HTTP_PARSE_TOOBIG);
	free(big);
}

static void
t_bad_reqline(void **state)
{
	static const char *const bad[] = {
		"\r\n\r\n",
		"GET\r\n\r\n",
		"GET /\r\n\r\n",
		"GET / \r\n\r\n",
		"get / HTTP/1.1\r\n\r\n",
		"GET  / HTTP/1.1\r\n\r\n",
		"GET /  HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1 \r\n\r\n",
		" GET / HTTP/1.1\r\n\r\n",
		"GET\t/ HTTP/1.1\r\n\r\n",
		"GET x HTTP/1.1\r\n\r\n",
		"GET * HTTP/1.1\r\n\r\n",
		"GET http://a/ HTTP/1.1\r\n\r\n",
		"GET /a\x7f HTTP/1.1\r\n\r\n",
		"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
		"GET / http/1.1\r\n\r\n",
		"GET / HTTP/1\r\n\r\n",
		"GET / HTTP/1.10\r\n\r\n",
		"GET / HTTP/x.1\r\n\r\n",
		"GET / FOO/1.1\r\n\r\n",
		"GET / HTTP/1.1\n\r\n\r\n",
		"GET / HTTP/1.1\rX\r\n\r\n",
		"G-T / HTTP/1.1\r\n\r\n",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i]) != HTTP_PARSE_BAD)
			fail_msg("case %zu not BAD: %s", i, bad[i]);
		assert_int_equal(hlen, 0);	/* parse() zeroed it */
	}
	/* An embedded NUL is a CTL, not the end of the request. */
	assert_int_equal(http_parse("GET /\0 HTTP/1.1\r\n\r\n", 19, MAXH, &req,
	    &hlen), HTTP_PARSE_BAD);
	assert_int_equal(http_parse("GET / HTTP/1.1\r\nA: \0\r\n\r\n", 24, MAXH,
	    &req, &hlen), HTTP_PARSE_BAD);
}

/* A bare LF is refused when it arrives, not after a timeout. */
static void
t_bare_lf(void **state)
{
	static const char *bad[] = {
		"GET / HTTP/1.1\n\n",
		"GET / HTTP/1.1\nHost: x\n\n",
		"GET / HTTP/1.1\r\nHost: x\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\n",
		"\n",
		"GET / HTTP/1.1\n",		/* head not complete yet */
		"GET / HTTP/1.1\r\nHost: x\n",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (parse(bad[i]) != HTTP_PARSE_BAD)
			fail_msg("case %zu not BAD: %s", i, bad[i]);
	/* A lone CR before the end still waits, as before. */
	assert_int_equal(parse("GET / HTTP/1.1\r\nHost: x\r\n\r"),
	    HTTP_PARSE_MORE);
	assert_int_equal(parse("GET / HTTP/1.1\r\n"), HTTP_PARSE_MORE);
}

static void
t_expect(void **state)
{
	(void)state;
	assert_int_equal(parse_hdr("Expect: 100-Continue\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.expect_continue, 1);
	assert_int_equal(parse_hdr("Expect: something-else\r\n"),
	    HTTP_PARSE_OK);
	assert_int_equal(req.expect_continue, 0);
	assert_int_equal(parse_hdr("Host: x\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.expect_continue, 0);
	/* HTTP/1.0: ignored (RFC 9110 10.1.1). */
	assert_int_equal(parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\n"
	    "\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.expect_continue, 0);
}

static void
t_prefer(void **state)
{
	static const struct {
		const char	*hdr;
		int		 minimal;
	} cases[] = {
		{ "Prefer: return=minimal\r\n", 1 },
		{ "prefer: RETURN=Minimal\r\n", 1 },
		{ "Prefer: return = \"minimal\"\r\n", 1 },
		{ "Prefer: return=minimal; foo=bar\r\n", 1 },
		{ "Prefer: respond-async, wait=10, return=minimal\r\n", 1 },
		{ "Prefer: wait=10\r\nPrefer: return=minimal\r\n", 1 },
		{ "Prefer: return=representation\r\n", 0 },
		{ "Prefer: return;minimal\r\n", 0 },
		{ "Prefer: return=minimalist\r\n", 0 },
		{ "Prefer: xreturn=minimal\r\n", 0 },
		{ "Prefer: return=\r\n", 0 },
		{ "Prefer: =minimal\r\n", 0 },
		{ "Prefer: \r\n", 0 },
		{ "Prefer: ,,;,=,\"\r\n", 0 },
		{ "X-Prefer: return=minimal\r\n", 0 },
		{ "Host: x\r\n", 0 },
	};
	size_t	i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(parse_hdr(cases[i].hdr), HTTP_PARSE_OK);
		if (req.minimal != cases[i].minimal)
			fail_msg("%s: minimal %d", cases[i].hdr, req.minimal);
	}
}

static void
t_version(void **state)
{
	(void)state;
	assert_int_equal(parse("GET / HTTP/2.0\r\n\r\n"), HTTP_PARSE_VERSION);
	assert_int_equal(parse("GET / HTTP/0.9\r\n\r\n"), HTTP_PARSE_VERSION);
	assert_int_equal(parse("GET / HTTP/1.2\r\n\r\n"), HTTP_PARSE_VERSION);
	assert_int_equal(parse("GET / HTTP/3.1\r\n\r\n"), HTTP_PARSE_VERSION);
}

static void
t_uri(void **state)
{
	char	line[HTTP_PATH_MAX + 64];
	char	path[HTTP_PATH_MAX + 2];

	(void)state;
	memset(path, 'a', sizeof(path));
	path[0] = '/';
	path[HTTP_PATH_MAX] = '\0';		/* exactly the limit */
	snprintf(line, sizeof(line), "GET %s HTTP/1.1\r\n\r\n", path);
	assert_int_equal(parse(line), HTTP_PARSE_OK);
	assert_string_equal(req.path, path);
	assert_int_equal(strlen(req.path), HTTP_PATH_MAX);
	path[HTTP_PATH_MAX] = 'a';
	path[HTTP_PATH_MAX + 1] = '\0';		/* one over */
	snprintf(line, sizeof(line), "GET %s HTTP/1.1\r\n\r\n", path);
	assert_int_equal(parse(line), HTTP_PARSE_URI);
}

static void
t_query(void **state)
{
	(void)state;
	assert_int_equal(parse("GET /v1/license?a=b&c=%20 HTTP/1.1\r\n\r\n"),
	    HTTP_PARSE_OK);
	assert_string_equal(req.path, "/v1/license");
	assert_int_equal(parse("GET /?x HTTP/1.1\r\n\r\n"), HTTP_PARSE_OK);
	assert_string_equal(req.path, "/");
	assert_int_equal(parse("GET /a? HTTP/1.1\r\n\r\n"), HTTP_PARSE_OK);
	assert_string_equal(req.path, "/a");
	/* The query is still checked for bad bytes. */
	assert_int_equal(parse("GET /a?\x01 HTTP/1.1\r\n\r\n"), HTTP_PARSE_BAD);
}

static void
t_header_syntax(void **state)
{
	(void)state;
	/* obs-fold */
	assert_int_equal(parse_hdr("X-A: b\r\n c\r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("X-A: b\r\n\tc\r\n"), HTTP_PARSE_BAD);
	/* whitespace before colon, no colon, empty name, bad name chars */
	assert_int_equal(parse_hdr("Content-Length : 5\r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("NoColon\r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr(": v\r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("X(A): v\r\n"), HTTP_PARSE_BAD);
	/* CTLs in values; HTAB and obs-text are fine */
	assert_int_equal(parse_hdr("X-A: a\x01z\r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("X-A: a\x7fz\r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("X-A: a\rz\r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("X-A: a\nz\r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("X-A: a\tz \xff\r\nX-B:\r\n"),
	    HTTP_PARSE_OK);
	/* OWS is trimmed, inner whitespace kept */
	assert_int_equal(parse_hdr(
	    "Content-Type:\t application/json; x=1 \t\r\n"),
	    HTTP_PARSE_OK);
	assert_string_equal(req.ctype, "application/json; x=1");
	/* Host is not required, and unknown headers are ignored. */
	assert_int_equal(parse("GET /v1/status HTTP/1.0\r\n"
	    "User-Agent: lb\r\n\r\n"),
	    HTTP_PARSE_OK);
}

static void
t_bad_clen(void **state)
{
	(void)state;
	assert_int_equal(parse_hdr("Content-Length: \r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("Content-Length: -1\r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("Content-Length: +1\r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("Content-Length: 1 2\r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("Content-Length: 0x10\r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("Content-Length: 5, 5\r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("Content-Length: 9007199254740993\r\n"),
	    HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("Content-Length: "
	    "99999999999999999999999999999\r\n"), HTTP_PARSE_BAD);
	/* Conflicting duplicates, in either order. */
	assert_int_equal(parse_hdr("Content-Length: 5\r\n"
	    "Content-Length: 6\r\n"),
	    HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("Content-Length: 6\r\n"
	    "content-length: 5\r\n"),
	    HTTP_PARSE_BAD);
}

static void
t_transfer_encoding(void **state)
{
	(void)state;
	assert_int_equal(parse_hdr("Transfer-Encoding: Chunked\r\n"),
	    HTTP_PARSE_OK);
	assert_int_equal(req.chunked, 1);
	assert_int_equal(req.content_length, -1);
	assert_int_equal(parse_hdr("Transfer-Encoding: gzip\r\n"),
	    HTTP_PARSE_NOTIMPL);
	assert_int_equal(parse_hdr("Transfer-Encoding: gzip, chunked\r\n"),
	    HTTP_PARSE_NOTIMPL);
	assert_int_equal(parse_hdr("Transfer-Encoding: \r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("Transfer-Encoding: chunked\r\n"
	    "Transfer-Encoding: chunked\r\n"), HTTP_PARSE_BAD);
	/* CL + TE is rejected whatever the order. */
	assert_int_equal(parse_hdr("Content-Length: 5\r\n"
	    "Transfer-Encoding: chunked\r\n"), HTTP_PARSE_BAD);
	assert_int_equal(parse_hdr("Transfer-Encoding: chunked\r\n"
	    "Content-Length: 5\r\n"), HTTP_PARSE_BAD);
	/* TE in HTTP/1.0 is faulty framing (RFC 9112 6.1). */
	assert_int_equal(parse("POST / HTTP/1.0\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n"), HTTP_PARSE_BAD);
}

static void
t_auth(void **state)
{
	const char *k;

	(void)state;
	assert_int_equal(parse_hdr("Authorization: Token abc123\r\n"),
	    HTTP_PARSE_OK);
	assert_int_equal(req.auth_present, 1);
	assert_int_equal(http_auth_key(&req, &k), 6);
	assert_memory_equal(k, "abc123", 6);
	assert_int_equal(parse_hdr("authorization: bearer   XYZ\r\n"),
	    HTTP_PARSE_OK);
	assert_int_equal(http_auth_key(&req, &k), 3);
	assert_memory_equal(k, "XYZ", 3);
	assert_int_equal(parse_hdr("Authorization: TOKEN a b\r\n"),
	    HTTP_PARSE_OK);
	/* Whatever follows the scheme is the key: the caller validates. */
	assert_int_equal(http_auth_key(&req, &k), 3);
	assert_memory_equal(k, "a b", 3);
	assert_int_equal(parse_hdr("Authorization: Basic dXNlcjpwdw==\r\n"),
	    HTTP_PARSE_OK);
	assert_int_equal(http_auth_key(&req, &k), -1);
	assert_int_equal(parse_hdr("Authorization: Tokens abc\r\n"),
	    HTTP_PARSE_OK);
	assert_int_equal(http_auth_key(&req, &k), -1);
	assert_int_equal(parse_hdr("Authorization: Token\r\n"), HTTP_PARSE_OK);
	assert_int_equal(http_auth_key(&req, &k), -1);
	assert_int_equal(parse_hdr("Authorization: Token   \r\n"),
	    HTTP_PARSE_OK);
	assert_int_equal(req.auth_present, 1);
	assert_int_equal(http_auth_key(&req, &k), -1);
	assert_int_equal(parse_hdr("Authorization:\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.auth_present, 1);
	assert_string_equal(req.auth, "");
	assert_int_equal(http_auth_key(&req, &k), -1);
	assert_int_equal(parse_hdr("X-A: b\r\n"), HTTP_PARSE_OK);
	assert_int_equal(req.auth_present, 0);
	assert_int_equal(http_auth_key(&req, &k), -1);
	/* Two credentials are ambiguous. */
	assert_int_equal(parse_hdr("Authorization: Token a\r\n"
	    "Authorization: Token b\r\n"), HTTP_PARSE_BAD);
}

static void
t_auth_long(void **state)
{
	char	hdr[HTTP_AUTH_MAX + 64], val[HTTP_AUTH_MAX + 2];
	const char *k;

	(void)state;
	memset(val, 'k', sizeof(val));
	memcpy(val, "Token ", 6);
	val[HTTP_AUTH_MAX] = '\0';		/* exactly the limit */
	snprintf(hdr, sizeof(hdr), "Authorization: %s\r\n", val);
	assert_int_equal(parse_hdr(hdr), HTTP_PARSE_OK);
	assert_string_equal(req.auth, val);
	assert_int_equal(http_auth_key(&req, &k), HTTP_AUTH_MAX - 6);
	val[HTTP_AUTH_MAX] = 'k';
	/* One over: still present, but empty. */
	val[HTTP_AUTH_MAX + 1] = '\0';
	snprintf(hdr, sizeof(hdr), "Authorization: %s\r\n", val);
	assert_int_equal(parse_hdr(hdr), HTTP_PARSE_OK);
	assert_int_equal(req.auth_present, 1);
	assert_string_equal(req.auth, "");
	assert_int_equal(http_auth_key(&req, &k), -1);
}

static void
t_ctype_long(void **state)
{
	char	hdr[HTTP_CTYPE_MAX + 64], val[HTTP_CTYPE_MAX + 2];

	(void)state;
	memset(val, 'x', sizeof(val));
	memcpy(val, "application/json;", 17);
	val[HTTP_CTYPE_MAX] = '\0';
	snprintf(hdr, sizeof(hdr), "Content-Type: %s\r\n", val);
	assert_int_equal(parse_hdr(hdr), HTTP_PARSE_OK);
	assert_string_equal(req.ctype, val);
	val[HTTP_CTYPE_MAX] = 'x';
	val[HTTP_CTYPE_MAX + 1] = '\0';
	snprintf(hdr, sizeof(hdr), "Content-Type: %s\r\n", val);
	assert_int_equal(parse_hdr(hdr), HTTP_PARSE_OK);
	assert_string_equal(req.ctype, "");
}

static void
t_instance(void **state)
{
	char	hdr[128], id[TOKEN_INSTANCE_MAX + 2];

	(void)state;
	assert_int_equal(parse_hdr("X-Instance-Id: web-01.eu_west\r\n"),
	    HTTP_PARSE_OK);
	assert_string_equal(req.instance, "web-01.eu_west");
	assert_int_equal(req.instance_bad, 0);
	memset(id, 'a', sizeof(id));
	id[TOKEN_INSTANCE_MAX] = '\0';
	snprintf(hdr, sizeof(hdr), "x-instance-id: %s\r\n", id);
	assert_int_equal(parse_hdr(hdr), HTTP_PARSE_OK);
	assert_string_equal(req.instance, id);
	assert_int_equal(req.instance_bad, 0);
	id[TOKEN_INSTANCE_MAX] = 'a';
	id[TOKEN_INSTANCE_MAX + 1] = '\0';
	snprintf(hdr, sizeof(hdr), "x-instance-id: %s\r\n", id);
	assert_int_equal(parse_hdr(hdr), HTTP_PARSE_OK);
	assert_string_equal(req.instance, "");
	assert_int_equal(req.instance_bad, 1);
}

static void
t_instance_bad(void **state)
{
	static const char *const bad[] = {
		"X-Instance-Id:\r\n",
		"X-Instance-Id: a b\r\n",
		"X-Instance-Id: a/b\r\n",
		"X-Instance-Id: a:b\r\n",
		"X-Instance-Id: \xc3\xa9\r\n",
		"X-Instance-Id: a\r\nX-Instance-Id: a\r\n",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse_hdr(bad[i]), HTTP_PARSE_OK);
		assert_int_equal(req.instance_bad, 1);
		assert_string_equal(req.instance, "");
	}
}

static void
t_pipelined(void **state)
{
	const char	*s = "POST /v1/usage HTTP/1.1\r\n"
			    "Content-Length: 4\r\n\r\n"
			    "{}\r\n"
			    "GET /v1/license HTTP/1.1\r\n"
			    "Connection: close\r\n\r\n";
	size_t		 n = strlen(s), h, off;

	(void)state;
	assert_int_equal(http_parse(s, n, MAXH, &req, &h), HTTP_PARSE_OK);
	assert_int_equal(h, 46);
	assert_memory_equal(s + h, "{}\r\n", 4);
	assert_int_equal(req.method, HTTP_POST);
	assert_int_equal(req.content_length, 4);
	assert_int_equal(req.keepalive, 1);
	off = h + 4;
	assert_int_equal(http_parse(s + off, n - off, MAXH, &req, &h),
	    HTTP_PARSE_OK);
	assert_int_equal(off + h, n);
	assert_int_equal(req.method, HTTP_GET);
	assert_string_equal(req.path, "/v1/license");
	assert_int_equal(req.keepalive, 0);
	assert_int_equal(req.content_length, -1);
}

static void
t_reason(void **state)
{
	static const int codes[] = { 200, 202, 204, 400, 401, 403, 404, 405,
	    408, 411, 413, 414, 415, 429, 431, 500, 501, 503, 505, 507 };
	size_t i;

	(void)state;
	assert_string_equal(http_reason(200), "OK");
	assert_string_equal(http_reason(405), "Method Not Allowed");
	assert_string_equal(http_reason(431),
	    "Request Header Fields Too Large");
	assert_string_equal(http_reason(505), "HTTP Version Not Supported");
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		assert_string_not_equal(http_reason(codes[i]), "Unknown");
	assert_string_equal(http_reason(299), "Unknown");
}

static void
t_reply(void **state)
{
	static const char want1[] = "HTTP/1.1 200 OK\r\n"
	    "Content-Type: application/json\r\n"
	    "Content-Length: 11\r\n"
	    "Cache-Control: no-store\r\n"
	    "Connection: keep-alive\r\n"
	    "\r\n"
	    "{\"a\":\"bcd\"}";
	static const char want2[] = "HTTP/1.1 405 Method Not Allowed\r\n"
	    "Content-Type: text/plain\r\n"
	    "Content-Length: 0\r\n"
	    "Cache-Control: no-store\r\n"
	    "Connection: close\r\n"
	    "Allow: GET, HEAD\r\nX-B: 1\r\n"
	    "\r\n";
	char	out[512];
	int	n;

	(void)state;
	n = http_reply_build(out, sizeof(out), 200, 1, NULL, NULL,
	    "{\"a\":\"bcd\"}", 11);
	assert_int_equal(n, sizeof(want1) - 1);
	assert_memory_equal(out, want1, n);
	n = http_reply_build(out, sizeof(out), 405, 0, "text/plain",
	    "Allow: GET, HEAD\r\nX-B: 1\r\n", NULL, 0);
	assert_int_equal(n, sizeof(want2) - 1);
	assert_memory_equal(out, want2, n);
}

static void
t_reply_small(void **state)
{
	char	out[256], body[1000];
	int	n, full;

	(void)state;
	memset(body, 'b', sizeof(body));
	assert_int_equal(http_reply_build(out, sizeof(out), 200, 1, NULL, NULL,
	    body, sizeof(body)), -1);
	full = http_reply_build(out, sizeof(out), 503, 0, NULL,
	    "Retry-After: 5\r\n", "{}", 2);
	assert_true(full > 0);
	/* Exactly full fits; one byte less does not, nor does a tiny one. */
	n = http_reply_build(out, full, 503, 0, NULL, "Retry-After: 5\r\n",
	    "{}", 2);
	assert_int_equal(n, full);
	assert_memory_equal(out, "HTTP/1.1 503 Service Unavailable\r\n", 34);
	assert_memory_equal(out + full - 20, "Retry-After: 5\r\n\r\n{}", 20);
	assert_int_equal(http_reply_build(out, full - 1, 503, 0, NULL,
	    "Retry-After: 5\r\n", "{}", 2), -1);
	assert_int_equal(http_reply_build(out, 0, 200, 1, NULL, NULL, NULL, 0),
	    -1);
	/* Content-Length with many digits. */
	n = http_reply_build(out, sizeof(out), 204, 1, NULL, NULL, NULL, 0);
	assert_true(n > 0);
	out[n] = '\0';
	assert_non_null(strstr(out, "\r\nContent-Length: 0\r\n"));
	assert_int_equal(http_reply_build(out, sizeof(out), 99, 1, NULL, NULL,
	    NULL, 0), -1);
	assert_int_equal(http_reply_build(out, sizeof(out), 200, 1, NULL, NULL,
	    NULL, 5), -1);
}

static void
t_reply_biglen(void **state)
{
	static char	out[20000], body[12345];
	int		n;

	(void)state;
	memset(body, '1', sizeof(body));
	n = http_reply_build(out, sizeof(out), 200, 1, NULL, NULL, body,
	    sizeof(body));
	assert_true(n > 0);
	assert_memory_equal(out + 49, "Content-Length: 12345\r\n", 23);
	assert_memory_equal(out + n - sizeof(body) - 4, "\r\n\r\n", 4);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_simple_get),
		cmocka_unit_test(t_post_clen),
		cmocka_unit_test(t_methods),
		cmocka_unit_test(t_keepalive),
		cmocka_unit_test(t_partial),
		cmocka_unit_test(t_toobig),
		cmocka_unit_test(t_bad_reqline),
		cmocka_unit_test(t_version),
		cmocka_unit_test(t_uri),
		cmocka_unit_test(t_query),
		cmocka_unit_test(t_header_syntax),
		cmocka_unit_test(t_bad_clen),
		cmocka_unit_test(t_transfer_encoding),
		cmocka_unit_test(t_auth),
		cmocka_unit_test(t_auth_long),
		cmocka_unit_test(t_ctype_long),
		cmocka_unit_test(t_instance),
		cmocka_unit_test(t_instance_bad),
		cmocka_unit_test(t_pipelined),
		cmocka_unit_test(t_bare_lf),
		cmocka_unit_test(t_expect),
		cmocka_unit_test(t_prefer),
		cmocka_unit_test(t_reason),
		cmocka_unit_test(t_reply),
		cmocka_unit_test(t_reply_small),
		cmocka_unit_test(t_reply_biglen),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

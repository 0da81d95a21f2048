/*
 * fuzz_http.c - libFuzzer target for the request-head parser.
 *
 * Build: `make fuzz-build` (clang -fsanitize=fuzzer,address,undefined,
 * linked with the whole library built so).
 *
 * Besides memory safety it checks what the worker relies on: a parsed
 * head lies inside the data and within max_head, the strings are
 * terminated and well-formed, one byte less is always "more", and any
 * parse result can be answered with a reply that fits.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define CHECK(x)	do { if (!(x)) abort(); } while (0)

static void
check_req(const struct http_req *req)
{
	const char	*key;
	int		 klen;

	CHECK(req->path[0] == '/');
	CHECK(strlen(req->path) <= HTTP_PATH_MAX);
	CHECK(strchr(req->path, '?') == NULL);
	CHECK(strlen(req->auth) <= HTTP_AUTH_MAX);
	CHECK(strlen(req->ctype) <= HTTP_CTYPE_MAX);
	CHECK(strlen(req->instance) <= TOKEN_INSTANCE_MAX);
	CHECK(req->minor == 0 || req->minor == 1);
	CHECK(req->keepalive == 0 || req->keepalive == 1);
	CHECK(req->content_length >= -1);
	CHECK(!(req->chunked && req->content_length != -1));
	CHECK(!(req->instance_bad && req->instance[0] != '\0'));
	CHECK(req->minimal == 0 || req->minimal == 1);
	klen = http_auth_key(req, &key);
	if (klen >= 0) {
		CHECK(klen > 0 && req->auth_present);
		CHECK(key > req->auth && key + klen == req->auth +
		    strlen(req->auth));
	}
}

/* The head holds "minimal", in any case. */
static int
has_minimal(const char *buf, size_t len)
{
	static const char	 w[] = "minimal";
	size_t			 i, j;

	for (i = 0; i + sizeof(w) - 1 <= len; i++) {
		for (j = 0; j < sizeof(w) - 1 &&
		    (buf[i + j] | 0x20) == w[j]; j++)
			;
		if (j == sizeof(w) - 1)
			return 1;
	}
	return 0;
}

static void
check_reply(int code, const struct http_req *req, const uint8_t *data,
    size_t size)
{
	char	out[1024];
	size_t	blen = size < 256 ? size : 256;
	int	n;

	n = http_reply_build(out, sizeof(out), code, req->keepalive,
	    req->ctype[0] != '\0' ? req->ctype : NULL, NULL,
	    (const char *)data, blen);
	CHECK(n > 0 && (size_t)n <= sizeof(out));
	CHECK(memcmp(out, "HTTP/1.1 ", 9) == 0);
	CHECK(memcmp(out + n - blen, data, blen) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_req	 req;
	size_t		 headlen = 0, h2, max_head;
	const char	*buf = (const char *)data;
	int		 rv, code;

	/* The first byte picks the limit so TOOBIG paths get exercised. */
	if (size < 1)
		return 0;
	max_head = 16 + data[0] * 4;
	buf++;
	size--;
	rv = http_parse(buf, size, max_head, &req, &headlen);
	CHECK(rv == HTTP_PARSE_OK || rv == HTTP_PARSE_MORE ||
	    rv == HTTP_PARSE_BAD || rv == HTTP_PARSE_TOOBIG ||
	    rv == HTTP_PARSE_URI || rv == HTTP_PARSE_VERSION ||
	    rv == HTTP_PARSE_NOTIMPL);
	if (rv == HTTP_PARSE_MORE)
		CHECK(size < max_head);
	if (rv != HTTP_PARSE_OK)
		return 0;
	CHECK(headlen >= 4 && headlen <= size && headlen <= max_head);
	CHECK(memcmp(buf + headlen - 4, "\r\n\r\n", 4) == 0);
	check_req(&req);
	/* Prefer: return=minimal is only ever read off such a header. */
	CHECK(!req.minimal || has_minimal(buf, headlen));
	/* Same answer on the head alone; one byte short is incomplete. */
	CHECK(http_parse(buf, headlen, max_head, &req, &h2) == HTTP_PARSE_OK);
	CHECK(h2 == headlen);
	CHECK(http_parse(buf, headlen - 1, max_head, &req, &h2) ==
	    HTTP_PARSE_MORE);
	code = req.method == HTTP_OTHER ? 405 : 200;
	CHECK(http_parse(buf, headlen, max_head, &req, &h2) == HTTP_PARSE_OK);
	check_reply(code, &req, data, size);
	return 0;
}

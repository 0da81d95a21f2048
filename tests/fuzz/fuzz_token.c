/*
 * fuzz_token.c - libFuzzer target for lease token decoding and
 * verification (common/token.c): the text a worker reads back from the
 * store and the uplink gets from upstream, "b64url(payload).b64url(sig)".
 *
 * Besides memory safety it checks: a token that verifies also decodes to
 * the same lease, a decoded lease is well-formed (terminated strings,
 * product count in range), and a lease that decodes survives a sign and
 * verify round trip unchanged. base64url decoding is checked against
 * encoding on the same bytes.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz.h"
#include "token.h"

static void
check_lease(const struct lease *l)
{
	int i;

	CHECK(strnlen(l->kid, sizeof(l->kid)) < sizeof(l->kid));
	CHECK(strnlen(l->status, sizeof(l->status)) < sizeof(l->status));
	CHECK(strnlen(l->iss, sizeof(l->iss)) < sizeof(l->iss));
	CHECK(l->n_products >= 0 && l->n_products <= TOKEN_MAX_PRODUCTS);
	for (i = 0; i < l->n_products; i++)
		CHECK(strnlen(l->products[i], sizeof(l->products[i])) <
		    sizeof(l->products[i]));
	CHECK(l->role == ROLE_MEMBER || l->role == ROLE_PROXY);
}

static void
check_same(const struct lease *a, const struct lease *b)
{
	int i;

	CHECK(strcmp(a->kid, b->kid) == 0);
	CHECK(strcmp(a->status, b->status) == 0);
	CHECK(strcmp(a->iss, b->iss) == 0);
	CHECK(a->n_products == b->n_products && a->role == b->role);
	CHECK(a->iat == b->iat && a->rat == b->rat && a->exp == b->exp);
	for (i = 0; i < a->n_products; i++)
		CHECK(strcmp(a->products[i], b->products[i]) == 0);
}

static void
check_b64(const uint8_t *data, size_t size)
{
	unsigned char	bin[TOKEN_MAX], back[TOKEN_MAX];
	char		txt[2 * TOKEN_MAX];
	int		n, m;

	if (size > TOKEN_MAX)
		return;
	n = b64url_decode((const char *)data, size, bin, sizeof(bin));
	if (n <= 0)
		return;
	m = b64url_encode(bin, (size_t)n, txt, sizeof(txt));
	CHECK(m > 0);
	CHECK(b64url_decode(txt, (size_t)m, back, sizeof(back)) == n);
	CHECK(memcmp(bin, back, (size_t)n) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	EVP_PKEY	*key = fuzz_key();
	struct lease	 l, v, r;
	char		 tok[TOKEN_MAX + 1];
	int		 dec, ver;

	check_b64(data, size);
	dec = token_decode((const char *)data, size, &l);
	ver = token_verify((const char *)data, size, &key, 1, &v);
	CHECK(dec == 0 || dec == -1);
	CHECK(ver == 0 || ver == -1);
	if (ver == 0) {
		CHECK(dec == 0);
		check_same(&l, &v);
	}
	if (dec != 0)
		return 0;
	check_lease(&l);
	/* What we accept we can sign, and it reads back the same. */
	CHECK(token_sign(&l, key, tok, sizeof(tok)) == 0);
	CHECK(token_verify(tok, strlen(tok), &key, 1, &r) == 0);
	check_same(&l, &r);
	return 0;
}

/*
 * fuzz_lease.c - libFuzzer target for the msgpack lease payload (the
 * signed half of a token, common/token.c). The input is the raw payload;
 * the target signs it with the corpus key, so the fuzzer reaches the
 * decoder through token_verify exactly as an authority's bytes would.
 *
 * Besides memory safety (msgpack-c must never see a header claiming more
 * than the bytes left) it checks: verify and decode agree, an accepted
 * payload obeys the lease schema (kid of 16 lowercase hex, products of
 * [a-z0-9_], iat <= rat <= exp, a known role), and re-signing it yields a
 * token that verifies to the same lease.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz.h"
#include "token.h"

static int
sign_raw(const uint8_t *p, size_t n, char *tok, size_t toksz)
{
	EVP_MD_CTX	*ctx = EVP_MD_CTX_new();
	unsigned char	 sig[64];
	size_t		 slen = sizeof(sig);
	int		 a, b, ok;

	CHECK(ctx != NULL);
	ok = EVP_DigestSignInit(ctx, NULL, NULL, NULL, fuzz_key()) == 1 &&
	    EVP_DigestSign(ctx, sig, &slen, p, n) == 1;
	EVP_MD_CTX_free(ctx);
	CHECK(ok && slen == sizeof(sig));
	if ((a = b64url_encode(p, n, tok, toksz)) < 0 || (size_t)a + 2 >= toksz)
		return -1;
	tok[a] = '.';
	if ((b = b64url_encode(sig, slen, tok + a + 1, toksz - a - 1)) < 0)
		return -1;
	return a + 1 + b;
}

static void
check_lease(const struct lease *l)
{
	int i;

	CHECK(strlen(l->kid) == TOKEN_KID_LEN);
	CHECK(strspn(l->kid, "0123456789abcdef") == TOKEN_KID_LEN);
	CHECK(l->status[0] != '\0' && l->iss[0] != '\0');
	CHECK(l->n_products >= 0 && l->n_products <= TOKEN_MAX_PRODUCTS);
	for (i = 0; i < l->n_products; i++)
		CHECK(l->products[i][0] != '\0' && strspn(l->products[i],
		    TOKEN_NAME_CHARS) == strlen(l->products[i]));
	CHECK(l->role == ROLE_MEMBER || l->role == ROLE_PROXY);
	CHECK(l->iat >= 0 && l->iat <= l->rat && l->rat <= l->exp);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	EVP_PKEY	*key = fuzz_key();
	struct lease	 l, d, r;
	char		 tok[TOKEN_MAX + 1], tok2[TOKEN_MAX + 1];
	int		 n, ver;

	if (size == 0 || (n = sign_raw(data, size, tok, sizeof(tok))) < 0)
		return 0;
	tok[n] = '\0';
	ver = token_verify(tok, (size_t)n, &key, 1, &l);
	CHECK(ver == token_decode(tok, (size_t)n, &d));
	if (ver != 0)
		return 0;
	check_lease(&l);
	CHECK(token_sign(&l, key, tok2, sizeof(tok2)) == 0);
	CHECK(token_verify(tok2, strlen(tok2), &key, 1, &r) == 0);
	CHECK(strcmp(r.kid, l.kid) == 0 && r.exp == l.exp &&
	    r.n_products == l.n_products && r.role == l.role);
	return 0;
}

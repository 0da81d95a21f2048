/* test_token.c - keys, key ids, base64url and signed lease tokens. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msgpack.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "token.h"

static EVP_PKEY	*key_a, *key_b;

/* ---- helpers -------------------------------------------------------- */

static void
make_lease(struct lease *l)
{
	memset(l, 0, sizeof(*l));
	strcpy(l->kid, "0123456789abcdef");
	strcpy(l->status, "active");
	strcpy(l->products[0], "api");
	strcpy(l->products[1], "engine_2");
	l->n_products = 2;
	l->role = ROLE_PROXY;
	l->iat = 1700000000;
	l->rat = 1700003600;
	l->exp = 1700086400;
	strcpy(l->iss, "a1b2c3d4e5f60718");
}

static void
assert_lease_equal(const struct lease *a, const struct lease *b)
{
	int i;

	assert_string_equal(a->kid, b->kid);
	assert_string_equal(a->status, b->status);
	assert_int_equal(a->n_products, b->n_products);
	for (i = 0; i < a->n_products; i++)
		assert_string_equal(a->products[i], b->products[i]);
	assert_int_equal(a->role, b->role);
	assert_true(a->iat == b->iat);
	assert_true(a->rat == b->rat);
	assert_true(a->exp == b->exp);
	assert_string_equal(a->iss, b->iss);
}

/* Signs arbitrary payload bytes the way an authority would. */
static void
sign_raw(const void *payload, size_t len, EVP_PKEY *key, char *tok,
    size_t toksz)
{
	EVP_MD_CTX	*ctx;
	unsigned char	 sig[64];
	size_t		 siglen = sizeof(sig);
	int		 n, m;

	ctx = EVP_MD_CTX_new();
	assert_non_null(ctx);
	assert_int_equal(EVP_DigestSignInit(ctx, NULL, NULL, NULL, key), 1);
	assert_int_equal(EVP_DigestSign(ctx, sig, &siglen, payload, len), 1);
	EVP_MD_CTX_free(ctx);
	n = b64url_encode(payload, len, tok, toksz);
	assert_true(n >= 0);
	tok[n] = '.';
	m = b64url_encode(sig, siglen, tok + n + 1, toksz - n - 1);
	assert_int_equal(m, 86);
}

/* Hand-packed payloads, so the tests do not depend on token_sign's packer. */
enum { T_INT, T_STR, T_PRD, T_NIL };
struct fld {
	const char	*key;
	int		 t;
	int64_t		 i;	/* T_INT value, T_PRD count */
	const char	*s;
};

static const struct fld base_fields[9] = {
	{ "v", T_INT, 1, NULL },
	{ "kid", T_STR, 0, "0123456789abcdef" },
	{ "sta", T_STR, 0, "active" },
	{ "prd", T_PRD, 2, NULL },
	{ "rol", T_STR, 0, "member" },
	{ "iat", T_INT, 100, NULL },
	{ "rat", T_INT, 200, NULL },
	{ "exp", T_INT, 300, NULL },
	{ "iss", T_STR, 0, "authority" },
};

static void
pack_fields(msgpack_sbuffer *sb, const struct fld *f, int n)
{
	msgpack_packer	pk;
	char		p[16];
	int		i, j;

	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, n);
	for (i = 0; i < n; i++) {
		msgpack_pack_str_with_body(&pk, f[i].key, strlen(f[i].key));
		switch (f[i].t) {
		case T_INT:
			msgpack_pack_int64(&pk, f[i].i);
			break;
		case T_STR:
			if (f[i].s == NULL)	/* an int field made a str */
				msgpack_pack_str_with_body(&pk, "x", 1);
			else
				msgpack_pack_str_with_body(&pk, f[i].s,
				    strlen(f[i].s));
			break;
		case T_NIL:
			msgpack_pack_nil(&pk);
			break;
		case T_PRD:
			msgpack_pack_array(&pk, f[i].i);
			for (j = 0; j < f[i].i; j++) {
				snprintf(p, sizeof(p), "prod_%d", j);
				msgpack_pack_str_with_body(&pk, p, strlen(p));
			}
			break;
		}
	}
}

/* Packs f, signs it with key_a and returns what token_verify says. */
static int
verify_fields(const struct fld *f, int n, struct lease *l)
{
	msgpack_sbuffer	 sb;
	char		 tok[4096];
	int		 rc;

	pack_fields(&sb, f, n);
	sign_raw(sb.data, sb.size, key_a, tok, sizeof(tok));
	msgpack_sbuffer_destroy(&sb);
	rc = token_verify(tok, strlen(tok), &key_a, 1, l);
	/* token_decode applies the same schema. */
	assert_int_equal(token_decode(tok, strlen(tok), l), rc);
	return rc;
}

static int
verify_raw(const void *p, size_t len)
{
	struct lease	l;
	char		tok[4096];

	sign_raw(p, len, key_a, tok, sizeof(tok));
	return token_verify(tok, strlen(tok), &key_a, 1, &l);
}

static void
sign_lease(char *tok, size_t toksz, struct lease *l)
{
	make_lease(l);
	assert_int_equal(token_sign(l, key_a, tok, toksz), 0);
}

/* ---- keys ----------------------------------------------------------- */

static void
test_key_valid(void **state)
{
	const char *good = "Abcdefghij0123456789KLMNOPQRSTuvwxyz9876";
	char buf[64];

	(void)state;
	assert_int_equal(strlen(good), 40);
	assert_int_equal(token_key_valid(good, 40), 1);
	assert_int_equal(token_key_valid(good, 39), 0);
	memcpy(buf, good, 40);
	buf[40] = 'x';
	assert_int_equal(token_key_valid(buf, 41), 0);
	buf[10] = '-';
	assert_int_equal(token_key_valid(buf, 40), 0);
	buf[10] = '\0';
	assert_int_equal(token_key_valid(buf, 40), 0);
	memcpy(buf, good, 40);
	buf[39] = (char)0xe9;	/* Latin-1 e-acute: not ASCII alnum */
	assert_int_equal(token_key_valid(buf, 40), 0);
	buf[39] = ' ';
	assert_int_equal(token_key_valid(buf, 40), 0);
	assert_int_equal(token_key_valid("", 0), 0);
}

static void
test_kid_vector(void **state)
{
	/* printf %s KEY | sha256sum -> da190c40a79c3040dff4c9f1... */
	const char *key = "Abcdefghij0123456789KLMNOPQRSTuvwxyz9876";
	unsigned char sha[32];
	char kid[TOKEN_KID_LEN + 1];

	(void)state;
	token_key_hash(key, strlen(key), sha);
	assert_int_equal(sha[0], 0xda);
	assert_int_equal(sha[31], 0xf2);
	token_kid_from_hash(sha, kid);
	assert_string_equal(kid, "da190c40a79c3040");
}

static void
test_key_generate(void **state)
{
	char k1[TOKEN_KEY_LEN + 1], k2[TOKEN_KEY_LEN + 1];
	int counts[128] = { 0 }, i, j;

	(void)state;
	assert_int_equal(token_key_generate(k1), 0);
	assert_int_equal(strlen(k1), TOKEN_KEY_LEN);
	assert_int_equal(token_key_valid(k1, strlen(k1)), 1);
	assert_int_equal(token_key_generate(k2), 0);
	assert_string_not_equal(k1, k2);
	/* 200 keys = 8000 chars: each of the 62 symbols should show up. */
	for (i = 0; i < 200; i++) {
		assert_int_equal(token_key_generate(k1), 0);
		assert_int_equal(token_key_valid(k1, strlen(k1)), 1);
		for (j = 0; j < TOKEN_KEY_LEN; j++)
			counts[(unsigned char)k1[j]]++;
	}
	for (i = 0, j = 0; i < 128; i++)
		j += counts[i] > 0;
	assert_int_equal(j, 62);
}

static void
test_role(void **state)
{
	enum lease_role r = ROLE_MEMBER;

	(void)state;
	assert_string_equal(role_name(ROLE_MEMBER), "member");
	assert_string_equal(role_name(ROLE_PROXY), "proxy");
	assert_int_equal(role_parse("proxy", &r), 0);
	assert_int_equal(r, ROLE_PROXY);
	assert_int_equal(role_parse("member", &r), 0);
	assert_int_equal(r, ROLE_MEMBER);
	assert_int_equal(role_parse("Member", &r), -1);
	assert_int_equal(role_parse("proxy ", &r), -1);
	assert_int_equal(role_parse("", &r), -1);
	assert_int_equal(r, ROLE_MEMBER);
}

/* ---- base64url ------------------------------------------------------ */

static void
test_b64url_roundtrip(void **state)
{
	unsigned char in[100], out[100];
	char enc[200];
	size_t len;
	int n;

	(void)state;
	n = b64url_encode((const unsigned char *)"foo", 3, enc, sizeof(enc));
	assert_int_equal(n, 4);
	assert_string_equal(enc, "Zm9v");
	n = b64url_encode((const unsigned char *)"fo", 2, enc, sizeof(enc));
	assert_int_equal(n, 3);
	assert_string_equal(enc, "Zm8");
	n = b64url_encode((const unsigned char *)"f", 1, enc, sizeof(enc));
	assert_int_equal(n, 2);
	assert_string_equal(enc, "Zg");
	assert_int_equal(b64url_encode(in, 0, enc, sizeof(enc)), 0);
	assert_string_equal(enc, "");
	/* 0xfb 0xff uses both url-safe characters. */
	n = b64url_encode((const unsigned char *)"\xfb\xff", 2, enc, 4);
	assert_int_equal(n, 3);
	assert_string_equal(enc, "-_8");
	for (len = 0; len < sizeof(in); len++) {
		for (n = 0; n < (int)len; n++)
			in[n] = (unsigned char)(n * 37 + len * 11);
		n = b64url_encode(in, len, enc, sizeof(enc));
		assert_int_equal(n, (int)strlen(enc));
		assert_null(strpbrk(enc, "+/="));
		assert_int_equal(b64url_decode(enc, n, out, len), (int)len);
		assert_memory_equal(in, out, len);
	}
}

static void
test_b64url_rejects(void **state)
{
	unsigned char out[16];
	char enc[8];

	(void)state;
	assert_int_equal(b64url_decode("Zg==", 4, out, sizeof(out)), -1);
	assert_int_equal(b64url_decode("Zm8=", 4, out, sizeof(out)), -1);
	assert_int_equal(b64url_decode("Zm9v!A", 6, out, sizeof(out)), -1);
	assert_int_equal(b64url_decode("+/8", 3, out, sizeof(out)), -1);
	assert_int_equal(b64url_decode("Zm 9v", 5, out, sizeof(out)), -1);
	assert_int_equal(b64url_decode("Zm9v\n", 5, out, sizeof(out)), -1);
	assert_int_equal(b64url_decode("Zm\0v", 4, out, sizeof(out)), -1);
	/* len % 4 == 1 cannot come from any input. */
	assert_int_equal(b64url_decode("Zm9vY", 5, out, sizeof(out)), -1);
	assert_int_equal(b64url_decode("Z", 1, out, sizeof(out)), -1);
	assert_int_equal(b64url_decode("A", 1, out, sizeof(out)), -1);
	assert_int_equal(b64url_decode("Zm9vA", 5, out, sizeof(out)), -1);
	/* Non-zero unused bits: a second spelling of "f" / "fo". */
	assert_int_equal(b64url_decode("Zh", 2, out, sizeof(out)), -1);
	assert_int_equal(b64url_decode("Zm9", 3, out, sizeof(out)), -1);
	assert_int_equal(b64url_decode("Zg", 2, out, sizeof(out)), 1);
	assert_int_equal(b64url_decode("Zm8", 3, out, sizeof(out)), 2);
	/* Never past outsz: the byte after the window stays untouched. */
	memset(out, 0xaa, sizeof(out));
	assert_int_equal(b64url_decode("Zm9v", 4, out, 2), -1);
	assert_int_equal(out[2], 0xaa);
	assert_int_equal(b64url_decode("Zm9v", 4, out, 3), 3);
	assert_memory_equal(out, "foo", 3);
	assert_int_equal(out[3], 0xaa);
	/* Encoding needs room for the NUL too. */
	assert_int_equal(b64url_encode((const unsigned char *)"foo", 3, enc, 4),
	    -1);
	assert_int_equal(b64url_encode((const unsigned char *)"foo", 3, enc, 5),
	    4);
}

/* ---- sign / verify -------------------------------------------------- */

static void
test_sign_verify_roundtrip(void **state)
{
	struct lease l, got;
	char tok[TOKEN_MAX + 1];
	const char *dot;
	int i;

	(void)state;
	sign_lease(tok, sizeof(tok), &l);
	dot = strchr(tok, '.');
	assert_non_null(dot);
	assert_null(strchr(dot + 1, '.'));
	assert_int_equal(strlen(dot + 1), 86);	/* 64-byte signature */
	memset(&got, 0, sizeof(got));
	assert_int_equal(token_verify(tok, strlen(tok), &key_a, 1, &got), 0);
	assert_lease_equal(&l, &got);
	memset(&got, 0, sizeof(got));
	assert_int_equal(token_decode(tok, strlen(tok), &got), 0);
	assert_lease_equal(&l, &got);

	/* Limits: 16 products of 32 chars and a 64-char issuer still fit. */
	for (i = 0; i < TOKEN_MAX_PRODUCTS; i++) {
		memset(l.products[i], '_', TOKEN_PRODUCT_MAX);
		l.products[i][0] = 'a' + i;
		l.products[i][TOKEN_PRODUCT_MAX - 1] = '0' + i % 10;
		l.products[i][TOKEN_PRODUCT_MAX] = '\0';
	}
	l.n_products = TOKEN_MAX_PRODUCTS;
	memset(l.iss, 'x', TOKEN_ISS_MAX);
	l.iss[TOKEN_ISS_MAX] = '\0';
	l.role = ROLE_MEMBER;
	l.iat = l.rat = l.exp = 0;
	assert_int_equal(token_sign(&l, key_a, tok, sizeof(tok)), 0);
	assert_true(strlen(tok) <= TOKEN_MAX);
	assert_int_equal(token_verify(tok, strlen(tok), &key_a, 1, &got), 0);
	assert_lease_equal(&l, &got);
}

static void
test_verify_wrong_key(void **state)
{
	struct lease l, got;
	char tok[TOKEN_MAX + 1];

	(void)state;
	sign_lease(tok, sizeof(tok), &l);
	assert_int_equal(token_verify(tok, strlen(tok), &key_b, 1, &got), -1);
	assert_int_equal(token_verify(tok, strlen(tok), NULL, 0, &got), -1);
}

static void
test_verify_tampered(void **state)
{
	struct lease l, got;
	unsigned char payload[TOKEN_MAX], sig[64];
	char tok[TOKEN_MAX + 1], bad[TOKEN_MAX + 2], *dot;
	unsigned char *e;
	int plen, n;

	(void)state;
	sign_lease(tok, sizeof(tok), &l);
	dot = strchr(tok, '.');
	plen = b64url_decode(tok, dot - tok, payload, sizeof(payload));
	assert_true(plen > 20);
	assert_int_equal(b64url_decode(dot + 1, strlen(dot + 1), sig, 64), 64);

	/*
	 * One payload bit: "active" -> "activg" is still a valid lease (so
	 * token_decode takes it), only the signature can refuse it.
	 */
	e = memmem(payload, plen, "active", 6);
	assert_non_null(e);
	e[5] ^= 0x02;
	n = b64url_encode(payload, plen, bad, sizeof(bad));
	snprintf(bad + n, sizeof(bad) - n, "%s", dot);
	assert_int_equal(token_decode(bad, strlen(bad), &got), 0);
	assert_string_equal(got.status, "activg");
	assert_int_equal(token_verify(bad, strlen(bad), &key_a, 1, &got), -1);
	e[5] ^= 0x02;

	/* ...and one signature bit. */
	sig[10] ^= 0x01;
	n = b64url_encode(payload, plen, bad, sizeof(bad));
	bad[n] = '.';
	b64url_encode(sig, 64, bad + n + 1, sizeof(bad) - n - 1);
	assert_int_equal(token_verify(bad, strlen(bad), &key_a, 1, &got), -1);
	sig[10] ^= 0x01;
	b64url_encode(sig, 64, bad + n + 1, sizeof(bad) - n - 1);
	assert_int_equal(token_verify(bad, strlen(bad), &key_a, 1, &got), 0);

	/* Truncated signature, no dot, two dots. */
	assert_int_equal(token_verify(tok, strlen(tok) - 1, &key_a, 1, &got),
	    -1);
	assert_int_equal(token_verify(tok, dot - tok, &key_a, 1, &got), -1);
	snprintf(bad, sizeof(bad), "%s.", tok);
	assert_int_equal(token_verify(bad, strlen(bad), &key_a, 1, &got), -1);
	assert_int_equal(token_decode(bad, strlen(bad), &got), -1);
}

static void
test_verify_flipped_payload_byte(void **state)
{
	struct lease l, got;
	unsigned char payload[TOKEN_MAX];
	char tok[TOKEN_MAX + 1], bad[TOKEN_MAX + 1], *dot;
	int plen, n, i;

	(void)state;
	sign_lease(tok, sizeof(tok), &l);
	dot = strchr(tok, '.');
	plen = b64url_decode(tok, dot - tok, payload, sizeof(payload));
	/* Every single flipped byte must be caught. */
	for (i = 0; i < plen; i++) {
		payload[i] ^= 0x01;
		n = b64url_encode(payload, plen, bad, sizeof(bad));
		snprintf(bad + n, sizeof(bad) - n, "%s", dot);
		assert_int_equal(token_verify(bad, strlen(bad), &key_a, 1,
		    &got), -1);
		payload[i] ^= 0x01;
	}
}

static void
test_trusted_list(void **state)
{
	struct lease l, got;
	char tok[TOKEN_MAX + 1];
	EVP_PKEY *keys[3];

	(void)state;
	make_lease(&l);
	assert_int_equal(token_sign(&l, key_b, tok, sizeof(tok)), 0);
	keys[0] = key_a;
	keys[1] = key_b;
	keys[2] = key_a;
	memset(&got, 0, sizeof(got));
	assert_int_equal(token_verify(tok, strlen(tok), keys, 3, &got), 0);
	assert_lease_equal(&l, &got);
	/* Only the first entry is consulted when n says so. */
	assert_int_equal(token_verify(tok, strlen(tok), keys, 1, &got), -1);
}

static void
test_sign_rejects(void **state)
{
	struct lease l;
	char tok[TOKEN_MAX + 1], small[64];
	EVP_PKEY *ec;

	(void)state;
	make_lease(&l);
	l.kid[3] = 'A';
	assert_int_equal(token_sign(&l, key_a, tok, sizeof(tok)), -1);
	make_lease(&l);
	l.iat = l.rat + 1;
	assert_int_equal(token_sign(&l, key_a, tok, sizeof(tok)), -1);
	make_lease(&l);
	l.n_products = TOKEN_MAX_PRODUCTS + 1;
	assert_int_equal(token_sign(&l, key_a, tok, sizeof(tok)), -1);
	make_lease(&l);
	strcpy(l.products[1], "Engine");
	assert_int_equal(token_sign(&l, key_a, tok, sizeof(tok)), -1);
	make_lease(&l);
	l.status[0] = '\0';
	assert_int_equal(token_sign(&l, key_a, tok, sizeof(tok)), -1);
	make_lease(&l);
	assert_int_equal(token_sign(&l, key_a, small, sizeof(small)), -1);
	assert_string_equal(small, "");
	ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(ec);
	assert_int_equal(token_sign(&l, ec, tok, sizeof(tok)), -1);
	EVP_PKEY_free(ec);
}

/* ---- schema --------------------------------------------------------- */

static void
test_schema_valid_any_order(void **state)
{
	struct fld f[9];
	struct lease got;
	int i;

	(void)state;
	assert_int_equal(verify_fields(base_fields, 9, &got), 0);
	assert_string_equal(got.kid, "0123456789abcdef");
	assert_int_equal(got.n_products, 2);
	assert_string_equal(got.products[1], "prod_1");
	assert_int_equal(got.role, ROLE_MEMBER);
	assert_true(got.iat == 100 && got.rat == 200 && got.exp == 300);
	assert_string_equal(got.iss, "authority");
	for (i = 0; i < 9; i++)
		f[i] = base_fields[8 - i];
	assert_int_equal(verify_fields(f, 9, &got), 0);
	assert_string_equal(got.status, "active");
}

/* Each case differs from the valid base in exactly one way. */
static void
test_schema_rejects(void **state)
{
	struct fld f[10];
	struct lease got;
	char long_iss[TOKEN_ISS_MAX + 2];

	(void)state;
#define CASE(idx, field, value) do {					\
	memcpy(f, base_fields, sizeof(base_fields));			\
	f[idx].field = value;						\
	assert_int_equal(verify_fields(f, 9, &got), -1);		\
} while (0)
	CASE(0, i, 2);				/* v = 2 */
	CASE(0, i, 0);
	CASE(1, s, "0123456789ABCDEF");		/* kid upper-case */
	CASE(1, s, "0123456789abcde");		/* kid 15 chars */
	CASE(1, s, "0123456789abcdeg");
	CASE(2, s, "");				/* sta empty */
	CASE(2, s, "0123456789abcdef");		/* sta 16 chars */
	CASE(3, i, TOKEN_MAX_PRODUCTS + 1);	/* too many products */
	CASE(3, i, TOKEN_MAX_PRODUCTS * 4);	/* would overrun the array */
	CASE(4, s, "admin");			/* unknown role */
	CASE(5, i, 201);			/* iat > rat */
	CASE(6, i, 301);			/* rat > exp */
	CASE(5, i, -1);				/* negative integer */
	CASE(8, s, "");
	memset(long_iss, 'x', TOKEN_ISS_MAX + 1);
	long_iss[TOKEN_ISS_MAX + 1] = '\0';
	CASE(8, s, long_iss);			/* iss 65 chars */
	long_iss[TOKEN_ISS_MAX] = '\0';
	memcpy(f, base_fields, sizeof(base_fields));
	f[8].s = long_iss;			/* 64 is the limit */
	assert_int_equal(verify_fields(f, 9, &got), 0);
	CASE(5, t, T_STR);			/* wrong type: iat "x" */
	CASE(1, t, T_INT);			/* wrong type: kid 0 */
	CASE(3, t, T_NIL);			/* wrong type: prd nil */
	CASE(0, key, "V");			/* unknown key */
	CASE(8, key, "kid");			/* duplicate key */
#undef CASE
	/* kid twice in place of v, whose absence nothing else would notice. */
	memcpy(f, base_fields, sizeof(base_fields));
	f[0] = base_fields[1];
	assert_int_equal(verify_fields(f, 9, &got), -1);
	/* Missing field: eight keys (without iss, then without v). */
	assert_int_equal(verify_fields(base_fields, 8, &got), -1);
	assert_int_equal(verify_fields(base_fields + 1, 8, &got), -1);
	/* Extra field: ten keys. */
	memcpy(f, base_fields, sizeof(base_fields));
	f[9] = (struct fld){ "foo", T_INT, 1, NULL };
	assert_int_equal(verify_fields(f, 10, &got), -1);
	/* The maximum itself is fine. */
	memcpy(f, base_fields, sizeof(base_fields));
	f[3].i = TOKEN_MAX_PRODUCTS;
	assert_int_equal(verify_fields(f, 9, &got), 0);
	assert_int_equal(got.n_products, TOKEN_MAX_PRODUCTS);
}

static void
test_schema_bad_products(void **state)
{
	static const char *bad[] = { "", "Api", "api-x", "a b",
	    "abcdefghijabcdefghijabcdefghijabc" /* 33 */ };
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t i;
	int k;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, 9);
		for (k = 0; k < 9; k++) {
			msgpack_pack_str_with_body(&pk, base_fields[k].key,
			    strlen(base_fields[k].key));
			if (k == 3) {
				msgpack_pack_array(&pk, 2);
				msgpack_pack_str_with_body(&pk, "ok_1", 4);
				msgpack_pack_str_with_body(&pk, bad[i],
				    strlen(bad[i]));
			} else if (base_fields[k].t == T_INT)
				msgpack_pack_int64(&pk, base_fields[k].i);
			else
				msgpack_pack_str_with_body(&pk,
				    base_fields[k].s, strlen(base_fields[k].s));
		}
		assert_int_equal(verify_raw(sb.data, sb.size), -1);
		msgpack_sbuffer_destroy(&sb);
	}
}

/*
 * Headers that claim far more than the payload holds. msgpack-c would try
 * to allocate for them; under ASan a multi-GB request aborts the test, so
 * passing here shows the decoder refused them first.
 */
static void
test_hostile_headers(void **state)
{
	static const unsigned char arr32[] = { 0xdd, 0xff, 0xff, 0xff, 0xff };
	static const unsigned char map32[] = { 0xdf, 0xff, 0xff, 0xff, 0xff,
	    0xa1, 'v', 0x01 };
	static const unsigned char str32[] = { 0xdb, 0x7f, 0xff, 0xff, 0xff,
	    'x' };
	static const unsigned char nested[] = { 0x81, 0xa1, 'v',
	    0xdc, 0xff, 0xff, 0x01 };
	static const unsigned char reserved[] = { 0xc1 };
	msgpack_sbuffer sb;
	unsigned char buf[600];

	(void)state;
	assert_int_equal(verify_raw(arr32, sizeof(arr32)), -1);
	assert_int_equal(verify_raw(map32, sizeof(map32)), -1);
	assert_int_equal(verify_raw(str32, sizeof(str32)), -1);
	assert_int_equal(verify_raw(nested, sizeof(nested)), -1);
	assert_int_equal(verify_raw(reserved, sizeof(reserved)), -1);
	/* A valid map followed by trailing bytes. */
	pack_fields(&sb, base_fields, 9);
	assert_true(sb.size < sizeof(buf));
	memcpy(buf, sb.data, sb.size);
	assert_int_equal(verify_raw(buf, sb.size), 0);
	buf[sb.size] = 0xc0;
	assert_int_equal(verify_raw(buf, sb.size + 1), -1);
	/* ... and the same map cut short. */
	assert_int_equal(verify_raw(buf, sb.size - 1), -1);
	msgpack_sbuffer_destroy(&sb);
}

static void
test_oversized(void **state)
{
	struct lease l, got;
	char tok[TOKEN_MAX + 1], *big;
	size_t n;

	(void)state;
	sign_lease(tok, sizeof(tok), &l);
	n = strlen(tok);
	big = malloc(TOKEN_MAX + 2);
	assert_non_null(big);
	/* A big payload part with a syntactically fine signature part. */
	memset(big, 'A', TOKEN_MAX + 1);
	memcpy(big + TOKEN_MAX + 1 - 87, strchr(tok, '.'), 87);
	big[TOKEN_MAX + 1] = '\0';
	assert_int_equal(token_verify(big, TOKEN_MAX + 1, &key_a, 1, &got), -1);
	assert_int_equal(token_decode(big, TOKEN_MAX + 1, &got), -1);
	/* A valid token with trailing junk counted in len. */
	memcpy(big, tok, n);
	assert_int_equal(token_verify(big, n, &key_a, 1, &got), 0);
	assert_int_equal(token_verify(big, TOKEN_MAX + 1, &key_a, 1, &got), -1);
	free(big);
}

static void
test_decode_unverified(void **state)
{
	struct lease l, got;
	char tok[TOKEN_MAX + 1];

	(void)state;
	make_lease(&l);
	assert_int_equal(token_sign(&l, key_b, tok, sizeof(tok)), 0);
	assert_int_equal(token_verify(tok, strlen(tok), &key_a, 1, &got), -1);
	memset(&got, 0, sizeof(got));
	assert_int_equal(token_decode(tok, strlen(tok), &got), 0);
	assert_lease_equal(&l, &got);
	assert_int_equal(token_decode("", 0, &got), -1);
	assert_int_equal(token_decode("abc", 3, &got), -1);
}

/* ---- key files ------------------------------------------------------ */

static void
test_keygen_files(void **state)
{
	char dir[] = "/tmp/test_token.XXXXXX", path[PATH_MAX], pub[PATH_MAX];
	char id1[17], id2[17], tok[TOKEN_MAX + 1];
	struct stat st;
	struct lease l, got;
	EVP_PKEY *priv, *pubk, *ec;
	FILE *fp;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/auth.key", dir);
	snprintf(pub, sizeof(pub), "%s/auth.key.pub", dir);
	assert_int_equal(token_keygen(path), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(pub, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);

	priv = token_load_private(path);
	pubk = token_load_public(pub);
	assert_non_null(priv);
	assert_non_null(pubk);
	assert_int_equal(token_authority_id(priv, id1), 0);
	assert_int_equal(token_authority_id(pubk, id2), 0);
	assert_int_equal(strlen(id1), 16);
	assert_string_equal(id1, id2);
	assert_int_equal(strspn(id1, "0123456789abcdef"), 16);

	make_lease(&l);
	assert_int_equal(token_sign(&l, priv, tok, sizeof(tok)), 0);
	assert_int_equal(token_verify(tok, strlen(tok), &pubk, 1, &got), 0);

	/* Wrong kinds of file. */
	assert_null(token_load_private(pub));
	assert_null(token_load_public(path));
	snprintf(path, sizeof(path), "%s/missing", dir);
	assert_null(token_load_private(path));
	snprintf(path, sizeof(path), "%s/ec.pem", dir);
	ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(PEM_write_PrivateKey(fp, ec, NULL, NULL, 0, NULL,
	    NULL), 1);
	fclose(fp);
	assert_null(token_load_private(path));
	assert_int_equal(token_authority_id(ec, id1), -1);
	unlink(path);
	snprintf(path, sizeof(path), "%s/nodir/auth.key", dir);
	assert_int_equal(token_keygen(path), -1);

	EVP_PKEY_free(ec);
	EVP_PKEY_free(priv);
	EVP_PKEY_free(pubk);
	snprintf(path, sizeof(path), "%s/auth.key", dir);
	unlink(path);
	unlink(pub);
	assert_int_equal(rmdir(dir), 0);
}

static void
write_file(const char *path, const void *p, size_t len)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	assert_int_equal(fwrite(p, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

/* The openssl CLI must accept our tokens: the format is plain Ed25519. */
static void
test_openssl_cli_verify(void **state)
{
	char dir[] = "/tmp/test_token.XXXXXX", key[PATH_MAX], pub[PATH_MAX];
	char pf[PATH_MAX], sf[PATH_MAX], cmd[4 * PATH_MAX + 128];
	char tok[TOKEN_MAX + 1], *dot;
	unsigned char payload[TOKEN_MAX], sig[64];
	struct lease l;
	EVP_PKEY *priv;
	int plen;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(key, sizeof(key), "%s/k", dir);
	snprintf(pub, sizeof(pub), "%s/k.pub", dir);
	snprintf(pf, sizeof(pf), "%s/payload", dir);
	snprintf(sf, sizeof(sf), "%s/sig", dir);
	assert_int_equal(token_keygen(key), 0);
	assert_non_null(priv = token_load_private(key));
	make_lease(&l);
	assert_int_equal(token_sign(&l, priv, tok, sizeof(tok)), 0);
	dot = strchr(tok, '.');
	plen = b64url_decode(tok, dot - tok, payload, sizeof(payload));
	assert_true(plen > 0);
	assert_int_equal(b64url_decode(dot + 1, strlen(dot + 1), sig, 64), 64);
	write_file(pf, payload, plen);
	write_file(sf, sig, 64);

	snprintf(cmd, sizeof(cmd), "openssl pkeyutl -verify -pubin -inkey %s "
	    "-rawin -in %s -sigfile %s >/dev/null 2>&1", pub, pf, sf);
	assert_int_equal(system(cmd), 0);
	/* Sanity: the same command fails on a changed payload. */
	payload[0] ^= 1;
	write_file(pf, payload, plen);
	assert_int_not_equal(system(cmd), 0);

	EVP_PKEY_free(priv);
	unlink(pf);
	unlink(sf);
	unlink(key);
	unlink(pub);
	assert_int_equal(rmdir(dir), 0);
}

static int
setup(void **state)
{
	(void)state;
	key_a = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	key_b = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	return key_a != NULL && key_b != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(key_a);
	EVP_PKEY_free(key_b);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_valid),
		cmocka_unit_test(test_kid_vector),
		cmocka_unit_test(test_key_generate),
		cmocka_unit_test(test_role),
		cmocka_unit_test(test_b64url_roundtrip),
		cmocka_unit_test(test_b64url_rejects),
		cmocka_unit_test(test_sign_verify_roundtrip),
		cmocka_unit_test(test_verify_wrong_key),
		cmocka_unit_test(test_verify_tampered),
		cmocka_unit_test(test_verify_flipped_payload_byte),
		cmocka_unit_test(test_trusted_list),
		cmocka_unit_test(test_sign_rejects),
		cmocka_unit_test(test_schema_valid_any_order),
		cmocka_unit_test(test_schema_rejects),
		cmocka_unit_test(test_schema_bad_products),
		cmocka_unit_test(test_hostile_headers),
		cmocka_unit_test(test_oversized),
		cmocka_unit_test(test_decode_unverified),
		cmocka_unit_test(test_keygen_files),
		cmocka_unit_test(test_openssl_cli_verify),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}

/*
 * mkcorpus.c - writes the signed seeds of tests/fuzz/corpus/ (tokens,
 * lease payloads, upstream bodies, cache files, IPC frames), signed with
 * the corpus key of fuzz.h, so they can be made again. Not a fuzz target.
 *   cc -Icommon -Istore -Iworker -Iserver tests/fuzz/mkcorpus.c \
 *       build/liblicproxy.a $(pkg-config --libs ...) -o /tmp/mkcorpus
 *   /tmp/mkcorpus tests/fuzz/corpus
 */
#include <stdio.h>

#include "fuzz.h"
#include "ipc.h"
#include "token.h"

static const char	*dir;

static void
put(const char *target, const char *name, const void *p, size_t n)
{
	char	 path[512];
	FILE	*f;

	snprintf(path, sizeof(path), "%s/%s/%s", dir, target, name);
	CHECK((f = fopen(path, "w")) != NULL);
	CHECK(fwrite(p, 1, n, f) == n && fclose(f) == 0);
}

static void
putf(const char *target, const char *name, const char *fmt, const char *a,
    const char *b)
{
	char buf[8192];

	snprintf(buf, sizeof(buf), fmt, a, b);
	put(target, name, buf, strlen(buf));
}

static void
sign(const char *kid, enum lease_role role, int64_t life, char *tok)
{
	struct lease l = { .status = "active", .products = { "vision",
	    "speech_v2" }, .n_products = 2, .iat = 1790000000,
	    .iss = "corpus-authority" };

	snprintf(l.kid, sizeof(l.kid), "%s", kid);
	l.role = role;
	l.rat = l.iat + 60;
	l.exp = l.iat + life;
	CHECK(token_sign(&l, fuzz_key(), tok, TOKEN_MAX + 1) == 0);
}

static void
tokens(void)
{
	char		 t[TOKEN_MAX + 1], bad[TOKEN_MAX + 1];
	unsigned char	 pl[TOKEN_MAX];
	int		 n;

	sign("2f1c0f5e6a3b9d47", ROLE_MEMBER, 259200, t);
	put("fuzz_token", "valid-member", t, strlen(t));
	n = b64url_decode(t, strchr(t, '.') - t, pl, sizeof(pl));
	put("fuzz_lease", "valid-member", pl, n);
	putf("fuzz_upstream", "valid", "{\"lease\":\"%s\"}", t, NULL);
	putf("fuzz_upstream", "valid-extra-fields", "{\"lease\":\"%s\","
	    "\"source\":\"cache\",\"expires_at\":\"%s\"}", t,
	    "2026-11-29T16:00:00Z");
	memcpy(bad, t, strlen(t) + 1);
	bad[strlen(bad) - 2] ^= 1;
	put("fuzz_token", "bad-signature", bad, strlen(bad));
	putf("fuzz_upstream", "bad-signature", "{\"lease\":\"%s\"}", bad, NULL);
	put("fuzz_token", "truncated", t, strlen(t) / 2);
	sign("0123456789abcdef", ROLE_PROXY, 3600, t);
	put("fuzz_token", "valid-proxy", t, strlen(t));
	n = b64url_decode(t, strchr(t, '.') - t, pl, sizeof(pl));
	put("fuzz_lease", "valid-proxy", pl, n);
	putf("fuzz_upstream", "other-kid", "{\"lease\":\"%s\"}", t, NULL);
	sign("2f1c0f5e6a3b9d47", ROLE_MEMBER, 400L * 86400 * 365, t);
	putf("fuzz_upstream", "too-long-life", "{\"lease\":\"%s\"}", t, NULL);
}

static void
cache(void)
{
	/* sha256 whose first 16 hex are the lease's kid */
	const char *sha1 = "2f1c0f5e6a3b9d47aa01aa01aa01aa01aa01aa01aa01aa01"
	    "aa01aa01aa01aa01";
	const char *sha2 = "0123456789abcdef0000111122223333444455556666777788"
	    "889999aaaabb";
	char	t1[TOKEN_MAX + 1], t2[TOKEN_MAX + 1], buf[8192];

	sign("2f1c0f5e6a3b9d47", ROLE_MEMBER, 259200, t1);
	sign("0123456789abcdef", ROLE_PROXY, 3600, t2);
	snprintf(buf, sizeof(buf), "{\"sha256\":\"%s\",\"lease\":\"%s\"}\n"
	    "\n{\"sha256\":\"%s\",\"lease\":\"%s\"}\n", sha1, t1, sha2, t2);
	put("fuzz_cache", "valid-two", buf, strlen(buf));
	snprintf(buf, sizeof(buf), "{\"sha256\":\"%s\",\"lease\":\"%s\"}\n",
	    sha2, t1);
	put("fuzz_cache", "kid-mismatch", buf, strlen(buf));
	snprintf(buf, sizeof(buf), "{\"sha256\":\"%s\",\"lease\":\"%s\"}\n"
	    "{\"sha256\":\"%s\"}\n", sha1, t1, sha2);
	put("fuzz_cache", "second-line-bad", buf, strlen(buf));
	snprintf(buf, sizeof(buf), "{\"sha256\":\"%s\",\"lease\":\"%s\","
	    "\"sha256\":\"%s\"}\n", sha1, t1, sha1);
	put("fuzz_cache", "duplicate-field", buf, strlen(buf));
}

static void
frame(const char *name, const struct ipc_msg *m)
{
	unsigned char	buf[IPC_MAX_FRAME];
	int		n;

	CHECK((n = ipc_encode(m, buf, sizeof(buf))) > 0);
	put("fuzz_ipc", name, buf, n);
}

static void
ipc(void)
{
	struct ipc_msg m = { .type = IPC_LEASE_REQ, .rid = 7,
	    .key = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd" };

	frame("lease-req", &m);
	m.refresh = 1;
	frame("lease-req-refresh", &m);
	memset(&m, 0, sizeof(m));
	m.type = IPC_LEASE_RES;
	m.rid = 7;
	m.status = 403;
	strcpy(m.reason, "revoked");
	frame("lease-res-403", &m);
	m.status = 503;
	m.reason[0] = '\0';
	m.retry_after = 5;
	frame("lease-res-503", &m);
	m.status = 200;
	m.retry_after = 0;
	strcpy(m.lease, "eyJ2IjoxfQ.c2lnbmF0dXJl");
	frame("lease-res-200-token", &m);
	memset(&m, 0, sizeof(m));
	m.type = IPC_USAGE_KICK;
	frame("usage-kick", &m);
}

int
main(int argc, char **argv)
{
	CHECK(argc == 2);
	dir = argv[1];
	tokens();
	cache();
	ipc();
	return 0;
}

/*
 * mkleases.c - bench helper: writes N signed leases into a store, as the
 * uplink would have cached them, so the scale bench (bench/scale.py) can
 * start a proxy over a million leases without a million upstream
 * requests. Key i is "S" followed by i in 39 decimal digits (the bench
 * computes the same keys); each lease is signed with the given Ed25519
 * key for that key's kid, and written BATCH to a transaction
 * (store_lease_put_many) rather than one commit and flush per lease.
 *
 * usage: mkleases STORE_DIR N SIGNING_KEY [MAX_SIZE_BYTES]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"
#include "token.h"

#define BATCH		10000
#define LIFE_S		(30 * 86400)	/* long enough for any bench run */
#define REFRESH_S	86400		/* no refresh during a run */

static void
mk_lease(size_t i, EVP_PKEY *key, const char *iss, int64_t now,
    struct store_lease_rec *r, char *tok, const struct store_clock *clk)
{
	struct lease	l;
	char		k[TOKEN_KEY_LEN + 1];

	snprintf(k, sizeof(k), "S%039zu", i);
	memset(&l, 0, sizeof(l));
	token_key_hash(k, TOKEN_KEY_LEN, r->sha);
	token_kid_from_hash(r->sha, l.kid);
	strcpy(l.status, "active");
	strcpy(l.products[0], "api");
	strcpy(l.products[1], "engine");
	l.n_products = 2;
	l.role = ROLE_MEMBER;
	l.iat = now;
	l.rat = now + REFRESH_S;
	l.exp = now + LIFE_S;
	snprintf(l.iss, sizeof(l.iss), "%s", iss);
	if (token_sign(&l, key, tok, TOKEN_MAX + 1) == -1) {
		fprintf(stderr, "mkleases: cannot sign\n");
		exit(1);
	}
	r->tok = tok;
	r->len = strlen(tok);
	store_lease_anchor(clk, l.iat, l.rat, l.exp, 0, &r->t);
}

int
main(int argc, char **argv)
{
	struct store_lease_rec	*recs;
	struct store_clock	 clk;
	struct store		*s;
	EVP_PKEY		*key;
	char			 err[512], iss[TOKEN_KID_LEN + 1], *toks;
	size_t			 n, i, j, b;
	uint64_t		 max = argc > 4 ? strtoull(argv[4], NULL, 10) :
	    (uint64_t)8 << 30;

	if (argc < 4) {
		fprintf(stderr, "usage: mkleases STORE_DIR N SIGNING_KEY "
		    "[MAX_SIZE_BYTES]\n");
		return 2;
	}
	n = strtoull(argv[2], NULL, 10);
	if ((key = token_load_private(argv[3])) == NULL ||
	    token_authority_id(key, iss) == -1) {
		fprintf(stderr, "mkleases: %s: not an Ed25519 key\n", argv[3]);
		return 1;
	}
	if ((s = store_open(argv[1], max, 0, err, sizeof(err))) == NULL) {
		fprintf(stderr, "mkleases: %s\n", err);
		return 1;
	}
	recs = calloc(BATCH, sizeof(*recs));
	toks = malloc((size_t)BATCH * (TOKEN_MAX + 1));
	if (recs == NULL || toks == NULL)
		return 1;
	store_clock_read(s, &clk);
	for (i = 0; i < n; i += b) {
		b = n - i < BATCH ? n - i : BATCH;
		for (j = 0; j < b; j++)
			mk_lease(i + j, key, iss, clk.wall, &recs[j],
			    toks + j * (TOKEN_MAX + 1), &clk);
		if (store_lease_put_many(s, recs, b) != 0) {
			fprintf(stderr, "mkleases: store write failed\n");
			return 1;
		}
	}
	store_close(s);
	printf("%zu leases\n", n);
	return 0;
}

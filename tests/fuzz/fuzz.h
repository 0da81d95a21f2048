/*
 * fuzz.h - what the libFuzzer targets share: CHECK (abort, so libFuzzer
 * keeps the input) and the fixed Ed25519 key that signed the corpus
 * tokens, so a committed valid token stays valid.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "log.h"

#define CHECK(x)	do { if (!(x)) abort(); } while (0)

/* The corpus authority's private key: 32 bytes of 'L'. */
static inline EVP_PKEY *
fuzz_key(void)
{
	static EVP_PKEY	*key;
	unsigned char	 seed[32];

	if (key == NULL) {
		memset(seed, 'L', sizeof(seed));
		key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL,
		    seed, sizeof(seed));
		CHECK(key != NULL);
		/* What the code under test logs is not a finding. */
		log_init(LOG_ERR, 0, "fuzz");
	}
	return key;
}

#endif

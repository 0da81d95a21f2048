/*
 * fuzz_upstream.c - libFuzzer target for what the uplink still parses of
 * an upstream answer after libcurl (server/uplink.c): the JSON body of a
 * 200, whose "lease" token must verify against license.trusted_keys (here
 * the corpus key) and name the key asked for, and the "reason" of a
 * 401/403. Relay answers are judged by their status alone (relay.c logs
 * at most 200 bytes of a refusal's body), so they have no parser to fuzz.
 *
 * Besides memory safety it checks: an accepted lease names the kid asked
 * for, lasts a positive time within the store's bound, and its token (as
 * stored) verifies again to the same lease; a reason is one of three.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz.h"
#include "store.h"
#include "token.h"
#include "uplink.h"

#define KID	"2f1c0f5e6a3b9d47"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lease	 l, again;
	char		 tok[TOKEN_MAX + 1];
	const char	*why;

	up.trusted[0] = fuzz_key();
	up.ntrusted = 1;
	why = uplink_reject_reason((const char *)data, size);
	CHECK(strcmp(why, "revoked") == 0 || strcmp(why, "expired") == 0 ||
	    strcmp(why, "unknown") == 0);
	if (uplink_lease_verify((const char *)data, size, KID, tok, &l) != 0)
		return 0;
	CHECK(strcmp(l.kid, KID) == 0);
	CHECK(l.exp > l.iat && l.exp - l.iat <= STORE_LEASE_MAX_S);
	CHECK(strlen(tok) <= TOKEN_MAX);
	CHECK(token_verify(tok, strlen(tok), up.trusted, 1, &again) == 0);
	CHECK(again.exp == l.exp && again.iat == l.iat);
	return 0;
}

/*
 * fuzz_usage.c - libFuzzer target for the validation of a POST /v1/usage
 * body (worker/usage.c, through usage_record_check). The first byte picks
 * the caller's role (even: member, odd: proxy, which may name key_id); the
 * rest is the body, read the way the handler reads it.
 *
 * Besides memory safety it checks what the spool and the relay rely on:
 * an accepted record has every field within its charset and length, a
 * finite quantity in range, a timestamp usage_ts_valid accepts, a 16-hex
 * key_id, and, for the caller's own key, a licensed product; a refused one
 * names a field and a reason that fit the 400 message.
 *
 * The handler first tries usage_parse_fast, which reads plain bodies
 * without jansson: whatever it takes, the jansson path must take too,
 * with the same records field for field (it may leave a body to jansson,
 * never accept one jansson refuses).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "store.h"
#include "token.h"
#include "worker.h"

#define KID	"0123456789abcdef"

static int
only(const char *s, const char *set, size_t max)
{
	return s[0] != '\0' && strlen(s) <= max && strspn(s, set) == strlen(s);
}

static void
check_rec(const struct usage_rec *r, const struct lease *l)
{
	int i, licensed = 0;

	CHECK(only(r->id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789._:-", 64));
	CHECK(only(r->product, TOKEN_NAME_CHARS, 32));
	CHECK(only(r->metric, TOKEN_NAME_CHARS, 32));
	CHECK(isfinite(r->quantity) && r->quantity >= 0 &&
	    r->quantity <= 1e12);
	CHECK(usage_ts_valid(r->ts) == 0);
	CHECK(strlen(r->kid) == 16 && strspn(r->kid, "0123456789abcdef") == 16);
	for (i = 0; i < l->n_products; i++)
		licensed |= strcmp(l->products[i], r->product) == 0;
	/* Only a proxy may name key_id, and then for keys it relays. */
	CHECK(licensed || l->role == ROLE_PROXY);
}

static void
check_body(json_t *root, const struct lease *l)
{
	json_t			*recs = json_object_get(root, "records");
	struct usage_rec	 r;
	const char		*field, *why;
	char			 name[96];
	size_t			 i;

	if (!json_is_array(recs))
		return;
	for (i = 0; i < json_array_size(recs) && i < 1000; i++) {
		field = why = NULL;
		if (usage_record_check(json_array_get(recs, i), l, KID, &r,
		    &field, &why) == 0) {
			check_rec(&r, l);
			continue;
		}
		CHECK(field != NULL && why != NULL && strlen(why) < 120);
		/* The handler's 400 names it so; it must stay short. */
		CHECK(snprintf(name, sizeof(name), "records[%zu].%s", i,
		    field) < (int)sizeof(name));
	}
}

/* The jansson path's verdict on the whole body: 0 and its records. */
static int
ref_parse(json_t *root, const struct lease *l, struct usage_rec **out,
    size_t *n)
{
	json_t		*recs = json_object_get(root, "records");
	const char	*field, *why;
	size_t		 i, cnt = json_array_size(recs);

	*out = NULL;
	if (!json_is_object(root) || json_object_size(root) != 1 ||
	    !json_is_array(recs) || cnt < 1 || cnt > 1000 ||
	    (*out = calloc(cnt, sizeof(**out))) == NULL)
		return -1;
	for (i = 0; i < cnt; i++)
		if (usage_record_check(json_array_get(recs, i), l, KID,
		    &(*out)[i], &field, &why) != 0)
			return -1;
	*n = cnt;
	return 0;
}

static void
check_fast(const uint8_t *data, size_t size, json_t *root,
    const struct lease *l)
{
	struct usage_rec	*fast = NULL, *ref = NULL;
	char			*body;
	size_t			 nref = 0;
	int			 nfast = 0, i;

	/* NUL-terminated, as the handler's body buffer is */
	if ((body = malloc(size + 1)) == NULL)
		return;
	memcpy(body, data, size);
	body[size] = '\0';
	if (usage_parse_fast(body, size, l, KID, &fast, &nfast) == 0) {
		CHECK(root != NULL && ref_parse(root, l, &ref, &nref) == 0);
		CHECK((size_t)nfast == nref);
		for (i = 0; i < nfast; i++) {
			check_rec(&fast[i], l);
			CHECK(strcmp(fast[i].id, ref[i].id) == 0);
			CHECK(strcmp(fast[i].kid, ref[i].kid) == 0);
			CHECK(strcmp(fast[i].product, ref[i].product) == 0);
			CHECK(strcmp(fast[i].metric, ref[i].metric) == 0);
			CHECK(strcmp(fast[i].ts, ref[i].ts) == 0);
			CHECK(fast[i].quantity == ref[i].quantity);
		}
	}
	free(fast);
	free(ref);
	free(body);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lease	 l = { .kid = KID, .status = "active",
	    .products = { "vision", "speech_v2" }, .n_products = 2 };
	json_t		*root;
	char		 ts[64];

	(void)fuzz_key();
	if (size < 1)
		return 0;
	l.role = data[0] & 1 ? ROLE_PROXY : ROLE_MEMBER;
	/* The timestamp rule alone, on the raw bytes. */
	if (size - 1 < sizeof(ts)) {
		memcpy(ts, data + 1, size - 1);
		ts[size - 1] = '\0';
		(void)usage_ts_valid(ts);
	}
	root = json_loadb((const char *)data + 1, size - 1, USAGE_JSON_FLAGS,
	    NULL);
	check_fast(data + 1, size - 1, root, &l);
	if (root == NULL)
		return 0;
	check_body(root, &l);
	json_decref(root);
	return 0;
}

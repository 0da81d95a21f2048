/*
 * test_relay.c - the relay's hand-rendered batch body: what the authority
 * reads back is the spool's records exactly (the fast reader for plain
 * records, jansson for escaped ones), and a batch is cut at its exact
 * size, never over the byte budget but for a lone record.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <float.h>
#include <jansson.h>

#include <cmocka.h>

#include "uplink.h"
#include "worker.h"

#define KID	"0123456789abcdef"
#define NRECS	1000

static const double quantities[] = {
	0, 1.5, 12.345678901234567, 1e12, 999999999999.9999, 0.1, 1e-7,
	123456789.000001, 2.2250738585072014e-308,
};
/* strtod calls these a range error: the fast reader leaves them to jansson. */
static const double subnormal[] = { 5e-324, 1e-310 };
#define NQ	(sizeof(quantities) / sizeof(quantities[0]))

static void
rec_fill(struct usage_rec *r, int i, int longest)
{
	char num[16];

	memset(r, 0, sizeof(*r));
	memcpy(r->kid, KID, sizeof(r->kid));
	if (longest) {
		memset(r->id, 'x', USAGE_ID_MAX);
		memcpy(r->id, num, (size_t)snprintf(num, sizeof(num), "%d-", i));
		memset(r->product, 'p', TOKEN_PRODUCT_MAX);
		memset(r->metric, 'm', TOKEN_PRODUCT_MAX);
		strcpy(r->ts, "2026-11-26T16:00:00.123456789+01:00");
	} else {
		snprintf(r->id, sizeof(r->id), "rec-%d", i);
		strcpy(r->product, "engine");
		strcpy(r->metric, "audio_seconds");
		strcpy(r->ts, "2026-11-26T16:00:00Z");
	}
	r->quantity = quantities[(size_t)i % NQ];
}

static struct lease *
proxy_lease(void)
{
	static struct lease l;

	memset(&l, 0, sizeof(l));
	strcpy(l.products[0], "engine");
	l.n_products = 1;
	l.role = ROLE_PROXY;
	return &l;
}

/* The authority's fast reader gives back every record, every bit. */
static void
t_relay_reads_back(void **state)
{
	struct usage_rec	*in = calloc(NRECS, sizeof(*in)), *out = NULL;
	size_t			 len;
	char			*body;
	int			 i, taken, n = 0;

	(void)state;
	assert_non_null(in);
	for (i = 0; i < NRECS; i++)
		rec_fill(&in[i], i, 0);
	body = relay_render(in, NRECS, SIZE_MAX, &taken, &len);
	assert_non_null(body);
	assert_int_equal(taken, NRECS);
	assert_int_equal(len, strlen(body));
	assert_int_equal(usage_parse_fast(body, len, proxy_lease(),
	    "ffffffffffffffff", &out, &n), 0);
	assert_int_equal(n, NRECS);
	for (i = 0; i < NRECS; i++)
		if (memcmp(&in[i], &out[i], sizeof(in[i])) != 0)
			fail_msg("record %d differs (quantity %.17g, read %.17g)",
			    i, in[i].quantity, out[i].quantity);
	free(out);
	free(body);
	free(in);
}

/*
 * One cut: within the budget, and one more record would not have been; a
 * budget below one record still sends that record alone.
 */
static void
cut_check(const struct usage_rec *in, int n, size_t budget)
{
	size_t	 len, more;
	char	*body, *next;
	json_t	*j;
	int	 taken, t2;

	body = relay_render(in, n, budget, &taken, &len);
	assert_non_null(body);
	assert_true(taken >= 1);
	if (taken > 1 && len > budget)
		fail_msg("budget %zu: %zu bytes", budget, len);
	if (taken < n) {
		next = relay_render(in, taken + 1, SIZE_MAX, &t2, &more);
		assert_int_equal(t2, taken + 1);
		if (more <= budget)
			fail_msg("budget %zu: cut at %d records, %zu bytes, but "
			    "%d fit in %zu", budget, taken, len, taken + 1, more);
		free(next);
	}
	assert_non_null(j = json_loadb(body, len, 0, NULL));
	assert_int_equal(json_array_size(json_object_get(j, "records")), taken);
	json_decref(j);
	free(body);
}

/* Every budget up to a dozen records, and the real ones for a full batch. */
static void
t_relay_cut_exact(void **state)
{
	struct usage_rec	*in = calloc(NRECS, sizeof(*in));
	size_t			 b;
	int			 i;

	(void)state;
	assert_non_null(in);
	for (i = 0; i < NRECS; i++)
		rec_fill(&in[i], i, 1);
	for (b = 1; b <= 4000; b++)
		cut_check(in, 12, b);
	cut_check(in, NRECS, 65536);
	cut_check(in, NRECS, 256 * 1024);
	cut_check(in, NRECS, 1024 * 1024);
	free(in);
}

/* jansson reads every quantity back to the same bits. */
static void
t_relay_subnormal(void **state)
{
	struct usage_rec	 r[2];
	json_t			*j;
	size_t			 len, i;
	char			*body;
	int			 taken;

	(void)state;
	for (i = 0; i < 2; i++) {
		rec_fill(&r[i], (int)i, 0);
		r[i].quantity = subnormal[i];
	}
	body = relay_render(r, 2, SIZE_MAX, &taken, &len);
	assert_non_null(body);
	assert_non_null(j = json_loadb(body, len, 0, NULL));
	for (i = 0; i < 2; i++)
		assert_true(json_real_value(json_object_get(json_array_get(
		    json_object_get(j, "records"), i), "quantity")) ==
		    subnormal[i]);
	json_decref(j);
	free(body);
}

/* A string the validators would refuse still makes well-formed JSON. */
static void
t_relay_escapes(void **state)
{
	static const char	 odd[] = "a\"b\\c\nd\x01" "e/\x7f";
	struct usage_rec	 r;
	json_t			*j, *rec;
	size_t			 len;
	char			*body;
	int			 taken;

	(void)state;
	rec_fill(&r, 1, 0);
	strcpy(r.id, odd);
	body = relay_render(&r, 1, SIZE_MAX, &taken, &len);
	assert_non_null(body);
	assert_non_null(j = json_loadb(body, len, 0, NULL));
	rec = json_array_get(json_object_get(j, "records"), 0);
	assert_string_equal(json_string_value(json_object_get(rec, "id")),
	    odd);
	assert_string_equal(json_string_value(json_object_get(rec, "key_id")),
	    KID);
	assert_true(json_real_value(json_object_get(rec, "quantity")) ==
	    r.quantity);
	json_decref(j);
	free(body);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_relay_reads_back),
		cmocka_unit_test(t_relay_cut_exact),
		cmocka_unit_test(t_relay_subnormal),
		cmocka_unit_test(t_relay_escapes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_usage.c - the usage record validators: RFC 3339 real dates, and the
 * jansson-free fast path, which must accept only what the jansson path
 * accepts and fill the same records.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <cmocka.h>

#include "usage_rec.h"
#include "worker.h"

static void
t_ts_good(void **state)
{
	static const char *const good[] = {
		"2026-11-26T16:00:00Z", "2026-11-26t16:00:00z",
		"1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
		"2024-02-29T00:00:00Z",		/* leap year */
		"2000-02-29T12:00:00Z",		/* divisible by 400 */
		"2026-01-31T00:00:00Z", "2026-04-30T00:00:00Z",
		"2026-11-26T16:00:00.5Z", "2026-11-26T16:00:00.123456789+01:00",
		"2026-11-26T16:00:00-23:59",
		"2016-12-31T23:59:60Z",		/* a leap second */
		"2017-01-01T00:59:60+01:00",	/* the same, at +01:00 */
		"2016-12-31T18:29:60-05:30",
		"1972-06-30T23:59:60Z",		/* the first */
		"2035-06-30T23:59:60Z",		/* a slot not (yet) used */
		"1970-01-01T00:00:00-01:00",	/* 01:00 UTC */
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (usage_ts_valid(good[i]) != 0)
			fail_msg("refused %s", good[i]);
}

static void
t_ts_bad(void **state)
{
	static const char *const bad[] = {
		"2026-02-30T00:00:00Z", "2023-02-29T00:00:00Z",
		"1900-02-29T00:00:00Z",		/* not a leap year */
		"2026-04-31T00:00:00Z", "2026-13-01T00:00:00Z",
		"2026-00-10T00:00:00Z", "2026-01-00T00:00:00Z",
		"2026-01-32T00:00:00Z", "1969-12-31T23:59:59Z",
		"0000-01-01T00:00:00Z", "2026-11-26T24:00:00Z",
		"2026-11-26T16:60:00Z", "2026-11-26T16:00:61Z",
		"2026-11-26T16:00:60Z",		/* not 23:59 UTC */
		"2016-12-31T23:59:60+01:00",	/* 22:59 UTC */
		"2026-11-26T23:59:60Z",		/* no leap-second slot */
		"1970-01-01T23:59:60Z",		/* before the first (1972) */
		"1971-12-31T23:59:60Z",
		"2016-12-30T23:59:60Z",
		"1970-01-01T00:00:00+01:00",	/* 1969-12-31T23:00Z */
		"1970-01-01T00:59:59+01:00",
		"2026-11-26T16:00:00", "2026-11-26 16:00:00Z",
		"2026-11-26T16:00:00.Z", "2026-11-26T16:00:00+24:00",
		"2026-11-26T16:00:00+01:60", "2026-11-26T16:00:00+0100",
		"2026-11-26T16:00:00Zjunk", "+2026-11-26T16:00:00Z",
		"2026-11-26T16:00:00.1234567890123456Z",	/* > 35 */
		"", "2026-1-26T16:00:00Z",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (usage_ts_valid(bad[i]) == 0)
			fail_msg("accepted %s", bad[i]);
}

#define KID	"0123456789abcdef"

/* The jansson path's verdict on a whole body, as usage_parse gives it. */
static int
ref_parse(const char *body, const struct lease *l, struct usage_rec **out,
    int *n)
{
	json_t		*root, *recs;
	const char	*field, *why;
	size_t		 i, cnt;
	int		 rv = -1;

	*out = NULL;
	if ((root = json_loads(body, USAGE_JSON_FLAGS, NULL)) == NULL)
		return -1;
	recs = json_object_get(root, "records");
	cnt = json_array_size(recs);
	if (json_is_object(root) && json_object_size(root) == 1 &&
	    json_is_array(recs) && cnt >= 1 && cnt <= 1000 &&
	    (*out = calloc(cnt, sizeof(**out))) != NULL) {
		for (i = 0; i < cnt; i++)
			if (usage_record_check(json_array_get(recs, i), l, KID,
			    &(*out)[i], &field, &why) != 0)
				break;
		rv = i == cnt ? 0 : -1;
		*n = (int)cnt;
	}
	json_decref(root);
	return rv;
}

#define R(x)	"{\"records\":[" x "]}"
#define REC	"\"id\":\"a-1\",\"product\":\"engine\",\"metric\":\"calls\"," \
		"\"ts\":\"2026-01-01T00:00:00Z\""

/* 1: the fast path takes it; 0: it leaves it to jansson. */
static const struct {
	int		 fast;
	const char	*body;
} cases[] = {
	{ 1, R("{" REC ",\"quantity\":1.5}") },
	{ 1, " \r\n{ \"records\" : [ {" REC ", \"quantity\" : 2 } ,"
	    "{\"quantity\":0,\"id\":\"b\",\"product\":\"api\","
	    "\"metric\":\"m_1\",\"ts\":\"2026-11-26T16:00:00.5+01:00\"}"
	    " ] }\t" },
	{ 1, R("{" REC ",\"quantity\":-0}") },
	{ 1, R("{" REC ",\"quantity\":1e12}") },
	{ 1, R("{" REC ",\"quantity\":12.5E-3}") },
	{ 1, R("{" REC ",\"quantity\":1,\"key_id\":\"00000000000000ff\"}") },
	{ 0, R("{" REC ",\"quantity\":-1}") },
	{ 0, R("{" REC ",\"quantity\":1e13}") },
	{ 0, R("{" REC ",\"quantity\":1e999}") },
	{ 0, R("{" REC ",\"quantity\":01}") },
	{ 0, R("{" REC ",\"quantity\":1.}") },
	{ 0, R("{" REC ",\"quantity\":.5}") },
	{ 0, R("{" REC ",\"quantity\":+1}") },
	{ 0, R("{" REC ",\"quantity\":1e}") },
	{ 0, R("{" REC ",\"quantity\":\"1\"}") },
	{ 0, R("{" REC ",\"quantity\":1234567890123456}") },
	{ 0, R("{" REC "}") },
	{ 0, R("{" REC ",\"quantity\":1,\"quantity\":2}") },
	{ 0, R("{" REC ",\"quantity\":1,\"extra\":1}") },
	{ 0, R("{" REC ",\"quantity\":1,\"key_id\":\"00000000000000FF\"}") },
	{ 0, R("{\"id\":\"a\\u0031\",\"product\":\"engine\",\"metric\":"
	    "\"c\",\"ts\":\"2026-01-01T00:00:00Z\",\"quantity\":1}") },
	{ 0, R("{\"id\":\"a b\",\"product\":\"engine\",\"metric\":"
	    "\"c\",\"ts\":\"2026-01-01T00:00:00Z\",\"quantity\":1}") },
	{ 0, R("{\"id\":\"a\",\"product\":\"other\",\"metric\":"
	    "\"c\",\"ts\":\"2026-01-01T00:00:00Z\",\"quantity\":1}") },
	{ 0, R("{\"id\":\"a\",\"product\":\"engine\",\"metric\":"
	    "\"c\",\"ts\":\"2026-02-30T00:00:00Z\",\"quantity\":1}") },
	{ 0, R("") },
	{ 0, R("{" REC ",\"quantity\":1},") },
	{ 0, R("{" REC ",\"quantity\":1}") "x" },
	{ 0, R("{" REC ",\"quantity\":1}") "}" },
	{ 0, "{\"records\":[{" REC ",\"quantity\":1}],\"records\":[]}" },
	{ 0, "{\"records\":[{" REC ",\"quantity\":1}]" },
	{ 0, "[]" },
	{ 0, "" },
};

static void
t_fast_same(void **state)
{
	struct lease		 l;
	struct usage_rec	*a, *b;
	size_t			 i;
	int			 na, nb, fa, rb;

	(void)state;
	memset(&l, 0, sizeof(l));
	strcpy(l.products[0], "engine");
	strcpy(l.products[1], "api");
	l.n_products = 2;
	l.role = ROLE_PROXY;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		a = b = NULL;
		fa = usage_parse_fast(cases[i].body, strlen(cases[i].body), &l,
		    KID, &a, &na);
		rb = ref_parse(cases[i].body, &l, &b, &nb);
		if ((fa == 0) != cases[i].fast)
			fail_msg("case %zu: fast path %s", i,
			    fa == 0 ? "took it" : "left it");
		/* What the fast path takes, jansson takes, record for record. */
		if (fa == 0 && (rb != 0 || na != nb ||
		    memcmp(a, b, na * sizeof(*a)) != 0))
			fail_msg("case %zu: differs from the jansson path", i);
		free(a);
		free(b);
	}
}

/* 1000 records is the limit: the fast path takes 1000, never 1001. */
static void
t_fast_bounds(void **state)
{
	static const char one[] = "{\"id\":\"r%04d\",\"product\":\"engine\","
	    "\"metric\":\"calls\",\"quantity\":1,\"ts\":\"2026-01-01T00:00:00Z\"}";
	struct usage_rec	*v = NULL;
	struct lease		 l;
	size_t			 sz = 1002 * sizeof(one) + 32, o;
	char			*body = malloc(sz);
	int			 i, n, cnt;

	(void)state;
	assert_non_null(body);
	memset(&l, 0, sizeof(l));
	strcpy(l.products[0], "engine");
	l.n_products = 1;
	for (cnt = 1000; cnt <= 1001; cnt++) {
		o = (size_t)snprintf(body, sz, "{\"records\":[");
		for (i = 0; i < cnt; i++) {
			if (i > 0)
				body[o++] = ',';
			o += (size_t)snprintf(body + o, sz - o, one, i);
		}
		o += (size_t)snprintf(body + o, sz - o, "]}");
		n = 0;
		assert_int_equal(usage_parse_fast(body, o, &l, KID, &v, &n),
		    cnt == 1000 ? 0 : -1);
		if (cnt == 1000) {
			assert_int_equal(n, 1000);
			assert_string_equal(v[999].id, "r0999");
			assert_string_equal(v[999].kid, KID);
		}
		free(v);
		v = NULL;
	}
	free(body);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_ts_good),
		cmocka_unit_test(t_ts_bad),
		cmocka_unit_test(t_fast_same),
		cmocka_unit_test(t_fast_bounds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

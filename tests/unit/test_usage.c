/* test_usage.c - the usage record validators: RFC 3339 real dates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_ts_good),
		cmocka_unit_test(t_ts_bad),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_inputs.c - the X-Instance-Id table of the shared stats block: exact
 * counts up to STATS_INSTANCES, overflow reported past it, slots reused only
 * once their instance has gone quiet.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "stats.h"

static int
setup(void **state)
{
	(void)state;
	if (stats_block() == NULL && stats_create() == -1)
		return -1;
	memset(stats_block(), 0, sizeof(*stats_block()));
	return 0;
}

static void
see(const char *prefix, int from, int to, int64_t now)
{
	char	id[32];
	int	i;

	for (i = from; i < to; i++) {
		snprintf(id, sizeof id, "%s-%d", prefix, i);
		stats_instance_seen(id, now);
	}
}

static void
test_exact_past_1024(void **state)
{
	(void)state;
	see("a", 0, 1500, 1000);
	see("a", 0, 700, 1001);			/* again: the same count */
	assert_int_equal(stats_instances_active(stats_block(), 1001), 1500);
	assert_int_equal(stats_instances_overflow(stats_block(), 1001), 0);
	assert_int_equal(stats_block()->instances_untracked, 0);
	/* Quiet for STATS_INSTANCE_ACTIVE_S: no longer active. */
	assert_int_equal(stats_instances_active(stats_block(),
	    1000 + STATS_INSTANCE_ACTIVE_S), 700);
}

static void
test_full_table(void **state)
{
	(void)state;
	see("b", 0, STATS_INSTANCES + 10, 5000);
	assert_int_equal(stats_instances_active(stats_block(), 5000), STATS_INSTANCES);
	assert_int_equal(stats_block()->instances_untracked, 10);
	assert_int_equal(stats_instances_overflow(stats_block(), 5000), 1);
	/* Known ids still refresh in a full table. */
	see("b", 0, 100, 5300);
	assert_int_equal(stats_block()->instances_untracked, 10);
	assert_int_equal(stats_instances_overflow(stats_block(),
	    5000 + STATS_INSTANCE_ACTIVE_S), 0);
}

static void
test_quiet_slots_reused(void **state)
{
	int64_t later = 100 + STATS_INSTANCE_ACTIVE_S;

	(void)state;
	see("c", 0, STATS_INSTANCES, 100);
	see("c", 0, 1000, later - 1);		/* these stay active */
	see("d", 0, 2000, later);		/* reuse the quiet ones */
	assert_int_equal(stats_block()->instances_untracked, 0);
	assert_int_equal(stats_instances_active(stats_block(), later), 3000);
	see("c", 0, 1000, later);		/* found, not inserted again */
	assert_int_equal(stats_instances_active(stats_block(), later), 3000);
	see("e", 0, STATS_INSTANCES, later);
	assert_int_equal(stats_instances_active(stats_block(), later),
	    STATS_INSTANCES);
	assert_int_equal(stats_block()->instances_untracked, 3000);
}

static void
test_dead_claimer_slot_freed(void **state)
{
	int i = 0;

	(void)state;
	/* A claimer killed between its CAS on seen and its hash store. */
	for (i = 0; i < STATS_INSTANCES; i++)
		stats_block()->instances[i].seen = 200;
	see("f", 0, 10, 201);
	assert_int_equal(stats_block()->instances_untracked, 10);
	see("f", 0, 10, 200 + STATS_INSTANCE_ACTIVE_S);
	assert_int_equal(stats_instances_active(stats_block(),
	    200 + STATS_INSTANCE_ACTIVE_S), 10);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_exact_past_1024, setup),
		cmocka_unit_test_setup(test_full_table, setup),
		cmocka_unit_test_setup(test_quiet_slots_reused, setup),
		cmocka_unit_test_setup(test_dead_claimer_slot_freed, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

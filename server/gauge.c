/*
 * gauge.c - the store's figures in the shared stats block: leases cached,
 * survival time, map use. The one writer of leases (uplink or issuer)
 * calls it from its tick; a scan per request would not scale, and neither
 * does a scan per tick: with a million leases one pass cost the uplink
 * 160 ms of CPU every second, and 400 ms at start before it could say it
 * was ready (bench/scale.py, issue 13). So each tick counts a bounded slice
 * (GAUGE_SLICE records, resuming after the last key counted) and the
 * figures are those of the last complete pass plus what the writer added
 * or removed since. Up to GAUGE_SLICE leases a pass is one tick, exactly
 * as before; a million leases are recounted about once a minute.
 */
#include <stdint.h>
#include <string.h>

#include "gauge.h"
#include "stats.h"
#include "store.h"

#define GAUGE_SLICE	16384
#define GAUGE_START_SLICE 1024

void
gauge_init(struct gauge *g, int authority)
{
	memset(g, 0, sizeof(*g));
	g->authority = authority;
	g->acc.first_left_s = g->last.first_left_s = -1;
}

uint64_t
gauge_valid(const struct gauge *g)
{
	return g->last.valid;
}

/*
 * Until the first pass ends, the records not yet counted are taken to be
 * valid in the share of those counted (LMDB's entry count is O(1)): a
 * restarted proxy shows about what it holds at once instead of 0 for a
 * minute, and converges to the count.
 */
static void
gauge_first_pass(struct gauge *g, struct store *s)
{
	uint64_t n = store_lease_entries(s);

	g->last = g->acc;
	if (n > g->acc.total && g->acc.total > 0)
		g->last.valid += (uint64_t)((double)(n - g->acc.total) *
		    g->acc.valid / g->acc.total);
}

static void
gauge_publish(struct gauge *g, struct store *s)
{
	uint64_t used = 0, max = 0;

	store_size(s, &used, &max);
	stats_up_begin();
	stats_block()->leases_cached = g->last.valid;
	/*
	 * At a proxy, what is left of the lease that runs out first (null
	 * with nothing valid cached); an authority signs its own leases
	 * and has no such limit.
	 */
	stats_block()->survival_s = g->authority || g->last.first_left_s < 0 ?
	    STATS_SURVIVAL_NONE : g->last.first_left_s;
	stats_block()->store_used = used;
	stats_block()->store_max = max;
	stats_up_end();
}

/* One step of the pass: at most max records. */
static void
gauge_step(struct gauge *g, struct store *s, size_t max)
{
	struct store_clock	clk;
	int			rc;

	store_clock_read(s, &clk);
	rc = store_lease_count_step(s, &clk, g->pos, &g->mid, max, &g->acc);
	if (rc == 1) {
		g->last = g->acc;
		g->passes++;
		memset(&g->acc, 0, sizeof(g->acc));
		g->acc.first_left_s = -1;
	} else if (rc == 0 && g->passes == 0)
		gauge_first_pass(g, s);
	gauge_publish(g, s);
}

void
gauge_tick(struct gauge *g, struct store *s)
{
	gauge_step(g, s, GAUGE_SLICE);
}

/*
 * At start only a short slice (well under a millisecond), so readiness
 * never waits for a count: a small store is counted exactly, a big one
 * estimated from it until the ticks have walked it.
 */
void
gauge_start(struct gauge *g, struct store *s)
{
	gauge_step(g, s, GAUGE_START_SLICE);
}

/*
 * The published figure follows at once; the pass under way counts the
 * change itself only if its key is still ahead of it, so a key it has
 * passed is added here (keys are walked in order, a pass never sees one
 * twice).
 */
void
gauge_lease_changed(struct gauge *g, const unsigned char sha[32], int delta)
{
	if (delta > 0 || g->last.valid > 0)
		g->last.valid += delta;
	if (g->mid && memcmp(sha, g->pos, sizeof(g->pos)) <= 0 &&
	    (delta > 0 || g->acc.valid > 0))
		g->acc.valid += delta;
	stats_up_begin();
	stats_block()->leases_cached = g->last.valid;
	stats_up_end();
}

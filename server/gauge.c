/*
 * gauge.c - the store's figures in the shared stats block: leases cached,
 * survival time, map use. The one writer of leases (uplink or issuer)
 * calls it from its tick; a scan per request would not scale.
 */
#include <stdint.h>

#include "gauge.h"
#include "stats.h"
#include "store.h"

/*
 * Scans the lease table once. survival: at a proxy, what is left of the
 * lease that runs out first (null with nothing valid cached); an
 * authority signs its own leases and has no such limit.
 */
struct store_lease_counts
gauge_store(struct store *s, int authority)
{
	struct store_lease_counts	n = { 0, 0, -1 };
	struct store_clock		clk;
	uint64_t			used = 0, max = 0;

	store_clock_read(s, &clk);
	store_lease_count(s, &clk, &n);
	store_size(s, &used, &max);
	stats_up_begin();
	stats->leases_cached = n.valid;
	stats->survival_s = authority || n.first_left_s < 0 ?
	    STATS_SURVIVAL_NONE : n.first_left_s;
	stats->store_used = used;
	stats->store_max = max;
	stats_up_end();
	return n;
}

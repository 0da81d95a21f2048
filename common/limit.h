/*
 * limit.h - the per-client-address budget for lease misses (SPEC section 3,
 * "Misses are bounded"). One fixed-size table for the whole instance, in
 * memory the master maps before forking, so every worker draws on the same
 * budget. Each bucket is a GCRA cell (one "theoretical arrival time"),
 * which is a token bucket of miss_burst tokens refilled at miss_rate/s.
 */
#ifndef LIMIT_H
#define LIMIT_H

#include <pthread.h>
#include <stdint.h>

#include "cidr.h"

#define LIMIT_SETS	1024
#define LIMIT_WAYS	8	/* buckets per set: 8192 addresses in all */

struct limit_bucket {
	unsigned char	addr[CIDR_ADDR_LEN];
	int64_t		tat;	/* monotonic us; 0 = free */
};

struct limit_set {
	pthread_mutex_t		mu;	/* robust, process-shared */
	struct limit_bucket	b[LIMIT_WAYS];
};

struct limit_table {
	uint64_t		seed;	/* spreads addresses over the sets */
	struct limit_set	sets[LIMIT_SETS];
};

/* Master, on zeroed shared memory, before fork: 0 or -1. */
int	limit_init(struct limit_table *);
/*
 * One cell: 1 and *tat advanced when a token is left, else 0 and *wait_us
 * set to the time until the next one.
 */
int	limit_gcra(int64_t *tat, int64_t now_us, int rate, int burst,
	    int64_t *wait_us);
/* One miss from addr: 1 allowed, 0 limited (*retry_after_s >= 1). */
int	limit_take(struct limit_table *, const unsigned char addr[CIDR_ADDR_LEN],
	    int64_t now_us, int rate, int burst, int *retry_after_s);
int64_t	limit_now_us(void);

#endif

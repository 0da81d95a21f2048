/*
 * stats.h - instance-wide figures in one shared-memory block that the master
 * maps before forking. Each process adds to its own slot (no contention);
 * readers sum the slots. Upstream state has a single writer (uplink/issuer).
 */
#ifndef STATS_H
#define STATS_H

#include <stdint.h>
#include <sys/types.h>

#include "proc.h"

struct limit_table;

#define STATS_MAX_SLOTS	128
/* X-Instance-Id table: the most distinct instances counted at once. */
#define STATS_INSTANCES	4096
#define STATS_INSTANCE_ACTIVE_S	600
#define STATS_SURVIVAL_NONE	(-1)	/* nothing cached, or an authority */


enum stats_ep {
	EP_LICENSE, EP_USAGE, EP_SEATS, EP_SEATS_GRANT, EP_STATUS, EP_METRICS, EP_HEALTHZ, EP_READYZ,
	EP_DASHBOARD, EP_OTHER, EP_MAX
};

#define STATS_NCODES	24	/* see stats.c: code_list */

enum stats_state {
	ST_INITIALIZING, ST_CONNECTED, ST_TRUSTBASED, ST_DISCONNECTED,
	ST_AUTHORITY
};

enum stats_up_result { UP_OK, UP_REJECTED, UP_ERROR, UP_MAX };

/* Why a worker closed a client connection itself (slow or for room). */
enum stats_close {
	CLOSE_HEADER_TIMEOUT, CLOSE_BODY_TIMEOUT, CLOSE_IDLE_EVICTED,
	CLOSE_STATUS_EVICTED, CLOSE_MAX
};

struct stats_slot {
	pid_t		 pid;			/* 0 = free */
	int		 role;
	uint64_t	 req[EP_MAX][STATS_NCODES];
	uint64_t	 cache_hits;
	uint64_t	 cache_misses;
	uint64_t	 misses_limited;	/* 429 too_many_requests */
	uint64_t	 closed[CLOSE_MAX];	/* enum stats_close */
	uint64_t	 dedup_pruned;		/* de-dup entries dropped early */
	uint64_t	 access_dropped;	/* access lines the log could not take */
	int		 tls_conns;		/* a worker's, while it accepts; else -1 */
	uint64_t	 tls_accepts;		/* a worker's, ever */
};

struct stats_shared {
	int64_t		 started;
	int		 mode;			/* enum conf_mode */
	int		 workers_conf;
	int		 workers_alive;		/* master */
	int		 uplink_alive;		/* master */
	uint64_t	 restarts[PROC_NROLES];	/* master, by proc_role */

	/* written by the uplink/issuer only; seq odd while writing */
	uint32_t	 seq;
	int		 state;
	int64_t		 last_success;		/* 0 = never */
	char		 last_error[160];
	uint64_t	 leases_cached;		/* unexpired */
	uint64_t	 usage_pending;
	uint64_t	 usage_forwarded;
	uint64_t	 up_requests[UP_MAX];
	uint64_t	 up_bytes_in, up_bytes_out;
	int64_t		 last_error_at;		/* 0 = never */
	int64_t		 survival_s;		/* STATS_SURVIVAL_NONE = null */
	uint64_t	 store_used, store_max;	/* bytes */
	uint64_t	 seats_keys, seats_used, seats_granted;

	struct stats_slot slots[STATS_MAX_SLOTS];

	/*
	 * When each X-Instance-Id (by hash) was last seen; any worker writes.
	 * Open addressing: a slot once used is never empty again, only
	 * reused once its instance has not been seen for
	 * STATS_INSTANCE_ACTIVE_S, so an id is found before any reuse. A
	 * slot is claimed by a CAS on seen, then given its hash.
	 */
	struct {
		uint64_t	 hash;
		int64_t		 seen;
	} instances[STATS_INSTANCES];
	uint64_t	 instances_untracked;	/* sightings with no room */
	int64_t		 instances_full_at;	/* last such, 0 = never */
};

/* The block, this process's slot, and the miss budgets per client address
 * (limit.h, mapped beside the block); NULL before they are mapped. */
struct stats_shared	*stats_block(void);
struct stats_slot	*stats_slot_self(void);
struct limit_table	*stats_limit_table(void);

int	 stats_create(void);			/* master, before fork */
int	 stats_adopt(int fd);			/* master after USR2 exec */
int	 stats_fd(void);			/* the block's memfd */
int	 stats_slot_claim(pid_t, int role);	/* master; index or -1 */
void	 stats_slot_release(pid_t);		/* master */
void	 stats_attach(int slot);		/* child after fork */

void	 stats_request(enum stats_ep, int code);
enum stats_ep stats_endpoint(const char *path);
const char *stats_ep_name(enum stats_ep);
int	 stats_code(int idx);			/* idx -> HTTP code */

/* Seqlock for the uplink's fields. */
void	 stats_up_begin(void);
void	 stats_up_end(void);
/* Consistent copy of the whole block (readers). */
void	 stats_snapshot(struct stats_shared *out);

const char *stats_state_name(int);

void	 stats_instance_seen(const char *id, int64_t now);
int	 stats_instances_active(const struct stats_shared *, int64_t now);
/* 1 if an instance went uncounted within STATS_INSTANCE_ACTIVE_S. */
int	 stats_instances_overflow(const struct stats_shared *, int64_t now);

#endif

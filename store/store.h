/* store.h - the one LMDB environment: leases, rejections, usage, keys. */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>
#include <stdint.h>

#include "token.h"
#include "usage_rec.h"

#define STORE_SHA_LEN	32

struct store;

/* Errors: -1 generic, STORE_EFULL map or disk full, STORE_ENOTFOUND. */
#define STORE_ENOTFOUND	(-2)
#define STORE_EFULL	(-3)

#define STORE_RDONLY	0x1	/* CLI readers (keys list, usage, cache export) */

/*
 * Open (creating the directory and env if needed unless STORE_RDONLY) the
 * environment in dir with map size max_size. Opens every named database.
 * Refuses (err says why and what to do) a 0-byte or truncated data.mdb.
 * Clears stale reader slots (mdb_reader_check). Safe to call in several
 * processes at once; never call before fork and use after it.
 */
struct store	*store_open(const char *dir, uint64_t max_size, int flags,
		    char *err, size_t errlen);
void		 store_close(struct store *);
/* Read both ends of every db; -1 with err saying why and what to do. */
int		 store_check(struct store *, const char *dir, char *err,
		    size_t errlen);
int		 store_reader_check(struct store *);	/* returns # cleared */

/*
 * One read snapshot for a run of single-value getters (store_now,
 * store_*_get): one transaction instead of one each. Writes in between are
 * not seen until store_snapshot_end. Iterators open their own.
 */
int		 store_snapshot(struct store *);
void		 store_snapshot_end(struct store *);
/* The snapshot's LMDB txn id (store/lease.c): same id, same contents. */
uint64_t	 store_snapshot_txnid(struct store *);

/*
 * This store's own name, 16 hex characters: random, made by the first
 * writer that asks and kept in meta, so it names one server across its
 * restarts (a proxy to its upstream, as its X-Instance-Id) and no other.
 * Returns 1 while the name is new (made by this call or one before it,
 * and not yet store_self_settled: what a proxy held before it had a name
 * may still be held under none), 0 after, -1 on error.
 */
#define STORE_SELF_ID_LEN	16
int		 store_self_id(struct store *, char id[STORE_SELF_ID_LEN + 1]);
int		 store_self_settled(struct store *);

/*
 * Clock high-water mark: max(time(NULL), stored mark). The mark is only
 * advanced from trustworthy time (elapsed CLOCK_BOOTTIME since a known
 * point, an authority's signed iat), never from the raw wall clock, so a
 * transient forward jump of the wall clock does not stick.
 */
int64_t		 store_now(struct store *);
int		 store_clock_advance(struct store *, int64_t now);
/* Advance the mark by real elapsed time (the uplink's and issuer's tick). */
int		 store_clock_tick(struct store *);
/*
 * The seat clock, unix seconds: every seat and grant time is on it. In a
 * boot it runs with CLOCK_BOOTTIME from an anchor the writer's first tick
 * sets (the later of the last value and the wall clock), so no wall-clock
 * jump, either way, moves a seat's or a grant's end, and a restart loses
 * no time; across a reboot it goes on from the later of the two.
 */
int64_t		 store_seat_now(struct store *);
int64_t		 store_seat_now_ms(struct store *);	/* the same, in ms */

/*
 * Lease time: a lease is valid for life_ms of
 * CLOCK_BOOTTIME after its receipt in this boot, whatever the wall clock
 * says, and due for refresh after refresh_ms (or earlier, once the wall
 * clock passes its rat). Only a lease received in an
 * earlier boot (or stored before receipts were recorded) falls back to its
 * signed exp and rat against store_now.
 */
struct store_lease_time {
	int64_t		 exp, rat;	/* signed, unix s (other boot) */
	unsigned char	 boot[16];	/* boot id at receipt */
	int64_t		 recv_ms;	/* CLOCK_BOOTTIME at receipt */
	int64_t		 life_ms;	/* valid this long after receipt */
	int64_t		 refresh_ms;	/* refresh due this long after it */
};
/* "Now" for the rule: one clock_gettime plus store_now. */
struct store_clock {
	unsigned char	 boot[16];	/* zero if the boot id is unknown */
	int64_t		 boot_ms;
	int64_t		 wall;		/* store_now */
};
#define STORE_LEASE_EXPIRED	0
#define STORE_LEASE_DUE		1	/* valid, refresh_at passed */
#define STORE_LEASE_FRESH	2
/* Longest lease a proxy accepts (exp - iat), and the authority signs. */
#define STORE_LEASE_MAX_S	(400LL * 86400)

void	store_clock_read(struct store *, struct store_clock *);
/*
 * A deadline set at most max_s after the then "now" (a rejection's until)
 * still stands: one set while the clock was ahead, or seen with the clock
 * set back, cannot last longer than max_s from now.
 */
static inline int
store_until_live(int64_t until, int64_t now, int64_t max_s)
{
	return until > now && until - now <= max_s;
}
/*
 * Anchor a lease at receipt (now): its life and refresh are what is left
 * of exp - iat and rat - iat after age_s seconds (0 for a lease just
 * received; the wall-clock age for an import, see cli_cache.c).
 */
void	store_lease_anchor(const struct store_clock *, int64_t iat,
	    int64_t rat, int64_t exp, int64_t age_s, struct store_lease_time *);
int	store_lease_state(const struct store_lease_time *,
	    const struct store_clock *);

/* ---- leases (sha256(key) -> lease time + token) ---- */
/*
 * Copies the token into buf (NUL terminated); returns its length. t (may
 * be NULL) gets the lease's receipt and times.
 */
int	store_lease_get(struct store *, const unsigned char sha[32],
	    char *buf, size_t bufsz, struct store_lease_time *t);
int	store_lease_put(struct store *, const unsigned char sha[32],
	    const char *tok, size_t len, const struct store_lease_time *t);
/* The same for a lease the uplink or issuer caches (store/lease.c). */
int	store_lease_cache(struct store *, const unsigned char sha[32],
	    const char *tok, size_t len, const struct store_lease_time *t);
int	store_lease_del(struct store *, const unsigned char sha[32]);
/* Seconds of validity left at clk, by the rule of store_lease_state. */
int64_t	store_lease_left(const struct store_lease_time *,
	    const struct store_clock *);
/* Leases in the store, those not STORE_LEASE_EXPIRED at clk (status). */
struct store_lease_counts {
	uint64_t	 total, valid;
	int64_t		 first_left_s;	/* least time left of a valid one; -1 */
};
int	store_lease_count(struct store *, const struct store_clock *clk,
	    struct store_lease_counts *);
/*
 * Bounded pieces of a count (the stats gauge; see store/lease.c): one
 * step of at most max records after pos, the O(1) entry count, and "is
 * any lease valid" within the first max records (1 yes, 0 no, -1 unsure).
 */
int	store_lease_count_step(struct store *, const struct store_clock *,
	    unsigned char pos[32], int *mid, size_t max,
	    struct store_lease_counts *acc);
uint64_t store_lease_entries(struct store *);
int	store_lease_any_valid(struct store *, const struct store_clock *,
	    size_t max);
/* n leases in one transaction (bulk loads: bench/mkleases). */
struct store_lease_rec {
	unsigned char		 sha[32];
	const char		*tok;
	size_t			 len;
	struct store_lease_time	 t;
};
int	store_lease_put_many(struct store *, const struct store_lease_rec *,
	    size_t n);
/* Bytes of the map in use and the map size (metrics). */
int	store_size(struct store *, uint64_t *used, uint64_t *max);
/* Iterate all leases (cache export). cb returns non-zero to stop. */
int	store_lease_foreach(struct store *,
	    int (*cb)(const unsigned char sha[32], const char *tok, size_t len,
	    void *arg), void *arg);

/* ---- rejections (sha256(key) -> reason, until) ---- */
int	store_reject_get(struct store *, const unsigned char sha[32],
	    char *reason, size_t rsz, int64_t *until);
/*
 * Also prunes, in the same transaction, rows expired by now and the
 * oldest beyond max, so the table never holds more than max rows.
 */
int	store_reject_put(struct store *, const unsigned char sha[32],
	    const char *reason, int64_t until, int64_t now, uint64_t max);
int	store_reject_del(struct store *, const unsigned char sha[32]);
/* The same pruning alone (the uplink's tick: expired rows go on time). */
int	store_reject_prune(struct store *, int64_t now, uint64_t max);
int	store_reject_count(struct store *, uint64_t *n);

/* ---- key registry (authority) ---- */
#define STORE_KEY_NAME_MAX	64	/* a key's name: 1-64 characters */
struct store_key {
	char		 kid[TOKEN_KID_LEN + 1];
	char		 name[STORE_KEY_NAME_MAX + 1];
	int		 role;			/* enum lease_role */
	char		 products[TOKEN_MAX_PRODUCTS][TOKEN_PRODUCT_MAX + 1];
	int		 n_products;
	int64_t		 expires;		/* unix s, 0 = never */
	int		 revoked;
	int64_t		 created;
	int64_t		 seats;			/* seat limit, 0 = none */
};
int	store_key_put(struct store *, const unsigned char sha[32],
	    const struct store_key *);
int	store_key_get(struct store *, const unsigned char sha[32],
	    struct store_key *);
/* Revoke by exact match of the 16 hex id; STORE_ENOTFOUND if none. */
int	store_key_revoke(struct store *, const char *kid);
int	store_key_foreach(struct store *,
	    int (*cb)(const struct store_key *, void *), void *arg);

/* ---- usage (records: usage_rec.h) ---- */
/*
 * Append recs to the spool (proxy) or the ledger (authority, ledger != 0)
 * in ONE durable write transaction, skipping any whose (kid, id) is
 * already known. dup[i] is set to 1 for each skipped record.
 * Returns 0 (committed and synced), STORE_EFULL (nothing kept) or -1.
 */
int	store_usage_append(struct store *, const struct usage_rec *recs,
	    int n, int ledger, unsigned char *dup);
/* Oldest up to max spooled records; seqs[i] identifies recs[i]. */
int	store_spool_peek(struct store *, struct usage_rec *recs,
	    uint64_t *seqs, int max);
/* Delete forwarded records and count them in meta "forwarded". */
int	store_spool_delete(struct store *, const uint64_t *seqs, int n);
int	store_spool_stats(struct store *, uint64_t *pending,
	    uint64_t *forwarded);
/*
 * De-duplication: a compact index of hash(key_id, id) in generations, kept
 * at least secs after acceptance (usage.dedup_window; 0 = until the store
 * runs short) and at most a quarter longer. A full store drops the oldest
 * generation before any usage is refused.
 */
void	 store_usage_window(struct store *, int64_t secs);
/* Entries dropped inside their window to make room since the last call. */
uint64_t store_dedup_pruned(struct store *);
/* Entries in the index and the bytes of the pages that hold them. */
int	 store_dedup_stat(struct store *, uint64_t *entries, uint64_t *bytes);
/* Ledger totals (usage_rec.h) per (kid, product, metric), sorted. */
int	store_ledger_totals(struct store *, struct usage_total **out,
	    size_t *n);	/* *out is malloc'd */

#endif

/* store.h - the one LMDB environment: leases, rejections, usage, keys. */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_SHA_LEN	32

struct store;

/* Errors: -1 generic, STORE_EFULL map or disk full, STORE_ENOTFOUND. */
#define STORE_ENOTFOUND	(-2)
#define STORE_EFULL	(-3)

#define STORE_RDONLY	0x1	/* CLI readers (keys list, usage, cache export) */

/*
 * Open (creating the directory and env if needed unless STORE_RDONLY) the
 * environment in dir with map size max_size. Opens every named database.
 * Clears stale reader slots (mdb_reader_check). Safe to call in several
 * processes at once; never call before fork and use after it.
 */
struct store	*store_open(const char *dir, uint64_t max_size, int flags,
		    char *err, size_t errlen);
void		 store_close(struct store *);
int		 store_reader_check(struct store *);	/* returns # cleared */

/*
 * One read snapshot for a run of single-value getters (store_now,
 * store_*_get): one transaction instead of one each. Writes in between are
 * not seen until store_snapshot_end. Iterators open their own.
 */
int		 store_snapshot(struct store *);
void		 store_snapshot_end(struct store *);

/* Clock high-water mark: max(time(NULL), stored mark). */
int64_t		 store_now(struct store *);
int		 store_clock_advance(struct store *, int64_t now);

/* ---- leases (sha256(key) -> token) ---- */
/* Copies the token into buf (NUL terminated); returns its length. */
int	store_lease_get(struct store *, const unsigned char sha[32],
	    char *buf, size_t bufsz);
/* exp = the token's expires_at, kept beside it for store_lease_count. */
int	store_lease_put(struct store *, const unsigned char sha[32],
	    const char *tok, size_t len, int64_t exp);
int	store_lease_del(struct store *, const unsigned char sha[32]);
/* Count of leases with exp > now (for status). */
int	store_lease_count(struct store *, int64_t now, uint64_t *total,
	    uint64_t *valid);
/* Iterate all leases (cache export). cb returns non-zero to stop. */
int	store_lease_foreach(struct store *,
	    int (*cb)(const unsigned char sha[32], const char *tok, size_t len,
	    void *arg), void *arg);

/* ---- rejections (sha256(key) -> reason, until) ---- */
int	store_reject_get(struct store *, const unsigned char sha[32],
	    char *reason, size_t rsz, int64_t *until);
int	store_reject_put(struct store *, const unsigned char sha[32],
	    const char *reason, int64_t until);
int	store_reject_del(struct store *, const unsigned char sha[32]);

/* ---- key registry (authority) ---- */
struct store_key {
	char		 kid[17];
	char		 name[65];
	int		 role;			/* enum lease_role */
	char		 products[16][33];
	int		 n_products;
	int64_t		 expires;		/* unix s, 0 = never */
	int		 revoked;
	int64_t		 created;
};
int	store_key_put(struct store *, const unsigned char sha[32],
	    const struct store_key *);
int	store_key_get(struct store *, const unsigned char sha[32],
	    struct store_key *);
/* Revoke by exact match of the 16 hex id; STORE_ENOTFOUND if none. */
int	store_key_revoke(struct store *, const char *kid);
int	store_key_foreach(struct store *,
	    int (*cb)(const struct store_key *, void *), void *arg);

/* ---- usage ---- */
struct usage_rec {
	char		 kid[17];
	char		 id[65];
	char		 product[33];
	char		 metric[33];
	double		 quantity;
	char		 ts[40];		/* RFC 3339 as received */
};
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
/* Ledger totals per (kid, product, metric), sorted. */
struct usage_total {
	char		 kid[17];
	char		 product[33];
	char		 metric[33];
	double		 quantity;
	uint64_t	 records;
};
int	store_ledger_totals(struct store *, struct usage_total **out,
	    size_t *n);	/* *out is malloc'd */

#endif

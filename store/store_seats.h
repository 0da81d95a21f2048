/*
 * store_seats.h - seats and grants (floating licenses) in the store.
 *
 * Three tables, all keyed by key_id (16 hex) first so that one key's rows
 * are adjacent:
 *   seats     key_id + instance -> expires   instances served here
 *   grants    key_id + holder [+ instance] -> seats, expires   set aside
 *             for proxies: the holder is the proxy's key_id, the instance
 *             its X-Instance-Id, so proxies sharing one key hold one grant
 *             each (a proxy that sends none holds the key_id's own row)
 *   mygrants  key_id            -> seats, expires, total   (a proxy's own
 *             grant from its upstream; total -1 = the key has no limit)
 * Only the process that writes leases (issuer, uplink) claims seats, and a
 * claim is one write transaction: count, check and take together.
 */
#ifndef STORE_SEATS_H
#define STORE_SEATS_H

#include <stdint.h>

struct store;

#define STORE_SEATS_NOLIMIT	(-1)	/* mygrant total of a key without one */

/* One claim on kid's seats: an instance's seat or a holder's grant. */
struct store_claim {
	const char	*kid;
	const char	*instance;	/* an instance seat (want 1), or NULL */
	const char	*holder;	/* a grant to this key_id, or NULL */
	const char	*holder_ins;	/* the holding proxy's instance, or NULL */
	int		 takeover;	/* it held the holder's unnamed row */
	int64_t		 seq;		/* the proxy's request number; 0: none */
	int64_t		 want;
	int64_t		 cap;		/* seats this server may hand out */
	int64_t		 expires;	/* of the row taken or renewed */
	int64_t		 now;
};

struct store_seat_use {
	int64_t		 got;		/* what the claimant holds now */
	int64_t		 used;		/* live instance seats + grants */
	int64_t		 instances;	/* live instance seats */
	int64_t		 granted;	/* live grants given out */
	int64_t		 earliest;	/* first instance seat to expire; 0 */
};

/*
 * Take or renew within cap - (everyone else's live seats and grants):
 * an instance gets its seat or loses the one it had (got 0), a holder gets
 * min(want, free). Expired rows of kid are dropped on the way.
 */
int	store_seat_claim(struct store *, const struct store_claim *,
	    struct store_seat_use *);
/* Live use of kid at now (read only). */
int	store_seat_use(struct store *, const char *kid, int64_t now,
	    struct store_seat_use *);
/* Free one row; 0 also when there was none. */
int	store_seat_release(struct store *, const char *kid,
	    const char *instance);
/*
 * kid's grant to holder's instance ins, or every one of holder's (NULL);
 * STORE_ENOTFOUND when there was none.
 */
int	store_grant_release(struct store *, const char *kid,
	    const char *holder, const char *ins);
/* Drop every expired row (the writer's tick); returns rows dropped. */
int	store_seat_prune(struct store *, int64_t now);

/* kid NULL walks every key; cb returns non-zero to stop. */
int	store_seat_foreach(struct store *, const char *kid,
	    int (*cb)(const char *kid, const char *instance, int64_t expires,
	    void *), void *arg);
int	store_grant_foreach(struct store *, const char *kid,
	    int (*cb)(const char *kid, const char *holder, const char *instance,
	    int64_t seats, int64_t expires, void *), void *arg);

struct store_mygrant {
	int64_t		 seats;
	int64_t		 expires;
	int64_t		 total;		/* STORE_SEATS_NOLIMIT: none */
};
int	store_mygrant_get(struct store *, const char *kid,
	    struct store_mygrant *);
/* g NULL deletes the row. */
int	store_mygrant_put(struct store *, const char *kid,
	    const struct store_mygrant *g);
int	store_mygrant_foreach(struct store *,
	    int (*cb)(const char *kid, const struct store_mygrant *, void *),
	    void *arg);

#endif

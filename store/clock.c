/*
 * clock.c - the store's clock: the high-water mark in meta "clock", this
 * boot's id, and the one rule (store_lease_state) that says whether a
 * lease is fresh, due for refresh or expired.
 */
#include <string.h>
#include <time.h>

#include "store_int.h"

/* ---- clock ---- */

/*
 * The mark changes only by a commit, and every commit changes the txn id:
 * under a snapshot whose id we already read it in, the mark is known (a
 * cached GET's one B-tree read, skipped).
 */
int64_t
store_now(struct store *s)
{
	MDB_txn		*txn;
	uint64_t	 mark = 0, id;
	int64_t		 now = time(NULL);

	if (store_rbegin(s, &txn) != 0)
		return now;
	id = (uint64_t)mdb_txn_id(txn) + 1;
	if (txn == s->snap && id == s->mark_txnid)
		mark = s->mark;
	else if (store_meta_get(s, txn, "clock", &mark) != 0)
		mark = 0;
	else if (txn == s->snap) {
		s->mark = mark;
		s->mark_txnid = id;
	}
	store_rend(s, txn);
	return (int64_t)mark > now ? (int64_t)mark : now;
}

int
store_clock_advance(struct store *s, int64_t now)
{
	MDB_txn		*txn;
	uint64_t	 mark;
	int		 ret;

	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((ret = store_meta_get(s, txn, "clock", &mark)) != 0)
		goto fail;
	if (now <= (int64_t)mark) {
		mdb_txn_abort(txn);
		return 0;
	}
	if ((ret = store_meta_put(s, txn, "clock", (uint64_t)now)) != 0)
		goto fail;
	return store_commit(txn, "clock");
fail:
	mdb_txn_abort(txn);
	return ret;
}

/*
 * The mark follows elapsed CLOCK_BOOTTIME from the mark this process first
 * saw; only a fresh store seeds it from the wall clock. So the wall clock
 * jumping (either way) never moves it, and it only ever lags real time.
 */
int
store_clock_tick(struct store *s)
{
	MDB_txn		*txn;
	uint64_t	 mark = 0;

	if (s->trust_boot == 0) {
		if (store_rbegin(s, &txn) == 0) {
			if (store_meta_get(s, txn, "clock", &mark) != 0)
				mark = 0;
			store_rend(s, txn);
		}
		s->trust_wall = mark != 0 ? (int64_t)mark : time(NULL);
		s->trust_boot = proc_boot_ms();
	}
	return store_clock_advance(s, s->trust_wall +
	    (proc_boot_ms() - s->trust_boot) / 1000);
}

/* ---- lease time: the rule of store.h ---- */

static const unsigned char no_boot[PROC_BOOT_ID_LEN];
_Static_assert(sizeof(((struct store_clock *)0)->boot) == PROC_BOOT_ID_LEN &&
    sizeof(((struct store_lease_time *)0)->boot) == PROC_BOOT_ID_LEN,
    "store.h's boot ids are proc_boot_id's");

void
store_clock_read(struct store *s, struct store_clock *c)
{
	memcpy(c->boot, s->boot, sizeof(c->boot));
	c->boot_ms = proc_boot_ms();
	c->wall = store_now(s);
}

void
store_lease_anchor(const struct store_clock *c, int64_t iat, int64_t rat,
    int64_t exp, int64_t age_s, struct store_lease_time *t)
{
	int64_t life = exp - iat - age_s, refresh = rat - iat - age_s;

	memset(t, 0, sizeof(*t));
	t->exp = exp;
	t->rat = rat;
	memcpy(t->boot, c->boot, sizeof(t->boot));
	t->recv_ms = c->boot_ms;
	t->life_ms = life > 0 ? life * 1000 : 0;
	t->refresh_ms = refresh > 0 ? refresh * 1000 : 0;
}

/* Seconds of validity left at c (0 once expired), by the same rule. */
int64_t
store_lease_left(const struct store_lease_time *t,
    const struct store_clock *c)
{
	int64_t left;

	if (memcmp(t->boot, no_boot, sizeof(no_boot)) != 0 &&
	    memcmp(t->boot, c->boot, sizeof(c->boot)) == 0)
		left = (t->life_ms - (c->boot_ms - t->recv_ms)) / 1000;
	else
		left = t->exp - c->wall;
	return left > 0 ? left : 0;
}

int
store_lease_state(const struct store_lease_time *t,
    const struct store_clock *c)
{
	int64_t age;

	if (memcmp(t->boot, no_boot, sizeof(no_boot)) != 0 &&
	    memcmp(t->boot, c->boot, sizeof(c->boot)) == 0) {
		/*
		 * Received in this boot: the wall clock cannot extend it. It
		 * may only make a refresh come early (harmless), so refresh_at
		 * holds when clocks agree and a clock set back, or a lease
		 * dated ahead, cannot postpone it.
		 */
		age = c->boot_ms - t->recv_ms;
		if (age < 0 || age >= t->life_ms)
			return STORE_LEASE_EXPIRED;
		return age >= t->refresh_ms || c->wall >= t->rat ?
		    STORE_LEASE_DUE : STORE_LEASE_FRESH;
	}
	if (c->wall >= t->exp)
		return STORE_LEASE_EXPIRED;
	return c->wall >= t->rat ? STORE_LEASE_DUE : STORE_LEASE_FRESH;
}


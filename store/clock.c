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

/* Raise the mark to now within txn; *changed says whether it moved. */
static int
clock_mark(struct store *s, MDB_txn *txn, int64_t now, int *changed)
{
	uint64_t	mark;
	int		ret;

	*changed = 0;
	if ((ret = store_meta_get(s, txn, "clock", &mark)) != 0 ||
	    now <= (int64_t)mark)
		return ret;
	*changed = 1;
	return store_meta_put(s, txn, "clock", (uint64_t)now);
}

int
store_clock_advance(struct store *s, int64_t now)
{
	MDB_txn		*txn;
	int		 ret, changed;

	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((ret = clock_mark(s, txn, now, &changed)) != 0 || !changed) {
		mdb_txn_abort(txn);
		return ret;
	}
	return store_commit(txn, "clock");
}

static int	seat_tick(struct store *, MDB_txn *);

/*
 * The mark follows elapsed CLOCK_BOOTTIME from the mark this process first
 * saw; only a fresh store seeds it from the wall clock. So the wall clock
 * jumping (either way) never moves it, and it only ever lags real time.
 * The seat clock is kept in the same transaction.
 */
int
store_clock_tick(struct store *s)
{
	MDB_txn		*txn;
	uint64_t	 mark = 0;
	int		 ret, changed;

	if (s->trust_boot == 0) {
		if (store_rbegin(s, &txn) == 0) {
			if (store_meta_get(s, txn, "clock", &mark) != 0)
				mark = 0;
			store_rend(s, txn);
		}
		s->trust_wall = mark != 0 ? (int64_t)mark : time(NULL);
		s->trust_boot = proc_boot_ms();
	}
	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((ret = clock_mark(s, txn, s->trust_wall + (proc_boot_ms() -
	    s->trust_boot) / 1000, &changed)) != 0 ||
	    (ret = seat_tick(s, txn)) != 0) {
		mdb_txn_abort(txn);
		return ret;
	}
	return store_commit(txn, "clock");
}

/* ---- the seat clock ---- */

/*
 * meta "seat_ms", "seat_boot", "seat_bms": S at this boot's anchor, the
 * boot (the first 8 bytes of its id) and CLOCK_BOOTTIME then; "seat_last":
 * S at the writer's last tick, what a reboot starts from.
 */
struct seat_anchor {
	uint64_t	 s_ms, boot, bms, last;
};

static uint64_t
seat_boot(const struct store *s)
{
	uint64_t b = 0;

	memcpy(&b, s->boot, sizeof(b));
	return b;
}

static int
seat_anchor_get(struct store *s, MDB_txn *txn, struct seat_anchor *a)
{
	return store_meta_get(s, txn, "seat_ms", &a->s_ms) != 0 ||
	    store_meta_get(s, txn, "seat_boot", &a->boot) != 0 ||
	    store_meta_get(s, txn, "seat_bms", &a->bms) != 0 ||
	    store_meta_get(s, txn, "seat_last", &a->last) != 0 ? -1 : 0;
}

/*
 * S in this boot: elapsed CLOCK_BOOTTIME since the anchor. Before the
 * writer anchored this boot (an unknown boot id too), the last S known
 * or the wall clock, whichever is later: time spent down is seen only
 * through the wall clock.
 */
static int64_t
seat_ms(const struct store *s, const struct seat_anchor *a, int64_t boot_ms)
{
	int64_t wall = (int64_t)time(NULL) * 1000;

	if (a->boot != 0 && a->boot == seat_boot(s) &&
	    boot_ms >= (int64_t)a->bms)
		return (int64_t)a->s_ms + boot_ms - (int64_t)a->bms;
	return (int64_t)a->last > wall ? (int64_t)a->last : wall;
}

int64_t
store_seat_now_ms(struct store *s)
{
	struct seat_anchor	 a = { 0, 0, 0, 0 };
	MDB_txn			*txn;

	if (store_rbegin(s, &txn) == 0) {
		if (seat_anchor_get(s, txn, &a) != 0)
			memset(&a, 0, sizeof(a));
		store_rend(s, txn);
	}
	return seat_ms(s, &a, proc_boot_ms());
}

int64_t
store_seat_now(struct store *s)
{
	return store_seat_now_ms(s) / 1000;
}

/* The writer's: anchor this boot once, then note S for the next boot. */
static int
seat_tick(struct store *s, MDB_txn *txn)
{
	struct seat_anchor	a;
	int64_t			boot_ms = proc_boot_ms(), now;
	int			ret;

	if ((ret = seat_anchor_get(s, txn, &a)) != 0)
		return ret;
	now = seat_ms(s, &a, boot_ms);
	if ((a.boot != seat_boot(s) || seat_boot(s) == 0) &&
	    ((ret = store_meta_put(s, txn, "seat_ms", (uint64_t)now)) != 0 ||
	    (ret = store_meta_put(s, txn, "seat_boot", seat_boot(s))) != 0 ||
	    (ret = store_meta_put(s, txn, "seat_bms", (uint64_t)boot_ms)) != 0))
		return ret;
	return store_meta_put(s, txn, "seat_last", (uint64_t)now);
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


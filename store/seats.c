/*
 * seats.c - seat and grant rows (store_seats.h). A claim counts, checks
 * and takes in one write transaction, and LMDB lets one writer at a time
 * in, so two claims on a key's last seat can never both see it free.
 *
 * Row key: key_id (16 bytes) then the instance, or the holder and its
 * instance (a grant row of a proxy that names none ends at the holder);
 * value: a version byte then big-endian 64-bit integers (expires; seats,
 * expires[, seq]; seats, expires, total). A grant's seq is the last
 * request's number from a proxy that numbers them; rows of others have
 * none, and so keep the shape older versions read.
 */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "store_int.h"
#include "store_seats.h"

#define SEATS_WHOMAX	(TOKEN_KID_LEN + TOKEN_INSTANCE_MAX)
#define SEATS_NVALS	3	/* most integers in a value (mygrants, numbered grants) */

/* A row's value: nval integers after the version byte. */
struct seats_val {
	unsigned char	 b[1 + 8 * SEATS_NVALS];
};

static size_t
seats_key(unsigned char *buf, const char *kid, const char *who)
{
	size_t wl = who != NULL ? strlen(who) : 0;

	if (strlen(kid) != TOKEN_KID_LEN || wl > SEATS_WHOMAX)
		return 0;
	memcpy(buf, kid, TOKEN_KID_LEN);
	memcpy(buf + TOKEN_KID_LEN, who != NULL ? who : "", wl);
	return TOKEN_KID_LEN + wl;
}

static MDB_val
seats_pack(struct seats_val *sv, int n, const int64_t *x)
{
	MDB_val	v = { 1 + 8 * (size_t)n, sv->b };
	int	i;

	sv->b[0] = STORE_VERSION;
	for (i = 0; i < n; i++)
		be64_put(sv->b + 1 + 8 * i, (uint64_t)x[i]);
	return v;
}

/* A grant row's who: the holder, then its instance (NULL: none). */
static int
seats_who(char who[SEATS_WHOMAX + 1], const char *holder, const char *ins)
{
	if (strlen(holder) != TOKEN_KID_LEN)
		return -1;
	return (size_t)snprintf(who, SEATS_WHOMAX + 1, "%s%s", holder,
	    ins != NULL ? ins : "") > SEATS_WHOMAX ? -1 : 0;
}

/* -1 for a value of another shape: such a row is skipped, never trusted. */
static int
seats_unpack(const MDB_val *v, int n, int64_t *x)
{
	const unsigned char	*p = v->mv_data;
	int			 i;

	if (v->mv_size != 1 + 8 * (size_t)n || p[0] != STORE_VERSION)
		return -1;
	for (i = 0; i < n; i++)
		x[i] = (int64_t)be64_get(p + 1 + 8 * i);
	return 0;
}

/* A grant row: seats, expires and seq (0 for a row without one). */
static int
seats_unpack_grant(const MDB_val *v, int64_t x[3])
{
	x[2] = 0;
	return seats_unpack(v, 3, x) == 0 ? 0 : seats_unpack(v, 2, x);
}

/* A row of table grants (or else seats) into x; -1 for another shape. */
static int
seats_unpack_row(const MDB_val *v, int grants, int64_t x[3])
{
	return grants ? seats_unpack_grant(v, x) : seats_unpack(v, 1, x);
}

/* -1 when the table is absent (a read-only open of an older store). */
static int
seats_dbi(struct store *s, enum store_db db, MDB_dbi *dbi)
{
	if (!HAVE(s, db))
		return -1;
	*dbi = s->dbi[db];
	return 0;
}

static int
seats_dbis(struct store *s, MDB_dbi *ds, MDB_dbi *dg)
{
	return seats_dbi(s, DB_SEATS, ds) == -1 ||
	    seats_dbi(s, DB_GRANTS, dg) == -1 ? -1 : 0;
}

/*
 * Count kid's live rows of one table into u, leaving out skip (the
 * claimant, whose row is rewritten); expired rows go when prune is set.
 */
static int
seats_scan(MDB_txn *txn, MDB_dbi dbi, int grants, const char *kid,
    const char *skip, int64_t now, int prune, struct store_seat_use *u)
{
	MDB_cursor	*cur;
	MDB_val		 k = { TOKEN_KID_LEN, (void *)kid }, v;
	int64_t		 x[3];
	size_t		 sl = skip != NULL ? strlen(skip) : 0;
	int		 rc, op = MDB_SET_RANGE;

	if ((rc = mdb_cursor_open(txn, dbi, &cur)) != 0)
		return store_err(rc, "seats");
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size < TOKEN_KID_LEN || memcmp(k.mv_data, kid,
		    TOKEN_KID_LEN) != 0)
			break;
		if (seats_unpack_row(&v, grants, x) == -1)
			continue;
		if (x[grants] <= now) {
			if (prune && (rc = mdb_cursor_del(cur, 0)) != 0)
				break;
			continue;
		}
		if (skip != NULL && k.mv_size == TOKEN_KID_LEN + sl &&
		    memcmp((char *)k.mv_data + TOKEN_KID_LEN, skip, sl) == 0)
			continue;
		if (grants)
			u->granted += x[0];
		else if (u->instances++ == 0 || x[0] < u->earliest)
			u->earliest = x[0];
	}
	mdb_cursor_close(cur);
	return rc == 0 || rc == MDB_NOTFOUND ? 0 : store_err(rc, "seats");
}

/*
 * A numbered grant request older than the last one applied to its row
 * arrived late (held up in the network past the proxy's timeout, while a
 * newer one got through): applying it would undo the newer, a give-back
 * undoing a raise the proxy now serves out of. It changes nothing; the
 * answer is what the row holds. 1 if stale, with u filled.
 */
static int
seats_stale(MDB_txn *txn, MDB_dbi dbi, const struct store_claim *c,
    const MDB_val *k, struct store_seat_use *u)
{
	MDB_val	v;
	int64_t	x[3];

	if (c->instance != NULL || c->seq <= 0 ||
	    mdb_get(txn, dbi, (MDB_val *)k, &v) != 0 ||
	    seats_unpack_grant(&v, x) == -1 || x[1] <= c->now ||
	    x[2] <= c->seq)
		return 0;
	u->got = x[0];
	u->granted += x[0];
	u->used = u->instances + u->granted;
	return 1;
}

/* The claimant's row: taken or renewed, or gone when nothing is free. */
static int
seats_take(MDB_txn *txn, MDB_dbi dbi, const struct store_claim *c,
    const char *who, struct store_seat_use *u)
{
	unsigned char		 kb[TOKEN_KID_LEN + SEATS_WHOMAX];
	struct seats_val	 sv;
	MDB_val			 k, v;
	int64_t			 x[3], free;
	int			 rc, inst = c->instance != NULL;

	k.mv_data = kb;
	if ((k.mv_size = seats_key(kb, c->kid, who)) == 0)
		return -1;
	if (seats_stale(txn, dbi, c, &k, u))
		return 0;
	free = c->cap - u->instances - u->granted;
	u->got = free <= 0 ? 0 : c->want < free ? c->want : free;
	if (u->got > 0) {
		x[0] = inst ? c->expires : u->got;
		x[1] = c->expires;
		x[2] = c->seq;
		v = seats_pack(&sv, inst ? 1 : c->seq > 0 ? 3 : 2, x);
		rc = mdb_put(txn, dbi, &k, &v, 0);
	} else if ((rc = mdb_del(txn, dbi, &k, NULL)) == MDB_NOTFOUND)
		rc = 0;
	if (rc != 0)
		return store_err(rc, "seats");
	if (inst && u->got > 0 && (u->instances++ == 0 ||
	    c->expires < u->earliest))
		u->earliest = c->expires;
	else if (!inst)
		u->granted += u->got;
	u->used = u->instances + u->granted;
	return 0;
}

/*
 * A proxy that held its grant in the holder's unnamed row before it had a
 * name (an upgrade) takes that row over with its first claim by name,
 * when it says so and has no named row yet; else the row would hold its
 * seats against it until seat_grant_ttl. Only then: an older proxy of
 * the same key may still be using the row.
 */
static int
seats_adopt(MDB_txn *txn, MDB_dbi dbi, const struct store_claim *c,
    const char *who)
{
	unsigned char	 kb[TOKEN_KID_LEN + SEATS_WHOMAX];
	MDB_val		 k = { 0, kb }, v;
	int		 rc;

	if (!c->takeover || c->holder == NULL || c->holder_ins == NULL ||
	    *c->holder_ins == '\0')
		return 0;
	k.mv_size = seats_key(kb, c->kid, who);
	if ((rc = mdb_get(txn, dbi, &k, &v)) != MDB_NOTFOUND)
		return rc == 0 ? 0 : store_err(rc, "seats");
	k.mv_size = seats_key(kb, c->kid, c->holder);
	if ((rc = mdb_del(txn, dbi, &k, NULL)) == 0)
		log_info("grant of %s: instance %s of %s takes over its "
		    "unnamed grant", c->kid, c->holder_ins, c->holder);
	return rc == 0 || rc == MDB_NOTFOUND ? 0 : store_err(rc, "seats");
}

int
store_seat_claim(struct store *s, const struct store_claim *c,
    struct store_seat_use *u)
{
	MDB_txn	*txn;
	MDB_dbi	 ds, dg;
	char	 who[SEATS_WHOMAX + 1] = "";
	int	 ret;

	memset(u, 0, sizeof(*u));
	if ((c->instance == NULL) == (c->holder == NULL) ||
	    strlen(c->kid) != TOKEN_KID_LEN || seats_dbis(s, &ds, &dg) == -1)
		return -1;
	if (c->holder != NULL && seats_who(who, c->holder, c->holder_ins) == -1)
		return -1;
	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((ret = seats_adopt(txn, dg, c, who)) == 0 &&
	    (ret = seats_scan(txn, ds, 0, c->kid, c->instance, c->now, 1,
	    u)) == 0 && (ret = seats_scan(txn, dg, 1, c->kid, c->holder !=
	    NULL ? who : NULL, c->now, 1, u)) == 0 && (ret = seats_take(txn,
	    c->instance != NULL ? ds : dg, c, c->instance != NULL ?
	    c->instance : who, u)) == 0)
		return store_commit(txn, "seats");
	mdb_txn_abort(txn);
	return ret;
}

int
store_seat_use(struct store *s, const char *kid, int64_t now,
    struct store_seat_use *u)
{
	MDB_txn	*txn;
	MDB_dbi	 ds, dg;
	int	 ret;

	memset(u, 0, sizeof(*u));
	if (strlen(kid) != TOKEN_KID_LEN || seats_dbis(s, &ds, &dg) == -1)
		return 0;	/* no table yet: nothing held */
	if ((ret = store_begin(s, 0, &txn)) != 0)
		return ret;
	if ((ret = seats_scan(txn, ds, 0, kid, NULL, now, 0, u)) == 0)
		ret = seats_scan(txn, dg, 1, kid, NULL, now, 0, u);
	u->used = u->instances + u->granted;
	mdb_txn_abort(txn);
	return ret;
}

static int
seats_del(struct store *s, enum store_db db, const char *kid,
    const char *who)
{
	unsigned char	 kb[TOKEN_KID_LEN + SEATS_WHOMAX];
	MDB_txn		*txn;
	MDB_dbi		 dbi;
	MDB_val		 k = { 0, kb };
	int		 rc, ret;

	if ((k.mv_size = seats_key(kb, kid, who)) == 0 ||
	    seats_dbi(s, db, &dbi) == -1)
		return -1;
	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((rc = mdb_del(txn, dbi, &k, NULL)) != 0 && rc != MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return store_err(rc, "seats");
	}
	return store_commit(txn, "seats");
}

int
store_seat_release(struct store *s, const char *kid, const char *instance)
{
	return seats_del(s, DB_SEATS, kid, instance);
}

/*
 * Walk the rows of kid (every row when kid is NULL) in one transaction.
 * fn returns 0 to go on, 1 to delete the row (write walks), -1 to stop.
 */
static int
seats_walk(struct store *s, enum store_db db, const char *kid,
    int write, int (*fn)(const MDB_val *, const MDB_val *, void *),
    void *arg)
{
	MDB_txn		*txn;
	MDB_cursor	*cur = NULL;
	MDB_dbi		 dbi;
	MDB_val		 k = { TOKEN_KID_LEN, (void *)kid }, v;
	int		 rc, ret, op = kid != NULL ? MDB_SET_RANGE : MDB_FIRST;

	if (seats_dbi(s, db, &dbi) == -1)
		return 0;	/* an older store read only: no rows */
	if ((ret = store_begin(s, write, &txn)) != 0)
		return ret;
	if ((rc = mdb_cursor_open(txn, dbi, &cur)) != 0)
		goto fail;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (kid != NULL && (k.mv_size < TOKEN_KID_LEN ||
		    memcmp(k.mv_data, kid, TOKEN_KID_LEN) != 0))
			break;
		if ((ret = fn(&k, &v, arg)) < 0)
			break;
		if (ret == 1 && write && (rc = mdb_cursor_del(cur, 0)) != 0)
			goto fail;
	}
	if (rc != 0 && rc != MDB_NOTFOUND)
		goto fail;
	mdb_cursor_close(cur);
	if (write)
		return store_commit(txn, "seats");
	mdb_txn_abort(txn);
	return 0;
fail:
	if (cur != NULL)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return store_err(rc, "seats");
}

struct seats_match {
	const char	*who;		/* holder, or holder and instance */
	size_t		 len;
	int		 exact, n;
};

static int
seats_holder1(const MDB_val *k, const MDB_val *v, void *arg)
{
	struct seats_match	*m = arg;
	size_t			 wl = k->mv_size - TOKEN_KID_LEN;

	(void)v;
	if (wl < m->len || (m->exact && wl != m->len) ||
	    memcmp((char *)k->mv_data + TOKEN_KID_LEN, m->who, m->len) != 0)
		return 0;
	m->n++;
	return 1;
}

int
store_grant_release(struct store *s, const char *kid, const char *holder,
    const char *ins)
{
	struct seats_match	m;
	char			who[SEATS_WHOMAX + 1];
	int			ret;

	if (strlen(kid) != TOKEN_KID_LEN || seats_who(who, holder, ins) == -1)
		return -1;
	m.who = who;
	m.len = strlen(who);
	m.exact = ins != NULL;
	m.n = 0;
	if ((ret = seats_walk(s, DB_GRANTS, kid, 1, seats_holder1, &m)) != 0)
		return ret;
	return m.n > 0 ? 0 : STORE_ENOTFOUND;
}

/* Key to (kid, who) strings; -1 for a key of another shape. */
static int
seats_split(const MDB_val *k, char *kid, char *who)
{
	size_t wl;

	if (k->mv_size < TOKEN_KID_LEN || k->mv_size > TOKEN_KID_LEN +
	    SEATS_WHOMAX)
		return -1;
	wl = k->mv_size - TOKEN_KID_LEN;
	memcpy(kid, k->mv_data, TOKEN_KID_LEN);
	kid[TOKEN_KID_LEN] = '\0';
	memcpy(who, (char *)k->mv_data + TOKEN_KID_LEN, wl);
	who[wl] = '\0';
	return strlen(kid) == TOKEN_KID_LEN && strlen(who) == wl ? 0 : -1;
}

struct seats_prune {
	int64_t	 now;
	int	 grants, n;
};

static int
seats_prune1(const MDB_val *k, const MDB_val *v, void *arg)
{
	struct seats_prune	*p = arg;
	int64_t			 x[3];

	(void)k;
	if (seats_unpack_row(v, p->grants, x) == -1 ||
	    x[p->grants] > p->now)
		return 0;
	p->n++;
	return 1;
}

int
store_seat_prune(struct store *s, int64_t now)
{
	struct seats_prune	p = { now, 0, 0 };
	int			ret;

	if ((ret = seats_walk(s, DB_SEATS, NULL, 1, seats_prune1,
	    &p)) != 0)
		return ret;
	p.grants = 1;
	if ((ret = seats_walk(s, DB_GRANTS, NULL, 1, seats_prune1,
	    &p)) != 0)
		return ret;
	return p.n;
}

struct seats_each {
	int	(*seat)(const char *, const char *, int64_t, void *);
	int	(*grant)(const char *, const char *, const char *, int64_t,
		    int64_t, void *);
	int	(*mine)(const char *, const struct store_mygrant *, void *);
	void	*arg;
};

static int
seats_each1(const MDB_val *k, const MDB_val *v, void *arg)
{
	struct seats_each	*e = arg;
	struct store_mygrant	 g;
	char			 kid[TOKEN_KID_LEN + 1], who[SEATS_WHOMAX + 1];
	char			 holder[TOKEN_KID_LEN + 1];
	int64_t			 x[SEATS_NVALS];

	if (seats_split(k, kid, who) == -1)
		return 0;
	if (e->seat != NULL && seats_unpack(v, 1, x) == 0)
		return e->seat(kid, who, x[0], e->arg) ? -1 : 0;
	if (e->grant != NULL && strlen(who) >= TOKEN_KID_LEN &&
	    seats_unpack_grant(v, x) == 0) {
		memcpy(holder, who, TOKEN_KID_LEN);
		holder[TOKEN_KID_LEN] = '\0';
		return e->grant(kid, holder, who + TOKEN_KID_LEN, x[0], x[1],
		    e->arg) ? -1 : 0;
	}
	if (e->mine != NULL && who[0] == '\0' &&
	    seats_unpack(v, SEATS_NVALS, x) == 0) {
		g.seats = x[0];
		g.expires = x[1];
		g.total = x[2];
		return e->mine(kid, &g, e->arg) ? -1 : 0;
	}
	return 0;
}

int
store_seat_foreach(struct store *s, const char *kid,
    int (*cb)(const char *, const char *, int64_t, void *), void *arg)
{
	struct seats_each e = { cb, NULL, NULL, arg };

	return seats_walk(s, DB_SEATS, kid, 0, seats_each1, &e);
}

int
store_grant_foreach(struct store *s, const char *kid,
    int (*cb)(const char *, const char *, const char *, int64_t, int64_t,
    void *), void *arg)
{
	struct seats_each e = { NULL, cb, NULL, arg };

	return seats_walk(s, DB_GRANTS, kid, 0, seats_each1, &e);
}

int
store_mygrant_foreach(struct store *s,
    int (*cb)(const char *, const struct store_mygrant *, void *), void *arg)
{
	struct seats_each e = { NULL, NULL, cb, arg };

	return seats_walk(s, DB_MYGRANTS, NULL, 0, seats_each1, &e);
}

static int
seats_mine1(const char *kid, const struct store_mygrant *g, void *arg)
{
	(void)kid;
	*(struct store_mygrant *)arg = *g;
	return 1;
}

int
store_mygrant_get(struct store *s, const char *kid, struct store_mygrant *g)
{
	struct seats_each	e = { NULL, NULL, seats_mine1, g };
	int			ret;

	g->seats = -1;
	if (strlen(kid) != TOKEN_KID_LEN)
		return -1;
	/* The walk starts at kid; only a row of exactly kid is its own. */
	ret = seats_walk(s, DB_MYGRANTS, kid, 0, seats_each1, &e);
	if (ret != 0)
		return ret;
	return g->seats < 0 ? STORE_ENOTFOUND : 0;
}

int
store_mygrant_put(struct store *s, const char *kid,
    const struct store_mygrant *g)
{
	unsigned char		 kb[TOKEN_KID_LEN];
	struct seats_val	 sv;
	MDB_txn			*txn;
	MDB_dbi			 dbi;
	MDB_val			 k = { TOKEN_KID_LEN, kb }, v;
	int64_t			 x[SEATS_NVALS];
	int			 rc, ret;

	if (g == NULL)
		return seats_del(s, DB_MYGRANTS, kid, NULL);
	if (seats_key(kb, kid, NULL) == 0 ||
	    seats_dbi(s, DB_MYGRANTS, &dbi) == -1)
		return -1;
	x[0] = g->seats;
	x[1] = g->expires;
	x[2] = g->total;
	v = seats_pack(&sv, SEATS_NVALS, x);
	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((rc = mdb_put(txn, dbi, &k, &v, 0)) != 0) {
		mdb_txn_abort(txn);
		return store_err(rc, "seats");
	}
	return store_commit(txn, "seats");
}

/*
 * lease.c - the cached leases (sha256(key) -> lease time + token) and the
 * cached rejections (sha256(key) -> until, reason), with their expiry
 * index reject_time and the cap on their number.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

#define REJECT_REASON_SZ 256	/* a stored reason and its NUL */

/*
 * ---- leases ----
 * value = exp(8) LEASE_MAGIC(1) rat(8) boot(16) recv_ms(8) life_ms(8)
 * refresh_ms(8) token, integers big-endian. Records of the older layout
 * (exp + token; a token starts with a base64url character, never
 * LEASE_MAGIC) read as received in another boot, due for refresh.
 */
#define LEASE_MAGIC	0x01
#define LEASE_HDR	57
#define LEASE_OLD_HDR	8

/* Parse a record's head into t; returns the token's offset or -1. */
static long
lease_hdr(const MDB_val *v, struct store_lease_time *t)
{
	const unsigned char *b = v->mv_data;

	memset(t, 0, sizeof(*t));
	if (v->mv_size <= LEASE_OLD_HDR)
		return -1;
	t->exp = (int64_t)be64_get(b);
	if (b[8] != LEASE_MAGIC)
		return LEASE_OLD_HDR;
	if (v->mv_size <= LEASE_HDR)
		return -1;
	t->rat = (int64_t)be64_get(b + 9);
	memcpy(t->boot, b + 17, sizeof(t->boot));
	t->recv_ms = (int64_t)be64_get(b + 33);
	t->life_ms = (int64_t)be64_get(b + 41);
	t->refresh_ms = (int64_t)be64_get(b + 49);
	return LEASE_HDR;
}

struct lease_buf {
	char			*buf;
	size_t			 bufsz;
	struct store_lease_time	*t;
};

static int
lease_copy(const MDB_val *v, void *arg)
{
	struct lease_buf	*lb = arg;
	struct store_lease_time	 t;
	long			 off;
	size_t			 len;

	if ((off = lease_hdr(v, &t)) < 0) {
		log_warnx("store: corrupt lease record");
		return -1;
	}
	len = v->mv_size - (size_t)off;
	if (len >= lb->bufsz || len > INT_MAX)
		return -1;
	memcpy(lb->buf, (const char *)v->mv_data + off, len);
	lb->buf[len] = '\0';
	if (lb->t != NULL)
		*lb->t = t;
	return (int)len;
}

int
store_lease_get(struct store *s, const unsigned char sha[32], char *buf,
    size_t bufsz, struct store_lease_time *t)
{
	struct lease_buf	lb = { buf, bufsz, t };
	MDB_val			k = { STORE_SHA_LEN, (void *)sha };

	if (buf == NULL || bufsz == 0)
		return -1;
	return store_read(s, DB_LEASES, &k, lease_copy, &lb);
}

/* The record of store_lease_put into b (len + LEASE_HDR bytes). */
static void
lease_pack(unsigned char *b, const char *tok, size_t len,
    const struct store_lease_time *t)
{
	be64_put(b, (uint64_t)t->exp);
	b[8] = LEASE_MAGIC;
	be64_put(b + 9, (uint64_t)t->rat);
	memcpy(b + 17, t->boot, sizeof(t->boot));
	be64_put(b + 33, (uint64_t)t->recv_ms);
	be64_put(b + 41, (uint64_t)t->life_ms);
	be64_put(b + 49, (uint64_t)t->refresh_ms);
	memcpy(b + LEASE_HDR, tok, len);
}

int
store_lease_put(struct store *s, const unsigned char sha[32], const char *tok,
    size_t len, const struct store_lease_time *t)
{
	MDB_val		 k = { STORE_SHA_LEN, (void *)sha }, v;
	unsigned char	*b;
	int		 ret;

	if (tok == NULL || t == NULL || len == 0 || len > INT_MAX - LEASE_HDR)
		return -1;
	if ((b = malloc(len + LEASE_HDR)) == NULL) {
		log_warn("store: lease");
		return -1;
	}
	lease_pack(b, tok, len, t);
	v.mv_data = b;
	v.mv_size = len + LEASE_HDR;
	ret = store_write1(s, DB_LEASES, &k, &v);
	free(b);
	return ret;
}

/*
 * A lease the uplink or the issuer caches: committed with its data pages
 * flushed but LMDB's meta page written without its own synchronous write
 * (MDB_NOMETASYNC, on this process's handle for this one commit). That is
 * one flush of the two a commit costs on the miss path, twice per proxy
 * miss (the authority's issuer and the proxy's uplink). LMDB stays
 * consistent; what a crash can lose is this commit until the next fully
 * synced one, which the writer's clock tick makes within a second or
 * two. A lost cached lease is fetched again (or re-signed); everything
 * acknowledged to a client that cannot be redone (usage, seats) keeps
 * full durability, and so does cache import.
 */
int
store_lease_cache(struct store *s, const unsigned char sha[32],
    const char *tok, size_t len, const struct store_lease_time *t)
{
	int ret;

	if (mdb_env_set_flags(s->env, MDB_NOMETASYNC, 1) != 0)
		return store_lease_put(s, sha, tok, len, t);
	ret = store_lease_put(s, sha, tok, len, t);
	mdb_env_set_flags(s->env, MDB_NOMETASYNC, 0);
	return ret;
}

int
store_lease_del(struct store *s, const unsigned char sha[32])
{
	MDB_val k = { STORE_SHA_LEN, (void *)sha };

	return store_write1(s, DB_LEASES, &k, NULL);
}

struct lease_count {
	const struct store_clock	*clk;
	struct store_lease_counts	 n;
};

static int
lease_count1(const MDB_val *k, const MDB_val *v, void *arg)
{
	struct lease_count	*lc = arg;
	struct store_lease_time	 t;
	int64_t			 left;

	(void)k;
	lc->n.total++;
	if (lease_hdr(v, &t) < 0 ||
	    store_lease_state(&t, lc->clk) == STORE_LEASE_EXPIRED)
		return 0;
	lc->n.valid++;
	left = store_lease_left(&t, lc->clk);
	if (lc->n.first_left_s < 0 || left < lc->n.first_left_s)
		lc->n.first_left_s = left;
	return 0;
}

int
store_lease_count(struct store *s, const struct store_clock *clk,
    struct store_lease_counts *n)
{
	struct lease_count	lc = { clk, { 0, 0, -1 } };
	int			ret;

	if ((ret = store_iter(s, DB_LEASES, lease_count1, &lc)) != 0)
		return ret;
	*n = lc.n;
	return 0;
}


/*
 * One bounded step of a lease count: at most max records after pos (from
 * the first when *mid is 0), added to acc. The gauge walks a million
 * leases a slice per tick instead of all of them in one (which held the
 * uplink's loop for a second per tick). Returns 1 when the pass reached
 * the end, 0 when more remain (pos and *mid say where), <0 on error.
 */
int
store_lease_count_step(struct store *s, const struct store_clock *clk,
    unsigned char pos[32], int *mid, size_t max,
    struct store_lease_counts *acc)
{
	struct lease_count	 lc = { clk, *acc };
	MDB_txn			*txn;
	MDB_cursor		*cur;
	MDB_val			 k = { STORE_SHA_LEN, pos }, v;
	size_t			 i = 0;
	int			 rc, op = *mid ? MDB_SET_RANGE : MDB_FIRST;

	if (!HAVE(s, DB_LEASES))
		return 1;
	if ((rc = store_rbegin(s, &txn)) != 0)
		return rc;
	if ((rc = mdb_cursor_open(txn, s->dbi[DB_LEASES], &cur)) != 0) {
		store_rend(s, txn);
		return store_err(rc, "leases");
	}
	rc = mdb_cursor_get(cur, &k, &v, op);
	/* SET_RANGE lands on pos itself when it is still there: counted. */
	if (rc == 0 && *mid && k.mv_size == STORE_SHA_LEN &&
	    memcmp(k.mv_data, pos, STORE_SHA_LEN) == 0)
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	for (; rc == 0 && i < max; i++) {
		lease_count1(&k, &v, &lc);
		if (k.mv_size == STORE_SHA_LEN)
			memcpy(pos, k.mv_data, STORE_SHA_LEN);
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	store_rend(s, txn);
	*acc = lc.n;
	if (rc != 0 && rc != MDB_NOTFOUND)
		return store_err(rc, "leases");
	*mid = rc == 0;
	return rc == MDB_NOTFOUND;
}

/* Records in the lease table, valid or not: LMDB's own count, O(1). */
uint64_t
store_lease_entries(struct store *s)
{
	MDB_txn		*txn;
	MDB_stat	 st;
	int		 rc;

	if (!HAVE(s, DB_LEASES) || store_rbegin(s, &txn) != 0)
		return 0;
	rc = mdb_stat(txn, s->dbi[DB_LEASES], &st);
	store_rend(s, txn);
	return rc == 0 ? st.ms_entries : 0;
}

/*
 * 1 if a lease not expired at clk is found among the first max records:
 * the uplink's TrustBased-or-Disconnected question, which the first record
 * answers in a live cache; 0 if none, -1 if max records said nothing.
 */
int
store_lease_any_valid(struct store *s, const struct store_clock *clk,
    size_t max)
{
	struct lease_count	 lc = { clk, { 0, 0, -1 } };
	MDB_txn			*txn;
	MDB_cursor		*cur;
	MDB_val			 k, v;
	size_t			 i;
	int			 rc;

	if (!HAVE(s, DB_LEASES))
		return 0;
	if (store_rbegin(s, &txn) != 0)
		return -1;
	if (mdb_cursor_open(txn, s->dbi[DB_LEASES], &cur) != 0) {
		store_rend(s, txn);
		return -1;
	}
	rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	for (i = 0; rc == 0 && i < max && lc.n.valid == 0; i++) {
		lease_count1(&k, &v, &lc);
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	store_rend(s, txn);
	if (lc.n.valid > 0)
		return 1;
	return rc == MDB_NOTFOUND ? 0 : -1;
}

/*
 * n leases in one write transaction (bench/mkleases, bulk loads): one
 * commit and its two flushes for all of them, where store_lease_put pays
 * them per lease.
 */
int
store_lease_put_many(struct store *s, const struct store_lease_rec *r,
    size_t n)
{
	MDB_txn		*txn;
	MDB_val		 k = { STORE_SHA_LEN, NULL }, v;
	size_t		 i;
	int		 rc = 0, ret;

	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	for (i = 0; i < n && rc == 0; i++) {
		if (r[i].len == 0 || r[i].len > INT_MAX - LEASE_HDR) {
			mdb_txn_abort(txn);
			return -1;
		}
		k.mv_data = (void *)r[i].sha;
		v.mv_size = r[i].len + LEASE_HDR;
		/* LMDB hands out the value's room; we pack straight into it */
		if ((rc = mdb_put(txn, s->dbi[DB_LEASES], &k, &v,
		    MDB_RESERVE)) == 0)
			lease_pack(v.mv_data, r[i].tok, r[i].len, &r[i].t);
	}
	if (rc != 0) {
		mdb_txn_abort(txn);
		return store_err(rc, "leases");
	}
	return store_commit(txn, "leases");
}


struct lease_each {
	int	(*cb)(const unsigned char *, const char *, size_t, void *);
	void	*arg;
};

/* The callback gets a NUL-terminated copy, never a pointer into the map. */
static int
lease_each1(const MDB_val *k, const MDB_val *v, void *arg)
{
	struct lease_each	*le = arg;
	struct store_lease_time	 t;
	char			*tok;
	size_t			 len;
	long			 off;
	int			 ret;

	if (k->mv_size != STORE_SHA_LEN || (off = lease_hdr(v, &t)) < 0) {
		log_warnx("store: corrupt lease record skipped");
		return 0;
	}
	len = v->mv_size - (size_t)off;
	if ((tok = malloc(len + 1)) == NULL) {
		log_warn("store: lease");
		return -1;
	}
	memcpy(tok, (const char *)v->mv_data + off, len);
	tok[len] = '\0';
	ret = le->cb(k->mv_data, tok, len, le->arg);
	free(tok);
	return ret != 0 ? 1 : 0;
}

int
store_lease_foreach(struct store *s,
    int (*cb)(const unsigned char sha[32], const char *tok, size_t len,
    void *arg), void *arg)
{
	struct lease_each le = { cb, arg };

	return store_iter(s, DB_LEASES, lease_each1, &le);
}

/* ---- rejections ---- */

struct reject_out {
	char	*reason;
	size_t	 rsz;
	int64_t	*until;
};

static int
reject_copy(const MDB_val *v, void *arg)
{
	struct reject_out	*ro = arg;
	struct rbuf		 rb;
	char			 reason[REJECT_REASON_SZ];
	int64_t			 until;

	rb_init(&rb, v);
	until = (int64_t)rb_u64(&rb);
	rb_str(&rb, reason, sizeof(reason));
	if (rb_done(&rb, "rejection") != 0)
		return -1;
	if (ro->reason != NULL) {
		if (strlen(reason) >= ro->rsz)
			return -1;
		memcpy(ro->reason, reason, strlen(reason) + 1);
	}
	if (ro->until != NULL)
		*ro->until = until;
	return 0;
}

int
store_reject_get(struct store *s, const unsigned char sha[32], char *reason,
    size_t rsz, int64_t *until)
{
	struct reject_out	ro = { reason, rsz, until };
	MDB_val			k = { STORE_SHA_LEN, (void *)sha };

	return store_read(s, DB_REJECTS, &k, reject_copy, &ro);
}

/*
 * Rejections are indexed by expiry (reject_time: be64(until) sha -> ""),
 * so pruning reads only the rows it deletes, and the cap is checked
 * against LMDB's own entry count (mdb_stat, O(1)): no scan per request.
 */
static void
reject_tkey(unsigned char tk[8 + STORE_SHA_LEN], const unsigned char *sha,
    int64_t until)
{
	be64_put(tk, (uint64_t)until);
	memcpy(tk + 8, sha, STORE_SHA_LEN);
}

/* Delete sha's row and its index entry, if it has one. */
static int
reject_del_txn(struct store *s, MDB_txn *txn, const unsigned char *sha)
{
	unsigned char	tk[8 + STORE_SHA_LEN];
	MDB_val		k = { STORE_SHA_LEN, (void *)sha }, v, ik;
	int64_t		until = 0;
	struct reject_out ro = { NULL, 0, &until };
	int		rc;

	if ((rc = mdb_get(txn, s->dbi[DB_REJECTS], &k, &v)) != 0)
		return rc;
	if (reject_copy(&v, &ro) == 0) {
		reject_tkey(tk, sha, until);
		ik.mv_size = sizeof(tk);
		ik.mv_data = tk;
		rc = mdb_del(txn, s->dbi[DB_REJECT_TIME], &ik, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return rc;
	}
	return mdb_del(txn, s->dbi[DB_REJECTS], &k, NULL);
}

/* Oldest first: drop rows expired by now, then any beyond max. */
static int
reject_prune_txn(struct store *s, MDB_txn *txn, int64_t now, uint64_t max)
{
	MDB_cursor	*cur;
	MDB_stat	 st;
	MDB_val		 k, v, rk;
	int		 rc;

	if ((rc = mdb_cursor_open(txn, s->dbi[DB_REJECT_TIME], &cur)) != 0)
		return rc;
	while ((rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
		if ((rc = mdb_stat(txn, s->dbi[DB_REJECTS], &st)) != 0)
			break;
		if (k.mv_size != 8 + STORE_SHA_LEN)
			goto drop;	/* not ours: never let it stop the prune */
		if ((int64_t)be64_get(k.mv_data) > now && st.ms_entries <= max)
			break;
		rk.mv_size = STORE_SHA_LEN;
		rk.mv_data = (unsigned char *)k.mv_data + 8;
		rc = mdb_del(txn, s->dbi[DB_REJECTS], &rk, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			break;
drop:
		if ((rc = mdb_cursor_del(cur, 0)) != 0)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/*
 * Rows written before the index existed would never be pruned: they are
 * only cached answers, so a store that has some starts its rejections anew.
 */
static int
reject_legacy(struct store *s, MDB_txn *txn)
{
	MDB_stat	rs, ts;
	int		rc;

	if ((rc = mdb_stat(txn, s->dbi[DB_REJECTS], &rs)) != 0 ||
	    (rc = mdb_stat(txn, s->dbi[DB_REJECT_TIME], &ts)) != 0)
		return rc;
	if (ts.ms_entries == 0 && rs.ms_entries > 0)
		return mdb_drop(txn, s->dbi[DB_REJECTS], 0);
	return 0;
}

int
store_reject_put(struct store *s, const unsigned char sha[32],
    const char *reason, int64_t until, int64_t now, uint64_t max)
{
	struct wbuf	 w = { .len = 0 };
	unsigned char	 tk[8 + STORE_SHA_LEN];
	MDB_val		 k = { STORE_SHA_LEN, (void *)sha }, v;
	MDB_val		 ik = { sizeof(tk), tk }, iv = { 0, tk };
	MDB_txn		*txn;
	int		 rc, ret;

	if (reason == NULL)
		return -1;
	wb_u8(&w, STORE_VERSION);
	wb_u64(&w, (uint64_t)until);
	wb_str(&w, reason, REJECT_REASON_SZ);
	if (w.err)
		return -1;
	v.mv_data = w.b;
	v.mv_size = w.len;
	reject_tkey(tk, sha, until);
	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((rc = reject_legacy(s, txn)) != 0 ||
	    ((rc = reject_del_txn(s, txn, sha)) != 0 && rc != MDB_NOTFOUND) ||
	    (rc = mdb_put(txn, s->dbi[DB_REJECTS], &k, &v, 0)) != 0 ||
	    (rc = mdb_put(txn, s->dbi[DB_REJECT_TIME], &ik, &iv, 0)) != 0 ||
	    (rc = reject_prune_txn(s, txn, now, max)) != 0) {
		mdb_txn_abort(txn);
		return store_err(rc, "rejects");
	}
	return store_commit(txn, "rejects");
}

int
store_reject_del(struct store *s, const unsigned char sha[32])
{
	MDB_txn	*txn;
	int	 rc, ret;

	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((rc = reject_del_txn(s, txn, sha)) != 0) {
		mdb_txn_abort(txn);
		return store_err(rc, "rejects");
	}
	return store_commit(txn, "rejects");
}

int
store_reject_prune(struct store *s, int64_t now, uint64_t max)
{
	MDB_txn	*txn;
	int	 rc, ret;

	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((rc = reject_prune_txn(s, txn, now, max)) != 0) {
		mdb_txn_abort(txn);
		return store_err(rc, "rejects");
	}
	return store_commit(txn, "rejects");
}

int
store_reject_count(struct store *s, uint64_t *n)
{
	MDB_txn	*txn;
	MDB_stat st;
	int	 rc, ret;

	*n = 0;
	if (!HAVE(s, DB_REJECTS))
		return 0;
	if ((ret = store_rbegin(s, &txn)) != 0)
		return ret;
	rc = mdb_stat(txn, s->dbi[DB_REJECTS], &st);
	store_rend(s, txn);
	if (rc != 0)
		return store_err(rc, "rejects");
	*n = st.ms_entries;
	return 0;
}

/*
 * The open snapshot's transaction id, 0 without one. Two snapshots with
 * the same id see the same data (LMDB numbers every write commit), so a
 * reader may reuse what it read under that id.
 */
uint64_t
store_snapshot_txnid(struct store *s)
{
	return s->snap != NULL ? (uint64_t)mdb_txn_id(s->snap) : 0;
}

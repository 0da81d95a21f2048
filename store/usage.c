/*
 * usage.c - usage records: the proxy's spool (seq -> record), the
 * authority's ledger (key_id + id -> record) and its totals, and the
 * de-duplication index (dedup0..4) that makes a resent record count once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "store_int.h"

/*
 * An index key is DEDUP_HASHLEN bytes of SHA-256(key_id || id but its last
 * DEDUP_TAILLEN characters), then those characters as they are (NUL-padded
 * for a shorter id). Ids that differ only at their end (a counter, as
 * most reporters number their records) sit side by side, so a commit of
 * such records writes a few index pages instead of one per record.
 */
#define DEDUP_HASHLEN	8
#define DEDUP_TAILLEN	4
#define DEDUP_KEYLEN	(DEDUP_HASHLEN + DEDUP_TAILLEN)
#define DEDUP_ROOM_TRIES DEDUP_GENS	/* a full store drops a generation */

/* ---- the record: version, quantity (IEEE bits), five strings ---- */

static void
rec_pack(struct wbuf *w, const struct usage_rec *r)
{
	uint64_t q;

	memcpy(&q, &r->quantity, 8);
	wb_u8(w, STORE_VERSION);
	wb_u64(w, q);
	wb_str(w, r->kid, sizeof(r->kid));
	wb_str(w, r->id, sizeof(r->id));
	wb_str(w, r->product, sizeof(r->product));
	wb_str(w, r->metric, sizeof(r->metric));
	wb_str(w, r->ts, sizeof(r->ts));
}

static int
rec_unpack(const MDB_val *v, struct usage_rec *r)
{
	struct rbuf	rb;
	uint64_t	q;

	rb_open(&rb, v, r, sizeof(*r));
	q = rb_u64(&rb);
	memcpy(&r->quantity, &q, 8);
	rb_str(&rb, r->kid, sizeof(r->kid));
	rb_str(&rb, r->id, sizeof(r->id));
	rb_str(&rb, r->product, sizeof(r->product));
	rb_str(&rb, r->metric, sizeof(r->metric));
	rb_str(&rb, r->ts, sizeof(r->ts));
	return rb_done(&rb, "usage");
}


static int
rec_valid(const struct usage_rec *r)
{
	size_t idl = strnlen(r->id, sizeof(r->id));

	return strnlen(r->kid, sizeof(r->kid)) == TOKEN_KID_LEN &&
	    idl > 0 && idl < sizeof(r->id) &&
	    strnlen(r->product, sizeof(r->product)) < sizeof(r->product) &&
	    strnlen(r->metric, sizeof(r->metric)) < sizeof(r->metric) &&
	    strnlen(r->ts, sizeof(r->ts)) < sizeof(r->ts);
}

/* kid(16) + id: the de-duplication and ledger key. */
static void
rec_idkey(const struct usage_rec *r, unsigned char *buf, MDB_val *k)
{
	size_t idl = strlen(r->id);

	memcpy(buf, r->kid, TOKEN_KID_LEN);
	memcpy(buf + TOKEN_KID_LEN, r->id, idl);
	k->mv_data = buf;
	k->mv_size = TOKEN_KID_LEN + idl;
}

/*
 * The de-duplication index: hash(key_id, id) -> nothing, spread over
 * DEDUP_GENS generations (dedup0..4). New entries go into the current
 * one; a new generation starts every window / (DEDUP_GENS - 1), and a
 * generation whose newest entry is older than the window is emptied
 * whole (mdb_drop), so pruning never walks entries and frees whole pages.
 * meta dedup_g counts generations, dedup_t<i> is when slot i started.
 */
struct dedup_gens {
	uint64_t	g;			/* current slot: g % DEDUP_GENS */
	uint64_t	start[DEDUP_GENS];	/* 0 = empty */
	uint64_t	n[DEDUP_GENS];	/* entries as this version left them */
	uint64_t	seen[DEDUP_GENS];	/* start, as this version left it */
	uint64_t	old;	/* bit i: slot i may hold keys without a tail */
};

/* SHA-256 of b, its first DEDUP_HASHLEN bytes, by the store's context. */
static void
dedup_sha(struct store *s, const void *b, size_t len,
    unsigned char h[DEDUP_HASHLEN])
{
	unsigned char	md[SHA256_DIGEST_LENGTH];

	if (s->sha == NULL)
		s->sha = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (s->shactx == NULL)
		s->shactx = EVP_MD_CTX_new();
	if (s->sha == NULL || s->shactx == NULL ||
	    EVP_DigestInit_ex2(s->shactx, s->sha, NULL) != 1 ||
	    EVP_DigestUpdate(s->shactx, b, len) != 1 ||
	    EVP_DigestFinal_ex(s->shactx, md, NULL) != 1)
		SHA256(b, len, md);	/* the slow way */
	memcpy(h, md, DEDUP_HASHLEN);
}

/*
 * The record's index key (see DEDUP_TAILLEN). The map is one to one up to
 * the hash: the hashed part has the key_id's fixed length before the id's
 * head, and the tail's NULs tell a short id from a long one.
 */
static void
dedup_key(struct store *s, const struct usage_rec *r,
    unsigned char key[DEDUP_KEYLEN])
{
	unsigned char	idbuf[TOKEN_KID_LEN + USAGE_ID_MAX];
	MDB_val		k;
	size_t		tail = strlen(r->id);

	if (tail > DEDUP_TAILLEN)
		tail = DEDUP_TAILLEN;
	rec_idkey(r, idbuf, &k);
	dedup_sha(s, k.mv_data, k.mv_size - tail, key);
	memset(key + DEDUP_HASHLEN, 0, DEDUP_TAILLEN);
	memcpy(key + DEDUP_HASHLEN, (unsigned char *)k.mv_data +
	    k.mv_size - tail, tail);
}

/* The key of a store from before the tail: SHA-256(key_id || id). */
static void
dedup_key_old(struct store *s, const struct usage_rec *r,
    unsigned char key[DEDUP_HASHLEN])
{
	unsigned char	idbuf[TOKEN_KID_LEN + USAGE_ID_MAX];
	MDB_val		k;

	rec_idkey(r, idbuf, &k);
	dedup_sha(s, k.mv_data, k.mv_size, key);
}

/* One meta value of the generations, written or read. */
static int
dedup_meta(struct store *s, MDB_txn *txn, const char *name, int i,
    uint64_t *v, int save)
{
	char	key[24];

	if (i >= 0) {
		snprintf(key, sizeof(key), "%s%d", name, i);
		name = key;
	}
	return save ? store_meta_put(s, txn, name, *v) :
	    store_meta_get(s, txn, name, v);
}

static int
dedup_io(struct store *s, MDB_txn *txn, struct dedup_gens *dg, int save)
{
	int	i, ret;

	if ((ret = dedup_meta(s, txn, "dedup_g", -1, &dg->g, save)) != 0 ||
	    (ret = dedup_meta(s, txn, "dedup_old", -1, &dg->old, save)) != 0)
		return ret;
	for (i = 0; i < DEDUP_GENS; i++) {
		if (save)
			dg->seen[i] = dg->start[i];
		if ((ret = dedup_meta(s, txn, "dedup_t", i, &dg->start[i],
		    save)) != 0 ||
		    (ret = dedup_meta(s, txn, "dedup_n", i, &dg->n[i],
		    save)) != 0 ||
		    (ret = dedup_meta(s, txn, "dedup_s", i, &dg->seen[i],
		    save)) != 0)
			return ret;
	}
	return 0;
}

static int
dedup_entries(struct store *s, MDB_txn *txn, int i, uint64_t *n)
{
	MDB_stat	st;
	int		rc;

	if ((rc = mdb_stat(txn, s->dbi[DB_DEDUP0 + i], &st)) != 0)
		return store_err(rc, "dedup");
	*n = st.ms_entries;
	return 0;
}

/*
 * The generations as stored, each that may hold keys without a tail
 * marked: one with entries this version did not put there (its count is
 * not what this version left), or one started anew by another version
 * (its start is not: the other version may have refilled it to the same
 * count). That is a store from before the tail keys, or a previous binary
 * still draining after an upgrade or run again after a downgrade. A
 * marked slot is asked for both keys until it is dropped. Every save
 * follows a load in its transaction, so no change goes unmarked. *was
 * (if asked for) is the state as stored, before the marks.
 */
static int
dedup_load(struct store *s, MDB_txn *txn, struct dedup_gens *dg,
    struct dedup_gens *was)
{
	uint64_t	n = 0;
	int		i, ret;

	if ((ret = dedup_io(s, txn, dg, 0)) != 0)
		return ret;
	if (was != NULL)
		*was = *dg;
	for (i = 0; i < DEDUP_GENS; i++) {
		if ((ret = dedup_entries(s, txn, i, &n)) != 0)
			return ret;
		if (n != dg->n[i] || (n > 0 && dg->start[i] != dg->seen[i]))
			dg->old |= 1ULL << i;
		dg->n[i] = n;
	}
	return 0;
}

/* After this version's own puts into slot cur: remember its count. */
static int
dedup_count(struct store *s, MDB_txn *txn, struct dedup_gens *dg, int cur)
{
	uint64_t	n = 0;
	int		ret;

	if ((ret = dedup_entries(s, txn, cur, &n)) != 0 || n == dg->n[cur])
		return ret;
	dg->n[cur] = n;
	return dedup_meta(s, txn, "dedup_n", cur, &dg->n[cur], 1);
}

/* Slot k generations before the current one (k = 0: the current). */
static int
dedup_slot(const struct dedup_gens *dg, int k)
{
	return (int)((dg->g + DEDUP_GENS - k) % DEDUP_GENS);
}

/* How long a generation takes entries: a quarter of the window. */
static uint64_t
dedup_span(const struct store *s)
{
	uint64_t span = (uint64_t)s->dedup_window / (DEDUP_GENS - 1);

	return span > 0 ? span : 1;
}

/*
 * Just after the newest entry of generation k back went in: a generation
 * takes entries for at most a span (the first append after that rotates),
 * so every one went in before its start plus a span; the current one is
 * still filling.
 */
static uint64_t
dedup_end(const struct store *s, const struct dedup_gens *dg, int k,
    uint64_t now)
{
	if (k == 0 || s->dedup_window <= 0)
		return now;
	return dg->start[dedup_slot(dg, k)] + dedup_span(s);
}

/*
 * Empty the generation k back; entries still inside the window (dropped
 * because the store is full, not for their age) count in *early.
 */
static int
dedup_drop(struct store *s, MDB_txn *txn, struct dedup_gens *dg, int k,
    uint64_t now, uint64_t *early)
{
	MDB_dbi		dbi = s->dbi[DB_DEDUP0 + dedup_slot(dg, k)];
	MDB_stat	st;
	uint64_t	end = dedup_end(s, dg, k, now);
	int		rc;

	dg->start[dedup_slot(dg, k)] = 0;
	dg->n[dedup_slot(dg, k)] = 0;
	dg->old &= ~(1ULL << dedup_slot(dg, k));
	if ((rc = mdb_stat(txn, dbi, &st)) != 0 ||
	    (st.ms_entries > 0 && (rc = mdb_drop(txn, dbi, 0)) != 0))
		return store_err(rc, "dedup");
	if (early != NULL && (s->dedup_window <= 0 ||
	    end + s->dedup_window > now))
		*early += st.ms_entries;
	return 0;
}

/* Start a generation: the slot it takes is the oldest one. */
static int
dedup_rotate(struct store *s, MDB_txn *txn, struct dedup_gens *dg,
    uint64_t now, uint64_t *early)
{
	int ret;

	if (dg->start[dedup_slot(dg, 0)] != 0) {
		dg->g++;
		if ((ret = dedup_drop(s, txn, dg, 0, now, early)) != 0)
			return ret;
	}
	dg->start[dedup_slot(dg, 0)] = now;
	return 0;
}

/*
 * A store from before the generations kept (key_id, id) -> time in
 * usage_ids, never read now: the first generation's transaction frees it.
 */
static int
dedup_drop_legacy(MDB_txn *txn)
{
	MDB_dbi	dbi;
	int	rc;

	if ((rc = mdb_dbi_open(txn, "usage_ids", 0, &dbi)) == MDB_NOTFOUND)
		return 0;
	if (rc != 0 || (rc = mdb_drop(txn, dbi, 1)) != 0)
		return store_err(rc, "usage_ids");
	log_info("store: dropped the old usage_ids table");
	return 0;
}

/*
 * Before an append: mark what another version added, rotate once the
 * current generation is a span old, drop every older one whose end is
 * past the window. Returns the slot new entries go into.
 */
static int
dedup_age(struct store *s, MDB_txn *txn, uint64_t now, uint64_t *early,
    struct dedup_gens *dg)
{
	struct dedup_gens	was;
	int			k, ret;

	if ((ret = dedup_load(s, txn, dg, &was)) != 0)
		return ret;
	if (dg->g == 0 && dg->start[0] == 0 &&
	    (ret = dedup_drop_legacy(txn)) != 0)
		return ret;
	if (dg->start[dedup_slot(dg, 0)] == 0 || (s->dedup_window > 0 &&
	    dg->start[dedup_slot(dg, 0)] + dedup_span(s) <= now)) {
		if ((ret = dedup_rotate(s, txn, dg, now, early)) != 0)
			return ret;
	}
	for (k = 1; s->dedup_window > 0 && k < DEDUP_GENS; k++)
		if (dg->start[dedup_slot(dg, k)] != 0 &&
		    dedup_end(s, dg, k, now) + s->dedup_window <= now &&
		    (ret = dedup_drop(s, txn, dg, k, now, early)) != 0)
			return ret;
	if (memcmp(&was, dg, sizeof(*dg)) != 0 &&
	    (ret = dedup_io(s, txn, dg, 1)) != 0)
		return ret;
	return dedup_slot(dg, 0);
}

/* 1 if k is in slot i, 0 if not, < 0 on error. */
static int
dedup_has(struct store *s, MDB_txn *txn, int i, MDB_val *k)
{
	MDB_val	v;
	int	rc = mdb_get(txn, s->dbi[DB_DEDUP0 + i], k, &v);

	if (rc == 0 || rc == MDB_NOTFOUND)
		return rc == 0;
	return store_err(rc, "dedup");
}

/*
 * Returns 1 if r is known, 0 when it was added to slot cur, < 0 on error.
 * The slots in old are asked for the old key as well, until they are
 * dropped (a window after an upgrade).
 */
static int
dedup_add(struct store *s, MDB_txn *txn, const struct usage_rec *r,
    int cur, uint64_t old)
{
	unsigned char	h[DEDUP_KEYLEN], o[DEDUP_HASHLEN];
	MDB_val		k = { DEDUP_KEYLEN, h }, ko = { DEDUP_HASHLEN, o }, v;
	int		i, rc;

	dedup_key(s, r, h);
	if (old & ((1ULL << DEDUP_GENS) - 1))
		dedup_key_old(s, r, o);
	for (i = 0; i < DEDUP_GENS; i++) {
		if ((rc = dedup_has(s, txn, i, &k)) == 0 &&
		    (old & (1ULL << i)))
			rc = dedup_has(s, txn, i, &ko);
		if (rc != 0)
			return rc;
	}
	v.mv_size = 0;
	v.mv_data = h;
	rc = mdb_put(txn, s->dbi[DB_DEDUP0 + cur], &k, &v, 0);
	return rc == 0 ? 0 : store_err(rc, "dedup");
}

/*
 * Returns 1 for a duplicate, 0 when stored, < 0 on error. A proxy's
 * spool asks the de-dup index; an authority's ledger is keyed on
 * (key_id, id) itself, exact and never forgotten.
 */
static int
usage_add1(struct store *s, MDB_txn *txn, const struct usage_rec *r,
    int ledger, int cur, uint64_t old, uint64_t *seq)
{
	unsigned char	 idbuf[TOKEN_KID_LEN + USAGE_ID_MAX];
	unsigned char	 sb[8];
	struct wbuf	 w = { .len = 0 };
	MDB_val		 k, v;
	int		 rc, known;

	/*
	 * The ledger's own key is the exact (key_id, id): its
	 * MDB_NOOVERWRITE put is the de-dup, so the authority keeps no
	 * hash index (it would only repeat that lookup, with five more).
	 */
	if (!ledger && (known = dedup_add(s, txn, r, cur, old)) != 0)
		return known;
	rec_pack(&w, r);
	if (w.err)
		return -1;
	v.mv_data = w.b;
	v.mv_size = w.len;
	if (ledger) {
		rec_idkey(r, idbuf, &k);
		rc = mdb_put(txn, s->dbi[DB_LEDGER], &k, &v, MDB_NOOVERWRITE);
		if (rc == MDB_KEYEXIST)
			return 1;
		return rc == 0 ? 0 : store_err(rc, "ledger");
	}
	be64_put(sb, ++*seq);
	k.mv_data = sb;
	k.mv_size = sizeof(sb);
	rc = mdb_put(txn, s->dbi[DB_SPOOL], &k, &v, MDB_NOOVERWRITE);
	return rc == 0 ? 0 : store_err(rc, "spool");
}

/* The index's time: the wall clock, never behind the store's mark. */
static int
dedup_now(struct store *s, MDB_txn *txn, uint64_t *now)
{
	uint64_t	mark;
	int		ret;

	*now = (uint64_t)time(NULL);
	if ((ret = store_meta_get(s, txn, "clock", &mark)) == 0 && mark > *now)
		*now = mark;
	return ret;
}

/* One write transaction: expired de-dup entries out, then the records. */
static int
usage_append_txn(struct store *s, const struct usage_rec *recs, int n,
    int ledger, unsigned char *dup)
{
	struct dedup_gens	 dg;
	MDB_txn			*txn = NULL;
	uint64_t		 seq, early = 0, now;
	int			 i, ret, cur;

	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((ret = store_meta_get(s, txn, "seq", &seq)) != 0 ||
	    (ret = dedup_now(s, txn, &now)) != 0)
		goto fail;
	if ((ret = cur = dedup_age(s, txn, now, &early, &dg)) < 0)
		goto fail;
	for (i = 0; i < n; i++) {
		if ((ret = usage_add1(s, txn, &recs[i], ledger, cur, dg.old,
		    &seq)) < 0)
			goto fail;
		if (dup != NULL)
			dup[i] = ret;
	}
	/*
	 * A failed put (the map full on the seq itself) must abort: a write
	 * transaction left open keeps LMDB's write lock, and the next begin
	 * in any process waits on it forever.
	 */
	if (!ledger && ((ret = dedup_count(s, txn, &dg, cur)) != 0 ||
	    (ret = store_meta_put(s, txn, "seq", seq)) != 0))
		goto fail;
	if ((ret = store_commit(txn, "usage")) != 0)
		return ret;
	s->dedup_pruned += early;
	return 0;
fail:
	mdb_txn_abort(txn);
	return ret;
}

/*
 * The store is full: empty the oldest de-dup generation (the current one
 * last, and the next append starts a new one). LMDB reuses the pages a
 * transaction freed only two transactions later, so a second (a rewrite
 * of the same meta) follows. Returns 1 if anything went, 0 if the index
 * is empty, < 0 on error.
 */
static int
dedup_make_room(struct store *s)
{
	struct dedup_gens	 dg;
	MDB_txn			*txn;
	MDB_stat		 st;
	uint64_t		 early = 0, now;
	int			 k, ret, rc;

	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((ret = dedup_now(s, txn, &now)) != 0 ||
	    (ret = dedup_load(s, txn, &dg, NULL)) != 0)
		goto fail;
	for (k = DEDUP_GENS - 1; k > 0; k--)
		if (dg.start[dedup_slot(&dg, k)] != 0)
			break;
	if (k == 0 && ((rc = mdb_stat(txn, s->dbi[DB_DEDUP0 +
	    dedup_slot(&dg, 0)], &st)) != 0 || st.ms_entries == 0)) {
		ret = rc != 0 ? store_err(rc, "dedup") : 0;
		goto fail;
	}
	/* A new generation too: the next drop spares what comes after. */
	if ((ret = dedup_drop(s, txn, &dg, k, now, &early)) != 0 ||
	    (k > 0 && (ret = dedup_rotate(s, txn, &dg, now, &early)) != 0) ||
	    (ret = dedup_io(s, txn, &dg, 1)) != 0)
		goto fail;
	if ((ret = store_commit(txn, "dedup")) != 0)
		return ret;
	s->dedup_pruned += early;
	log_info("store: full: dropped %llu de-dup entries, the oldest",
	    (unsigned long long)early);
	/* As stored now: another process may have appended in between. */
	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((ret = dedup_load(s, txn, &dg, NULL)) != 0 ||
	    (ret = dedup_io(s, txn, &dg, 1)) != 0)
		goto fail;
	return (ret = store_commit(txn, "dedup")) != 0 ? ret : 1;
fail:
	mdb_txn_abort(txn);
	return ret;
}

/* Run op; while the store is full, make room out of the de-dup index. */
static int
dedup_retry(struct store *s, int (*op)(struct store *, void *), void *arg)
{
	int ret, try;

	for (try = 0; ; try++) {
		if ((ret = op(s, arg)) != STORE_EFULL || try == DEDUP_ROOM_TRIES)
			return ret;
		if (dedup_make_room(s) <= 0)
			return STORE_EFULL;
	}
}

struct append_args {
	const struct usage_rec	*recs;
	int			 n, ledger;
	unsigned char		*dup;
};

static int
append_op(struct store *s, void *arg)
{
	struct append_args *a = arg;

	return usage_append_txn(s, a->recs, a->n, a->ledger, a->dup);
}

int
store_usage_append(struct store *s, const struct usage_rec *recs, int n,
    int ledger, unsigned char *dup)
{
	struct append_args	a = { recs, n, ledger, dup };
	int			i;

	if (n < 0 || (n > 0 && recs == NULL))
		return -1;
	for (i = 0; i < n; i++)
		if (!rec_valid(&recs[i])) {
			log_warnx("store: usage record %d out of bounds", i);
			return -1;
		}
	if (n == 0)
		return 0;
	return dedup_retry(s, append_op, &a);
}

void
store_usage_window(struct store *s, int64_t secs)
{
	s->dedup_window = secs;
}

uint64_t
store_dedup_pruned(struct store *s)
{
	uint64_t n = s->dedup_pruned;

	s->dedup_pruned = 0;
	return n;
}

int
store_dedup_stat(struct store *s, uint64_t *entries, uint64_t *bytes)
{
	MDB_txn		*txn;
	MDB_stat	 st;
	int		 i, rc = 0, ret;

	*entries = *bytes = 0;
	if ((ret = store_begin(s, 0, &txn)) != 0)
		return ret;
	for (i = 0; i < DEDUP_GENS && rc == 0; i++) {
		if (!HAVE(s, DB_DEDUP0 + i) ||
		    (rc = mdb_stat(txn, s->dbi[DB_DEDUP0 + i], &st)) != 0)
			continue;
		*entries += st.ms_entries;
		*bytes += (uint64_t)st.ms_psize * (st.ms_branch_pages +
		    st.ms_leaf_pages + st.ms_overflow_pages);
	}
	mdb_txn_abort(txn);
	return rc == 0 ? 0 : store_err(rc, "dedup");
}

struct spool_peek {
	struct usage_rec	*recs;
	uint64_t		*seqs;
	int			 max, n;
};

static int
spool_peek1(const MDB_val *k, const MDB_val *v, void *arg)
{
	struct spool_peek *sp = arg;

	if (sp->n >= sp->max)
		return 1;
	/* A record we cannot decode would block the relay forever: fail loud. */
	if (k->mv_size != 8 || rec_unpack(v, &sp->recs[sp->n]) != 0)
		return -1;
	sp->seqs[sp->n++] = be64_get(k->mv_data);
	return 0;
}

int
store_spool_peek(struct store *s, struct usage_rec *recs, uint64_t *seqs,
    int max)
{
	struct spool_peek	sp = { recs, seqs, max, 0 };
	int			ret;

	if (max <= 0)
		return 0;
	if ((ret = store_iter(s, DB_SPOOL, spool_peek1, &sp)) != 0)
		return ret;
	return sp.n;
}

struct delete_args {
	const uint64_t	*seqs;
	int		 n;
};

static int
spool_delete_op(struct store *s, void *arg)
{
	const struct delete_args *a = arg;
	MDB_txn		*txn;
	MDB_cursor	*cur;
	unsigned char	 sb[8];
	MDB_val		 k = { sizeof(sb), sb }, v;
	const uint64_t	*seqs = a->seqs;
	uint64_t	 fwd, deleted = 0;
	int		 i, rc, ret, n = a->n;

	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((rc = mdb_cursor_open(txn, s->dbi[DB_SPOOL], &cur)) != 0) {
		ret = store_err(rc, "spool");
		goto fail;
	}
	/*
	 * The batch is the spool's oldest seqs in order, so one cursor finds
	 * each on the leaf it is already on (mdb_del descends the tree for
	 * every record: a third of the relay's cost per record).
	 */
	for (i = 0; i < n; i++) {
		be64_put(sb, seqs[i]);
		if ((rc = mdb_cursor_get(cur, &k, &v, MDB_SET)) == 0 &&
		    (rc = mdb_cursor_del(cur, 0)) == 0)
			deleted++;
		else if (rc != MDB_NOTFOUND) {
			mdb_cursor_close(cur);
			ret = store_err(rc, "spool");
			goto fail;
		}
	}
	mdb_cursor_close(cur);
	if ((ret = store_meta_get(s, txn, "forwarded", &fwd)) != 0 ||
	    (ret = store_meta_put(s, txn, "forwarded", fwd + deleted)) != 0)
		goto fail;
	return store_commit(txn, "spool");
fail:
	mdb_txn_abort(txn);
	return ret;
}

/* Even a delete needs fresh pages: a full store must not stop the relay. */
int
store_spool_delete(struct store *s, const uint64_t *seqs, int n)
{
	struct delete_args a = { seqs, n };

	if (n <= 0)
		return n == 0 ? 0 : -1;
	return dedup_retry(s, spool_delete_op, &a);
}

int
store_spool_stats(struct store *s, uint64_t *pending, uint64_t *forwarded)
{
	MDB_txn		*txn;
	MDB_stat	 st;
	uint64_t	 fwd = 0;
	int		 rc, ret;

	if ((ret = store_begin(s, 0, &txn)) != 0)
		return ret;
	memset(&st, 0, sizeof(st));
	if (HAVE(s, DB_SPOOL) &&
	    (rc = mdb_stat(txn, s->dbi[DB_SPOOL], &st)) != 0)
		ret = store_err(rc, "spool");
	else
		ret = store_meta_get(s, txn, "forwarded", &fwd);
	mdb_txn_abort(txn);
	if (ret != 0)
		return ret;
	if (pending != NULL)
		*pending = st.ms_entries;
	if (forwarded != NULL)
		*forwarded = fwd;
	return 0;
}

struct totals {
	struct usage_total	*v;
	size_t			 n, cap;
};

static int
total_cmp(const char *kid, const char *prd, const char *met,
    const struct usage_total *t)
{
	int c;

	if ((c = strcmp(kid, t->kid)) != 0 ||
	    (c = strcmp(prd, t->product)) != 0)
		return c;
	return strcmp(met, t->metric);
}

/* Groups are few: a sorted array with binary-search insertion suffices. */
static int
totals_add1(const MDB_val *k, const MDB_val *v, void *arg)
{
	struct totals		*t = arg;
	struct usage_rec	 r;
	struct usage_total	*p;
	size_t			 lo = 0, hi = t->n, mid = 0;
	int			 c = 1;

	(void)k;
	if (rec_unpack(v, &r) != 0)
		return -1;
	while (lo < hi) {
		mid = (lo + hi) / 2;
		if ((c = total_cmp(r.kid, r.product, r.metric, &t->v[mid])) == 0)
			break;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	if (c == 0)
		p = &t->v[mid];
	else {
		if (t->n == t->cap) {
			size_t ncap = t->cap ? t->cap * 2 : 16;
			if ((p = reallocarray(t->v, ncap, sizeof(*p))) == NULL)
				return -1;
			t->v = p;
			t->cap = ncap;
		}
		memmove(&t->v[lo + 1], &t->v[lo], (t->n - lo) * sizeof(*p));
		p = &t->v[lo];
		memset(p, 0, sizeof(*p));
		memcpy(p->kid, r.kid, sizeof(p->kid));
		memcpy(p->product, r.product, sizeof(p->product));
		memcpy(p->metric, r.metric, sizeof(p->metric));
		t->n++;
	}
	p->quantity += r.quantity;
	p->records++;
	return 0;
}

int
store_ledger_totals(struct store *s, struct usage_total **out, size_t *n)
{
	struct totals	t = { NULL, 0, 0 };
	int		ret;

	*out = NULL;
	*n = 0;
	if ((ret = store_iter(s, DB_LEDGER, totals_add1, &t)) != 0) {
		free(t.v);
		return ret;
	}
	*out = t.v;
	*n = t.n;
	return 0;
}


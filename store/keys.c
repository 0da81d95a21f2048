/*
 * keys.c - the authority's key registry: sha256(key) -> role, revoked,
 * expiry, created, key_id, name, products.
 */
#include <string.h>

#include "store_int.h"

/* version, role, revoked, expires, created, kid, name, products */
static void
key_pack(struct wbuf *w, const struct store_key *k)
{
	int i;

	wb_u8(w, STORE_VERSION);
	wb_u8(w, k->role < 0 ? 0x100 : (unsigned int)k->role);
	wb_u8(w, k->revoked != 0);
	wb_u64(w, (uint64_t)k->expires);
	wb_u64(w, (uint64_t)k->created);
	wb_str(w, k->kid, sizeof(k->kid));
	wb_str(w, k->name, sizeof(k->name));
	if (k->n_products < 0 || k->n_products > TOKEN_MAX_PRODUCTS) {
		w->err = 1;
		return;
	}
	wb_u8(w, k->n_products);
	for (i = 0; i < k->n_products; i++)
		wb_str(w, k->products[i], sizeof(k->products[i]));
	/* Last and optional: records made before seat limits end above. */
	if (k->seats > 0)
		wb_u64(w, (uint64_t)k->seats);
}

static int
key_unpack(const MDB_val *v, struct store_key *k)
{
	struct rbuf	rb;
	int		i;

	rb_open(&rb, v, k, sizeof(*k));
	k->role = rb_u8(&rb);
	k->revoked = rb_u8(&rb);
	k->expires = (int64_t)rb_u64(&rb);
	k->created = (int64_t)rb_u64(&rb);
	rb_str(&rb, k->kid, sizeof(k->kid));
	rb_str(&rb, k->name, sizeof(k->name));
	k->n_products = rb_u8(&rb);
	if (k->n_products > TOKEN_MAX_PRODUCTS)
		rb.err = 1;
	for (i = 0; !rb.err && i < k->n_products; i++)
		rb_str(&rb, k->products[i], sizeof(k->products[i]));
	if (!rb.err && rb.off < rb.len)
		k->seats = (int64_t)rb_u64(&rb);
	return rb_done(&rb, "key");
}

/* ---- key registry ---- */

int
store_key_put(struct store *s, const unsigned char sha[32],
    const struct store_key *key)
{
	struct wbuf	w = { .len = 0 };
	MDB_val		k = { STORE_SHA_LEN, (void *)sha }, v;

	key_pack(&w, key);
	if (w.err) {
		log_warnx("store: key record out of bounds");
		return -1;
	}
	v.mv_data = w.b;
	v.mv_size = w.len;
	return store_write1(s, DB_KEYS, &k, &v);
}

static int
key_copy(const MDB_val *v, void *arg)
{
	return key_unpack(v, arg);
}

int
store_key_get(struct store *s, const unsigned char sha[32],
    struct store_key *key)
{
	MDB_val k = { STORE_SHA_LEN, (void *)sha };

	return store_read(s, DB_KEYS, &k, key_copy, key);
}

/* Rewrites every record whose kid matches; returns how many, or < 0. */
static int
key_revoke_txn(struct store *s, MDB_txn *txn, const char *kid)
{
	MDB_cursor		*cur;
	MDB_val			 k, v;
	struct store_key	 key;
	struct wbuf		 w = { .len = 0 };
	int			 rc, n = 0;

	if ((rc = mdb_cursor_open(txn, s->dbi[DB_KEYS], &cur)) != 0)
		return store_err(rc, "keys");
	while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
		if (key_unpack(&v, &key) != 0 || strcmp(key.kid, kid) != 0)
			continue;
		key.revoked = 1;
		w.len = 0;
		w.err = 0;
		key_pack(&w, &key);
		v.mv_data = w.b;
		v.mv_size = w.len;
		if (w.err || (rc = mdb_cursor_put(cur, &k, &v,
		    MDB_CURRENT)) != 0)
			break;
		n++;
	}
	mdb_cursor_close(cur);
	if (w.err)
		return -1;
	if (rc != MDB_NOTFOUND)
		return store_err(rc, "keys");
	return n;
}

int
store_key_revoke(struct store *s, const char *kid)
{
	MDB_txn	*txn;
	int	 n;

	if (kid == NULL || strlen(kid) != TOKEN_KID_LEN)
		return STORE_ENOTFOUND;
	if ((n = store_begin(s, 1, &txn)) != 0)
		return n;
	if ((n = key_revoke_txn(s, txn, kid)) <= 0) {
		mdb_txn_abort(txn);
		return n == 0 ? STORE_ENOTFOUND : n;
	}
	return store_commit(txn, "keys");
}

struct key_each {
	int	(*cb)(const struct store_key *, void *);
	void	*arg;
};

static int
key_each1(const MDB_val *k, const MDB_val *v, void *arg)
{
	struct key_each		*ke = arg;
	struct store_key	 key;

	(void)k;
	if (key_unpack(v, &key) != 0)
		return 0;
	return ke->cb(&key, ke->arg) != 0 ? 1 : 0;
}

int
store_key_foreach(struct store *s, int (*cb)(const struct store_key *, void *),
    void *arg)
{
	struct key_each ke = { cb, arg };

	return store_iter(s, DB_KEYS, key_each1, &ke);
}

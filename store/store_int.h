/*
 * store_int.h - what the store's table families (store.c, clock.c, lease.c,
 * usage.c, keys.c) share: the environment, its databases, the value packing
 * and the transaction helpers. Only the .c files of store/ include it;
 * everyone else sees store.h.
 *
 * Values are a small hand-packed layout led by a version byte: the records
 * are flat and bounded, so a fixed layout is smaller than msgpack and its
 * decoder can check every length against both the value and the target
 * field. Integers are big-endian so that seq keys sort by age.
 */
#ifndef STORE_INT_H
#define STORE_INT_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

#include <lmdb.h>
#include <openssl/evp.h>

#include "log.h"
#include "proc.h"
#include "store.h"

#define STORE_VERSION	1
#define STORE_VALMAX	1024	/* largest packed record (a key: ~630) */
#define DEDUP_GENS	5	/* generations: one filling, four older */

/* The order of store_dbnames (store.c); the names are the on-disk format. */
enum store_db {
	DB_LEASES, DB_REJECTS, DB_SPOOL, DB_META, DB_KEYS, DB_LEDGER,
	DB_REJECT_TIME, DB_SEATS, DB_GRANTS, DB_MYGRANTS, DB_DEDUP0,
	DB_COUNT = DB_DEDUP0 + DEDUP_GENS
};

struct store {
	MDB_env		*env;
	MDB_dbi		 dbi[DB_COUNT];
	unsigned int	 have;		/* bit per db that exists */
	int		 rdonly;
	MDB_txn		*rtxn;		/* reset read txn kept for reuse */
	MDB_txn		*snap;		/* open snapshot (store_snapshot) */
	unsigned char	 boot[PROC_BOOT_ID_LEN]; /* read once (zero: unknown) */
	int64_t		 trust_wall;	/* store_clock_tick's base ... */
	int64_t		 trust_boot;	/* ... and CLOCK_BOOTTIME then */
	uint64_t	 mark;		/* the clock mark a snapshot read, */
	uint64_t	 mark_txnid;	/* in that txn id + 1 (0: none) */
	int64_t		 dedup_window;	/* s, usage.dedup_window */
	uint64_t	 dedup_pruned;	/* dropped early to make room */
	/*
	 * The de-dup hash's digest, fetched once: SHA256() looks the
	 * algorithm up and allocates a context on every call, which cost
	 * more than the B-tree insert the hash goes into.
	 */
	EVP_MD		*sha;
	EVP_MD_CTX	*shactx;
};

struct wbuf {
	unsigned char	 b[STORE_VALMAX];
	size_t		 len;
	int		 err;
};

struct rbuf {
	const unsigned char	*p;
	size_t			 len, off;
	int			 err;
};

#define HAVE(s, db)	(((s)->have & (1u << (db))) != 0)

/* ---- packing ---- */

static inline void
wb_u8(struct wbuf *w, unsigned int v)
{
	if (v > 0xff || w->len + 1 > sizeof(w->b)) {
		w->err = 1;
		return;
	}
	w->b[w->len++] = v;
}

static inline void
wb_u64(struct wbuf *w, uint64_t v)
{
	uint64_t be = htobe64(v);

	if (w->len + 8 > sizeof(w->b)) {
		w->err = 1;
		return;
	}
	memcpy(w->b + w->len, &be, 8);
	w->len += 8;
}

/* A field without its NUL inside fsz bytes is a caller bug: refuse it. */
static inline void
wb_str(struct wbuf *w, const char *s, size_t fsz)
{
	size_t l = strnlen(s, fsz);

	if (l == fsz || l > 0xff || w->len + 1 + l > sizeof(w->b)) {
		w->err = 1;
		return;
	}
	w->b[w->len++] = l;
	memcpy(w->b + w->len, s, l);
	w->len += l;
}

static inline unsigned int
rb_u8(struct rbuf *r)
{
	if (r->off + 1 > r->len) {
		r->err = 1;
		return 0;
	}
	return r->p[r->off++];
}

static inline uint64_t
rb_u64(struct rbuf *r)
{
	uint64_t be;

	if (r->off + 8 > r->len) {
		r->err = 1;
		return 0;
	}
	memcpy(&be, r->p + r->off, 8);
	r->off += 8;
	return be64toh(be);
}

static inline void
rb_str(struct rbuf *r, char *dst, size_t dsz)
{
	size_t l = rb_u8(r);

	if (r->err || l >= dsz || r->off + l > r->len ||
	    memchr(r->p + r->off, '\0', l) != NULL) {
		r->err = 1;
		dst[0] = '\0';
		return;
	}
	memcpy(dst, r->p + r->off, l);
	dst[l] = '\0';
	r->off += l;
}

static inline void
rb_init(struct rbuf *r, const MDB_val *v)
{
	r->p = v->mv_data;
	r->len = v->mv_size;
	r->off = 0;
	r->err = 0;
	if (rb_u8(r) != STORE_VERSION)
		r->err = 1;
}

/*
 * Every decoder starts here: the target is cleared first so that a
 * record that fails half way leaves no stale fields behind.
 */
static inline void
rb_open(struct rbuf *r, const MDB_val *v, void *dst, size_t dsz)
{
	memset(dst, 0, dsz);
	rb_init(r, v);
}

/* The decoder must have consumed the value exactly. */
static inline int
rb_done(const struct rbuf *r, const char *what)
{
	if (r->err || r->off != r->len) {
		log_warnx("store: corrupt %s record", what);
		return -1;
	}
	return 0;
}

static inline uint64_t
be64_get(const void *p)
{
	uint64_t be;

	memcpy(&be, p, 8);
	return be64toh(be);
}

static inline void
be64_put(void *p, uint64_t v)
{
	uint64_t be = htobe64(v);

	memcpy(p, &be, 8);
}

/* ---- transactions and errors (store.c) ---- */

/* Map an LMDB code to ours (STORE_ENOTFOUND, STORE_EFULL, -1). */
int	store_err(int rc, const char *what);
/* Begin, repairing a grown map or full reader table once. */
int	store_begin(struct store *, int write, MDB_txn **);
/* The snapshot or the kept read txn; give it back with store_rend. */
int	store_rbegin(struct store *, MDB_txn **);
void	store_rend(struct store *, MDB_txn *);
/* Commit durably; a short write on a full disk is STORE_EFULL. */
int	store_commit(MDB_txn *, const char *what);
/* Look up k in db and hand the value to fn inside the read txn. */
int	store_read(struct store *, int db, MDB_val *k,
	    int (*fn)(const MDB_val *, void *), void *arg);
/* One put (v != NULL) or delete, committed durably. */
int	store_write1(struct store *, int db, MDB_val *k, MDB_val *v);
/* Walk db in key order in one read txn; fn returns non-zero to stop. */
int	store_iter(struct store *, int db,
	    int (*fn)(const MDB_val *, const MDB_val *, void *), void *arg);
/* 8-byte counters of the meta db; an absent one reads 0. */
int	store_meta_get(struct store *, MDB_txn *, const char *name,
	    uint64_t *val);
int	store_meta_put(struct store *, MDB_txn *, const char *name,
	    uint64_t val);

#endif

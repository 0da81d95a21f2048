/*
 * store.c - the one LMDB environment shared by the workers, the uplink (or
 * issuer) and the CLI. Every process opens it after fork; LMDB's own locking
 * makes the writers take turns and lets readers run alongside them.
 *
 * Values are a small hand-packed layout led by a version byte: the records
 * are flat and bounded, so a fixed layout is smaller than msgpack and its
 * decoder can check every length against both the value and the target
 * field. Integers are big-endian so that seq keys sort by age.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/statvfs.h>

#include <lmdb.h>
#include <openssl/sha.h>

#include "log.h"
#include "proc.h"
#include "store.h"
#include "seats_int.h"

#define STORE_VERSION	1
#define STORE_KIDLEN	16
#define STORE_IDMAX	64
#define STORE_MAXREADERS 256
#define STORE_VALMAX	1024	/* largest packed record (a key: ~630) */
#define STORE_SALVAGE	"The store is damaged: stop licproxy, restore it" \
	" from backup, or salvage what still reads with mdb_dump -a and" \
	" mdb_load into a new directory, or move it aside to start with" \
	" an empty store"

#define DEDUP_HASHLEN	8	/* bytes of SHA-256(key_id || id) kept */
#define DEDUP_ROOM_TRIES DEDUP_GENS	/* a full store drops a generation */
#define DISK_SHORT_BYTES (1u << 20)	/* an EIO with less free is a full disk */

#define DEDUP_GENS	5	/* generations: one filling, four older */

enum store_db {
	DB_LEASES, DB_REJECTS, DB_SPOOL, DB_META, DB_KEYS, DB_LEDGER,
	DB_REJECT_TIME, DB_SEATS, DB_GRANTS, DB_MYGRANTS, DB_DEDUP0,
	DB_COUNT = DB_DEDUP0 + DEDUP_GENS
};

static const char *const store_dbnames[DB_COUNT] = {
	"leases", "rejects", "spool", "meta", "keys", "ledger", "reject_time",
	"seats", "grants", "mygrants",
	"dedup0", "dedup1", "dedup2", "dedup3", "dedup4"
};

struct store {
	MDB_env		*env;
	MDB_dbi		 dbi[DB_COUNT];
	unsigned int	 have;		/* bit per db that exists */
	int		 rdonly;
	MDB_txn		*rtxn;		/* reset read txn kept for reuse */
	MDB_txn		*snap;		/* open snapshot (store_snapshot) */
	unsigned char	 boot[16];	/* boot id, read once (zero: unknown) */
	int64_t		 trust_wall;	/* store_clock_tick's base ... */
	int64_t		 trust_boot;	/* ... and CLOCK_BOOTTIME then */
	int64_t		 dedup_window;	/* s, usage.dedup_window */
	uint64_t	 dedup_pruned;	/* dropped early to make room */
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

static void
wb_u8(struct wbuf *w, unsigned int v)
{
	if (v > 0xff || w->len + 1 > sizeof(w->b)) {
		w->err = 1;
		return;
	}
	w->b[w->len++] = v;
}

static void
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
static void
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

static unsigned int
rb_u8(struct rbuf *r)
{
	if (r->off + 1 > r->len) {
		r->err = 1;
		return 0;
	}
	return r->p[r->off++];
}

static uint64_t
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

static void
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

static void
rb_init(struct rbuf *r, const MDB_val *v)
{
	r->p = v->mv_data;
	r->len = v->mv_size;
	r->off = 0;
	r->err = 0;
	if (rb_u8(r) != STORE_VERSION)
		r->err = 1;
}

/* The decoder must have consumed the value exactly. */
static int
rb_done(const struct rbuf *r, const char *what)
{
	if (r->err || r->off != r->len) {
		log_warnx("store: corrupt %s record", what);
		return -1;
	}
	return 0;
}

static uint64_t
be64_get(const void *p)
{
	uint64_t be;

	memcpy(&be, p, 8);
	return be64toh(be);
}

static void
be64_put(void *p, uint64_t v)
{
	uint64_t be = htobe64(v);

	memcpy(p, &be, 8);
}

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

	memset(r, 0, sizeof(*r));
	rb_init(&rb, v);
	q = rb_u64(&rb);
	memcpy(&r->quantity, &q, 8);
	rb_str(&rb, r->kid, sizeof(r->kid));
	rb_str(&rb, r->id, sizeof(r->id));
	rb_str(&rb, r->product, sizeof(r->product));
	rb_str(&rb, r->metric, sizeof(r->metric));
	rb_str(&rb, r->ts, sizeof(r->ts));
	return rb_done(&rb, "usage");
}

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
	if (k->n_products < 0 || k->n_products > 16) {
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

	memset(k, 0, sizeof(*k));
	rb_init(&rb, v);
	k->role = rb_u8(&rb);
	k->revoked = rb_u8(&rb);
	k->expires = (int64_t)rb_u64(&rb);
	k->created = (int64_t)rb_u64(&rb);
	rb_str(&rb, k->kid, sizeof(k->kid));
	rb_str(&rb, k->name, sizeof(k->name));
	k->n_products = rb_u8(&rb);
	if (k->n_products > 16)
		rb.err = 1;
	for (i = 0; !rb.err && i < k->n_products; i++)
		rb_str(&rb, k->products[i], sizeof(k->products[i]));
	if (!rb.err && rb.off < rb.len)
		k->seats = (int64_t)rb_u64(&rb);
	return rb_done(&rb, "key");
}

/* ---- transactions and errors ---- */

/* Map an LMDB code to ours; only the unexpected ones are worth a log. */
int
store_err(int rc, const char *what)
{
	static time_t	full_logged;

	switch (rc) {
	case MDB_NOTFOUND:
		return STORE_ENOTFOUND;
	case MDB_MAP_FULL:
		/* A full store stays full for a while: say so once a minute. */
		if (time(NULL) - full_logged >= 60) {
			full_logged = time(NULL);
			log_warnx("store: %s: map full (raise store.max_size)",
			    what);
		}
		return STORE_EFULL;
	case ENOSPC:
	case EDQUOT:
		/* The disk, not the map: the same answer, 507, never a 500. */
		if (time(NULL) - full_logged >= 60) {
			full_logged = time(NULL);
			log_warnx("store: %s: %s (free disk space under "
			    "store.path)", what, mdb_strerror(rc));
		}
		return STORE_EFULL;
	default:
		log_warnx("store: %s: %s", what, mdb_strerror(rc));
		return -1;
	}
}

/*
 * Another process may have grown the map, or killed processes may hold
 * every reader slot: both are repaired here and the begin retried once.
 */
int
store_begin(struct store *s, int write, MDB_txn **txn)
{
	int	rc, i, dead;

	if (write && s->rdonly) {
		log_warnx("store: write on a read-only store");
		return -1;
	}
	for (i = 0; i < 2; i++) {
		rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, txn);
		if (rc == 0)
			return 0;
		if (rc == MDB_MAP_RESIZED)
			rc = mdb_env_set_mapsize(s->env, 0);
		else if (rc == MDB_READERS_FULL)
			rc = mdb_reader_check(s->env, &dead);
		if (rc != 0)
			break;
	}
	return store_err(rc, "begin");
}

/*
 * Lookups on the request path reuse one reset read transaction: renewing
 * it keeps its reader slot, where a fresh begin takes the reader mutex.
 */
static int
store_rbegin(struct store *s, MDB_txn **txn)
{
	if (s->snap != NULL) {
		*txn = s->snap;
		return 0;
	}
	if (s->rtxn != NULL) {
		*txn = s->rtxn;
		s->rtxn = NULL;
		if (mdb_txn_renew(*txn) == 0)
			return 0;
		mdb_txn_abort(*txn);	/* e.g. the map grew: start afresh */
	}
	return store_begin(s, 0, txn);
}

static void
store_rend(struct store *s, MDB_txn *txn)
{
	if (txn == s->snap)
		return;
	if (s->rtxn != NULL) {
		mdb_txn_abort(txn);
		return;
	}
	mdb_txn_reset(txn);
	s->rtxn = txn;
}

int
store_snapshot(struct store *s)
{
	MDB_txn *txn;

	if (s->snap != NULL)
		return 0;
	if (store_rbegin(s, &txn) != 0)
		return -1;
	s->snap = txn;
	return 0;
}

void
store_snapshot_end(struct store *s)
{
	MDB_txn *txn = s->snap;

	if (txn == NULL)
		return;
	s->snap = NULL;
	store_rend(s, txn);
}

/*
 * LMDB turns a short write into EIO: a page write that ran out of disk
 * half way. With the disk (nearly) full, that EIO is a full disk.
 */
static int
store_disk_short(MDB_env *env)
{
	struct statvfs	 vfs;
	const char	*path;

	if (mdb_env_get_path(env, &path) != 0 || statvfs(path, &vfs) == -1)
		return 0;
	return (uint64_t)vfs.f_bavail * vfs.f_frsize < DISK_SHORT_BYTES;
}

int
store_commit(MDB_txn *txn, const char *what)
{
	MDB_env	*env = mdb_txn_env(txn);
	int	 rc;

	if ((rc = mdb_txn_commit(txn)) == 0)
		return 0;
	if (rc == EIO && store_disk_short(env))
		rc = ENOSPC;
	return store_err(rc, what);
}

int
store_seats_dbi(struct store *s, enum store_seats_db which, MDB_dbi *dbi)
{
	int db = DB_SEATS + (int)which;

	if (!HAVE(s, db))
		return -1;
	*dbi = s->dbi[db];
	return 0;
}

/* Read one value and hand it to fn inside the read transaction. */
static int
store_read(struct store *s, int db, MDB_val *k,
    int (*fn)(const MDB_val *, void *), void *arg)
{
	MDB_txn	*txn;
	MDB_val	 v;
	int	 rc, ret;

	if (!HAVE(s, db))
		return STORE_ENOTFOUND;
	if ((ret = store_rbegin(s, &txn)) != 0)
		return ret;
	rc = mdb_get(txn, s->dbi[db], k, &v);
	if (rc == 0)
		ret = fn(&v, arg);
	else
		ret = store_err(rc, store_dbnames[db]);
	store_rend(s, txn);
	return ret;
}

/* One put (v != NULL) or delete, committed durably. */
static int
store_write1(struct store *s, int db, MDB_val *k, MDB_val *v)
{
	MDB_txn	*txn;
	int	 rc, ret;

	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if (v != NULL)
		rc = mdb_put(txn, s->dbi[db], k, v, 0);
	else
		rc = mdb_del(txn, s->dbi[db], k, NULL);
	if (rc != 0) {
		mdb_txn_abort(txn);
		return store_err(rc, store_dbnames[db]);
	}
	return store_commit(txn, store_dbnames[db]);
}

/* Walk a db in key order in one read txn; fn returns non-zero to stop. */
static int
store_iter(struct store *s, int db,
    int (*fn)(const MDB_val *, const MDB_val *, void *), void *arg)
{
	MDB_txn		*txn;
	MDB_cursor	*cur = NULL;
	MDB_val		 k, v;
	int		 rc, ret;

	if (!HAVE(s, db))
		return 0;
	if ((ret = store_begin(s, 0, &txn)) != 0)
		return ret;
	if ((rc = mdb_cursor_open(txn, s->dbi[db], &cur)) != 0) {
		ret = store_err(rc, store_dbnames[db]);
		goto done;
	}
	while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0)
		if ((ret = fn(&k, &v, arg)) != 0)
			break;
	if (rc != 0 && rc != MDB_NOTFOUND)
		ret = store_err(rc, store_dbnames[db]);
	else if (ret > 0)
		ret = 0;
done:
	if (cur != NULL)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return ret;
}

static int
meta_get(struct store *s, MDB_txn *txn, const char *name, uint64_t *val)
{
	MDB_val	k, v;
	int	rc;

	*val = 0;
	if (!HAVE(s, DB_META))
		return 0;
	k.mv_data = (void *)name;
	k.mv_size = strlen(name);
	rc = mdb_get(txn, s->dbi[DB_META], &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return store_err(rc, "meta");
	if (v.mv_size != 8) {
		log_warnx("store: corrupt meta %s", name);
		return -1;
	}
	*val = be64_get(v.mv_data);
	return 0;
}

static int
meta_put(struct store *s, MDB_txn *txn, const char *name, uint64_t val)
{
	unsigned char	b[8];
	MDB_val		k, v;
	int		rc;

	be64_put(b, val);
	k.mv_data = (void *)name;
	k.mv_size = strlen(name);
	v.mv_data = b;
	v.mv_size = sizeof(b);
	if ((rc = mdb_put(txn, s->dbi[DB_META], &k, &v, 0)) != 0)
		return store_err(rc, "meta");
	return 0;
}

/* ---- open / close ---- */

static int
store_mkdirs(const char *dir)
{
	char	path[PATH_MAX], *p;
	int	n;

	n = snprintf(path, sizeof(path), "%s", dir);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (p = path + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) == -1 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(path, 0700) == -1 && errno != EEXIST)
		return -1;
	return 0;
}

/*
 * Read-only opens tolerate missing dbs: an absent db reads as empty.
 * Returns 0, a store_err code, or an LMDB code (for store_why).
 */
static int
store_open_dbs(struct store *s)
{
	MDB_txn	*txn;
	int	 i, rc, ret;

	if ((ret = store_begin(s, !s->rdonly, &txn)) != 0)
		return ret;
	for (i = 0; i < DB_COUNT; i++) {
		rc = mdb_dbi_open(txn, store_dbnames[i],
		    s->rdonly ? 0 : MDB_CREATE, &s->dbi[i]);
		if (rc == MDB_NOTFOUND && s->rdonly)
			continue;
		if (rc != 0) {
			/* The caller words this one for the operator. */
			mdb_txn_abort(txn);
			return rc;
		}
		s->have |= 1u << i;
	}
	/* Even a read txn must commit for its dbi handles to outlive it. */
	return store_commit(txn, "open");
}

/* How to tell an operator why an existing store cannot be used. */
static void
store_why(const char *dir, int rc, char *err, size_t errlen)
{
	const char	*why = mdb_strerror(rc), *todo;

	switch (rc) {
	case MDB_INVALID:
		why = "data.mdb is not an LMDB file (a damaged header, or not a"
		    " licproxy store)";
		todo = "Restore it from backup, or move it aside to start with"
		    " an empty store";
		break;
	case MDB_VERSION_MISMATCH:
		why = "data.mdb was written by an incompatible LMDB version";
		todo = "Dump it with that version's mdb_dump and load the dump"
		    " with mdb_load, or restore it from backup";
		break;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_PANIC:
		todo = STORE_SALVAGE;
		break;
	case EACCES:
	case EPERM:
	case EROFS:
		todo = "Give the user licproxy runs as (server.user) read and"
		    " write access to the directory and its files";
		break;
	case ENOTDIR:
		why = "not a directory";
		todo = "Point store.path at a directory";
		break;
	case -1:
		why = "cannot open its databases";
		/* FALLTHROUGH */
	default:
		todo = "Check the directory, its files and the log above";
	}
	snprintf(err, errlen, "store %s: %s. %s", dir, why, todo);
}

/*
 * A 0-byte data.mdb would be taken by LMDB for a new store, wiping every
 * cached lease and spooled record without a word. But a process making a
 * new store holds LMDB's exclusive lock while the file is still empty: a
 * read-only open waits for it, and cannot initialise the file itself.
 */
static int
store_check_empty(const char *dir, char *err, size_t errlen)
{
	char		 path[PATH_MAX];
	struct stat	 sb;
	MDB_env		*env;
	int		 rc;

	if ((size_t)snprintf(path, sizeof(path), "%s/data.mdb", dir) >=
	    sizeof(path) || stat(path, &sb) == -1 || !S_ISREG(sb.st_mode) ||
	    sb.st_size > 0)
		return 0;	/* LMDB reports the other cases */
	if ((rc = mdb_env_create(&env)) == 0) {
		if ((rc = mdb_env_set_maxdbs(env, DB_COUNT + 1)) == 0)
			rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS,
			    0600);
		mdb_env_close(env);
	}
	if (rc == 0)
		return 0;	/* another process has just made it */
	snprintf(err, errlen, "store %s: data.mdb is empty (0 bytes); it is"
	    " not a licproxy store. Move it aside to start with an empty"
	    " store, or restore it from backup", dir);
	return -1;
}

/*
 * A data.mdb shorter than its last page in use (a copy cut short, a full
 * disk during a restore) opens fine but SIGBUSes whoever reads past the end.
 * The meta pages say where the data ends; LMDB read them at open.
 */
static int
store_check_size(struct store *s, const char *dir, char *err, size_t errlen)
{
	MDB_envinfo	 info;
	MDB_stat	 st;
	struct stat	 sb;
	int		 fd;
	uint64_t	 need;

	if (mdb_env_info(s->env, &info) != 0 ||
	    mdb_env_stat(s->env, &st) != 0 ||
	    mdb_env_get_fd(s->env, &fd) != 0 || fstat(fd, &sb) == -1) {
		snprintf(err, errlen, "store %s: cannot read its size", dir);
		return -1;
	}
	need = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
	if ((uint64_t)sb.st_size >= need)
		return 0;
	snprintf(err, errlen, "store %s: data.mdb is truncated (%lld bytes, but"
	    " its data runs to %llu bytes): a copy cut short? Restore the whole"
	    " file from backup, or move it aside to start with an empty store",
	    dir, (long long)sb.st_size, (unsigned long long)need);
	return -1;
}

static int
store_env_setup(struct store *s, uint64_t max_size)
{
	long		pg = sysconf(_SC_PAGESIZE);
	uint64_t	sz;
	int		rc;

	if (pg <= 0)
		pg = 4096;
	if ((rc = mdb_env_set_maxdbs(s->env, DB_COUNT + 1)) != 0 ||
	    (rc = mdb_env_set_maxreaders(s->env, STORE_MAXREADERS)) != 0)
		return rc;
	/* 0 keeps the size recorded in the env (handy for CLI readers). */
	if (max_size == 0)
		return 0;
	if (max_size > SIZE_MAX - (uint64_t)pg)
		return EINVAL;
	sz = (max_size + pg - 1) / pg * pg;
	return mdb_env_set_mapsize(s->env, (size_t)sz);
}

struct store *
store_open(const char *dir, uint64_t max_size, int flags, char *err,
    size_t errlen)
{
	struct store	*s = NULL;
	unsigned int	 eflags = MDB_NOTLS;
	char		 why[1024];
	int		 rc = -1, dead;

	why[0] = '\0';
	if (dir == NULL || *dir == '\0') {
		rc = EINVAL;
		goto fail;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		rc = errno;
		goto fail;
	}
	s->rdonly = (flags & STORE_RDONLY) != 0;
	/* Read before a worker's sandbox; zero (never "same boot") if not. */
	proc_boot_id(s->boot);
	if (s->rdonly)
		eflags |= MDB_RDONLY;
	else if (store_mkdirs(dir) == -1) {
		rc = errno;
		goto fail;
	}
	if (store_check_empty(dir, why, sizeof(why)) == -1)
		goto fail;
	if ((rc = mdb_env_create(&s->env)) != 0 ||
	    (rc = store_env_setup(s, max_size)) != 0 ||
	    (rc = mdb_env_open(s->env, dir, eflags, 0600)) != 0)
		goto fail;
	if (store_check_size(s, dir, why, sizeof(why)) == -1)
		goto fail;
	/* A killed process may have left its reader slot behind. */
	if ((rc = mdb_reader_check(s->env, &dead)) != 0)
		goto fail;
	if (dead > 0)
		log_info("store: cleared %d stale reader(s)", dead);
	if ((rc = store_open_dbs(s)) != 0)
		goto fail;
	return s;
fail:
	if (why[0] == '\0')
		store_why(dir ? dir : "", rc, why, sizeof(why));
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s", why);
	store_close(s);
	return NULL;
}

/*
 * serve's startup check: the first and the last record of every db, which
 * walks each tree from its root down both edges. Cheap whatever the size,
 * and where damaged pages show first.
 */
int
store_check(struct store *s, const char *dir, char *err, size_t errlen)
{
	MDB_txn		*txn;
	MDB_cursor	*c;
	MDB_val		 k, v;
	int		 i, rc = 0;

	if (store_rbegin(s, &txn) != 0) {
		store_why(dir, -1, err, errlen);
		return -1;
	}
	for (i = 0; i < DB_COUNT && rc == 0; i++) {
		if (!HAVE(s, i))
			continue;
		if ((rc = mdb_cursor_open(txn, s->dbi[i], &c)) != 0)
			break;
		if ((rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) == 0)
			rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
		mdb_cursor_close(c);
		if (rc == MDB_NOTFOUND)
			rc = 0;
	}
	store_rend(s, txn);
	if (rc != 0) {
		store_why(dir, rc, err, errlen);
		return -1;
	}
	return 0;
}

void
store_close(struct store *s)
{
	if (s == NULL)
		return;
	if (s->rtxn != NULL)
		mdb_txn_abort(s->rtxn);
	if (s->env != NULL)
		mdb_env_close(s->env);
	free(s);
}

int
store_reader_check(struct store *s)
{
	int rc, dead = 0;

	if ((rc = mdb_reader_check(s->env, &dead)) != 0)
		return store_err(rc, "reader check");
	return dead;
}

/* ---- clock ---- */

int64_t
store_now(struct store *s)
{
	MDB_txn		*txn;
	uint64_t	 mark = 0;
	int64_t		 now = time(NULL);

	if (store_rbegin(s, &txn) != 0)
		return now;
	if (meta_get(s, txn, "clock", &mark) != 0)
		mark = 0;
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
	if ((ret = meta_get(s, txn, "clock", &mark)) != 0)
		goto fail;
	if (now <= (int64_t)mark) {
		mdb_txn_abort(txn);
		return 0;
	}
	if ((ret = meta_put(s, txn, "clock", (uint64_t)now)) != 0)
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
			if (meta_get(s, txn, "clock", &mark) != 0)
				mark = 0;
			store_rend(s, txn);
		}
		s->trust_wall = mark != 0 ? (int64_t)mark : time(NULL);
		s->trust_boot = proc_boot_ms();
	}
	return store_clock_advance(s, s->trust_wall +
	    (proc_boot_ms() - s->trust_boot) / 1000);
}

/* ---- lease time (SPEC 2): see store.h ---- */

static const unsigned char no_boot[16];

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
	be64_put(b, (uint64_t)t->exp);
	b[8] = LEASE_MAGIC;
	be64_put(b + 9, (uint64_t)t->rat);
	memcpy(b + 17, t->boot, sizeof(t->boot));
	be64_put(b + 33, (uint64_t)t->recv_ms);
	be64_put(b + 41, (uint64_t)t->life_ms);
	be64_put(b + 49, (uint64_t)t->refresh_ms);
	memcpy(b + LEASE_HDR, tok, len);
	v.mv_data = b;
	v.mv_size = len + LEASE_HDR;
	ret = store_write1(s, DB_LEASES, &k, &v);
	free(b);
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

int
store_size(struct store *s, uint64_t *used, uint64_t *max)
{
	MDB_envinfo	info;
	MDB_stat	st;

	if (mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &st) != 0)
		return -1;
	*used = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
	*max = info.me_mapsize;
	return 0;
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
	char			 reason[256];
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
	wb_str(&w, reason, 256);
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

	if (kid == NULL || strlen(kid) != STORE_KIDLEN)
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

/* ---- usage ---- */

static int
rec_valid(const struct usage_rec *r)
{
	size_t idl = strnlen(r->id, sizeof(r->id));

	return strnlen(r->kid, sizeof(r->kid)) == STORE_KIDLEN &&
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

	memcpy(buf, r->kid, STORE_KIDLEN);
	memcpy(buf + STORE_KIDLEN, r->id, idl);
	k->mv_data = buf;
	k->mv_size = STORE_KIDLEN + idl;
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
};

static void
dedup_hash(const struct usage_rec *r, unsigned char h[DEDUP_HASHLEN])
{
	unsigned char	idbuf[STORE_KIDLEN + STORE_IDMAX];
	unsigned char	md[SHA256_DIGEST_LENGTH];
	MDB_val		k;

	rec_idkey(r, idbuf, &k);
	SHA256(k.mv_data, k.mv_size, md);
	memcpy(h, md, DEDUP_HASHLEN);
}

static int
dedup_io(struct store *s, MDB_txn *txn, struct dedup_gens *dg, int save)
{
	char	name[16];
	int	i, ret;

	ret = save ? meta_put(s, txn, "dedup_g", dg->g) :
	    meta_get(s, txn, "dedup_g", &dg->g);
	for (i = 0; ret == 0 && i < DEDUP_GENS; i++) {
		snprintf(name, sizeof(name), "dedup_t%d", i);
		ret = save ? meta_put(s, txn, name, dg->start[i]) :
		    meta_get(s, txn, name, &dg->start[i]);
	}
	return ret;
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
 * Before an append: rotate once the current generation is a span old,
 * drop every older one whose end is past the window. Returns the slot
 * new entries go into.
 */
static int
dedup_age(struct store *s, MDB_txn *txn, uint64_t now, uint64_t *early)
{
	struct dedup_gens	dg, was;
	int			k, ret;

	if ((ret = dedup_io(s, txn, &dg, 0)) != 0)
		return ret;
	was = dg;
	if (dg.g == 0 && dg.start[0] == 0 && (ret = dedup_drop_legacy(txn)) != 0)
		return ret;
	if (dg.start[dedup_slot(&dg, 0)] == 0 || (s->dedup_window > 0 &&
	    dg.start[dedup_slot(&dg, 0)] + dedup_span(s) <= now)) {
		if ((ret = dedup_rotate(s, txn, &dg, now, early)) != 0)
			return ret;
	}
	for (k = 1; s->dedup_window > 0 && k < DEDUP_GENS; k++)
		if (dg.start[dedup_slot(&dg, k)] != 0 &&
		    dedup_end(s, &dg, k, now) + s->dedup_window <= now &&
		    (ret = dedup_drop(s, txn, &dg, k, now, early)) != 0)
			return ret;
	if (memcmp(&was, &dg, sizeof(dg)) != 0 &&
	    (ret = dedup_io(s, txn, &dg, 1)) != 0)
		return ret;
	return dedup_slot(&dg, 0);
}

/* Returns 1 if h is known, 0 when it was added to slot cur, < 0 on error. */
static int
dedup_add(struct store *s, MDB_txn *txn, unsigned char h[DEDUP_HASHLEN],
    int cur)
{
	MDB_val	k = { DEDUP_HASHLEN, h }, v;
	int	i, rc;

	for (i = 0; i < DEDUP_GENS; i++) {
		rc = mdb_get(txn, s->dbi[DB_DEDUP0 + i], &k, &v);
		if (rc == 0)
			return 1;
		if (rc != MDB_NOTFOUND)
			return store_err(rc, "dedup");
	}
	v.mv_size = 0;
	v.mv_data = h;
	rc = mdb_put(txn, s->dbi[DB_DEDUP0 + cur], &k, &v, 0);
	return rc == 0 ? 0 : store_err(rc, "dedup");
}

/*
 * Returns 1 for a duplicate, 0 when stored, < 0 on error. The ledger is
 * keyed on (key_id, id) itself: at an authority it is the lasting guard
 * once the de-dup entry is gone, and it settles a hash collision.
 */
static int
usage_add1(struct store *s, MDB_txn *txn, const struct usage_rec *r,
    int ledger, int cur, uint64_t *seq)
{
	unsigned char	 idbuf[STORE_KIDLEN + STORE_IDMAX], h[DEDUP_HASHLEN];
	unsigned char	 sb[8];
	struct wbuf	 w = { .len = 0 };
	MDB_val		 k, v;
	int		 rc, known;

	dedup_hash(r, h);
	if ((known = dedup_add(s, txn, h, cur)) < 0)
		return known;
	if (known && !ledger)
		return 1;
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

/* One write transaction: expired de-dup entries out, then the records. */
static int
usage_append_txn(struct store *s, const struct usage_rec *recs, int n,
    int ledger, unsigned char *dup)
{
	MDB_txn		*txn = NULL;
	uint64_t	 seq, mark, early = 0, now = (uint64_t)time(NULL);
	int		 i, ret, cur;

	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((ret = meta_get(s, txn, "seq", &seq)) != 0 ||
	    (ret = meta_get(s, txn, "clock", &mark)) != 0)
		goto fail;
	if (mark > now)
		now = mark;
	if ((ret = cur = dedup_age(s, txn, now, &early)) < 0)
		goto fail;
	for (i = 0; i < n; i++) {
		if ((ret = usage_add1(s, txn, &recs[i], ledger, cur, &seq)) < 0)
			goto fail;
		if (dup != NULL)
			dup[i] = ret;
	}
	if ((!ledger && (ret = meta_put(s, txn, "seq", seq)) != 0) ||
	    (ret = store_commit(txn, "usage")) != 0)
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
	uint64_t		 early = 0, now = (uint64_t)time(NULL);
	int			 k, ret, rc;

	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((ret = dedup_io(s, txn, &dg, 0)) != 0)
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
	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((ret = dedup_io(s, txn, &dg, 1)) != 0)
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
	unsigned char	 sb[8];
	MDB_val		 k = { sizeof(sb), sb };
	const uint64_t	*seqs = a->seqs;
	uint64_t	 fwd, deleted = 0;
	int		 i, rc, ret, n = a->n;

	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	for (i = 0; i < n; i++) {
		be64_put(sb, seqs[i]);
		rc = mdb_del(txn, s->dbi[DB_SPOOL], &k, NULL);
		if (rc == 0)
			deleted++;
		else if (rc != MDB_NOTFOUND) {
			ret = store_err(rc, "spool");
			goto fail;
		}
	}
	if ((ret = meta_get(s, txn, "forwarded", &fwd)) != 0 ||
	    (ret = meta_put(s, txn, "forwarded", fwd + deleted)) != 0)
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
		ret = meta_get(s, txn, "forwarded", &fwd);
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

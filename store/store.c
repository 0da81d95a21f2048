/*
 * store.c - the one LMDB environment shared by the workers, the uplink (or
 * issuer) and the CLI. Every process opens it after fork; LMDB's own locking
 * makes the writers take turns and lets readers run alongside them.
 *
 * This file holds the environment (open, the checks that refuse an empty,
 * truncated or damaged data.mdb, close), the transaction helpers every
 * table family uses, and the meta counters. The tables live by family:
 * clock.c (the clock mark and the lease time rule), lease.c (leases and
 * rejections), usage.c (spool, de-dup index, ledger), keys.c (key registry).
 */
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <openssl/evp.h>

#include "store_int.h"

#define STORE_MAXREADERS 256
#define STORE_SALVAGE	"The store is damaged: stop licproxy, restore it" \
	" from backup, or salvage what still reads with mdb_dump -a and" \
	" mdb_load into a new directory, or move it aside to start with" \
	" an empty store"
#define DISK_SHORT_BYTES (1u << 20)	/* an EIO with less free is a full disk */

static const char *const store_dbnames[DB_COUNT] = {
	"leases", "rejects", "spool", "meta", "keys", "ledger", "reject_time",
	"seats", "grants", "mygrants",
	"dedup0", "dedup1", "dedup2", "dedup3", "dedup4"
};

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
int
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

void
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

/* Read one value and hand it to fn inside the read transaction. */
int
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
int
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
int
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

int
store_meta_get(struct store *s, MDB_txn *txn, const char *name, uint64_t *val)
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

int
store_meta_put(struct store *s, MDB_txn *txn, const char *name, uint64_t val)
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

int
store_self_id(struct store *s, char id[STORE_SELF_ID_LEN + 1])
{
	MDB_txn		*txn;
	uint64_t	 v = 0, fresh = 0;
	int		 ret;

	if ((ret = store_begin(s, 1, &txn)) != 0)
		return -1;
	if (store_meta_get(s, txn, "self_id", &v) != 0 ||
	    store_meta_get(s, txn, "self_new", &fresh) != 0)
		goto fail;
	if (v != 0) {
		mdb_txn_abort(txn);
		snprintf(id, STORE_SELF_ID_LEN + 1, "%016llx",
		    (unsigned long long)v);
		return fresh != 0;
	}
	while (v == 0)	/* 0 reads as absent */
		if (getrandom(&v, sizeof(v), 0) != sizeof(v))
			goto fail;
	if (store_meta_put(s, txn, "self_id", v) != 0 ||
	    store_meta_put(s, txn, "self_new", 1) != 0)
		goto fail;
	if (store_commit(txn, "meta") != 0)
		return -1;
	snprintf(id, STORE_SELF_ID_LEN + 1, "%016llx", (unsigned long long)v);
	return 1;
fail:
	mdb_txn_abort(txn);
	return -1;
}

int
store_self_settled(struct store *s)
{
	MDB_txn	*txn;
	int	 ret;

	if ((ret = store_begin(s, 1, &txn)) != 0)
		return ret;
	if ((ret = store_meta_put(s, txn, "self_new", 0)) != 0) {
		mdb_txn_abort(txn);
		return ret;
	}
	return store_commit(txn, "meta");
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
	EVP_MD_CTX_free(s->shactx);
	EVP_MD_free(s->sha);
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


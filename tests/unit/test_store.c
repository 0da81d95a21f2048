/* test_store.c - the LMDB store: every db, the error paths, two processes. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE	/* nftw */
#endif
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>
#include <openssl/sha.h>

#include "log.h"
#include "store.h"
#include "store_seats.h"

#define MAPSZ	(8ULL << 20)

struct fix {
	char	 dir[64];
	char	 path[128];	/* the env dir: a not-yet-existing subdir */
};

static int
rm1(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(p);
}

static int
setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_store.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/a/b", f->dir);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fix *f = *state;

	nftw(f->dir, rm1, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static struct store *
open_rw(struct fix *f, uint64_t sz)
{
	char		 err[256];
	struct store	*s = store_open(f->path, sz, 0, err, sizeof(err));

	if (s == NULL)
		fail_msg("store_open: %s", err);
	return s;
}

static void
sha_of(unsigned char sha[32], int n)
{
	memset(sha, 0, 32);
	sha[0] = 0xab;
	sha[31] = n;
}

static void
mkrec(struct usage_rec *r, const char *kid, const char *id,
    const char *product, const char *metric, double q)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->kid, sizeof(r->kid), "%s", kid);
	snprintf(r->id, sizeof(r->id), "%s", id);
	snprintf(r->product, sizeof(r->product), "%s", product);
	snprintf(r->metric, sizeof(r->metric), "%s", metric);
	r->quantity = q;
	snprintf(r->ts, sizeof(r->ts), "2026-11-26T16:00:00Z");
}

/* A lease time under the wall-clock rule (received in no known boot). */
static const struct store_lease_time *
lt(int64_t exp)
{
	static struct store_lease_time t;

	memset(&t, 0, sizeof(t));
	t.exp = t.rat = exp;
	return &t;
}

static int
lease_count(struct store *s, const struct store_clock *c, uint64_t *total,
    uint64_t *valid)
{
	struct store_lease_counts	n;
	int				r = store_lease_count(s, c, &n);

	*total = n.total;
	*valid = n.valid;
	return r;
}

static const struct store_clock *
wall(int64_t now)
{
	static struct store_clock c;

	memset(&c, 0, sizeof(c));
	c.wall = now;
	return &c;
}

static const char KID1[] = "0123456789abcdef";
static const char KID2[] = "fedcba9876543210";

static void
t_open_persist(void **state)
{
	struct fix	*f = *state;
	struct store	*s;
	unsigned char	 sha[32];
	char		 buf[64];
	struct stat	 sb;

	s = open_rw(f, MAPSZ);
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	sha_of(sha, 1);
	assert_int_equal(store_lease_put(s, sha, "tok.sig", 7, lt(100)), 0);
	assert_int_equal(store_reader_check(s), 0);
	store_close(s);

	s = open_rw(f, MAPSZ);
	assert_int_equal(store_lease_get(s, sha, buf, sizeof(buf), NULL), 7);
	assert_string_equal(buf, "tok.sig");
	store_close(s);

	/* A read-only open of an existing env sees the same data. */
	s = store_open(f->path, 0, STORE_RDONLY, buf, sizeof(buf));
	assert_non_null(s);
	assert_int_equal(store_lease_get(s, sha, buf, sizeof(buf), NULL), 7);
	assert_string_equal(buf, "tok.sig");
	assert_int_equal(store_lease_put(s, sha, "x", 1, lt(1)), -1);
	store_close(s);
	store_close(NULL);
}

static void
t_rdonly_missing(void **state)
{
	struct fix	*f = *state;
	struct stat	 sb;
	char		 err[256];

	assert_null(store_open(f->path, MAPSZ, STORE_RDONLY, err,
	    sizeof(err)));
	assert_non_null(strstr(err, f->path));
	assert_int_equal(stat(f->path, &sb), -1);
	assert_null(store_open(NULL, MAPSZ, 0, err, sizeof(err)));
	assert_null(store_open("", MAPSZ, 0, NULL, 0));
}

/* Write data.mdb (len bytes of fill, or junk) into the env dir. */
static void
put_data(struct fix *f, size_t len, int junk)
{
	char	 path[192];
	FILE	*fp;
	size_t	 i;

	mkdir(f->dir, 0700);
	snprintf(path, sizeof(path), "%s/a", f->dir);
	mkdir(path, 0700);
	mkdir(f->path, 0700);
	snprintf(path, sizeof(path), "%s/data.mdb", f->path);
	assert_non_null(fp = fopen(path, "wb"));
	for (i = 0; i < len; i++)
		fputc(junk ? (int)((i * 7919 + 13) & 0xff) : 0, fp);
	fclose(fp);
}

static off_t
data_size(struct fix *f)
{
	char		path[192];
	struct stat	sb;

	snprintf(path, sizeof(path), "%s/data.mdb", f->path);
	assert_int_equal(stat(path, &sb), 0);
	return sb.st_size;
}

static void
t_open_refuses_empty(void **state)
{
	struct fix	*f = *state;
	char		 err[1024];

	put_data(f, 0, 0);
	assert_null(store_open(f->path, MAPSZ, 0, err, sizeof(err)));
	assert_non_null(strstr(err, f->path));
	assert_non_null(strstr(err, "empty (0 bytes)"));
	assert_null(store_open(f->path, MAPSZ, STORE_RDONLY, err,
	    sizeof(err)));
	assert_int_equal(data_size(f), 0);	/* not made a new store */
}

static void
t_open_refuses_junk(void **state)
{
	struct fix	*f = *state;
	char		 err[1024];

	put_data(f, 65536, 1);
	assert_null(store_open(f->path, MAPSZ, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "not an LMDB file"));
	assert_int_equal(data_size(f), 65536);
}

static void
t_open_refuses_truncated(void **state)
{
	struct fix	*f = *state;
	struct store	*s = open_rw(f, MAPSZ);
	char		 err[1024], path[192];
	unsigned char	 sha[32];
	char		 tok[900];
	int		 i;

	memset(tok, 'x', sizeof(tok));
	for (i = 0; i < 200; i++) {
		sha_of(sha, i);
		sha[1] = i >> 8;
		assert_int_equal(store_lease_put(s, sha, tok, sizeof(tok), lt(1)),
		    0);
	}
	assert_int_equal(store_check(s, f->path, err, sizeof(err)), 0);
	store_close(s);
	snprintf(path, sizeof(path), "%s/data.mdb", f->path);
	assert_true(data_size(f) > 40 * 4096);
	assert_int_equal(truncate(path, data_size(f) / 2 / 4096 * 4096), 0);
	assert_null(store_open(f->path, MAPSZ, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "data.mdb is truncated"));
	assert_null(store_open(f->path, 0, STORE_RDONLY, err, sizeof(err)));
	assert_non_null(strstr(err, "data.mdb is truncated"));
}

/*
 * The page of data.mdb that holds marker. Copy-on-write leaves older
 * copies of a leaf behind, so the marker must be in the last write only.
 */
static long
page_of(const char *file, const char *marker)
{
	char	 pg[4096];
	FILE	*fp;
	long	 n, found = -1;

	assert_non_null(fp = fopen(file, "rb"));
	for (n = 0; fread(pg, 1, sizeof(pg), fp) == sizeof(pg); n++)
		if (memmem(pg, sizeof(pg), marker, strlen(marker)) != NULL) {
			assert_int_equal(found, -1);
			found = n;
		}
	fclose(fp);
	return found;
}

/* A damaged leaf that opening does not touch: store_check finds it. */
static void
t_check_finds_damage(void **state)
{
	struct fix	*f = *state;
	struct store	*s = open_rw(f, MAPSZ);
	char		 err[1024], path[192], zero[4096];
	unsigned char	 sha[32];
	FILE		*fp;
	long		 pg;
	int		 i;

	for (i = 0; i < 20; i++) {
		sha_of(sha, i);
		assert_int_equal(store_lease_put(s, sha, i < 19 ? "tok" :
		    "tok-marker-19", i < 19 ? 3 : 13, lt(1)), 0);
	}
	store_close(s);
	snprintf(path, sizeof(path), "%s/data.mdb", f->path);
	pg = page_of(path, "tok-marker-19");
	assert_true(pg >= 2);
	memset(zero, 0, sizeof(zero));
	assert_non_null(fp = fopen(path, "r+b"));
	assert_int_equal(fseek(fp, pg * 4096, SEEK_SET), 0);
	assert_int_equal(fwrite(zero, 1, sizeof(zero), fp), sizeof(zero));
	fclose(fp);
	s = open_rw(f, MAPSZ);
	assert_int_equal(store_check(s, f->path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, f->path));
	assert_non_null(strstr(err, "damaged"));
	store_close(s);
}

static void
t_lease(void **state)
{
	struct fix	*f = *state;
	struct store	*s = open_rw(f, MAPSZ);
	unsigned char	 a[32], b[32], c[32];
	char		 buf[16];
	uint64_t	 total = 99, valid = 99;

	sha_of(a, 1);
	sha_of(b, 2);
	sha_of(c, 3);
	assert_int_equal(store_lease_get(s, a, buf, sizeof(buf), NULL),
	    STORE_ENOTFOUND);
	assert_int_equal(lease_count(s, wall(1000), &total, &valid), 0);
	assert_int_equal(total, 0);
	assert_int_equal(valid, 0);
	assert_int_equal(store_lease_put(s, a, "aaaa", 4, lt(2000)), 0);
	assert_int_equal(store_lease_put(s, b, "bbbbbbbbbb", 10, lt(500)), 0);
	assert_int_equal(store_lease_put(s, c, "cc", 2, lt(1000)), 0);
	assert_int_equal(store_lease_put(s, c, "", 0, lt(1000)), -1);
	/* Replacing keeps one entry and the new token. */
	assert_int_equal(store_lease_put(s, c, "ccc", 3, lt(1001)), 0);
	assert_int_equal(store_lease_get(s, c, buf, sizeof(buf), NULL), 3);
	assert_string_equal(buf, "ccc");
	/* Exactly len + 1 is enough; len is not. */
	assert_int_equal(store_lease_get(s, b, buf, 11, NULL), 10);
	assert_int_equal(store_lease_get(s, b, buf, 10, NULL), -1);
	assert_int_equal(lease_count(s, wall(1000), &total, &valid), 0);
	assert_int_equal(total, 3);
	assert_int_equal(valid, 2);
	assert_int_equal(lease_count(s, wall(2000), &total, &valid), 0);
	assert_int_equal(valid, 0);
	assert_int_equal(store_lease_del(s, a), 0);
	assert_int_equal(store_lease_del(s, a), STORE_ENOTFOUND);
	assert_int_equal(store_lease_get(s, a, buf, sizeof(buf), NULL),
	    STORE_ENOTFOUND);
	assert_int_equal(lease_count(s, wall(0), &total, &valid), 0);
	assert_int_equal(total, 2);
	assert_int_equal(valid, 2);
	store_close(s);
}

struct lease_seen {
	int	n;
	size_t	len[4];
	char	tok[4][16];
	int	stop_after;
};

static int
lease_cb(const unsigned char sha[32], const char *tok, size_t len, void *arg)
{
	struct lease_seen *ls = arg;

	assert_int_equal(sha[0], 0xab);
	assert_int_equal(tok[len], '\0');
	ls->len[ls->n] = len;
	snprintf(ls->tok[ls->n], sizeof(ls->tok[0]), "%s", tok);
	ls->n++;
	return ls->n == ls->stop_after;
}

static void
t_lease_foreach(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_rw(f, MAPSZ);
	struct lease_seen	 ls = { .stop_after = 0 };
	unsigned char		 sha[32];

	assert_int_equal(store_lease_foreach(s, lease_cb, &ls), 0);
	assert_int_equal(ls.n, 0);
	sha_of(sha, 2);
	assert_int_equal(store_lease_put(s, sha, "two", 3, lt(1)), 0);
	sha_of(sha, 1);
	assert_int_equal(store_lease_put(s, sha, "one!", 4, lt(1)), 0);
	assert_int_equal(store_lease_foreach(s, lease_cb, &ls), 0);
	assert_int_equal(ls.n, 2);
	assert_string_equal(ls.tok[0], "one!");	/* sha order */
	assert_int_equal(ls.len[0], 4);
	assert_string_equal(ls.tok[1], "two");
	memset(&ls, 0, sizeof(ls));
	ls.stop_after = 1;
	assert_int_equal(store_lease_foreach(s, lease_cb, &ls), 0);
	assert_int_equal(ls.n, 1);
	store_close(s);
}

static void
t_reject(void **state)
{
	struct fix	*f = *state;
	struct store	*s = open_rw(f, MAPSZ);
	unsigned char	 sha[32];
	char		 reason[16], big[300];
	int64_t		 until = 0;

	sha_of(sha, 7);
	assert_int_equal(store_reject_get(s, sha, reason, sizeof(reason),
	    &until), STORE_ENOTFOUND);
	assert_int_equal(store_reject_put(s, sha, "revoked", 1234567, 0, 10), 0);
	assert_int_equal(store_reject_get(s, sha, reason, sizeof(reason),
	    &until), 0);
	assert_string_equal(reason, "revoked");
	assert_int_equal(until, 1234567);
	/* Too small a buffer is an error, not a truncation. */
	assert_int_equal(store_reject_get(s, sha, reason, 7, &until), -1);
	assert_int_equal(store_reject_get(s, sha, NULL, 0, &until), 0);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(store_reject_put(s, sha, big, 1, 0, 10), -1);
	assert_int_equal(store_reject_put(s, sha, NULL, 1, 0, 10), -1);
	assert_int_equal(store_reject_del(s, sha), 0);
	assert_int_equal(store_reject_get(s, sha, reason, sizeof(reason),
	    &until), STORE_ENOTFOUND);
	assert_int_equal(store_reject_del(s, sha), STORE_ENOTFOUND);
	store_close(s);
}

/* Rejections: capped at max (oldest first), expired ones pruned. */
static void
t_reject_cap(void **state)
{
	struct fix	*f = *state;
	struct store	*s = open_rw(f, MAPSZ);
	unsigned char	 sha[32];
	uint64_t	 n;
	int64_t		 until;
	int		 i;

	for (i = 0; i < 25; i++) {
		sha_of(sha, i);
		assert_int_equal(store_reject_put(s, sha, "unknown", 100 + i,
		    50, 10), 0);
	}
	assert_int_equal(store_reject_count(s, &n), 0);
	assert_int_equal(n, 10);
	sha_of(sha, 14);	/* the oldest are gone, the newest kept */
	assert_int_equal(store_reject_get(s, sha, NULL, 0, &until),
	    STORE_ENOTFOUND);
	sha_of(sha, 15);
	assert_int_equal(store_reject_get(s, sha, NULL, 0, &until), 0);
	/* Re-rejecting a key moves it, it does not add a row. */
	assert_int_equal(store_reject_put(s, sha, "revoked", 200, 50, 10), 0);
	assert_int_equal(store_reject_count(s, &n), 0);
	assert_int_equal(n, 10);
	/* Expired by now = 119: until 115..119 go, 120..124 and 200 stay. */
	assert_int_equal(store_reject_prune(s, 119, 10), 0);
	assert_int_equal(store_reject_count(s, &n), 0);
	assert_int_equal(n, 6);
	assert_int_equal(store_reject_get(s, sha, NULL, 0, &until), 0);
	assert_int_equal(until, 200);
	assert_int_equal(store_reject_del(s, sha), 0);
	assert_int_equal(store_reject_prune(s, 199, 10), 0);
	assert_int_equal(store_reject_count(s, &n), 0);
	assert_int_equal(n, 0);
	/* Nothing left behind in the index: a new row is not pruned early. */
	assert_int_equal(store_reject_put(s, sha, "unknown", 300, 250, 1), 0);
	assert_int_equal(store_reject_count(s, &n), 0);
	assert_int_equal(n, 1);
	store_close(s);
}

/* SPEC 2 "Time": the boot clock decides in the boot of receipt. */
/* Survival: the least time left of a valid lease; the map's use. */
static void
t_lease_survival(void **state)
{
	struct fix			*f = *state;
	struct store			*s = open_rw(f, MAPSZ);
	struct store_lease_counts	 n;
	struct store_clock		 c;
	struct store_lease_time		 t;
	unsigned char			 sha[32];
	uint64_t			 used, max;

	assert_int_equal(store_lease_count(s, wall(1000), &n), 0);
	assert_int_equal(n.first_left_s, -1);
	sha_of(sha, 1);
	assert_int_equal(store_lease_put(s, sha, "a", 1, lt(5000)), 0);
	sha_of(sha, 2);
	assert_int_equal(store_lease_put(s, sha, "b", 1, lt(1300)), 0);
	sha_of(sha, 3);
	assert_int_equal(store_lease_put(s, sha, "c", 1, lt(900)), 0);
	assert_int_equal(store_lease_count(s, wall(1000), &n), 0);
	assert_int_equal(n.valid, 2);
	assert_int_equal(n.first_left_s, 300);	/* c expired, b first */
	/* received in this boot: the boot clock counts, not the wall */
	store_clock_read(s, &c);
	c.wall = 0;
	store_lease_anchor(&c, 1000, 1060, 1600, 0, &t);
	sha_of(sha, 4);
	assert_int_equal(store_lease_put(s, sha, "d", 1, &t), 0);
	c.boot_ms += 100 * 1000;
	c.wall = 1000;
	assert_int_equal(store_lease_count(s, &c, &n), 0);
	assert_int_equal(n.first_left_s, 300);
	c.boot_ms += 250 * 1000;
	assert_int_equal(store_lease_count(s, &c, &n), 0);
	assert_int_equal(n.first_left_s, 250);	/* d: 600 - 350 s */
	assert_int_equal(store_size(s, &used, &max), 0);
	assert_true(used >= 4096 && used <= max);
	assert_int_equal(max, MAPSZ);
	store_close(s);
}

static void
t_lease_time(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_rw(f, MAPSZ);
	struct store_clock	 c, other;
	struct store_lease_time	 t, got;
	unsigned char		 sha[32];
	char			 buf[16];
	uint64_t		 total, valid;
	static const unsigned char zero[16];

	store_clock_read(s, &c);
	assert_true(c.boot_ms > 0);
	/* The boot id was read (Linux always has it). */
	assert_memory_not_equal(c.boot, zero, sizeof(zero));
	/* iat 1000, refresh after 60 s, valid 600 s; the wall clock is back. */
	c.wall = 0;
	store_lease_anchor(&c, 1000, 1060, 1600, 0, &t);
	assert_int_equal(t.life_ms, 600000);
	assert_int_equal(t.refresh_ms, 60000);
	assert_int_equal(store_lease_state(&t, &c), STORE_LEASE_FRESH);
	c.boot_ms += 59999;
	assert_int_equal(store_lease_state(&t, &c), STORE_LEASE_FRESH);
	c.boot_ms += 1;
	assert_int_equal(store_lease_state(&t, &c), STORE_LEASE_DUE);
	c.boot_ms = t.recv_ms + 599999;
	assert_int_equal(store_lease_state(&t, &c), STORE_LEASE_DUE);
	c.boot_ms += 1;
	assert_int_equal(store_lease_state(&t, &c), STORE_LEASE_EXPIRED);
	/* A wall clock ahead cannot extend or end it, only refresh early. */
	c.boot_ms = t.recv_ms + 1000;
	c.wall = 9999999999LL;
	assert_int_equal(store_lease_state(&t, &c), STORE_LEASE_DUE);
	c.boot_ms = t.recv_ms + 600000;
	assert_int_equal(store_lease_state(&t, &c), STORE_LEASE_EXPIRED);
	c.wall = 0;
	/* A boot clock behind the receipt is not this boot's: refused. */
	c.boot_ms = t.recv_ms - 1;
	assert_int_equal(store_lease_state(&t, &c), STORE_LEASE_EXPIRED);
	/* Another boot: the signed times against the wall (store_now). */
	other = c;
	other.boot[0] ^= 1;
	other.wall = 1059;
	assert_int_equal(store_lease_state(&t, &other), STORE_LEASE_FRESH);
	other.wall = 1060;
	assert_int_equal(store_lease_state(&t, &other), STORE_LEASE_DUE);
	other.wall = 1600;
	assert_int_equal(store_lease_state(&t, &other), STORE_LEASE_EXPIRED);
	/* An import 500 s after iat keeps 100 s, refresh due at once. */
	store_lease_anchor(&c, 1000, 1060, 1600, 500, &got);
	assert_int_equal(got.life_ms, 100000);
	assert_int_equal(got.refresh_ms, 0);
	/* Stored and read back whole; counted by the same rule. */
	sha_of(sha, 1);
	assert_int_equal(store_lease_put(s, sha, "tok", 3, &t), 0);
	assert_int_equal(store_lease_get(s, sha, buf, sizeof(buf), &got), 3);
	assert_memory_equal(&got, &t, sizeof(t));
	c.boot_ms = t.recv_ms + 1000;
	assert_int_equal(lease_count(s, &c, &total, &valid), 0);
	assert_int_equal(valid, 1);
	c.boot_ms = t.recv_ms + 600000;
	assert_int_equal(lease_count(s, &c, &total, &valid), 0);
	assert_int_equal(total, 1);
	assert_int_equal(valid, 0);
	store_close(s);
}

static void
t_clock(void **state)
{
	struct fix	*f = *state;
	struct store	*s = open_rw(f, MAPSZ);
	int64_t		 t0 = time(NULL), future = t0 + 86400 * 365;

	assert_true(store_now(s) >= t0);
	assert_true(store_now(s) < future);
	assert_int_equal(store_clock_advance(s, future), 0);
	assert_true(store_now(s) >= future);
	/* Going back is ignored, across a reopen too. */
	assert_int_equal(store_clock_advance(s, t0), 0);
	assert_true(store_now(s) >= future);
	store_close(s);
	s = open_rw(f, MAPSZ);
	assert_true(store_now(s) >= future);
	assert_int_equal(store_clock_advance(s, future + 10), 0);
	assert_true(store_now(s) >= future + 10);
	store_close(s);
}

static void
mkkey(struct store_key *k, const char *kid, const char *name)
{
	memset(k, 0, sizeof(*k));
	snprintf(k->kid, sizeof(k->kid), "%s", kid);
	snprintf(k->name, sizeof(k->name), "%s", name);
	k->role = 1;
	k->n_products = 2;
	snprintf(k->products[0], sizeof(k->products[0]), "api");
	snprintf(k->products[1], sizeof(k->products[1]), "engine");
	k->expires = 1900000000;
	k->created = 1700000000;
}

static int
key_cb(const struct store_key *k, void *arg)
{
	int *n = arg;

	assert_true(strcmp(k->kid, KID1) == 0 || strcmp(k->kid, KID2) == 0);
	(*n)++;
	return 0;
}

static void
t_keys(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_rw(f, MAPSZ);
	struct store_key	 k, got;
	unsigned char		 a[32], b[32];
	int			 n = 0;

	sha_of(a, 1);
	sha_of(b, 2);
	assert_int_equal(store_key_get(s, a, &got), STORE_ENOTFOUND);
	mkkey(&k, KID1, "first");
	assert_int_equal(store_key_put(s, a, &k), 0);
	mkkey(&k, KID2, "second");
	k.role = 0;
	k.expires = 0;
	assert_int_equal(store_key_put(s, b, &k), 0);
	assert_int_equal(store_key_get(s, a, &got), 0);
	assert_string_equal(got.kid, KID1);
	assert_string_equal(got.name, "first");
	assert_int_equal(got.role, 1);
	assert_int_equal(got.n_products, 2);
	assert_string_equal(got.products[0], "api");
	assert_string_equal(got.products[1], "engine");
	assert_int_equal(got.expires, 1900000000);
	assert_int_equal(got.created, 1700000000);
	assert_int_equal(got.revoked, 0);
	assert_int_equal(store_key_foreach(s, key_cb, &n), 0);
	assert_int_equal(n, 2);

	assert_int_equal(store_key_revoke(s, KID1), 0);
	assert_int_equal(store_key_get(s, a, &got), 0);
	assert_int_equal(got.revoked, 1);
	assert_string_equal(got.name, "first");
	assert_int_equal(store_key_get(s, b, &got), 0);
	assert_int_equal(got.revoked, 0);
	/* Exact match only: no prefixes, no strangers. */
	assert_int_equal(store_key_revoke(s, "0123456789abcde"),
	    STORE_ENOTFOUND);
	assert_int_equal(store_key_revoke(s, "0000000000000000"),
	    STORE_ENOTFOUND);
	assert_int_equal(store_key_revoke(s, NULL), STORE_ENOTFOUND);
	mkkey(&k, KID1, "bad");
	k.n_products = 17;
	assert_int_equal(store_key_put(s, a, &k), -1);
	store_close(s);
}

static void
t_usage_dups(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_rw(f, MAPSZ);
	struct usage_rec	 r[4], out[8];
	uint64_t		 seqs[8], pend, fwd;
	unsigned char		 dup[4];

	mkrec(&r[0], KID1, "r-1", "engine", "audio_seconds", 1.5);
	mkrec(&r[1], KID1, "r-2", "engine", "audio_seconds", 2);
	mkrec(&r[2], KID1, "r-1", "engine", "audio_seconds", 9);
	mkrec(&r[3], KID2, "r-1", "api", "calls", 1);	/* other key */
	memset(dup, 7, sizeof(dup));
	assert_int_equal(store_usage_append(s, r, 4, 0, dup), 0);
	assert_int_equal(dup[0], 0);
	assert_int_equal(dup[1], 0);
	assert_int_equal(dup[2], 1);
	assert_int_equal(dup[3], 0);
	assert_int_equal(store_spool_stats(s, &pend, &fwd), 0);
	assert_int_equal(pend, 3);
	assert_int_equal(fwd, 0);

	mkrec(&r[0], KID1, "r-3", "engine", "audio_seconds", 3);
	mkrec(&r[1], KID1, "r-2", "engine", "audio_seconds", 2);
	assert_int_equal(store_usage_append(s, r, 2, 0, dup), 0);
	assert_int_equal(dup[0], 0);
	assert_int_equal(dup[1], 1);
	assert_int_equal(store_spool_peek(s, out, seqs, 8), 4);
	assert_string_equal(out[0].id, "r-1");
	assert_true(out[0].quantity == 1.5);	/* the first one won */
	assert_string_equal(out[3].id, "r-3");

	/* Bad records refuse the whole batch. */
	mkrec(&r[0], KID1, "r-9", "engine", "audio_seconds", 3);
	mkrec(&r[1], "short", "r-10", "engine", "audio_seconds", 2);
	assert_int_equal(store_usage_append(s, r, 2, 0, dup), -1);
	mkrec(&r[1], KID1, "", "engine", "audio_seconds", 2);
	assert_int_equal(store_usage_append(s, r, 2, 0, dup), -1);
	assert_int_equal(store_usage_append(s, r, -1, 0, dup), -1);
	assert_int_equal(store_usage_append(s, r, 0, 0, dup), 0);
	assert_int_equal(store_spool_stats(s, &pend, NULL), 0);
	assert_int_equal(pend, 4);
	store_close(s);
}

static void
t_spool(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_rw(f, MAPSZ);
	struct usage_rec	 r[5], out[5];
	uint64_t		 seqs[5], del[3], pend, fwd;
	char			 id[32];
	int			 i;

	assert_int_equal(store_spool_peek(s, out, seqs, 5), 0);
	for (i = 0; i < 5; i++) {
		snprintf(id, sizeof(id), "id-%d", 4 - i);
		mkrec(&r[i], KID1, id, "engine", "m", i);
	}
	assert_int_equal(store_usage_append(s, r, 3, 0, NULL), 0);
	assert_int_equal(store_usage_append(s, r + 3, 2, 0, NULL), 0);
	/* Age order, not id order. */
	assert_int_equal(store_spool_peek(s, out, seqs, 3), 3);
	for (i = 0; i < 3; i++) {
		assert_memory_equal(&out[i], &r[i], sizeof(out[i]));
		if (i > 0)
			assert_true(seqs[i] > seqs[i - 1]);
	}
	del[0] = seqs[0];
	del[1] = seqs[2];
	del[2] = 999999;	/* unknown: not counted */
	assert_int_equal(store_spool_delete(s, del, 3), 0);
	assert_int_equal(store_spool_stats(s, &pend, &fwd), 0);
	assert_int_equal(pend, 3);
	assert_int_equal(fwd, 2);
	assert_int_equal(store_spool_peek(s, out, seqs, 5), 3);
	assert_string_equal(out[0].id, "id-3");
	assert_string_equal(out[1].id, "id-1");
	assert_string_equal(out[2].id, "id-0");
	assert_int_equal(store_spool_delete(s, seqs, 3), 0);
	store_close(s);

	/* Counters survive a restart; new seqs keep growing. */
	s = open_rw(f, MAPSZ);
	assert_int_equal(store_spool_stats(s, &pend, &fwd), 0);
	assert_int_equal(pend, 0);
	assert_int_equal(fwd, 5);
	mkrec(&r[0], KID1, "later", "engine", "m", 1);
	assert_int_equal(store_usage_append(s, r, 1, 0, NULL), 0);
	assert_int_equal(store_spool_peek(s, out, del, 5), 1);
	assert_true(del[0] > seqs[2]);
	store_close(s);
}

/* A delete list in any order, with a repeat, counts each record once. */
static void
t_spool_delete_any_order(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_rw(f, MAPSZ);
	struct usage_rec	 r[6], out[6];
	uint64_t		 seqs[6], del[4], pend, fwd;
	char			 id[32];
	int			 i;

	for (i = 0; i < 6; i++) {
		snprintf(id, sizeof(id), "s%d", i);
		mkrec(&r[i], KID1, id, "engine", "m", i);
	}
	assert_int_equal(store_usage_append(s, r, 6, 0, NULL), 0);
	assert_int_equal(store_spool_peek(s, out, seqs, 6), 6);
	del[0] = seqs[5];
	del[1] = seqs[1];
	del[2] = seqs[1];
	del[3] = seqs[3];
	assert_int_equal(store_spool_delete(s, del, 4), 0);
	assert_int_equal(store_spool_stats(s, &pend, &fwd), 0);
	assert_int_equal(pend, 3);
	assert_int_equal(fwd, 3);
	assert_int_equal(store_spool_peek(s, out, seqs, 6), 3);
	assert_string_equal(out[0].id, "s0");
	assert_string_equal(out[1].id, "s2");
	assert_string_equal(out[2].id, "s4");
	store_close(s);
}

static void
t_ledger(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_rw(f, MAPSZ);
	struct usage_rec	 r[5];
	struct usage_total	*t;
	unsigned char		 dup[5];
	uint64_t		 pend;
	size_t			 n;
	uint64_t		 ent, bytes;

	assert_int_equal(store_ledger_totals(s, &t, &n), 0);
	assert_int_equal(n, 0);
	free(t);
	mkrec(&r[0], KID2, "a", "engine", "seconds", 2.5);
	mkrec(&r[1], KID1, "a", "engine", "seconds", 1);
	mkrec(&r[2], KID1, "b", "api", "calls", 4);
	mkrec(&r[3], KID1, "c", "engine", "seconds", 0.5);
	mkrec(&r[4], KID1, "a", "engine", "seconds", 100);	/* dup */
	assert_int_equal(store_usage_append(s, r, 5, 1, dup), 0);
	assert_int_equal(dup[4], 1);
	assert_int_equal(dup[0] + dup[1] + dup[2] + dup[3], 0);
	mkrec(&r[0], KID1, "b", "api", "calls", 50);		/* dup */
	mkrec(&r[1], KID1, "d", "api", "calls", 6);
	assert_int_equal(store_usage_append(s, r, 2, 1, dup), 0);
	assert_int_equal(dup[0], 1);
	assert_int_equal(dup[1], 0);
	/* Ledger mode never spools. */
	assert_int_equal(store_spool_stats(s, &pend, NULL), 0);
	assert_int_equal(pend, 0);

	assert_int_equal(store_ledger_totals(s, &t, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(t[0].kid, KID1);
	assert_string_equal(t[0].product, "api");
	assert_string_equal(t[0].metric, "calls");
	assert_true(t[0].quantity == 10);
	assert_int_equal(t[0].records, 2);
	assert_string_equal(t[1].kid, KID1);
	assert_string_equal(t[1].product, "engine");
	assert_true(t[1].quantity == 1.5);
	assert_int_equal(t[1].records, 2);
	assert_string_equal(t[2].kid, KID2);
	assert_true(t[2].quantity == 2.5);
	assert_int_equal(t[2].records, 1);
	free(t);

	/* Expired de-dup entries do not let a ledger record in twice. */
	store_usage_window(s, 60);
	assert_int_equal(store_clock_advance(s, time(NULL) + 100000), 0);
	mkrec(&r[0], KID1, "a", "engine", "seconds", 1);
	assert_int_equal(store_usage_append(s, r, 1, 1, dup), 0);
	assert_int_equal(dup[0], 1);
	/* The ledger is its own exact index: the authority keeps no hashes. */
	assert_int_equal(store_dedup_stat(s, &ent, &bytes), 0);
	assert_int_equal(ent, 0);
	assert_int_equal(store_dedup_pruned(s), 0);
	store_close(s);
}

static void
t_prune(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_rw(f, MAPSZ);
	struct usage_rec	 a[3], b[2];
	unsigned char		 dup[3];
	int64_t			 t0 = time(NULL);

	/* A 100 s window: generations of 25 s, each kept 100 s past its end. */
	store_usage_window(s, 100);
	mkrec(&a[0], KID1, "old-1", "p", "m", 1);
	mkrec(&a[1], KID2, "old-2", "p", "m", 1);
	mkrec(&a[2], KID1, "old-3", "p", "m", 1);
	assert_int_equal(store_usage_append(s, a, 3, 0, dup), 0);
	assert_int_equal(store_clock_advance(s, t0 + 50), 0);
	mkrec(&b[0], KID1, "new-1", "p", "m", 1);
	mkrec(&b[1], KID1, "old-0", "p", "m", 1);
	assert_int_equal(store_usage_append(s, b, 2, 0, dup), 0);
	assert_int_equal(dup[0] + dup[1], 0);
	assert_int_equal(store_usage_append(s, a, 3, 0, dup), 0);
	assert_int_equal(dup[0] + dup[1] + dup[2], 3);	/* in the window */

	/* a's generation ended by t0 + 26: gone at t0 + 140; b's is not. */
	assert_int_equal(store_clock_advance(s, t0 + 140), 0);
	assert_int_equal(store_usage_append(s, b, 2, 0, dup), 0);
	assert_int_equal(dup[0] + dup[1], 2);
	assert_int_equal(store_usage_append(s, a, 3, 0, dup), 0);
	assert_int_equal(dup[0] + dup[1] + dup[2], 0);	/* forgotten */
	assert_int_equal(store_usage_append(s, a, 3, 0, dup), 0);
	assert_int_equal(dup[0] + dup[1] + dup[2], 3);	/* booked again */
	/* Age is not a shortage: nothing counts as pruned early. */
	assert_int_equal(store_dedup_pruned(s), 0);
	store_close(s);
}

enum id_shape { IDS_FRONT, IDS_UP, IDS_DOWN };

/*
 * 100,000 records into the index of a new store at path: ids that differ
 * at their front (each its own place in the index), or counters going up
 * or down (side by side; LMDB fills a page whole only when the next key
 * goes at its very end, so counting down leaves pages half full, the
 * worst case). Returns the bytes per entry.
 */
static double
dedup_bytes_each(const char *path, enum id_shape shape)
{
	char			 err[256], id[96];
	struct store		*s = store_open(path, 256ULL << 20, 0, err,
				    sizeof(err));
	struct usage_rec	*r = calloc(1000, sizeof(*r));
	uint64_t		 ent, bytes;
	int			 i, j;

	if (s == NULL)
		fail_msg("store_open: %s", err);
	assert_non_null(r);
	store_usage_window(s, 86400);
	for (j = 0; j < 100; j++) {
		for (i = 0; i < 1000; i++) {
			if (shape == IDS_FRONT)
				snprintf(id, sizeof(id), "%d-%d-%058d", j, i, 7);
			else
				snprintf(id, sizeof(id), "instance-%d-%07d",
				    i % 2, shape == IDS_UP ? j * 500 + i / 2 :
				    9999999 - j * 500 - i / 2);
			id[64] = '\0';
			mkrec(&r[i], i % 2 ? KID1 : KID2, id, "engine", "calls",
			    1);
		}
		assert_int_equal(store_usage_append(s, r, 1000, 0, NULL), 0);
	}
	assert_int_equal(store_dedup_stat(s, &ent, &bytes), 0);
	assert_int_equal(ent, 100000);
	free(r);
	store_close(s);
	return (double)bytes / ent;
}

/* The index costs at most ~48 bytes a record (SPEC section 3). */
static void
t_dedup_compact(void **state)
{
	struct fix	*f = *state;
	char		 up[160], down[160];
	double		 b[3];

	snprintf(up, sizeof(up), "%s/up", f->dir);
	snprintf(down, sizeof(down), "%s/down", f->dir);
	b[IDS_FRONT] = dedup_bytes_each(f->path, IDS_FRONT);
	b[IDS_UP] = dedup_bytes_each(up, IDS_UP);
	b[IDS_DOWN] = dedup_bytes_each(down, IDS_DOWN);
	print_message("de-dup index, bytes a record: %.1f (ids differing at "
	    "the front), %.1f (counting up), %.1f (counting down)\n",
	    b[IDS_FRONT], b[IDS_UP], b[IDS_DOWN]);
	assert_true(b[IDS_FRONT] <= 48);
	assert_true(b[IDS_UP] <= 48);
	assert_true(b[IDS_DOWN] <= 48);
}

/*
 * Index keys keep an id's last characters as they are and hash the rest:
 * ids that share either part, or are shorter than the tail, or are the
 * same id under another key_id, are all told apart.
 */
static void
t_dedup_tails(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_rw(f, MAPSZ);
	static const char	*ids[] = { "a", "ab", "abc", "abcd", "xabcd",
	    "yabcd", "abcde", "abcdx", "rec-0001", "rec-0002", "rec-0010",
	    "rec-1001", "re-c0001", "recx0001", "0001" };
	enum { N = sizeof(ids) / sizeof(ids[0]) };
	struct usage_rec	 r[2 * N];
	unsigned char		 dup[2 * N];
	int			 i, n = 0;

	store_usage_window(s, 86400);
	for (i = 0; i < N; i++) {
		mkrec(&r[2 * i], KID1, ids[i], "p", "m", 1);
		mkrec(&r[2 * i + 1], KID2, ids[i], "p", "m", 1);
	}
	assert_int_equal(store_usage_append(s, r, 2 * N, 0, dup), 0);
	for (i = 0; i < 2 * N; i++)
		n += dup[i];
	assert_int_equal(n, 0);
	assert_int_equal(store_usage_append(s, r, 2 * N, 0, dup), 0);
	for (i = 0; i < 2 * N; i++)
		n += dup[i];
	assert_int_equal(n, 2 * N);
	store_close(s);
}

/*
 * What a version from before the tail keys leaves: the record's 8 bytes
 * of SHA-256(key_id || id) in the slot dedup_g names; with t != 0, that
 * slot emptied and started anew at t first, as its rotation would.
 */
static void
put_old_key(struct fix *f, const char *kid, const char *id, int64_t t)
{
	unsigned char	 md[32], idk[96], b[8];
	MDB_env		*env;
	MDB_txn		*txn;
	MDB_dbi		 meta, slot;
	MDB_val		 k = { 7, "dedup_g" }, v, kt, vt = { 8, b };
	char		 name[16];
	uint64_t	 g = 0;
	int		 i;

	memcpy(idk, kid, 16);
	memcpy(idk + 16, id, strlen(id));
	SHA256(idk, 16 + strlen(id), md);
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
	assert_int_equal(mdb_env_open(env, f->path, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
	if (mdb_get(txn, meta, &k, &v) == 0)
		for (i = 0; i < 8; i++)
			g = g << 8 | ((unsigned char *)v.mv_data)[i];
	snprintf(name, sizeof(name), "dedup%d", (int)(g % 5));
	assert_int_equal(mdb_dbi_open(txn, name, 0, &slot), 0);
	if (t != 0)
		assert_int_equal(mdb_drop(txn, slot, 0), 0);
	k.mv_data = md;
	k.mv_size = 8;
	v.mv_size = 0;
	v.mv_data = md;
	assert_int_equal(mdb_put(txn, slot, &k, &v, 0), 0);
	if (t != 0) {
		snprintf(name, sizeof(name), "dedup_t%d", (int)(g % 5));
		kt.mv_data = name;
		kt.mv_size = strlen(name);
		for (i = 0; i < 8; i++)
			b[i] = (unsigned char)((uint64_t)t >> (56 - 8 * i));
		assert_int_equal(mdb_put(txn, meta, &kt, &vt, 0), 0);
	}
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* The store, its de-dup window 100 s (generations of 25 s). */
static struct store *
open_dedup(struct fix *f)
{
	struct store *s = open_rw(f, MAPSZ);

	store_usage_window(s, 100);
	return s;
}

/*
 * Keys without the tail, from a store of before them or from a previous
 * binary writing beside this one (draining after an upgrade, or run again
 * after a downgrade), still count as duplicates until their generation
 * goes.
 */
static void
t_dedup_old_keys(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_rw(f, MAPSZ);
	struct usage_rec	 r[3];
	unsigned char		 dup[3];
	int64_t			 t0 = time(NULL);

	store_close(s);
	put_old_key(f, KID1, "before-1", t0);	/* a store of before */
	s = open_dedup(f);
	mkrec(&r[0], KID1, "before-1", "p", "m", 1);
	mkrec(&r[1], KID1, "before-2", "p", "m", 1);
	mkrec(&r[2], KID1, "beside-1", "p", "m", 1);
	assert_int_equal(store_usage_append(s, r, 2, 0, dup), 0);
	assert_int_equal(dup[0], 1);	/* the old entry */
	assert_int_equal(dup[1], 0);
	assert_int_equal(store_usage_append(s, r, 2, 0, dup), 0);
	assert_int_equal(dup[0] + dup[1], 2);

	/* Its generation dropped (past the window): both are forgotten. */
	assert_int_equal(store_clock_advance(s, t0 + 300), 0);
	assert_int_equal(store_usage_append(s, r, 2, 0, dup), 0);
	assert_int_equal(dup[0] + dup[1], 0);
	store_close(s);

	/* The old binary adds one to the slot this version started. */
	put_old_key(f, KID1, "beside-1", 0);
	s = open_dedup(f);
	assert_int_equal(store_usage_append(s, r, 3, 0, dup), 0);
	assert_int_equal(dup[0] + dup[1], 2);
	assert_int_equal(dup[2], 1);
	store_close(s);
}

/*
 * The old binary starts a slot of this version's anew and fills it to
 * the count this version left: its start tells.
 */
static void
t_dedup_refilled(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_dedup(f);
	struct usage_rec	 r[2];
	unsigned char		 dup[2];
	int64_t			 t0 = time(NULL);

	mkrec(&r[0], KID1, "mine-1", "p", "m", 1);
	mkrec(&r[1], KID1, "mine-2", "p", "m", 1);
	assert_int_equal(store_usage_append(s, r, 2, 0, dup), 0);
	store_close(s);
	put_old_key(f, KID2, "theirs-1", t0 + 1);
	put_old_key(f, KID2, "theirs-2", 0);
	s = open_dedup(f);
	mkrec(&r[0], KID2, "theirs-2", "p", "m", 1);
	mkrec(&r[1], KID2, "theirs-3", "p", "m", 1);
	assert_int_equal(store_usage_append(s, r, 2, 0, dup), 0);
	assert_int_equal(dup[0], 1);
	assert_int_equal(dup[1], 0);
	store_close(s);
}

/* A full store drops the oldest de-dup generation before refusing. */
static void
t_dedup_pressure(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_rw(f, 1 << 20);
	struct usage_rec	*r = calloc(1000, sizeof(*r));
	struct usage_rec	*out = calloc(1000, sizeof(*out));
	uint64_t		*seqs = calloc(1000, sizeof(*seqs)), pruned = 0;
	char			 id[96];
	int			 i, j;

	assert_non_null(r);
	assert_non_null(out);
	assert_non_null(seqs);
	store_usage_window(s, 86400);
	for (j = 0; j < 40; j++) {
		for (i = 0; i < 1000; i++) {
			snprintf(id, sizeof(id), "r%d-%d-%058d", j, i, 0);
			id[64] = '\0';
			mkrec(&r[i], KID1, id, "engine", "calls", 1);
		}
		assert_int_equal(store_usage_append(s, r, 1000, 0, NULL), 0);
		/* The relay: forwarded records leave the spool. */
		assert_int_equal(store_spool_peek(s, out, seqs, 1000), 1000);
		assert_int_equal(store_spool_delete(s, seqs, 1000), 0);
		pruned += store_dedup_pruned(s);
	}
	assert_true(pruned > 0);
	/* The newest are still known. */
	assert_int_equal(store_usage_append(s, r, 1000, 0, NULL), 0);
	assert_int_equal(store_spool_peek(s, out, seqs, 1000), 0);
	free(r);
	free(out);
	free(seqs);
	store_close(s);
}

/* A ledger total past a double is still a row (the CLI prints it). */
static void
t_ledger_inf(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_rw(f, MAPSZ);
	struct usage_rec	 r[2];
	struct usage_total	*t;
	size_t			 n;

	mkrec(&r[0], KID1, "a", "engine", "calls", 1.79e308);
	mkrec(&r[1], KID1, "b", "engine", "calls", 1.79e308);
	assert_int_equal(store_usage_append(s, r, 2, 1, NULL), 0);
	assert_int_equal(store_ledger_totals(s, &t, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(t[0].records, 2);
	assert_false(isfinite(t[0].quantity));
	free(t);
	store_close(s);
}

static void
t_map_full(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_rw(f, 128 * 1024 - 100);
	struct usage_rec	*r;
	struct usage_rec	 out[8];
	uint64_t		 seqs[8], pend;
	unsigned char		*dup, sha[32];
	char			 buf[32], id[32];
	int			 i, big = 2000;

	r = calloc(big, sizeof(*r));
	dup = calloc(big, 1);
	assert_non_null(r);
	assert_non_null(dup);
	for (i = 0; i < big; i++) {
		snprintf(id, sizeof(id), "record-%06d", i);
		mkrec(&r[i], KID1, id, "engine", "audio_seconds", i);
	}
	sha_of(sha, 1);
	assert_int_equal(store_lease_put(s, sha, "first", 5, lt(1)), 0);
	assert_int_equal(store_usage_append(s, r, 5, 0, dup), 0);
	/* 2000 records (~300 KiB) do not fit in 128 KiB: all or nothing. */
	assert_int_equal(store_usage_append(s, r + 5, big - 5, 0, dup),
	    STORE_EFULL);
	assert_int_equal(store_spool_stats(s, &pend, NULL), 0);
	assert_int_equal(pend, 5);
	assert_int_equal(store_spool_peek(s, out, seqs, 8), 5);
	assert_string_equal(out[4].id, "record-000004");
	assert_int_equal(store_lease_get(s, sha, buf, sizeof(buf), NULL), 5);
	/*
	 * Before refusing, the de-dup index went (the 5 entries, counted);
	 * the spool kept all it had. Leases keep being written.
	 */
	assert_int_equal(store_dedup_pruned(s), 5);
	sha_of(sha, 2);
	assert_int_equal(store_lease_put(s, sha, "second", 6, lt(1)), 0);
	assert_int_equal(store_lease_get(s, sha, buf, sizeof(buf), NULL), 6);
	assert_string_equal(buf, "second");
	assert_int_equal(store_usage_append(s, r + 5, 3, 0, dup), 0);
	assert_int_equal(dup[0] + dup[1] + dup[2], 0);
	assert_int_equal(store_usage_append(s, r + 5, 3, 0, dup), 0);
	assert_int_equal(dup[0] + dup[1] + dup[2], 3);
	assert_int_equal(store_spool_stats(s, &pend, NULL), 0);
	assert_int_equal(pend, 8);
	free(r);
	free(dup);
	store_close(s);
}

/*
 * Filling a small store one record at a time, whichever put finds the map
 * full (a record, a de-dup entry or the spool's seq counter), the append
 * must end its transaction: a write left open holds LMDB's write lock and
 * the next write, here a lease, would wait on it forever.
 */
static void
t_full_store_releases_lock(void **state)
{
	struct fix		*f = *state;
	struct store		*s;
	struct usage_rec	 r;
	unsigned char		 sha[32];
	char			 id[80], path[sizeof(f->path) + 16];
	int			 i, len, ret;

	/* The bug hangs rather than fails: a guard makes it a failure. */
	alarm(300);
	for (len = 1; len <= 57; len += 8) {
		s = open_rw(f, 64 * 1024);
		store_usage_window(s, 86400);
		for (i = 0, ret = 0; ret == 0 && i < 100000; i++) {
			/* i then len zeros: unique, of every length. */
			snprintf(id, sizeof(id), "%d%0*d", i, len, 0);
			mkrec(&r, KID1, id, "engine", "calls", 1);
			ret = store_usage_append(s, &r, 1, 0, NULL);
		}
		assert_int_equal(ret, STORE_EFULL);
		sha_of(sha, len);
		/* Refused or kept, but answered. */
		(void)store_lease_put(s, sha, "x", 1, lt(1));
		store_close(s);
		snprintf(path, sizeof(path), "%s/data.mdb", f->path);
		assert_int_equal(unlink(path), 0);
	}
	alarm(0);
}

static void
t_rdonly_empty_dbs(void **state)
{
	struct fix		*f = *state;
	struct store		*s;
	struct usage_total	*t;
	struct usage_rec	 r;
	uint64_t		 pend = 9, fwd = 9, seq;
	unsigned char		 sha[32];
	size_t			 n;
	char			 err[128];
	int			 cnt = 0;
	MDB_env			*env;
	MDB_txn			*txn;

	/* An env that exists but holds none of our named dbs. */
	snprintf(err, sizeof(err), "%s/a", f->dir);
	assert_int_equal(mkdir(err, 0700), 0);
	assert_int_equal(mkdir(f->path, 0700), 0);
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_open(env, f->path, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);

	s = store_open(f->path, 0, STORE_RDONLY, err, sizeof(err));
	assert_non_null(s);
	assert_int_equal(store_spool_stats(s, &pend, &fwd), 0);
	assert_int_equal(pend, 0);
	assert_int_equal(fwd, 0);
	assert_int_equal(store_spool_peek(s, &r, &seq, 1), 0);
	assert_int_equal(store_key_foreach(s, key_cb, &cnt), 0);
	assert_int_equal(cnt, 0);
	assert_int_equal(store_ledger_totals(s, &t, &n), 0);
	assert_int_equal(n, 0);
	free(t);
	assert_true(store_now(s) >= time(NULL) - 1);
	sha_of(sha, 1);
	assert_int_equal(store_lease_get(s, sha, err, sizeof(err), NULL),
	    STORE_ENOTFOUND);
	assert_int_equal(store_key_revoke(s, KID1), -1);
	mkrec(&r, KID1, "x", "p", "m", 1);
	assert_int_equal(store_usage_append(s, &r, 1, 0, NULL), -1);
	assert_int_equal(store_clock_advance(s, INT32_MAX), -1);
	store_close(s);
}

/* Child: open after fork, append, check the parent's lease, exit. */
static int
child_writer(const char *path, int rfd)
{
	struct store		*s;
	struct usage_rec	 r[10];
	unsigned char		 sha[32];
	char			 c, buf[32], id[32];
	int			 i, ok = 1;

	if (read(rfd, &c, 1) != 1)
		return 2;
	if ((s = store_open(path, MAPSZ, 0, NULL, 0)) == NULL)
		return 3;
	sha_of(sha, 5);
	if (store_lease_get(s, sha, buf, sizeof(buf), NULL) != 6 ||
	    strcmp(buf, "parent") != 0)
		ok = 0;
	for (i = 0; i < 10; i++) {
		snprintf(id, sizeof(id), "child-%d", i);
		mkrec(&r[i], KID2, id, "p", "m", i);
	}
	for (i = 0; i < 10 && ok; i++)
		if (store_usage_append(s, &r[i], 1, 0, NULL) != 0)
			ok = 0;
	store_close(s);
	return ok ? 0 : 4;
}

static void
t_fork(void **state)
{
	struct fix		*f = *state;
	struct store		*s;
	struct usage_rec	 out[16];
	uint64_t		 seqs[16], pend;
	unsigned char		 sha[32];
	int			 fds[2], st, i;
	pid_t			 pid;

	/* The directory must exist before the child races the parent. */
	store_close(open_rw(f, MAPSZ));
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		close(fds[1]);
		_exit(child_writer(f->path, fds[0]));
	}
	close(fds[0]);
	s = open_rw(f, MAPSZ);
	sha_of(sha, 5);
	assert_int_equal(store_lease_put(s, sha, "parent", 6, lt(1)), 0);
	/* Hold a read snapshot open while the child writes. */
	assert_int_equal(store_spool_stats(s, &pend, NULL), 0);
	assert_int_equal(pend, 0);
	assert_int_equal(write(fds[1], "g", 1), 1);
	close(fds[1]);
	for (i = 0; i < 3; i++) {
		mkrec(&out[0], KID1, i == 0 ? "p-0" : i == 1 ? "p-1" : "p-2",
		    "p", "m", 1);
		assert_int_equal(store_usage_append(s, out, 1, 0, NULL), 0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_int_equal(store_spool_stats(s, &pend, NULL), 0);
	assert_int_equal(pend, 13);
	assert_int_equal(store_spool_peek(s, out, seqs, 16), 13);
	for (i = 1; i < 13; i++)
		assert_true(seqs[i] > seqs[i - 1]);
	assert_int_equal(store_reader_check(s), 0);
	store_close(s);
}

struct grant_seen {
	char	 rows[4][96];
	int	 n;
};

static int
grant_seen1(const char *kid, const char *holder, const char *ins,
    int64_t seats, int64_t exp, void *arg)
{
	struct grant_seen *g = arg;

	(void)kid, (void)exp;
	if (g->n < 4)
		snprintf(g->rows[g->n++], sizeof(g->rows[0]), "%s/%s=%lld",
		    holder, ins, (long long)seats);
	return 0;
}

/*
 * Two proxies of one key (one holder) hold a grant each, by instance, and
 * each claim counts the other's: 3 seats never become 3 + 3. A proxy that
 * names no instance holds the holder's own row (as before instances).
 */
static void
t_grants_by_instance(void **state)
{
	struct fix		*f = *state;
	struct store		*s = open_rw(f, MAPSZ);
	struct store_seat_use	 u;
	struct store_claim	 c;
	struct grant_seen	 g = { .n = 0 };
	const char		*kid = "00112233445566aa";
	const char		*hold = "fedcba9876543210";
	char			 id1[STORE_SELF_ID_LEN + 1], id2[sizeof(id1)];

	memset(&c, 0, sizeof(c));
	c.kid = kid;
	c.holder = hold;
	c.want = 2;
	c.cap = 3;
	c.now = 1000;
	c.expires = 2000;
	/* the grant of a proxy from before instance names ... */
	assert_int_equal(store_seat_claim(s, &c, &u), 0);
	assert_int_equal(u.got, 2);
	/* ... is held against a claim by name that does not take it over */
	c.holder_ins = "proxy-z";
	c.want = 3;
	assert_int_equal(store_seat_claim(s, &c, &u), 0);
	assert_int_equal(u.got, 1);
	assert_int_equal(store_grant_release(s, kid, hold, "proxy-z"), 0);
	/* ... and is its own once the proxy that held it says so (an upgrade) */
	c.holder_ins = "proxy-a";
	c.takeover = 1;
	assert_int_equal(store_seat_claim(s, &c, &u), 0);
	assert_int_equal(u.got, 3);
	assert_int_equal(u.used, 3);
	c.takeover = 0;
	c.holder_ins = "proxy-b";
	c.want = 2;
	assert_int_equal(store_seat_claim(s, &c, &u), 0);
	assert_int_equal(u.got, 0);		/* a's 3 are counted */
	c.holder_ins = "proxy-a";
	c.want = 1;				/* a gives 2 back */
	assert_int_equal(store_seat_claim(s, &c, &u), 0);
	assert_int_equal(u.got, 1);
	c.holder_ins = "proxy-b";
	c.want = 3;
	assert_int_equal(store_seat_claim(s, &c, &u), 0);
	assert_int_equal(u.got, 2);		/* a partial raise */
	assert_int_equal(u.used, 3);
	c.holder_ins = NULL;			/* an older proxy */
	c.want = 1;
	assert_int_equal(store_seat_claim(s, &c, &u), 0);
	assert_int_equal(u.got, 0);
	assert_int_equal(store_grant_foreach(s, kid, grant_seen1, &g), 0);
	assert_int_equal(g.n, 2);
	assert_string_equal(g.rows[0], "fedcba9876543210/proxy-a=1");
	assert_string_equal(g.rows[1], "fedcba9876543210/proxy-b=2");
	/* an instance name over the bound is refused, nothing written */
	c.holder_ins = "0123456789012345678901234567890123456789"
	    "012345678901234567890123456789";
	assert_int_equal(store_seat_claim(s, &c, &u), -1);
	/* releasing the holder cancels the grants of all its instances */
	assert_int_equal(store_grant_release(s, kid, hold, NULL), 0);
	assert_int_equal(store_seat_use(s, kid, 1000, &u), 0);
	assert_int_equal(u.used, 0);
	/* a named proxy with a row of its own takes over nothing */
	c.holder_ins = "proxy-a";
	c.want = 1;
	assert_int_equal(store_seat_claim(s, &c, &u), 0);
	c.holder_ins = NULL;
	assert_int_equal(store_seat_claim(s, &c, &u), 0);
	assert_int_equal(u.got, 1);
	c.holder_ins = "proxy-a";
	c.takeover = 1;
	assert_int_equal(store_seat_claim(s, &c, &u), 0);
	c.takeover = 0;
	assert_int_equal(u.got, 1);
	assert_int_equal(u.used, 2);
	/* one instance's grant released: the other's stays */
	assert_int_equal(store_grant_release(s, kid, hold, "proxy-a"), 0);
	assert_int_equal(store_seat_use(s, kid, 1000, &u), 0);
	assert_int_equal(u.used, 1);
	assert_int_equal(store_grant_release(s, kid, hold, "proxy-a"),
	    STORE_ENOTFOUND);
	/* numbered requests: one older than the row's last changes nothing */
	c.holder_ins = "proxy-n";
	c.want = 2;
	c.seq = 20;
	assert_int_equal(store_seat_claim(s, &c, &u), 0);
	assert_int_equal(u.got, 2);
	c.want = 0;
	c.seq = 19;			/* a give-back, held up, arriving late */
	assert_int_equal(store_seat_claim(s, &c, &u), 0);
	assert_int_equal(u.got, 2);
	assert_int_equal(u.used, 3);
	c.seq = 21;			/* a newer one applies */
	assert_int_equal(store_seat_claim(s, &c, &u), 0);
	assert_int_equal(u.got, 0);
	c.seq = 0;
	/* the self id: made once, then the same across opens */
	assert_int_equal(store_self_id(s, id1), 1);
	assert_int_equal(strlen(id1), STORE_SELF_ID_LEN);
	store_close(s);
	s = open_rw(f, MAPSZ);
	assert_int_equal(store_self_id(s, id2), 1);	/* new until settled */
	assert_string_equal(id1, id2);
	assert_int_equal(store_self_settled(s), 0);
	assert_int_equal(store_self_id(s, id2), 0);
	assert_string_equal(id1, id2);
	store_close(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(t_open_persist, setup, teardown),
		cmocka_unit_test_setup_teardown(t_rdonly_missing, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(t_lease, setup, teardown),
		cmocka_unit_test_setup_teardown(t_lease_foreach, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(t_reject, setup, teardown),
		cmocka_unit_test_setup_teardown(t_reject_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(t_lease_survival, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(t_clock, setup, teardown),
		cmocka_unit_test_setup_teardown(t_lease_time, setup, teardown),
		cmocka_unit_test_setup_teardown(t_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(t_usage_dups, setup, teardown),
		cmocka_unit_test_setup_teardown(t_spool, setup, teardown),
		cmocka_unit_test_setup_teardown(t_spool_delete_any_order, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(t_ledger, setup, teardown),
		cmocka_unit_test_setup_teardown(t_prune, setup, teardown),
		cmocka_unit_test_setup_teardown(t_dedup_tails, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(t_dedup_old_keys, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(t_dedup_refilled, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(t_dedup_compact, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(t_dedup_pressure, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(t_ledger_inf, setup, teardown),
		cmocka_unit_test_setup_teardown(t_full_store_releases_lock,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(t_map_full, setup, teardown),
		cmocka_unit_test_setup_teardown(t_rdonly_empty_dbs, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(t_fork, setup, teardown),
		cmocka_unit_test_setup_teardown(t_open_refuses_empty, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(t_open_refuses_junk, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(t_open_refuses_truncated, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(t_check_finds_damage, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(t_grants_by_instance, setup,
		    teardown),
	};

	log_init(LOG_ERR, 0, "test");
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * usage.c - POST /v1/usage. Records are validated in full (nothing of a bad
 * request is kept), then every request that arrived in this turn of the
 * event loop goes into ONE durable LMDB write transaction (group commit);
 * callers hear 202 only after it is on disk.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "conf.h"
#include "ipc.h"
#include "log.h"
#include "proc.h"
#include "stats.h"
#include "store.h"
#include "token.h"
#include "worker.h"

#define USAGE_MAX_RECORDS	1000
#define USAGE_KICK_AT		1000	/* spool backlog that wakes the uplink */
#define USAGE_QUANTITY_MAX	1e12	/* the API's bound on a quantity */

/*
 * A commit slower than USAGE_LINGER_FROM_US (a disk whose flush takes a
 * millisecond or more) makes the next batch wait for its usual size, at
 * most that commit's time and never over USAGE_LINGER_MAX_US: see
 * usage_park.
 */
#define USAGE_LINGER_FROM_US	1000
#define USAGE_LINGER_MAX_US	2000

static struct {
	int64_t		 kicked;	/* last USAGE_KICK, ms */
	int64_t		 full_logged;	/* last "store full" line, ms */
	int		 queued;	/* parked since the last commit */
	int		 last[2];	/* the last two commits' requests */
	int64_t		 commit_us;	/* how long the last commit took */
} usg = { 0, -10000, 0, { 0, 0 }, 0 };

static int
usage_charset(const char *s, size_t min, size_t max, const char *extra,
    int lower_only)
{
	size_t n = strlen(s), i;

	if (n < min || n > max)
		return -1;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (islower(ch) || isdigit(ch) || strchr(extra, ch) != NULL)
			continue;
		if (!lower_only && isupper(ch))
			continue;
		return -1;
	}
	return 0;
}

static int
usage_digits(const char *s, int n)
{
	while (n-- > 0)
		if (!isdigit((unsigned char)*s++))
			return -1;
	return 0;
}

static int
usage_num(const char *s, int n)
{
	int v = 0;

	while (n-- > 0)
		v = v * 10 + (*s++ - '0');
	return v;
}

static int
usage_mdays(int y, int m)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31,
	    30, 31 };
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return days[m - 1] + (m == 2 && leap);
}

/* Parses "+hh:mm", "-hh:mm" or "Z" into minutes east of UTC. */
static int
usage_offset(const char *s, int *east)
{
	if ((*s == 'Z' || *s == 'z') && s[1] == '\0') {
		*east = 0;
		return 0;
	}
	if ((*s != '+' && *s != '-') || strlen(s) != 6 ||
	    usage_digits(s + 1, 2) || s[3] != ':' || usage_digits(s + 4, 2) ||
	    usage_num(s + 1, 2) > 23 || usage_num(s + 4, 2) > 59)
		return -1;
	*east = (usage_num(s + 1, 2) * 60 + usage_num(s + 4, 2)) *
	    (*s == '-' ? -1 : 1);
	return 0;
}

/*
 * Second 60 where a leap second can be: 23:59:60 UTC at the end of a June
 * or a December, from 1972 (the first) on. Which of those slots were used
 * is IERS's word, announced months ahead: a table here would refuse the
 * next one.
 */
static int
usage_leap_slot(int64_t utc_min)
{
	time_t		t = (time_t)(utc_min * 60);
	struct tm	g;

	if (gmtime_r(&t, &g) == NULL)
		return 0;
	return g.tm_hour == 23 && g.tm_min == 59 && g.tm_year >= 72 &&
	    ((g.tm_mon == 5 && g.tm_mday == 30) ||
	    (g.tm_mon == 11 && g.tm_mday == 31));
}

/*
 * RFC 3339 date-time naming a real instant: 2026-11-26T16:00:00[.fff]
 * (Z|+hh:mm|-hh:mm), at or after 1970-01-01T00:00:00Z (the instant, so
 * 1970-01-01T00:30:00+01:00 is refused), the day within its month (leap
 * years counted), second 60 only in a leap-second slot (usage_leap_slot).
 */
int
usage_ts_valid(const char *s)
{
	size_t		n = strlen(s);
	int		y, mo, d, h, mi, sec, east;
	struct tm	tm;
	int64_t		utc_min;

	if (n < 20 || n > USAGE_TS_MAX || usage_digits(s, 4) || s[4] != '-' ||
	    usage_digits(s + 5, 2) || s[7] != '-' || usage_digits(s + 8, 2) ||
	    (s[10] != 'T' && s[10] != 't') || usage_digits(s + 11, 2) ||
	    s[13] != ':' || usage_digits(s + 14, 2) || s[16] != ':' ||
	    usage_digits(s + 17, 2))
		return -1;
	y = usage_num(s, 4), mo = usage_num(s + 5, 2), d = usage_num(s + 8, 2);
	h = usage_num(s + 11, 2), mi = usage_num(s + 14, 2);
	sec = usage_num(s + 17, 2);
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > usage_mdays(y, mo) ||
	    h > 23 || mi > 59 || sec > 60)
		return -1;
	s += 19;
	if (*s == '.') {
		if (!isdigit((unsigned char)*++s))
			return -1;
		while (isdigit((unsigned char)*s))
			s++;
	}
	if (usage_offset(s, &east) == -1)
		return -1;
	/*
	 * The instant matters only on 1970-01-01 (an offset east of UTC can
	 * put it in 1969) and for second 60: timegm (~140 ns) stays off the
	 * path of every other record.
	 */
	if (sec != 60 && (y != 1970 || mo != 1 || d != 1))
		return 0;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	utc_min = (int64_t)timegm(&tm) / 60 - east;
	if (utc_min < 0 || (sec == 60 && !usage_leap_slot(utc_min)))
		return -1;
	return 0;
}

static void
usage_bad(struct reply *rp, const char *field, const char *why)
{
	char msg[320];

	snprintf(msg, sizeof(msg), "%s: %s", field, why);
	reply_error(rp, 400, "bad_request", msg, NULL);
}

/*
 * Where and why jansson stopped ("real number overflow near '1e400'" at
 * byte 57): what it quotes of the body is the client's, so anything but
 * printable ASCII in it becomes '?'.
 */
static void
usage_not_json(struct reply *rp, const json_error_t *jerr)
{
	char	why[sizeof(jerr->text) + 48];
	size_t	i;

	snprintf(why, sizeof(why), "not valid JSON at byte %d: %s",
	    jerr->position, jerr->text);
	for (i = 0; why[i] != '\0'; i++)
		if (why[i] < 0x20 || why[i] > 0x7e)
			why[i] = '?';
	usage_bad(rp, "body", why);
}

static int
usage_str(json_t *rec, const char *name, char *dst, size_t dstsz,
    const char **why)
{
	json_t		*v = json_object_get(rec, name);
	const char	*s;

	if (v == NULL) {
		*why = "required";
		return -1;
	}
	if (!json_is_string(v)) {
		*why = "must be a string";
		return -1;
	}
	s = json_string_value(v);
	if (strlen(s) >= dstsz || strlen(s) != json_string_length(v)) {
		*why = "too long";
		return -1;
	}
	memcpy(dst, s, strlen(s) + 1);
	return 0;
}

/* The plain string fields, in the order they are checked, and their rules. */
static const struct usage_strf {
	const char	*name;
	size_t		 off, size, max;
	const char	*extra;
	int		 lower_only;
} usage_strs[] = {
	{ "id", offsetof(struct usage_rec, id), USAGE_ID_MAX + 1,
	    USAGE_ID_MAX, "._:-", 0 },
	{ "product", offsetof(struct usage_rec, product),
	    TOKEN_PRODUCT_MAX + 1, TOKEN_PRODUCT_MAX, "_", 1 },
	{ "metric", offsetof(struct usage_rec, metric),
	    TOKEN_PRODUCT_MAX + 1, TOKEN_PRODUCT_MAX, "_", 1 },
};
#define USAGE_NSTRS	(sizeof(usage_strs) / sizeof(usage_strs[0]))

static int
usage_strf_ok(const struct usage_strf *f, const struct usage_rec *r)
{
	return usage_charset((const char *)r + f->off, 1, f->max, f->extra,
	    f->lower_only);
}

static int
usage_quantity_ok(double q)
{
	return isfinite(q) && q >= 0 && q <= USAGE_QUANTITY_MAX;
}

static int
usage_kid_ok(const char *kid)
{
	return strlen(kid) == TOKEN_KID_LEN &&
	    strspn(kid, "0123456789abcdef") == TOKEN_KID_LEN;
}

/* A record of the caller's own key names one of its licensed products. */
static int
usage_licensed(const struct lease *l, const char *product)
{
	int i;

	for (i = 0; i < l->n_products; i++)
		if (strcmp(l->products[i], product) == 0)
			return 1;
	return 0;
}

/* A record's fields, as both parsers know them. */
enum usage_key {
	UK_ID, UK_PRODUCT, UK_METRIC, UK_QUANTITY, UK_TS, UK_KEY_ID, UK_N
};
#define UK_REQUIRED	((1u << UK_KEY_ID) - 1)	/* all but key_id */

static const char *const usage_known[UK_N] = { "id", "product", "metric",
    "quantity", "ts", "key_id" };

/* Every field of a record is one we know. */
static int
usage_fields(json_t *j, const char **field, const char **why)
{
	const char	*k;
	json_t		*v;
	size_t		 i;

	json_object_foreach(j, k, v) {
		for (i = 0; i < UK_N; i++)
			if (strcmp(k, usage_known[i]) == 0)
				break;
		if (i == UK_N) {
			/* Named only when short and plain: it is echoed. */
			*field = usage_charset(k, 1, 32, "_-", 0) == 0 ? k : "";
			*why = "unknown field";
			return -1;
		}
	}
	return 0;
}

/*
 * Whose record: the caller's own (for a product it is licensed for), or,
 * from a key with role proxy only, the key_id it names.
 */
static int
usage_owner(json_t *j, const struct lease *l, const char *kid,
    struct usage_rec *r, const char **field, const char **why)
{
	*field = "key_id";
	if (json_object_get(j, "key_id") == NULL) {
		memcpy(r->kid, kid, sizeof(r->kid));
		if (!usage_licensed(l, r->product)) {
			*field = "product";
			*why = "not licensed for this key";
			return -1;
		}
		return 0;
	}
	if (l->role != ROLE_PROXY) {
		*why = "only a key with role proxy may report for other keys";
		return -1;
	}
	if (usage_str(j, "key_id", r->kid, sizeof(r->kid), why) ||
	    !usage_kid_ok(r->kid)) {
		*why = "must be 16 lowercase hex characters";
		return -1;
	}
	return 0;
}

/*
 * One record into r; on error names the field in *field / *why. Records
 * a proxy relays for other keys (key_id) were checked against their own
 * lease where they were first accepted.
 */
static int
usage_record(json_t *j, const struct lease *l, const char *kid,
    struct usage_rec *r, const char **field, const char **why)
{
	const struct usage_strf	*f;
	json_t			*v;
	size_t			 i;

	*why = "invalid";
	if (!json_is_object(j)) {
		*field = "";
		*why = "must be an object";
		return -1;
	}
	if (usage_fields(j, field, why) == -1)
		return -1;
	memset(r, 0, sizeof(*r));
	for (i = 0; i < USAGE_NSTRS; i++) {
		f = &usage_strs[i];
		if (usage_str(j, *field = f->name, (char *)r + f->off,
		    f->size, why) || usage_strf_ok(f, r))
			return -1;
	}
	*field = "quantity";
	v = json_object_get(j, "quantity");
	if (v == NULL || !json_is_number(v) ||
	    !usage_quantity_ok(r->quantity = json_number_value(v))) {
		*why = "must be a finite number from 0 to 1e12";
		return -1;
	}
	if (usage_str(j, *field = "ts", r->ts, sizeof(r->ts), why) ||
	    usage_ts_valid(r->ts)) {
		*why = "must be an RFC 3339 date-time naming a real date and "
		    "time, year 1970 or later";
		return -1;
	}
	return usage_owner(j, l, kid, r, field, why);
}

/* usage_record for the fuzz target, which has no connection to answer. */
int
usage_record_check(json_t *j, const struct lease *l, const char *kid,
    struct usage_rec *r, const char **field, const char **why)
{
	return usage_record(j, l, kid, r, field, why);
}

/*
 * The fast path: the body as clients send it, {"records":[{...},...]}
 * with plain ASCII strings and no escapes, read in place without building
 * a jansson tree (which cost most of a 1-record POST). It accepts a subset
 * of what the jansson path accepts and fills the same records; anything
 * else (an escape, a byte outside printable ASCII, a duplicate or unknown
 * field, any invalid record, a number it cannot read exactly as jansson
 * does) returns -1 and the jansson path decides, so every answer to a bad
 * body, and every corner of JSON, stays what it was.
 */
struct usage_fp {
	const char	*p, *end;
};

#define USAGE_FP_NUM	32	/* longest number token read here */

static void
usage_fp_ws(struct usage_fp *f)
{
	while (f->p < f->end && (*f->p == ' ' || *f->p == '\t' ||
	    *f->p == '\n' || *f->p == '\r'))
		f->p++;
}

static int
usage_fp_lit(struct usage_fp *f, char ch)
{
	usage_fp_ws(f);
	if (f->p == f->end || *f->p != ch)
		return -1;
	f->p++;
	return 0;
}

/* A string of printable ASCII without escapes, shorter than dsz. */
static int
usage_fp_str(struct usage_fp *f, char *dst, size_t dsz)
{
	size_t n = 0;

	if (usage_fp_lit(f, '"') == -1)
		return -1;
	for (; f->p < f->end && *f->p != '"'; f->p++) {
		if (*f->p < 0x20 || *f->p > 0x7e || *f->p == '\\' ||
		    n + 1 >= dsz)
			return -1;
		dst[n++] = *f->p;
	}
	if (f->p == f->end)
		return -1;
	f->p++;
	dst[n] = '\0';
	return 0;
}

static const char *
usage_fp_digits(const char *s)
{
	while (isdigit((unsigned char)*s))
		s++;
	return s;
}

/* 1 if s is exactly one number of JSON's grammar (RFC 8259 6). */
static int
usage_fp_numtok(const char *s)
{
	if (*s == '-')
		s++;
	if (*s == '0')
		s++;
	else if (isdigit((unsigned char)*s))
		s = usage_fp_digits(s);
	else
		return 0;
	if (*s == '.') {
		if (!isdigit((unsigned char)*++s))
			return 0;
		s = usage_fp_digits(s);
	}
	if (*s == 'e' || *s == 'E') {
		if (*++s == '+' || *s == '-')
			s++;
		if (!isdigit((unsigned char)*s))
			return 0;
		s = usage_fp_digits(s);
	}
	return *s == '\0';
}

/*
 * A number read as jansson reads it: an integer by strtoll made a double
 * (so "-0" is 0), a real by strtod. Long tokens and range errors fall back.
 */
static int
usage_fp_num(struct usage_fp *f, double *v)
{
	char	 buf[USAGE_FP_NUM + 1], *e;
	size_t	 n = 0;

	usage_fp_ws(f);
	while (f->p < f->end && n < USAGE_FP_NUM &&
	    strchr("0123456789+-.eE", *f->p) != NULL && *f->p != '\0')
		buf[n++] = *f->p++;
	buf[n] = '\0';
	if (n == USAGE_FP_NUM || !usage_fp_numtok(buf))
		return -1;
	errno = 0;
	if (strpbrk(buf, ".eE") != NULL)
		*v = strtod(buf, &e);
	else if (n <= 15)
		*v = (double)strtoll(buf, &e, 10);
	else
		return -1;
	return *e != '\0' || errno != 0 ? -1 : 0;
}

/* Where each string field goes in the record (quantity is no string). */
#define USAGE_AT(f)	{ offsetof(struct usage_rec, f), \
			    sizeof(((struct usage_rec *)0)->f) }
static const struct {
	size_t	off, size;
} usage_fp_at[UK_N] = {
	USAGE_AT(id), USAGE_AT(product), USAGE_AT(metric), { 0, 0 },
	USAGE_AT(ts), USAGE_AT(kid)
};

/* One {"field":value,...} into r; *seen has a bit per field. */
static int
usage_fp_rec(struct usage_fp *f, struct usage_rec *r, unsigned int *seen)
{
	char	 key[16];
	size_t	 k;

	memset(r, 0, sizeof(*r));
	*seen = 0;
	if (usage_fp_lit(f, '{') == -1)
		return -1;
	do {
		if (usage_fp_str(f, key, sizeof(key)) == -1 ||
		    usage_fp_lit(f, ':') == -1)
			return -1;
		for (k = 0; k < UK_N && strcmp(key, usage_known[k]) != 0; k++)
			;
		if (k == UK_N || (*seen & (1u << k)) != 0)
			return -1;
		*seen |= 1u << k;
		if (k == UK_QUANTITY) {
			if (usage_fp_num(f, &r->quantity) == -1)
				return -1;
		} else if (usage_fp_str(f, (char *)r + usage_fp_at[k].off,
		    usage_fp_at[k].size) == -1)
			return -1;
	} while (usage_fp_lit(f, ',') == 0);
	return usage_fp_lit(f, '}');
}

/* The jansson path's checks, as a yes or no. */
static int
usage_fp_ok(struct usage_rec *r, unsigned int seen, const struct lease *l,
    const char *kid)
{
	size_t i;

	if ((seen & UK_REQUIRED) != UK_REQUIRED)
		return -1;
	for (i = 0; i < USAGE_NSTRS; i++)
		if (usage_strf_ok(&usage_strs[i], r) != 0)
			return -1;
	if (!usage_quantity_ok(r->quantity) || usage_ts_valid(r->ts) != 0)
		return -1;
	if ((seen & (1u << UK_KEY_ID)) == 0) {
		memcpy(r->kid, kid, TOKEN_KID_LEN + 1);
		return usage_licensed(l, r->product) ? 0 : -1;
	}
	return l->role == ROLE_PROXY && usage_kid_ok(r->kid) ? 0 : -1;
}

int
usage_parse_fast(const char *body, size_t len, const struct lease *l,
    const char *kid, struct usage_rec **out, int *nout)
{
	struct usage_fp		 f = { body, body + len };
	struct usage_rec	*v = NULL, *nv;
	unsigned int		 seen;
	char			 key[8];
	int			 n = 0, cap = 0;

	if (body == NULL || usage_fp_lit(&f, '{') == -1 ||
	    usage_fp_str(&f, key, sizeof(key)) == -1 ||
	    strcmp(key, "records") != 0 || usage_fp_lit(&f, ':') == -1 ||
	    usage_fp_lit(&f, '[') == -1)
		return -1;
	do {
		if (n == USAGE_MAX_RECORDS)
			goto fail;	/* jansson's path says how many */
		if (n == cap) {
			cap = cap == 0 ? 4 : cap * 2;
			if ((nv = reallocarray(v, cap, sizeof(*v))) == NULL)
				goto fail;
			v = nv;
		}
		if (usage_fp_rec(&f, &v[n], &seen) == -1 ||
		    usage_fp_ok(&v[n], seen, l, kid) == -1)
			goto fail;
		n++;
	} while (usage_fp_lit(&f, ',') == 0);
	if (usage_fp_lit(&f, ']') == -1 || usage_fp_lit(&f, '}') == -1)
		goto fail;
	usage_fp_ws(&f);
	if (f.p != f.end)
		goto fail;
	*out = v;
	*nout = n;
	return 0;
fail:
	free(v);
	return -1;
}

/* The body's records, validated in full, into st; -1 with rp filled. */
static int
usage_parse(const struct conn *c, struct req_state *st, const struct lease *l,
    struct reply *rp)
{
	json_error_t	 jerr;
	json_t		*root, *recs;
	const char	*field, *why;
	char		 kid[TOKEN_KID_LEN + 1], name[96];
	size_t		 i, n;
	int		 rv = -1;

	token_kid_from_hash(st->lic.sha, kid);
	if (usage_parse_fast(c->body, c->bodylen, l, kid, &st->usage.recs,
	    &st->usage.n) == 0)
		return 0;
	root = json_loadb(c->body != NULL ? c->body : "", c->bodylen,
	    USAGE_JSON_FLAGS, &jerr);
	if (root == NULL) {
		usage_not_json(rp, &jerr);
		return -1;
	}
	recs = json_object_get(root, "records");
	if (!json_is_object(root) || json_object_size(root) != 1 ||
	    !json_is_array(recs)) {
		usage_bad(rp, "records", "body must be an object whose only "
		    "field, records, is an array");
		goto done;
	}
	n = json_array_size(recs);
	if (n < 1 || n > USAGE_MAX_RECORDS) {
		usage_bad(rp, "records", "must hold 1 to 1000 records");
		goto done;
	}
	if ((st->usage.recs = calloc(n, sizeof(*st->usage.recs))) == NULL) {
		reply_error(rp, 500, "internal", "out of memory", NULL);
		goto done;
	}
	for (i = 0; i < n; i++)
		if (usage_record(json_array_get(recs, i), l, kid,
		    &st->usage.recs[i], &field, &why) == -1) {
			snprintf(name, sizeof(name), "records[%zu]%s%s", i,
			    *field ? "." : "", field);
			usage_bad(rp, name, why);
			goto done;
		}
	st->usage.n = (int)n;
	rv = 0;
done:
	if (rv == -1)
		usage_clear(st);
	json_decref(root);
	return rv;
}

enum outcome
usage_start(const struct conn *c, struct req_state *st, struct reply *rp)
{
	struct lease	l;
	enum outcome	out;

	if (!http_json_type(&c->req)) {
		reply_error(rp, 415, "unsupported_media_type",
		    "send Content-Type: application/json", NULL);
		return OUT_REPLY;
	}
	if (license_check(c, st, &l, rp, &out) == -1)
		return out;	/* answered, or parked on the uplink */
	return usage_parse(c, st, &l, rp) == -1 ? OUT_REPLY : OUT_COMMIT;
}

/* The uplink/issuer answered the key check: on to the records. */
enum outcome
usage_resume(const struct conn *c, struct req_state *st,
    const struct lease_answer *a, struct reply *rp)
{
	struct lease l;

	if (license_checked(c, st, a, &l, rp) == -1)
		return OUT_REPLY;
	return usage_parse(c, st, &l, rp) == -1 ? OUT_REPLY : OUT_COMMIT;
}

void
usage_answer(struct req_state *st, int rv, struct reply *rp)
{
	int n;

	if (rv == STORE_EFULL)
		reply_error(rp, 507, "spool_full",
		    "usage store is full; nothing of this request was kept",
		    NULL);
	else if (rv != 0)
		reply_error(rp, 500, "internal", "store error; nothing kept",
		    NULL);
	else {
		n = snprintf(rp->buf, sizeof(rp->buf),
		    "{\"accepted\":%d,\"duplicates\":%d}",
		    st->usage.n - st->usage.dups, st->usage.dups);
		reply_body(rp, 202, NULL, rp->buf, (size_t)n);
	}
	usage_clear(st);
}

static void
usage_kick(void)
{
	struct ipc_msg	m;
	uint64_t	pending, fwd;
	int64_t		now = proc_now_ms();

	if (worker->cf->mode != CONF_PROXY || now - usg.kicked < 1000 ||
	    store_spool_stats(worker->store, &pending, &fwd) != 0 ||
	    pending < USAGE_KICK_AT)
		return;
	usg.kicked = now;
	memset(&m, 0, sizeof(m));
	m.type = IPC_USAGE_KICK;
	upchan_send(&m);
}

/* The records of v[0..n) in one transaction; duplicates counted in each. */
static int
usage_append(struct req_state *const *v, int n, struct usage_rec *all,
    unsigned char *dup, int total)
{
	int i, j, o = 0, rv;

	for (i = 0; i < n; i++) {
		memcpy(all + o, v[i]->usage.recs, v[i]->usage.n * sizeof(*all));
		o += v[i]->usage.n;
	}
	store_usage_window(worker->store, worker->cf->usage.dedup_window_s);
	rv = store_usage_append(worker->store, all, total,
	    worker->cf->mode == CONF_AUTHORITY, dup);
	if (stats_slot_self() != NULL)
		stats_slot_self()->dedup_pruned += store_dedup_pruned(worker->store);
	for (o = 0, i = 0; i < n; i++)
		for (v[i]->usage.dups = 0, j = 0; j < v[i]->usage.n; j++)
			v[i]->usage.dups += dup[o++];
	return rv;
}

/*
 * A request parked for the group commit. Each commit waits for its flush
 * with the event loop blocked, so on a slow disk the connections split
 * into groups that take turns (one group's requests arrive while the
 * other's commit flushes) and every flush carries only a part of them.
 * So when the last commit was slow, the commit waits until as many
 * requests are parked as the last two commits carried together (every
 * connection that is posting, as far as this worker can tell), or until
 * the bounded wait is over; on a fast disk it runs behind this turn's
 * events, as it always did. Either way no 202 leaves before its commit.
 */
void
usage_park(void)
{
	struct timeval	tv;
	int		target = usg.last[0] + usg.last[1];

	if (target > worker->ntls)
		target = worker->ntls;
	if (++usg.queued >= target || usg.commit_us < USAGE_LINGER_FROM_US) {
		/* Runs after every event this loop turn has already activated. */
		event_active(worker->commit_ev, EV_TIMEOUT, 1);
		return;
	}
	if (usg.queued == 1) {
		tv.tv_sec = 0;
		tv.tv_usec = usg.commit_us < USAGE_LINGER_MAX_US ?
		    usg.commit_us : USAGE_LINGER_MAX_US;
		event_add(worker->commit_ev, &tv);
	}
}

int
usage_commit(struct req_state *const *v, int n)
{
	struct usage_rec	*all;
	unsigned char		*dup;
	int64_t			 t0 = proc_now_us();
	int			 i, total = 0, rv = -1;

	event_del(worker->commit_ev);	/* a bounded wait may be pending */
	usg.queued = 0;
	usg.last[1] = usg.last[0];
	usg.last[0] = n;
	for (i = 0; i < n; i++)
		total += v[i]->usage.n;
	all = calloc(total > 0 ? total : 1, sizeof(*all));
	dup = calloc(total > 0 ? total : 1, 1);
	if (all != NULL && dup != NULL)
		rv = usage_append(v, n, all, dup, total);
	free(all);
	free(dup);
	usg.commit_us = proc_now_us() - t0;
	if (rv == STORE_EFULL && proc_now_ms() - usg.full_logged >= 10000) {
		usg.full_logged = proc_now_ms();
		log_warnx("usage store full (store.max_size): refusing"
		    " usage with 507, leases are still served");
	}
	if (rv == 0)
		usage_kick();
	return rv;
}

/*
 * The request is over, or its connection gone before the commit: never
 * acknowledged, so nothing is owed; a retry of the same records is
 * de-duplicated anyway.
 */
void
usage_clear(struct req_state *st)
{
	free(st->usage.recs);
	st->usage.recs = NULL;
	st->usage.n = st->usage.dups = 0;
}

/*
 * license.c - GET /v1/license and the key check that POST /v1/usage shares.
 * Answers from the store when it can; a miss (or, in a proxy, a lease past
 * refresh_at) becomes a message to the uplink/issuer, which alone writes
 * leases. The request then parks (OUT_LEASE); the answer resumes it at
 * the step after the lookup: read what was stored and answer.
 */
#include <sys/socket.h>

#include <stdio.h>
#include <string.h>


#include "cidr.h"
#include "conf.h"
#include "ipc.h"
#include "limit.h"
#include "log.h"
#include "proc.h"
#include "stats.h"
#include "store.h"
#include "token.h"
#include "worker.h"

#define REFRESH_SLOTS	256
#define DECODED_SLOTS	256
#define SIG_B64_MAX	96	/* an Ed25519 signature is 86 chars */

/*
 * Decoded and rendered leases, by key hash (see license_decode), and what
 * the last lookup read for the key under snapshot txnid (license_seen).
 */
struct decoded {
	int		 valid;
	unsigned char	 sha[32];
	char		 sig[SIG_B64_MAX + 1];
	struct lease	 l;
	char		 head[1024];
	int		 headlen;
	uint64_t	 txnid;		/* 0: nothing remembered */
	int64_t		 key_expires;	/* authority: the registry's */
	struct store_lease_time t;
	int		 toklen;
	char		 tok[TOKEN_MAX + 1];
};

static struct {
	/* Recently asked refreshes, so a hot key does not flood the uplink. */
	struct {
		unsigned char	sha[8];
		int64_t		at;
	} refreshes[REFRESH_SLOTS];
	struct decoded	 decoded[DECODED_SLOTS];
	int64_t		 limited_logged;	/* last 429 warning, seconds */
} lic;

static void
license_unavailable(struct reply *rp, int retry_after)
{
	reply_error(rp, 503, "upstream_unavailable",
	    "no valid lease cached and no upstream answered", NULL);
	reply_header(rp, "Retry-After: %d\r\n", retry_after);
}

static void
license_rejected(struct reply *rp, const char *reason)
{
	reply_error(rp, 403, "key_rejected", "license key rejected", reason);
}

/* 0 with st's key and hash set, or -1 with a 401 in rp. */
static int
license_key(const struct conn *c, struct req_state *st, struct reply *rp)
{
	const char	*key = NULL;
	int		 len = 0;

	/* Token or Bearer with more than the header field keeps: a bad key. */
	if (!c->req.auth_long && (!c->req.auth_present ||
	    (len = http_auth_key(&c->req, &key)) <= 0)) {
		reply_error(rp, 401, "missing_key",
		    "send Authorization: Token KEY", NULL);
		return -1;
	}
	if (key == NULL || !token_key_valid(key, (size_t)len)) {
		reply_error(rp, 401, "malformed_key",
		    "a license key is 40 characters of A-Z, a-z, 0-9", NULL);
		return -1;
	}
	/*
	 * A keep-alive client sends the same key on every request: its hash
	 * (SHA-256 through EVP, ~5,700 instructions, 15 % of a cached GET)
	 * is kept with it for the connection's life (license_clear).
	 */
	st->lic.current = 1;
	if (st->lic.hashed && memcmp(st->lic.key, key, TOKEN_KEY_LEN) == 0)
		return 0;
	memcpy(st->lic.key, key, TOKEN_KEY_LEN);
	st->lic.key[TOKEN_KEY_LEN] = '\0';
	token_key_hash(st->lic.key, TOKEN_KEY_LEN, st->lic.sha);
	st->lic.hashed = 1;
	return 0;
}

/* Authority: the registry decides, so a revocation counts at once. */
static int
license_registry(const unsigned char *sha, int64_t now, struct reply *rp,
    int64_t *expires)
{
	struct store_key	k;
	int			r;

	r = store_key_get(worker->store, sha, &k);
	if (r == STORE_ENOTFOUND) {
		license_rejected(rp, "unknown");
		return -1;
	}
	if (r != 0) {
		reply_error(rp, 500, "internal", "store error", NULL);
		return -1;
	}
	if (k.revoked) {
		license_rejected(rp, "revoked");
		return -1;
	}
	if (k.expires != 0 && k.expires <= now) {
		license_rejected(rp, "expired");
		return -1;
	}
	*expires = k.expires;
	return 0;
}

/*
 * Proxy: a rejection from upstream stands for negative_ttl. *none: no
 * rejection is stored at all (not merely one that ran out).
 */
static int
license_negative(const unsigned char *sha, int64_t now, struct reply *rp,
    int *none)
{
	char	reason[16];
	int64_t	until;

	*none = 1;
	if (store_reject_get(worker->store, sha, reason, sizeof(reason),
	    &until) != 0)
		return 0;
	*none = 0;
	if (store_until_live(until, now,
	    (worker->cf->license.negative_ttl_ms + 999) / 1000)) {
		license_rejected(rp, reason);
		return -1;
	}
	return 0;
}

/* now: seconds on the boot clock, so a wall clock set back cannot stall. */
static void
license_refresh(const struct req_state *st, int64_t now)
{
	struct ipc_msg	 m;
	const unsigned char *sha = st->lic.sha;
	unsigned int	 i = (sha[0] | (sha[1] << 8)) % REFRESH_SLOTS;

	if (memcmp(lic.refreshes[i].sha, sha, 8) == 0 &&
	    lic.refreshes[i].at >= now)
		return;
	memcpy(lic.refreshes[i].sha, sha, 8);
	lic.refreshes[i].at = now;
	memset(&m, 0, sizeof(m));
	m.type = IPC_LEASE_REQ;
	memcpy(m.key, st->lic.key, sizeof(m.key));
	m.refresh = 1;
	upchan_send(&m);
}

/* Once a second at most, so a flood of misses cannot flood the log. */
static void
license_limited_log(const unsigned char *addr)
{
	int64_t	now = proc_now_ms() / 1000;
	char	buf[CIDR_TEXT_LEN];

	if (now == lic.limited_logged)
		return;
	lic.limited_logged = now;
	log_warnx("lease misses from %s over license.miss_rate/miss_burst: "
	    "answering 429", addr != NULL ? cidr_format(addr, buf) :
	    "a client already gone");
}

/*
 * A miss costs an upstream request, so misses draw on the client address's
 * budget, shared by every worker (limit.c). 0 to go on, -1 with a 429.
 * An address that cannot be read (the client already reset) is refused:
 * a reset must not buy an unlimited miss.
 */
static int
license_budget(const struct conn *c, struct reply *rp)
{
	const struct conf	*cf = worker->cf;
	struct sockaddr_storage	 ss;
	socklen_t		 len = sizeof(ss);
	unsigned char		 addr[CIDR_ADDR_LEN];
	int			 retry = 1, known;

	if (stats_limit_table() == NULL)
		return 0;
	known = getpeername(c->fd, (struct sockaddr *)&ss,
	    &len) == 0 &&
	    cidr_from_sockaddr((struct sockaddr *)&ss, len, addr) == 0;
	if (known && (cidr_match_any(cf->license.miss_exempt,
	    cf->license.n_miss_exempt, addr) ||
	    limit_take(stats_limit_table(), addr, limit_now_us(),
	    cf->license.miss_rate, cf->license.miss_burst, &retry)))
		return 0;
	if (stats_slot_self() != NULL)
		__atomic_add_fetch(&stats_slot_self()->misses_limited, 1,
		    __ATOMIC_RELAXED);
	license_limited_log(known ? addr : NULL);
	reply_error(rp, 429, "too_many_requests", "too many lookups of unknown "
	    "keys from this address", NULL);
	reply_header(rp, "Retry-After: %d\r\n", retry);
	return -1;
}

/* Ask the uplink/issuer: OUT_LEASE on rp->rid, or a 503 now. */
static enum outcome
license_ask(const struct req_state *st, struct reply *rp)
{
	if ((rp->rid = upchan_ask(st->lic.key)) == 0) {
		license_unavailable(rp, 1);
		return OUT_REPLY;
	}
	if (stats_slot_self() != NULL)
		stats_slot_self()->cache_misses++;
	return OUT_LEASE;
}

/* The JSON fields of a 200 that depend only on the lease. */
static void
license_render(struct decoded *d)
{
	char	prd[TOKEN_MAX_PRODUCTS * (TOKEN_PRODUCT_MAX + 3) + 1];
	char	iat[32], rat[32], exp[32], head[sizeof(d->head)];
	size_t	o = 0;
	int	i;

	/* Products are [a-z0-9_] (checked in token_decode): no escaping. */
	for (i = 0; i < d->l.n_products; i++)
		o += snprintf(prd + o, sizeof(prd) - o, "%s\"%s\"",
		    i ? "," : "", d->l.products[i]);
	prd[o] = '\0';
	http_time(d->l.iat, iat, sizeof(iat));
	http_time(d->l.rat, rat, sizeof(rat));
	http_time(d->l.exp, exp, sizeof(exp));
	/* Through a local: GCC's -Wrestrict cannot tell d's members apart. */
	d->headlen = snprintf(head, sizeof(head), "{\"key_id\":\"%s\","
	    "\"status\":\"%s\",\"products\":[%s],\"role\":\"%s\","
	    "\"issued_at\":\"%s\",\"refresh_at\":\"%s\",\"expires_at\":\"%s\",",
	    d->l.kid, d->l.status, prd, role_name(d->l.role), iat, rat, exp);
	memcpy(d->head, head, sizeof(head));
}

/*
 * Stored tokens were verified before they were stored, and an Ed25519
 * signature pins its payload: a slot whose key hash and signature match
 * holds this very lease, decoded and rendered once instead of per request.
 */
static const struct decoded *
license_decode(const unsigned char sha[32], const char *tok, size_t len)
{
	struct decoded	*d = &lic.decoded[(sha[0] | sha[1] << 8) %
			    DECODED_SLOTS];
	const char	*sig = memchr(tok, '.', len);
	char		 kid[TOKEN_KID_LEN + 1];

	if (sig == NULL || (size_t)(tok + len - ++sig) >= sizeof(d->sig))
		return NULL;
	if (d->valid && memcmp(d->sha, sha, 32) == 0 &&
	    strcmp(d->sig, sig) == 0)
		return d;
	d->valid = 0;
	d->txnid = 0;
	token_kid_from_hash(sha, kid);
	/* A lease that names another key is never served for this one. */
	if (token_decode(tok, len, &d->l) == -1 || strcmp(d->l.kid, kid) != 0)
		return NULL;
	memcpy(d->sha, sha, 32);
	strcpy(d->sig, sig);
	license_render(d);
	d->valid = d->headlen > 0 && (size_t)d->headlen < sizeof(d->head);
	return d->valid ? d : NULL;
}

/*
 * The registry (or rejection) and lease reads of the last hit for this
 * key, if the snapshot has not changed since: the same bytes, so the
 * same verdict, but for a key's own expiry, which the clock decides.
 * A rejection row that ran out is not remembered: a clock set back
 * could make it live again. Copies the token into tok; -1: read.
 */
static int
license_seen(const unsigned char *sha, uint64_t txnid, int64_t now,
    char *tok, size_t toksz, struct store_lease_time *t)
{
	struct decoded *d = &lic.decoded[(sha[0] | sha[1] << 8) %
			    DECODED_SLOTS];

	if (txnid == 0 || !d->valid || d->txnid != txnid ||
	    memcmp(d->sha, sha, 32) != 0 || (size_t)d->toklen >= toksz ||
	    (d->key_expires != 0 && d->key_expires <= now))
		return -1;
	memcpy(tok, d->tok, (size_t)d->toklen + 1);
	*t = d->t;
	return d->toklen;
}

static void
license_remember(const struct decoded *cd, uint64_t txnid, int64_t expires,
    const char *tok, int n, const struct store_lease_time *t)
{
	struct decoded *d = &lic.decoded[cd - lic.decoded];

	if (n <= 0 || (size_t)n >= sizeof(d->tok))
		return;
	d->txnid = txnid;
	d->key_expires = expires;
	d->t = *t;
	d->toklen = n;
	memcpy(d->tok, tok, (size_t)n + 1);
}

/*
 * The lookup: key, then clock, registry or rejection, and lease in one
 * read transaction. The decoded lease (its token in tok), or NULL with *out
 * saying what rp holds (an answer, or the request id to park on).
 */
static const struct decoded *
license_lookup(const struct conn *c, struct req_state *st, char *tok,
    size_t toksz, struct reply *rp, enum outcome *out)
{
	const struct decoded	*d;
	struct store_clock	 clk;
	struct store_lease_time	 t;
	uint64_t		 txnid;
	int64_t			 expires = 0;
	int			 authority = worker->cf->mode == CONF_AUTHORITY;
	int			 n, rejected = 0, none = 1;
	int			 lst = STORE_LEASE_EXPIRED;

	*out = OUT_REPLY;
	if (license_key(c, st, rp) == -1)
		return NULL;
	store_snapshot(worker->store);
	txnid = store_snapshot_txnid(worker->store);
	store_clock_read(worker->store, &clk);
	/* Two of the three B-tree reads, skipped while nothing was written. */
	if ((n = license_seen(st->lic.sha, txnid, clk.wall, tok, toksz,
	    &t)) < 0) {
		rejected = authority ? license_registry(st->lic.sha, clk.wall,
		    rp, &expires) : license_negative(st->lic.sha, clk.wall, rp,
		    &none);
		n = rejected ? 0 : store_lease_get(worker->store, st->lic.sha,
		    tok, toksz, &t);
		txnid = none ? txnid : 0;
	} else
		txnid = 0;	/* remembered already */
	store_snapshot_end(worker->store);
	/* Neither a lease nor a live rejection: a miss, budgeted. */
	if (rejected || (n <= 0 && !authority && license_budget(c, rp) == -1))
		return NULL;
	/* Validity and refresh by the one rule (store_lease_state). */
	if (n > 0)
		lst = store_lease_state(&t, &clk);
	if (lst == STORE_LEASE_EXPIRED ||
	    (d = license_decode(st->lic.sha, tok, (size_t)n)) == NULL ||
	    (lst == STORE_LEASE_DUE && authority)) {
		*out = license_ask(st, rp);
		return NULL;
	}
	if (txnid != 0)
		license_remember(d, txnid, expires, tok, n, &t);
	if (lst == STORE_LEASE_DUE)
		license_refresh(st, clk.boot_ms / 1000);
	if (stats_slot_self() != NULL)
		stats_slot_self()->cache_hits++;
	if (c->req.instance[0] != '\0')
		stats_instance_seen(c->req.instance, clk.wall);
	return d;
}

/*
 * Resumed after the uplink/issuer answered: on 200 the lease it stored,
 * or NULL with rp filled (the refusal, or a 503 if nothing usable is
 * stored after all).
 */
static const struct decoded *
license_stored(const struct conn *c, const struct req_state *st,
    const struct lease_answer *a, char *tok, size_t toksz, struct reply *rp)
{
	const struct decoded	*d = NULL;
	struct store_clock	 clk;
	struct store_lease_time	 t;
	int			 n;

	if (a->status == 403) {
		license_rejected(rp, a->reason);
		return NULL;
	}
	if (a->status != 200) {
		license_unavailable(rp, a->retry_after);
		return NULL;
	}
	store_snapshot(worker->store);
	store_clock_read(worker->store, &clk);
	if (a->msg != NULL && a->msg->lease[0] != '\0') {
		/* The token came with the answer (the issuer's: it stores it
		 * only after answering). */
		n = snprintf(tok, toksz, "%s", a->msg->lease);
		if ((size_t)n < toksz)
			d = license_decode(st->lic.sha, tok, (size_t)n);
	} else {
		n = store_lease_get(worker->store, st->lic.sha, tok, toksz, &t);
		if (n > 0 && store_lease_state(&t, &clk) != STORE_LEASE_EXPIRED)
			d = license_decode(st->lic.sha, tok, (size_t)n);
	}
	store_snapshot_end(worker->store);
	if (d == NULL) {
		license_unavailable(rp, 1);
		return NULL;
	}
	if (c->req.instance[0] != '\0')
		stats_instance_seen(c->req.instance, clk.wall);
	return d;
}

int
license_check(const struct conn *c, struct req_state *st, struct lease *l,
    struct reply *rp, enum outcome *out)
{
	const struct decoded	*d;
	char			 tok[TOKEN_MAX + 1];

	if ((d = license_lookup(c, st, tok, sizeof(tok), rp, out)) == NULL)
		return -1;
	*l = d->l;
	return 0;
}

int
license_checked(const struct conn *c, struct req_state *st,
    const struct lease_answer *a, struct lease *l, struct reply *rp)
{
	const struct decoded	*d;
	char			 tok[TOKEN_MAX + 1];

	if ((d = license_stored(c, st, a, tok, sizeof(tok), rp)) == NULL)
		return -1;
	*l = d->l;
	return 0;
}

/*
 * The 200, rendered by hand: the hot path (see PERFORMANCE.md). With
 * Prefer: return=minimal (a proxy's upstream fetch) the token alone,
 * which carries every other field of the answer, signed.
 */
static void
license_answer(const struct conn *c, const struct decoded *d, const char *tok,
    const char *source, struct reply *rp)
{
	static const char	 mid[] = "\"source\":\"", lease[] = "\",\"lease\":\"";
	static const char	 alone[] = "{\"lease\":\"";
	size_t			 slen = strlen(source), tlen = strlen(tok), n;
	int			 whole = !c->req.minimal;
	char			*p = rp->buf;

	/* By memcpy: snprintf's %s walked the ~300-byte token byte by byte. */
	n = (whole ? (size_t)d->headlen + sizeof(mid) - 1 + slen +
	    sizeof(lease) - 1 : sizeof(alone) - 1) + tlen + 2;
	if (n > sizeof(rp->buf)) {	/* cannot: bounded by REPLY_BUF */
		reply_error(rp, 500, "internal", "lease too large", NULL);
		return;
	}
	if (whole) {
		p = mempcpy(p, d->head, (size_t)d->headlen);
		p = mempcpy(p, mid, sizeof(mid) - 1);
		p = mempcpy(p, source, slen);
		p = mempcpy(p, lease, sizeof(lease) - 1);
	} else
		p = mempcpy(p, alone, sizeof(alone) - 1);
	p = mempcpy(p, tok, tlen);
	memcpy(p, "\"}", 2);
	reply_body(rp, 200, NULL, rp->buf, n);
	rp->source = source;
}

enum outcome
license_start(const struct conn *c, struct req_state *st, struct reply *rp)
{
	const struct decoded	*d;
	char			 tok[TOKEN_MAX + 1];
	enum outcome		 out;

	if ((d = license_lookup(c, st, tok, sizeof(tok), rp, &out)) == NULL)
		return out;
	license_answer(c, d, tok, worker->cf->mode == CONF_AUTHORITY ?
	    "authority" : "cache", rp);
	return OUT_REPLY;
}

enum outcome
license_resume(const struct conn *c, struct req_state *st,
    const struct lease_answer *a, struct reply *rp)
{
	const struct decoded	*d;
	char			 tok[TOKEN_MAX + 1];

	if ((d = license_stored(c, st, a, tok, sizeof(tok), rp)) != NULL)
		license_answer(c, d, tok, worker->cf->mode == CONF_AUTHORITY ?
		    "authority" : "upstream", rp);
	return OUT_REPLY;
}

/*
 * The request is over. A hashed key and its hash stay for the next request
 * on this connection, as the Authorization header itself stays in the
 * parsed head, until the connection ends (conn_free wipes both).
 */
void
license_clear(struct req_state *st, int conn_ends)
{
	if (conn_ends || !st->lic.hashed)
		explicit_bzero(&st->lic, sizeof(st->lic));
	st->lic.current = 0;
}

/*
 * The access log's key_id without a second SHA-256 of the same key: the
 * hash, when this request's key was checked (license_key); else NULL.
 */
const unsigned char *
license_key_sha(const struct req_state *st)
{
	return st->lic.current ? st->lic.sha : NULL;
}

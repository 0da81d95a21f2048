/*
 * license.c - GET /v1/license and the key check that POST /v1/usage shares.
 * Answers from the store when it can; a miss (or, in a proxy, a lease past
 * refresh_at) becomes a message to the uplink/issuer, which alone writes
 * leases. When the answer comes back the request is dispatched again and
 * reads what was stored.
 */
#include <sys/socket.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

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
#define RETRY_AFTER	5	/* seconds, when nothing at all answers */

/* Recently asked refreshes, so a hot key does not flood the uplink. */
static struct {
	unsigned char	sha[8];
	int64_t		at;
} refreshes[REFRESH_SLOTS];

/* Decoded and rendered leases, by key hash (see license_decode). */
#define DECODED_SLOTS	256
#define SIG_B64_MAX	96	/* an Ed25519 signature is 86 chars */

struct decoded {
	int		 valid;
	unsigned char	 sha[32];
	char		 sig[SIG_B64_MAX + 1];
	struct lease	 l;
	char		 head[1024];
	int		 headlen;
};
static struct decoded decoded[DECODED_SLOTS];

static void
license_unavailable(struct conn *c, int retry_after)
{
	char extra[48];

	snprintf(extra, sizeof(extra), "Retry-After: %d\r\n", retry_after);
	conn_error(c, 503, "upstream_unavailable",
	    "no valid lease cached and no upstream answered", NULL, extra);
}

static void
license_rejected(struct conn *c, const char *reason)
{
	char more[64];

	snprintf(more, sizeof(more), ",\"reason\":\"%s\"", reason);
	conn_error(c, 403, "key_rejected", "license key rejected", more, NULL);
}

/* 0 with c->key and c->sha set, or -1 after replying 401. */
static int
license_key(struct conn *c)
{
	const char	*key;
	int		 len;

	if (!c->req.auth_present ||
	    (len = http_auth_key(&c->req, &key)) <= 0) {
		conn_error(c, 401, "missing_key",
		    "send Authorization: Token KEY", NULL, NULL);
		return -1;
	}
	if (!token_key_valid(key, (size_t)len)) {
		conn_error(c, 401, "malformed_key",
		    "a license key is 40 characters of A-Z, a-z, 0-9", NULL, NULL);
		return -1;
	}
	memcpy(c->key, key, TOKEN_KEY_LEN);
	c->key[TOKEN_KEY_LEN] = '\0';
	token_key_hash(c->key, TOKEN_KEY_LEN, c->sha);
	return 0;
}

/* Authority: the registry decides, so a revocation counts at once. */
static int
license_registry(struct conn *c, int64_t now)
{
	struct store_key	k;
	int			r;

	r = store_key_get(worker->store, c->sha, &k);
	if (r == STORE_ENOTFOUND) {
		license_rejected(c, "unknown");
		return -1;
	}
	if (r != 0) {
		conn_error(c, 500, "internal", "store error", NULL, NULL);
		return -1;
	}
	if (k.revoked) {
		license_rejected(c, "revoked");
		return -1;
	}
	if (k.expires != 0 && k.expires <= now) {
		license_rejected(c, "expired");
		return -1;
	}
	return 0;
}

/* Proxy: a rejection from upstream stands for negative_ttl. */
static int
license_negative(struct conn *c, int64_t now)
{
	char	reason[16];
	int64_t	until;

	if (store_reject_get(worker->store, c->sha, reason, sizeof(reason),
	    &until) == 0 && store_until_live(until, now,
	    (worker->cf->license.negative_ttl_ms + 999) / 1000)) {
		license_rejected(c, reason);
		return -1;
	}
	return 0;
}

/* now: seconds on the boot clock, so a wall clock set back cannot stall. */
static void
license_refresh(struct conn *c, int64_t now)
{
	struct ipc_msg	 m;
	unsigned int	 i = c->sha[0] | (c->sha[1] << 8);

	i %= REFRESH_SLOTS;
	if (memcmp(refreshes[i].sha, c->sha, 8) == 0 && refreshes[i].at >= now)
		return;
	memcpy(refreshes[i].sha, c->sha, 8);
	refreshes[i].at = now;
	memset(&m, 0, sizeof(m));
	m.type = IPC_LEASE_REQ;
	memcpy(m.key, c->key, sizeof(m.key));
	m.refresh = 1;
	worker_send_up(&m);
}

/* Once a second at most, so a flood of misses cannot flood the log. */
static void
license_limited_log(const unsigned char *addr)
{
	static int64_t	last;
	int64_t		now = proc_now_ms() / 1000;
	char		buf[CIDR_TEXT_LEN];

	if (now == last)
		return;
	last = now;
	log_warnx("lease misses from %s over license.miss_rate/miss_burst: "
	    "answering 429", addr != NULL ? cidr_format(addr, buf) :
	    "a client already gone");
}

/*
 * A miss costs an upstream request, so misses draw on the client address's
 * budget, shared by every worker (limit.c). 0 to go on, -1 after a 429.
 * An address that cannot be read (the client already reset) is refused:
 * a reset must not buy an unlimited miss.
 */
static int
license_budget(struct conn *c)
{
	const struct conf	*cf = worker->cf;
	struct sockaddr_storage	 ss;
	socklen_t		 len = sizeof(ss);
	unsigned char		 addr[CIDR_ADDR_LEN];
	char			 extra[48];
	int			 retry = 1, known;

	if (stats_limits == NULL)
		return 0;
	known = getpeername(bufferevent_getfd(c->bev), (struct sockaddr *)&ss,
	    &len) == 0 &&
	    cidr_from_sockaddr((struct sockaddr *)&ss, len, addr) == 0;
	if (known && (cidr_match_any(cf->license.miss_exempt,
	    cf->license.n_miss_exempt, addr) ||
	    limit_take(stats_limits, addr, limit_now_us(),
	    cf->license.miss_rate, cf->license.miss_burst, &retry)))
		return 0;
	if (stats_self != NULL)
		__atomic_add_fetch(&stats_self->misses_limited, 1,
		    __ATOMIC_RELAXED);
	license_limited_log(known ? addr : NULL);
	snprintf(extra, sizeof(extra), "Retry-After: %d\r\n", retry);
	conn_error(c, 429, "too_many_requests", "too many lookups of unknown "
	    "keys from this address", NULL, extra);
	return -1;
}

/* Ask the uplink/issuer; the reply (or a 503 now) answers c later. */
static void
license_ask(struct conn *c)
{
	struct ipc_msg m;

	if (c->after_ipc) {
		/* The uplink said 200 but nothing usable is stored. */
		license_unavailable(c, 1);
		return;
	}
	memset(&m, 0, sizeof(m));
	m.type = IPC_LEASE_REQ;
	if (++worker->next_rid == 0)
		worker->next_rid = 1;
	m.rid = worker->next_rid;
	memcpy(m.key, c->key, sizeof(m.key));
	if (worker_send_up(&m) == -1) {
		license_unavailable(c, 1);
		return;
	}
	c->rid = m.rid;
	c->wait_ms = proc_now_ms();
	TAILQ_INSERT_TAIL(&worker->waiting, c, wentry);
	if (stats_self != NULL)
		stats_self->cache_misses++;
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
	struct decoded	*d = &decoded[(sha[0] | sha[1] << 8) % DECODED_SLOTS];
	const char	*sig = memchr(tok, '.', len);

	if (sig == NULL || (size_t)(tok + len - ++sig) >= sizeof(d->sig))
		return NULL;
	if (d->valid && memcmp(d->sha, sha, 32) == 0 &&
	    strcmp(d->sig, sig) == 0)
		return d;
	d->valid = 0;
	if (token_decode(tok, len, &d->l) == -1)
		return NULL;
	memcpy(d->sha, sha, 32);
	strcpy(d->sig, sig);
	license_render(d);
	d->valid = d->headlen > 0 && (size_t)d->headlen < sizeof(d->head);
	return d->valid ? d : NULL;
}

/*
 * The decoded lease (its token in tok), or NULL when it has replied or is
 * waiting for the uplink (then dispatched again).
 */
static const struct decoded *
license_resolve(struct conn *c, char *tok, size_t toksz)
{
	const struct decoded	*d;
	struct store_clock	 clk;
	struct store_lease_time	 t;
	int			 authority = worker->cf->mode == CONF_AUTHORITY;
	int			 n, rejected, st = STORE_LEASE_EXPIRED;

	if (license_key(c) == -1)
		return NULL;
	/* Clock, registry or rejection, and lease: one read transaction. */
	store_snapshot(worker->store);
	store_clock_read(worker->store, &clk);
	rejected = authority ? license_registry(c, clk.wall) :
	    license_negative(c, clk.wall);
	n = rejected ? 0 : store_lease_get(worker->store, c->sha, tok, toksz,
	    &t);
	store_snapshot_end(worker->store);
	if (rejected)
		return NULL;
	/* Neither a lease nor a live rejection: a miss, budgeted. */
	if (n <= 0 && !authority && !c->after_ipc && license_budget(c) == -1)
		return NULL;
	/* Validity and refresh by the one rule (store_lease_state). */
	if (n > 0)
		st = store_lease_state(&t, &clk);
	if (st == STORE_LEASE_EXPIRED ||
	    (d = license_decode(c->sha, tok, (size_t)n)) == NULL) {
		license_ask(c);
		return NULL;
	}
	if (st == STORE_LEASE_DUE && !c->after_ipc) {
		if (authority) {
			license_ask(c);
			return NULL;
		}
		license_refresh(c, clk.boot_ms / 1000);
	}
	if (!c->after_ipc && stats_self != NULL)
		stats_self->cache_hits++;
	if (c->req.instance[0] != '\0')
		stats_instance_seen(c->req.instance, clk.wall);
	return d;
}

int
license_check(struct conn *c, struct lease *l)
{
	const struct decoded	*d;
	char			 tok[TOKEN_MAX + 1];

	if ((d = license_resolve(c, tok, sizeof(tok))) == NULL)
		return -1;
	*l = d->l;
	return 0;
}

void
license_handle(struct conn *c)
{
	const struct decoded	*d;
	char			 tok[TOKEN_MAX + 1], body[TOKEN_MAX + 1100];
	const char		*source;
	int			 n;

	if ((d = license_resolve(c, tok, sizeof(tok))) == NULL)
		return;
	source = conn_source(c);
	n = snprintf(body, sizeof(body), "%s\"source\":\"%s\",\"lease\":\"%s\"}",
	    d->head, source, tok);
	if (n < 0 || (size_t)n >= sizeof(body)) {	/* cannot happen: bounded */
		conn_error(c, 500, "internal", "lease too large", NULL, NULL);
		return;
	}
	conn_reply(c, 200, NULL, body, (size_t)n);
}

void
license_forget(struct conn *c)
{
	if (c->rid != 0) {
		TAILQ_REMOVE(&worker->waiting, c, wentry);
		c->rid = 0;
	}
}

void
license_ipc(const struct ipc_msg *m)
{
	struct conn *c;

	TAILQ_FOREACH(c, &worker->waiting, wentry)
		if (c->rid == m->rid)
			break;
	if (c == NULL)
		return;		/* the client went away meanwhile */
	license_forget(c);
	switch (m->status) {
	case 200:
		c->after_ipc = c->source_up = 1;
		conn_dispatch(c);
		break;
	case 403:
		license_rejected(c, m->reason[0] ? m->reason : "unknown");
		break;
	default:
		license_unavailable(c, m->retry_after > 0 ? m->retry_after :
		    RETRY_AFTER);
	}
}

/* The uplink went away: nobody will answer the waiting requests. */
void
license_fail_waiting(void)
{
	struct conn *c;

	while ((c = TAILQ_FIRST(&worker->waiting)) != NULL) {
		license_forget(c);
		license_unavailable(c, 1);
	}
}

/*
 * The uplink answers within its own timeouts; this deadline only guards a
 * client against an uplink that hangs: every URL's timeout, plus slack.
 */
static void
license_sweep(evutil_socket_t fd, short ev, void *arg)
{
	const struct conf	*cf = worker->cf;
	int64_t			 limit, now = proc_now_ms();
	struct conn		*c;

	(void)fd, (void)ev, (void)arg;
	limit = cf->mode == CONF_AUTHORITY ? 5000 :
	    (int64_t)cf->license.timeout_ms * cf->license.n_server_url + 2000;
	/* FIFO: the oldest waiter is first. */
	while ((c = TAILQ_FIRST(&worker->waiting)) != NULL &&
	    now - c->wait_ms > limit) {
		license_forget(c);
		license_unavailable(c, RETRY_AFTER);
	}
}

int
license_init(void)
{
	struct timeval	 tv = { 1, 0 };
	struct event	*ev;

	ev = event_new(worker->base, -1, EV_PERSIST, license_sweep, NULL);
	return ev == NULL || event_add(ev, &tv) == -1 ? -1 : 0;
}

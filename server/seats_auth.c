/*
 * seats_auth.c - seats at an authority (in the issuer): its own instances'
 * seats and the grants it sets aside for proxies, both counted against the
 * key's limit in one store transaction per request, by this one process.
 */
#include <stdio.h>
#include <string.h>

#include "chans.h"
#include "conf.h"
#include "ipc.h"
#include "log.h"
#include "stats.h"
#include "store.h"
#include "store_seats.h"
#include "token.h"
#include "seats_srv.h"

static struct {
	const struct conf	*cf;
	struct store		*store;
} sa;

void
seats_auth_init(const struct conf *cf, struct store *s)
{
	sa.cf = cf;
	sa.store = s;
}

int
seats_retry_after(const struct store_seat_use *u, int64_t now,
    int64_t fallback_s)
{
	int64_t s = u->earliest > now ? u->earliest - now : fallback_s;

	return s < 1 ? 1 : s > 86400 ? 86400 : (int)s;
}

static void
seats_auth_seat(uint64_t chan, const struct ipc_msg *m)
{
	struct store_seat_use	 u;
	struct store_claim	 c;
	struct store_key	 k;
	struct ipc_msg		 res;
	unsigned char		 sha[32];
	char			 kid[TOKEN_KID_LEN + 1];
	int64_t			 now = store_seat_now(sa.store);
	int			 r;

	memset(&res, 0, sizeof(res));
	res.type = IPC_SEAT_RES;
	res.rid = m->rid;
	res.granted = res.total = -1;
	token_key_hash(m->key, strlen(m->key), sha);
	token_kid_from_hash(sha, kid);
	if (m->op == IPC_SEAT_RELEASE)
		res.status = store_seat_release(sa.store, kid, m->instance) ==
		    0 ? 204 : 503;
	else if ((r = store_key_get(sa.store, sha, &k)) != 0) {
		res.status = r == STORE_ENOTFOUND ? 403 : 503;
		strcpy(res.reason, "unknown");
	} else if (k.seats <= 0)
		res.status = 200;	/* no limit: nothing to hold */
	else {
		memset(&c, 0, sizeof(c));
		c.kid = kid;
		c.instance = m->instance;
		c.want = 1;
		c.cap = k.seats;
		c.expires = now + sa.cf->seats.ttl_s;
		c.now = now;
		if (store_seat_claim(sa.store, &c, &u) != 0)
			res.status = 503;
		else {
			res.status = u.got > 0 ? 200 : 409;
			res.total = k.seats;
			res.used = u.used;
			res.expires = u.got > 0 ? c.expires : 0;
			res.retry_after = seats_retry_after(&u, now,
			    sa.cf->seats.ttl_s);
		}
	}
	res.retry_after = res.retry_after > 0 ? res.retry_after : 1;
	chans_send(chan, &res);
}

struct seats_find {
	const char		*kid;
	struct store_key	*k;
	int			 found;
};

static int
seats_find1(const struct store_key *k, void *arg)
{
	struct seats_find *f = arg;

	if (strcmp(k->kid, f->kid) != 0)
		return 0;
	*f->k = *k;
	f->found = 1;
	return 1;
}

/* A grant names the key by key_id: the registry is keyed by its hash. */
static const char *
seats_auth_key(const char *kid, struct store_key *k, int64_t now)
{
	struct seats_find f = { kid, k, 0 };

	if (store_key_foreach(sa.store, seats_find1, &f) < 0)
		return NULL;
	if (!f.found)
		return "unknown";
	if (k->revoked)
		return "revoked";
	return k->expires != 0 && k->expires <= now ? "expired" : "";
}

static void
seats_auth_grant(uint64_t chan, const struct ipc_msg *m)
{
	struct store_seat_use	 u;
	struct store_claim	 c;
	struct store_key	 k;
	struct ipc_msg		 res;
	const char		*why;
	int64_t			 now = store_seat_now(sa.store);

	memset(&res, 0, sizeof(res));
	res.type = IPC_GRANT_RES;
	res.rid = m->rid;
	memcpy(res.kid, m->kid, sizeof(res.kid));
	res.total = -1;
	res.expires = now + sa.cf->authority.seat_grant_ttl_s;
	if ((why = seats_auth_key(m->kid, &k, now)) == NULL)
		res.status = 503;
	else if (*why != '\0') {
		res.status = 403;
		snprintf(res.reason, sizeof(res.reason), "%s", why);
	} else if (k.seats <= 0) {
		res.status = 200;	/* no limit: all it asks, nothing kept */
		res.granted = m->want;
	} else {
		memset(&c, 0, sizeof(c));
		c.kid = m->kid;
		c.holder = m->holder;
		c.holder_ins = m->instance;
		c.takeover = m->takeover;
		c.seq = m->seq;
		c.want = m->want;
		c.cap = k.seats;
		c.expires = res.expires;
		c.now = now;
		res.status = store_seat_claim(sa.store, &c, &u) == 0 ? 200 : 503;
		res.granted = u.got;
		res.total = k.seats;
		log_debug("grant of %s to %s%s%s: %lld of %lld asked", m->kid,
		    m->holder, m->instance[0] != '\0' ? " instance " : "",
		    m->instance, (long long)u.got, (long long)m->want);
	}
	chans_send(chan, &res);
}

int
seats_auth_request(uint64_t chan, const struct ipc_msg *m)
{
	if (m->type == IPC_SEAT_REQ)
		seats_auth_seat(chan, m);
	else if (m->type == IPC_GRANT_REQ)
		seats_auth_grant(chan, m);
	else
		return 0;
	return 1;
}

struct seats_count {
	int64_t		 now;
	uint64_t	 keys, used, granted, expired;
};

static int
seats_count_key(const struct store_key *k, void *arg)
{
	((struct seats_count *)arg)->keys += k->seats > 0;
	return 0;
}

static int
seats_count_seat(const char *kid, const char *ins, int64_t exp, void *arg)
{
	struct seats_count *n = arg;

	(void)kid, (void)ins;
	if (exp > n->now)
		n->used++;
	else
		n->expired++;
	return 0;
}

static int
seats_count_grant(const char *kid, const char *holder, const char *ins,
    int64_t seats, int64_t exp, void *arg)
{
	struct seats_count *n = arg;

	(void)kid, (void)holder, (void)ins;
	if (exp > n->now && seats > 0)
		n->granted += (uint64_t)seats;
	else
		n->expired++;
	return 0;
}

static int
seats_count_mine(const char *kid, const struct store_mygrant *g, void *arg)
{
	struct seats_count *n = arg;

	(void)kid;
	n->keys += g->total != STORE_SEATS_NOLIMIT;
	if (g->expires > n->now && g->seats > 0)
		n->granted += (uint64_t)g->seats;
	return 0;
}

/*
 * granted: at an authority what it set aside for proxies; at a proxy the
 * grants it holds from upstream (what it sub-grants is inside those).
 */
void
seats_gauge(struct store *s, int64_t now, int authority)
{
	struct seats_count	n = { .now = now };
	struct seats_count	sub = { .now = now };

	store_seat_foreach(s, NULL, seats_count_seat, &n);
	if (authority) {
		store_key_foreach(s, seats_count_key, &n);
		store_grant_foreach(s, NULL, seats_count_grant, &n);
	} else {
		store_mygrant_foreach(s, seats_count_mine, &n);
		store_grant_foreach(s, NULL, seats_count_grant, &sub);
		n.expired += sub.expired;
	}
	if (n.expired > 0)
		store_seat_prune(s, now);
	stats_up_begin();
	stats_block()->seats_keys = n.keys;
	stats_block()->seats_used = n.used;
	stats_block()->seats_granted = n.granted;
	stats_up_end();
}

void
seats_auth_tick(void)
{
	seats_gauge(sa.store, store_seat_now(sa.store), 1);
}

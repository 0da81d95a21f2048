/*
 * uplink.c - proxy mode: the only process that talks to the network.
 * Coalesces lease requests per key (single flight), fetches leases upstream
 * with failover (upstream.c), verifies them against license.trusted_keys,
 * stores them, answers the waiting workers, checks its own key every
 * sync_interval, and relays the usage spool (relay.c).
 */
#include <sys/queue.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "chans.h"
#include "conf.h"
#include "httpc.h"
#include "ipc.h"
#include "log.h"
#include "child.h"
#include "proc.h"
#include "sandbox.h"
#include "seats_srv.h"
#include "stats.h"
#include "store.h"
#include "token.h"
#include "gauge.h"
#include "upstream.h"
#include "uplink.h"

#define TICK_S		1
#define MAX_WAITERS	1024

struct uplink	*uplink;

struct waiter {
	uint64_t	chan;
	uint32_t	rid;
};

struct flight {
	LIST_ENTRY(flight)	 entry;
	unsigned char		 sha[32];
	char			 key[TOKEN_KEY_LEN + 1];
	char			 kid[TOKEN_KID_LEN + 1];
	struct waiter		*w;
	int			 nw;
	int			 self;		/* the proxy's own key check */
};

/* ---- leases ---- */

static void
flight_finish(struct flight *f, int status, const char *reason)
{
	struct ipc_msg	m;
	int		i;

	memset(&m, 0, sizeof(m));
	m.type = IPC_LEASE_RES;
	m.status = status;
	snprintf(m.reason, sizeof(m.reason), "%s", reason ? reason : "");
	m.retry_after = (uplink->cf->license.timeout_ms + 999) / 1000;
	for (i = 0; i < f->nw; i++) {
		m.rid = f->w[i].rid;
		chans_send(f->w[i].chan, &m);
	}
	LIST_REMOVE(f, entry);
	explicit_bzero(f->key, sizeof(f->key));
	free(f->w);
	free(f);
}

/*
 * Store a verified lease. The leases_cached gauge follows at once when the
 * key had no valid lease before (the gauge's passes recount it anyway;
 * a scan per miss would not scale).
 */
static int
uplink_put_lease(const unsigned char sha[32], const char *tok,
    const struct lease *l)
{
	struct store_clock	clk;
	struct store_lease_time	old, t;
	char			buf[TOKEN_MAX + 1];
	int			had;

	store_clock_read(uplink->store, &clk);
	had = store_lease_get(uplink->store, sha, buf, sizeof(buf), &old) > 0 &&
	    store_lease_state(&old, &clk) != STORE_LEASE_EXPIRED;
	/* Receipt is "now": its age is measured from here (SPEC 2, Time). */
	store_lease_anchor(&clk, l->iat, l->rat, l->exp, 0, &t);
	if (store_lease_cache(uplink->store, sha, tok, strlen(tok), &t) != 0)
		return -1;
	if (!had)
		gauge_lease_changed(&uplink->gauge, sha, 1);
	return 0;
}

int
uplink_lease_verify(const char *body, size_t len, const char *kid,
    char *tok, struct lease *l)
{
	json_t		*j = json_loadb(body, len, 0, NULL);
	const char	*t = json_string_value(json_object_get(j, "lease"));
	int		 rv = -1;

	if (t == NULL || strlen(t) > TOKEN_MAX ||
	    token_verify(t, strlen(t), uplink->trusted, uplink->ntrusted, l) == -1)
		log_warnx("upstream lease for %s does not verify against "
		    "license.trusted_keys: refused", kid);
	else if (strcmp(l->kid, kid) != 0)
		log_warnx("upstream lease for %s names key %s: refused",
		    kid, l->kid);
	else if (l->exp <= l->iat || l->exp - l->iat > STORE_LEASE_MAX_S)
		/* Not our wall clock: it may be the one that is wrong. */
		log_warnx("upstream lease for %s lasts %lld s: refused",
		    kid, (long long)(l->exp - l->iat));
	else {
		memcpy(tok, t, strlen(t) + 1);
		rv = 0;
	}
	json_decref(j);
	return rv;
}

/* A 200 from upstream: keep the lease only if a trusted key signed it. */
static int
flight_store(struct flight *f, const struct httpc_res *r)
{
	struct lease	 l;
	char		 tok[TOKEN_MAX + 1], why[16];
	int64_t		 until;

	if (uplink_lease_verify(r->body, r->bodylen, f->kid, tok, &l) == -1 ||
	    uplink_put_lease(f->sha, tok, &l) == -1)
		return -1;
	/* A read first: most keys were never rejected. */
	if (store_reject_get(uplink->store, f->sha, why, sizeof(why), &until) == 0)
		store_reject_del(uplink->store, f->sha);
	return 0;
}

const char *
uplink_reject_reason(const char *body, size_t len)
{
	json_t		*j = json_loadb(body, len, 0, NULL);
	const char	*why = json_string_value(json_object_get(j, "reason"));
	const char	*rv = "unknown";

	if (why != NULL && strcmp(why, "revoked") == 0)
		rv = "revoked";
	else if (why != NULL && strcmp(why, "expired") == 0)
		rv = "expired";
	json_decref(j);
	return rv;
}

static int64_t
uplink_negative_s(void)
{
	return (uplink->cf->license.negative_ttl_ms + 999) / 1000;
}

static void
flight_rejected(struct flight *f, const struct httpc_res *r)
{
	const char		*why = uplink_reject_reason(r->body, r->bodylen);
	int64_t			 until, now;
	struct store_clock	 clk;
	struct store_lease_time	 t;
	char			 tok[TOKEN_MAX + 1];

	store_clock_read(uplink->store, &clk);
	now = clk.wall;
	until = now + uplink_negative_s();
	/* The rejection replaces a cached lease at once. */
	if (store_lease_get(uplink->store, f->sha, tok, sizeof(tok), &t) > 0 &&
	    store_lease_state(&t, &clk) != STORE_LEASE_EXPIRED)
		gauge_lease_changed(&uplink->gauge, f->sha, -1);
	store_lease_del(uplink->store, f->sha);
	store_reject_put(uplink->store, f->sha, why, until, now,
	    (uint64_t)uplink->cf->license.max_rejections);
	log_info("upstream rejected %s: %s", f->kid, why);
	flight_finish(f, 403, why);
}

static void
flight_done(int answered, const struct httpc_res *r, void *arg)
{
	struct flight *f = arg;

	if (!answered) {
		upstream_state(0, r->errstr ? r->errstr : "upstream server error");
		flight_finish(f, 503, NULL);
		return;
	}
	if (r->status == 200) {
		uplink->refusing = flight_store(f, r) != 0;
		upstream_state(1, NULL);
		flight_finish(f, uplink->refusing ? 503 : 200, NULL);
		return;
	}
	upstream_state(1, NULL);
	if (r->status == 403 || r->status == 401)
		flight_rejected(f, r);
	else {
		log_warnx("upstream answered %d for %s", r->status, f->kid);
		flight_finish(f, 503, NULL);
	}
}

static struct flight *
flight_find(const unsigned char sha[32])
{
	struct flight *f;

	LIST_FOREACH(f, &uplink->flights, entry)
		if (memcmp(f->sha, sha, 32) == 0)
			return f;
	return NULL;
}

static int
flight_wait(struct flight *f, uint64_t chan, uint32_t rid)
{
	struct waiter *w;

	if (f->nw >= MAX_WAITERS ||
	    (w = reallocarray(f->w, f->nw + 1, sizeof(*w))) == NULL)
		return -1;
	f->w = w;
	f->w[f->nw].chan = chan;
	f->w[f->nw].rid = rid;
	f->nw++;
	return 0;
}

static struct flight *
flight_start(const char *key, int self)
{
	struct flight *f;

	if ((f = calloc(1, sizeof(*f))) == NULL)
		return NULL;
	memcpy(f->key, key, TOKEN_KEY_LEN);
	token_key_hash(f->key, TOKEN_KEY_LEN, f->sha);
	token_kid_from_hash(f->sha, f->kid);
	f->self = self;
	LIST_INSERT_HEAD(&uplink->flights, f, entry);
	/*
	 * Only the token of the answer is read (it carries the rest, signed):
	 * ask for it alone, 215 bytes less per fetch. A server that does not
	 * know Prefer ignores it and answers in full.
	 */
	if (upstream_call("GET", "/v1/license", f->key,
	    "Prefer: return=minimal", NULL, 0, flight_done, f) == -1) {
		LIST_REMOVE(f, entry);
		free(f);
		return NULL;
	}
	return f;
}

/*
 * A worker's miss (or refresh) can cross the answer of the flight that just
 * landed for the same key: it looked before the lease was stored and asks
 * after the flight is gone. Answer it from the store instead of asking
 * upstream a second time.
 */
static int
flight_landed(const unsigned char sha[32], const struct ipc_msg *m,
    struct ipc_msg *res)
{
	struct store_clock	clk;
	struct store_lease_time	t;
	struct lease		l;
	char			tok[TOKEN_MAX + 1], reason[16];
	char			kid[TOKEN_KID_LEN + 1];
	int64_t			until;
	int			n, st = STORE_LEASE_EXPIRED;

	memset(res, 0, sizeof(*res));
	res->type = IPC_LEASE_RES;
	res->rid = m->rid;
	store_clock_read(uplink->store, &clk);
	/*
	 * A row whose lease does not decode or names another key (a store
	 * edited by hand) is what the worker could not serve: fetch anew,
	 * which also puts the row right.
	 */
	token_kid_from_hash(sha, kid);
	if ((n = store_lease_get(uplink->store, sha, tok, sizeof(tok),
	    &t)) > 0 && token_decode(tok, (size_t)n, &l) == 0 &&
	    strcmp(l.kid, kid) == 0)
		st = store_lease_state(&t, &clk);
	if (st == STORE_LEASE_FRESH ||
	    (st == STORE_LEASE_DUE && !m->refresh)) {
		res->status = 200;
		return 1;
	}
	if (store_reject_get(uplink->store, sha, reason, sizeof(reason),
	    &until) == 0 && store_until_live(until, clk.wall,
	    uplink_negative_s())) {
		res->status = 403;
		snprintf(res->reason, sizeof(res->reason), "%s", reason);
		return 1;
	}
	return 0;
}

static void
uplink_request(uint64_t chan, const struct ipc_msg *m)
{
	struct ipc_msg	 res;
	struct flight	*f;
	unsigned char	 sha[32];

	if (m->type == IPC_USAGE_KICK) {
		relay_kick();
		return;
	}
	if (seats_proxy_request(chan, m))
		return;
	if (m->type != IPC_LEASE_REQ ||
	    !token_key_valid(m->key, strlen(m->key)))
		goto unavailable;
	token_key_hash(m->key, TOKEN_KEY_LEN, sha);
	/* Single flight: however many ask, one upstream request per key. */
	if ((f = flight_find(sha)) == NULL) {
		if (flight_landed(sha, m, &res)) {
			if (!m->refresh)
				chans_send(chan, &res);
			return;
		}
		if ((f = flight_start(m->key, 0)) == NULL)
			goto unavailable;
	}
	if (m->refresh || flight_wait(f, chan, m->rid) == 0)
		return;
unavailable:
	if (m->type != IPC_LEASE_REQ || m->refresh)
		return;
	memset(&res, 0, sizeof(res));
	res.type = IPC_LEASE_RES;
	res.rid = m->rid;
	res.status = 503;
	res.retry_after = 1;
	chans_send(chan, &res);
}

/* ---- timers, signals, setup ---- */

static void
uplink_selfcheck(evutil_socket_t fd, short ev, void *arg)
{
	unsigned char sha[32];

	(void)fd, (void)ev, (void)arg;
	token_key_hash(uplink->cf->license.key, TOKEN_KEY_LEN, sha);
	if (!uplink->stopping && flight_find(sha) == NULL)
		flight_start(uplink->cf->license.key, 1);
}

static int
uplink_idle(void)
{
	return !relay_busy() && LIST_EMPTY(&uplink->flights) &&
	    seats_proxy_idle();
}

/* Stopping and nothing left in flight: the end of the process. */
static void
uplink_stopped(void)
{
	log_debug("stopped: nothing in flight");
	exit(0);
}

static void
uplink_tick(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd, (void)ev, (void)arg;
	store_clock_tick(uplink->store);
	store_reader_check(uplink->store);
	/* Expired rejections go within a tick even when no new one comes. */
	store_reject_prune(uplink->store, store_now(uplink->store),
	    (uint64_t)uplink->cf->license.max_rejections);
	upstream_lease_stats();
	upstream_usage_stats();
	seats_proxy_tick();
	if (uplink->stopping && uplink_idle())
		uplink_stopped();
}

/*
 * TERM (after the workers are gone) or USR2 (a reload replaced us): take no
 * new workers, but finish the lease fetches and the usage batch under way
 * for the ones still attached; the tick exits once nothing is in flight.
 */
static void
uplink_stop(evutil_socket_t sig, short ev, void *arg)
{
	(void)sig, (void)ev, (void)arg;
	uplink->stopping = 1;
	chans_stop_listening();
	if (uplink_idle())
		uplink_stopped();
}

/* Root-only files: trusted keys, then CA and client certificate and key. */
static void
uplink_acquire(void)
{
	struct httpc_opts	o = { uplink->cf->license.ca_file,
	    uplink->cf->license.client_cert, uplink->cf->license.client_key,
	    0 };
	char			err[512];
	int			i;

	if ((uplink->base = event_base_new()) == NULL)
		fatalx("event_base_new");
	for (i = 0; i < uplink->cf->license.n_trusted_keys &&
	    i < UPLINK_MAX_TRUSTED; i++)
		if ((uplink->trusted[uplink->ntrusted++] = token_load_public(
		    uplink->cf->license.trusted_keys[i])) == NULL) {
			log_warnx("%s: not an Ed25519 public key",
			    uplink->cf->license.trusted_keys[i]);
			exit(2);
		}
	if ((uplink->hc = httpc_new(uplink->base, &o, err, sizeof(err))) ==
	    NULL) {
		log_warnx("%s", err);
		exit(2);
	}
}

static void
uplink_timer(void (*cb)(evutil_socket_t, short, void *), int ms)
{
	struct timeval	 tv = { ms / 1000, (ms % 1000) * 1000 };
	struct event	*ev;

	if ((ev = event_new(uplink->base, -1, EV_PERSIST, cb, NULL)) == NULL ||
	    event_add(ev, &tv) == -1)
		fatalx("timer");
}

void
uplink_main(struct proc_env *env)
{
	static struct uplink	u;

	/* name */
	proc_name(proc_role_comm(PROC_UPLINK));
	proc_no_dump();		/* holds the proxy's own key */
	/* acquire, as root */
	uplink = &u;
	u.cf = env->cf;
	LIST_INIT(&u.flights);
	uplink_acquire();
	/* drop, then the store as server.user */
	if (proc_drop_privs(u.cf->server.user) == -1)
		exit(2);
	u.store = child_open_store(u.cf);
	if (chans_init(u.base, env->fd_ipc, uplink_request) == -1)
		fatalx("ipc listener");
	proc_signals(u.base, u.cf->log.file, uplink_stop);
	uplink_timer(uplink_tick, TICK_S * 1000);
	uplink_timer(uplink_selfcheck, u.cf->license.sync_interval_ms);
	gauge_init(&u.gauge, 0);
	relay_init();
	seats_proxy_init(u.cf, u.store);
	/* sandbox */
	if (sandbox_uplink() == -1)
		fatal("seccomp sandbox");
	/* The seat clock is anchored before the first seat is asked for. */
	store_clock_tick(u.store);
	gauge_start(&u.gauge, u.store);
	upstream_usage_stats();
	uplink_selfcheck(-1, 0, NULL);
	proc_ready();
	/* loop: a stop ends in uplink_stopped, which exits 0 */
	event_base_dispatch(u.base);
	fatalx("event loop exited");
}

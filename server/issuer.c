/*
 * issuer.c - authority mode: the only process that holds the signing key.
 * Workers ask it for leases; it checks the key registry, signs, answers
 * with the lease, then stores it for the workers to serve until refresh_at.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/evp.h>

#include "chans.h"
#include "conf.h"
#include "gauge.h"
#include "ipc.h"
#include "log.h"
#include "child.h"
#include "issuer.h"
#include "proc.h"
#include "sandbox.h"
#include "seats_srv.h"
#include "stats.h"
#include "store.h"
#include "token.h"

#define ISSUER_TICK_S	2

/* The issuer process's context: one per process, set by issuer_main. */
struct issuer {
	const struct conf	*cf;
	struct event_base	*base;
	struct store		*store;
	EVP_PKEY		*key;
	char			 iss[TOKEN_KID_LEN + 1];
	struct gauge		 gauge;		/* leases stored (gauge.c) */
};

static struct issuer	*issuer;

/* 0 and a lease, or a rejection reason in *why. */
static int
issuer_lease(const unsigned char sha[32], struct lease *l, const char **why)
{
	struct store_key	k;
	int64_t			now = store_now(issuer->store);
	int			i, r;

	if ((r = store_key_get(issuer->store, sha, &k)) != 0) {
		*why = r == STORE_ENOTFOUND ? "unknown" : NULL;
		return -1;
	}
	if (k.revoked || (k.expires != 0 && k.expires <= now)) {
		*why = k.revoked ? "revoked" : "expired";
		return -1;
	}
	memset(l, 0, sizeof(*l));
	token_kid_from_hash(sha, l->kid);
	strcpy(l->status, "active");
	for (i = 0; i < k.n_products && i < TOKEN_MAX_PRODUCTS; i++)
		strcpy(l->products[i], k.products[i]);
	l->n_products = i;
	l->role = (enum lease_role)k.role;
	l->iat = now;
	l->rat = now + issuer->cf->authority.lease_refresh_s;
	/* Proxies refuse a lease longer than STORE_LEASE_MAX_S. */
	l->exp = now + (issuer->cf->authority.lease_ttl_s < STORE_LEASE_MAX_S ?
	    issuer->cf->authority.lease_ttl_s : STORE_LEASE_MAX_S);
	if (k.expires != 0 && k.expires < l->exp)
		l->exp = k.expires;
	if (l->rat > l->exp)
		l->rat = l->exp;
	memcpy(l->iss, issuer->iss, sizeof(issuer->iss));
	return 0;
}

/* The workers read it back under the same rule as a proxy's receipt. */
static int
issuer_store(const unsigned char sha[32], const struct lease *l,
    const char *tok)
{
	struct store_clock	clk;
	struct store_lease_time	t;

	store_clock_read(issuer->store, &clk);
	store_lease_anchor(&clk, l->iat, l->rat, l->exp, 0, &t);
	return store_lease_cache(issuer->store, sha, tok, strlen(tok), &t);
}

static void
issuer_request(uint64_t chan, const struct ipc_msg *req)
{
	struct ipc_msg	 res;
	struct lease	 l;
	unsigned char	 sha[32];
	const char	*why = NULL;

	if (seats_auth_request(chan, req) || req->type != IPC_LEASE_REQ)
		return;
	memset(&res, 0, sizeof(res));
	res.type = IPC_LEASE_RES;
	res.rid = req->rid;
	token_key_hash(req->key, strlen(req->key), sha);
	if (issuer_lease(sha, &l, &why) == -1) {
		res.status = why != NULL ? 403 : 503;
		strcpy(res.reason, why != NULL ? why : "");
		res.retry_after = 1;
	} else if (token_sign(&l, issuer->key, res.lease,
	    sizeof(res.lease)) == -1) {
		log_warnx("cannot sign a lease for %s", l.kid);
		res.status = 503;
		res.retry_after = 1;
	} else
		res.status = 200;
	if (!req->refresh)
		chans_send(chan, &res);
	if (res.status != 200)
		return;
	/*
	 * Stored after the answer, which carries the token: the flush is off
	 * the client's wait (one fdatasync, about a third of a miss). What
	 * is stored is only a cache that spares signing again until
	 * refresh_at; a lease lost to a crash or a failed commit is signed
	 * again on the next request, and the one handed out stays valid.
	 */
	if (issuer_store(sha, &l, res.lease) != 0)
		log_warnx("lease for %s issued but not stored", l.kid);
	else
		log_debug("issued lease for %s until %lld", l.kid,
		    (long long)l.exp);
}

static void
issuer_tick(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd, (void)ev, (void)arg;
	/* Not time(NULL): a glitch of the wall clock must not stick. */
	store_clock_tick(issuer->store);
	store_reader_check(issuer->store);
	gauge_tick(&issuer->gauge, issuer->store);
	seats_auth_tick();
}

/* TERM or USR2: the workers are gone or attach to a new issuer. */
static void
issuer_stop(evutil_socket_t sig, short ev, void *arg)
{
	(void)ev, (void)arg;
	chans_close_all();
	log_debug("signal %d: stopped", (int)sig);
	exit(0);
}

/* The signing key, as root; -1 (logged) if it cannot be loaded. */
static int
issuer_acquire(struct issuer *is)
{
	if ((is->base = event_base_new()) == NULL)
		fatalx("event_base_new");
	if ((is->key = token_load_private(is->cf->authority.signing_key)) ==
	    NULL || token_authority_id(is->key, is->iss) == -1) {
		log_warnx("%s: cannot load the signing key",
		    is->cf->authority.signing_key);
		return -1;
	}
	return 0;
}

void
issuer_main(struct proc_env *env)
{
	static struct issuer	 is;
	struct timeval		 tick = { ISSUER_TICK_S, 0 };
	struct event		*ev;

	/* name */
	proc_name(proc_role_comm(PROC_ISSUER));
	proc_no_dump();		/* holds the signing key */
	/* acquire, as root */
	issuer = &is;
	is.cf = env->cf;
	if (issuer_acquire(&is) == -1)
		exit(2);
	/* drop, then the store as server.user */
	if (proc_drop_privs(is.cf->server.user) == -1)
		exit(2);
	is.store = child_open_store(is.cf);
	gauge_init(&is.gauge, 1);
	seats_auth_init(is.cf, is.store);
	proc_signals(is.base, is.cf->log.file, issuer_stop);
	if (chans_init(is.base, env->fd_ipc, issuer_request) == -1)
		fatalx("ipc listener");
	if ((ev = event_new(is.base, -1, EV_PERSIST, issuer_tick, NULL)) ==
	    NULL || event_add(ev, &tick) == -1)
		fatalx("timer");
	/* sandbox */
	if (sandbox_issuer() == -1)
		fatal("seccomp sandbox");
	/* The tick's work but the lease count, which starts at the tick. */
	store_clock_tick(is.store);
	store_reader_check(is.store);
	gauge_start(&is.gauge, is.store);
	seats_auth_tick();
	proc_ready();
	/* loop: TERM and USR2 end in issuer_stop, which exits 0 */
	event_base_dispatch(is.base);
	fatalx("event loop exited");
}

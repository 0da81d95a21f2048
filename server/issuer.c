/*
 * issuer.c - authority mode: the only process that holds the signing key.
 * Workers ask it for leases; it checks the key registry, signs, stores the
 * lease for the workers to serve until refresh_at, and answers.
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
#include "proc.h"
#include "seats_srv.h"
#include "stats.h"
#include "store.h"
#include "token.h"

#define ISSUER_TICK_S	2

static struct {
	const struct conf	*cf;
	struct event_base	*base;
	struct store		*store;
	EVP_PKEY		*key;
	char			 iss[17];
} is;

/* 0 and a lease, or a rejection reason in *why. */
static int
issuer_lease(const unsigned char sha[32], struct lease *l, const char **why)
{
	struct store_key	k;
	int64_t			now = store_now(is.store);
	int			i, r;

	if ((r = store_key_get(is.store, sha, &k)) != 0) {
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
	l->rat = now + is.cf->authority.lease_refresh_s;
	/* Proxies refuse a lease longer than STORE_LEASE_MAX_S. */
	l->exp = now + (is.cf->authority.lease_ttl_s < STORE_LEASE_MAX_S ?
	    is.cf->authority.lease_ttl_s : STORE_LEASE_MAX_S);
	if (k.expires != 0 && k.expires < l->exp)
		l->exp = k.expires;
	if (l->rat > l->exp)
		l->rat = l->exp;
	memcpy(l->iss, is.iss, sizeof(is.iss));
	return 0;
}

/* The workers read it back under the same rule as a proxy's receipt. */
static int
issuer_store(const unsigned char sha[32], const struct lease *l,
    const char *tok)
{
	struct store_clock	clk;
	struct store_lease_time	t;

	store_clock_read(is.store, &clk);
	store_lease_anchor(&clk, l->iat, l->rat, l->exp, 0, &t);
	return store_lease_put(is.store, sha, tok, strlen(tok), &t);
}

static void
issuer_request(uint64_t chan, const struct ipc_msg *req)
{
	struct ipc_msg	 res;
	struct lease	 l;
	unsigned char	 sha[32];
	char		 tok[TOKEN_MAX + 1];
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
	} else if (token_sign(&l, is.key, tok, sizeof(tok)) == -1 ||
	    issuer_store(sha, &l, tok) != 0) {
		log_warnx("cannot issue a lease for %s", l.kid);
		res.status = 503;
		res.retry_after = 1;
	} else {
		res.status = 200;
		log_debug("issued lease for %s until %lld", l.kid,
		    (long long)l.exp);
	}
	if (!req->refresh)
		chans_send(chan, &res);
}

static void
issuer_tick(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd, (void)ev, (void)arg;
	/* Not time(NULL): a glitch of the wall clock must not stick. */
	store_clock_tick(is.store);
	store_reader_check(is.store);
	gauge_store(is.store, 1);
	seats_auth_tick();
}

static void
issuer_stop(evutil_socket_t sig, short ev, void *arg)
{
	(void)sig, (void)ev, (void)arg;
	chans_close_all();
	event_base_loopexit(is.base, NULL);
}

void
issuer_main(struct proc_env *env)
{
	struct timeval	 tick = { ISSUER_TICK_S, 0 };
	struct event	*ev;

	is.cf = env->cf;
	if ((is.base = event_base_new()) == NULL)
		fatalx("event_base_new");
	proc_signals(is.base, is.cf->log.file, issuer_stop);
	if ((is.key = token_load_private(is.cf->authority.signing_key)) == NULL ||
	    token_authority_id(is.key, is.iss) == -1) {
		log_warnx("%s: cannot load the signing key",
		    is.cf->authority.signing_key);
		exit(2);
	}
	is.store = proc_open_store(is.cf);
	seats_auth_init(is.cf, is.store);
	proc_no_dump();
	if (chans_init(is.base, env->fd_ipc, issuer_request) == -1)
		fatalx("ipc listener");
	ev = event_new(is.base, -1, EV_PERSIST, issuer_tick, NULL);
	event_add(ev, &tick);
	issuer_tick(-1, 0, NULL);
	proc_ready();
	event_base_dispatch(is.base);
	exit(0);
}

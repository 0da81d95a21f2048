/*
 * relay.c - forwards the usage spool upstream with the proxy's own key, in
 * batches of at most 1000, each record carrying its key_id. Records leave
 * the spool only after the upstream's 202, so a crash at any point means a
 * resend, never a loss; the upstream de-duplicates on (key_id, id), so a
 * resend is never counted twice.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/rand.h>

#include "conf.h"
#include "httpc.h"
#include "log.h"
#include "store.h"
#include "uplink.h"

#define RELAY_BATCH		1000
#define RELAY_BACKOFF_MIN_MS	500

static struct {
	struct event		*ev;
	int			 busy;		/* a batch is upstream */
	int			 failures;
	struct usage_rec	 recs[RELAY_BATCH];
	uint64_t		 seqs[RELAY_BATCH];
	int			 n;
} rl;

static void	relay_send(evutil_socket_t, short, void *);

static void
relay_schedule(int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(rl.ev, &tv);
}

/* Exponential back-off with full jitter, capped at sync_interval. */
static int
relay_backoff_ms(void)
{
	unsigned int	rnd = 0;
	int64_t		cap = up.cf->license.sync_interval_ms, d;

	d = (int64_t)RELAY_BACKOFF_MIN_MS << (rl.failures < 16 ?
	    rl.failures : 16);
	if (d > cap)
		d = cap;
	RAND_bytes((unsigned char *)&rnd, sizeof(rnd));
	return (int)(d / 2 + rnd % (d / 2 + 1));
}

static char *
relay_body(void)
{
	json_t	*recs = json_array(), *root;
	char	*body;
	int	 i;

	for (i = 0; i < rl.n; i++)
		json_array_append_new(recs, json_pack(
		    "{s:s, s:s, s:s, s:f, s:s, s:s}", "id", rl.recs[i].id,
		    "product", rl.recs[i].product, "metric", rl.recs[i].metric,
		    "quantity", rl.recs[i].quantity, "ts", rl.recs[i].ts,
		    "key_id", rl.recs[i].kid));
	root = json_pack("{s:o}", "records", recs);
	body = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	return body;
}

static void
relay_done(int answered, const struct httpc_res *r, void *arg)
{
	(void)arg;
	rl.busy = 0;	/* a stopping uplink exits on its next tick */
	uplink_state(answered, answered ? NULL : r->errstr);
	if (answered && r->status == 202) {
		if (store_spool_delete(up.store, rl.seqs, rl.n) != 0)
			log_warnx("cannot delete %d forwarded records (they"
			    " will be resent and de-duplicated)", rl.n);
		log_debug("forwarded %d usage records", rl.n);
		rl.failures = 0;
		uplink_usage_stats();
		relay_schedule(rl.n == RELAY_BATCH ? 0 :
		    up.cf->license.sync_interval_ms);
		return;
	}
	if (answered)
		log_warnx("upstream refused a usage batch with %d: %.*s; "
		    "keeping it spooled", r->status, (int)(r->bodylen > 200 ?
		    200 : r->bodylen), r->body);
	rl.failures++;
	relay_schedule(relay_backoff_ms());
}

/* The id table is walked whole: once an hour is plenty for a 7-day window. */
static void
relay_prune(void)
{
	static int64_t	last;
	int64_t		now = store_now(up.store);

	if (now - last < STORE_ID_PRUNE_EVERY_S)
		return;
	last = now;
	store_usage_prune_ids(up.store, now - STORE_ID_WINDOW_S);
}

static void
relay_send(evutil_socket_t fd, short ev, void *arg)
{
	char *body;

	(void)fd, (void)ev, (void)arg;
	if (rl.busy || up.stopping)
		return;
	relay_prune();
	rl.n = store_spool_peek(up.store, rl.recs, rl.seqs, RELAY_BATCH);
	if (rl.n <= 0) {
		if (rl.n < 0)
			log_warnx("cannot read the usage spool");
		relay_schedule(up.cf->license.sync_interval_ms);
		return;
	}
	if ((body = relay_body()) == NULL ||
	    uplink_call("POST", "/v1/usage", up.cf->license.key, body,
	    strlen(body), relay_done, NULL) == -1) {
		free(body);
		relay_schedule(relay_backoff_ms());
		return;
	}
	free(body);
	rl.busy = 1;
}

void
relay_kick(void)
{
	if (!rl.busy && rl.failures == 0)
		relay_schedule(0);
}

int
relay_busy(void)
{
	return rl.busy;
}

void
relay_init(void)
{
	if ((rl.ev = evtimer_new(up.base, relay_send, NULL)) == NULL)
		fatalx("relay timer");
	relay_schedule(1000);
}

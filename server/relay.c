/*
 * relay.c - forwards the usage spool upstream with the proxy's own key, in
 * batches of at most 1000 records and at most `budget` bytes, each record
 * carrying its key_id. The budget starts at our own server.max_body and is
 * halved on every 413 (for the life of the process), so a batch never
 * stays bigger than what the upstream takes. Records leave
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
#include "stats.h"
#include "store.h"
#include "uplink.h"
#include "upstream.h"

#define RELAY_BACKOFF_MIN_MS	500
/*
 * A record's JSON beyond its strings: 66 bytes of names, quotes and
 * braces ({"id":"","product":"","metric":"","quantity":,"ts":"",
 * "key_id":""}), at most 24 for the quantity (%.17g) rounded up to 32,
 * and the comma between records.
 */
#define RELAY_REC_FIXED		(66 + 32 + 1)
#define RELAY_ENVELOPE		(sizeof("{\"records\":[]}") - 1)

static void	relay_send(evutil_socket_t, short, void *);

static void
relay_schedule(int ms)
{
	struct relay	*rl = &uplink->relay;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(rl->ev, &tv);
}

/* Exponential back-off with full jitter, capped at sync_interval. */
static int
relay_backoff_ms(void)
{
	struct relay	*rl = &uplink->relay;
	unsigned int	rnd = 0;
	int64_t		cap = uplink->cf->license.sync_interval_ms, d;

	d = (int64_t)RELAY_BACKOFF_MIN_MS << (rl->failures < 16 ?
	    rl->failures : 16);
	if (d > cap)
		d = cap;
	RAND_bytes((unsigned char *)&rnd, sizeof(rnd));
	return (int)(d / 2 + rnd % (d / 2 + 1));
}

/* An upper bound of one record's JSON: its fields need no escapes. */
static size_t
relay_rec_size(const struct usage_rec *r)
{
	return RELAY_REC_FIXED + strlen(r->id) + strlen(r->product) +
	    strlen(r->metric) + strlen(r->ts) + strlen(r->kid);
}

/* The longest prefix of the peeked records that fits the budget (>= 1). */
static int
relay_fit(int peeked)
{
	struct relay	*rl = &uplink->relay;
	size_t	total = RELAY_ENVELOPE;
	int	n;

	for (n = 0; n < peeked; n++) {
		total += relay_rec_size(&rl->recs[n]);
		if (n > 0 && total > rl->budget)
			break;
	}
	return n;
}

static char *
relay_body(void)
{
	struct relay	*rl = &uplink->relay;
	json_t	*recs = json_array(), *root;
	char	*body;
	int	 i;

	for (i = 0; i < rl->n; i++)
		json_array_append_new(recs, json_pack(
		    "{s:s, s:s, s:s, s:f, s:s, s:s}", "id", rl->recs[i].id,
		    "product", rl->recs[i].product, "metric",
		    rl->recs[i].metric, "quantity", rl->recs[i].quantity,
		    "ts", rl->recs[i].ts, "key_id", rl->recs[i].kid));
	root = json_pack("{s:o}", "records", recs);
	body = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	return body;
}

/*
 * 413: the upstream's max_body is below this batch. Halve what was sent
 * and go again at once; one record (< 1 KiB) is the floor, so only an
 * upstream that takes no record at all is left to the back-off.
 */
static int
relay_too_large(void)
{
	struct relay	*rl = &uplink->relay;

	if (rl->n <= 1)
		return 0;
	rl->budget = rl->sent / 2;
	log_warnx("upstream refused %zu bytes of usage with 413: relaying at"
	    " most %zu bytes a batch from now on", rl->sent, rl->budget);
	relay_schedule(0);
	return 1;
}

static void
relay_done(int answered, const struct httpc_res *r, void *arg)
{
	struct relay	*rl = &uplink->relay;

	(void)arg;
	rl->busy = 0;	/* a stopping uplink exits on its next tick */
	upstream_state(answered, answered ? NULL : r->errstr);
	if (answered && r->status == 202) {
		if (store_spool_delete(uplink->store, rl->seqs, rl->n) != 0)
			log_warnx("cannot delete %d forwarded records (they"
			    " will be resent and de-duplicated)", rl->n);
		if (stats_slot_self() != NULL)
			stats_slot_self()->dedup_pruned +=
			    store_dedup_pruned(uplink->store);
		log_debug("forwarded %d usage records", rl->n);
		rl->failures = 0;
		upstream_usage_stats();
		relay_schedule(rl->more ? 0 :
		    uplink->cf->license.sync_interval_ms);
		return;
	}
	if (answered && r->status == 413 && relay_too_large())
		return;
	if (answered)
		log_warnx("upstream refused a usage batch with %d: %.*s; "
		    "keeping it spooled", r->status, (int)(r->bodylen > 200 ?
		    200 : r->bodylen), r->body);
	rl->failures++;
	relay_schedule(relay_backoff_ms());
}

static void
relay_send(evutil_socket_t fd, short ev, void *arg)
{
	struct relay	*rl = &uplink->relay;
	char	*body;
	int	 n;

	(void)fd, (void)ev, (void)arg;
	if (rl->busy || uplink->stopping)
		return;
	if ((n = store_spool_peek(uplink->store, rl->recs, rl->seqs,
	    RELAY_BATCH)) <= 0) {
		if (n < 0)
			log_warnx("cannot read the usage spool");
		relay_schedule(uplink->cf->license.sync_interval_ms);
		return;
	}
	rl->n = relay_fit(n);
	rl->more = rl->n < n || n == RELAY_BATCH;
	if ((body = relay_body()) == NULL ||
	    upstream_call("POST", "/v1/usage", uplink->cf->license.key, body,
	    (rl->sent = strlen(body)), relay_done, NULL) == -1) {
		free(body);
		relay_schedule(relay_backoff_ms());
		return;
	}
	free(body);
	rl->busy = 1;
}

void
relay_kick(void)
{
	struct relay	*rl = &uplink->relay;

	if (!rl->busy && rl->failures == 0)
		relay_schedule(0);
}

int
relay_busy(void)
{
	struct relay	*rl = &uplink->relay;

	return rl->busy;
}

void
relay_init(void)
{
	struct relay	*rl = &uplink->relay;

	if ((rl->ev = evtimer_new(uplink->base, relay_send, NULL)) == NULL)
		fatalx("relay timer");
	rl->budget = uplink->cf->server.max_body;
	relay_schedule(1000);
}

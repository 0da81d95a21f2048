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
#include <openssl/rand.h>

#include "conf.h"
#include "httpc.h"
#include "log.h"
#include "stats.h"
#include "store.h"
#include "uplink.h"
#include "upstream.h"

#define RELAY_BACKOFF_MIN_MS	500
#define RELAY_ENVELOPE		(sizeof("{\"records\":[]}") - 1)
/*
 * One record's JSON at its longest: 66 bytes of names, quotes and braces
 * ({"id":"","product":"","metric":"","quantity":,"ts":"","key_id":""}),
 * 24 for the quantity (%.17g), every string byte escaped to 6.
 */
#define RELAY_REC_MAX		(66 + 24 + 6 * sizeof(struct usage_rec))
#define RELAY_LIT(p, s)		mempcpy((p), (s), sizeof(s) - 1)

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

/*
 * A JSON string. Every field was validated where it was accepted (no
 * quote, backslash or control byte); escaping anyway keeps a batch
 * well-formed whatever the store holds.
 */
static char *
relay_str(char *p, const char *s)
{
	static const char	hex[] = "0123456789abcdef";
	unsigned char		c;

	*p++ = '"';
	for (; (c = (unsigned char)*s) != '\0'; s++) {
		if (c == '"' || c == '\\') {
			*p++ = '\\';
			*p++ = (char)c;
		} else if (c < 0x20) {
			p = RELAY_LIT(p, "\\u00");
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		} else
			*p++ = (char)c;
	}
	*p++ = '"';
	return p;
}

/*
 * One record, rendered by hand: json_pack and json_dumps (eight objects
 * built and freed per record) were most of the uplink's CPU while it
 * relayed 25,000 records a second (docs/PERFORMANCE.md, "Durable usage").
 * %.17g gives back the same double at the upstream.
 */
static char *
relay_rec(char *p, const struct usage_rec *r)
{
	p = RELAY_LIT(p, "{\"id\":");
	p = relay_str(p, r->id);
	p = RELAY_LIT(p, ",\"product\":");
	p = relay_str(p, r->product);
	p = RELAY_LIT(p, ",\"metric\":");
	p = relay_str(p, r->metric);
	p += sprintf(p, ",\"quantity\":%.17g", r->quantity);
	p = RELAY_LIT(p, ",\"ts\":");
	p = relay_str(p, r->ts);
	p = RELAY_LIT(p, ",\"key_id\":");
	p = relay_str(p, r->kid);
	*p++ = '}';
	return p;
}

/*
 * The batch: the longest prefix of recs[0..n) whose JSON fits budget bytes
 * (at least one record), cut at its exact rendered size. NUL-terminated;
 * its length in *len, the records it took in *taken.
 */
char *
relay_render(const struct usage_rec *recs, int n, size_t budget,
    int *taken, size_t *len)
{
	size_t	 cap = RELAY_ENVELOPE + (size_t)n * (RELAY_REC_MAX + 1) + 1;
	char	*body, *p, *end;
	int	 i;

	/* A record past the budget is rendered before it is dropped. */
	if (budget < cap && budget + RELAY_ENVELOPE + RELAY_REC_MAX + 2 < cap)
		cap = budget + RELAY_ENVELOPE + RELAY_REC_MAX + 2;
	if ((body = malloc(cap)) == NULL)
		return NULL;
	p = RELAY_LIT(body, "{\"records\":[");
	for (i = 0; i < n; i++) {
		end = relay_rec(p + (i > 0), &recs[i]);
		if (i > 0 && (size_t)(end - body) + 2 > budget)
			break;
		if (i > 0)
			*p = ',';
		p = end;
	}
	p = RELAY_LIT(p, "]}");
	*p = '\0';
	*taken = i;
	*len = (size_t)(p - body);
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
	if ((body = relay_render(rl->recs, n, rl->budget, &rl->n,
	    &rl->sent)) == NULL ||
	    upstream_call("POST", "/v1/usage", uplink->cf->license.key, NULL,
	    body, rl->sent, relay_done, NULL) == -1) {
		free(body);
		relay_schedule(relay_backoff_ms());
		return;
	}
	free(body);
	rl->more = rl->n < n || n == RELAY_BATCH;
	rl->busy = 1;
	/* The status counts a batch in flight as pending from now, not only
	 * from the next tick (a batch can be sent and answered within it). */
	upstream_usage_stats();
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

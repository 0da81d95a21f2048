/*
 * upstream.c - the uplink's calls to the upstream and what they make of
 * its state: one call with failover down license.server_url, the
 * Connected/TrustBased/Disconnected state with the log lines an operator
 * reads, and the upstream figures on /v1/status. The lease fetches
 * (uplink.c), the usage relay (relay.c) and the seat grants
 * (seats_proxy.c) all call through here, and this file calls none of
 * them back (their results come through the done callbacks).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf.h"
#include "httpc.h"
#include "log.h"
#include "stats.h"
#include "store.h"
#include "gauge.h"
#include "upstream.h"
#include "uplink.h"

/* ---- failover calls ---- */

struct call {
	char		*method, *path, *key, *body;
	const char	*header;
	size_t		 len;
	int		 url;
	upstream_done	 done;
	void		*arg;
	int		 sent;	/* some attempt's request went out */
};

static void	call_attempt(struct call *);

static void
call_free(struct call *c)
{
	free(c->method);
	free(c->path);
	if (c->key != NULL)
		explicit_bzero(c->key, strlen(c->key));
	free(c->key);
	free(c->body);
	free(c);
}

static void
call_result(const struct httpc_res *r, void *arg)
{
	struct call	*c = arg;
	struct httpc_res res = *r;
	int		 answered = r->err == 0 && r->status < 500;

	stats_up_begin();
	stats_block()->up_bytes_in += r->bytes_in;
	stats_block()->up_bytes_out += r->bytes_out;
	stats_block()->up_requests[!answered ? UP_ERROR : r->status < 300 ? UP_OK :
	    UP_REJECTED]++;
	stats_up_end();
	if (!answered) {
		/* the outage itself is told once, by upstream_state */
		log_debug("upstream %s: %s", uplink->cf->license.server_url[c->url],
		    r->err ? r->errstr : "server error");
		c->sent |= r->sent;
		if (++c->url < uplink->cf->license.n_server_url) {
			call_attempt(c);
			return;
		}
	}
	res.sent |= c->sent;	/* over every attempt of the call */
	c->done(answered, &res, c->arg);
	call_free(c);
}

static void
call_attempt(struct call *c)
{
	struct httpc_req req;

	memset(&req, 0, sizeof(req));
	req.method = c->method;
	req.url = uplink->cf->license.server_url[c->url];
	req.path = c->path;
	req.key = c->key;
	req.ctype = c->body != NULL ? "application/json" : NULL;
	req.header = c->header;
	req.body = c->body;
	req.bodylen = c->len;
	req.timeout_ms = uplink->cf->license.timeout_ms;
	if (httpc_request(uplink->hc, &req, call_result, c) == -1) {
		struct httpc_res r = { .err = HTTPC_ECONNECT,
		    .errstr = "cannot start the request" };
		call_result(&r, c);
	}
}

int
upstream_call(const char *method, const char *path, const char *key,
    const char *header, const char *body, size_t len, upstream_done done,
    void *arg)
{
	struct call *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return -1;
	c->method = strdup(method);
	c->path = strdup(path);
	c->key = strdup(key);
	c->body = body != NULL ? malloc(len + 1) : NULL;
	if (c->method == NULL || c->path == NULL || c->key == NULL ||
	    (body != NULL && c->body == NULL)) {
		call_free(c);
		return -1;
	}
	if (body != NULL)
		memcpy(c->body, body, len);
	c->len = len;
	c->header = header;
	c->done = done;
	c->arg = arg;
	call_attempt(c);
	return 0;
}

/* ---- state ---- */

/* Cheap (two counters in meta and the spool's entry count). */
void
upstream_usage_stats(void)
{
	uint64_t pending = 0, fwd = 0;

	store_spool_stats(uplink->store, &pending, &fwd);
	stats_up_begin();
	stats_block()->usage_pending = pending;
	stats_block()->usage_forwarded = fwd;
	stats_up_end();
}

static void	upstream_survival(int64_t);

/* From the tick: one bounded slice of the lease count (gauge.c). */
void
upstream_lease_stats(void)
{
	gauge_tick(&uplink->gauge, uplink->store);
	upstream_survival(uplink->gauge.last.first_left_s);
}

/*
 * When the upstream fails: is anything valid cached (TrustBased) or not
 * (Disconnected)? The first records answer it in a live cache; the
 * gauge's figure when they do not say, so this stays bounded too.
 */
#define UPLINK_ANY_MAX	1024

static uint64_t
upstream_valid_leases(void)
{
	struct store_clock	clk;
	uint64_t		n = gauge_valid(&uplink->gauge);
	int			any;

	store_clock_read(uplink->store, &clk);
	any = store_lease_any_valid(uplink->store, &clk, UPLINK_ANY_MAX);
	if (any == 0)
		return 0;
	return any == 1 && n == 0 ? 1 : n;
}

/*
 * The state an operator reads in the log: each change is told once (a
 * failed attempt is not news while the upstream is already lost, and
 * failing over to the next URL is not a change at all).
 */
static void
upstream_tell(int from, int to, const char *error, uint64_t valid)
{
	int64_t now = time(NULL);

	if (to == ST_CONNECTED) {
		if (uplink->outage.lost_at != 0)
			log_info("upstream reachable again after %lld s",
			    (long long)(now - uplink->outage.lost_at));
		else if (from == ST_INITIALIZING)
			log_info("upstream reachable");
		memset(&uplink->outage, 0, sizeof(uplink->outage));
		return;
	}
	if (from == ST_CONNECTED || from == ST_INITIALIZING) {
		uplink->outage.lost_at = now;
		if (to == ST_TRUSTBASED)
			log_warnx("upstream lost (%s): serving %llu cached "
			    "leases until they expire", error,
			    (unsigned long long)valid);
		else
			log_warnx("upstream lost (%s) and no valid lease is "
			    "cached: licensed services are refused", error);
	} else if (from == ST_TRUSTBASED && to == ST_DISCONNECTED)
		log_warnx("upstream still unreachable and the last cached "
		    "lease has expired: licensed services are refused");
}

/* From the tick: how long the site can run on its cache, told twice. */
static void
upstream_survival(int64_t survival_s)
{
	if (uplink->outage.lost_at == 0 || survival_s < 0)
		return;
	if (survival_s < 86400 && !uplink->outage.told_24h) {
		uplink->outage.told_24h = 1;
		log_warnx("upstream unreachable: cached leases run out in %lld s "
		    "(less than 24 h)", (long long)survival_s);
	}
	if (survival_s < 3600 && !uplink->outage.told_1h) {
		uplink->outage.told_1h = 1;
		log_warnx("upstream unreachable: cached leases run out in %lld s "
		    "(less than 1 h)", (long long)survival_s);
	}
}

void
upstream_state(int answered, const char *error)
{
	uint64_t	valid;
	int		from = stats_block()->state, to;

	/*
	 * An upstream whose leases we refuse is as good as none: Connected
	 * says that leases are being cached, not just that something answered.
	 */
	if (answered && uplink->refusing) {
		answered = 0;
		error = "upstream leases refused (see the log)";
	}
	/* TrustBased or Disconnected turns on what is cached right now. */
	valid = answered ? 0 : upstream_valid_leases();

	if (error == NULL)
		error = "upstream unreachable";
	to = answered ? ST_CONNECTED : valid > 0 ? ST_TRUSTBASED :
	    ST_DISCONNECTED;
	stats_up_begin();
	stats_block()->state = to;
	if (answered)
		stats_block()->last_success = time(NULL);
	else {
		stats_block()->last_error_at = time(NULL);
		snprintf(stats_block()->last_error, sizeof(stats_block()->last_error), "%s",
		    error);
	}
	stats_up_end();
	if (from != to)
		upstream_tell(from, to, error, valid);
}

/*
 * metrics.c - GET /metrics: the shared stats block in Prometheus' text
 * format. Every metric has its HELP and TYPE and is present in both modes
 * (zero where it does not apply), so dashboards and alerts never meet a
 * missing series.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "conf.h"
#include "stats.h"
#include "worker.h"

#define METRICS_MAX	32768

struct mbuf {
	char	*p;
	size_t	 o;
};

static void __attribute__((format(printf, 2, 3)))
mb_printf(struct mbuf *b, const char *fmt, ...)
{
	va_list	ap;
	int	n;

	if (b->o >= METRICS_MAX)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->o, METRICS_MAX - b->o, fmt, ap);
	va_end(ap);
	b->o = n < 0 ? METRICS_MAX : b->o + (size_t)n;
}

static void
mb_head(struct mbuf *b, const char *name, const char *type, const char *help)
{
	mb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One metric without labels. */
static void
mb_one(struct mbuf *b, const char *name, const char *type, const char *help,
    uint64_t v)
{
	mb_head(b, name, type, help);
	mb_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

static void
metrics_requests(struct mbuf *b, const struct stats_shared *s)
{
	uint64_t	sum;
	int		ep, code, i, any = 0;

	mb_head(b, "licproxy_requests_total", "counter",
	    "HTTP requests answered, by path and status code.");
	for (ep = 0; ep < EP_MAX; ep++)
		for (code = 0; code < STATS_NCODES; code++) {
			for (sum = 0, i = 0; i < STATS_MAX_SLOTS; i++)
				sum += s->slots[i].req[ep][code];
			if (sum == 0)
				continue;
			any = 1;
			mb_printf(b, "licproxy_requests_total{endpoint=\"%s\","
			    "code=\"%d\"} %llu\n", stats_ep_name(ep),
			    stats_code(code), (unsigned long long)sum);
		}
	if (!any)	/* the name is present before any traffic */
		mb_printf(b, "licproxy_requests_total{endpoint=\"/v1/license\","
		    "code=\"200\"} 0\n");
}

static void
metrics_workers(struct mbuf *b, const struct stats_shared *s)
{
	uint64_t	hits = 0, misses = 0, limited = 0, pruned = 0, dropped = 0;
	int		i;

	for (i = 0; i < STATS_MAX_SLOTS; i++) {
		hits += s->slots[i].cache_hits;
		misses += s->slots[i].cache_misses;
		limited += s->slots[i].misses_limited;
		pruned += s->slots[i].dedup_pruned;
		dropped += s->slots[i].access_dropped;
	}
	mb_one(b, "licproxy_lease_cache_hits_total", "counter",
	    "License checks answered from the store.", hits);
	mb_one(b, "licproxy_lease_cache_misses_total", "counter",
	    "License checks that had to wait for the upstream.", misses);
	mb_one(b, "licproxy_misses_limited_total", "counter",
	    "Lease misses refused with 429 (license.miss_rate/miss_burst per "
	    "client address).", limited);
	mb_one(b, "licproxy_usage_dedup_pruned_total", "counter",
	    "De-duplication entries dropped inside usage.dedup_window to make "
	    "room in the store.", pruned);
	mb_one(b, "licproxy_access_log_dropped_total", "counter",
	    "Access log lines dropped because the log (a full disk, a stalled "
	    "journal) did not take them.", dropped);
	mb_head(b, "licproxy_instances_active", "gauge",
	    "Distinct X-Instance-Id values seen in the last 10 minutes.");
	mb_printf(b, "licproxy_instances_active %d\n",
	    stats_instances_active(s, time(NULL)));
	mb_head(b, "licproxy_instances_untracked_total", "counter",
	    "X-Instance-Id sightings not counted: the instance table was full.");
	mb_printf(b, "licproxy_instances_untracked_total %llu\n",
	    (unsigned long long)s->instances_untracked);
}

static void
metrics_closed(struct mbuf *b, const struct stats_shared *s)
{
	static const char *const why[CLOSE_MAX] = { "header_timeout",
	    "body_timeout", "idle_evicted", "status_evicted" };
	uint64_t	sum;
	int		r, i;

	mb_head(b, "licproxy_connections_closed_total", "counter",
	    "Client connections a worker closed: too slow, or to make room.");
	for (r = 0; r < CLOSE_MAX; r++) {
		for (sum = 0, i = 0; i < STATS_MAX_SLOTS; i++)
			sum += s->slots[i].closed[r];
		mb_printf(b, "licproxy_connections_closed_total{reason=\"%s\"} "
		    "%llu\n", why[r], (unsigned long long)sum);
	}
}

static void
metrics_upstream(struct mbuf *b, const struct stats_shared *s)
{
	static const char *const results[UP_MAX] = { "ok", "rejected", "error" };
	int i;

	mb_one(b, "licproxy_upstream_up", "gauge", "1 when the last upstream "
	    "attempt answered (always 1 at an authority), else 0.",
	    s->state == ST_CONNECTED || s->state == ST_AUTHORITY);
	mb_head(b, "licproxy_upstream_requests_total", "counter",
	    "Requests to the upstream, by outcome.");
	for (i = 0; i < UP_MAX; i++)
		mb_printf(b, "licproxy_upstream_requests_total{result=\"%s\"} "
		    "%llu\n", results[i], (unsigned long long)s->up_requests[i]);
	mb_head(b, "licproxy_upstream_bytes_total", "counter",
	    "Bytes exchanged with the upstream.");
	mb_printf(b, "licproxy_upstream_bytes_total{direction=\"in\"} %llu\n"
	    "licproxy_upstream_bytes_total{direction=\"out\"} %llu\n",
	    (unsigned long long)s->up_bytes_in,
	    (unsigned long long)s->up_bytes_out);
	mb_head(b, "licproxy_survival_seconds", "gauge", "Seconds until the "
	    "first cached active lease expires if the upstream stays away "
	    "(0 when nothing is cached, +Inf at an authority).");
	if (s->mode == CONF_AUTHORITY)
		mb_printf(b, "licproxy_survival_seconds +Inf\n");
	else
		mb_printf(b, "licproxy_survival_seconds %lld\n", (long long)
		    (s->survival_s == STATS_SURVIVAL_NONE ? 0 : s->survival_s));
}

static void
metrics_store(struct mbuf *b, const struct stats_shared *s)
{
	mb_one(b, "licproxy_leases_cached", "gauge",
	    "Unexpired leases in the store.", s->leases_cached);
	mb_one(b, "licproxy_usage_pending", "gauge",
	    "Usage records spooled and not yet relayed upstream.",
	    s->usage_pending);
	mb_one(b, "licproxy_usage_forwarded_total", "counter",
	    "Usage records relayed upstream and acknowledged there.",
	    s->usage_forwarded);
	mb_one(b, "licproxy_store_used_bytes", "gauge",
	    "Bytes of the store's map in use.", s->store_used);
	mb_one(b, "licproxy_store_max_bytes", "gauge",
	    "The store's map size (store.max_size).", s->store_max);
	mb_one(b, "licproxy_seats_used", "gauge",
	    "Seats held by instances served here.", s->seats_used);
	mb_one(b, "licproxy_seats_granted", "gauge",
	    "Seats held in grants (from upstream at a proxy, set aside for "
	    "proxies at an authority).", s->seats_granted);
}

static void
metrics_processes(struct mbuf *b, const struct stats_shared *s)
{
	int i;

	mb_head(b, "licproxy_process_restarts_total", "counter",
	    "Children the master started again after they died, by role.");
	for (i = 0; i < PROC_NROLES; i++)
		mb_printf(b, "licproxy_process_restarts_total{role=\"%s\"} %llu\n",
		    proc_role_name(i), (unsigned long long)s->restarts[i]);
}

void
metrics_render(const struct stats_shared *s, struct reply *rp)
{
	struct mbuf b;

	if ((b.p = malloc(METRICS_MAX)) == NULL) {
		reply_error(rp, 500, "internal", "out of memory", NULL);
		return;
	}
	b.o = 0;
	metrics_requests(&b, s);
	metrics_workers(&b, s);
	metrics_closed(&b, s);
	metrics_upstream(&b, s);
	metrics_store(&b, s);
	metrics_processes(&b, s);
	if (b.o >= METRICS_MAX)
		b.o = METRICS_MAX - 1;
	reply_owned(rp, 200, "text/plain; version=0.0.4", b.p, b.o);
}

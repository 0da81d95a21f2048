/*
 * status.c - the plain-HTTP status listener: /v1/status, /metrics,
 * /healthz, /readyz. Every figure is instance-wide: summed over the
 * per-process slots of the shared stats block.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "conf.h"
#include "stats.h"
#include "worker.h"

#define METRICS_MAX	32768

static int
status_ready(const struct stats_shared *s)
{
	return s->state == ST_CONNECTED || s->state == ST_TRUSTBASED ||
	    s->state == ST_AUTHORITY;
}

static json_t *
status_time(int64_t t)
{
	char buf[32];

	if (t == 0)
		return json_null();
	http_time(t, buf, sizeof(buf));
	return json_string(buf);
}

static json_t *
status_upstream(const struct stats_shared *s)
{
	const struct conf	*cf = worker->cf;
	json_t			*urls = json_array();
	int			 i;

	if (cf->mode == CONF_PROXY)
		for (i = 0; i < cf->license.n_server_url; i++)
			json_array_append_new(urls,
			    json_string(cf->license.server_url[i]));
	return json_pack("{s:o, s:o, s:o}", "urls", urls,
	    "last_success", status_time(s->last_success),
	    "last_error", s->last_error[0] ? json_string(s->last_error) :
	    json_null());
}

static void
status_json(struct conn *c, const struct stats_shared *s)
{
	json_t	*j;
	char	*body;

	j = json_pack("{s:s, s:s, s:s, s:I, s:o, s:{s:I}, s:{s:I, s:I},"
	    " s:{s:i, s:i, s:b}, s:{s:i, s:i, s:b}}",
	    "state", stats_state_name(s->state),
	    "mode", worker->cf->mode == CONF_AUTHORITY ? "authority" : "proxy",
	    "version", LICPROXY_VERSION,
	    "uptime_s", (json_int_t)(time(NULL) - s->started),
	    "upstream", status_upstream(s),
	    "leases", "cached", (json_int_t)s->leases_cached,
	    "usage", "pending", (json_int_t)s->usage_pending,
	    "forwarded", (json_int_t)s->usage_forwarded,
	    "processes", "workers", s->workers_conf,
	    "workers_alive", s->workers_alive,
	    "uplink_alive", s->uplink_alive,
	    "instances", "active", stats_instances_active(s, time(NULL)),
	    "tracked_max", STATS_INSTANCES,
	    "overflow", stats_instances_overflow(s, time(NULL)));
	body = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (body == NULL) {
		conn_error(c, 500, "internal", "out of memory", NULL, NULL);
		return;
	}
	conn_reply(c, status_ready(s) ? 200 : 503, NULL, body, strlen(body));
	free(body);
}

static size_t
metrics_requests(const struct stats_shared *s, char *out, size_t sz)
{
	uint64_t	sum;
	size_t		o = 0;
	int		ep, code, i, any = 0;

	o += snprintf(out + o, sz - o, "# HELP licproxy_requests_total HTTP "
	    "requests answered.\n# TYPE licproxy_requests_total counter\n");
	for (ep = 0; ep < EP_MAX; ep++)
		for (code = 0; code < STATS_NCODES; code++) {
			for (sum = 0, i = 0; i < STATS_MAX_SLOTS; i++)
				sum += s->slots[i].req[ep][code];
			if (sum == 0 || o >= sz)
				continue;
			any = 1;
			o += snprintf(out + o, sz - o, "licproxy_requests_total"
			    "{endpoint=\"%s\",code=\"%d\"} %llu\n",
			    stats_ep_name(ep), stats_code(code),
			    (unsigned long long)sum);
		}
	if (o < sz && !any)	/* the name is present before any traffic */
		o += snprintf(out + o, sz - o, "licproxy_requests_total"
		    "{endpoint=\"/v1/license\",code=\"200\"} 0\n");
	return o < sz ? o : sz;
}

static void
status_metrics(struct conn *c, const struct stats_shared *s)
{
	static const char *const roles[] = { "worker", "uplink", "issuer" };
	static const char *const results[] = { "ok", "rejected", "error" };
	char		*out;
	uint64_t	 hits = 0, misses = 0;
	size_t		 o;
	int		 i;

	if ((out = malloc(METRICS_MAX)) == NULL) {
		conn_error(c, 500, "internal", "out of memory", NULL, NULL);
		return;
	}
	for (i = 0; i < STATS_MAX_SLOTS; i++) {
		hits += s->slots[i].cache_hits;
		misses += s->slots[i].cache_misses;
	}
	o = metrics_requests(s, out, METRICS_MAX);
#define M(...) do { if (o < METRICS_MAX) o += snprintf(out + o, \
	METRICS_MAX - o, __VA_ARGS__); } while (0)
	M("# TYPE licproxy_lease_cache_hits_total counter\n"
	    "licproxy_lease_cache_hits_total %llu\n", (unsigned long long)hits);
	M("# TYPE licproxy_lease_cache_misses_total counter\n"
	    "licproxy_lease_cache_misses_total %llu\n",
	    (unsigned long long)misses);
	M("# TYPE licproxy_upstream_requests_total counter\n");
	for (i = 0; i < UP_MAX; i++)
		M("licproxy_upstream_requests_total{result=\"%s\"} %llu\n",
		    results[i], (unsigned long long)s->up_requests[i]);
	M("# TYPE licproxy_upstream_bytes_total counter\n"
	    "licproxy_upstream_bytes_total{direction=\"in\"} %llu\n"
	    "licproxy_upstream_bytes_total{direction=\"out\"} %llu\n",
	    (unsigned long long)s->up_bytes_in,
	    (unsigned long long)s->up_bytes_out);
	M("# TYPE licproxy_leases_cached gauge\nlicproxy_leases_cached %llu\n",
	    (unsigned long long)s->leases_cached);
	M("# TYPE licproxy_usage_pending gauge\nlicproxy_usage_pending %llu\n",
	    (unsigned long long)s->usage_pending);
	M("# TYPE licproxy_usage_forwarded_total counter\n"
	    "licproxy_usage_forwarded_total %llu\n",
	    (unsigned long long)s->usage_forwarded);
	M("# HELP licproxy_instances_active Distinct X-Instance-Id values seen"
	    " in the last %d s.\n# TYPE licproxy_instances_active gauge\n"
	    "licproxy_instances_active %d\n", STATS_INSTANCE_ACTIVE_S,
	    stats_instances_active(s, time(NULL)));
	M("# HELP licproxy_instances_untracked_total X-Instance-Id sightings "
	    "not counted: the table (%d) was full.\n"
	    "# TYPE licproxy_instances_untracked_total counter\n"
	    "licproxy_instances_untracked_total %llu\n", STATS_INSTANCES,
	    (unsigned long long)s->instances_untracked);
	M("# TYPE licproxy_process_restarts_total counter\n");
	for (i = 0; i < 3; i++)
		M("licproxy_process_restarts_total{role=\"%s\"} %llu\n",
		    roles[i], (unsigned long long)s->restarts[i]);
#undef M
	if (o >= METRICS_MAX)
		o = METRICS_MAX - 1;
	conn_reply_type(c, 200, "text/plain; version=0.0.4", out, o);
	free(out);
}

void
status_handle(struct conn *c)
{
	static struct stats_shared	 snap;
	int				 ready;

	if (c->req.method != HTTP_GET && c->req.method != HTTP_HEAD) {
		conn_error(c, 405, "method_not_allowed", "use GET", NULL,
		    "Allow: GET, HEAD\r\n");
		return;
	}
	switch (c->ep) {
	case EP_HEALTHZ:	/* the master runs: no figures needed */
		conn_reply(c, 200, NULL, "{\"status\":\"ok\"}", 15);
		return;
	case EP_STATUS:
	case EP_METRICS:
	case EP_READYZ:
		break;
	default:
		conn_error(c, 404, "not_found", "no such endpoint", NULL, NULL);
		return;
	}
	/* The block is big (every process's slot): copied only when read. */
	stats_snapshot(&snap);
	if (c->ep == EP_STATUS)
		status_json(c, &snap);
	else if (c->ep == EP_METRICS)
		status_metrics(c, &snap);
	else {
		ready = status_ready(&snap);
		conn_reply(c, ready ? 200 : 503, NULL, ready ?
		    "{\"ready\":true}" : "{\"ready\":false}", ready ? 14 : 15);
	}
}

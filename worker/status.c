/*
 * status.c - the plain-HTTP status listener: /v1/status, /metrics,
 * /healthz, /readyz and the dashboard at /. Every figure is instance-wide:
 * summed over the per-process slots of the shared stats block. conn.c has
 * already refused methods other than GET and HEAD.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "conf.h"
#include "stats.h"
#include "worker.h"

/* worker/dashboard.html, made into a C string by the Makefile */
static const char dashboard_html[] =
#include "dashboard.inc"
;

/* The stats block is big (every process's slot): not on the stack. */
static struct stats_shared snap;

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
	return json_pack("{s:o, s:o, s:o, s:o}", "urls", urls,
	    "last_success", status_time(s->last_success),
	    "last_error", s->last_error[0] ? json_string(s->last_error) :
	    json_null(),
	    "last_error_at", status_time(s->last_error_at));
}

static void
status_json(const struct stats_shared *s, struct reply *rp)
{
	json_t	*j;
	char	*body;

	j = json_pack("{s:s, s:s, s:s, s:I, s:o, s:{s:I}, s:{s:I, s:I},"
	    " s:{s:i, s:i, s:b}, s:{s:i, s:i, s:b}, s:o, s:{s:I, s:I, s:I}}",
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
	    "overflow", stats_instances_overflow(s, time(NULL)),
	    "survival_s", s->survival_s == STATS_SURVIVAL_NONE ? json_null() :
	    json_integer(s->survival_s),
	    "seats", "keys", (json_int_t)s->seats_keys,
	    "used", (json_int_t)s->seats_used,
	    "granted", (json_int_t)s->seats_granted);
	body = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (body == NULL)
		reply_error(rp, 500, "internal", "out of memory", NULL);
	else
		reply_owned(rp, status_ready(s) ? 200 : 503, NULL, body,
		    strlen(body));
}

enum outcome
status_start(const struct conn *c, struct req_state *st, struct reply *rp)
{
	static const char ok[] = "{\"status\":\"ok\"}";
	static const char yes[] = "{\"ready\":true}", no[] = "{\"ready\":false}";

	(void)st;
	switch (c->ep) {
	case EP_DASHBOARD:	/* static: it reads /v1/status itself */
		reply_body(rp, 200, "text/html; charset=utf-8",
		    dashboard_html, sizeof(dashboard_html) - 1);
		return OUT_REPLY;
	case EP_HEALTHZ:	/* the master runs: no figures needed */
		reply_body(rp, 200, NULL, ok, sizeof(ok) - 1);
		return OUT_REPLY;
	case EP_STATUS:
	case EP_METRICS:
	case EP_READYZ:
		break;
	default:
		reply_error(rp, 404, "not_found", "no such endpoint", NULL);
		return OUT_REPLY;
	}
	/* The block is big (every process's slot): copied only when read. */
	stats_snapshot(&snap);
	if (c->ep == EP_STATUS)
		status_json(&snap, rp);
	else if (c->ep == EP_METRICS)
		metrics_render(&snap, rp);
	else if (status_ready(&snap))
		reply_body(rp, 200, NULL, yes, sizeof(yes) - 1);
	else
		reply_body(rp, 503, NULL, no, sizeof(no) - 1);
	return OUT_REPLY;
}

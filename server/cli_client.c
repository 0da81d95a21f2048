/*
 * cli_client.c - check and status: small clients for operators and for
 * licensed services' start scripts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "cli.h"
#include "httpc.h"
#include "token.h"

#define CHECK_TIMEOUT_MS	5000

struct fetch {
	int	 done;
	int	 err;
	int	 status;
	char	*body;
	char	 errstr[256];
};

static void
fetch_done(const struct httpc_res *r, void *arg)
{
	struct fetch *f = arg;

	f->done = 1;
	f->err = r->err;
	f->status = r->status;
	if (r->err != 0)
		snprintf(f->errstr, sizeof(f->errstr), "%s",
		    r->errstr ? r->errstr : "failed");
	else
		f->body = strndup(r->body, r->bodylen);
}

/* One blocking request on a private loop. */
static int
fetch(const struct httpc_opts *o, const char *url, const char *path,
    const char *key, struct fetch *f)
{
	struct event_base	*base = event_base_new();
	struct httpc		*h = NULL;
	struct httpc_req	 req;

	memset(f, 0, sizeof(*f));
	memset(&req, 0, sizeof(req));
	req.method = "GET";
	req.url = url;
	req.path = path;
	req.key = key;
	req.timeout_ms = CHECK_TIMEOUT_MS;
	if (base == NULL || (h = httpc_new(base, o, f->errstr,
	    sizeof(f->errstr))) == NULL || httpc_request(h, &req, fetch_done,
	    f) == -1) {
		if (h != NULL)
			snprintf(f->errstr, sizeof(f->errstr), "out of memory");
		f->err = -1;
		httpc_free(h);
		event_base_free(base);
		return -1;
	}
	while (!f->done)
		event_base_loop(base, EVLOOP_ONCE);
	httpc_free(h);
	event_base_free(base);
	return 0;
}

/*
 * One URL of check: 0 licensed, 3 rejected, 4 no verdict from it (try the
 * next), 2 when the request cannot even be made.
 */
static int
check_one(const struct httpc_opts *o, const char *url, const char *key)
{
	struct fetch	f;
	int		rv = 4;

	if (fetch(o, url, "/v1/license", key, &f) == -1) {
		fprintf(stderr, "licproxy: %s: %s\n", url, f.errstr);
		return 2;
	}
	if (f.err != 0 || f.status >= 500)
		fprintf(stderr, "licproxy: %s: %s\n", url, f.err ? f.errstr :
		    "upstream unavailable");
	else if (f.status != 200 && f.status != 401 && f.status != 403)
		/* A 404 or 405 is a wrong URL, not a verdict on the key. */
		fprintf(stderr, "licproxy: %s: HTTP %d, not a license server "
		    "answer\n", url, f.status);
	else {
		printf("%s\n", f.body);
		rv = f.status == 200 ? 0 : 3;
	}
	free(f.body);
	return rv;
}

int
cli_check(int argc, char **argv)
{
	const char	*key = cli_opt(argc, argv, "--key"), *url;
	struct httpc_opts o = { cli_opt(argc, argv, "--ca"),
	    cli_opt(argc, argv, "--client-cert"),
	    cli_opt(argc, argv, "--client-key"), 0 };
	int		 i, rv = 4;

	if (key == NULL)
		key = getenv("LICPROXY_LICENSE_KEY");
	if (cli_arg(argc, argv, 0) == NULL)
		return cli_usage_error("check: give at least one URL");
	if (key == NULL)
		return cli_usage_error("check: --key K is required (or "
		    "LICPROXY_LICENSE_KEY in the environment)");
	if ((o.client_cert == NULL) != (o.client_key == NULL))
		return cli_usage_error("check: --client-cert and --client-key "
		    "go together");
	if (!token_key_valid(key, strlen(key))) {
		fprintf(stderr, "licproxy: malformed key (40 of A-Za-z0-9)\n");
		return 3;
	}
	for (i = 0; rv == 4 && (url = cli_arg(argc, argv, i)) != NULL; i++)
		rv = check_one(&o, url, key);
	return rv;
}

/* How long the site runs on its cache if the upstream stays away. */
static void
status_survival(const json_t *v)
{
	json_int_t s = json_integer_value(v);

	if (!json_is_integer(v))
		return;	/* an authority, or nothing cached */
	printf("  survival:  %lldd %02lldh %02lldm if the upstream stays away\n",
	    (long long)(s / 86400), (long long)(s % 86400 / 3600),
	    (long long)(s % 3600 / 60));
}

static void
status_print(const char *url, json_t *j)
{
	json_t *up = json_object_get(j, "upstream");

	printf("licproxy %s at %s\n", json_string_value(json_object_get(j,
	    "version")), url);
	printf("  state:     %s (%s mode), up %llds\n",
	    json_string_value(json_object_get(j, "state")),
	    json_string_value(json_object_get(j, "mode")),
	    (long long)json_integer_value(json_object_get(j, "uptime_s")));
	printf("  leases:    %lld cached\n", (long long)json_integer_value(
	    json_object_get(json_object_get(j, "leases"), "cached")));
	printf("  usage:     %lld pending, %lld forwarded\n",
	    (long long)json_integer_value(json_object_get(json_object_get(j,
	    "usage"), "pending")), (long long)json_integer_value(
	    json_object_get(json_object_get(j, "usage"), "forwarded")));
	status_survival(json_object_get(j, "survival_s"));
	printf("  upstream:  last success %s\n",
	    json_string_value(json_object_get(up, "last_success")) ?: "never");
	if (json_string_value(json_object_get(up, "last_error")) != NULL)
		printf("             last error at %s: %s\n",
		    json_string_value(json_object_get(up, "last_error_at")) ?:
		    "?", json_string_value(json_object_get(up, "last_error")));
	printf("  processes: %lld/%lld workers alive, uplink %s\n",
	    (long long)json_integer_value(json_object_get(json_object_get(j,
	    "processes"), "workers_alive")), (long long)json_integer_value(
	    json_object_get(json_object_get(j, "processes"), "workers")),
	    json_is_true(json_object_get(json_object_get(j, "processes"),
	    "uplink_alive")) ? "alive" : "down");
}

/*
 * Whether j is a /v1/status of licproxy: anything else that is JSON (a
 * 404 body, another service's status) would print as "(null)" fields.
 */
static int
status_is_ours(const json_t *j)
{
	static const char	*want[] = { "version", "state", "mode" };
	size_t			 i;

	if (!json_is_object(j))
		return 0;
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (!json_is_string(json_object_get(j, want[i])))
			return 0;
	return 1;
}

int
cli_status(int argc, char **argv)
{
	const char		*url = cli_arg(argc, argv, 0);
	struct httpc_opts	 o = { NULL, NULL, NULL, 1 };	/* plain http */
	struct fetch		 f;
	json_t			*j;

	if (url == NULL)
		url = "http://127.0.0.1:8089";
	fetch(&o, url, "/v1/status", NULL, &f);
	if (f.err != 0) {
		fprintf(stderr, "licproxy: %s: %s\n", url, f.errstr);
		return 1;
	}
	if ((j = json_loads(f.body, 0, NULL)) == NULL || !status_is_ours(j)) {
		fprintf(stderr, "licproxy: %s: not a licproxy status (HTTP "
		    "%d)\n", url, f.status);
		json_decref(j);
		free(f.body);
		return 1;
	}
	status_print(url, j);
	json_decref(j);
	free(f.body);
	return f.status == 200 ? 0 : 1;
}

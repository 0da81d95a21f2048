/*
 * cli_seats.c - licproxy seats list|release, on a live store. The CLI
 * only reads seats, or frees them (a release can never over-issue), so
 * it needs no turn with the running server's seat writer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cli.h"
#include "store.h"
#include "store_seats.h"
#include "token.h"

#define SEATS_CLI_KEYS	4096	/* keys with a limit listed at most */

struct seats_keyset {
	char	 kid[SEATS_CLI_KEYS][TOKEN_KID_LEN + 1];
	int64_t	 total[SEATS_CLI_KEYS];
	int	 n;
};

static void
seats_add(struct seats_keyset *ks, const char *kid, int64_t total)
{
	int i;

	for (i = 0; i < ks->n; i++)
		if (strcmp(ks->kid[i], kid) == 0)
			return;
	if (ks->n == SEATS_CLI_KEYS)
		return;
	snprintf(ks->kid[ks->n], sizeof(ks->kid[0]), "%s", kid);
	ks->total[ks->n++] = total;
}

static int
seats_key1(const struct store_key *k, void *arg)
{
	if (k->seats > 0)
		seats_add(arg, k->kid, k->seats);
	return 0;
}

static int
seats_mine1(const char *kid, const struct store_mygrant *g, void *arg)
{
	if (g->total != STORE_SEATS_NOLIMIT)
		seats_add(arg, kid, g->total);
	return 0;
}

static json_t *
seats_time(int64_t t)
{
	char		buf[32];
	time_t		tt = (time_t)t;
	struct tm	tm;

	gmtime_r(&tt, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_string(buf);
}

struct seats_rows {
	json_t	*inst, *grants;
	int64_t	 now;
};

static int
seats_inst1(const char *kid, const char *ins, int64_t exp, void *arg)
{
	struct seats_rows *r = arg;

	(void)kid;
	if (exp > r->now)
		json_array_append_new(r->inst, json_pack("{s:s,s:o}",
		    "instance", ins, "expires_at", seats_time(exp)));
	return 0;
}

/* instance: the holding proxy's; absent (SPEC 8's shape) for none. */
static int
seats_grant1(const char *kid, const char *holder, const char *ins,
    int64_t seats, int64_t exp, void *arg)
{
	struct seats_rows	*r = arg;
	json_t			*g;

	(void)kid;
	if (exp <= r->now || seats <= 0)
		return 0;
	g = json_pack("{s:s,s:I,s:o}", "holder", holder, "seats",
	    (json_int_t)seats, "expires_at", seats_time(exp));
	if (*ins != '\0')
		json_object_set_new(g, "instance", json_string(ins));
	json_array_append_new(r->grants, g);
	return 0;
}

static json_t *
seats_row(struct store *s, const char *kid, int64_t total, int64_t now)
{
	struct store_seat_use	u;
	struct seats_rows	r = { json_array(), json_array(), now };

	store_seat_use(s, kid, now, &u);
	store_seat_foreach(s, kid, seats_inst1, &r);
	store_grant_foreach(s, kid, seats_grant1, &r);
	return json_pack("{s:s,s:I,s:I,s:o,s:o}", "key_id", kid, "total",
	    (json_int_t)total, "used", (json_int_t)u.used, "instances", r.inst,
	    "grants", r.grants);
}

static void
seats_print(json_t *row)
{
	json_t	*e;
	size_t	 i;

	printf("%-16s  %7lld  %7lld\n",
	    json_string_value(json_object_get(row, "key_id")),
	    (long long)json_integer_value(json_object_get(row, "total")),
	    (long long)json_integer_value(json_object_get(row, "used")));
	json_array_foreach(json_object_get(row, "instances"), i, e)
		printf("  instance %-40s  until %s\n",
		    json_string_value(json_object_get(e, "instance")),
		    json_string_value(json_object_get(e, "expires_at")));
	json_array_foreach(json_object_get(row, "grants"), i, e)
		printf("  grant    %-16s %-20s  %7lld seats  until %s\n",
		    json_string_value(json_object_get(e, "holder")),
		    json_is_string(json_object_get(e, "instance")) ?
		    json_string_value(json_object_get(e, "instance")) : "-",
		    (long long)json_integer_value(json_object_get(e, "seats")),
		    json_string_value(json_object_get(e, "expires_at")));
}

static int
seats_list(struct store *s, int json)
{
	struct seats_keyset	*ks = calloc(1, sizeof(*ks));
	json_t			*arr = json_array(), *row;
	int64_t			 now = store_seat_now(s);
	int			 i;

	if (ks == NULL)
		return 1;
	store_key_foreach(s, seats_key1, ks);
	store_mygrant_foreach(s, seats_mine1, ks);
	if (!json)
		printf("%-16s  %7s  %7s\n", "KEY_ID", "TOTAL", "USED");
	for (i = 0; i < ks->n; i++) {
		row = seats_row(s, ks->kid[i], ks->total[i], now);
		if (!json)
			seats_print(row);
		json_array_append_new(arr, row);
	}
	if (json) {
		json_dumpf(arr, stdout, JSON_COMPACT);
		printf("\n");
	}
	json_decref(arr);
	free(ks);
	return 0;
}

static int
seats_kid_ok(const char *s)
{
	return s != NULL && strlen(s) == TOKEN_KID_LEN &&
	    strspn(s, "0123456789abcdef") == TOKEN_KID_LEN;
}

static int
seats_release(struct store *s, const char *kid, const char *ins,
    const char *holder)
{
	int r;

	r = holder == NULL ? store_seat_release(s, kid, ins) :
	    store_grant_release(s, kid, holder, ins);
	if (r == STORE_ENOTFOUND) {
		/* A mistyped id must not read as done: seats stay held. */
		fprintf(stderr, "licproxy: no grant of %s held by %s%s%s: "
		    "nothing cancelled (see seats list)\n", kid, holder,
		    ins != NULL ? " instance " : "", ins != NULL ? ins : "");
		return 0;
	}
	if (r != 0) {
		fprintf(stderr, "licproxy: cannot release: store error\n");
		return 1;
	}
	if (holder == NULL) {
		fprintf(stderr, "released the seat of %s held by %s\n", kid, ins);
		return 0;
	}
	fprintf(stderr, "licproxy: warning: cancelled the grant of %s held by "
	    "%s%s%s; if that proxy still runs but is cut off, it may keep "
	    "serving those seats (over-issue) until its grant expires\n",
	    kid, holder, ins != NULL ? " instance " : " (every instance)",
	    ins != NULL ? ins : "");
	return 0;
}

int
cli_seats(int argc, char **argv)
{
	const char	*ins = cli_opt(argc, argv, "--instance");
	const char	*holder = cli_opt(argc, argv, "--holder");
	const char	*kid = cli_arg(argc, argv, 0);
	struct store	*s;
	int		 list = argc >= 2 && strcmp(argv[1], "list") == 0, rv;

	if (!list && (argc < 2 || strcmp(argv[1], "release") != 0))
		return cli_usage_error("seats: list or release");
	if (!list && !seats_kid_ok(kid))
		return cli_usage_error("seats release: KEY_ID must be %d "
		    "lowercase hex characters", TOKEN_KID_LEN);
	/* --instance alone: an instance's seat; with --holder: its grant */
	if (!list && ins == NULL && holder == NULL)
		return cli_usage_error("seats release: give --instance ID, "
		    "--holder KEY_ID, or both (one proxy's grant)");
	if (!list && ins != NULL && !token_instance_valid(ins, strlen(ins)))
		return cli_usage_error("--instance \"%s\": " TOKEN_INSTANCE_FORM,
		    ins);
	if (!list && holder != NULL && !seats_kid_ok(holder))
		return cli_usage_error("--holder \"%s\": a key_id, %d lowercase "
		    "hex characters", holder, TOKEN_KID_LEN);
	if ((rv = cli_store(argc, argv, list ? STORE_RDONLY : 0, &s)) != 0)
		return rv;
	rv = list ? seats_list(s, cli_flag(argc, argv, "--json")) :
	    seats_release(s, kid, ins, holder);
	store_close(s);
	return rv;
}

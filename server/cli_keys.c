/*
 * cli_keys.c - keygen, keys create|list|revoke and usage: tools that work on
 * an authority's store, also while the authority runs (LMDB serializes the
 * writers and readers never block).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "cli.h"
#include "ipc.h"
#include "store.h"
#include "token.h"

int
cli_keygen(int argc, char **argv)
{
	const char *path = cli_arg(argc, argv, 0);

	if (path == NULL)
		return cli_usage_error("keygen: give the PATH of the new key");
	/* token_keygen said why; it leaves no half of a pair behind. */
	if (token_keygen(path) == -1) {
		fprintf(stderr, "licproxy: no key written\n");
		return 1;
	}
	fprintf(stderr, "wrote %s (private, 0600) and %s.pub\n", path, path);
	return 0;
}

/*
 * "a,b" into k->products. Every name must be there: strtok would fold
 * "a,,b" into "a,b" and store a key the operator did not ask for.
 */
static int
keys_products(const char *list, struct store_key *k)
{
	const char	*p = list, *end;
	size_t		 n;

	for (;;) {
		end = p + strcspn(p, ",");
		n = (size_t)(end - p);
		if (n == 0)
			return cli_usage_error("--products \"%s\": empty product "
			    "name (names are separated by single commas)", list);
		if (n > TOKEN_PRODUCT_MAX ||
		    strspn(p, TOKEN_NAME_CHARS) < n)
			return cli_usage_error("--products \"%s\": \"%.*s\" is "
			    "not 1-%d of [a-z0-9_]", list, (int)n, p,
			    TOKEN_PRODUCT_MAX);
		if (k->n_products == TOKEN_MAX_PRODUCTS)
			return cli_usage_error("--products \"%s\": more than %d "
			    "products", list, TOKEN_MAX_PRODUCTS);
		memcpy(k->products[k->n_products], p, n);
		k->products[k->n_products++][n] = '\0';
		if (*end == '\0')
			return 0;
		p = end + 1;
	}
}

/* YYYY-MM-DD -> the end of that day, UTC. */
static int
keys_expiry(const char *s, int64_t *t)
{
	struct tm	tm, back;
	time_t		day;
	char		*end;

	/* strptime takes "2026-1-5"; the contract says YYYY-MM-DD. */
	if (strlen(s) != 10 || strspn(s, "0123456789-") != 10 ||
	    s[4] != '-' || s[7] != '-')
		return -1;
	memset(&tm, 0, sizeof(tm));
	if ((end = strptime(s, "%Y-%m-%d", &tm)) == NULL || *end != '\0')
		return -1;
	/* timegm turns 2026-02-30 into March 2: refuse what did not exist. */
	back = tm;
	day = timegm(&back);	/* normalizes its argument */
	if (gmtime_r(&day, &back) == NULL || back.tm_mday != tm.tm_mday ||
	    back.tm_mon != tm.tm_mon || back.tm_year != tm.tm_year)
		return -1;
	*t = (int64_t)day + 86400;
	return 0;
}

/* --expires: YYYY-MM-DD, not in the past, or "never" (0). */
static int
keys_expires(const char *s, int64_t *t)
{
	if (strcmp(s, "never") == 0) {
		*t = 0;
		return 0;
	}
	if (keys_expiry(s, t) == -1)
		return cli_usage_error("--expires \"%s\": must be YYYY-MM-DD "
		    "(a real date) or never", s);
	if (*t <= time(NULL))
		return cli_usage_error("--expires %s: that day is over; a key "
		    "must not be born expired", s);
	return 0;
}

/* --seats N: a seat limit, 0 for none (as without the flag). */
static int
keys_seats(const char *s, int64_t *n)
{
	size_t len = strlen(s);

	if (len < 1 || len > 7 || strspn(s, "0123456789") != len ||
	    (*n = strtoll(s, NULL, 10)) > IPC_SEATS_MAX)
		return cli_usage_error("--seats \"%s\": a number of seats, "
		    "0 to %d (0 = no limit)", s, IPC_SEATS_MAX);
	return 0;
}

static int
keys_create(int argc, char **argv)
{
	const char		*name = cli_opt(argc, argv, "--name");
	const char		*prd = cli_opt(argc, argv, "--products");
	const char		*role = cli_opt(argc, argv, "--role");
	const char		*exp = cli_opt(argc, argv, "--expires");
	const char		*seats = cli_opt(argc, argv, "--seats");
	struct store_key	 k;
	struct store		*s;
	unsigned char		 sha[32];
	char			 key[TOKEN_KEY_LEN + 1];
	enum lease_role		 r = ROLE_MEMBER;
	int			 rv;

	memset(&k, 0, sizeof(k));
	if (name == NULL)
		return cli_usage_error("keys create: --name NAME is required");
	if (strlen(name) < 1 || strlen(name) >= sizeof(k.name))
		return cli_usage_error("--name \"%s\": 1-%d characters", name,
		    STORE_KEY_NAME_MAX);
	if (prd == NULL)
		return cli_usage_error("keys create: --products is required "
		    "(e.g. --products api,engine)");
	if (keys_products(prd, &k) != 0)
		return 2;
	if (role != NULL && role_parse(role, &r) == -1)
		return cli_usage_error("--role \"%s\": must be member or proxy",
		    role);
	if (exp != NULL && keys_expires(exp, &k.expires) != 0)
		return 2;
	if (seats != NULL && keys_seats(seats, &k.seats) != 0)
		return 2;
	if ((rv = cli_store(argc, argv, 0, &s)) != 0)
		return rv;
	strcpy(k.name, name);
	k.role = r;
	k.created = time(NULL);
	if (token_key_generate(key) == -1)
		goto fail;
	token_key_hash(key, TOKEN_KEY_LEN, sha);
	token_kid_from_hash(sha, k.kid);
	if (store_key_put(s, sha, &k) != 0)
		goto fail;
	store_close(s);
	printf("%s\n", key);
	fprintf(stderr, "created key_id %s name %s role %s products %s%s%s"
	    "%s%s\n", k.kid, k.name, role_name(r), prd, exp ? " expires " : "",
	    exp ? exp : "", k.seats ? " seats " : "", k.seats ? seats : "");
	OPENSSL_cleanse(key, sizeof(key));
	return 0;
fail:
	fprintf(stderr, "licproxy: cannot store the new key\n");
	store_close(s);
	return 1;
}

static const char *
keys_status(const struct store_key *k)
{
	if (k->revoked)
		return "revoked";
	if (k->expires != 0 && k->expires <= time(NULL))
		return "expired";
	return "active";
}

/*
 * An empty answer from a proxy's store looks like an empty authority: say
 * where the keys and the ledger live instead.
 */
static int
keys_any(const struct store_key *k, void *arg)
{
	(void)k;
	*(int *)arg = 1;
	return 1;
}

static void
keys_hint_proxy(struct store *s, const char *what)
{
	struct store_clock		 clk;
	struct store_lease_counts	 n = { 0, 0, -1 };
	uint64_t			 pending = 0, fwd = 0;
	int				 keys = 0;

	/* an authority has keys; its leases are the ones it signed */
	if (store_key_foreach(s, keys_any, &keys) != 0 || keys)
		return;
	store_clock_read(s, &clk);
	store_lease_count(s, &clk, &n);
	store_spool_stats(s, &pending, &fwd);
	if (n.total > 0 || pending > 0 || fwd > 0)
		fprintf(stderr, "licproxy: no %s here: this is a proxy's store "
		    "(%llu cached leases, %llu usage records spooled); %s live "
		    "at the authority\n", what, (unsigned long long)n.total,
		    (unsigned long long)pending, what);
}

struct keys_list {
	json_t	*arr;
	int	 n;
};

#define KEYS_ROW	"%-16s  %-20s  %-6s  %-8s  %-10s  %-7s  %s\n"

static int
keys_list1(const struct store_key *k, void *arg)
{
	struct keys_list *kl = arg;
	json_t	*arr = kl->arr, *prd = json_array();
	char	 buf[600] = "", exp[16] = "-", seats[24] = "-";
	time_t	 t = (time_t)k->expires - 86400;
	int	 i;

	for (i = 0; i < k->n_products; i++) {
		json_array_append_new(prd, json_string(k->products[i]));
		snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s",
		    i ? "," : "", k->products[i]);
	}
	if (k->expires != 0)
		strftime(exp, sizeof(exp), "%Y-%m-%d", gmtime(&t));
	if (k->seats > 0)
		snprintf(seats, sizeof(seats), "%lld", (long long)k->seats);
	kl->n++;
	if (arr != NULL)
		json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:o,s:s,s:s*,"
		    "s:o}", "key_id", k->kid, "name", k->name, "role",
		    role_name((enum lease_role)k->role), "products", prd,
		    "status", keys_status(k), "expires",
		    k->expires ? exp : NULL, "seats", k->seats > 0 ?
		    json_integer(k->seats) : json_null()));
	else {
		json_decref(prd);
		printf(KEYS_ROW, k->kid, k->name, role_name((enum lease_role)
		    k->role), keys_status(k), exp, seats, buf);
	}
	return 0;
}

static int
keys_list(int argc, char **argv)
{
	struct store		*s;
	struct keys_list	 kl = { NULL, 0 };
	int			 rv;

	if ((rv = cli_store(argc, argv, STORE_RDONLY, &s)) != 0)
		return rv;
	if (cli_flag(argc, argv, "--json"))
		kl.arr = json_array();
	else
		printf(KEYS_ROW, "KEY_ID", "NAME", "ROLE", "STATUS",
		    "EXPIRES", "SEATS", "PRODUCTS");
	rv = store_key_foreach(s, keys_list1, &kl);
	if (rv == 0 && kl.n == 0)
		keys_hint_proxy(s, "keys");
	store_close(s);
	if (kl.arr != NULL) {
		json_dumpf(kl.arr, stdout, JSON_COMPACT);
		printf("\n");
		json_decref(kl.arr);
	}
	return rv == 0 ? 0 : 1;
}

struct keys_find {
	const char	*kid;
	int		 found;
	int		 revoked;
};

static int
keys_find1(const struct store_key *k, void *arg)
{
	struct keys_find *f = arg;

	if (strcmp(k->kid, f->kid) != 0)
		return 0;
	f->found = 1;
	f->revoked = k->revoked;
	return 1;
}

static int
keys_revoke(int argc, char **argv)
{
	struct store		*s;
	const char		*kid = cli_arg(argc, argv, 0);
	struct keys_find	 f = { kid, 0, 0 };
	int			 r = 0;

	if (kid == NULL || strlen(kid) != TOKEN_KID_LEN ||
	    strspn(kid, "0123456789abcdef") != TOKEN_KID_LEN)
		return cli_usage_error("keys revoke: KEY_ID must be %d lowercase "
		    "hex characters", TOKEN_KID_LEN);
	if ((r = cli_store(argc, argv, 0, &s)) != 0)
		return r;
	store_key_foreach(s, keys_find1, &f);
	if (f.found && !f.revoked)
		r = store_key_revoke(s, kid);
	store_close(s);
	if (!f.found || r == STORE_ENOTFOUND) {
		fprintf(stderr, "licproxy: no key with key_id %s\n", kid);
		return 1;
	}
	if (r != 0)
		return 1;
	fprintf(stderr, f.revoked ? "licproxy: %s was already revoked\n" :
	    "revoked %s\n", kid);
	return 0;
}

int
cli_keys(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "create") == 0)
		return keys_create(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "list") == 0)
		return keys_list(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "revoke") == 0)
		return keys_revoke(argc, argv);
	return cli_usage_error("keys: create, list or revoke");
}

/* A total past what a double holds is still a row: null and "overflow". */
static json_t *
usage_row(const struct usage_total *t)
{
	json_t *row;

	row = json_pack("{s:s,s:s,s:s,s:o,s:I}", "key_id", t->kid,
	    "product", t->product, "metric", t->metric, "quantity",
	    isfinite(t->quantity) ? json_real(t->quantity) : json_null(),
	    "records", (json_int_t)t->records);
	if (row != NULL && !isfinite(t->quantity) &&
	    json_object_set_new(row, "overflow", json_true()) == -1) {
		json_decref(row);
		return NULL;
	}
	return row;
}

static int
usage_print(const struct usage_total *t, size_t n, int json)
{
	json_t	*arr = json_array(), *row;
	size_t	 i;
	int	 rv = 0;

	if (!json)
		printf("%-16s  %-16s  %-20s  %14s  %8s\n", "KEY_ID", "PRODUCT",
		    "METRIC", "QUANTITY", "RECORDS");
	for (i = 0; i < n; i++) {
		if (!isfinite(t[i].quantity))
			fprintf(stderr, "licproxy: %s %s %s: the total is too "
			    "large for a number\n", t[i].kid, t[i].product,
			    t[i].metric);
		if (!json)
			printf("%-16s  %-16s  %-20s  %14.3f  %8llu\n",
			    t[i].kid, t[i].product, t[i].metric,
			    t[i].quantity, (unsigned long long)t[i].records);
		else if ((row = usage_row(&t[i])) == NULL ||
		    json_array_append_new(arr, row) == -1)
			rv = 1;
	}
	if (json && (rv != 0 || json_dumpf(arr, stdout, JSON_COMPACT) == -1))
		rv = 1;
	else if (json)
		printf("\n");
	json_decref(arr);
	if (rv != 0)
		fprintf(stderr, "licproxy: usage: out of memory\n");
	return rv;
}

int
cli_usage(int argc, char **argv)
{
	struct usage_total	*t = NULL;
	struct store		*s;
	size_t			 n = 0;
	int			 rv;

	if ((rv = cli_store(argc, argv, STORE_RDONLY, &s)) != 0)
		return rv;
	if (store_ledger_totals(s, &t, &n) != 0) {
		store_close(s);
		return 1;
	}
	if (n == 0)
		keys_hint_proxy(s, "usage totals");
	store_close(s);
	rv = usage_print(t, n, cli_flag(argc, argv, "--json"));
	free(t);
	return rv;
}

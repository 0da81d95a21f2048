/*
 * cli_cache.c - cache export|import: move a proxy's signed leases to another
 * proxy (a replacement machine, a second site) as JSON lines
 * {"sha256":HEX,"lease":TOKEN}. The raw keys are never in the file; import
 * trusts nothing it cannot verify.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "cli.h"
#include "conf.h"
#include "store.h"
#include "token.h"

#define CACHE_MAX_LINE	(TOKEN_MAX + 256)
#define CACHE_MAX_TRUST	16

static int
export1(const unsigned char sha[32], const char *tok, size_t len, void *arg)
{
	char	hex[65];

	(void)len, (void)arg;
	token_hex(sha, 32, hex);
	printf("{\"sha256\":\"%s\",\"lease\":\"%s\"}\n", hex, tok);
	return 0;
}

static int
cache_export(int argc, char **argv)
{
	struct store	*s;
	int		 rv;

	if ((rv = cli_store(argc, argv, STORE_RDONLY, &s)) != 0)
		return rv;
	rv = store_lease_foreach(s, export1, NULL);
	store_close(s);
	return rv == 0 && fflush(stdout) == 0 ? 0 : 1;
}

struct import_item {
	unsigned char	sha[32];
	char		tok[TOKEN_MAX + 1];
	int64_t		iat, rat, exp;
};

static int
hex32(const char *s, unsigned char out[32])
{
	int i;

	if (strlen(s) != 64 || strspn(s, "0123456789abcdef") != 64)
		return -1;
	for (i = 0; i < 32; i++)
		sscanf(s + 2 * i, "%2hhx", &out[i]);
	return 0;
}

/*
 * Parse and verify one line: the reason it is refused, or NULL. Any refusal
 * refuses the whole file.
 */
static const char *
import_line(const char *line, EVP_PKEY **keys, int nkeys,
    struct import_item *it)
{
	json_t		*j = json_loads(line, JSON_REJECT_DUPLICATES, NULL);
	const char	*sha, *tok, *why = "not a cache export line";
	struct lease	 l;
	char		 kid[TOKEN_KID_LEN + 1];

	/* Exactly the two members export1() writes; anything else is not. */
	if (j == NULL || json_unpack(j, "{s:s, s:s !}", "sha256", &sha,
	    "lease", &tok) != 0 || hex32(sha, it->sha) == -1 ||
	    strlen(tok) > TOKEN_MAX)
		goto done;
	why = "not a lease signed by a trusted key";
	token_kid_from_hash(it->sha, kid);
	if (token_verify(tok, strlen(tok), keys, nkeys, &l) == -1 ||
	    strcmp(l.kid, kid) != 0)
		goto done;
	strcpy(it->tok, tok);
	it->iat = l.iat;
	it->rat = l.rat;
	it->exp = l.exp;
	why = NULL;
done:
	json_decref(j);
	return why;
}

/*
 * Every line export1() writes is one JSON object ending in a newline, so a
 * line with a NUL byte, one too long, or a last line without its newline
 * (a file cut short) is refused before it is parsed; so is a file with no
 * lease at all (empty, or a file that is not an export).
 */
static const char *
import_check(const char *line, size_t len)
{
	if (len != strlen(line))
		return "binary data, not a cache export";
	if (len + 1 >= CACHE_MAX_LINE && line[len - 1] != '\n')
		return "line too long for a cache export";
	if (line[len - 1] != '\n')
		return "truncated (no end of line), not a whole cache export";
	return NULL;
}

/* One line, NUL bytes kept, at most size - 1 bytes; 0 at the end. */
static size_t
import_getline(FILE *f, char *buf, size_t size)
{
	size_t	n = 0;
	int	ch;

	while (n + 1 < size && (ch = getc(f)) != EOF) {
		buf[n++] = (char)ch;
		if (ch == '\n')
			break;
	}
	buf[n] = '\0';
	return n;
}

static int
import_read(FILE *f, const char *name, EVP_PKEY **keys, int nkeys,
    struct import_item **items, size_t *n)
{
	char			 line[CACHE_MAX_LINE];
	const char		*why = NULL;
	struct import_item	*it;
	size_t			 lineno = 0, len;

	while (why == NULL &&
	    (len = import_getline(f, line, sizeof(line))) > 0) {
		lineno++;
		if ((why = import_check(line, len)) != NULL)
			break;
		if (line[strspn(line, " \t\r\n")] == '\0')
			continue;
		if ((it = reallocarray(*items, *n + 1, sizeof(**items))) ==
		    NULL) {
			why = "out of memory";
			break;
		}
		*items = it;
		if ((why = import_line(line, keys, nkeys, &it[*n])) == NULL)
			(*n)++;
	}
	if (why == NULL && ferror(f))
		why = strerror(errno);
	if (why == NULL && *n == 0) {
		lineno = 0;
		why = "no lease in it (empty), not a cache export";
	}
	if (why == NULL)
		return 0;
	if (lineno > 0)
		fprintf(stderr, "licproxy: %s: line %zu: %s; nothing "
		    "imported\n", name, lineno, why);
	else
		fprintf(stderr, "licproxy: %s: %s; nothing imported\n", name,
		    why);
	return -1;
}

int
cli_cache_read(FILE *f, EVP_PKEY **keys, int nkeys, size_t *n)
{
	struct import_item	*items = NULL;
	int			 rv;

	*n = 0;
	rv = import_read(f, "input", keys, nkeys, &items, n);
	free(items);
	return rv;
}

static int
import_store(const char *dir, struct import_item *items, size_t n)
{
	struct store		*s;
	struct store_clock	 clk;
	struct store_lease_time	 t;
	size_t			 i, stored = 0, expired = 0;
	int64_t			 age;

	if ((s = cli_store_open(dir, 0)) == NULL)
		return 1;
	store_clock_read(s, &clk);
	for (i = 0; i < n; i++) {
		if (items[i].exp <= clk.wall) {
			expired++;
			continue;
		}
		/*
		 * No receipt time travels with a lease: the import is its
		 * receipt, and it keeps only what the wall clock says is left
		 * of it (never past its own exp), measured by the boot clock
		 * from here on.
		 */
		age = clk.wall > items[i].iat ? clk.wall - items[i].iat : 0;
		store_lease_anchor(&clk, items[i].iat, items[i].rat,
		    items[i].exp, age, &t);
		if (store_lease_put(s, items[i].sha, items[i].tok,
		    strlen(items[i].tok), &t) != 0) {
			store_close(s);
			return 1;
		}
		stored++;
	}
	store_close(s);
	fprintf(stderr, "imported %zu leases, skipped %zu expired\n", stored,
	    expired);
	return 0;
}

/* The --trusted-key files into keys: their number, or -1 after saying why. */
static int
import_keys(int argc, char **argv, EVP_PKEY **keys)
{
	const char	*path;
	int		 n;

	for (n = 0; (path = cli_opt_nth(argc, argv, "--trusted-key", n)) !=
	    NULL; n++) {
		if (n == CACHE_MAX_TRUST) {
			cli_usage_error("more than %d --trusted-key",
			    CACHE_MAX_TRUST);
			break;
		}
		if ((keys[n] = token_load_public(path)) == NULL) {
			fprintf(stderr, "licproxy: %s: not an Ed25519 public "
			    "key\n", path);
			break;
		}
	}
	if (path == NULL)
		return n;
	while (n > 0)
		EVP_PKEY_free(keys[--n]);
	return -1;
}

static int
cache_import(int argc, char **argv)
{
	const char		*dir, *path = cli_arg(argc, argv, 0);
	EVP_PKEY		*keys[CACHE_MAX_TRUST];
	struct import_item	*items = NULL;
	FILE			*f;
	size_t			 n = 0;
	int			 nkeys, rv = 2;

	if ((dir = cli_store_dir(argc, argv)) == NULL)
		return 2;
	if (cli_opt(argc, argv, "--trusted-key") == NULL)
		return cli_usage_error("--trusted-key PUB is required (the "
		    ".pub of the authority that signed the leases)");
	if (path == NULL)
		return cli_usage_error("cache import: give the FILE to import");
	if ((nkeys = import_keys(argc, argv, keys)) == -1)
		return 2;
	if ((f = fopen(path, "r")) == NULL) {
		fprintf(stderr, "licproxy: %s: %s\n", path, strerror(errno));
		goto done;
	}
	if (import_read(f, path, keys, nkeys, &items, &n) == 0)
		rv = import_store(dir, items, n);
	fclose(f);
done:
	while (nkeys > 0)
		EVP_PKEY_free(keys[--nkeys]);
	free(items);
	return rv;
}

int
cli_cache(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "export") == 0)
		return cache_export(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "import") == 0)
		return cache_import(argc, argv);
	return cli_usage_error("cache: export or import");
}

/*
 * cli.c - what every subcommand of licproxy(8) shares: the table of
 * commands with their usage and options, option checking, --help, and the
 * "licproxy: " prefix of every message a command prints.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "store.h"

/*
 * One row per command. opts: the options it takes, "=" after those that
 * take a value; a word without "--" is not an option. Anything else that
 * starts with "-" is refused before the command runs, so no command can
 * mistake an option for a URL or a file.
 */
static const struct cli_cmd cli_cmds[] = {
	{ "serve", NULL, "[CONFIG] [--host H] [--port N] [--status-port N]\n"
	    "        [--license-key K] [--upstream URL]... [--store DIR] "
	    "[--workers N]", NULL },
	{ "check-config", NULL, "[CONFIG]", NULL },
	{ "keygen", cli_keygen, "PATH", "" },
	{ "keys create", cli_keys, "--store DIR --name NAME --products a,b\n"
	    "        [--role member|proxy] [--expires YYYY-MM-DD|never] "
	    "[--seats N]",
	    "--store= --name= --products= --role= --expires= --seats=" },
	{ "keys list", cli_keys, "--store DIR [--json]", "--store= --json" },
	{ "keys revoke", cli_keys, "--store DIR KEY_ID", "--store=" },
	{ "seats list", cli_seats, "--store DIR [--json]", "--store= --json" },
	{ "seats release", cli_seats, "--store DIR KEY_ID (--instance ID | "
	    "--holder KEY_ID)", "--store= --instance= --holder=" },
	{ "usage", cli_usage, "--store DIR [--json]", "--store= --json" },
	{ "cache export", cli_cache, "--store DIR > FILE", "--store=" },
	{ "cache import", cli_cache, "--store DIR --trusted-key PUB... FILE",
	    "--store= --trusted-key=" },
	{ "check", cli_check, "URL... --key K [--ca FILE]\n"
	    "        [--client-cert FILE --client-key FILE]",
	    "--key= --ca= --client-cert= --client-key=" },
	{ "status", cli_status, "[URL]", "" },
	{ "version", NULL, "", "" },
	{ "help", NULL, "[COMMAND]", "" },
	{ NULL }
};

static const struct cli_cmd	*cli_cur;	/* the command running */

void
cli_print_usage(FILE *f, const struct cli_cmd *only)
{
	const struct cli_cmd	*c;
	const char		*lead = "usage:";

	for (c = cli_cmds; c->name != NULL; c++) {
		if (only != NULL && c != only)
			continue;
		fprintf(f, "%-6s licproxy %s%s%s\n", lead, c->name,
		    *c->usage ? " " : "", c->usage);
		lead = "";
	}
	if (only == NULL)
		fprintf(f, "Options of one command: licproxy COMMAND --help. "
		    "See licproxy(8).\n");
}

/* The command named by argv[0] (and argv[1] for the two-word ones). */
const struct cli_cmd *
cli_find(int argc, char **argv)
{
	const struct cli_cmd	*c;
	size_t			 n;

	for (c = cli_cmds; c->name != NULL; c++) {
		n = strcspn(c->name, " ");
		if (strncmp(c->name, argv[0], n) != 0 || argv[0][n] != '\0')
			continue;
		if (c->name[n] == '\0')
			return c;
		if (argc > 1 && strcmp(c->name + n + 1, argv[1]) == 0)
			return c;
	}
	return NULL;
}

/* The first command sharing argv[0], for "licproxy keys" alone. */
const struct cli_cmd *
cli_find_group(const char *word)
{
	const struct cli_cmd	*c;
	size_t			 n = strlen(word);

	for (c = cli_cmds; c->name != NULL; c++)
		if (strncmp(c->name, word, n) == 0 && c->name[n] == ' ')
			return c;
	return NULL;
}

void
cli_begin(const struct cli_cmd *c)
{
	cli_cur = c;
}

int
cli_usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "licproxy: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	if (cli_cur != NULL)
		cli_print_usage(stderr, cli_cur);
	return 2;
}

/* 1 if name is in the option list, 2 if it takes a value, else 0. */
static int
cli_opt_kind(const char *opts, const char *name)
{
	size_t		 n = strlen(name);
	const char	*p = opts;

	while ((p = strstr(p, name)) != NULL) {
		if ((p == opts || p[-1] == ' ') &&
		    (p[n] == ' ' || p[n] == '\0'))
			return 1;
		if ((p == opts || p[-1] == ' ') && p[n] == '=')
			return 2;
		p += n;
	}
	return 0;
}

/*
 * 0 when every option of argv (from first on) is one the command takes
 * and each value-taking option has its value; else 2 after saying which.
 */
int
cli_check_opts(const struct cli_cmd *c, int argc, char **argv, int first)
{
	int i, kind;

	for (i = first; i < argc; i++) {
		if (argv[i][0] != '-' || argv[i][1] == '\0')
			continue;
		if ((kind = cli_opt_kind(c->opts, argv[i])) == 0)
			return cli_usage_error("unknown option \"%s\" for "
			    "\"%s\"", argv[i], c->name);
		if (kind == 2 && ++i == argc)
			return cli_usage_error("option \"%s\" needs a value",
			    argv[i - 1]);
	}
	return 0;
}

/* 1 if argv asks for help; the value of a value option never counts. */
int
cli_wants_help(const struct cli_cmd *c, int argc, char **argv, int first)
{
	int i;

	for (i = first; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return 1;
		if (c->opts != NULL && argv[i][0] == '-' &&
		    cli_opt_kind(c->opts, argv[i]) == 2)
			i++;
	}
	return 0;
}

struct store *
cli_store_open(const char *dir, int flags)
{
	struct store	*s;
	char		 err[512];

	/* max_size 0: keep the size the running daemon gave the map. */
	if ((s = store_open(dir, 0, flags, err, sizeof(err))) == NULL)
		fprintf(stderr, "licproxy: %s\n", err);
	return s;
}

const char *
cli_opt(int argc, char **argv, const char *name)
{
	int i;

	for (i = 0; i < argc - 1; i++)
		if (strcmp(argv[i], name) == 0)
			return argv[i + 1];
	return NULL;
}

int
cli_flag(int argc, char **argv, const char *name)
{
	int i;

	for (i = 0; i < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return 1;
	return 0;
}

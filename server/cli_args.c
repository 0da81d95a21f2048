/*
 * cli_args.c - what every running subcommand of licproxy(8) shares: its
 * options, checked against its row of the command table, --help, usage
 * errors with the "licproxy: " prefix, and opening the store.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "store.h"

static const struct cli_cmd	*cli_cur;	/* the command running */

/* One usage line ("usage: licproxy keys list --store DIR [--json]"). */
void
cli_print_one(FILE *f, const char *lead, const struct cli_cmd *c)
{
	fprintf(f, "%-6s licproxy %s%s%s\n", lead, c->name,
	    *c->usage ? " " : "", c->usage);
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
		cli_print_one(stderr, "usage:", cli_cur);
	return 2;
}

/* What a word of argv is to the running command. */
enum cli_kind {
	CLI_UNKNOWN = -1,	/* an option the command does not take */
	CLI_OPERAND,		/* no option: a PATH, KEY_ID or URL */
	CLI_FLAG,		/* "--json" */
	CLI_VALUE,		/* "--store DIR": the next word is its value */
	CLI_VALUES		/* the same, and it may be given again */
};

/* What name is in the option list opts ("--store= --json"). */
static enum cli_kind
cli_opt_kind(const char *opts, const char *name)
{
	size_t		 n = strlen(name);
	const char	*p = opts;

	for (; (p = strstr(p, name)) != NULL; p += n) {
		if (p != opts && p[-1] != ' ')
			continue;
		if (p[n] == ' ' || p[n] == '\0')
			return CLI_FLAG;
		if (strncmp(p + n, "=...", 4) == 0)
			return CLI_VALUES;
		if (p[n] == '=')
			return CLI_VALUE;
	}
	return CLI_UNKNOWN;
}

/* "-" alone is a word like a file name (standard input), not an option. */
static enum cli_kind
cli_kind(const struct cli_cmd *c, const char *word)
{
	if (word[0] != '-' || word[1] == '\0')
		return CLI_OPERAND;
	return cli_opt_kind(c->opts, word);
}

/* The first word of argv after the command's name ("keys list"). */
static int
cli_first(const struct cli_cmd *c)
{
	return strchr(c->name, ' ') != NULL ? 2 : 1;
}

/* 1 if the option argv[i] was given before it (a value never counts). */
static int
cli_seen(const struct cli_cmd *c, char **argv, int first, int i)
{
	int j;

	for (j = first; j < i; j++) {
		if (strcmp(argv[j], argv[i]) == 0)
			return 1;
		if (cli_kind(c, argv[j]) >= CLI_VALUE)
			j++;
	}
	return 0;
}

/*
 * 0 when every option of argv (from first on) is one the command takes,
 * each value-taking option has its value and is given once (which of two
 * --name would be a guess), and there are no more other words than the
 * command takes; else 2 after saying which word is wrong.
 */
int
cli_check_opts(const struct cli_cmd *c, int argc, char **argv, int first)
{
	enum cli_kind	kind;
	int		i, nargs = 0;

	for (i = first; i < argc; i++) {
		kind = cli_kind(c, argv[i]);
		if (kind == CLI_UNKNOWN)
			return cli_usage_error("unknown option \"%s\" for "
			    "\"%s\"", argv[i], c->name);
		if (kind == CLI_OPERAND) {
			if (c->maxargs != CLI_ARGS_ANY && ++nargs > c->maxargs)
				return cli_usage_error("unexpected argument "
				    "\"%s\"", argv[i]);
			continue;
		}
		if (kind == CLI_VALUE && cli_seen(c, argv, first, i))
			return cli_usage_error("option \"%s\" given twice",
			    argv[i]);
		if (kind >= CLI_VALUE && ++i == argc)
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
		if (c->opts != NULL && cli_kind(c, argv[i]) >= CLI_VALUE)
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
cli_store_dir(int argc, char **argv)
{
	const char *dir = cli_opt(argc, argv, "--store");

	if (dir == NULL)
		cli_usage_error("--store DIR is required");
	return dir;
}

int
cli_store(int argc, char **argv, int flags, struct store **s)
{
	const char *dir;

	if ((dir = cli_store_dir(argc, argv)) == NULL)
		return 2;
	if ((*s = cli_store_open(dir, flags)) == NULL)
		return 1;
	return 0;
}

/*
 * These walk argv as cli_check_opts() did, so the value of one option is
 * never taken for another option or for a file name.
 */
const char *
cli_opt_nth(int argc, char **argv, const char *name, int n)
{
	int i;

	for (i = cli_first(cli_cur); i < argc - 1; i++) {
		if (cli_kind(cli_cur, argv[i]) < CLI_VALUE)
			continue;
		if (strcmp(argv[i], name) == 0 && n-- == 0)
			return argv[i + 1];
		i++;
	}
	return NULL;
}

const char *
cli_opt(int argc, char **argv, const char *name)
{
	return cli_opt_nth(argc, argv, name, 0);
}

int
cli_flag(int argc, char **argv, const char *name)
{
	int i;

	for (i = cli_first(cli_cur); i < argc; i++) {
		if (cli_kind(cli_cur, argv[i]) == CLI_FLAG &&
		    strcmp(argv[i], name) == 0)
			return 1;
		if (cli_kind(cli_cur, argv[i]) >= CLI_VALUE)
			i++;
	}
	return 0;
}

const char *
cli_arg(int argc, char **argv, int n)
{
	int i;

	for (i = cli_first(cli_cur); i < argc; i++) {
		if (cli_kind(cli_cur, argv[i]) >= CLI_VALUE)
			i++;
		else if (cli_kind(cli_cur, argv[i]) == CLI_OPERAND && n-- == 0)
			return argv[i];
	}
	return NULL;
}

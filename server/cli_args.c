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

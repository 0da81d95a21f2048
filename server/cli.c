/*
 * cli.c - the table of licproxy(8)'s commands, with their usage and
 * options, and finding a command in it. What a running command uses
 * (options, usage errors, the store) is in cli_args.c, which needs no
 * table, so the commands never call back into this file.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

/*
 * One row per command. opts: the options it takes, "=" after those that
 * take a value, "=..." after those that may be given more than once; a
 * word without "--" is not an option. Anything else that starts with "-"
 * is refused before the command runs, so no command can mistake an option
 * for a URL or a file. maxargs: how many other words (PATH, KEY_ID, URL)
 * it takes; one more is refused, never ignored.
 */
static const struct cli_cmd cli_cmds[] = {
	{ "serve", NULL, "[CONFIG] [--host H] [--port N] [--status-port N]\n"
	    "        [--license-key K] [--upstream URL]... [--store DIR] "
	    "[--workers N]", NULL, 0 },
	{ "check-config", NULL, "[CONFIG]", NULL, 0 },
	{ "keygen", cli_keygen, "PATH", "", 1 },
	{ "keys create", cli_keys, "--store DIR --name NAME --products a,b\n"
	    "        [--role member|proxy] [--expires YYYY-MM-DD|never] "
	    "[--seats N]",
	    "--store= --name= --products= --role= --expires= --seats=", 0 },
	{ "keys list", cli_keys, "--store DIR [--json]", "--store= --json",
	    0 },
	{ "keys revoke", cli_keys, "--store DIR KEY_ID", "--store=", 1 },
	{ "seats list", cli_seats, "--store DIR [--json]", "--store= --json",
	    0 },
	{ "seats release", cli_seats, "--store DIR KEY_ID (--instance ID | "
	    "--holder KEY_ID [--instance ID])", "--store= --instance= --holder=",
	    1 },
	{ "usage", cli_usage, "--store DIR [--json]", "--store= --json", 0 },
	{ "cache export", cli_cache, "--store DIR > FILE", "--store=", 0 },
	{ "cache import", cli_cache, "--store DIR --trusted-key PUB... FILE",
	    "--store= --trusted-key=...", 1 },
	{ "check", cli_check, "URL... --key K [--ca FILE]\n"
	    "        [--client-cert FILE --client-key FILE]",
	    "--key= --ca= --client-cert= --client-key=", CLI_ARGS_ANY },
	{ "status", cli_status, "[URL]", "", 1 },
	{ "version", NULL, "", "", 0 },
	{ "help", NULL, "[COMMAND]", "", 2 },
	{ NULL }
};

void
cli_print_usage(FILE *f, const struct cli_cmd *only)
{
	const struct cli_cmd	*c;
	const char		*lead = "usage:";

	for (c = cli_cmds; c->name != NULL; c++) {
		if (only != NULL && c != only)
			continue;
		cli_print_one(f, lead, c);
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

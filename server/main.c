/*
 * main.c - licproxy(8): dispatch the subcommand. `serve` hands over to the
 * master; the rest are short-lived tools in cli_*.c.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "conf.h"
#include "log.h"
#include "master.h"
#include "proc.h"
#include "store.h"
#include "token.h"
#include "upgrade.h"

#define DEFAULT_CONF	"/etc/licproxy/licproxy.yaml"

static int verbose;

/* A decimal in [min, max]: ports, --workers. */
static int
parse_num(const char *s, int min, int max, int *out)
{
	char	*end;
	long	 v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -1;
	*out = (int)v;
	return 0;
}

/* serve's options; 0, or 2 after printing what is wrong. */
static int
serve_args(int argc, char **argv, const char **cfpath,
    struct conf_overrides *ov)
{
	static const struct option opts[] = {
		{ "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'p' },
		{ "status-port", required_argument, NULL, 's' },
		{ "license-key", required_argument, NULL, 'k' },
		{ "upstream", required_argument, NULL, 'u' },
		{ "store", required_argument, NULL, 'd' },
		{ "workers", required_argument, NULL, 'w' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;

	optind = 1;
	opterr = 0;	/* our message, then the usage */
	while ((ch = getopt_long(argc, argv, ":v", opts, NULL)) != -1) {
		switch (ch) {
		case 'H': ov->host = optarg; break;
		case 'k': ov->license_key = optarg; break;
		case 'd': ov->store = optarg; break;
		case 'v': verbose++; break;
		case 'p':
		case 's':
			if (parse_num(optarg, 1, 65535, ch == 'p' ? &ov->port :
			    &ov->status_port) == -1)
				return cli_usage_error("bad port \"%s\"", optarg);
			break;
		case 'w':
			if (parse_num(optarg, 1, CONF_MAX_WORKERS,
			    &ov->workers) == -1)
				return cli_usage_error("bad --workers \"%s\"",
				    optarg);
			break;
		case 'u':
			if (ov->n_upstream == CONF_MAX_URLS)
				return cli_usage_error("too many --upstream");
			ov->upstream[ov->n_upstream++] = optarg;
			break;
		case ':':
			return cli_usage_error("option \"%s\" needs a value",
			    argv[optind - 1]);
		default:
			return cli_usage_error("unknown option \"%s\"",
			    argv[optind - 1]);
		}
	}
	if (optind < argc)
		*cfpath = argv[optind++];
	if (optind < argc)
		return cli_usage_error("unexpected argument \"%s\"",
		    argv[optind]);
	return 0;
}

static int
cmd_serve(int argc, char **argv, int check_only)
{
	struct conf_overrides	 ov;
	struct conf		*cf;
	const char		*cfpath = DEFAULT_CONF;
	char			 err[8192];

	memset(&ov, 0, sizeof(ov));
	if (serve_args(argc, argv, &cfpath, &ov) != 0)
		return 2;
	/* check-config is a CLI command: what the key loaders log too. */
	if (check_only)
		log_init_cli();
	if ((cf = conf_load(cfpath, &ov, check_only ? CONF_FILES | CONF_TLS :
	    CONF_FILES, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		if (!check_only)
			log_errx("configuration errors: exiting");
		return 2;
	}
	/* conf_load has also loaded the certificate and the keys. */
	if (check_only) {
		printf("%s: configuration OK (%s mode)\n", cfpath,
		    cf->mode == CONF_AUTHORITY ? "authority" : "proxy");
		conf_free(cf);
		return 0;
	}
	log_init(verbose ? LOG_DEBUG : cf->log.level, cf->log.json, "master");
	/* conf_load tried it; this is a file gone since, or a full disk. */
	if (cf->log.file != NULL && log_reopen(cf->log.file) == -1) {
		log_err("log.file: cannot open \"%s\"", cf->log.file);
		/* A reload keeps the log too; an upgrade must not stop here. */
		if (!upgrade_active()) {
			log_errx("configuration errors: exiting");
			conf_free(cf);
			return 2;
		}
	}
	return master_main(cf, cfpath, &ov);
}

/* licproxy help [COMMAND], licproxy --help */
static int
cmd_help(int argc, char **argv)
{
	const struct cli_cmd *c;

	if (argc < 2) {
		cli_print_usage(stdout, NULL);
		return 0;
	}
	if ((c = cli_find(argc - 1, argv + 1)) == NULL &&
	    (c = cli_find_group(argv[1])) == NULL) {
		fprintf(stderr, "licproxy: unknown command \"%s\"\n", argv[1]);
		cli_print_usage(stderr, NULL);
		return 2;
	}
	if (strchr(c->name, ' ') != NULL && argc < 3) {
		/* "help keys": every keys command */
		for (; c->name != NULL && strncmp(c->name, argv[1],
		    strlen(argv[1])) == 0; c++)
			cli_print_usage(stdout, c);
		return 0;
	}
	cli_print_usage(stdout, c);
	return 0;
}

static int
cmd_unknown(int argc, char **argv)
{
	if (cli_find_group(argv[0]) == NULL)
		fprintf(stderr, "licproxy: unknown command \"%s\"\n", argv[0]);
	else if (argc < 2)
		fprintf(stderr, "licproxy: \"%s\" needs a command\n", argv[0]);
	else
		fprintf(stderr, "licproxy: unknown command \"%s %s\"\n",
		    argv[0], argv[1]);
	cli_print_usage(stderr, NULL);
	return 2;
}

static int
is_any(const char *s, const char *a, const char *b, const char *c)
{
	return strcmp(s, a) == 0 || strcmp(s, b) == 0 || strcmp(s, c) == 0;
}

int
main(int argc, char **argv)
{
	const struct cli_cmd	*c;
	int			 first, rv;

	upgrade_init(argv);
	while (argc > 1 && argv[1][0] == '-' && argv[1][1] == 'v' &&
	    strspn(argv[1] + 1, "v") == strlen(argv[1] + 1)) {
		verbose += (int)strspn(argv[1] + 1, "v");
		argc--, argv++;
	}
	if (argc < 2) {
		fprintf(stderr, "licproxy: no command given\n");
		cli_print_usage(stderr, NULL);
		return 2;
	}
	argc--, argv++;
	if (strcmp(argv[0], "--version") == 0 || strcmp(argv[0], "-V") == 0)
		argv[0] = "version";
	if (is_any(argv[0], "help", "--help", "-h"))
		return cmd_help(argc, argv);
	if ((c = cli_find(argc, argv)) == NULL)
		return cmd_unknown(argc, argv);
	cli_begin(c);
	first = strchr(c->name, ' ') != NULL ? 2 : 1;
	if (cli_wants_help(c, argc, argv, first)) {
		cli_print_usage(stdout, c);
		return 0;
	}
	if (strcmp(c->name, "serve") == 0) {
		/* An image that a USR2 upgrade started and that cannot serve. */
		if ((rv = cmd_serve(argc, argv, 0)) != 0)
			upgrade_fallback();
		return rv;
	}
	if (strcmp(c->name, "check-config") == 0)
		return cmd_serve(argc, argv, 1);
	if (cli_check_opts(c, argc, argv, first) != 0)
		return 2;
	if (c->fn == NULL) {	/* version */
		if (argc > 1)
			return cli_usage_error("unexpected argument \"%s\"",
			    argv[1]);
		printf("licproxy %s\n", LICPROXY_VERSION);
		return 0;
	}
	log_init_cli();
	return c->fn(argc, argv);
}

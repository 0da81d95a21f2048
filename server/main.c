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
#include "tls.h"
#include "token.h"
#include "upgrade.h"

#define DEFAULT_CONF	"/etc/licproxy/licproxy.yaml"

static int verbose;

static void
usage(FILE *f)
{
	fprintf(f,
"usage: licproxy [-v...] serve [CONFIG] [--host H] [--port N] [--status-port N]\n"
"                    [--license-key K] [--upstream URL]... [--store DIR] [--workers N]\n"
"       licproxy check-config [CONFIG]\n"
"       licproxy keygen PATH\n"
"       licproxy keys create --store DIR --name NAME --products a,b\n"
"                    [--role member|proxy] [--expires YYYY-MM-DD]\n"
"       licproxy keys list --store DIR [--json]\n"
"       licproxy keys revoke --store DIR KEY_ID\n"
"       licproxy usage --store DIR [--json]\n"
"       licproxy cache export --store DIR > FILE\n"
"       licproxy cache import --store DIR --trusted-key PUB... FILE\n"
"       licproxy check URL... --key K [--ca FILE]\n"
"       licproxy status [URL]\n"
"       licproxy version\n");
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
	return 2;
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

static int
parse_port(const char *s, int *port)
{
	char	*end;
	long	 v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1 || v > 65535)
		return -1;
	*port = (int)v;
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
	while ((ch = getopt_long(argc, argv, "v", opts, NULL)) != -1) {
		switch (ch) {
		case 'H': ov->host = optarg; break;
		case 'k': ov->license_key = optarg; break;
		case 'd': ov->store = optarg; break;
		case 'v': verbose++; break;
		case 'p':
		case 's':
			if (parse_port(optarg, ch == 'p' ? &ov->port :
			    &ov->status_port) == -1)
				return cli_usage_error("bad port \"%s\"", optarg);
			break;
		case 'w':
			if (parse_port(optarg, &ov->workers) == -1 ||
			    ov->workers > CONF_MAX_WORKERS)
				return cli_usage_error("bad --workers \"%s\"",
				    optarg);
			break;
		case 'u':
			if (ov->n_upstream == CONF_MAX_URLS)
				return cli_usage_error("too many --upstream");
			ov->upstream[ov->n_upstream++] = optarg;
			break;
		default:
			return 2;
		}
	}
	if (optind < argc)
		*cfpath = argv[optind++];
	if (optind < argc)
		return cli_usage_error("unexpected argument \"%s\"",
		    argv[optind]);
	return 0;
}

/*
 * The key files must hold Ed25519 keys: found here, a bad one is exit 2 at
 * start instead of a child that cannot start. Loaded and freed at once; the
 * master keeps no key.
 */
static int
serve_check_keys(const struct conf *cf, char *err, size_t errlen)
{
	EVP_PKEY	*k;
	int		 i;

	if (cf->mode == CONF_AUTHORITY) {
		if ((k = token_load_private(cf->authority.signing_key)) == NULL) {
			snprintf(err, errlen, "authority.signing_key: %s: not an "
			    "Ed25519 private key (PEM)", cf->authority.signing_key);
			return -1;
		}
		EVP_PKEY_free(k);
		return 0;
	}
	for (i = 0; i < cf->license.n_trusted_keys; i++) {
		if ((k = token_load_public(cf->license.trusted_keys[i])) == NULL) {
			snprintf(err, errlen, "license.trusted_keys: %s: not an "
			    "Ed25519 public key (PEM)", cf->license.trusted_keys[i]);
			return -1;
		}
		EVP_PKEY_free(k);
	}
	return 0;
}

static int
cmd_serve(int argc, char **argv, int check_only)
{
	struct conf_overrides	 ov;
	struct conf		*cf;
	const char		*cfpath = DEFAULT_CONF;
	char			 err[8192];
	SSL_CTX			*tls;

	memset(&ov, 0, sizeof(ov));
	if (serve_args(argc, argv, &cfpath, &ov) != 0)
		return 2;
	if ((cf = conf_load(cfpath, &ov, 1, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (proc_user_check(cf->server.user, err, sizeof(err)) == -1 ||
	    serve_check_keys(cf, err, sizeof(err)) == -1) {
		fprintf(stderr, "%s: %s\n", cfpath, err);
		conf_free(cf);
		return 2;
	}
	if (check_only) {
		if ((tls = tls_server_ctx_new(cf, err, sizeof(err))) == NULL) {
			fprintf(stderr, "%s\n", err);
			conf_free(cf);
			return 2;
		}
		SSL_CTX_free(tls);
		printf("%s: configuration OK (%s mode)\n", cfpath,
		    cf->mode == CONF_AUTHORITY ? "authority" : "proxy");
		conf_free(cf);
		return 0;
	}
	log_init(verbose ? LOG_DEBUG : cf->log.level, cf->log.json, "master");
	if (cf->log.file != NULL && log_reopen(cf->log.file) == -1) {
		fprintf(stderr, "%s: cannot open log file: %s\n", cf->log.file,
		    strerror(errno));
		/* A reload keeps the log too; an upgrade must not stop here. */
		if (!upgrade_active())
			return 2;
	}
	return master_main(cf, cfpath, &ov);
}

int
main(int argc, char **argv)
{
	const char	*cmd;
	int		 rv;

	upgrade_init(argv);
	while (argc > 1 && argv[1][0] == '-' && argv[1][1] == 'v') {
		verbose += (int)strspn(argv[1] + 1, "v");
		argc--, argv++;
	}
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	argc--, argv++;
	if (strcmp(cmd, "serve") == 0) {
		/* An image that a USR2 upgrade started and that cannot serve. */
		if ((rv = cmd_serve(argc, argv, 0)) != 0)
			upgrade_fallback();
		return rv;
	}
	if (strcmp(cmd, "check-config") == 0)
		return cmd_serve(argc, argv, 1);
	if (strcmp(cmd, "keygen") == 0)
		return cli_keygen(argc, argv);
	if (strcmp(cmd, "keys") == 0)
		return cli_keys(argc, argv);
	if (strcmp(cmd, "usage") == 0)
		return cli_usage(argc, argv);
	if (strcmp(cmd, "cache") == 0)
		return cli_cache(argc, argv);
	if (strcmp(cmd, "check") == 0)
		return cli_check(argc, argv);
	if (strcmp(cmd, "status") == 0)
		return cli_status(argc, argv);
	if (strcmp(cmd, "version") == 0) {
		printf("licproxy %s\n", LICPROXY_VERSION);
		return 0;
	}
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "-h") == 0 ||
	    strcmp(cmd, "--help") == 0) {
		usage(stdout);
		return 0;
	}
	usage(stderr);
	return 2;
}

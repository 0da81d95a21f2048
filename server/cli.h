/* cli.h - the subcommands of licproxy(8) other than serve. */
#ifndef CLI_H
#define CLI_H

#include <stdio.h>

/* Each returns the process exit code (0 ok, 1 runtime, 2 usage). */
int	cli_keygen(int argc, char **argv);
int	cli_keys(int argc, char **argv);
int	cli_usage(int argc, char **argv);
int	cli_seats(int argc, char **argv);
int	cli_cache(int argc, char **argv);
int	cli_check(int argc, char **argv);
int	cli_status(int argc, char **argv);

struct store;
typedef struct evp_pkey_st EVP_PKEY;

/*
 * Read and verify a cache import file as `cache import` does, storing
 * nothing: 0 and *n leases when every line verifies against keys, else -1.
 */
int	cli_cache_read(FILE *, EVP_PKEY **keys, int nkeys, size_t *n);

/* One command: its name ("keys create"), entry, usage and options. */
struct cli_cmd {
	const char	*name;
	int		(*fn)(int argc, char **argv);
	const char	*usage;
	const char	*opts;	/* "--store= --json"; NULL: parsed by getopt */
	int		 maxargs;	/* words that are no option, at most */
};

#define CLI_ARGS_ANY	(-1)	/* maxargs of "check URL...": no limit */

const struct cli_cmd *cli_find(int argc, char **argv);
const struct cli_cmd *cli_find_group(const char *word);
/* The usage of one command, or of all (only == NULL). */
void	cli_print_usage(FILE *, const struct cli_cmd *only);
/* One command's usage line, after lead ("usage:" or ""). */
void	cli_print_one(FILE *, const char *lead, const struct cli_cmd *);
/* Names the running command, so usage errors print its usage. */
void	cli_begin(const struct cli_cmd *);
int	cli_check_opts(const struct cli_cmd *, int argc, char **argv,
	    int first);
int	cli_wants_help(const struct cli_cmd *, int argc, char **argv,
	    int first);

/* Open a store (0 or STORE_RDONLY), the error on stderr. */
struct store *cli_store_open(const char *dir, int flags);
/* The DIR of --store, or NULL after the usage error. */
const char *cli_store_dir(int argc, char **argv);
/*
 * Open the store of --store into *s: 0, or the exit code after saying
 * why (2 without --store, 1 for a store that will not open).
 */
int	cli_store(int argc, char **argv, int flags, struct store **s);

/*
 * The running command's argv, read as cli_check_opts() checked it: the
 * value of an option (the n-th of a repeatable one), a flag, and the n-th
 * word that is neither an option nor an option's value (a PATH, a URL).
 */
const char *cli_opt(int argc, char **argv, const char *name);
const char *cli_opt_nth(int argc, char **argv, const char *name, int n);
int	cli_flag(int argc, char **argv, const char *name);
const char *cli_arg(int argc, char **argv, int n);
/* "licproxy: <message>" and the running command's usage; returns 2. */
int	cli_usage_error(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2)));

#endif

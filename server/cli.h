/* cli.h - the subcommands of licproxy(8) other than serve. */
#ifndef CLI_H
#define CLI_H

/* Each returns the process exit code (0 ok, 1 runtime, 2 usage). */
int	cli_keygen(int argc, char **argv);
int	cli_keys(int argc, char **argv);
int	cli_usage(int argc, char **argv);
int	cli_cache(int argc, char **argv);
int	cli_check(int argc, char **argv);
int	cli_status(int argc, char **argv);

struct store;

/* Shared: open a store (0 or STORE_RDONLY), the error on stderr. */
struct store *cli_store_open(const char *dir, int flags);

/* Shared: "--name value" parsing helpers. */
const char *cli_opt(int argc, char **argv, const char *name);
int	cli_flag(int argc, char **argv, const char *name);
int	cli_usage_error(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2)));

#endif

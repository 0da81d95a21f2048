/* log.h - role-tagged logging to stderr (or log.file), text or json. */
#ifndef LOG_H
#define LOG_H

#include <stdarg.h>

enum log_level { LOG_ERR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void	log_init(int level, int json, const char *role);
void	log_init_cli(void);
void	log_setrole(const char *role);
int	log_reopen(const char *path);	/* USR1: reopen log.file; NULL = stderr */
/* log_reopen in two steps, for a reload that must not fail half-way. */
int	log_open(const char *path);	/* the descriptor, or -1 */
int	log_use(int fd);		/* fd becomes stderr; closes fd */

/*
 * A child before it is ready: also copy each warning and error to fd, as
 * one line LOG_TEE_PREFIX "message" (the message cut to LOG_TEE_MAX bytes),
 * so the master can give a child's last error when it keeps dying. -1 stops.
 */
#define LOG_TEE_MAX	1024
#define LOG_TEE_PREFIX	"E "
void	log_tee(int fd);

void	log_err(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_errx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void	fatal(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));
void	fatalx(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif

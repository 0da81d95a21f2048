/*
 * log.c - one line per event, tagged with the process role, to stderr or
 * log.file. Keys never reach this file: callers log key ids only.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static int		 log_level = LOG_INFO;
static int		 log_json;
static const char	*log_role = "master";
static int		 log_cli;	/* a CLI command: "licproxy: msg" */
static int		 log_tee_fd = -1;	/* see log_tee() */

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void
log_init(int level, int json, const char *role)
{
	log_level = level;
	log_json = json;
	if (role != NULL)
		log_role = role;
}

/* CLI commands speak to a person at a terminal: no time, pid or role. */
void
log_init_cli(void)
{
	log_level = LOG_WARN;
	log_cli = 1;
}

void
log_setrole(const char *role)
{
	log_role = role;
}

int
log_open(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int
log_use(int fd)
{
	int rv;

	rv = dup2(fd, STDERR_FILENO) == -1 ? -1 : 0;
	close(fd);
	return rv;
}

int
log_reopen(const char *path)
{
	int fd;

	if (path == NULL || *path == '\0')
		return 0;
	if ((fd = log_open(path)) == -1)
		return -1;
	return log_use(fd);
}

void
log_tee(int fd)
{
	log_tee_fd = fd;
}

/*
 * One short line per warning or error to the tee fd (non-blocking: a full
 * pipe loses a line rather than stalling a child that is starting up).
 */
static void
log_tee_write(const char *msg)
{
	char	line[LOG_TEE_MAX + 3];
	size_t	i, n = strlen(LOG_TEE_PREFIX);

	memcpy(line, LOG_TEE_PREFIX, n);
	for (i = 0; msg[i] != '\0' && n < LOG_TEE_MAX + 1; i++)
		line[n++] = msg[i] == '\n' ? ' ' : msg[i];
	line[n++] = '\n';
	if (write(log_tee_fd, line, n) == -1)
		return;		/* the master learns less; nothing else to do */
}

/* JSON-escape s into out (always NUL-terminated). */
static void
log_escape(const char *s, char *out, size_t outsz)
{
	size_t o = 0;

	for (; *s != '\0' && o + 7 < outsz; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = c;
		} else if (c < 0x20) {
			o += snprintf(out + o, outsz - o, "\\u%04x", c);
		} else
			out[o++] = c;
	}
	out[o] = '\0';
}

static void
log_emit(int level, const char *msg)
{
	char		 ts[32], esc[2200];
	struct timespec	 now;
	struct tm	 tm;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	if (log_cli) {
		fprintf(stderr, "licproxy: %s\n", msg);
		return;
	}
	if (log_json) {
		log_escape(msg, esc, sizeof(esc));
		fprintf(stderr, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\","
		    "\"role\":\"%s\",\"pid\":%d,\"msg\":\"%s\"}\n", ts,
		    now.tv_nsec / 1000000, level_names[level], log_role,
		    (int)getpid(), esc);
	} else
		fprintf(stderr, "%s.%03ldZ %s[%d] %s: %s\n", ts,
		    now.tv_nsec / 1000000, log_role, (int)getpid(),
		    level_names[level], msg);
	fflush(stderr);
}

static void
log_vlog(int level, int with_errno, const char *fmt, va_list ap)
{
	char	msg[2048];
	int	saved = errno, n;

	if (level > log_level)
		return;
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (with_errno && n >= 0 && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - n, ": %s", strerror(saved));
	log_emit(level, msg);
	if (log_tee_fd != -1 && level <= LOG_WARN)
		log_tee_write(msg);
	errno = saved;
}

/*
 * Every entry point is the same few lines: only the level, whether errno
 * is appended, and what follows (fatal and fatalx exit) differ.
 */
#define LOG_FN(name, level, with_errno, then)			\
void								\
name(const char *fmt, ...)					\
{								\
	va_list ap;						\
	va_start(ap, fmt);					\
	log_vlog(level, with_errno, fmt, ap);			\
	va_end(ap);						\
	then;							\
}

LOG_FN(log_err, LOG_ERR, 1, (void)0)
LOG_FN(log_errx, LOG_ERR, 0, (void)0)
LOG_FN(log_warn, LOG_WARN, 1, (void)0)
LOG_FN(log_warnx, LOG_WARN, 0, (void)0)
LOG_FN(log_info, LOG_INFO, 0, (void)0)
LOG_FN(log_debug, LOG_DEBUG, 0, (void)0)
LOG_FN(fatal, LOG_ERR, 1, exit(1))
LOG_FN(fatalx, LOG_ERR, 0, exit(1))

/*
 * proc.c - the process roles and what every child does to itself before its
 * event loop: take its name, handle its signals, give up root, report ready.
 * The seccomp filters are sandbox.c's; opening the store is server/child.c's.
 */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf.h"
#include "log.h"
#include "proc.h"

/*
 * The startup report pipe (proc_report_init): per-process state of this
 * module, written once after fork and cleared by proc_ready.
 */
static int	proc_report_fd = -1;

static const char *const proc_roles[PROC_NROLES][2] = {
	{ "worker", "licproxy-worker" },
	{ "uplink", "licproxy-uplink" },
	{ "issuer", "licproxy-issuer" },
};

const char *
proc_role_name(int role)
{
	return role >= 0 && role < PROC_NROLES ? proc_roles[role][0] : "?";
}

const char *
proc_role_comm(int role)
{
	return role >= 0 && role < PROC_NROLES ? proc_roles[role][1] :
	    "licproxy";
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int64_t
proc_clock_us(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t
proc_now_ms(void)
{
	return proc_clock_us(CLOCK_MONOTONIC) / 1000;
}

int64_t
proc_now_us(void)
{
	return proc_clock_us(CLOCK_MONOTONIC);
}

/* Unlike MONOTONIC it counts suspend: lease age is real elapsed time. */
int64_t
proc_boot_ms(void)
{
	return proc_clock_us(CLOCK_BOOTTIME) / 1000;
}

int
proc_boot_id(unsigned char id[PROC_BOOT_ID_LEN])
{
	FILE	*f;
	char	 line[64];
	size_t	 i, n = 0;
	int	 hi = -1, d;

	memset(id, 0, PROC_BOOT_ID_LEN);
	if ((f = fopen("/proc/sys/kernel/random/boot_id", "r")) == NULL)
		return -1;
	if (fgets(line, sizeof(line), f) == NULL)
		line[0] = '\0';
	fclose(f);
	/* A UUID: 32 hex digits, dashes ignored. */
	for (i = 0; line[i] != '\0' && n < PROC_BOOT_ID_LEN; i++) {
		if (line[i] == '-')
			continue;
		if ((d = hexval(line[i])) < 0)
			break;
		if (hi < 0)
			hi = d;
		else {
			id[n++] = (unsigned char)(hi << 4 | d);
			hi = -1;
		}
	}
	return n == PROC_BOOT_ID_LEN ? 0 : -1;
}

void
proc_name(const char *comm)
{
	prctl(PR_SET_NAME, comm, 0, 0, 0);
	log_setrole(comm + strlen("licproxy-"));
}

/* The master forwards USR1 after it has rotated its own log file. */
static void
proc_reopen_log(evutil_socket_t sig, short ev, void *arg)
{
	const char *path = arg;

	(void)sig, (void)ev;
	if (log_reopen(path) == -1)
		log_warn("reopen %s", path);
}

void
proc_signals(struct event_base *base, const char *logfile,
    void (*stop)(int, short, void *))
{
	static const int	 sigs[] = { SIGTERM, SIGUSR2, SIGUSR1 };
	struct event		*ev;
	size_t			 i;

	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, SIG_IGN);	/* the master turns ^C into TERM */
	signal(SIGHUP, SIG_IGN);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		ev = sigs[i] == SIGUSR1 ?
		    evsignal_new(base, SIGUSR1, proc_reopen_log,
		    (void *)(uintptr_t)logfile) :
		    evsignal_new(base, sigs[i], stop, NULL);
		if (ev == NULL || evsignal_add(ev, NULL) == -1)
			fatalx("signal events");
	}
}

int
proc_user_check(const char *user, char *err, size_t errlen)
{
	if (user == NULL || *user == '\0')
		return 0;
	errno = 0;
	if (getpwnam(user) == NULL) {
		snprintf(err, errlen, "server.user: no such user \"%s\"", user);
		return -1;
	}
	return 0;
}

int
proc_drop_privs(const char *user)
{
	struct passwd *pw;

	if (geteuid() != 0 || user == NULL || *user == '\0')
		return 0;
	if ((pw = getpwnam(user)) == NULL) {
		log_warnx("server.user: no such user \"%s\"", user);
		return -1;
	}
	if (pw->pw_uid == 0)
		return 0;	/* naming root changes nothing */
	if (setgroups(1, &pw->pw_gid) == -1 ||
	    setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) == -1 ||
	    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) == -1) {
		log_warn("cannot drop privileges to %s", user);
		return -1;
	}
	return 0;
}

void
proc_report_init(int fd)
{
	/* A master that re-executed itself has closed the other end. */
	signal(SIGPIPE, SIG_IGN);
	proc_report_fd = fd;
	log_tee(fd);
}

void
proc_ready(void)
{
	if (proc_report_fd == -1)
		return;
	log_tee(-1);
	if (write(proc_report_fd, PROC_READY "\n", strlen(PROC_READY) + 1) ==
	    -1)
		log_warn("ready report");
	close(proc_report_fd);
	proc_report_fd = -1;
}

int
proc_no_dump(void)
{
	return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/*
 * proc.c - what every child does to itself before its event loop: take its
 * name, give up root, and (workers) lock itself out of the network.
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
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <seccomp.h>

#include "conf.h"
#include "log.h"
#include "proc.h"
#include "store.h"

static int	proc_report_fd = -1;	/* see proc_report_init */
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

int64_t
proc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
proc_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Unlike MONOTONIC it counts suspend: lease age is real elapsed time. */
int64_t
proc_boot_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

/* No-op unless root; naming root (or nobody at all) changes nothing. */
static int
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

/*
 * LMDB would only say "Permission denied": name the user and what to give
 * it. access() checks the real ids, which are the dropped ones by now.
 */
static int
proc_store_access(const char *dir, char *err, size_t errlen)
{
	static const char *const files[] = { "", "/data.mdb", "/lock.mdb" };
	struct passwd	*pw = getpwuid(geteuid());
	const char	*u = pw != NULL ? pw->pw_name : "?";
	char		 path[PATH_MAX];
	size_t		 i;

	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s%s", dir, files[i]) >=
		    sizeof(path))
			return 0;	/* store_open says it is too long */
		if (access(path, R_OK | W_OK | (i == 0 ? X_OK : 0)) == 0 ||
		    (errno != EACCES && errno != EPERM && errno != EROFS))
			continue;	/* absent, or for store_open to tell */
		snprintf(err, errlen, "store %s: user %s cannot read and write"
		    " %s%s (%s). Give %s the directory and its files (chown -R"
		    " %s %s; chmod -R u+rwX %s) and search access to every"
		    " directory above it", dir, u, dir, files[i],
		    strerror(errno), u, u, dir, dir);
		return -1;
	}
	return 0;
}

/* What every child and the probe do: drop to server.user, then open. */
static struct store *
proc_store(const struct conf *cf, char *err, size_t errlen)
{
	if (proc_drop_privs(cf->server.user) == -1)
		exit(2);
	if (proc_store_access(cf->store.path, err, errlen) == -1)
		return NULL;
	return store_open(cf->store.path, cf->store.max_size, 0, err, errlen);
}

struct store *
proc_open_store(const struct conf *cf)
{
	struct store	*st;
	char		 err[1024];

	if ((st = proc_store(cf, err, sizeof(err))) == NULL) {
		log_errx("%s", err);
		exit(1);
	}
	return st;
}

void
proc_probe_store(const struct conf *cf)
{
	struct store	*st;
	char		 err[1024];

	proc_name("licproxy-probe");
	if ((st = proc_store(cf, err, sizeof(err))) == NULL ||
	    store_check(st, cf->store.path, err, sizeof(err)) == -1) {
		log_errx("%s", err);
		_exit(1);
	}
	store_close(st);
	_exit(0);
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

/*
 * Default allow, then refuse with EPERM: socket() for anything but
 * AF_UNIX (the uplink channel), and the syscalls that would let a
 * compromised worker escape or tamper with others. libseccomp adds the
 * architecture check: a foreign-ABI syscall kills the process.
 */
int
proc_sandbox_worker(void)
{
	static const char *const denied[] = {
		"io_uring_setup", "io_uring_enter", "io_uring_register",
		"ptrace", "process_vm_writev", "process_vm_readv", "bpf",
	};
	scmp_filter_ctx	ctx;
	size_t		i;
	int		rv = -1, nr;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		return -1;
	if ((ctx = seccomp_init(SCMP_ACT_ALLOW)) == NULL)
		return -1;
	if (seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL) < 0)
		goto done;
	if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1,
	    SCMP_A0(SCMP_CMP_NE, AF_UNIX)) < 0)
		goto done;
	for (i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
		if ((nr = seccomp_syscall_resolve_name(denied[i])) ==
		    __NR_SCMP_ERROR)
			continue;
		if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0) < 0)
			goto done;
	}
	rv = seccomp_load(ctx) < 0 ? -1 : 0;
done:
	seccomp_release(ctx);
	return rv;
}

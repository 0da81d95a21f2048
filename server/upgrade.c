/*
 * upgrade.c - the binary upgrade of SPEC section 6 (USR2). The master must
 * keep its pid (systemd's MainPID, the children's parent) and its
 * listeners, so it execve()s itself rather than forking a new master the
 * way nginx does. An exec cannot be undone, so the new binary first proves
 * it can start: it runs `check-config` on the same command line. Should
 * the new image still fail before it serves, it executes the previous
 * binary again from a descriptor kept open for that.
 */
#include <sys/socket.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "proc.h"
#include "upgrade.h"

#define ENV_LISTEN	"LICPROXY_LISTEN_FDS"	/* tls,status,ipc */
#define ENV_STATS	"LICPROXY_STATS_FD"
#define ENV_KIDS	"LICPROXY_CHILDREN"	/* pid:role,... */
#define ENV_EXE		"LICPROXY_EXE"		/* the path, as resolved at start */
#define ENV_PREV	"LICPROXY_PREV_EXE"	/* fd of the binary being replaced */
#define CHECK_MS	10000			/* the new binary's check-config */
#define MAX_ARGS	64

extern char **environ;

static char	  exe_path[PATH_MAX];
static char	**exe_argv;

void
upgrade_init(char **argv)
{
	const char	*inherited = getenv(ENV_EXE);
	ssize_t		 n;

	exe_argv = argv;
	/*
	 * Resolved now: once the file is replaced, /proc/self/exe names the
	 * old, deleted inode. An upgraded image keeps the first path.
	 */
	if (inherited != NULL && strlen(inherited) < sizeof(exe_path)) {
		strcpy(exe_path, inherited);
		return;
	}
	n = readlink("/proc/self/exe", exe_path, sizeof(exe_path) - 1);
	exe_path[n > 0 ? n : 0] = '\0';
}

/*
 * TERM or INT waiting (the master blocks them and takes them by
 * sigtimedwait): a stop must not wait out a new binary that hangs in its
 * check, or the master would miss its 10 s to exit.
 */
static int
check_stop_pending(void)
{
	sigset_t pending;

	return sigpending(&pending) == 0 && (sigismember(&pending, SIGTERM) ==
	    1 || sigismember(&pending, SIGINT) == 1);
}

static int
fd_cloexec(int fd, int on)
{
	return fd < 0 ? 0 : fcntl(fd, F_SETFD, on ? FD_CLOEXEC : 0);
}

/* argv with "serve" replaced by "check-config" (into out, NULL-ended). */
static int
check_argv(char **out, size_t max)
{
	size_t	i;
	int	found = 0;

	for (i = 0; exe_argv[i] != NULL && i + 1 < max; i++) {
		out[i] = exe_argv[i];
		if (!found && i > 0 && strcmp(out[i], "serve") == 0) {
			out[i] = "check-config";
			found = 1;
		}
	}
	out[i] = NULL;
	return found && exe_argv[i] == NULL ? 0 : -1;
}

/* 0 when the binary at exe_path accepts the configuration, else -1. */
static int
upgrade_check(void)
{
	char		*argv[MAX_ARGS];
	sigset_t	 none;
	int64_t		 deadline = proc_now_ms() + CHECK_MS;
	pid_t		 pid, r;
	int		 status, fd;

	if (check_argv(argv, MAX_ARGS) == -1) {
		log_warnx("upgrade: cannot rebuild the command line");
		return -1;
	}
	if ((pid = fork()) == -1) {
		log_warn("upgrade: fork");
		return -1;
	}
	if (pid == 0) {
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if ((fd = open("/dev/null", O_WRONLY)) != -1)
			dup2(fd, STDOUT_FILENO);	/* "configuration OK" */
		execv(exe_path, argv);
		fprintf(stderr, "licproxy: upgrade: %s: %s\n", exe_path,
		    strerror(errno));
		_exit(127);
	}
	while ((r = waitpid(pid, &status, WNOHANG)) == 0 &&
	    proc_now_ms() < deadline && !check_stop_pending())
		nanosleep(&(struct timespec){ 0, 20 * 1000000 }, NULL);
	if (r == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		if (proc_now_ms() < deadline)
			log_warnx("upgrade: %s check-config abandoned: stopping",
			    exe_path);
		else
			log_warnx("upgrade: %s check-config took more than %ds",
			    exe_path, CHECK_MS / 1000);
		return -1;
	}
	if (r == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (r == pid && WIFSIGNALED(status))
		log_warnx("upgrade: %s check-config died on signal %d",
		    exe_path, WTERMSIG(status));
	else
		log_warnx("upgrade: %s check-config exited with %d", exe_path,
		    r == pid && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	return -1;
}

/* The hand-over, as environment variables the new image reads. */
static int
upgrade_setenv(const struct upgrade_state *st, int prev)
{
	char	buf[UPGRADE_MAX_KIDS * 24 + 1], *p = buf;
	int	i;

	for (i = 0; i < st->nkids; i++)
		p += snprintf(p, sizeof(buf) - (size_t)(p - buf), "%s%d:%d",
		    i ? "," : "", (int)st->kids[i].pid, st->kids[i].role);
	*p = '\0';
	if (setenv(ENV_KIDS, buf, 1) == -1 ||
	    setenv(ENV_EXE, exe_path, 1) == -1)
		return -1;
	snprintf(buf, sizeof(buf), "%d,%d,%d", st->fd_tls, st->fd_status,
	    st->fd_ipc);
	if (setenv(ENV_LISTEN, buf, 1) == -1)
		return -1;
	snprintf(buf, sizeof(buf), "%d", st->fd_stats);
	if (setenv(ENV_STATS, buf, 1) == -1)
		return -1;
	snprintf(buf, sizeof(buf), "%d", prev);
	return setenv(ENV_PREV, buf, 1);
}

static void
upgrade_unsetenv(void)
{
	unsetenv(ENV_LISTEN);
	unsetenv(ENV_STATS);
	unsetenv(ENV_KIDS);
	unsetenv(ENV_PREV);
	unsetenv(ENV_EXE);
}

/* Keep (on=0) or drop (on=1) the descriptors across the exec. */
static int
upgrade_fds(const struct upgrade_state *st, int prev, int on)
{
	return fd_cloexec(st->fd_tls, on) | fd_cloexec(st->fd_status, on) |
	    fd_cloexec(st->fd_ipc, on) | fd_cloexec(st->fd_stats, on) |
	    fd_cloexec(prev, on);
}

int
upgrade_exec(const struct upgrade_state *st)
{
	int prev;

	if (exe_path[0] == '\0' || exe_argv == NULL) {
		log_warnx("upgrade: the path of the binary is unknown");
		return -1;
	}
	log_info("upgrade: checking %s", exe_path);
	if (upgrade_check() == -1) {
		log_warnx("upgrade failed, the running binary keeps serving");
		return -1;
	}
	/* The binary running now, to come back to if the new one fails. */
	prev = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (upgrade_setenv(st, prev) == -1 || upgrade_fds(st, prev, 0) != 0) {
		log_warn("upgrade: cannot hand over the listeners");
		goto fail;
	}
	log_info("upgrade: executing %s", exe_path);
	execv(exe_path, exe_argv);
	log_warn("upgrade: exec %s", exe_path);
fail:
	upgrade_fds(st, prev, 1);
	upgrade_unsetenv();
	if (prev != -1)
		close(prev);
	log_warnx("upgrade failed, the running binary keeps serving");
	return -1;
}

/* "a,b,c" into up to max ints; the count, or -1 on junk. */
static int
parse_ints(const char *s, int *out, int max, char sep)
{
	char	*end;
	long	 v;
	int	 n = 0;

	while (s != NULL && *s != '\0' && n < max) {
		errno = 0;
		v = strtol(s, &end, 10);
		if (errno != 0 || end == s || v < -1 || v > INT_MAX)
			return -1;
		out[n++] = (int)v;
		if (*end != '\0' && *end != sep && *end != ':')
			return -1;
		s = *end == '\0' ? end : end + 1;
	}
	return n;
}

int
upgrade_active(void)
{
	return getenv(ENV_LISTEN) != NULL;
}

static int
is_listener(int fd)
{
	int		on = 0;
	socklen_t	len = sizeof(on);

	return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 &&
	    on == 1;
}

int
upgrade_inherited(struct upgrade_state *st)
{
	int	fds[3], kv[UPGRADE_MAX_KIDS * 2], n, i;

	memset(st, 0, sizeof(*st));
	st->fd_stats = -1;
	if (getenv(ENV_LISTEN) == NULL)
		return 0;
	if (parse_ints(getenv(ENV_LISTEN), fds, 3, ',') != 3 ||
	    !is_listener(fds[0]) || !is_listener(fds[1]) ||
	    !is_listener(fds[2])) {
		log_warnx("upgrade: %s does not name three listeners",
		    ENV_LISTEN);
		return 0;
	}
	st->fd_tls = fds[0];
	st->fd_status = fds[1];
	st->fd_ipc = fds[2];
	if (parse_ints(getenv(ENV_STATS), &st->fd_stats, 1, ',') != 1)
		st->fd_stats = -1;
	n = parse_ints(getenv(ENV_KIDS), kv, UPGRADE_MAX_KIDS * 2, ',');
	for (i = 0; i + 1 < n; i += 2) {
		st->kids[st->nkids].pid = kv[i];
		st->kids[st->nkids++].role = kv[i + 1];
	}
	/* Not inherited by anything this image starts. */
	upgrade_fds(st, -1, 1);
	return 1;
}

static int
prev_fd(void)
{
	int fd;

	return parse_ints(getenv(ENV_PREV), &fd, 1, ',') == 1 ? fd : -1;
}

void
upgrade_commit(void)
{
	int fd = prev_fd();

	if (fd > STDERR_FILENO)
		close(fd);
	upgrade_unsetenv();
}

void
upgrade_fallback(void)
{
	struct upgrade_state	st;
	int			fd = prev_fd();

	if (fd < 0 || exe_argv == NULL)
		return;
	/* Once only: should the previous binary fail too, it just exits. */
	unsetenv(ENV_PREV);
	if (upgrade_inherited(&st))
		upgrade_fds(&st, fd, 0);
	fprintf(stderr, "licproxy: upgrade: the new binary could not start,"
	    " executing the previous one again\n");
	fexecve(fd, exe_argv, environ);
	fprintf(stderr, "licproxy: upgrade: cannot execute the previous"
	    " binary: %s\n", strerror(errno));
}

/*
 * master_store.c - the store as the master sees it, without ever opening
 * LMDB: the directory made (as root) and given to server.user, and the
 * check before any listener or child, done in a short-lived child.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "conf.h"
#include "log.h"
#include "master_int.h"
#include "proc.h"

#define PROBE_TIMEOUT_MS	30000	/* the store check before any child */

/*
 * Children open the store as server.user; files a root-run CLI created
 * (keys create before the first start) must become theirs.
 */
static void
master_chown_store(struct master *m, const struct passwd *pw)
{
	static const char *const files[] = { "data.mdb", "lock.mdb" };
	char	path[PATH_MAX];
	size_t	i;

	if (chown(m->cf->store.path, pw->pw_uid, pw->pw_gid) == -1)
		log_warn("chown %s", m->cf->store.path);
	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", m->cf->store.path,
		    files[i]);
		if (chown(path, pw->pw_uid, pw->pw_gid) == -1 && errno != ENOENT)
			log_warn("chown %s", path);
	}
}

/* server.user's entry when the children drop to it, else NULL. */
struct passwd *
master_child_user(struct master *m)
{
	const char *user = m->cf->server.user;

	if (geteuid() != 0 || user == NULL || *user == '\0')
		return NULL;
	return getpwnam(user);
}

/* The store directory, made here (as root) and given to server.user. */
int
master_prepare_store(struct master *m)
{
	struct passwd	*pw;
	struct stat	 sb;

	if (mkdir(m->cf->store.path, 0700) == -1 && errno != EEXIST) {
		log_errx("store %s: cannot make the directory: %s. Make it"
		    " yourself, or point store.path elsewhere",
		    m->cf->store.path, strerror(errno));
		return -1;
	}
	if (stat(m->cf->store.path, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
		log_errx("store %s: not a directory. Point store.path at a"
		    " directory", m->cf->store.path);
		return -1;
	}
	if ((pw = master_child_user(m)) != NULL)
		master_chown_store(m, pw);
	return 0;
}

/* The probe's status, or -1 (killed) if it outlived PROBE_TIMEOUT_MS. */
static int
master_probe_wait(pid_t pid, int *status)
{
	struct timespec	 tick = { 0, 10 * 1000000 };
	int64_t		 end = proc_now_ms() + PROBE_TIMEOUT_MS;
	pid_t		 r;

	while ((r = waitpid(pid, status, WNOHANG)) == 0 &&
	    proc_now_ms() < end)
		nanosleep(&tick, NULL);
	if (r == pid)
		return 0;
	kill(pid, SIGKILL);
	waitpid(pid, status, 0);
	return -1;
}

/*
 * Before any listener or child: one short-lived child opens the store as
 * the children will (as server.user, read-write) and reads every db, so a
 * store that cannot be used stops serve with the reason instead of a
 * respawn loop behind open ports. The master itself never opens LMDB.
 */
int
master_probe_store(struct master *m)
{
	const char	*path = m->cf->store.path;
	pid_t		 pid;
	int		 status;

	if ((pid = fork()) == -1) {
		log_warn("fork");
		return -1;
	}
	if (pid == 0) {
		master_child_init(m);
		child_probe_main(m->cf);
	}
	if (master_probe_wait(pid, &status) == -1) {
		log_errx("store %s: the check did not finish in %ds (a"
		    " process holding it?)", path, PROBE_TIMEOUT_MS / 1000);
		return -1;
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);	/* it said why */
	log_errx("store %s: the check died on signal %d (%s): the store is"
	    " damaged. Restore it from backup, or move it aside to start with"
	    " an empty store", path, WTERMSIG(status),
	    strsignal(WTERMSIG(status)));
	return -1;
}

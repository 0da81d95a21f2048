/*
 * master.c - the supervising process of serve, its whole life in
 * master_main: acquire (shared figures, TLS context, store check,
 * listeners), sandbox, then a loop on synchronous signals that only
 * supervises: children (master_kids.c) are reaped and respawned, HUP
 * reloads and USR2 re-executes the binary (master_reload.c), TERM/INT
 * drain and stop, USR1 reopens the logs.
 * No event-driven network I/O here and never the LMDB environment: an env
 * must not cross a fork.
 */
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "master.h"
#include "master_int.h"
#include "sandbox.h"
#include "sdnotify.h"
#include "stats.h"
#include "tls.h"
#include "upgrade.h"

/* A log file the (root) master created must be reopenable by children. */
static void
master_chown_log(struct master *m)
{
	const char	*user = m->cf->server.user;
	struct passwd	*pw;

	if (geteuid() != 0 || m->cf->log.file == NULL || user == NULL ||
	    *user == '\0' || (pw = getpwnam(user)) == NULL)
		return;
	if (chown(m->cf->log.file, pw->pw_uid, pw->pw_gid) == -1)
		log_warn("chown %s", m->cf->log.file);
}

static void
master_handle(struct master *m, int sig)
{
	switch (sig) {
	case SIGCHLD:
		master_reap(m);
		break;
	case SIGHUP:
		if (!m->stopping)
			master_reload(m);
		break;
	case SIGTERM:
	case SIGINT:
		master_stop(m, sig);
		break;
	case SIGUSR2:
		if (!m->stopping)
			master_upgrade(m);
		break;
	case SIGUSR1:
		if (log_reopen(m->cf->log.file) == -1)
			log_warn("reopen %s", m->cf->log.file);
		master_chown_log(m);
		master_signal_children(m, SIGUSR1);
		break;
	}
}

/* The signals the master takes synchronously (blocked, sigtimedwait). */
static void
master_sigset(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGCHLD);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGUSR1);
	sigaddset(set, SIGUSR2);
}

/* Every child is gone after a stop: the end of serve. */
static void __attribute__((noreturn))
master_stopped(struct master *m)
{
	unlink(m->ipc_path);
	log_info("stopped");
	exit(m->exit_code);
}

static void __attribute__((noreturn))
master_loop(struct master *m)
{
	struct timespec	tick = { 0, 100 * 1000000 };
	sigset_t	set;
	int		sig;

	master_sigset(&set);
	for (;;) {
		sig = sigtimedwait(&set, NULL, &tick);
		if (sig > 0)
			master_handle(m, sig);
		master_reap(m);	/* SIGCHLD coalesces */
		master_reports(m);
		if (m->stopping)
			master_stop_backend(m);
		else
			master_retire_backend(m);
		master_enforce_deadlines(m);
		if (m->stopping && master_children_left(m) == 0)
			master_stopped(m);
		master_fill(m);
	}
}

/*
 * The shared figures: after USR2 the previous image's block (counters,
 * uptime and state carry on), unless this build lays it out differently.
 */
static int
master_stats(struct master *m, int inherited_fd)
{
	if (inherited_fd != -1) {
		if (stats_adopt(inherited_fd) == 0)
			return 0;
		close(inherited_fd);
	}
	if (stats_create() == -1)
		return -1;
	stats_block()->started = time(NULL);
	stats_block()->mode = m->cf->mode;
	stats_block()->state = m->cf->mode == CONF_AUTHORITY ? ST_AUTHORITY :
	    ST_INITIALIZING;
	stats_block()->survival_s = STATS_SURVIVAL_NONE;
	return 0;
}

static int
master_setup(struct master *m)
{
	struct upgrade_state	up;
	char			err[1024];
	int			inherited = upgrade_inherited(&up), rv;

	if (master_stats(m, inherited ? up.fd_stats : -1) == -1 ||
	    tls_init() == -1) {
		log_err("shared memory");
		return -1;
	}
	if ((m->tls = tls_server_ctx_new(m->cf, err, sizeof(err))) == NULL) {
		log_errx("%s", err);
		return 2;	/* a configuration error, like check-config says */
	}
	/* An upgraded image checks the store too: if it cannot use it, the
	 * old binary takes over again (upgrade_fallback). */
	if (master_prepare_store(m) == -1)
		return -1;
	if ((rv = master_probe_store(m)) != 0)
		return rv;
	if (inherited)
		return master_adopt(m, &up);
	m->fd_tls = master_listen(m->cf->server.host, m->cf->server.port);
	m->fd_status = master_listen(m->cf->server.status_host,
	    m->cf->server.status_port);
	m->fd_ipc = master_listen_ipc(m);
	if (m->fd_tls == -1 || m->fd_status == -1 || m->fd_ipc == -1)
		return -1;
	return 0;
}

int
master_main(struct conf *cf, const char *cfpath,
    const struct conf_overrides *ov)
{
	static struct master	 master;
	struct master		*m = &master;
	sigset_t		 set;
	int			 rv, i;

	/* name: the master keeps the binary's own comm, "licproxy" */
	m->cf = cf;
	m->cfpath = cfpath;
	m->ov = *ov;
	m->pid = getpid();
	m->fd_tls = m->fd_status = m->fd_ipc = -1;
	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		m->kids[i].rfd = -1;
	signal(SIGPIPE, SIG_IGN);
	master_sigset(&set);
	sigprocmask(SIG_BLOCK, &set, NULL);
	/* acquire: shared figures, TLS context, store check, listeners */
	if ((rv = master_setup(m)) != 0) {
		log_errx("exiting");
		return rv == 2 ? 2 : 1;
	}
	master_chown_log(m);
	/* drop: none; it stays root to re-read root-only files on reload */
	/* sandbox */
	if (sandbox_master() == -1) {
		log_err("seccomp sandbox");
		return 1;
	}
	if (!m->upgraded)
		log_info("%s mode, listening on %s:%d (TLS) and %s:%d"
		    " (status), %d workers", cf->mode == CONF_AUTHORITY ?
		    "authority" : "proxy", cf->server.host, cf->server.port,
		    cf->server.status_host, cf->server.status_port,
		    cf->server.workers);
	master_fill(m);
	if (m->upgraded)
		master_upgraded(m);
	sdnotify("READY=1");
	/* loop: a stop ends in master_stopped, which exits */
	master_loop(m);
	fatalx("event loop exited");
}

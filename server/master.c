/*
 * master.c - binds the listeners, forks the workers and the uplink (or the
 * issuer), then only supervises: reaps and respawns with back-off, reloads
 * on HUP, drains and stops on TERM/INT, reopens logs on USR1, re-executes
 * its binary on USR2 (upgrade.c).
 * No event-driven network I/O here and never the LMDB environment: an env
 * must not cross a fork.
 */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "conf.h"
#include "log.h"
#include "master.h"
#include "proc.h"
#include "sdnotify.h"
#include "stats.h"
#include "tls.h"
#include "upgrade.h"

#define MASTER_MAX_CHILDREN	STATS_MAX_SLOTS
#define BACKOFF_MIN_MS		100
#define BACKOFF_MAX_MS		30000
#define BACKOFF_FATAL_MS	60000	/* a child that exited 2 */
#define STABLE_MS		10000	/* lived this long: not a crash loop */
#define STOP_DEADLINE_MS	8000	/* SPEC: gone within 10 s of TERM */
#define BACKEND_GRACE_MS	1000	/* uplink/issuer, after the workers */
#define MAX_UNREADY		5	/* SPEC: deaths in a row before ready */
#define PROBE_TIMEOUT_MS	30000	/* the store check before any child */

struct child {
	pid_t		pid;		/* 0 = free */
	int		role;		/* enum stats_role */
	int		gen;		/* configuration generation */
	int64_t		started;
	int64_t		kill_at;	/* 0, or SIGKILL after this (draining) */
	int		rfd;		/* its startup report (proc_ready), or -1 */
	int		ready;
	size_t		len;		/* of line, the report line being read */
	char		line[LOG_TEE_MAX + 4];
	char		why[LOG_TEE_MAX + 4];	/* its last error line */
};

struct master {
	struct conf		*cf;
	struct conf_overrides	 ov;
	const char		*cfpath;
	SSL_CTX			*tls;
	int			 fd_tls, fd_status, fd_ipc;
	char			 ipc_path[108];
	int			 gen;
	int			 stopping;
	int64_t			 stop_deadline;
	int			 fails[3];	/* consecutive quick deaths */
	int64_t			 not_before[3];	/* back-off, by role */
	int			 unready[3];	/* deaths in a row before ready */
	int			 exit_code;
	struct child		 kids[MASTER_MAX_CHILDREN];
	pid_t			 pid;
	int			 upgraded;	/* this image came from USR2 */
};

static int
master_listen(const char *host, int port)
{
	struct addrinfo	 hints, *res = NULL;
	char		 sport[16];
	int		 fd = -1, one = 1, e;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(sport, sizeof(sport), "%d", port);
	if ((e = getaddrinfo(host, sport, &hints, &res)) != 0) {
		log_errx("%s:%d: %s", host, port, gai_strerror(e));
		return -1;
	}
	fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) == -1 ||
	    listen(fd, 1024) == -1) {
		log_err("cannot listen on %s:%d", host, port);
		if (fd != -1)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

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
static struct passwd *
master_child_user(struct master *m)
{
	const char *user = m->cf->server.user;

	if (geteuid() != 0 || user == NULL || *user == '\0')
		return NULL;
	return getpwnam(user);
}

/* The store directory, made here (as root) and given to server.user. */
static int
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

/* The workers' channel to the uplink/issuer: a Unix socket in the store. */
static int
master_listen_ipc(struct master *m)
{
	struct sockaddr_un	 sun;
	struct passwd		*pw;
	int			 fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if ((size_t)snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/ipc.sock",
	    m->cf->store.path) >= sizeof(sun.sun_path)) {
		log_errx("store.path %s: too long for a Unix socket",
		    m->cf->store.path);
		return -1;
	}
	unlink(sun.sun_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    chmod(sun.sun_path, 0600) == -1 || listen(fd, 128) == -1) {
		log_err("ipc socket %s", sun.sun_path);
		if (fd != -1)
			close(fd);
		return -1;
	}
	if ((pw = master_child_user(m)) != NULL &&
	    chown(sun.sun_path, pw->pw_uid, pw->pw_gid) == -1)
		log_warn("chown %s", sun.sun_path);
	memcpy(m->ipc_path, sun.sun_path, sizeof(m->ipc_path));
	return fd;
}

static const char *
role_comm(int role)
{
	return role == ROLE_WORKER ? "licproxy-worker" :
	    role == ROLE_UPLINK ? "licproxy-uplink" : "licproxy-issuer";
}

/* First steps of every child: the master's signal state undone. */
static void
child_init(struct master *m)
{
	sigset_t	none;
	int		sig, i;

	for (sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	/* A log rotation before the child's own handler is up is no crash. */
	signal(SIGUSR1, SIG_IGN);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Die with the master, even if it is SIGKILLed. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != m->pid)
		_exit(0);
	/* The siblings' startup reports are the master's to read. */
	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->kids[i].pid != 0 && m->kids[i].rfd != -1)
			close(m->kids[i].rfd);
}

static void
child_run(struct master *m, int role, int slot, int report)
{
	struct proc_env	env;

	child_init(m);
	proc_report_init(report);
	memset(&env, 0, sizeof(env));
	env.cf = m->cf;
	env.tls = m->tls;
	env.fd_tls = m->fd_tls;
	env.fd_status = m->fd_status;
	env.fd_ipc = m->fd_ipc;
	env.slot = slot;
	memcpy(env.ipc_path, m->ipc_path, sizeof(env.ipc_path));
	stats_attach(slot);
	proc_name(role_comm(role));
	/* Only the uplink needs the proxy's own key. */
	if (role != ROLE_UPLINK)
		explicit_bzero(m->cf->license.key, sizeof(m->cf->license.key));
	if (role == ROLE_WORKER) {
		close(m->fd_ipc);
		worker_main(&env);
	}
	close(m->fd_tls);
	close(m->fd_status);
	if (role == ROLE_UPLINK)
		uplink_main(&env);
	issuer_main(&env);
}

static void	master_stop(struct master *, int);

static int
master_spawn(struct master *m, int role)
{
	struct child	*c = NULL;
	pid_t		 pid;
	int		 i, slot, p[2];

	for (i = 0; i < MASTER_MAX_CHILDREN && c == NULL; i++)
		if (m->kids[i].pid == 0)
			c = &m->kids[i];
	if (c == NULL || (slot = stats_slot_claim(-1, role)) == -1) {
		log_warnx("too many processes");
		return -1;
	}
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) == -1) {
		log_warn("pipe");
		stats_slot_release(-1);
		return -1;
	}
	if ((pid = fork()) == -1) {
		log_warn("fork");
		stats_slot_release(-1);
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		close(p[0]);
		child_run(m, role, slot, p[1]);
	}
	close(p[1]);
	c->rfd = p[0];
	c->ready = 0;
	c->len = 0;
	c->why[0] = '\0';
	stats->slots[slot].pid = pid;
	c->pid = pid;
	c->role = role;
	c->gen = m->gen;
	c->started = proc_now_ms();
	c->kill_at = 0;
	log_debug("started %s pid %d", role_comm(role), (int)pid);
	return 0;
}

static int
master_count(struct master *m, int role, int gen)
{
	int i, n = 0;

	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->kids[i].pid != 0 && m->kids[i].role == role &&
		    m->kids[i].gen == gen && m->kids[i].kill_at == 0)
			n++;
	return n;
}

/* Bring the current generation up to strength, honouring back-off. */
static void
master_fill(struct master *m)
{
	int	up = m->cf->mode == CONF_AUTHORITY ? ROLE_ISSUER : ROLE_UPLINK;
	int64_t	now = proc_now_ms();

	if (m->stopping)
		return;
	if (now >= m->not_before[up])
		while (master_count(m, up, m->gen) < 1 &&
		    master_spawn(m, up) == 0)
			;
	if (now >= m->not_before[ROLE_WORKER])
		while (master_count(m, ROLE_WORKER, m->gen) <
		    m->cf->server.workers && master_spawn(m, ROLE_WORKER) == 0)
			;
	stats->workers_conf = m->cf->server.workers;
	stats->workers_alive = master_count(m, ROLE_WORKER, m->gen);
	stats->uplink_alive = master_count(m, up, m->gen) > 0;
}

/* One whole line of a child's startup report. */
static void
master_report_line(struct master *m, struct child *c)
{
	size_t	plen = strlen(LOG_TEE_PREFIX);

	c->line[c->len] = '\0';
	if (strcmp(c->line, PROC_READY) == 0) {
		c->ready = 1;
		m->unready[c->role] = 0;
	} else if (strncmp(c->line, LOG_TEE_PREFIX, plen) == 0)
		memcpy(c->why, c->line + plen, c->len - plen + 1);
	c->len = 0;
}

/* Read what a child reported so far; the pipe closes once it is ready. */
static void
master_report_read(struct master *m, struct child *c)
{
	char	buf[4096];
	ssize_t	n, i;

	while (c->rfd != -1) {
		if ((n = read(c->rfd, buf, sizeof(buf))) == -1 &&
		    (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			close(c->rfd);
			c->rfd = -1;
			return;
		}
		for (i = 0; i < n; i++) {
			if (buf[i] == '\n')
				master_report_line(m, c);
			else if (c->len < sizeof(c->line) - 1)
				c->line[c->len++] = buf[i];
		}
	}
}

static void
master_reports(struct master *m)
{
	int i;

	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->kids[i].pid != 0 && m->kids[i].rfd != -1)
			master_report_read(m, &m->kids[i]);
}

/*
 * A child died before it was ready: respawning one that will die the same
 * way only keeps the listeners open with nobody to answer. After
 * MAX_UNREADY in a row, give up with its last error. KILL and TERM come
 * from outside (an operator, the OOM killer): no failure of its own.
 */
static void
master_not_ready(struct master *m, struct child *c, int status)
{
	char		 how[64];
	const char	*why = c->why;

	if (WIFSIGNALED(status) && (WTERMSIG(status) == SIGKILL ||
	    WTERMSIG(status) == SIGTERM))
		return;
	if (++m->unready[c->role] < MAX_UNREADY)
		return;
	if (*why == '\0') {
		if (WIFSIGNALED(status))
			snprintf(how, sizeof(how), "died on signal %d (%s)",
			    WTERMSIG(status), strsignal(WTERMSIG(status)));
		else
			snprintf(how, sizeof(how), "exited with %d",
			    WEXITSTATUS(status));
		why = how;
	}
	log_errx("%s failed %d times in a row before it was ready: %s;"
	    " exiting", role_comm(c->role) + strlen("licproxy-"), MAX_UNREADY,
	    why);
	m->exit_code = 1;
	master_stop(m, 0);
}

static void
master_died(struct master *m, struct child *c, int status)
{
	int64_t	lived = proc_now_ms() - c->started, delay;
	int	code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;

	stats_slot_release(c->pid);
	c->pid = 0;
	master_report_read(m, c);	/* its last words, then EOF */
	if (m->stopping || c->kill_at != 0 || c->gen != m->gen)
		return;		/* we asked it to go */
	if (WIFSIGNALED(status))
		log_warnx("%s died on signal %d", role_comm(c->role),
		    WTERMSIG(status));
	else
		log_warnx("%s exited with %d", role_comm(c->role), code);
	stats->restarts[c->role]++;
	if (!c->ready)
		master_not_ready(m, c, status);
	if (m->stopping)
		return;
	m->fails[c->role] = lived >= STABLE_MS ? 0 : m->fails[c->role] + 1;
	delay = m->fails[c->role] == 0 ? 0 :
	    BACKOFF_MIN_MS << (m->fails[c->role] < 9 ? m->fails[c->role] - 1 : 9);
	if (delay > BACKOFF_MAX_MS)
		delay = BACKOFF_MAX_MS;
	if (code == 2) {
		log_warnx("%s: fatal configuration error, next try in %ds",
		    role_comm(c->role), BACKOFF_FATAL_MS / 1000);
		delay = BACKOFF_FATAL_MS;
	} else if (delay > 0)
		log_info("respawning %s in %lldms", role_comm(c->role),
		    (long long)delay);
	m->not_before[c->role] = proc_now_ms() + delay;
}

static void
master_reap(struct master *m)
{
	pid_t	pid;
	int	status, i;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		for (i = 0; i < MASTER_MAX_CHILDREN; i++)
			if (m->kids[i].pid == pid)
				master_died(m, &m->kids[i], status);
}

/*
 * Ask children of generations before gen (or all) to finish and exit;
 * role -1 = every role.
 */
static void
master_retire(struct master *m, int all, int role, int sig, int64_t deadline)
{
	int i;

	for (i = 0; i < MASTER_MAX_CHILDREN; i++) {
		struct child *c = &m->kids[i];
		if (c->pid == 0 || c->kill_at != 0 || (!all && c->gen == m->gen) ||
		    (role != -1 && c->role != role))
			continue;
		kill(c->pid, sig);
		c->kill_at = deadline;
	}
}

/*
 * Reload and upgrade: the old workers finish the requests on their
 * connections and exit (USR2); the old uplink/issuer goes once they are
 * gone (master_retire_backend), since a request they are finishing may
 * still need it, as on TERM.
 */
static void
master_retire_generation(struct master *m)
{
	master_retire(m, 0, ROLE_WORKER, SIGUSR2,
	    proc_now_ms() + m->cf->server.drain_timeout_ms);
}

static void
master_retire_backend(struct master *m)
{
	int64_t	deadline = proc_now_ms() + m->cf->server.drain_timeout_ms;
	int	i;

	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->kids[i].pid != 0 && m->kids[i].role == ROLE_WORKER &&
		    m->kids[i].gen != m->gen)
			return;
	master_retire(m, 0, ROLE_UPLINK, SIGUSR2, deadline);
	master_retire(m, 0, ROLE_ISSUER, SIGUSR2, deadline);
}

/*
 * A new generation gets its own IPC socket (same path): its workers can
 * reach only its uplink/issuer, never an old one about to go. The old
 * generation keeps its connections on the old socket.
 */
static int
master_new_ipc(struct master *m)
{
	int fd;

	if ((fd = master_listen_ipc(m)) == -1)
		return -1;
	if (m->fd_ipc != -1)
		close(m->fd_ipc);
	m->fd_ipc = fd;
	return 0;
}

static void
master_enforce_deadlines(struct master *m)
{
	int64_t	now = proc_now_ms();
	int	i;

	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->kids[i].pid != 0 && m->kids[i].kill_at != 0 &&
		    now >= m->kids[i].kill_at) {
			log_warnx("%s pid %d did not drain in time, killing",
			    role_comm(m->kids[i].role), (int)m->kids[i].pid);
			kill(m->kids[i].pid, SIGKILL);
			m->kids[i].kill_at = INT64_MAX;
		}
}

/* A listener for host:port, or -1 to keep fd when the address is the same. */
static int
master_relisten(const char *ohost, int oport, const char *host, int port,
    int *fd)
{
	*fd = -1;
	if (strcmp(ohost, host) == 0 && oport == port)
		return 0;
	return (*fd = master_listen(host, port)) == -1 ? -1 : 0;
}

/* Listener address changes: bind both new sockets before giving up any. */
static int
master_rebind(struct master *m, const struct conf *ncf)
{
	const struct conf	*o = m->cf;
	int			 tls, st;

	if (master_relisten(o->server.host, o->server.port, ncf->server.host,
	    ncf->server.port, &tls) == -1)
		return -1;
	if (master_relisten(o->server.status_host, o->server.status_port,
	    ncf->server.status_host, ncf->server.status_port, &st) == -1) {
		if (tls != -1)
			close(tls);
		return -1;
	}
	if (tls != -1) {
		close(m->fd_tls);
		m->fd_tls = tls;
	}
	if (st != -1) {
		close(m->fd_status);
		m->fd_status = st;
	}
	return 0;
}

static void
master_reload(struct master *m)
{
	struct conf	*ncf;
	SSL_CTX		*ntls;
	char		 err[4096];

	sdnotify("RELOADING=1");
	log_info("reloading %s", m->cfpath);
	if ((ncf = conf_load(m->cfpath, &m->ov, 1, err, sizeof(err))) == NULL) {
		log_warnx("reload failed, keeping the running configuration:"
		    "\n%s", err);
		goto done;
	}
	if ((ntls = tls_server_ctx_new(ncf, err, sizeof(err))) == NULL) {
		log_warnx("reload failed, keeping the running configuration:"
		    " %s", err);
		conf_free(ncf);
		goto done;
	}
	if (ncf->mode != m->cf->mode || strcmp(ncf->store.path,
	    m->cf->store.path) != 0 || master_rebind(m, ncf) == -1) {
		log_warnx("reload failed: mode and store.path need a restart,"
		    " listeners must be free; keeping the running configuration");
		SSL_CTX_free(ntls);
		conf_free(ncf);
		goto done;
	}
	SSL_CTX_free(m->tls);
	conf_free(m->cf);
	m->tls = ntls;
	m->cf = ncf;
	log_init(ncf->log.level, ncf->log.json, NULL);
	m->gen++;
	memset(m->fails, 0, sizeof(m->fails));
	memset(m->unready, 0, sizeof(m->unready));
	memset(m->not_before, 0, sizeof(m->not_before));
	if (master_new_ipc(m) == -1)
		log_warnx("reload: new workers share the old IPC socket");
	master_fill(m);
	master_retire_generation(m);
	log_info("reloaded: generation %d", m->gen);
done:
	sdnotify("READY=1");
}

static void
master_signal_children(struct master *m, int sig)
{
	int i;

	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->kids[i].pid != 0)
			kill(m->kids[i].pid, sig);
}

static void
master_stop(struct master *m, int sig)
{
	int64_t	drain = m->cf->server.drain_timeout_ms;

	if (m->stopping)
		return;
	if (sig != 0)
		log_info("signal %d: stopping", sig);
	sdnotify("STOPPING=1");
	m->stopping = 1;
	m->stop_deadline = proc_now_ms() + STOP_DEADLINE_MS;
	if (drain > STOP_DEADLINE_MS - BACKEND_GRACE_MS)
		drain = STOP_DEADLINE_MS - BACKEND_GRACE_MS;
	/*
	 * Workers first: a request they are still finishing may need the
	 * uplink or issuer, which master_loop stops once they are gone.
	 */
	master_retire(m, 1, ROLE_WORKER, SIGTERM, proc_now_ms() + drain);
}

static void
master_stop_backend(struct master *m)
{
	int64_t	deadline = proc_now_ms() + BACKEND_GRACE_MS;
	int	i;

	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->kids[i].pid != 0 && m->kids[i].role == ROLE_WORKER)
			return;
	if (deadline < m->stop_deadline)
		deadline = m->stop_deadline;
	master_retire(m, 1, -1, SIGTERM, deadline);
}

static int
master_children_left(struct master *m)
{
	int i, n = 0;

	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		n += m->kids[i].pid != 0;
	return n;
}

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

/* USR2: hand the listeners, the stats block and the children to a new image. */
static void
master_upgrade(struct master *m)
{
	struct upgrade_state	st;
	int			i;

	memset(&st, 0, sizeof(st));
	st.fd_tls = m->fd_tls;
	st.fd_status = m->fd_status;
	st.fd_ipc = m->fd_ipc;
	st.fd_stats = stats_fd();
	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->kids[i].pid != 0 && st.nkids < UPGRADE_MAX_KIDS) {
			st.kids[st.nkids].pid = m->kids[i].pid;
			st.kids[st.nkids++].role = m->kids[i].role;
		}
	sdnotify("RELOADING=1");
	upgrade_exec(&st);	/* returns only when the upgrade failed */
	sdnotify("READY=1");
}

/*
 * The listener handed over by the previous image, or a new one when the
 * configuration now names another port and it is free (else the old one
 * stays: an upgrade must not stop serving).
 */
static int
master_adopt_listener(int fd, const char *host, int port)
{
	struct sockaddr_storage	ss;
	socklen_t		len = sizeof(ss);
	int			have = -1, nfd;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
		have = ntohs(ss.ss_family == AF_INET6 ?
		    ((struct sockaddr_in6 *)&ss)->sin6_port :
		    ((struct sockaddr_in *)&ss)->sin_port);
	if (have == port)
		return fd;
	if ((nfd = master_listen(host, port)) == -1) {
		log_warnx("upgrade: keeping the listener on port %d", have);
		return fd;
	}
	close(fd);
	return nfd;
}

/* The new image of a USR2 upgrade: take over instead of binding. */
static int
master_adopt(struct master *m, const struct upgrade_state *st)
{
	int i;

	m->upgraded = 1;
	m->gen = 1;	/* the previous image's children are generation 0 */
	for (i = 0; i < st->nkids && i < MASTER_MAX_CHILDREN; i++) {
		m->kids[i].pid = st->kids[i].pid;
		m->kids[i].role = st->kids[i].role;
		m->kids[i].gen = 0;
		m->kids[i].started = proc_now_ms();
	}
	m->fd_tls = master_adopt_listener(st->fd_tls, m->cf->server.host,
	    m->cf->server.port);
	m->fd_status = master_adopt_listener(st->fd_status,
	    m->cf->server.status_host, m->cf->server.status_port);
	m->fd_ipc = st->fd_ipc;
	return master_new_ipc(m);
}

/* New generation up: drain the previous image's children, as a reload. */
static void
master_upgraded(struct master *m)
{
	int i, n = 0;

	upgrade_commit();
	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		n += m->kids[i].pid != 0 && m->kids[i].gen != m->gen;
	master_retire_generation(m);
	log_info("upgraded to %s: %d processes of the previous binary"
	    " draining", LICPROXY_VERSION, n);
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

static void
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
			return;
		master_fill(m);
	}
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
static int
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
		child_init(m);
		proc_probe_store(m->cf);
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
	stats->started = time(NULL);
	stats->mode = m->cf->mode;
	stats->state = m->cf->mode == CONF_AUTHORITY ? ST_AUTHORITY :
	    ST_INITIALIZING;
	stats->survival_s = STATS_SURVIVAL_NONE;
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
	if ((rv = master_setup(m)) != 0) {
		log_errx("exiting");
		return rv == 2 ? 2 : 1;
	}
	master_chown_log(m);
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
	master_loop(m);
	unlink(m->ipc_path);
	log_info("stopped");
	return m->exit_code;
}

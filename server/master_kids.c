/*
 * master_kids.c - the master's children: fork one into its role's entry,
 * keep each generation at strength, read their startup reports, reap them
 * and respawn with back-off (giving up on one that never gets ready), and
 * retire them: a generation after a reload or upgrade, every one on stop,
 * workers before the uplink/issuer they may still need.
 */
#include <sys/prctl.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "issuer.h"
#include "log.h"
#include "master_int.h"
#include "proc.h"
#include "sdnotify.h"
#include "stats.h"
#include "uplink.h"
#include "worker.h"

#define BACKOFF_MIN_MS		100
#define BACKOFF_MAX_MS		30000
#define BACKOFF_FATAL_MS	60000	/* a child that exited 2 */
#define STABLE_MS		10000	/* lived this long: not a crash loop */
#define STOP_DEADLINE_MS	8000	/* SPEC: gone within 10 s of TERM */
#define BACKEND_GRACE_MS	1000	/* uplink/issuer, after the workers */
#define MAX_UNREADY		5	/* SPEC: deaths in a row before ready */

/* First steps of every child: the master's signal state undone. */
void
master_child_init(struct master *m)
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

	master_child_init(m);
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
	/* Only the uplink needs the proxy's own key. */
	if (role != PROC_UPLINK)
		explicit_bzero(m->cf->license.key, sizeof(m->cf->license.key));
	if (role == PROC_WORKER) {
		close(m->fd_ipc);
		worker_main(&env);
	}
	close(m->fd_tls);
	close(m->fd_status);
	if (role == PROC_UPLINK)
		uplink_main(&env);
	issuer_main(&env);
}

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
	stats_block()->slots[slot].pid = pid;
	c->pid = pid;
	c->role = role;
	c->gen = m->gen;
	c->started = proc_now_ms();
	c->kill_at = 0;
	log_debug("started %s pid %d", proc_role_comm(role), (int)pid);
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
void
master_fill(struct master *m)
{
	int	up = m->cf->mode == CONF_AUTHORITY ? PROC_ISSUER : PROC_UPLINK;
	int64_t	now = proc_now_ms();

	if (m->stopping)
		return;
	if (now >= m->not_before[up])
		while (master_count(m, up, m->gen) < 1 &&
		    master_spawn(m, up) == 0)
			;
	if (now >= m->not_before[PROC_WORKER])
		while (master_count(m, PROC_WORKER, m->gen) <
		    m->cf->server.workers && master_spawn(m, PROC_WORKER) == 0)
			;
	stats_block()->workers_conf = m->cf->server.workers;
	stats_block()->workers_alive = master_count(m, PROC_WORKER, m->gen);
	stats_block()->uplink_alive = master_count(m, up, m->gen) > 0;
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

void
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
	    " exiting", proc_role_comm(c->role) + strlen("licproxy-"), MAX_UNREADY,
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
		log_warnx("%s died on signal %d", proc_role_comm(c->role),
		    WTERMSIG(status));
	else
		log_warnx("%s exited with %d", proc_role_comm(c->role), code);
	stats_block()->restarts[c->role]++;
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
		    proc_role_comm(c->role), BACKOFF_FATAL_MS / 1000);
		delay = BACKOFF_FATAL_MS;
	} else if (delay > 0)
		log_info("respawning %s in %lldms", proc_role_comm(c->role),
		    (long long)delay);
	m->not_before[c->role] = proc_now_ms() + delay;
}

void
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
void
master_retire_generation(struct master *m)
{
	master_retire(m, 0, PROC_WORKER, SIGUSR2,
	    proc_now_ms() + m->cf->server.drain_timeout_ms);
}

void
master_retire_backend(struct master *m)
{
	int64_t	deadline = proc_now_ms() + m->cf->server.drain_timeout_ms;
	int	i;

	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->kids[i].pid != 0 && m->kids[i].role == PROC_WORKER &&
		    m->kids[i].gen != m->gen)
			return;
	master_retire(m, 0, PROC_UPLINK, SIGUSR2, deadline);
	master_retire(m, 0, PROC_ISSUER, SIGUSR2, deadline);
}

void
master_enforce_deadlines(struct master *m)
{
	int64_t	now = proc_now_ms();
	int	i;

	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->kids[i].pid != 0 && m->kids[i].kill_at != 0 &&
		    now >= m->kids[i].kill_at) {
			log_warnx("%s pid %d did not drain in time, killing",
			    proc_role_comm(m->kids[i].role), (int)m->kids[i].pid);
			kill(m->kids[i].pid, SIGKILL);
			m->kids[i].kill_at = INT64_MAX;
		}
}

void
master_signal_children(struct master *m, int sig)
{
	int i;

	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->kids[i].pid != 0)
			kill(m->kids[i].pid, sig);
}

void
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
	master_retire(m, 1, PROC_WORKER, SIGTERM, proc_now_ms() + drain);
}

void
master_stop_backend(struct master *m)
{
	int64_t	deadline = proc_now_ms() + BACKEND_GRACE_MS;
	int	i;

	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->kids[i].pid != 0 && m->kids[i].role == PROC_WORKER)
			return;
	if (deadline < m->stop_deadline)
		deadline = m->stop_deadline;
	master_retire(m, 1, -1, SIGTERM, deadline);
}

int
master_children_left(struct master *m)
{
	int i, n = 0;

	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		n += m->kids[i].pid != 0;
	return n;
}

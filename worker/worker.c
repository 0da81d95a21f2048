/*
 * worker.c - a worker process: serves the TLS API and the status listener
 * from the store, asks the uplink/issuer over a Unix socket for the rest.
 * Order: name -> resources -> privileges -> sandbox -> event loop.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "conf.h"
#include "ipc.h"
#include "log.h"
#include "proc.h"
#include "store.h"
#include "worker.h"

#define UPLINK_RETRY_MS	200

struct worker	*worker;

static void	worker_up_connect(evutil_socket_t, short, void *);

static void
worker_accept(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	(void)l, (void)sa, (void)salen;
	/* Each listener's budget is conn.c's: see conn_budget. */
	conn_accept(fd, arg != NULL);
}

static void
worker_up_msg(struct ipc_chan *ch, const struct ipc_msg *m, void *arg)
{
	(void)ch, (void)arg;
	if (m->type == IPC_LEASE_RES)
		license_ipc(m);
	else if (m->type == IPC_SEAT_RES || m->type == IPC_GRANT_RES)
		seats_ipc(m);
}

static void
worker_up_schedule(void)
{
	struct timeval tv = { 0, UPLINK_RETRY_MS * 1000 };

	evtimer_add(worker->up_retry, &tv);
}

static void
worker_up_closed(struct ipc_chan *ch, int bad, void *arg)
{
	(void)ch, (void)arg;
	if (bad)
		log_warnx("bad frame from the uplink");
	ipc_chan_free(worker->up);
	worker->up = NULL;
	license_fail_waiting();
	worker_up_schedule();
}

static void
worker_up_connect(evutil_socket_t unused, short ev, void *arg)
{
	struct sockaddr_un	sun;
	int			fd;

	(void)unused, (void)ev, (void)arg;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, worker->env->ipc_path, sizeof(sun.sun_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		if (fd != -1)
			close(fd);
		worker_up_schedule();
		return;
	}
	evutil_make_socket_nonblocking(fd);
	worker->up = ipc_chan_new(worker->base, fd, worker_up_msg,
	    worker_up_closed, NULL);
	if (worker->up == NULL) {
		close(fd);
		worker_up_schedule();
	}
}

int
worker_send_up(const struct ipc_msg *m)
{
	if (worker->up == NULL)
		return -1;
	return ipc_chan_send(worker->up, m);
}

static void
worker_drain_check(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd, (void)ev, (void)arg;
	if (worker->nconns == 0)
		event_base_loopexit(worker->base, NULL);
}

/* TERM: stop; USR2: a reload replaced us. Either way finish what is open. */
static void
worker_drain(evutil_socket_t sig, short ev, void *arg)
{
	static struct event	*check;
	struct timeval		 tv = { 0, 50 * 1000 };

	(void)ev, (void)arg;
	if (sig == SIGTERM)
		worker->stopping = 1;
	if (worker->draining) {
		if (worker->stopping)
			conn_close_idle();
		return;
	}
	worker->draining = 1;
	evconnlistener_free(worker->l_tls);
	evconnlistener_free(worker->l_status);
	worker->l_tls = worker->l_status = NULL;
	if (worker->stopping)
		conn_close_idle();
	check = event_new(worker->base, -1, EV_PERSIST, worker_drain_check,
	    NULL);
	event_add(check, &tv);
}

static void
worker_listen(void)
{
	int flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;

	worker->l_tls = evconnlistener_new(worker->base, worker_accept, NULL,
	    flags, -1, worker->env->fd_tls);
	worker->l_status = evconnlistener_new(worker->base, worker_accept,
	    worker, flags, -1, worker->env->fd_status);
	if (worker->l_tls == NULL || worker->l_status == NULL)
		fatalx("listeners");
}

void
worker_main(struct proc_env *env)
{
	static struct worker	w;

	worker = &w;
	w.env = env;
	w.cf = env->cf;
	TAILQ_INIT(&w.conns);
	TAILQ_INIT(&w.waiting);
	TAILQ_INIT(&w.idle);
	TAILQ_INIT(&w.status_q);
	if ((w.base = event_base_new()) == NULL || usage_init() == -1 ||
	    license_init() == -1 || access_init(w.cf, w.base) == -1)
		fatalx("event_base_new");
	w.store = proc_open_store(w.cf);
	proc_signals(w.base, w.cf->log.file, worker_drain);
	worker_listen();
	w.up_retry = evtimer_new(w.base, worker_up_connect, NULL);
	worker_up_connect(-1, 0, NULL);
	if (proc_sandbox_worker() == -1)
		fatal("seccomp sandbox");
	proc_ready();
	event_base_dispatch(w.base);
	access_close();
	if (w.draining) {
		log_debug("drained");
		exit(0);
	}
	fatalx("event loop exited");
}

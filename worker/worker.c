/*
 * worker.c - a worker process: serves the TLS API and the status listener
 * from the store, asks the uplink/issuer over a Unix socket for the rest.
 * Order: name -> resources -> privileges -> sandbox -> event loop.
 */
#include <sys/socket.h>

#include <signal.h>
#include <stdlib.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "conf.h"
#include "log.h"
#include "child.h"
#include "proc.h"
#include "sandbox.h"
#include "store.h"
#include "worker.h"

struct worker	*worker;

/* Each listener's budget is conn.c's: see conn_budget. */
static void
worker_accept_tls(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	(void)l, (void)sa, (void)salen, (void)arg;
	conn_accept(fd, LISTEN_TLS);
}

static void
worker_accept_status(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	(void)l, (void)sa, (void)salen, (void)arg;
	conn_accept(fd, LISTEN_STATUS);
}

static void
worker_drain_check(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd, (void)ev, (void)arg;
	if (worker->nconns != 0)
		return;
	access_close();
	log_debug("drained");
	exit(0);
}

/* TERM: stop; USR2: a reload replaced us. Either way finish what is open. */
static void
worker_drain(evutil_socket_t sig, short ev, void *arg)
{
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
	conn_fair();	/* no longer accepting: out of the others' reckoning */
	if (worker->stopping)
		conn_close_idle();
	worker->drain_ev = event_new(worker->base, -1, EV_PERSIST,
	    worker_drain_check, NULL);
	if (worker->drain_ev == NULL || event_add(worker->drain_ev, &tv) == -1)
		fatalx("drain timer");
}

static void
worker_listen(void)
{
	int flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;

	worker->l_tls = evconnlistener_new(worker->base, worker_accept_tls, NULL,
	    flags, -1, worker->env->fd_tls);
	worker->l_status = evconnlistener_new(worker->base,
	    worker_accept_status, NULL, flags, -1, worker->env->fd_status);
	if (worker->l_tls == NULL || worker->l_status == NULL)
		fatalx("listeners");
	worker->accepting = 1;
	conn_fair();	/* this worker accepts from now: its count is 0 */
}

void
worker_main(struct proc_env *env)
{
	static struct worker	w;

	/* name */
	proc_name(proc_role_comm(PROC_WORKER));
	/* acquire: the inherited listeners and TLS context, the event base */
	worker = &w;
	w.env = env;
	w.cf = env->cf;
	if ((w.base = event_base_new()) == NULL ||
	    access_init(w.cf, w.base) == -1)
		fatalx("event_base_new");
	conn_init();
	/* drop, then the store as server.user */
	if (proc_drop_privs(w.cf->server.user) == -1)
		exit(2);
	w.store = child_open_store(w.cf);
	proc_signals(w.base, w.cf->log.file, worker_drain);
	worker_listen();
	if (upchan_init(conn_lease_answer, conn_uplink_lost) == -1)
		fatalx("uplink channel");
	/* sandbox */
	if (sandbox_worker() == -1)
		fatal("seccomp sandbox");
	proc_ready();
	/* loop: a drain ends in worker_drain_check, which exits 0 */
	event_base_dispatch(w.base);
	fatalx("event loop exited");
}

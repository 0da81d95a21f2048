/*
 * conn.c - one client connection and its request's state machine: TLS (or
 * plain, on the status listener), a strict bounded request reader, routing
 * to the handlers, parking a request on the uplink or the group commit and
 * resuming it, and replies written as one buffer so each response leaves
 * in a single TLS record (conn_out.c, the output half). Only these two
 * files write a connection's state; the handlers return an outcome
 * (docs/ARCHITECTURE.md, "The request state machine").
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "conf.h"
#include "ipc.h"
#include "log.h"
#include "proc.h"
#include "stats.h"
#include "worker.h"

#define RETRY_AFTER	5	/* seconds, when nothing at all answers */
#define ISSUER_WAIT_MS	5000	/* an issuer signs locally: no URL timeouts */

typedef enum outcome handler_start(const struct conn *, struct req_state *,
    struct reply *);
typedef enum outcome handler_resume(const struct conn *, struct req_state *,
    const struct lease_answer *, struct reply *);

struct route {
	enum listener_kind	 kind;
	enum stats_ep		 ep;	/* EP_OTHER: any path of the listener */
	unsigned int		 methods;	/* 1 << enum http_method */
	const char		*allow;		/* the 405's Allow header */
	const char		*deny;		/* the 405's message */
	handler_start		*start;
	handler_resume		*resume;	/* NULL: never waits on a lease */
};

#define M(m)	(1u << (m))
static const struct route routes[] = {
	{ LISTEN_TLS, EP_LICENSE, M(HTTP_GET) | M(HTTP_HEAD), "GET, HEAD",
	    "method not allowed here", license_start, license_resume },
	{ LISTEN_TLS, EP_USAGE, M(HTTP_POST), "POST",
	    "method not allowed here", usage_start, usage_resume },
	{ LISTEN_TLS, EP_SEATS, M(HTTP_GET) | M(HTTP_POST) | M(HTTP_DELETE),
	    "GET, POST, DELETE", "method not allowed here", seats_start,
	    seats_resume },
	{ LISTEN_TLS, EP_SEATS_GRANT, M(HTTP_PUT), "PUT",
	    "method not allowed here", seats_start, seats_resume },
	/* The status listener refuses a method before looking at the path. */
	{ LISTEN_STATUS, EP_OTHER, M(HTTP_GET) | M(HTTP_HEAD), "GET, HEAD",
	    "use GET", status_start, NULL },
};
#undef M

#define CONN_TIMEOUTS	3	/* header, body, keep-alive */
static struct {
	int			 ms;
	const struct timeval	*tv;
} conn_tmo[CONN_TIMEOUTS];

static void	conn_read(struct conn *);
static void	conn_readable(evutil_socket_t, short, void *);
static void	conn_writable(evutil_socket_t, short, void *);

/*
 * One timer per connection, re-armed (never reallocated) as the phase
 * changes: accept -> end of head, end of head -> end of body, reply ->
 * first byte of the next request. Totals, not gaps between bytes.
 */
static void
conn_deadline(struct conn *c, int ms)
{
	struct timeval	tv = { ms / 1000, (ms % 1000) * 1000 };
	size_t		i;

	/*
	 * Every connection's deadline is one of three durations: libevent's
	 * common timeouts keep each in a FIFO queue, so re-arming (twice per
	 * request) is O(1) instead of a min-heap update.
	 */
	for (i = 0; i < CONN_TIMEOUTS; i++)
		if (conn_tmo[i].ms == ms && conn_tmo[i].tv != NULL) {
			evtimer_add(c->timer, conn_tmo[i].tv);
			return;
		}
	evtimer_add(c->timer, &tv);
}

/* The three deadlines' common timeouts (see conn_deadline). */
static void
conn_timeouts_init(void)
{
	const struct conf	*cf = worker->cf;
	int			 ms[CONN_TIMEOUTS] = { cf->server.header_timeout_ms,
				    cf->server.body_timeout_ms,
				    cf->server.keepalive_timeout_ms };
	struct timeval		 tv;
	size_t			 i;

	for (i = 0; i < CONN_TIMEOUTS; i++) {
		tv.tv_sec = ms[i] / 1000;
		tv.tv_usec = (ms[i] % 1000) * 1000;
		conn_tmo[i].ms = ms[i];
		/* NULL (a full table): that deadline takes the heap. */
		conn_tmo[i].tv = event_base_init_common_timeout(worker->base,
		    &tv);
	}
}

/* The TLS listener is on unless the port is full or the share too big. */
static void
conn_listen_set(void)
{
	int on = !worker->tls_paused && !worker->fair_paused;

	if (worker->l_tls == NULL || on == worker->accepting)
		return;
	worker->accepting = on;
	if (on)
		evconnlistener_enable(worker->l_tls);
	else
		evconnlistener_disable(worker->l_tls);
}

/*
 * The workers share one listening socket, and a burst of connects (a
 * load balancer's, a restarted fleet's) mostly goes to whichever worker
 * is awake: libevent accepts until the backlog is empty. Keep-alive
 * clients then stay where they landed, one worker busy and the other
 * idle. So each worker publishes its TLS connections in its stats slot
 * and stops accepting while it holds more than CONN_FAIR_SLACK over the
 * least loaded worker that accepts; that worker is never paused by this,
 * so accepts never stop. Evaluated on accepts and closes (a slot scan,
 * per connection, not per request) and every CONN_FAIR_RECHECK_MS while
 * paused, since only the others' accepts can end the pause. A worker we
 * yield to may be stuck (on a disk, a lock, SIGSTOP): a connect waiting
 * while no worker accepted anything for two whole ticks means nobody
 * takes it, and the rule is off for CONN_FAIR_OFF_MS.
 */
#define CONN_FAIR_SLACK		4
#define CONN_FAIR_RECHECK_MS	20
#define CONN_FAIR_OFF_MS	1000

/* Accepts by all workers so far: it stands still when nobody takes any. */
static uint64_t
conn_accepts_all(void)
{
	struct stats_shared	*sb = stats_block();
	uint64_t		 n = 0;
	int			 i;

	for (i = 0; sb != NULL && i < STATS_MAX_SLOTS; i++)
		if (sb->slots[i].role == PROC_WORKER)
			n += __atomic_load_n(&sb->slots[i].tls_accepts,
			    __ATOMIC_RELAXED);
	return n;
}

static int
conn_lopsided(void)
{
	struct stats_shared	*sb = stats_block();
	struct stats_slot	*me = stats_slot_self();
	int			 i, n, least = INT_MAX;

	if (sb == NULL || me == NULL)
		return 0;
	__atomic_store_n(&me->tls_conns, worker->l_tls != NULL &&
	    !worker->tls_paused ? worker->ntls : -1, __ATOMIC_RELAXED);
	if (worker->l_tls == NULL || proc_now_ms() < worker->fair_off_ms)
		return 0;
	for (i = 0; i < STATS_MAX_SLOTS; i++) {
		const struct stats_slot *s = &sb->slots[i];

		if (s == me || s->role != PROC_WORKER ||
		    __atomic_load_n(&s->pid, __ATOMIC_ACQUIRE) == 0 ||
		    (n = __atomic_load_n(&s->tls_conns, __ATOMIC_RELAXED)) < 0)
			continue;
		if (n < least)
			least = n;
	}
	return least != INT_MAX && worker->ntls > least + CONN_FAIR_SLACK;
}

void
conn_fair(void)
{
	static const struct timeval recheck = { 0,
	    CONN_FAIR_RECHECK_MS * 1000 };
	int lop = conn_lopsided();

	if (lop == worker->fair_paused)
		return;
	worker->fair_paused = lop;
	if (lop) {
		worker->fair_seen = conn_accepts_all();
		evtimer_add(worker->fair_ev, &recheck);
	} else
		evtimer_del(worker->fair_ev);
	conn_listen_set();
}

static void
conn_fair_tick(evutil_socket_t fd, short ev, void *arg)
{
	struct pollfd	p = { worker->env->fd_tls, POLLIN, 0 };
	uint64_t	seen = conn_accepts_all();

	(void)fd, (void)ev, (void)arg;
	conn_fair();
	if (!worker->fair_paused) {
		worker->fair_waited = 0;
		return;
	}
	/*
	 * Two workers may both be paused until the staler one's next look
	 * (up to a tick): so only two ticks in a row without an accept
	 * anywhere, with a connect waiting, mean nobody takes it.
	 */
	if (seen == worker->fair_seen && poll(&p, 1, 0) == 1 &&
	    (p.revents & POLLIN)) {
		if (worker->fair_waited++ >= 1) {
			worker->fair_off_ms = proc_now_ms() + CONN_FAIR_OFF_MS;
			worker->fair_waited = 0;
			conn_fair();
		}
	} else
		worker->fair_waited = 0;
	worker->fair_seen = seen;
}

/*
 * TLS accepts pause while the port is full and nothing is idle; the
 * status listener never pauses. The warning is once a minute at most: a
 * flood flips this on every accept.
 */
static void
conn_budget(void)
{
	time_t	now;
	int	full = worker->ntls >= worker->cf->server.max_connections &&
		    TAILQ_EMPTY(&worker->idle);

	if (worker->l_tls == NULL || full == worker->tls_paused)
		return;
	worker->tls_paused = full;
	conn_listen_set();
	if (!full)
		return;
	if ((now = time(NULL)) - worker->tls_warned >= 60) {
		worker->tls_warned = now;
		log_warnx("TLS port full: %d connections, none idle "
		    "(server.max_connections); accepts paused", worker->ntls);
	}
}

static void
conn_count(enum stats_close why)
{
	if (stats_slot_self() != NULL)
		__atomic_add_fetch(&stats_slot_self()->closed[why], 1,
		    __ATOMIC_RELAXED);
}

/* Every state change; an idle TLS connection sits on the idle queue. */
static void
conn_to(struct conn *c, enum conn_state s)
{
	int was = c->state == CONN_IDLE, idle = s == CONN_IDLE;

	c->state = s;
	if (was == idle || c->kind == LISTEN_STATUS)
		return;		/* status conns stay on status_q */
	if (idle)
		TAILQ_INSERT_TAIL(&worker->idle, c, qentry);
	else
		TAILQ_REMOVE(&worker->idle, c, qentry);
	conn_budget();
}

/*
 * A request's end: the handlers' scratch goes; the key in it only with
 * the connection (license_clear).
 */
static void
conn_end_request(struct conn *c, int conn_ends)
{
	free(c->body);
	c->body = NULL;
	c->route = NULL;
	license_clear(&c->hs, conn_ends);
	usage_clear(&c->hs);
}

/*
 * At most once a second: a site whose clients each make one request and
 * close would otherwise walk the heap after every connection.
 */
static void
conn_trim(void)
{
	int64_t now = proc_now_us();

	if (now - worker->trimmed_us < 1000000)
		return;
	worker->trimmed_us = now;
	malloc_trim(0);
}

static void
conn_free(struct conn *c)
{
	enum listener_kind kind = c->kind;

	if (c->state == CONN_LEASE)
		TAILQ_REMOVE(&worker->waiting, c, wentry);
	else if (c->state == CONN_COMMIT)
		TAILQ_REMOVE(&worker->batch, c, wentry);
	conn_to(c, CONN_CLOSING);
	conn_end_request(c, 1);
	TAILQ_REMOVE(&worker->conns, c, entry);
	worker->nconns--;
	if (c->kind == LISTEN_STATUS) {
		TAILQ_REMOVE(&worker->status_q, c, qentry);
		worker->nstatus--;
	} else
		worker->ntls--;
	conn_io_free(c);
	close(c->fd);
	explicit_bzero(c->req.auth, sizeof(c->req.auth));	/* the key */
	if (c->in != NULL)
		explicit_bzero(c->in, c->incap);	/* keys too */
	free(c->in);
	free(c);
	/*
	 * The last connection gone: hand the heap a burst grew (TLS state
	 * of many connections) back to the kernel, or glibc keeps it and an
	 * idle worker stays megabytes larger than it needs to be.
	 */
	if (worker->nconns == 0)
		conn_trim();
	conn_budget();
	if (kind == LISTEN_TLS)
		conn_fair();
}

/*
 * Room for one more on a full listener. The TLS port closes its oldest
 * idle keep-alive connection; the status listener, which must always
 * answer /healthz, closes its oldest connection of any kind (status
 * requests are answered at once, so that one is slow or idle).
 */
static int
conn_make_room(enum listener_kind kind)
{
	struct conn	*old;
	int		 st = kind == LISTEN_STATUS;

	if (st) {
		if (worker->nstatus < WORKER_STATUS_CONNS)
			return 0;
		old = TAILQ_FIRST(&worker->status_q);
	} else {
		if (worker->ntls < worker->cf->server.max_connections)
			return 0;
		old = TAILQ_FIRST(&worker->idle);
	}
	if (old == NULL)
		return -1;
	log_debug("%s listener full: oldest %s connection closed",
	    st ? "status" : "TLS", st ? "status" : "idle");
	conn_count(st ? CLOSE_STATUS_EVICTED : CLOSE_IDLE_EVICTED);
	conn_free(old);
	return 0;
}

/* The one reply path: every answer on either listener leaves here. */
static void
conn_send(struct conn *c, struct reply *rp)
{
	int keep = c->req.keepalive && !worker->draining && !c->peer_eof &&
	    worker->cf->server.keepalive_timeout_ms > 0;

	if (conn_out_reply(c, rp, &keep) <= 0)
		keep = 0;
	free(rp->owned);
	conn_end_request(c, 0);
	if (!keep) {
		conn_to(c, CONN_CLOSING);
		conn_in_stop(c);
		/* Never freed here (callers may still hold c): the write
		 * event frees it once the queue is empty. */
		if (evbuffer_get_length(c->out) == 0)
			event_active(c->wev, EV_WRITE, 1);
		/* A client that does not read its answer is not waited for. */
		conn_deadline(c, worker->cf->server.header_timeout_ms);
		return;
	}
	conn_to(c, CONN_IDLE);
	conn_deadline(c, worker->cf->server.keepalive_timeout_ms);
	/* A pipelined request may already be buffered (not when conn_read's
	 * own loop is below us: it picks it up without recursing). */
	if (!c->in_read && c->inend > c->inoff)
		conn_read(c);
	else
		conn_in_shrink(c);
	conn_in_resume(c);
}

/* conn.c's own refusals (framing, deadlines); closes after answering. */
static void
conn_fail(struct conn *c, int code, const char *error, const char *msg)
{
	struct reply rp;

	c->req.keepalive = 0;
	reply_init(&rp);
	reply_error(&rp, code, error, msg, NULL);
	conn_send(c, &rp);
}

static void
conn_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct conn	*c = arg;
	int		 body = c->state == CONN_BODY;

	(void)fd, (void)ev;
	if (c->state == CONN_IDLE) {
		conn_out_close(c);	/* keep-alive idle: a clean close */
		conn_free(c);
		return;
	}
	if (c->state != CONN_HEAD && !body) {
		conn_free(c);	/* an unread answer */
		return;
	}
	log_debug("slow client: request %s not complete in time",
	    body ? "body" : "head");
	conn_count(body ? CLOSE_BODY_TIMEOUT : CLOSE_HEADER_TIMEOUT);
	/* Part of a request arrived: say why we close. */
	if (body || c->inend > c->inoff)
		conn_fail(c, 408, "timeout", body ?
		    "request body too slow" : "request head too slow");
	else
		conn_free(c);
}

/* The connection's own I/O: an SSL on the fd (TLS), two events, a queue. */
static int
conn_io_new(struct conn *c, int fd)
{
	c->fd = fd;
	if (c->kind == LISTEN_TLS) {
		if ((c->ssl = SSL_new(worker->env->tls)) == NULL ||
		    SSL_set_fd(c->ssl, fd) != 1)
			return -1;
		SSL_set_accept_state(c->ssl);
	}
	c->rev = event_new(worker->base, fd, EV_READ | EV_PERSIST,
	    conn_readable, c);
	c->wev = event_new(worker->base, fd, EV_WRITE, conn_writable, c);
	c->out = evbuffer_new();
	c->timer = evtimer_new(worker->base, conn_timeout, c);
	if (c->rev == NULL || c->wev == NULL || c->out == NULL ||
	    c->timer == NULL)
		return -1;
	return 0;
}

void
conn_accept(int fd, enum listener_kind kind)
{
	struct conn	*c;
	int		 one = 1;

	/* Without NODELAY keep-alive replies wait for the peer's delayed ACK. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (conn_make_room(kind) == -1 ||
	    (c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return;
	}
	c->kind = kind;
	if (conn_io_new(c, fd) == -1) {
		conn_io_free(c);
		close(fd);
		free(c);
		return;
	}
	TAILQ_INSERT_TAIL(&worker->conns, c, entry);
	worker->nconns++;
	if (kind == LISTEN_STATUS) {
		TAILQ_INSERT_TAIL(&worker->status_q, c, qentry);
		worker->nstatus++;
	} else
		worker->ntls++;
	conn_budget();
	if (kind == LISTEN_TLS) {
		if (stats_slot_self() != NULL)
			__atomic_add_fetch(&stats_slot_self()->tls_accepts, 1,
			    __ATOMIC_RELAXED);
		conn_fair();
	}
	c->state = CONN_HEAD;
	/* From accept: the TLS handshake counts against header_timeout. */
	conn_deadline(c, worker->cf->server.header_timeout_ms);
	c->reading = 1;
	event_add(c->rev, NULL);
}

/* What the handler did: answered, or parked on the uplink or the commit. */
static void
conn_step(struct conn *c, enum outcome o, struct reply *rp)
{
	switch (o) {
	case OUT_LEASE:
		c->rid = rp->rid;
		c->wait_ms = proc_now_ms();
		TAILQ_INSERT_TAIL(&worker->waiting, c, wentry);
		conn_to(c, CONN_LEASE);
		break;
	case OUT_COMMIT:
		TAILQ_INSERT_TAIL(&worker->batch, c, wentry);
		conn_to(c, CONN_COMMIT);
		usage_park();	/* when the commit runs: usage.c */
		break;
	case OUT_REPLY:
		conn_send(c, rp);
		break;
	}
}

static const struct route *
conn_route(const struct conn *c)
{
	size_t i;

	for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (routes[i].kind == c->kind &&
		    (routes[i].ep == c->ep || routes[i].ep == EP_OTHER))
			return &routes[i];
	return NULL;
}

/* The whole request has arrived: hand it to its handler. */
static void
conn_dispatch(struct conn *c)
{
	const struct route	*r = conn_route(c);
	struct reply		 rp;

	/*
	 * Reading stays enabled (toggling it costs epoll_ctl calls on every
	 * request); conn_read leaves bytes buffered while a request is
	 * parked, bounded by the read watermark. Waiting on the uplink or a
	 * commit is not the client being slow: no deadline meanwhile.
	 */
	evtimer_del(c->timer);
	reply_init(&rp);
	if (r == NULL)
		reply_error(&rp, 404, "not_found", "no such endpoint", NULL);
	else if (!(r->methods & (1u << c->req.method))) {
		reply_error(&rp, 405, "method_not_allowed", r->deny, NULL);
		reply_header(&rp, "Allow: %s\r\n", r->allow);
	} else {
		c->route = r;
		conn_step(c, r->start(c, &c->hs, &rp), &rp);
		return;
	}
	conn_send(c, &rp);
}

/* A parked lease request continues in its handler, after the lookup. */
static void
conn_resume(struct conn *c, const struct lease_answer *a)
{
	struct reply rp;

	TAILQ_REMOVE(&worker->waiting, c, wentry);
	c->rid = 0;
	reply_init(&rp);
	conn_step(c, c->route->resume(c, &c->hs, a, &rp), &rp);
}

void
conn_lease_answer(const struct ipc_msg *m)
{
	struct lease_answer	 a;
	struct conn		*c;

	TAILQ_FOREACH(c, &worker->waiting, wentry)
		if (c->rid == m->rid)
			break;
	if (c == NULL)
		return;		/* the client went away meanwhile */
	a.status = m->status;
	a.reason = m->reason[0] ? m->reason : "unknown";
	a.retry_after = m->retry_after > 0 ? m->retry_after : RETRY_AFTER;
	a.msg = m;
	conn_resume(c, &a);
}

/* The uplink went away: nobody will answer the waiting requests. */
void
conn_uplink_lost(void)
{
	const struct lease_answer	 a = { 503, NULL, 1, NULL };
	struct conn			*c;

	while ((c = TAILQ_FIRST(&worker->waiting)) != NULL)
		conn_resume(c, &a);
}

/*
 * The uplink answers within its own timeouts; this deadline only guards a
 * client against an uplink that hangs: every URL's timeout, plus slack.
 */
static void
conn_sweep(evutil_socket_t fd, short ev, void *arg)
{
	const struct lease_answer	 a = { 503, NULL, RETRY_AFTER, NULL };
	const struct conf		*cf = worker->cf;
	int64_t				 limit, now = proc_now_ms();
	struct conn			*c;

	(void)fd, (void)ev, (void)arg;
	limit = cf->mode == CONF_AUTHORITY ? ISSUER_WAIT_MS :
	    (int64_t)cf->license.timeout_ms * cf->license.n_server_url + 2000;
	/* FIFO: the oldest waiter is first. */
	while ((c = TAILQ_FIRST(&worker->waiting)) != NULL &&
	    now - c->wait_ms > limit)
		conn_resume(c, &a);
}

/*
 * The group commit: every usage request parked in this loop turn goes
 * into one store transaction, then each hears its answer. The batch is
 * taken off first: an answer may start a pipelined request that parks
 * for the next commit.
 */
static void
conn_commit(evutil_socket_t fd, short ev, void *arg)
{
	struct connq		  q = TAILQ_HEAD_INITIALIZER(q);
	struct req_state	**v;
	struct conn		 *c;
	struct reply		  rp;
	int			  n = 0, rv = -1;

	(void)fd, (void)ev, (void)arg;
	TAILQ_CONCAT(&q, &worker->batch, wentry);
	TAILQ_FOREACH(c, &q, wentry)
		n++;
	if ((v = calloc(n > 0 ? n : 1, sizeof(*v))) != NULL) {
		n = 0;
		TAILQ_FOREACH(c, &q, wentry)
			v[n++] = &c->hs;
		rv = usage_commit(v, n);
		free(v);
	}
	while ((c = TAILQ_FIRST(&q)) != NULL) {
		TAILQ_REMOVE(&q, c, wentry);
		c->state = CONN_BODY;	/* off the batch: not to be unlinked */
		reply_init(&rp);
		usage_answer(&c->hs, rv, &rp);
		conn_send(c, &rp);
	}
}

/*
 * Expect: 100-continue: the client holds the body back until told; not
 * when some of it already came (RFC 9110 10.1.1 lets us omit it then).
 */
static void
conn_continue(struct conn *c)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

	if (c->req.expect_continue && c->inend == c->inoff)
		conn_out_write(c, cont, sizeof(cont) - 1);
}

/* Head parsed: decide about the body before reading any of it. */
static int
conn_check_body(struct conn *c)
{
	struct http_req *r = &c->req;

	if (r->chunked) {
		conn_fail(c, 411, "length_required",
		    "send the body with Content-Length");
		return -1;
	}
	if (r->content_length > (int64_t)worker->cf->server.max_body) {
		/* We will not read that body: the connection closes. */
		conn_fail(c, 413, "too_large", "body exceeds server.max_body");
		return -1;
	}
	if (r->content_length > 0) {
		conn_deadline(c, worker->cf->server.body_timeout_ms);
		conn_continue(c);
	}
	return 0;
}

static int
conn_read_head(struct conn *c)
{
	size_t		len = c->inend - c->inoff;
	size_t		max = worker->cf->server.max_header;
	struct reply	rp;
	int		 r;

	if (len > max + 4)
		len = max + 4;
	r = http_parse(c->in + c->inoff, len, max, &c->req, &c->headlen);
	if (r == HTTP_PARSE_MORE) {
		/* The deadline bounds the wait (a whole head never needs it). */
		if (c->head_unarmed)
			conn_deadline(c, worker->cf->server.header_timeout_ms);
		c->head_unarmed = 0;
		return 0;
	}
	if (r != HTTP_PARSE_OK) {
		c->req.keepalive = 0;
		reply_init(&rp);
		reply_parse_error(&rp, r);
		conn_send(c, &rp);
		return -1;
	}
	conn_to(c, CONN_BODY);
	c->ep = stats_endpoint(c->req.path);
	if (access_enabled())
		c->t0_us = proc_now_us();
	conn_in_consume(c, c->headlen);
	return conn_check_body(c) == 0 ? 1 : -1;
}

static int
conn_reading(const struct conn *c)
{
	return c->state == CONN_HEAD || c->state == CONN_IDLE ||
	    c->state == CONN_BODY;
}

/*
 * Every whole request buffered, in order (pipelining), but none while an
 * answer is still queued: a client that pipelines and never reads would
 * otherwise grow the queue without end. Then the input buffer fills to
 * its bound and reading stops; conn_writable goes on once the queue is
 * out.
 */
static void
conn_read(struct conn *c)
{
	size_t need;

	c->in_read = 1;
	while (conn_reading(c) && c->inend > c->inoff &&
	    evbuffer_get_length(c->out) == 0) {
		if (c->state == CONN_IDLE) {
			/* header_timeout from its first byte (conn_read_head) */
			conn_to(c, CONN_HEAD);
			c->head_unarmed = 1;
		}
		if (c->state == CONN_HEAD && conn_read_head(c) <= 0)
			break;
		need = c->req.content_length > 0 ?
		    (size_t)c->req.content_length : 0;
		if (c->inend - c->inoff < need)
			break;
		c->bodylen = need;
		if (need > 0) {
			if ((c->body = malloc(need + 1)) == NULL) {
				conn_fail(c, 500, "internal", "out of memory");
				break;
			}
			memcpy(c->body, c->in + c->inoff, need);
			conn_in_consume(c, need);
			c->body[need] = '\0';
		}
		conn_dispatch(c);
	}
	c->in_read = 0;
}

/* The peer's end of input, after what it sent before it was handled. */
static void
conn_eof(struct conn *c)
{
	if (c->state == CONN_LEASE || c->state == CONN_COMMIT) {
		/* A half-close after the request still gets its answer. */
		c->peer_eof = 1;
		conn_in_stop(c);
		return;
	}
	if (c->state == CONN_IDLE && evbuffer_get_length(c->out) > 0) {
		conn_to(c, CONN_CLOSING);	/* the last answer first */
		conn_deadline(c, worker->cf->server.header_timeout_ms);
	}
	if (c->state == CONN_CLOSING) {
		conn_in_stop(c);	/* the answer is still leaving */
		return;
	}
	conn_free(c);
}

static void
conn_readable(evutil_socket_t fd, short ev, void *arg)
{
	struct conn	*c = arg;
	enum conn_io	 r;

	(void)fd, (void)ev;
	/* A queued record whose SSL_write wanted a read. */
	if (evbuffer_get_length(c->out) > 0 && conn_out_flush(c) < 0) {
		conn_free(c);
		return;
	}
	if (!c->reading || c->state == CONN_CLOSING)
		return;
	r = conn_in_fill(c);
	conn_read(c);
	switch (r) {
	case IO_OK:
		break;
	case IO_FULL:
		if (conn_in_full(c))
			conn_in_stop(c);
		else
			event_active(c->rev, EV_READ, 1);
		break;
	case IO_EOF:
		conn_eof(c);
		break;
	case IO_WANT_WRITE:
		c->rd_wants_write = 1;
		event_add(c->wev, NULL);
		break;
	default:
		conn_out_plain_http(c);
		conn_free(c);
		break;
	}
}

/* The queue drained, a closing reply's end, or SSL_read's WANT_WRITE. */
static void
conn_writable(evutil_socket_t fd, short ev, void *arg)
{
	struct conn	*c = arg;
	int		 r;

	(void)fd, (void)ev;
	if ((r = conn_out_flush(c)) < 0) {
		conn_free(c);
		return;
	}
	if (c->rd_wants_write) {
		c->rd_wants_write = 0;
		event_active(c->rev, EV_READ, 1);
	}
	if (r == 1 && c->state == CONN_CLOSING) {
		conn_out_close(c);
		conn_free(c);
		return;
	}
	if (r == 1 && conn_reading(c) && c->inend > c->inoff) {
		conn_read(c);		/* what waited behind the queue */
		if (conn_reading(c))
			conn_in_resume(c);
	}
}

/* Draining: idle keep-alive connections go now; busy ones after replying. */
void
conn_close_idle(void)
{
	struct conn *c, *next;

	for (c = TAILQ_FIRST(&worker->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if ((c->state == CONN_HEAD || c->state == CONN_IDLE) &&
		    c->inend == c->inoff)
			conn_free(c);
	}
}

void
conn_init(void)
{
	struct timeval tv = { 1, 0 };

	TAILQ_INIT(&worker->conns);
	TAILQ_INIT(&worker->idle);
	TAILQ_INIT(&worker->status_q);
	TAILQ_INIT(&worker->waiting);
	TAILQ_INIT(&worker->batch);
	conn_timeouts_init();
	worker->commit_ev = event_new(worker->base, -1, 0, conn_commit, NULL);
	worker->sweep_ev = event_new(worker->base, -1, EV_PERSIST, conn_sweep,
	    NULL);
	worker->fair_ev = event_new(worker->base, -1, EV_PERSIST,
	    conn_fair_tick, NULL);
	if (worker->commit_ev == NULL || worker->sweep_ev == NULL ||
	    worker->fair_ev == NULL ||
	    event_add(worker->sweep_ev, &tv) == -1)
		fatalx("conn_init: events");
}

/* worker.h - state shared by the worker's modules (one worker per process). */
#ifndef WORKER_H
#define WORKER_H

#include <sys/queue.h>
#include <stdint.h>
#include <time.h>

#include "http.h"
#include "stats.h"
#include "token.h"

struct conf;
struct conn;
struct event;
struct event_base;
struct evbuffer;
struct evconnlistener;
struct ipc_msg;
struct json_t;
struct lease;
struct proc_env;
struct stats_shared;
struct store;
struct usage_rec;

TAILQ_HEAD(connq, conn);

/* Which inherited listener a connection came from. */
enum listener_kind { LISTEN_TLS, LISTEN_STATUS };

struct worker {
	struct event_base	*base;
	struct proc_env		*env;
	const struct conf	*cf;
	struct store		*store;
	struct evconnlistener	*l_tls, *l_status;
	struct connq		 conns;
	int			 nconns;	/* both listeners */
	int64_t			 trimmed_us;	/* last malloc_trim (conn.c) */
	int			 ntls, nstatus;	/* each listener's own budget */
	struct connq		 idle;		/* TLS keep-alive idle, oldest first */
	struct connq		 status_q;	/* status conns, oldest first */
	int			 tls_paused;	/* TLS full and nothing idle */
	int			 fair_paused;	/* ahead of another worker (conn_fair) */
	int			 accepting;	/* l_tls is enabled */
	struct event		*fair_ev;	/* re-checks while fair_paused */
	uint64_t		 fair_seen;	/* all workers' accepts, last tick */
	int			 fair_waited;	/* ticks a connect waited, none taken */
	int64_t			 fair_off_ms;	/* yield to nobody until then */
	time_t			 tls_warned;	/* last "TLS port full" line */
	int			 draining;	/* USR2 (reload) or TERM */
	int			 stopping;	/* TERM: close idle at once */
	struct event		*drain_ev;	/* draining: exit once none left */
	struct connq		 waiting;	/* CONN_LEASE, oldest first */
	struct event		*sweep_ev;	/* answers waiters the uplink forgot */
	struct connq		 batch;		/* CONN_COMMIT, in arrival order */
	struct event		*commit_ev;
};

extern struct worker	*worker;

/*
 * What a handler fills in for conn.c to send: code, content type, extra
 * header lines and body. The body is static, in buf, or in owned (freed
 * after the write). rid is the request id a parked lease request awaits.
 */
#define REPLY_BUF	(TOKEN_MAX + 1100)	/* a lease 200, the largest */
#define REPLY_EXTRA	128

struct reply {
	int		 code;
	const char	*ctype;		/* NULL: application/json */
	char		 extra[REPLY_EXTRA];	/* "\r\n"-terminated lines */
	const char	*body;
	size_t		 len;
	char		*owned;
	const char	*source;	/* a lease 200's source, for the log */
	uint32_t	 rid;
	char		 buf[REPLY_BUF];
};

/* What a handler did with a request. */
enum outcome {
	OUT_REPLY,	/* answered: send rp */
	OUT_LEASE,	/* parked until the uplink/issuer answers rp->rid */
	OUT_COMMIT	/* parked until the next group commit */
};

/* The uplink/issuer's answer to a parked lease request. */
struct lease_answer {
	int		 status;	/* 200, 403, or anything else: 503 */
	const char	*reason;	/* with 403 */
	int		 retry_after;	/* with 503 */
	const struct ipc_msg *msg;	/* the answer itself; NULL: none came */
};

/*
 * Handlers' own scratch space, one per connection. conn.c never reads it;
 * it only asks the handlers to clear it when a request ends.
 */
struct req_state {
	struct {			/* license.c: the caller's key */
		char		 key[TOKEN_KEY_LEN + 1];
		unsigned char	 sha[32];
		int		 hashed;	/* sha is key's hash */
		int		 current;	/* key is this request's */
	} lic;
	struct {			/* usage.c: validated records */
		struct usage_rec *recs;
		int		  n;
		int		  dups;
	} usage;
	struct {			/* seats.c: what the parked request awaits */
		enum { SEATS_LEASE, SEATS_SEAT } phase;
	} seats;
};
/* worker.c: the entry, after fork; never returns. */
void	 worker_main(struct proc_env *) __attribute__((noreturn));

/* conn.c */
/* The status listener's budget, apart from server.max_connections. */
#define WORKER_STATUS_CONNS	64

/*
 * A connection's state; conn.c alone writes it (docs/ARCHITECTURE.md,
 * "The request state machine").
 */
enum conn_state {
	CONN_HEAD,	/* reading a request head (from accept: TLS too) */
	CONN_IDLE,	/* keep-alive, no byte of the next request yet */
	CONN_BODY,	/* head parsed, reading the body; then handled */
	CONN_LEASE,	/* parked on rid: a LEASE_RES (or SEAT/GRANT_RES) */
	CONN_COMMIT,	/* parked: awaiting the group commit */
	CONN_CLOSING	/* answered; freed once written */
};

struct route;

struct conn {
	TAILQ_ENTRY(conn)	 entry;		/* worker->conns */
	TAILQ_ENTRY(conn)	 wentry;	/* worker->waiting or ->batch */
	TAILQ_ENTRY(conn)	 qentry;	/* worker->idle or ->status_q */
	int			 fd;
	struct ssl_st		*ssl;		/* NULL on the status listener */
	struct event		*rev;		/* EV_READ|EV_PERSIST on fd */
	struct event		*wev;		/* EV_WRITE, while out waits */
	struct evbuffer		*out;		/* what did not leave at once */
	char			*in;		/* input: [inoff, inend) unread */
	size_t			 incap, inoff, inend;
	int			 reading;	/* rev is added */
	int			 rd_wants_write;	/* SSL_read: WANT_WRITE */
	int			 io_err;	/* a write failed: free c */
	int			 plain_http;	/* HTTP sent to the TLS port */
	struct event		*timer;		/* the one deadline, re-armed */
	enum listener_kind	 kind;
	enum conn_state		 state;
	int			 in_read;	/* conn_read is on the stack */
	int			 peer_eof;	/* client half-closed while parked */
	int			 head_unarmed;	/* HEAD: keep-alive deadline still */
	enum stats_ep		 ep;		/* the path, looked up once */
	const struct route	*route;		/* its handler */
	struct http_req		 req;
	size_t			 headlen;
	char			*body;
	size_t			 bodylen;
	int64_t			 t0_us;		/* head read (access log) */
	char			 peer[48];	/* access log: "" until needed */
	uint32_t		 rid;		/* CONN_LEASE: the id awaited */
	int64_t			 wait_ms;	/* when it started waiting */
	struct req_state	 hs;		/* the handler's, see above */
};

void	 conn_init(void);
void	 conn_accept(int fd, enum listener_kind);
void	 conn_lease_answer(const struct ipc_msg *);
void	 conn_uplink_lost(void);
void	 conn_close_idle(void);
/* After accepts, closes, the drain: this worker's share of the TLS port. */
void	 conn_fair(void);
/* conn_out.c: the reply written (its length, <= 0 on failure; *keep is
 * cleared when the connection cannot stay open), the TLS close_notify. */
int	 conn_out_reply(struct conn *, struct reply *, int *keep);
void	 conn_out_close(struct conn *);
/* conn_out.c: the input buffer, and bytes out (queued if they must wait). */
enum conn_io {
	IO_OK,		/* all there was; more comes with the read event */
	IO_FULL,	/* the buffer is at its bound */
	IO_EOF,
	IO_ERR,
	IO_WANT_READ,	/* (inside conn_out.c) */
	IO_WANT_WRITE
};
enum conn_io conn_in_fill(struct conn *);
void	 conn_in_consume(struct conn *, size_t);
void	 conn_in_shrink(struct conn *);
int	 conn_in_full(const struct conn *);
void	 conn_in_stop(struct conn *);
void	 conn_in_resume(struct conn *);
void	 conn_out_write(struct conn *, const char *, size_t);
/* The queue, from the write event: 1 empty, 0 waiting, -1 failed. */
int	 conn_out_flush(struct conn *);
void	 conn_out_plain_http(struct conn *);
void	 conn_io_free(struct conn *);

/* reply.c: filling in a struct reply (every JSON error by jansson) */
void	 reply_init(struct reply *);
void	 reply_body(struct reply *, int code, const char *ctype,
	    const char *body, size_t len);
void	 reply_owned(struct reply *, int code, const char *ctype, char *body,
	    size_t len);
void	 reply_header(struct reply *, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/* {"error":error,"message":msg[,"reason":reason]}; reason may be NULL. */
void	 reply_error(struct reply *, int code, const char *error,
	    const char *msg, const char *reason);
void	 reply_parse_error(struct reply *, int http_parse_result);

/* upchan.c: the Unix socket to the uplink/issuer */
int	 upchan_init(void (*answer)(const struct ipc_msg *),
	    void (*lost)(void));
int	 upchan_send(const struct ipc_msg *);
/* LEASE_REQ for key with a fresh request id: the id, or 0 if not sent. */
uint32_t upchan_ask(const char *key);
/* Send m (a request to the writer) with a fresh id: the id, or 0. */
uint32_t upchan_request(struct ipc_msg *m);

/* license.c: GET /v1/license, and the key check usage shares */
enum outcome license_start(const struct conn *, struct req_state *,
	    struct reply *);
enum outcome license_resume(const struct conn *, struct req_state *,
	    const struct lease_answer *, struct reply *);
/* The caller's lease into *l: 0, or -1 with *out saying what rp holds. */
int	 license_check(const struct conn *, struct req_state *, struct lease *,
	    struct reply *, enum outcome *out);
int	 license_checked(const struct conn *, struct req_state *,
	    const struct lease_answer *, struct lease *, struct reply *);
/* A request's end; conn_ends: the connection's too (the key goes). */
void	 license_clear(struct req_state *, int conn_ends);
/* The hash of this request's key if the license check ran for it, or NULL. */
const unsigned char *license_key_sha(const struct req_state *);

/* usage.c: POST /v1/usage */
enum outcome usage_start(const struct conn *, struct req_state *,
	    struct reply *);
enum outcome usage_resume(const struct conn *, struct req_state *,
	    const struct lease_answer *, struct reply *);
/* A request was parked for the group commit: schedules the commit. */
void	 usage_park(void);
/* One transaction for the records of all n parked requests. */
int	 usage_commit(struct req_state *const *, int n);
void	 usage_answer(struct req_state *, int rv, struct reply *);
void	 usage_clear(struct req_state *);
/* 0 if s is an RFC 3339 date-time naming a real instant, year >= 1970. */
#define USAGE_TS_MAX	35	/* ...T16:00:00.123456789+01:00 */
int	 usage_ts_valid(const char *s);
/* A body of plain records without jansson: 0, or -1 for the jansson path. */
int	 usage_parse_fast(const char *body, size_t len, const struct lease *,
	    const char *kid, struct usage_rec **, int *n);
/*
 * How a body is read with jansson: a duplicate field is refused. (Not
 * JSON_DECODE_INT_AS_REAL: it reads -0 as -0.0, which the fast reader,
 * reading numbers as jansson does by default, stores as 0.)
 */
#define USAGE_JSON_FLAGS	JSON_REJECT_DUPLICATES
/* One usage record checked as POST /v1/usage does: 0, or -1 naming why. */
int	 usage_record_check(struct json_t *, const struct lease *,
	    const char *kid, struct usage_rec *, const char **field,
	    const char **why);

/* seats.c: /v1/seats (GET, POST, DELETE) and /v1/seats/grant (PUT) */
enum outcome seats_start(const struct conn *, struct req_state *,
	    struct reply *);
enum outcome seats_resume(const struct conn *, struct req_state *,
	    const struct lease_answer *, struct reply *);

/* status.c: the status listener's paths */
enum outcome status_start(const struct conn *, struct req_state *,
	    struct reply *);

/* metrics.c */
void	 metrics_render(const struct stats_shared *, struct reply *);

/* access.c */
struct access_rec {
	const struct http_req	*req;
	int			 have_head;	/* req holds a parsed head */
	const char		*remote;	/* the peer, as access_peer wrote */
	const unsigned char	*sha;		/* its key's hash, or NULL */
	int64_t			 us;		/* head read to answer */
	int			 code;
	size_t			 bytes;
	const char		*source;	/* a lease 200's, else NULL */
};
int	 access_init(const struct conf *, struct event_base *);
int	 access_enabled(void);
void	 access_close(void);	/* flush what is left, before exit */
void	 access_log(const struct access_rec *);
void	 access_peer(int fd, char *buf, size_t len);

#endif

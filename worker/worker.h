/* worker.h - state shared by the worker's modules (one worker per process). */
#ifndef WORKER_H
#define WORKER_H

#include <sys/queue.h>
#include <stdint.h>

#include "http.h"
#include "stats.h"

struct conf;
struct conn;
struct event;
struct event_base;
struct evconnlistener;
struct ipc_chan;
struct ipc_msg;
struct lease;
struct proc_env;
struct stats_shared;
struct store;
struct usage_rec;

TAILQ_HEAD(connq, conn);

struct worker {
	struct event_base	*base;
	struct proc_env		*env;
	const struct conf	*cf;
	struct store		*store;
	struct ipc_chan		*up;		/* NULL while reconnecting */
	struct event		*up_retry;
	struct evconnlistener	*l_tls, *l_status;
	struct connq		 conns;
	int			 nconns;	/* both listeners */
	int			 ntls, nstatus;	/* each listener's own budget */
	struct connq		 idle;		/* TLS keep-alive idle, oldest first */
	struct connq		 status_q;	/* status conns, oldest first */
	int			 tls_paused;	/* TLS full and nothing idle */
	int			 draining;	/* USR2 (reload) or TERM */
	int			 stopping;	/* TERM: close idle at once */
	struct connq		 waiting;	/* conns awaiting the uplink */
	uint32_t		 next_rid;
	struct connq		 batch;		/* usage awaiting group commit */
	int			 batch_recs;
	struct event		*commit_ev;
};

extern struct worker	*worker;

/* conn.c */
/* The status listener's budget, apart from server.max_connections. */
#define WORKER_STATUS_CONNS	64

enum conn_state { CONN_READING, CONN_BUSY, CONN_CLOSING };

struct conn {
	TAILQ_ENTRY(conn)	 entry;		/* worker->conns */
	TAILQ_ENTRY(conn)	 wentry;	/* worker->waiting / usage batch */
	TAILQ_ENTRY(conn)	 qentry;	/* worker->idle or ->status_q */
	struct bufferevent	*bev;
	struct event		*timer;		/* the one deadline, re-armed */
	int			 idle;		/* keep-alive, no byte of next */
	int			 is_status;
	enum conn_state		 state;
	int			 have_head;
	enum stats_ep		 ep;		/* the path, looked up once */
	struct http_req		 req;
	size_t			 headlen;
	char			*body;
	size_t			 bodylen;
	int64_t			 t0_us;		/* head read (access log) */
	uint32_t		 rid;		/* awaiting the uplink, or 0 */
	int64_t			 wait_ms;	/* when it started waiting */
	int			 in_read;	/* conn_read is on the stack */
	int			 peer_eof;	/* client half-closed while BUSY */
	int			 after_ipc;	/* uplink answered 200: re-read */
	int			 source_up;	/* lease came from upstream now */
	struct usage_rec	*urecs;	/* validated, awaiting group commit */
	int			 nurecs;
	int			 in_batch;
	unsigned char		 sha[32];	/* the caller's key hash */
	char			 key[41];
};

void	 conn_accept(int fd, int is_status);
void	 conn_reply(struct conn *, int code, const char *extra,
	    const char *body, size_t len);
void	 conn_reply_type(struct conn *, int code, const char *ctype,
	    const char *body, size_t len);
/* {"error":code,"message":msg<more>} where more is ",\"k\":v" or "". */
void	 conn_error(struct conn *, int code, const char *error,
	    const char *msg, const char *more, const char *extra);
void	 conn_close_idle(void);
const char *conn_source(const struct conn *);
void	 conn_dispatch(struct conn *);

/* license.c */
void	 license_handle(struct conn *);
void	 license_ipc(const struct ipc_msg *);
/* Authenticate like GET /v1/license; on success copies the caller's lease
 * and returns 0, otherwise it has replied (or is waiting on the uplink)
 * and returns -1. */
int	 license_check(struct conn *, struct lease *);
void	 license_forget(struct conn *);	/* conn goes away while waiting */
void	 license_fail_waiting(void);
int	 license_init(void);
int	 worker_send_up(const struct ipc_msg *);

/* access.c */
int	 access_init(const struct conf *, struct event_base *);
int	 access_enabled(void);
void	 access_close(void);	/* flush what is left, before exit */
void	 access_log(const struct conn *, int code, size_t bytes,
	    const char *source);

/* status.c */
void	 status_handle(struct conn *);

/* metrics.c */
void	 metrics_handle(struct conn *, const struct stats_shared *);

/* seats.c */
void	 seats_handle(struct conn *);	/* /v1/seats, /v1/seats/grant */
void	 seats_ipc(const struct ipc_msg *);

/* usage.c */
void	 usage_handle(struct conn *);
void	 usage_forget(struct conn *);
/* 0 if s is an RFC 3339 date-time naming a real instant, year >= 1970. */
#define USAGE_TS_MAX	35	/* ...T16:00:00.123456789+01:00 */
int	 usage_ts_valid(const char *s);
int	 usage_init(void);

#endif

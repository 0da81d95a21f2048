/* uplink.h - internals shared by the uplink's files (uplink.c, relay.c). */
#ifndef UPLINK_H
#define UPLINK_H

#include <sys/queue.h>

#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>

#include "gauge.h"
#include "usage_rec.h"

struct conf;
struct event;
struct event_base;
struct httpc;
struct httpc_res;
struct lease;
struct store;

#define UPLINK_MAX_TRUSTED	16
#define RELAY_BATCH		1000

/* relay.c's state: the usage batch under way and its budget. */
struct relay {
	struct event		*ev;
	int			 busy;		/* a batch is upstream */
	int			 failures;
	struct usage_rec	 recs[RELAY_BATCH];
	uint64_t		 seqs[RELAY_BATCH];
	int			 n;
	int			 more;		/* the spool holds more */
	size_t			 budget;	/* bytes a batch may take */
	size_t			 sent;		/* bytes of the batch upstream */
};

struct flight;		/* uplink.c: one upstream fetch per key */

/* What has been told of the current outage (uplink.c, uplink_tell). */
struct uplink_outage {
	int64_t	 lost_at;		/* 0 = not in an outage */
	int	 told_24h, told_1h;	/* survival warnings of this outage */
};

/*
 * The uplink process's context (proxy mode): one per process, set by
 * uplink_main before anything else runs and shared with relay.c.
 */
struct uplink {
	const struct conf	*cf;
	struct event_base	*base;
	struct store		*store;
	struct httpc		*hc;
	EVP_PKEY		*trusted[UPLINK_MAX_TRUSTED];
	int			 ntrusted;
	int			 stopping;
	int			 refusing;	/* last upstream lease refused */
	LIST_HEAD(, flight)	 flights;	/* single flight, per key */
	struct uplink_outage	 outage;
	struct gauge		 gauge;		/* leases cached (gauge.c) */
	struct relay		 relay;		/* relay.c */
};

extern struct uplink	*uplink;

struct proc_env;
/* The entry, after fork: never returns. */
void	uplink_main(struct proc_env *) __attribute__((noreturn));

/*
 * The body of an upstream 200 for key kid: 0 and its token and lease when
 * a key of up.trusted signed it for kid with a sane life, else -1 (logged).
 */
int	uplink_lease_verify(const char *body, size_t len, const char *kid,
	    char *tok, struct lease *l);
/* The reason of an upstream 401/403 body: revoked, expired or unknown. */
const char *uplink_reject_reason(const char *body, size_t len);

/* relay.c: the usage spool, forwarded upstream in batches. */
void	relay_init(void);
void	relay_kick(void);
int	relay_busy(void);
char	*relay_render(const struct usage_rec *, int, size_t, int *, size_t *);

#endif

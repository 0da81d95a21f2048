/* upstream.h - the uplink's calls to the upstream and its state. */
#ifndef UPSTREAM_H
#define UPSTREAM_H

#include <stddef.h>

struct httpc_res;

/*
 * One upstream call with failover down license.server_url: a URL that
 * cannot be reached or answers 5xx is followed by the next. done gets
 * res of the answering URL (answered=1) or of the last failure.
 */
typedef void (*upstream_done)(int answered, const struct httpc_res *, void *);
/* header: one more header line, or NULL; kept by the caller, not copied. */
int	upstream_call(const char *method, const char *path, const char *key,
	    const char *header, const char *body, size_t len, upstream_done,
	    void *arg);
/* An upstream pass finished: set Connected/TrustBased/Disconnected. */
void	upstream_state(int answered, const char *error);
void	upstream_usage_stats(void);
/* From the uplink's tick: one bounded slice of the lease count. */
void	upstream_lease_stats(void);

#endif

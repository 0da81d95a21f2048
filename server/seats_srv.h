/*
 * seats_srv.h - the seat writer's side: seats_auth.c in the issuer (the
 * key's limit is in its registry), seats_proxy.c in the uplink (its grant
 * from upstream is the limit). Each hooks in with one call per event.
 */
#ifndef SEATS_SRV_H
#define SEATS_SRV_H

#include <stdint.h>

struct conf;
struct ipc_msg;
struct store;
struct store_seat_use;

/* Issuer. request returns 1 when m was a seat message (and answered). */
void	seats_auth_init(const struct conf *, struct store *);
int	seats_auth_request(uint64_t chan, const struct ipc_msg *);
void	seats_auth_tick(void);

/* Uplink. tick: once a second; gives back and renews every sync. */
void	seats_proxy_init(const struct conf *, struct store *);
int	seats_proxy_request(uint64_t chan, const struct ipc_msg *);
void	seats_proxy_tick(void);
/* No grant request under way (a stop waits for their answers). */
int	seats_proxy_idle(void);

/*
 * Shared by both: Retry-After of a 409 (the first seat held here to
 * expire, else fallback_s), and the figures of /v1/status and /metrics
 * (drops expired rows when there are any).
 */
int	seats_retry_after(const struct store_seat_use *, int64_t now,
	    int64_t fallback_s);
void	seats_gauge(struct store *, int64_t now, int authority);

#endif

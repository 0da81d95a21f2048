/*
 * ipc.h - every message that crosses a process boundary, and the framing.
 *
 * Frame: 4-byte big-endian length, then one msgpack map whose "t" field is
 * the message type. Lengths are checked against the channel's maximum
 * before anything is buffered, and the msgpack bytes are walked and bounds
 * checked before msgpack-c sees them (it allocates what a header claims).
 *
 * Channels: each worker connects to the Unix socket that the master bound
 * before forking; the uplink (proxy) or the issuer (authority) accepts.
 *
 *   type          direction          fields
 *   LEASE_REQ     worker -> uplink   rid, key (40 [A-Za-z0-9]), ref (refresh?)
 *   LEASE_RES     uplink -> worker   rid, st (200|403|503), rsn, ra
 *   USAGE_KICK    worker -> uplink   (none): the spool passed a batch
 */
#ifndef IPC_H
#define IPC_H

#include <stddef.h>
#include <stdint.h>

#include "token.h"

struct event_base;
struct bufferevent;

enum ipc_type {
	IPC_LEASE_REQ = 1,
	IPC_LEASE_RES = 2,
	IPC_USAGE_KICK = 3,
};

#define IPC_MAX_FRAME	1024	/* every message above fits easily */

struct ipc_msg {
	enum ipc_type	 type;
	uint32_t	 rid;		/* request id chosen by the worker */
	char		 key[TOKEN_KEY_LEN + 1];	/* LEASE_REQ: the client's license key */
	int		 refresh;	/* LEASE_REQ: background refresh, no reply wanted */
	int		 status;	/* LEASE_RES: 200, 403 or 503 */
	char		 reason[16];	/* LEASE_RES: unknown|revoked|expired */
	int		 retry_after;	/* LEASE_RES: seconds, with 503 */
};

/* Encode m as one frame into buf; returns the frame length or -1. */
int	 ipc_encode(const struct ipc_msg *m, unsigned char *buf, size_t bufsz);
/*
 * Decode one frame from buf[0..len): returns the frame length consumed,
 * 0 when more bytes are needed, -1 on a bad frame (close the channel).
 */
int	 ipc_decode(const unsigned char *buf, size_t len, struct ipc_msg *m);

/*
 * Framed channel over a bufferevent. msg_cb must not free the channel (the
 * read loop goes on with it); close_cb may, and is the place to do it.
 */
struct ipc_chan;
typedef void (*ipc_msg_cb)(struct ipc_chan *, const struct ipc_msg *, void *);
typedef void (*ipc_close_cb)(struct ipc_chan *, int bad, void *);

struct ipc_chan	*ipc_chan_new(struct event_base *, int fd, ipc_msg_cb,
		    ipc_close_cb, void *arg);
void		 ipc_chan_free(struct ipc_chan *);
int		 ipc_chan_send(struct ipc_chan *, const struct ipc_msg *);

#endif

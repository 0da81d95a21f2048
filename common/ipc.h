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
 *   LEASE_RES     uplink -> worker   rid, st (200|403|503), rsn, ra,
 *                                    [lse: the token, with 200 only]
 *   USAGE_KICK    worker -> uplink   (none): the spool passed a batch
 *   SEAT_REQ      worker -> uplink   rid, key, op (take|release), ins
 *   SEAT_RES      uplink -> worker   rid, st (200|204|403|409|503), rsn,
 *                                    used, tot (-1 none), gr (-1 not a
 *                                    proxy), exp (0 none), ra
 *   GRANT_REQ     worker -> uplink   rid, hold (caller's key_id), kid, want
 *   GRANT_RES     uplink -> worker   rid, st (200|403|503), rsn, kid, gr,
 *                                    exp, tot (-1 none)
 * (uplink: the issuer in authority mode, for every message.)
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
	IPC_SEAT_REQ = 4,
	IPC_SEAT_RES = 5,
	IPC_GRANT_REQ = 6,
	IPC_GRANT_RES = 7,
};

enum ipc_seat_op { IPC_SEAT_TAKE = 1, IPC_SEAT_RELEASE = 2 };
#define IPC_SEATS_MAX	1000000		/* bound of every seat count */

/* Every message above fits: the longest is a LEASE_RES with a token. */
#define IPC_MAX_FRAME	(TOKEN_MAX + 256)

struct ipc_msg {
	enum ipc_type	 type;
	uint32_t	 rid;		/* request id chosen by the worker */
	char		 key[TOKEN_KEY_LEN + 1];	/* LEASE_REQ: the client's license key */
	int		 refresh;	/* LEASE_REQ: background refresh, no reply wanted */
	int		 status;	/* LEASE_RES: 200, 403 or 503 */
	char		 reason[16];	/* LEASE_RES: unknown|revoked|expired */
	int		 retry_after;	/* LEASE_RES: seconds, with 503 */
	char		 lease[TOKEN_MAX + 1];	/* LEASE_RES 200: "" or the
					   token (the issuer's, sent before
					   it is stored) */
	int		 op;		/* SEAT_REQ: enum ipc_seat_op */
	char		 instance[TOKEN_INSTANCE_MAX + 1];	/* SEAT_REQ: X-Instance-Id;
					   GRANT_REQ: the proxy's, or "" */
	char		 holder[17];	/* GRANT_REQ: the calling proxy */
	char		 kid[17];	/* GRANT_*: the key asked about */
	int64_t		 want;		/* GRANT_REQ */
	int		 takeover;	/* GRANT_REQ: of the unnamed row, 0/1 */
	int64_t		 seq;		/* GRANT_REQ: the proxy's number, 0: none */
	int64_t		 used;		/* SEAT_RES */
	int64_t		 total;		/* *_RES: -1 = no limit */
	int64_t		 granted;	/* *_RES: -1 = not a proxy (SEAT_RES) */
	int64_t		 expires;	/* *_RES: unix s, 0 = none */
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

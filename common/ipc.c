/*
 * ipc.c - framing and schema checks for the messages of ipc.h.
 * A peer's bytes get the same suspicion as a network client's.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <msgpack.h>

#include "ipc.h"
#include "log.h"
#include "mpcheck.h"
#include "token.h"

struct ipc_chan {
	struct bufferevent	*bev;
	ipc_msg_cb		 msg_cb;
	ipc_close_cb		 close_cb;
	void			*arg;
};

static void
ipc_pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void
ipc_kv_int(msgpack_packer *pk, const char *name, int64_t v)
{
	ipc_pack_str(pk, name);
	msgpack_pack_int64(pk, v);
}

static void
ipc_kv_str(msgpack_packer *pk, const char *name, const char *v)
{
	ipc_pack_str(pk, name);
	ipc_pack_str(pk, v);
}

/* The seat messages: the "t" and "rid" pair, then each type's fields. */
static int
ipc_encode_seats(msgpack_packer *pk, const struct ipc_msg *m)
{
	static const int nfields[] = { 4, 7, 6, 6 };

	if (m->type < IPC_SEAT_REQ || m->type > IPC_GRANT_RES)
		return -1;
	msgpack_pack_map(pk, 2 + nfields[m->type - IPC_SEAT_REQ]);
	ipc_kv_int(pk, "t", m->type);
	ipc_kv_int(pk, "rid", m->rid);
	if (m->type == IPC_SEAT_REQ) {
		ipc_kv_str(pk, "key", m->key);
		ipc_kv_int(pk, "op", m->op);
		ipc_kv_str(pk, "ins", m->instance);
	} else if (m->type == IPC_GRANT_REQ) {
		ipc_kv_str(pk, "hold", m->holder);
		ipc_kv_str(pk, "ins", m->instance);
		ipc_kv_str(pk, "kid", m->kid);
		ipc_kv_int(pk, "want", m->want);
		ipc_kv_int(pk, "tko", m->takeover);
		ipc_kv_int(pk, "seq", m->seq);
	} else {
		ipc_kv_int(pk, "st", m->status);
		ipc_kv_str(pk, "rsn", m->reason);
		ipc_kv_int(pk, "gr", m->granted);
		ipc_kv_int(pk, "exp", m->expires);
		ipc_kv_int(pk, "tot", m->total);
	}
	if (m->type == IPC_SEAT_REQ)
		ipc_kv_int(pk, "want", 1);	/* an instance holds one */
	else if (m->type == IPC_GRANT_RES)
		ipc_kv_str(pk, "kid", m->kid);
	else if (m->type == IPC_SEAT_RES) {
		ipc_kv_int(pk, "used", m->used);
		ipc_kv_int(pk, "ra", m->retry_after);
	}
	return 0;
}

int
ipc_encode(const struct ipc_msg *m, unsigned char *buf, size_t bufsz)
{
	msgpack_sbuffer	 sb;
	msgpack_packer	 pk;
	int		 len = -1;
	uint32_t	 be;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	switch (m->type) {
	case IPC_LEASE_REQ:
		msgpack_pack_map(&pk, 4);
		ipc_pack_str(&pk, "t");
		msgpack_pack_int(&pk, m->type);
		ipc_pack_str(&pk, "rid");
		msgpack_pack_uint32(&pk, m->rid);
		ipc_pack_str(&pk, "key");
		ipc_pack_str(&pk, m->key);
		ipc_pack_str(&pk, "ref");
		msgpack_pack_int(&pk, m->refresh ? 1 : 0);
		break;
	case IPC_LEASE_RES:
		msgpack_pack_map(&pk, m->lease[0] != '\0' ? 6 : 5);
		ipc_pack_str(&pk, "t");
		msgpack_pack_int(&pk, m->type);
		ipc_pack_str(&pk, "rid");
		msgpack_pack_uint32(&pk, m->rid);
		ipc_pack_str(&pk, "st");
		msgpack_pack_int(&pk, m->status);
		ipc_pack_str(&pk, "rsn");
		ipc_pack_str(&pk, m->reason);
		ipc_pack_str(&pk, "ra");
		msgpack_pack_int(&pk, m->retry_after);
		if (m->lease[0] != '\0')
			ipc_kv_str(&pk, "lse", m->lease);
		break;
	case IPC_USAGE_KICK:
		msgpack_pack_map(&pk, 1);
		ipc_pack_str(&pk, "t");
		msgpack_pack_int(&pk, m->type);
		break;
	default:
		if (ipc_encode_seats(&pk, m) == -1)
			goto done;
	}
	if (sb.size + 4 > bufsz || sb.size + 4 > IPC_MAX_FRAME)
		goto done;
	be = htonl((uint32_t)sb.size);
	memcpy(buf, &be, 4);
	memcpy(buf + 4, sb.data, sb.size);
	len = (int)sb.size + 4;
done:
	msgpack_sbuffer_destroy(&sb);
	return len;
}

/* Copy a msgpack str into dst (NUL-terminated); -1 if not a str or too long. */
static int
ipc_get_str(const msgpack_object *o, char *dst, size_t dstsz, size_t minlen)
{
	if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= dstsz ||
	    o->via.str.size < minlen)
		return -1;
	memcpy(dst, o->via.str.ptr, o->via.str.size);
	dst[o->via.str.size] = '\0';
	return memchr(dst, '\0', o->via.str.size) == NULL ? 0 : -1;
}

static int
ipc_get_int(const msgpack_object *o, int64_t lo, int64_t hi, int64_t *v)
{
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (o->via.u64 > (uint64_t)hi)
			return -1;
		*v = (int64_t)o->via.u64;
	} else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		*v = o->via.i64;
	else
		return -1;
	return *v >= lo && *v <= hi ? 0 : -1;
}

/* Bit per field, so the schema check is "exactly these, each once". */
#define F_T	0x01
#define F_RID	0x02
#define F_KEY	0x04
#define F_REF	0x08
#define F_ST	0x10
#define F_RSN	0x20
#define F_RA	0x40
#define F_OP	0x80
#define F_INS	0x100
#define F_HOLD	0x200
#define F_KID	0x400
#define F_WANT	0x800
#define F_USED	0x1000
#define F_TOT	0x2000
#define F_GR	0x4000
#define F_EXP	0x8000
#define F_LSE	0x10000
#define F_TKO	0x20000
#define F_SEQ	0x40000

/* A key_id as the store names it: 16 lowercase hex characters. */
static int
ipc_get_kid(const msgpack_object *o, char *dst)
{
	size_t i;

	if (ipc_get_str(o, dst, 17, 16) == -1)
		return -1;
	for (i = 0; i < 16; i++)
		if (!((dst[i] >= '0' && dst[i] <= '9') ||
		    (dst[i] >= 'a' && dst[i] <= 'f')))
			return -1;
	return 0;
}

/* The seat messages' own fields; *bit 0 for a name that is not one. */
static int
ipc_field_seats(const char *name, const msgpack_object *v,
    struct ipc_msg *m, int *bit)
{
	int64_t i;

	*bit = 0;
	if (strcmp(name, "op") == 0 && ipc_get_int(v, 1, 2, &i) == 0)
		m->op = (int)i, *bit = F_OP;
	else if (strcmp(name, "ins") == 0 &&
	    ipc_get_str(v, m->instance, sizeof(m->instance), 0) == 0)
		*bit = F_INS;
	else if (strcmp(name, "hold") == 0 && ipc_get_kid(v, m->holder) == 0)
		*bit = F_HOLD;
	else if (strcmp(name, "kid") == 0 && ipc_get_kid(v, m->kid) == 0)
		*bit = F_KID;
	else if (strcmp(name, "want") == 0 &&
	    ipc_get_int(v, 0, IPC_SEATS_MAX, &m->want) == 0)
		*bit = F_WANT;
	else if (strcmp(name, "tko") == 0 && ipc_get_int(v, 0, 1, &i) == 0)
		m->takeover = (int)i, *bit = F_TKO;
	else if (strcmp(name, "seq") == 0 &&
	    ipc_get_int(v, 0, INT64_MAX, &m->seq) == 0)
		*bit = F_SEQ;
	else if (strcmp(name, "used") == 0 &&
	    ipc_get_int(v, 0, IPC_SEATS_MAX, &m->used) == 0)
		*bit = F_USED;
	else if (strcmp(name, "tot") == 0 &&
	    ipc_get_int(v, -1, IPC_SEATS_MAX, &m->total) == 0)
		*bit = F_TOT;
	else if (strcmp(name, "gr") == 0 &&
	    ipc_get_int(v, -1, IPC_SEATS_MAX, &m->granted) == 0)
		*bit = F_GR;
	else if (strcmp(name, "exp") == 0 &&
	    ipc_get_int(v, 0, INT64_MAX, &m->expires) == 0)
		*bit = F_EXP;
	return *bit != 0 ? 0 : -1;
}

static int
ipc_field(const msgpack_object_kv *kv, struct ipc_msg *m, int *seen)
{
	const msgpack_object	*v = &kv->val;
	char			 name[8];
	int64_t			 i;
	int			 bit;

	if (ipc_get_str(&kv->key, name, sizeof(name), 1) == -1)
		return -1;
	if (strcmp(name, "t") == 0 && ipc_get_int(v, 1, IPC_GRANT_RES, &i) == 0)
		m->type = (enum ipc_type)i, bit = F_T;
	else if (strcmp(name, "rid") == 0 &&
	    ipc_get_int(v, 0, UINT32_MAX, &i) == 0)
		m->rid = (uint32_t)i, bit = F_RID;
	/* Workers answer a malformed key themselves: one here is hostile. */
	else if (strcmp(name, "key") == 0 &&
	    ipc_get_str(v, m->key, sizeof(m->key), 1) == 0 &&
	    token_key_valid(m->key, strlen(m->key)))
		bit = F_KEY;
	else if (strcmp(name, "ref") == 0 && ipc_get_int(v, 0, 1, &i) == 0)
		m->refresh = (int)i, bit = F_REF;
	else if (strcmp(name, "st") == 0 && ipc_get_int(v, 200, 503, &i) == 0 &&
	    (i == 200 || i == 204 || i == 403 || i == 409 || i == 503))
		m->status = (int)i, bit = F_ST;
	else if (strcmp(name, "rsn") == 0 &&
	    ipc_get_str(v, m->reason, sizeof(m->reason), 0) == 0)
		bit = F_RSN;
	else if (strcmp(name, "ra") == 0 && ipc_get_int(v, 0, 86400, &i) == 0)
		m->retry_after = (int)i, bit = F_RA;
	else if (strcmp(name, "lse") == 0 &&
	    ipc_get_str(v, m->lease, sizeof(m->lease), 1) == 0)
		bit = F_LSE;
	else if (ipc_field_seats(name, v, m, &bit) == -1)
		return -1;
	if (*seen & bit)
		return -1;
	*seen |= bit;
	return 0;
}

static int
ipc_schema(const msgpack_object *o, struct ipc_msg *m)
{
	uint32_t	 i;
	int		 seen = 0, want;

	if (o->type != MSGPACK_OBJECT_MAP)
		return -1;
	memset(m, 0, sizeof(*m));
	for (i = 0; i < o->via.map.size; i++)
		if (ipc_field(&o->via.map.ptr[i], m, &seen) == -1)
			return -1;
	switch (m->type) {
	case IPC_LEASE_REQ:
		want = F_T | F_RID | F_KEY | F_REF;
		break;
	case IPC_LEASE_RES:
		want = F_T | F_RID | F_ST | F_RSN | F_RA;
		/* A token comes only with a 200, and may not. */
		if (m->status == 200 && (seen & F_LSE))
			want |= F_LSE;
		break;
	case IPC_USAGE_KICK:
		want = F_T;
		break;
	case IPC_SEAT_REQ:
		want = F_T | F_RID | F_KEY | F_OP | F_INS | F_WANT;
		break;
	case IPC_SEAT_RES:
		want = F_T | F_RID | F_ST | F_RSN | F_GR | F_EXP | F_TOT |
		    F_USED | F_RA;
		break;
	case IPC_GRANT_REQ:
		want = F_T | F_RID | F_HOLD | F_INS | F_KID | F_WANT | F_TKO |
		    F_SEQ;
		break;
	case IPC_GRANT_RES:
		want = F_T | F_RID | F_ST | F_RSN | F_GR | F_EXP | F_TOT |
		    F_KID;
		break;
	default:
		return -1;
	}
	/* Only a seat answer may say 204 (released) or 409 (none free). */
	if ((m->status == 204 || m->status == 409) && m->type != IPC_SEAT_RES)
		return -1;
	/* An instance holds exactly one seat; a proxy may name none. */
	if (m->type == IPC_SEAT_REQ && (m->want != 1 ||
	    m->instance[0] == '\0'))
		return -1;
	return seen == want ? 0 : -1;
}

/* ipc_decode, saying why a frame is bad (for the log of the closing end). */
static int
ipc_decode_why(const unsigned char *buf, size_t len, struct ipc_msg *m,
    const char **why)
{
	msgpack_unpacked	 up;
	uint32_t		 be, flen;
	size_t			 off = 0;
	int			 rv = -1;

	if (len < 4)
		return 0;
	memcpy(&be, buf, 4);
	flen = ntohl(be);
	/* flen + 4 would wrap for lengths near 2^32 */
	_Static_assert(IPC_MAX_FRAME - 4 == 2300, "the reason names the bound");
	*why = "length outside 1..2300 bytes";
	if (flen == 0 || flen > IPC_MAX_FRAME - 4)
		return -1;
	if (len < flen + 4)
		return 0;
	*why = "a msgpack length does not fit the frame";
	if (mpcheck(buf + 4, flen) != (int)flen)
		return -1;
	*why = "not a message of a known type with its fields";
	msgpack_unpacked_init(&up);
	if (msgpack_unpack_next(&up, (const char *)buf + 4, flen, &off) ==
	    MSGPACK_UNPACK_SUCCESS && off == flen &&
	    ipc_schema(&up.data, m) == 0)
		rv = (int)flen + 4;
	msgpack_unpacked_destroy(&up);
	return rv;
}

int
ipc_decode(const unsigned char *buf, size_t len, struct ipc_msg *m)
{
	const char *why;

	return ipc_decode_why(buf, len, m, &why);
}

static void
ipc_chan_read(struct bufferevent *bev, void *arg)
{
	struct ipc_chan	*c = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	struct ipc_msg	 m;
	const char	*why;
	unsigned char	*p;
	size_t		 len;
	int		 n;

	while ((len = evbuffer_get_length(in)) >= 4) {
		if (len > IPC_MAX_FRAME)
			len = IPC_MAX_FRAME;
		p = evbuffer_pullup(in, len);
		if ((n = ipc_decode_why(p, len, &m, &why)) == 0)
			return;
		if (n < 0) {
			log_warnx("ipc: bad frame, %s: closing the channel",
			    why);
			c->close_cb(c, 1, c->arg);
			return;
		}
		evbuffer_drain(in, n);
		c->msg_cb(c, &m, c->arg);
	}
}

static void
ipc_chan_event(struct bufferevent *bev, short what, void *arg)
{
	struct ipc_chan *c = arg;

	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		c->close_cb(c, 0, c->arg);
}

struct ipc_chan *
ipc_chan_new(struct event_base *base, int fd, ipc_msg_cb msg_cb,
    ipc_close_cb close_cb, void *arg)
{
	struct ipc_chan *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		free(c);
		return NULL;
	}
	c->msg_cb = msg_cb;
	c->close_cb = close_cb;
	c->arg = arg;
	bufferevent_setcb(c->bev, ipc_chan_read, NULL, ipc_chan_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	return c;
}

void
ipc_chan_free(struct ipc_chan *c)
{
	if (c == NULL)
		return;
	bufferevent_free(c->bev);
	free(c);
}

/*
 * With nothing queued the frame is sent at once: bufferevent_write would
 * add EPOLLOUT, wait a loop turn and remove it again, two epoll_ctl and a
 * turn for each of the four frames of a miss. Whatever the socket does
 * not take now (or an error, which the bufferevent then reports on its
 * own path) goes to the bufferevent as before.
 */
int
ipc_chan_send(struct ipc_chan *c, const struct ipc_msg *m)
{
	unsigned char	buf[IPC_MAX_FRAME];
	ssize_t		w = 0;
	int		n;

	if ((n = ipc_encode(m, buf, sizeof(buf))) == -1)
		return -1;
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0 &&
	    (w = send(bufferevent_getfd(c->bev), buf, n, MSG_DONTWAIT |
	    MSG_NOSIGNAL)) == n)
		return 0;
	if (w < 0)
		w = 0;
	return bufferevent_write(c->bev, buf + w, n - w);
}

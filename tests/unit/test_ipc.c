/*
 * test_ipc.c - IPC framing: round trips, partial and back-to-back frames,
 * length checks before buffering, the msgpack bounds walker, the per-type
 * schema, and one real channel over a socketpair.
 */
#include <sys/socket.h>
#include <sys/time.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <msgpack.h>

#include "ipc.h"
#include "mpcheck.h"

#define KEY40	"Abcdefghij0123456789KLMNOPQRSTuvwxyz0123"
#define KEY41	KEY40 "4"

/* Prefix raw msgpack bytes with the 4-byte big-endian length. */
static size_t
frame(unsigned char *out, const void *mp, size_t n)
{
	out[0] = (unsigned char)(n >> 24);
	out[1] = (unsigned char)(n >> 16);
	out[2] = (unsigned char)(n >> 8);
	out[3] = (unsigned char)n;
	memcpy(out + 4, mp, n);
	return n + 4;
}

/* Decode raw msgpack bytes as one frame, in a buffer exactly that long. */
static int
dec_raw(const void *mp, size_t n)
{
	unsigned char	*buf = malloc(n + 4);
	struct ipc_msg	 m;
	int		 rv;

	assert_non_null(buf);
	rv = ipc_decode(buf, frame(buf, mp, n), &m);
	free(buf);
	return rv;
}

/* One map entry for the packer-built frames: key, then a typed value. */
struct fld {
	const char	*k;	/* NULL: an integer key */
	size_t		 klen;
	int		 kind;	/* 'i' int, 's' str, 'f' float, 'b' bool, 'n' nil */
	int64_t		 i;
	const char	*s;
	size_t		 slen;
};

#define FI(k, v)	{ k, sizeof(k) - 1, 'i', v, NULL, 0 }
#define FS(k, v)	{ k, sizeof(k) - 1, 's', 0, v, sizeof(v) - 1 }
#define FX(k, kind)	{ k, sizeof(k) - 1, kind, 1, NULL, 0 }
#define DEC(...)	dec_fields((const struct fld[]){ __VA_ARGS__ }, \
	sizeof((const struct fld[]){ __VA_ARGS__ }) / sizeof(struct fld), &msg)

static struct ipc_msg	msg;

static int
dec_fields(const struct fld *f, size_t n, struct ipc_msg *m)
{
	msgpack_sbuffer	 sb;
	msgpack_packer	 pk;
	unsigned char	 buf[IPC_MAX_FRAME * 2];
	size_t		 i, len;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, n);
	for (i = 0; i < n; i++) {
		if (f[i].k == NULL)
			msgpack_pack_int(&pk, 7);
		else {
			msgpack_pack_str(&pk, f[i].klen);
			msgpack_pack_str_body(&pk, f[i].k, f[i].klen);
		}
		switch (f[i].kind) {
		case 'i':
			msgpack_pack_int64(&pk, f[i].i);
			break;
		case 's':
			msgpack_pack_str(&pk, f[i].slen);
			msgpack_pack_str_body(&pk, f[i].s, f[i].slen);
			break;
		case 'f':
			msgpack_pack_double(&pk, (double)f[i].i);
			break;
		case 'b':
			msgpack_pack_true(&pk);
			break;
		default:
			msgpack_pack_nil(&pk);
			break;
		}
	}
	assert_true(sb.size + 4 <= sizeof(buf));
	len = frame(buf, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	memset(m, 0xa5, sizeof(*m));
	return ipc_decode(buf, len, m);
}

static int
roundtrip(const struct ipc_msg *in, struct ipc_msg *out)
{
	unsigned char	buf[IPC_MAX_FRAME];
	int		n;

	n = ipc_encode(in, buf, sizeof(buf));
	assert_true(n > 4);
	memset(out, 0xa5, sizeof(*out));
	assert_int_equal(ipc_decode(buf, (size_t)n, out), n);
	return n;
}

static void
t_roundtrip_lease_req(void **state)
{
	struct ipc_msg	in, out;

	(void)state;
	memset(&in, 0, sizeof(in));
	in.type = IPC_LEASE_REQ;
	in.rid = UINT32_MAX;
	strcpy(in.key, KEY40);
	in.refresh = 1;
	roundtrip(&in, &out);
	assert_int_equal(out.type, IPC_LEASE_REQ);
	assert_int_equal(out.rid, UINT32_MAX);
	assert_string_equal(out.key, KEY40);
	assert_int_equal(out.refresh, 1);
	assert_int_equal(out.status, 0);
	assert_string_equal(out.reason, "");
	assert_int_equal(out.retry_after, 0);

	/* Any non-zero refresh is sent as 1. */
	in.rid = 0;
	in.refresh = 42;
	roundtrip(&in, &out);
	assert_int_equal(out.rid, 0);
	assert_string_equal(out.key, KEY40);
	assert_int_equal(out.refresh, 1);
	in.refresh = 0;
	roundtrip(&in, &out);
	assert_int_equal(out.refresh, 0);
}

static void
t_roundtrip_lease_res(void **state)
{
	struct ipc_msg	in, out;

	(void)state;
	memset(&in, 0, sizeof(in));
	in.type = IPC_LEASE_RES;
	in.rid = 123456789;
	in.status = 503;
	strcpy(in.reason, "123456789012345");	/* 15: the most that fits */
	in.retry_after = 86400;
	roundtrip(&in, &out);
	assert_int_equal(out.type, IPC_LEASE_RES);
	assert_int_equal(out.rid, 123456789);
	assert_int_equal(out.status, 503);
	assert_string_equal(out.reason, "123456789012345");
	assert_int_equal(out.retry_after, 86400);
	assert_string_equal(out.key, "");
	assert_int_equal(out.refresh, 0);

	in.status = 403;
	strcpy(in.reason, "revoked");
	in.retry_after = 0;
	roundtrip(&in, &out);
	assert_int_equal(out.status, 403);
	assert_string_equal(out.reason, "revoked");
	assert_int_equal(out.retry_after, 0);

	in.status = 200;
	in.reason[0] = '\0';
	roundtrip(&in, &out);
	assert_int_equal(out.status, 200);
	assert_string_equal(out.reason, "");
	assert_string_equal(out.lease, "");

	/* The issuer's 200 carries its token; the longest one fits a frame. */
	strcpy(in.lease, "eyJwYXlsb2FkIjoxfQ.c2ln");
	roundtrip(&in, &out);
	assert_string_equal(out.lease, in.lease);
	memset(in.lease, 'A', TOKEN_MAX);
	in.lease[TOKEN_MAX] = '\0';
	in.rid = UINT32_MAX;
	in.retry_after = 86400;
	strcpy(in.reason, "123456789012345");
	roundtrip(&in, &out);
	assert_int_equal(strlen(out.lease), TOKEN_MAX);
	assert_memory_equal(out.lease, in.lease, TOKEN_MAX);
}

static void
t_roundtrip_usage_kick(void **state)
{
	struct ipc_msg	in, out;
	int		n;

	(void)state;
	memset(&in, 0, sizeof(in));
	in.type = IPC_USAGE_KICK;
	in.rid = 99;		/* not part of the message: not sent */
	n = roundtrip(&in, &out);
	assert_int_equal(n, 4 + 4);	/* fixmap1, fixstr "t", fixint 3 */
	assert_int_equal(out.type, IPC_USAGE_KICK);
	assert_int_equal(out.rid, 0);
	assert_string_equal(out.key, "");
	assert_string_equal(out.reason, "");
	assert_int_equal(out.status, 0);
	assert_int_equal(out.refresh, 0);
	assert_int_equal(out.retry_after, 0);
}

/* Every prefix is "need more"; the whole frame, or more, is its length. */
static void
t_split_every_offset(void **state)
{
	struct ipc_msg	 m[3], out;
	unsigned char	 buf[IPC_MAX_FRAME + 8], *p;
	int		 i, n;
	size_t		 k;

	(void)state;
	memset(m, 0, sizeof(m));
	m[0].type = IPC_LEASE_REQ;
	m[0].rid = 70000;
	strcpy(m[0].key, KEY40);
	m[1].type = IPC_LEASE_RES;
	m[1].rid = 5;
	m[1].status = 503;
	strcpy(m[1].reason, "expired");
	m[1].retry_after = 30;
	m[2].type = IPC_USAGE_KICK;
	for (i = 0; i < 3; i++) {
		n = ipc_encode(&m[i], buf, sizeof(buf));
		assert_true(n > 4);
		for (k = 0; k < (size_t)n; k++) {
			/* an exact-size copy so ASan sees any overread */
			p = malloc(k + 1);
			assert_non_null(p);
			memcpy(p, buf, k);
			assert_int_equal(ipc_decode(p, k, &out), 0);
			free(p);
		}
		memset(buf + n, 0xc1, 8);	/* junk after: not ours */
		assert_int_equal(ipc_decode(buf, (size_t)n, &out), n);
		assert_int_equal(ipc_decode(buf, (size_t)n + 8, &out), n);
		assert_int_equal(out.type, m[i].type);
		assert_int_equal(out.rid, m[i].rid);
	}
}

static void
t_back_to_back(void **state)
{
	struct ipc_msg	a, b, out;
	unsigned char	buf[IPC_MAX_FRAME * 2];
	int		na, nb;

	(void)state;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	a.type = IPC_LEASE_REQ;
	a.rid = 1;
	strcpy(a.key, KEY40);
	b.type = IPC_LEASE_RES;
	b.rid = 2;
	b.status = 403;
	strcpy(b.reason, "unknown");
	na = ipc_encode(&a, buf, sizeof(buf));
	assert_true(na > 4);
	nb = ipc_encode(&b, buf + na, sizeof(buf) - na);
	assert_true(nb > 4);
	assert_int_equal(ipc_decode(buf, na + nb, &out), na);
	assert_int_equal(out.type, IPC_LEASE_REQ);
	assert_int_equal(out.rid, 1);
	assert_string_equal(out.key, KEY40);
	assert_int_equal(ipc_decode(buf + na, nb, &out), nb);
	assert_int_equal(out.type, IPC_LEASE_RES);
	assert_int_equal(out.rid, 2);
	assert_int_equal(out.status, 403);
	assert_string_equal(out.reason, "unknown");
	/* second frame incomplete: the first still decodes alone */
	assert_int_equal(ipc_decode(buf, na + nb - 1, &out), na);
	assert_int_equal(ipc_decode(buf + na, nb - 1, &out), 0);
}

/* Refused from the 4-byte header alone, before any body is buffered. */
static void
t_bad_length_header_only(void **state)
{
	static const uint32_t	 bad[] = { 0, IPC_MAX_FRAME - 3,
	    IPC_MAX_FRAME, 65536, 0x7fffffff, 0xfffffffc, 0xfffffffd,
	    0xfffffffe, 0xffffffff };
	struct ipc_msg		 out;
	unsigned char		*h;
	size_t			 i;

	(void)state;
	h = malloc(4);		/* exactly the header: overreads show */
	assert_non_null(h);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		h[0] = bad[i] >> 24;
		h[1] = bad[i] >> 16;
		h[2] = bad[i] >> 8;
		h[3] = bad[i];
		assert_int_equal(ipc_decode(h, 4, &out), -1);
	}
	/* the largest allowed body is still only "need more" */
	h[0] = 0;
	h[1] = 0;
	h[2] = (IPC_MAX_FRAME - 4) >> 8;
	h[3] = (IPC_MAX_FRAME - 4) & 0xff;
	assert_int_equal(ipc_decode(h, 4, &out), 0);
	free(h);
}

static void
t_truncated_and_trailing(void **state)
{
	/* {"t":3} is 83 a1 74 03 */
	static const unsigned char	trunc1[] = { 0x83, 0xa1, 0x74, 0x03 };
	static const unsigned char	trunc2[] = { 0x81, 0xa1, 0x74 };
	static const unsigned char	trunc3[] = { 0x81, 0xa3, 0x74 };
	static const unsigned char	trail[] = { 0x81, 0xa1, 0x74, 0x03,
					    0x00 };
	static const unsigned char	trail2[] = { 0x81, 0xa1, 0x74, 0x03,
					    0x81, 0xa1, 0x74, 0x03 };
	static const unsigned char	ok[] = { 0x81, 0xa1, 0x74, 0x03 };

	(void)state;
	assert_int_equal(dec_raw(ok, sizeof(ok)), 4 + sizeof(ok));
	assert_int_equal(dec_raw(trunc1, sizeof(trunc1)), -1);
	assert_int_equal(dec_raw(trunc2, sizeof(trunc2)), -1);
	assert_int_equal(dec_raw(trunc3, sizeof(trunc3)), -1);
	assert_int_equal(dec_raw(trail, sizeof(trail)), -1);
	assert_int_equal(dec_raw(trail2, sizeof(trail2)), -1);
	/* a frame that is not a map at all */
	assert_int_equal(dec_raw("\x03", 1), -1);
	assert_int_equal(dec_raw("\x91\x03", 2), -1);
}

/* Headers claiming 2^32-1 entries or bytes in a few-byte frame. */
static void
t_hostile_containers(void **state)
{
	static const unsigned char	h[][16] = {
		{ 0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 0x74, 0x03 },
		{ 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02, 0x03 },
		{ 0xdb, 0xff, 0xff, 0xff, 0xff, 0x61, 0x62, 0x63 },
		{ 0xc6, 0xff, 0xff, 0xff, 0xff, 0x61, 0x62, 0x63 },
		{ 0xde, 0xff, 0xff, 0xa1, 0x74, 0x03, 0x00, 0x00 },
		{ 0xdc, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00 },
		{ 0xda, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00 },
		/* inside a valid-looking map: {"t": [2^32-1 x ...]} */
		{ 0x81, 0xa1, 0x74, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x00 },
		{ 0x82, 0xa1, 0x74, 0x03, 0xa1, 0x78, 0xdf, 0xff, 0xff, 0xff,
		  0xff, 0x00 },
		/* a fixmap of 8 pairs needs 16 objects; 15 bytes follow */
		{ 0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
	};
	static const size_t	n[] = { 8, 8, 8, 8, 8, 8, 8, 9, 12, 16 };
	size_t			i;

	(void)state;
	for (i = 0; i < sizeof(n) / sizeof(n[0]); i++) {
		assert_int_equal(mpcheck(h[i], n[i]), -1);
		assert_int_equal(dec_raw(h[i], n[i]), -1);
	}
	/* the same kinds of header with honest lengths pass the walker */
	assert_int_equal(mpcheck((const unsigned char *)
	    "\xdd\x00\x00\x00\x02\x01\x02", 7), 7);
	assert_int_equal(mpcheck((const unsigned char *)
	    "\xdf\x00\x00\x00\x01\x01\x02", 7), 7);
	assert_int_equal(mpcheck((const unsigned char *)
	    "\xdb\x00\x00\x00\x02" "ab", 7), 7);
	assert_int_equal(mpcheck((const unsigned char *)
	    "\xc6\x00\x00\x00\x00", 5), 5);
	/* the length header itself cut short */
	assert_int_equal(mpcheck((const unsigned char *)"\xdd\x00\x00", 3), -1);
	assert_int_equal(mpcheck((const unsigned char *)"\xdb\x00", 2), -1);
	assert_int_equal(mpcheck((const unsigned char *)"\xd9", 1), -1);
	assert_int_equal(mpcheck((const unsigned char *)"", 0), -1);
}

static void
t_ext_and_depth(void **state)
{
	static const unsigned char	ext[][8] = {
		{ 0xd4, 0x01, 0x00 },			/* fixext1 */
		{ 0xd5, 0x01, 0x00, 0x00 },		/* fixext2 */
		{ 0xd6, 0x01, 0x00, 0x00, 0x00, 0x00 },	/* fixext4 */
		{ 0xc7, 0x01, 0x01, 0x00 },		/* ext8 */
		{ 0xc8, 0x00, 0x01, 0x01, 0x00 },	/* ext16 */
		{ 0xc9, 0x00, 0x00, 0x00, 0x00, 0x01 },	/* ext32 */
		{ 0xc1 },				/* never used */
		{ 0x81, 0xa1, 0x74, 0xd4, 0x01, 0x03 },	/* {"t": ext} */
	};
	static const size_t	en[] = { 3, 4, 6, 4, 5, 6, 1, 6 };
	unsigned char		d[64];
	size_t			i;

	(void)state;
	for (i = 0; i < sizeof(en) / sizeof(en[0]); i++) {
		assert_int_equal(mpcheck(ext[i], en[i]), -1);
		assert_int_equal(dec_raw(ext[i], en[i]), -1);
	}
	/* MPCHECK_MAX_DEPTH arrays around a scalar: allowed */
	memset(d, 0x91, MPCHECK_MAX_DEPTH);
	d[MPCHECK_MAX_DEPTH] = 0x05;
	assert_int_equal(mpcheck(d, MPCHECK_MAX_DEPTH + 1),
	    MPCHECK_MAX_DEPTH + 1);
	/* one level more is refused, and so is much more */
	memset(d, 0x91, MPCHECK_MAX_DEPTH + 1);
	d[MPCHECK_MAX_DEPTH + 1] = 0x05;
	assert_int_equal(mpcheck(d, MPCHECK_MAX_DEPTH + 2), -1);
	memset(d, 0x81, 40);		/* {0: {0: ...}} with fixmaps */
	for (i = 1; i < 40; i += 2)
		d[i] = 0x00;
	assert_int_equal(mpcheck(d, 40), -1);
	/* inside a frame: {"t": [[[[[[[[[3]]]]]]]]]} */
	d[0] = 0x81;
	d[1] = 0xa1;
	d[2] = 0x74;
	memset(d + 3, 0x91, MPCHECK_MAX_DEPTH);
	d[3 + MPCHECK_MAX_DEPTH] = 0x03;
	assert_int_equal(mpcheck(d, 4 + MPCHECK_MAX_DEPTH), -1);
	assert_int_equal(dec_raw(d, 4 + MPCHECK_MAX_DEPTH), -1);
}

#define REQ_OK	FI("t", 1), FI("rid", 7), FS("key", KEY40), FI("ref", 0)
#define RES_OK	FI("t", 2), FI("rid", 7), FI("st", 503), FS("rsn", "x"), \
		FI("ra", 5)

/* Every field exactly once, no others, in any order. */
static void
t_schema_fields(void **state)
{
	static char	big[TOKEN_MAX + 1];

	(void)state;
	/* the builder itself makes valid messages */
	assert_true(DEC(REQ_OK) > 0);
	assert_int_equal(msg.rid, 7);
	assert_true(DEC(RES_OK) > 0);
	assert_int_equal(msg.retry_after, 5);
	assert_true(DEC(FI("ref", 1), FS("key", KEY40), FI("rid", 9),
	    FI("t", 1)) > 0);
	assert_int_equal(msg.type, IPC_LEASE_REQ);
	assert_int_equal(msg.refresh, 1);
	assert_string_equal(msg.key, KEY40);

	/* missing */
	assert_int_equal(DEC(FI("t", 1), FI("rid", 7), FS("key", KEY40)), -1);
	assert_int_equal(DEC(FI("t", 1), FI("rid", 7), FI("ref", 0)), -1);
	assert_int_equal(DEC(FI("rid", 7), FS("key", KEY40), FI("ref", 0)),
	    -1);
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 503),
	    FS("rsn", "x")), -1);
	assert_int_equal(dec_raw("\x80", 1), -1);		/* {} */
	/* unknown, or belonging to another type */
	assert_int_equal(DEC(REQ_OK, FI("foo", 1)), -1);
	assert_int_equal(DEC(REQ_OK, FI("st", 200)), -1);
	assert_int_equal(DEC(RES_OK, FI("ref", 0)), -1);
	assert_int_equal(DEC(FI("t", 3), FI("rid", 1)), -1);
	assert_int_equal(DEC(FI("T", 3)), -1);
	assert_int_equal(DEC(FI("", 3)), -1);
	assert_int_equal(DEC(FI("t", 3), FI("ridiculous", 1)), -1);
	/* duplicate */
	assert_int_equal(DEC(REQ_OK, FI("rid", 7)), -1);
	assert_int_equal(DEC(FI("t", 3), FI("t", 3)), -1);
	assert_int_equal(DEC(RES_OK, FS("rsn", "x")), -1);

	/* a token: only on a 200, not empty, once, not on a request */
	assert_true(DEC(FI("t", 2), FI("rid", 7), FI("st", 200),
	    FS("rsn", ""), FI("ra", 0), FS("lse", "a.b")) > 0);
	assert_string_equal(msg.lease, "a.b");
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 403),
	    FS("rsn", "revoked"), FI("ra", 0), FS("lse", "a.b")), -1);
	assert_int_equal(DEC(RES_OK, FS("lse", "a.b")), -1);	/* a 503 */
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 200),
	    FS("rsn", ""), FI("ra", 0), FS("lse", "")), -1);
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 200),
	    FS("rsn", ""), FI("ra", 0), FI("lse", 1)), -1);
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 200),
	    FS("rsn", ""), FI("ra", 0), FS("lse", "a.b"), FS("lse", "a.b")),
	    -1);
	assert_int_equal(DEC(REQ_OK, FS("lse", "a.b")), -1);
	memset(big, 'A', sizeof(big));
	assert_true(DEC(FI("t", 2), FI("rid", 7), FI("st", 200),
	    FS("rsn", ""), FI("ra", 0), { "lse", 3, 's', 0, big,
	    TOKEN_MAX }) > 0);
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 200),
	    FS("rsn", ""), FI("ra", 0), { "lse", 3, 's', 0, big,
	    TOKEN_MAX + 1 }), -1);
}

static void
t_schema_types(void **state)
{
	(void)state;
	assert_int_equal(DEC(FI("t", 1), FS("rid", "7"), FS("key", KEY40),
	    FI("ref", 0)), -1);
	assert_int_equal(DEC(FI("t", 1), FI("rid", 7), FI("key", 12345),
	    FI("ref", 0)), -1);
	assert_int_equal(DEC(FS("t", "\x01")), -1);
	assert_int_equal(DEC(FX("t", 'f')), -1);
	assert_int_equal(DEC(FX("t", 'n')), -1);
	assert_int_equal(DEC(FI("t", 1), FI("rid", 7), FS("key", KEY40),
	    FX("ref", 'b')), -1);
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FX("st", 'f'),
	    FS("rsn", "x"), FI("ra", 5)), -1);
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 503),
	    FI("rsn", 1), FI("ra", 5)), -1);
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 503),
	    FS("rsn", "x"), FX("ra", 'n')), -1);
	/* a non-string map key: {"t": 3, 7: 1} */
	assert_int_equal(DEC(FI("t", 3), { NULL, 0, 'i', 1, NULL, 0 }), -1);
	/* a bin key instead of str: {bin "t": 3} */
	assert_int_equal(dec_raw("\x81\xc4\x01t\x03", 5), -1);
}

static void
t_roundtrip_seats(void **state)
{
	struct ipc_msg	in, out;

	(void)state;
	memset(&in, 0, sizeof(in));
	in.type = IPC_SEAT_REQ;
	in.rid = 9;
	strcpy(in.key, KEY40);
	in.op = IPC_SEAT_RELEASE;
	strcpy(in.instance, "pod-7.a_b");
	roundtrip(&in, &out);
	assert_int_equal(out.type, IPC_SEAT_REQ);
	assert_int_equal(out.op, IPC_SEAT_RELEASE);
	assert_string_equal(out.instance, "pod-7.a_b");
	memset(&in, 0, sizeof(in));
	in.type = IPC_SEAT_RES;
	in.status = 409;
	in.used = 3;
	in.total = 3;
	in.granted = -1;
	in.retry_after = 17;
	roundtrip(&in, &out);
	assert_int_equal(out.status, 409);
	assert_int_equal(out.total, 3);
	assert_int_equal(out.granted, -1);
	assert_int_equal(out.retry_after, 17);
	memset(&in, 0, sizeof(in));
	in.type = IPC_GRANT_REQ;
	strcpy(in.holder, "0123456789abcdef");
	strcpy(in.kid, "fedcba9876543210");
	in.want = IPC_SEATS_MAX;
	roundtrip(&in, &out);
	assert_string_equal(out.kid, "fedcba9876543210");
	assert_int_equal(out.want, IPC_SEATS_MAX);
	assert_string_equal(out.instance, "");	/* a proxy naming none */
	strcpy(in.instance, "3f2a9c0d1e4b5a67");
	roundtrip(&in, &out);
	assert_string_equal(out.instance, "3f2a9c0d1e4b5a67");
	assert_int_equal(out.takeover, 0);
	in.takeover = 1;
	in.seq = 1796412345678LL;
	roundtrip(&in, &out);
	assert_int_equal(out.takeover, 1);
	assert_int_equal(out.seq, 1796412345678LL);
	memset(&in, 0, sizeof(in));
	in.type = IPC_GRANT_RES;
	in.status = 200;
	strcpy(in.kid, "fedcba9876543210");
	in.granted = 2;
	in.total = -1;
	in.expires = 1800000000;
	roundtrip(&in, &out);
	assert_int_equal(out.expires, 1800000000);
	/* 409 is a seat answer only; a key_id is lowercase hex */
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 409),
	    FS("rsn", ""), FI("ra", 1)), -1);
	assert_int_equal(DEC(FI("t", 6), FI("rid", 7), FS("hold",
	    "0123456789ABCDEF"), FS("ins", ""), FS("kid", "fedcba9876543210"),
	    FI("want", 1), FI("tko", 0), FI("seq", 0)), -1);
	assert_int_equal(DEC(FI("t", 6), FI("rid", 7), FS("hold",
	    "0123456789abcdef"), FS("ins", ""), FS("kid", "fedcba9876543210"),
	    FI("want", IPC_SEATS_MAX + 1), FI("tko", 0), FI("seq", 0)), -1);
	assert_true(DEC(FI("t", 6), FI("rid", 7), FS("hold",
	    "0123456789abcdef"), FS("ins", ""), FS("kid",
	    "fedcba9876543210"), FI("want", 1), FI("tko", 1), FI("seq", 9)) > 0);
	assert_int_equal(DEC(FI("t", 6), FI("rid", 7), FS("hold",
	    "0123456789abcdef"), FS("ins", ""), FS("kid",
	    "fedcba9876543210"), FI("want", 1), FI("tko", 2), FI("seq", 9)), -1);
	assert_int_equal(DEC(FI("t", 6), FI("rid", 7), FS("hold",
	    "0123456789abcdef"), FS("ins", ""), FS("kid",
	    "fedcba9876543210"), FI("want", 1), FI("tko", 0), FI("seq", -1)),
	    -1);
	/* a grant request names its instance, if only as "" */
	assert_int_equal(DEC(FI("t", 6), FI("rid", 7), FS("hold",
	    "0123456789abcdef"), FS("kid", "fedcba9876543210"),
	    FI("want", 1), FI("tko", 0), FI("seq", 0)), -1);
	/* an instance's seat request must name the instance */
	assert_int_equal(DEC(FI("t", 4), FI("rid", 7), FS("key",
	    "0123456789012345678901234567890123456789"), FI("op", 1),
	    FS("ins", ""), FI("want", 1)), -1);
}

static void
t_schema_ranges(void **state)
{
	(void)state;
	assert_int_equal(DEC(FI("t", 9)), -1);
	assert_int_equal(DEC(FI("t", 8)), -1);
	assert_int_equal(DEC(FI("t", 0)), -1);
	assert_int_equal(DEC(FI("t", -1)), -1);
	assert_int_equal(DEC(FI("t", 1), FI("rid", -1), FS("key", KEY40),
	    FI("ref", 0)), -1);
	assert_int_equal(DEC(FI("t", 1), FI("rid", 4294967296LL),
	    FS("key", KEY40), FI("ref", 0)), -1);
	assert_int_equal(DEC(FI("t", 1), FI("rid", 7), FS("key", KEY40),
	    FI("ref", 2)), -1);
	assert_int_equal(DEC(FI("t", 1), FI("rid", 7), FS("key", KEY40),
	    FI("ref", -1)), -1);
	assert_int_equal(DEC(FI("t", 1), FI("rid", 7), FS("key", KEY41),
	    FI("ref", 0)), -1);
	assert_int_equal(DEC(FI("t", 1), FI("rid", 7), FS("key", ""),
	    FI("ref", 0)), -1);
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 42),
	    FS("rsn", "x"), FI("ra", 5)), -1);
	/* Only the three answers a worker knows how to relay. */
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 404),
	    FS("rsn", "x"), FI("ra", 5)), -1);
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 500),
	    FS("rsn", "x"), FI("ra", 5)), -1);
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", -503),
	    FS("rsn", "x"), FI("ra", 5)), -1);
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 1LL << 40),
	    FS("rsn", "x"), FI("ra", 5)), -1);
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 503),
	    FS("rsn", "x"), FI("ra", -1)), -1);
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 503),
	    FS("rsn", "x"), FI("ra", 86401)), -1);
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 503),
	    FS("rsn", "1234567890123456"), FI("ra", 5)), -1);
	/* edges that are fine */
	assert_true(DEC(FI("t", 1), FI("rid", 4294967295LL),
	    FS("key", KEY40), FI("ref", 1)) > 0);
	assert_int_equal(msg.rid, UINT32_MAX);
	assert_string_equal(msg.key, KEY40);
}

/* Workers never send a malformed key (they answer 401): one is hostile. */
static void
t_schema_malformed_key(void **state)
{
	(void)state;
	assert_int_equal(DEC(FI("t", 1), FI("rid", 7), FS("key", "k"),
	    FI("ref", 0)), -1);
	assert_int_equal(DEC(FI("t", 1), FI("rid", 7), FS("key",
	    "Abcdefghij0123456789KLMNOPQRSTuvwxyz012"), FI("ref", 0)), -1);
	assert_int_equal(DEC(FI("t", 1), FI("rid", 7), FS("key",
	    "Abcdefghij0123456789KLMNOPQRSTuvwxyz012-"), FI("ref", 0)), -1);
	assert_true(DEC(FI("t", 1), FI("rid", 7), FS("key", KEY40),
	    FI("ref", 0)) > 0);
}

/* A NUL would silently shorten a key or a field name: refused. */
static void
t_schema_nul(void **state)
{
	(void)state;
	assert_int_equal(DEC(FI("t", 1), FI("rid", 7), FS("key", "ab\0cd"),
	    FI("ref", 0)), -1);
	assert_int_equal(DEC(FI("t", 1), FI("rid", 7), FS("key", "\0"),
	    FI("ref", 0)), -1);
	assert_int_equal(DEC(FI("t", 1), FI("rid", 7), FS("key",
	    KEY40 "\0"), FI("ref", 0)), -1);	/* 41 with NUL */
	assert_int_equal(DEC(FI("t", 2), FI("rid", 7), FI("st", 503),
	    FS("rsn", "x\0"), FI("ra", 5)), -1);
	assert_int_equal(DEC(FI("t\0", 3)), -1);
	assert_int_equal(DEC(FI("t", 3), FI("rid\0", 1)), -1);
}

static void
t_encode_refuses(void **state)
{
	struct ipc_msg	m;
	unsigned char	buf[IPC_MAX_FRAME];
	int		n;

	(void)state;
	memset(&m, 0, sizeof(m));
	m.type = (enum ipc_type)0;
	assert_int_equal(ipc_encode(&m, buf, sizeof(buf)), -1);
	m.type = (enum ipc_type)(IPC_GRANT_RES + 1);	/* the first unknown */
	assert_int_equal(ipc_encode(&m, buf, sizeof(buf)), -1);
	m.type = (enum ipc_type)-1;
	assert_int_equal(ipc_encode(&m, buf, sizeof(buf)), -1);
	/* a buffer one byte short is refused, the exact size is not */
	m.type = IPC_LEASE_REQ;
	strcpy(m.key, KEY40);
	n = ipc_encode(&m, buf, sizeof(buf));
	assert_true(n > 4);
	assert_int_equal(ipc_encode(&m, buf, (size_t)n - 1), -1);
	assert_int_equal(ipc_encode(&m, buf, (size_t)n), n);
	assert_int_equal(ipc_encode(&m, buf, 0), -1);
}

static void
t_mpcheck_lengths(void **state)
{
	static const struct {
		const char	*b;
		size_t		 n;
	} v[] = {
		{ "\x05", 1 },				/* positive fixint */
		{ "\xff", 1 },				/* negative fixint */
		{ "\xc0", 1 }, { "\xc2", 1 }, { "\xc3", 1 },
		{ "\xcc\xff", 2 }, { "\xd1\x80\x00", 3 },
		{ "\xce\x01\x02\x03\x04", 5 },
		{ "\xd3\x80\x00\x00\x00\x00\x00\x00\x01", 9 },	/* int64 */
		{ "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9 },	/* uint64 */
		{ "\xca\x3f\x80\x00\x00", 5 },			/* float32 */
		{ "\xcb\x40\x09\x21\xfb\x54\x44\x2d\x18", 9 },	/* float64 */
		{ "\xa0", 1 }, { "\xa3" "abc", 4 },
		{ "\xd9\x03" "abc", 5 },			/* str8 */
		{ "\xda\x00\x02" "ab", 5 },			/* str16 */
		{ "\xc4\x01\x00", 3 },				/* bin8 */
		{ "\xc5\x00\x00", 3 },				/* bin16 */
		{ "\x90", 1 }, { "\x80", 1 },
		{ "\x92\x91\x90\x81\xa1k\x92\x01\xc0", 9 },	/* [[[]],{k:[1,nil]}] */
		{ "\xdc\x00\x02\xcb\x00\x00\x00\x00\x00\x00\x00\x00\xa1x",
		  14 },						/* array16 */
		{ "\xde\x00\x01\xa1k\xde\x00\x01\x01\x02", 10 },	/* map16 */
	};
	unsigned char	buf[64], *p;
	size_t		i;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		/* exact: the length; followed by more: still the length */
		p = malloc(v[i].n);
		assert_non_null(p);
		memcpy(p, v[i].b, v[i].n);
		assert_int_equal(mpcheck(p, v[i].n), (int)v[i].n);
		/* one byte short must fail (and not overread) */
		assert_int_equal(mpcheck(p, v[i].n - 1), -1);
		free(p);
		memcpy(buf, v[i].b, v[i].n);
		memset(buf + v[i].n, 0x01, 10);
		assert_int_equal(mpcheck(buf, v[i].n + 10), (int)v[i].n);
	}
	/* a longer str8, then cut short by one */
	memset(buf, 'a', sizeof(buf));
	buf[0] = 0xd9;
	buf[1] = 60;
	assert_int_equal(mpcheck(buf, 62), 62);
	assert_int_equal(mpcheck(buf, 61), -1);
}

/* The channel: a socketpair driven by one event_base. */
struct chst {
	struct event_base	*base;
	int			 nmsg;
	struct ipc_msg		 m[4];
	int			 nclose;
	int			 bad;
};

static void
on_msg(struct ipc_chan *c, const struct ipc_msg *m, void *arg)
{
	struct chst	*s = arg;

	(void)c;
	if (s->nmsg < 4)
		s->m[s->nmsg] = *m;
	s->nmsg++;
	event_base_loopbreak(s->base);
}

static void
on_close(struct ipc_chan *c, int bad, void *arg)
{
	struct chst	*s = arg;

	(void)c;
	s->nclose++;
	s->bad = bad;
	event_base_loopbreak(s->base);
}

/* Run the loop until cond holds; a stuck loop gives up after 2 s. */
#define RUN_UNTIL(s, cond) do {						\
	int	 n_ = 0;						\
	struct timeval tv_ = { 0, 100000 };				\
	while (!(cond) && n_++ < 20) {					\
		event_base_loopexit((s)->base, &tv_);			\
		event_base_dispatch((s)->base);				\
	}								\
	assert_true(cond);						\
} while (0)

static void
t_chan_send(void **state)
{
	struct chst		 sa, sb;
	struct ipc_chan		*a, *b;
	struct ipc_msg		 m;
	int			 sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	memset(&sa, 0, sizeof(sa));
	memset(&sb, 0, sizeof(sb));
	sa.base = sb.base = event_base_new();
	assert_non_null(sa.base);
	a = ipc_chan_new(sa.base, sv[0], on_msg, on_close, &sa);
	b = ipc_chan_new(sb.base, sv[1], on_msg, on_close, &sb);
	assert_non_null(a);
	assert_non_null(b);

	memset(&m, 0, sizeof(m));
	m.type = IPC_LEASE_REQ;
	m.rid = 4242;
	strcpy(m.key, KEY40);
	m.refresh = 1;
	assert_int_equal(ipc_chan_send(a, &m), 0);
	m.type = IPC_USAGE_KICK;
	assert_int_equal(ipc_chan_send(a, &m), 0);
	m.type = (enum ipc_type)(IPC_GRANT_RES + 1);	/* unknown */
	assert_int_equal(ipc_chan_send(a, &m), -1);
	RUN_UNTIL(&sb, sb.nmsg == 2);
	assert_int_equal(sb.m[0].type, IPC_LEASE_REQ);
	assert_int_equal(sb.m[0].rid, 4242);
	assert_string_equal(sb.m[0].key, KEY40);
	assert_int_equal(sb.m[0].refresh, 1);
	assert_int_equal(sb.m[1].type, IPC_USAGE_KICK);

	/* and back the other way */
	memset(&m, 0, sizeof(m));
	m.type = IPC_LEASE_RES;
	m.rid = 4242;
	m.status = 403;
	strcpy(m.reason, "revoked");
	assert_int_equal(ipc_chan_send(b, &m), 0);
	RUN_UNTIL(&sa, sa.nmsg == 1);
	assert_int_equal(sa.m[0].type, IPC_LEASE_RES);
	assert_int_equal(sa.m[0].status, 403);
	assert_string_equal(sa.m[0].reason, "revoked");
	assert_int_equal(sa.nclose + sb.nclose, 0);

	/* an orderly close is not "bad" */
	ipc_chan_free(a);
	RUN_UNTIL(&sb, sb.nclose == 1);
	assert_int_equal(sb.bad, 0);
	ipc_chan_free(b);
	event_base_free(sa.base);
}

/* Garbage from the peer closes the channel as bad; good frames before it
 * are still delivered. */
static void
t_chan_garbage(void **state)
{
	static const struct {
		const char	*b;
		size_t		 n;
	} g[] = {
		{ "\x00\x00\x00\x02\xc1\xc1", 6 },
		{ "\x00\x00\x00\x00", 4 },
		{ "\xff\xff\xff\xff", 4 },
		{ "\x00\x00\x08\xfd", 4 },	/* IPC_MAX_FRAME - 3 */
		{ "\x00\x00\x00\x05\xdf\xff\xff\xff\xff", 9 },
		{ "GET / HTTP/1.1\r\n\r\n", 18 },
		{ "\x00\x00\x00\x04\x81\xa1t\x03" "\x00\x00\x00\x01\x00", 13 },
	};
	struct chst		 s;
	struct ipc_chan		*c;
	size_t			 i;
	int			 sv[2];

	(void)state;
	assert_int_equal(0x08fd, IPC_MAX_FRAME - 3);
	for (i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		memset(&s, 0, sizeof(s));
		s.base = event_base_new();
		assert_non_null(s.base);
		c = ipc_chan_new(s.base, sv[1], on_msg, on_close, &s);
		assert_non_null(c);
		assert_int_equal(write(sv[0], g[i].b, g[i].n),
		    (ssize_t)g[i].n);
		RUN_UNTIL(&s, s.nclose == 1);
		assert_int_equal(s.bad, 1);
		/* only the last case starts with a good USAGE_KICK */
		assert_int_equal(s.nmsg, i == 6 ? 1 : 0);
		if (i == 6)
			assert_int_equal(s.m[0].type, IPC_USAGE_KICK);
		ipc_chan_free(c);
		close(sv[0]);
		event_base_free(s.base);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_roundtrip_lease_req),
		cmocka_unit_test(t_roundtrip_lease_res),
		cmocka_unit_test(t_roundtrip_usage_kick),
		cmocka_unit_test(t_roundtrip_seats),
		cmocka_unit_test(t_split_every_offset),
		cmocka_unit_test(t_back_to_back),
		cmocka_unit_test(t_bad_length_header_only),
		cmocka_unit_test(t_truncated_and_trailing),
		cmocka_unit_test(t_hostile_containers),
		cmocka_unit_test(t_ext_and_depth),
		cmocka_unit_test(t_schema_fields),
		cmocka_unit_test(t_schema_types),
		cmocka_unit_test(t_schema_ranges),
		cmocka_unit_test(t_schema_nul),
		cmocka_unit_test(t_schema_malformed_key),
		cmocka_unit_test(t_encode_refuses),
		cmocka_unit_test(t_mpcheck_lengths),
		cmocka_unit_test(t_chan_send),
		cmocka_unit_test(t_chan_garbage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

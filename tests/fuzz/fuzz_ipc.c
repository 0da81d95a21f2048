/*
 * fuzz_ipc.c - libFuzzer target for the IPC frame decoder.
 *
 * Build: `make fuzz-build` (clang -fsanitize=fuzzer,address,undefined,
 * linked with the whole library built so).
 *
 * Besides memory safety (a peer's hostile headers must never reach
 * msgpack-c's allocator) it checks what the channel relies on: a decoded
 * frame lies inside the data and within IPC_MAX_FRAME, one byte less is
 * always "more", the message obeys its type's schema (a token only on a
 * lease answer's 200), and it survives
 * an encode/decode round trip unchanged.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc.h"
#include "mpcheck.h"
#include "token.h"

#define CHECK(x)	do { if (!(x)) abort(); } while (0)

static void
check_msg(const struct ipc_msg *m)
{
	size_t	klen = strnlen(m->key, sizeof(m->key));
	size_t	rlen = strnlen(m->reason, sizeof(m->reason));
	size_t	llen = strnlen(m->lease, sizeof(m->lease));

	CHECK(klen < sizeof(m->key) && rlen < sizeof(m->reason));
	CHECK(llen < sizeof(m->lease));
	/* a token comes with a lease answer's 200 alone */
	CHECK(llen == 0 || (m->type == IPC_LEASE_RES && m->status == 200));
	switch (m->type) {
	case IPC_LEASE_REQ:
		CHECK(token_key_valid(m->key, klen));
		CHECK(m->refresh == 0 || m->refresh == 1);
		CHECK(m->status == 0 && rlen == 0 && m->retry_after == 0);
		break;
	case IPC_LEASE_RES:
		CHECK(m->status >= 100 && m->status <= 599);
		CHECK(m->retry_after >= 0 && m->retry_after <= 86400);
		CHECK(klen == 0 && m->refresh == 0);
		break;
	case IPC_USAGE_KICK:
		CHECK(m->rid == 0 && klen == 0 && rlen == 0);
		CHECK(m->refresh == 0 && m->status == 0 &&
		    m->retry_after == 0);
		break;
	case IPC_SEAT_REQ:
		CHECK(klen >= 1 && m->want == 1);
		CHECK(m->op == IPC_SEAT_TAKE || m->op == IPC_SEAT_RELEASE);
		CHECK(strnlen(m->instance, sizeof(m->instance)) >= 1);
		break;
	case IPC_GRANT_REQ:
		CHECK(strlen(m->holder) == 16 && strlen(m->kid) == 16);
		CHECK(m->want >= 0 && m->want <= IPC_SEATS_MAX);
		break;
	case IPC_SEAT_RES:
	case IPC_GRANT_RES:
		CHECK(m->status >= 200 && m->status <= 503);
		CHECK(m->total >= -1 && m->granted >= -1 && m->expires >= 0);
		break;
	default:
		CHECK(0);
	}
}

static void
check_roundtrip(const struct ipc_msg *m)
{
	unsigned char	buf[IPC_MAX_FRAME];
	struct ipc_msg	m2;
	int		n;

	n = ipc_encode(m, buf, sizeof(buf));
	CHECK(n > 4 && n <= IPC_MAX_FRAME);
	CHECK(ipc_decode(buf, (size_t)n, &m2) == n);
	CHECK(m2.type == m->type && m2.rid == m->rid);
	CHECK(strcmp(m2.key, m->key) == 0);
	CHECK(strcmp(m2.reason, m->reason) == 0);
	CHECK(strcmp(m2.lease, m->lease) == 0);
	CHECK(m2.refresh == m->refresh && m2.status == m->status);
	CHECK(m2.retry_after == m->retry_after);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ipc_msg	m;
	int		rv, n;

	/* The walker alone, over the raw bytes. */
	n = mpcheck(data, size);
	CHECK(n == -1 || (n >= 1 && (size_t)n <= size));

	rv = ipc_decode(data, size, &m);
	CHECK(rv >= -1);
	if (rv == 0) {
		/* "more" only while a legal frame is still incomplete */
		CHECK(size < IPC_MAX_FRAME);
		return 0;
	}
	if (rv == -1)
		return 0;
	CHECK(rv > 4 && rv <= IPC_MAX_FRAME && (size_t)rv <= size);
	CHECK(mpcheck(data + 4, (size_t)rv - 4) == rv - 4);
	check_msg(&m);
	CHECK(ipc_decode(data, (size_t)rv - 1, &m) == 0);
	CHECK(ipc_decode(data, (size_t)rv, &m) == rv);
	check_roundtrip(&m);
	return 0;
}

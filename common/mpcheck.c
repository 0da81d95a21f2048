/*
 * mpcheck.c - msgpack-c trusts container headers and allocates
 * n * sizeof(msgpack_object) for them; a 6-byte frame could ask for
 * gigabytes. This walker proves every length fits in what was received.
 */
#include <stdint.h>

#include "mpcheck.h"

static uint64_t
mp_be(const unsigned char *p, int n)
{
	uint64_t v = 0;

	while (n-- > 0)
		v = (v << 8) | *p++;
	return v;
}

/*
 * Size of the header at p and what follows it: *payload raw bytes, or
 * *children objects for arrays and maps. Returns header size or -1.
 */
static int
mp_head(const unsigned char *p, size_t len, uint64_t *payload,
    uint64_t *children)
{
	unsigned char	c = p[0];
	int		n;

	*payload = *children = 0;
	if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
		return 1;
	if ((c & 0xe0) == 0xa0)
		return *payload = c & 0x1f, 1;
	if ((c & 0xf0) == 0x90)
		return *children = c & 0x0f, 1;
	if ((c & 0xf0) == 0x80)
		return *children = 2 * (uint64_t)(c & 0x0f), 1;
	switch (c) {
	case 0xcc: case 0xd0: return *payload = 1, 1;
	case 0xcd: case 0xd1: return *payload = 2, 1;
	case 0xca: case 0xce: case 0xd2: return *payload = 4, 1;
	case 0xcb: case 0xcf: case 0xd3: return *payload = 8, 1;
	case 0xc4: case 0xd9: n = 1; break;		/* bin8, str8 */
	case 0xc5: case 0xda: n = 2; break;		/* bin16, str16 */
	case 0xc6: case 0xdb: n = 4; break;		/* bin32, str32 */
	case 0xdc: case 0xdd:				/* array16/32 */
		n = c == 0xdc ? 2 : 4;
		if (len < (size_t)n + 1)
			return -1;
		return *children = mp_be(p + 1, n), n + 1;
	case 0xde: case 0xdf:				/* map16/32 */
		n = c == 0xde ? 2 : 4;
		if (len < (size_t)n + 1)
			return -1;
		return *children = 2 * mp_be(p + 1, n), n + 1;
	default:
		return -1;				/* ext and reserved */
	}
	if (len < (size_t)n + 1)
		return -1;
	*payload = mp_be(p + 1, n);
	return n + 1;
}

static int
mp_walk(const unsigned char *buf, size_t len, int depth)
{
	uint64_t	payload, children, i;
	size_t		off;
	int		h, n;

	if (len == 0 || depth > MPCHECK_MAX_DEPTH)
		return -1;
	if ((h = mp_head(buf, len, &payload, &children)) == -1)
		return -1;
	off = (size_t)h;
	/* Each child needs at least one byte: refuse impossible counts. */
	if (payload > len - off || children > len - off)
		return -1;
	off += payload;
	for (i = 0; i < children; i++) {
		if ((n = mp_walk(buf + off, len - off, depth + 1)) == -1)
			return -1;
		off += (size_t)n;
	}
	return off > INT32_MAX ? -1 : (int)off;
}

int
mpcheck(const unsigned char *buf, size_t len)
{
	return mp_walk(buf, len, 0);
}

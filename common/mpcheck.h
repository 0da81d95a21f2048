/* mpcheck.h - bounds-check msgpack bytes before msgpack-c allocates for them. */
#ifndef MPCHECK_H
#define MPCHECK_H

#include <stddef.h>

#define MPCHECK_MAX_DEPTH	8

/*
 * Walk one msgpack object at buf[0..len) without allocating. Every str,
 * bin, array and map length is checked against the bytes that remain
 * (a container of n entries needs at least n, or 2n, more bytes), ext
 * types and nesting deeper than MPCHECK_MAX_DEPTH are refused.
 * Returns the object's encoded length, or -1.
 */
int	mpcheck(const unsigned char *buf, size_t len);

#endif

/*
 * fuzz_cache.c - libFuzzer target for `licproxy cache import` files
 * (server/cli_cache.c, through cli_cache_read): JSON lines
 * {"sha256":HEX,"lease":TOKEN}, each verified against the trusted keys
 * (here the corpus key) before anything is stored.
 *
 * Besides memory safety it checks that a file is taken whole or refused
 * whole: an accepted file yields one lease per non-blank line, a refused
 * one none.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cli.h"
#include "fuzz.h"

static size_t
lines(const uint8_t *data, size_t size)
{
	size_t	i, n = 0;
	int	blank = 1;

	for (i = 0; i < size; i++) {
		if (data[i] == '\n') {
			n += !blank;
			blank = 1;
		} else if (!strchr(" \t\r", data[i]))
			blank = 0;
	}
	return n + !blank;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	EVP_PKEY	*key = fuzz_key();
	FILE		*f;
	size_t		 n = 99;
	int		 rv;

	if (size == 0)
		return 0;
	/* fgets stops at a NUL; the line count below would not. */
	if (memchr(data, '\0', size) != NULL)
		return 0;
	CHECK((f = fmemopen((void *)data, size, "r")) != NULL);
	rv = cli_cache_read(f, &key, 1, &n);
	fclose(f);
	CHECK(rv == 0 || rv == -1);
	if (rv == 0)
		CHECK(n == lines(data, size));
	return 0;
}

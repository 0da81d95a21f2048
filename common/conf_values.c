/*
 * conf_values.c - the syntax of single values, shared by the YAML walk and
 * the CLI: plain decimals, durations and sizes with units (bounded, never
 * wrapped), upstream URLs, and "auto" for the number of workers.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "conf_int.h"

int
conf_ncpu(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	/* auto on a big machine: as many as the shared stats block holds */
	return n > CONF_MAX_WORKERS ? CONF_MAX_WORKERS : (int)n;
}

/* Plain decimal only: no sign, no blanks, no hex; -2 on overflow. */
int
conf_parse_uint(const char **sp, uint64_t *out)
{
	const char	*s = *sp;
	uint64_t	 v = 0;

	if (*s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -2;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*sp = s;
	*out = v;
	return 0;
}

static int
conf_parse_unit(const char *s, const char *const *units,
    const uint64_t *mult, uint64_t max, uint64_t *out)
{
	uint64_t	v;
	size_t		i;
	int		rv;

	if (s == NULL || (rv = conf_parse_uint(&s, &v)) == -1)
		return -1;
	/* Too many digits: still "too large" if a unit follows. */
	while (rv == -2 && *s >= '0' && *s <= '9')
		s++;
	for (i = 0; units[i] != NULL; i++)
		if (strcmp(s, units[i]) == 0)
			break;
	if (units[i] == NULL)
		return -1;
	if (rv == -2 || v > max / mult[i])
		return -2;
	*out = v * mult[i];
	return 0;
}

int
conf_parse_duration_ms(const char *s, int64_t *ms)
{
	static const char *const units[] = { "", "ms", "s", "m", "h", NULL };
	static const uint64_t mult[] = { 1000, 1, 1000, 60000, 3600000 };
	uint64_t v;
	int	 rv;

	rv = conf_parse_unit(s, units, mult, CONF_MAX_DURATION_MS, &v);
	if (rv != 0)
		return rv;
	*ms = (int64_t)v;
	return 0;
}

int
conf_parse_size(const char *s, uint64_t *bytes)
{
	static const char *const units[] = { "", "B", "KiB", "MiB", "GiB",
	    NULL };
	static const uint64_t mult[] = { 1, 1, 1ULL << 10, 1ULL << 20,
	    1ULL << 30 };

	return conf_parse_unit(s, units, mult, CONF_MAX_SIZE, bytes);
}

/*
 * https:// (keys and leases never cross a network in clear), a host, and
 * nothing that would break a request.
 */
int
conf_url_ok(const char *s)
{
	const char	*h;
	size_t		 i;

	if (strncmp(s, "https://", 8) != 0)
		return 0;
	h = s + 8;
	if (*h == '\0' || *h == '/' || *h == ':' || *h == '?' || *h == '#')
		return 0;
	for (i = 0; s[i] != '\0'; i++)
		if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

int
conf_ipc_path(const char *store, char *buf, size_t len)
{
	int n;

	n = snprintf(buf, len, "%s/" CONF_IPC_SOCK, store);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

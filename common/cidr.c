/*
 * cidr.c - address ranges. inet_pton does the address syntax; this file
 * only adds the prefix length and the IPv4-mapped form.
 */
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"

#define CIDR_TEXT_MAX	64	/* longer than any address/prefix */

static const unsigned char v4mapped[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

static void
cidr_v4(unsigned char out[CIDR_ADDR_LEN], const void *in4)
{
	memcpy(out, v4mapped, sizeof(v4mapped));
	memcpy(out + 12, in4, 4);
}

/* Decimal 0-max with no sign, no leading zeros, nothing after it. */
static int
cidr_prefix(const char *s, int max)
{
	char	*end;
	long	 n;

	if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] != '\0'))
		return -1;
	n = strtol(s, &end, 10);
	return *end != '\0' || n > max ? -1 : (int)n;
}

static void
cidr_mask(struct cidr *c)
{
	int i;

	for (i = 0; i < CIDR_ADDR_LEN; i++) {
		if (c->bits >= (i + 1) * 8)
			continue;
		c->addr[i] &= c->bits <= i * 8 ? 0 :
		    (unsigned char)(0xff << (8 - (c->bits - i * 8)));
	}
}

int
cidr_parse(const char *s, struct cidr *out)
{
	char		 buf[CIDR_TEXT_MAX], *slash;
	unsigned char	 a4[4];
	int		 v4, max, bits;

	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	if ((slash = strchr(buf, '/')) != NULL)
		*slash++ = '\0';
	v4 = inet_pton(AF_INET, buf, a4) == 1;
	if (v4)
		cidr_v4(out->addr, a4);
	else if (inet_pton(AF_INET6, buf, out->addr) != 1)
		return -1;
	max = v4 ? 32 : 128;
	bits = slash == NULL ? max : cidr_prefix(slash, max);
	if (bits == -1)
		return -1;
	out->bits = v4 ? bits + 96 : bits;
	cidr_mask(out);
	return 0;
}

int
cidr_match(const struct cidr *c, const unsigned char addr[CIDR_ADDR_LEN])
{
	int	full = c->bits / 8, rest = c->bits % 8;

	if (memcmp(c->addr, addr, full) != 0)
		return 0;
	return rest == 0 ||
	    ((addr[full] ^ c->addr[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

int
cidr_match_any(const struct cidr *c, int n,
    const unsigned char addr[CIDR_ADDR_LEN])
{
	int i;

	for (i = 0; i < n; i++)
		if (cidr_match(&c[i], addr))
			return 1;
	return 0;
}

int
cidr_from_sockaddr(const struct sockaddr *sa, socklen_t len,
    unsigned char addr[CIDR_ADDR_LEN])
{
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		cidr_v4(addr, &((const struct sockaddr_in *)sa)->sin_addr);
		return 0;
	}
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		memcpy(addr, &((const struct sockaddr_in6 *)sa)->sin6_addr,
		    CIDR_ADDR_LEN);
		return 0;
	}
	return -1;
}

const char *
cidr_format(const unsigned char addr[CIDR_ADDR_LEN], char *buf)
{
	const char *r;

	if (memcmp(addr, v4mapped, sizeof(v4mapped)) == 0)
		r = inet_ntop(AF_INET, addr + 12, buf, CIDR_TEXT_LEN);
	else
		r = inet_ntop(AF_INET6, addr, buf, CIDR_TEXT_LEN);
	return r != NULL ? r : "?";
}

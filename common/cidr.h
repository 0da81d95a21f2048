/*
 * cidr.h - client addresses and address ranges (license.miss_exempt).
 * IPv4 is kept as an IPv4-mapped IPv6 address (::ffff:a.b.c.d), so one
 * 16-byte form covers both families and a v4 range matches a v4 peer
 * whichever socket family it arrived on.
 */
#ifndef CIDR_H
#define CIDR_H

#include <sys/socket.h>

#define CIDR_ADDR_LEN	16
#define CIDR_TEXT_LEN	46	/* INET6_ADDRSTRLEN */

struct cidr {
	unsigned char	addr[CIDR_ADDR_LEN];	/* host bits cleared */
	int		bits;			/* 0-128, of the mapped form */
};

/* "10.0.0.0/8", "::1", "2001:db8::/32"; 0, or -1 for anything else. */
int	cidr_parse(const char *s, struct cidr *out);
int	cidr_match(const struct cidr *, const unsigned char addr[CIDR_ADDR_LEN]);
int	cidr_match_any(const struct cidr *, int n,
	    const unsigned char addr[CIDR_ADDR_LEN]);
/* The 16-byte form of an AF_INET or AF_INET6 address; -1 otherwise. */
int	cidr_from_sockaddr(const struct sockaddr *, socklen_t,
	    unsigned char addr[CIDR_ADDR_LEN]);
/* addr as text, IPv4-mapped ones as plain IPv4; buf has CIDR_TEXT_LEN. */
const char *cidr_format(const unsigned char addr[CIDR_ADDR_LEN], char *buf);

#endif

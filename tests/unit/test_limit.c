/*
 * test_limit.c - the miss budget: CIDR parsing and matching, the GCRA
 * token bucket, the shared table (eviction, sharing across fork, a holder
 * killed while it holds a set's lock).
 */
#include <sys/mman.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cidr.h"
#include "limit.h"

#define US	1000000LL

static void
addr_of(const char *s, unsigned char out[CIDR_ADDR_LEN])
{
	struct cidr c;

	assert_int_equal(cidr_parse(s, &c), 0);
	memcpy(out, c.addr, CIDR_ADDR_LEN);
}

static int
matches(const char *range, const char *addr)
{
	struct cidr	c;
	unsigned char	a[CIDR_ADDR_LEN];

	assert_int_equal(cidr_parse(range, &c), 0);
	addr_of(addr, a);
	return cidr_match(&c, a);
}

static void
t_cidr_parse(void **state)
{
	static const char *const bad[] = {
		"", "bogus", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1",
		"10.0.0.0/08", "10.0.0.0/8x", "10.0.0/8", "1.2.3.4 ", " 1.2.3.4",
		"10.0.0.0/8/8", "2001:db8:::1", "::1/+5",
		"0123456789012345678901234567890123456789012345678901234567890123",
	};
	struct cidr	c;
	size_t		i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(cidr_parse(bad[i], &c), -1);
	assert_int_equal(cidr_parse("10.1.2.3/8", &c), 0);
	assert_int_equal(c.bits, 104);
	assert_int_equal(c.addr[12], 10);
	assert_int_equal(c.addr[13], 0);	/* host bits cleared */
	assert_int_equal(c.addr[10], 0xff);
	assert_int_equal(cidr_parse("2001:db8::1", &c), 0);
	assert_int_equal(c.bits, 128);
	assert_int_equal(cidr_parse("0.0.0.0/0", &c), 0);
	assert_int_equal(c.bits, 96);
	assert_int_equal(cidr_parse("::/0", &c), 0);
	assert_int_equal(c.bits, 0);
}

static void
t_cidr_match(void **state)
{
	(void)state;
	assert_true(matches("127.0.0.1/32", "127.0.0.1"));
	assert_false(matches("127.0.0.1/32", "127.0.0.2"));
	assert_true(matches("10.0.0.0/8", "10.255.1.2"));
	assert_false(matches("10.0.0.0/8", "11.0.0.1"));
	assert_true(matches("192.168.4.0/22", "192.168.7.255"));
	assert_false(matches("192.168.4.0/22", "192.168.8.0"));
	assert_true(matches("0.0.0.0/0", "8.8.8.8"));
	assert_false(matches("0.0.0.0/0", "2001:db8::1"));	/* v4 only */
	assert_true(matches("::/0", "8.8.8.8"));
	assert_true(matches("2001:db8::/32", "2001:db8:ffff::1"));
	assert_false(matches("2001:db8::/32", "2001:db9::1"));
	assert_true(matches("fe80::/10", "febf::1"));
	assert_false(matches("fe80::/10", "fec0::1"));
	/* A v4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d. */
	assert_true(matches("10.0.0.0/8", "::ffff:10.9.9.9"));
	assert_true(matches("::1", "::1"));
	assert_false(matches("::1", "127.0.0.1"));
}

static void
t_cidr_sockaddr(void **state)
{
	struct sockaddr_in	s4 = { .sin_family = AF_INET };
	struct sockaddr_in6	s6 = { .sin6_family = AF_INET6 };
	struct sockaddr		su = { .sa_family = AF_UNIX };
	unsigned char		a[CIDR_ADDR_LEN], want[CIDR_ADDR_LEN];

	(void)state;
	inet_pton(AF_INET, "192.0.2.7", &s4.sin_addr);
	assert_int_equal(cidr_from_sockaddr((struct sockaddr *)&s4,
	    sizeof(s4), a), 0);
	addr_of("192.0.2.7", want);
	assert_memory_equal(a, want, CIDR_ADDR_LEN);
	inet_pton(AF_INET6, "2001:db8::7", &s6.sin6_addr);
	assert_int_equal(cidr_from_sockaddr((struct sockaddr *)&s6,
	    sizeof(s6), a), 0);
	addr_of("2001:db8::7", want);
	assert_memory_equal(a, want, CIDR_ADDR_LEN);
	assert_int_equal(cidr_from_sockaddr(&su, sizeof(su), a), -1);
	{
		char buf[CIDR_TEXT_LEN];

		addr_of("192.0.2.7", a);
		assert_string_equal(cidr_format(a, buf), "192.0.2.7");
		addr_of("2001:db8::7", a);
		assert_string_equal(cidr_format(a, buf), "2001:db8::7");
	}
	assert_int_equal(cidr_from_sockaddr((struct sockaddr *)&s4, 4, a), -1);
}

/* burst at once, then one per 1/rate s; the wait says when. */
static void
t_gcra(void **state)
{
	int64_t	tat = 0, now = 1000 * US, wait = 0;
	int	i;

	(void)state;
	for (i = 0; i < 5; i++)
		assert_int_equal(limit_gcra(&tat, now, 2, 5, &wait), 1);
	assert_int_equal(limit_gcra(&tat, now, 2, 5, &wait), 0);
	assert_int_equal(wait, US / 2);
	/* A refused miss costs nothing: the same wait again. */
	assert_int_equal(limit_gcra(&tat, now, 2, 5, &wait), 0);
	assert_int_equal(wait, US / 2);
	assert_int_equal(limit_gcra(&tat, now + US / 2 - 1, 2, 5, &wait), 0);
	assert_int_equal(limit_gcra(&tat, now + US / 2, 2, 5, &wait), 1);
	assert_int_equal(limit_gcra(&tat, now + US / 2, 2, 5, &wait), 0);
	/* Idle long enough refills to burst, never beyond. */
	now += 3600 * US;
	for (i = 0; i < 5; i++)
		assert_int_equal(limit_gcra(&tat, now, 2, 5, &wait), 1);
	assert_int_equal(limit_gcra(&tat, now, 2, 5, &wait), 0);
	/* Rates beyond 1/us still make progress. */
	tat = 0;
	assert_int_equal(limit_gcra(&tat, now, 2000000, 1, &wait), 1);
	assert_int_equal(limit_gcra(&tat, now + 1, 2000000, 1, &wait), 1);
}

static struct limit_table *
table_new(void)
{
	struct limit_table *t;

	t = mmap(NULL, sizeof(*t), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(t != MAP_FAILED);
	assert_int_equal(limit_init(t), 0);
	return t;
}

static int
take(struct limit_table *t, const char *addr, int64_t now, int *ra)
{
	unsigned char a[CIDR_ADDR_LEN];

	addr_of(addr, a);
	return limit_take(t, a, now, 1, 3, ra);
}

static void
t_table(void **state)
{
	struct limit_table	*t = table_new();
	int64_t			 now = 50 * US;
	int			 ra = 0, i;

	(void)state;
	for (i = 0; i < 3; i++)
		assert_int_equal(take(t, "192.0.2.1", now, &ra), 1);
	assert_int_equal(take(t, "192.0.2.1", now, &ra), 0);
	assert_int_equal(ra, 1);
	/* Another address, v4 or v6, has its own budget. */
	assert_int_equal(take(t, "192.0.2.2", now, &ra), 1);
	assert_int_equal(take(t, "2001:db8::1", now, &ra), 1);
	assert_int_equal(take(t, "192.0.2.1", now + US, &ra), 1);
	munmap(t, sizeof(*t));
}

/*
 * Far more addresses than buckets, all at once: the table keeps its size;
 * rotating addresses does not buy a fresh burst each (a newcomer in a set
 * whose buckets are all in debt inherits the smallest debt), so the total
 * let through is bounded by the table; and once the flood is over (debt
 * is at most burst/rate s), a fresh address gets its whole burst.
 */
static void
t_table_full(void **state)
{
	struct limit_table	*t = table_new();
	unsigned char		 a[CIDR_ADDR_LEN];
	char			 s[64];
	int64_t			 now = 50 * US;
	int			 ra, i, allowed = 0, n = 16 * LIMIT_SETS * LIMIT_WAYS;

	(void)state;
	for (i = 0; i < n; i++) {
		snprintf(s, sizeof(s), "2001:db8::%x:%x", i >> 16, i & 0xffff);
		addr_of(s, a);
		allowed += limit_take(t, a, now, 1, 3, &ra);
	}
	assert_true(allowed < n);
	assert_true(allowed <= 3 * LIMIT_SETS * LIMIT_WAYS + LIMIT_SETS);
	now += 3 * US;
	for (i = 0; i < 3; i++)
		assert_int_equal(take(t, "198.51.100.9", now, &ra), 1);
	assert_int_equal(take(t, "198.51.100.9", now, &ra), 0);
	munmap(t, sizeof(*t));
}

/* A child's takes count for the parent: the table is one budget. */
static void
t_table_shared(void **state)
{
	struct limit_table	*t = table_new();
	int64_t			 now = 50 * US;
	int			 ra, st;
	pid_t			 pid;

	(void)state;
	if ((pid = fork()) == 0) {
		int ok = take(t, "192.0.2.9", now, &ra) &&
		    take(t, "192.0.2.9", now, &ra) &&
		    take(t, "192.0.2.9", now, &ra);
		_exit(ok ? 0 : 1);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(take(t, "192.0.2.9", now, &ra), 0);
	munmap(t, sizeof(*t));
}

/* A worker killed while it holds a set's lock does not wedge the set. */
static void
t_table_killed_holder(void **state)
{
	struct limit_table	*t = table_new();
	int64_t			 now = 50 * US;
	int			 ra, st, i, p[2];
	pid_t			 pid;
	char			 c;

	(void)state;
	assert_int_equal(pipe(p), 0);
	if ((pid = fork()) == 0) {
		for (i = 0; i < LIMIT_SETS; i++)
			pthread_mutex_lock(&t->sets[i].mu);
		(void)write(p[1], "x", 1);
		pause();
		_exit(0);
	}
	assert_int_equal(read(p[0], &c, 1), 1);
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_int_equal(take(t, "192.0.2.10", now, &ra), 1);
	assert_int_equal(take(t, "192.0.2.10", now, &ra), 1);
	assert_int_equal(take(t, "192.0.2.10", now, &ra), 1);
	assert_int_equal(take(t, "192.0.2.10", now, &ra), 0);
	close(p[0]);
	close(p[1]);
	munmap(t, sizeof(*t));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_cidr_parse),
		cmocka_unit_test(t_cidr_match),
		cmocka_unit_test(t_cidr_sockaddr),
		cmocka_unit_test(t_gcra),
		cmocka_unit_test(t_table),
		cmocka_unit_test(t_table_full),
		cmocka_unit_test(t_table_shared),
		cmocka_unit_test(t_table_killed_holder),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * limit.c - the shared miss budget. Each set of buckets has its own robust
 * process-shared mutex: a worker killed while holding it leaves the next
 * locker EOWNERDEAD, which marks it consistent and goes on (at worst one
 * bucket holds a half-written value, which only misprices one address
 * once). A full set evicts its stalest bucket, so the table never grows
 * and a new address always gets a bucket.
 */
#include <sys/random.h>

#include <errno.h>
#include <string.h>
#include <time.h>

#include "limit.h"

#define US	1000000LL

int
limit_init(struct limit_table *t)
{
	pthread_mutexattr_t	a;
	int			i, rv = -1;

	if (getrandom(&t->seed, sizeof(t->seed), 0) != sizeof(t->seed))
		t->seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL;
	if (pthread_mutexattr_init(&a) != 0)
		return -1;
	if (pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) != 0 ||
	    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) != 0)
		goto done;
	for (i = 0; i < LIMIT_SETS; i++)
		if (pthread_mutex_init(&t->sets[i].mu, &a) != 0)
			goto done;
	rv = 0;
done:
	pthread_mutexattr_destroy(&a);
	return rv;
}

int
limit_gcra(int64_t *tat, int64_t now_us, int rate, int burst,
    int64_t *wait_us)
{
	int64_t	interval = rate > 0 && rate <= US ? US / rate : 1;
	int64_t	next = (*tat > now_us ? *tat : now_us) + interval;

	if (next - now_us > (int64_t)burst * interval) {
		*wait_us = next - now_us - (int64_t)burst * interval;
		return 0;
	}
	*tat = next;
	return 1;
}

int64_t
limit_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * US + ts.tv_nsec / 1000;
}

/* splitmix64 over the address: cheap, and seeded per instance. */
static unsigned int
limit_set_of(const struct limit_table *t, const unsigned char *addr)
{
	uint64_t	h = t->seed, w;
	int		i;

	for (i = 0; i < CIDR_ADDR_LEN; i += 8) {
		memcpy(&w, addr + i, 8);
		h ^= w;
		h += 0x9e3779b97f4a7c15ULL;
		h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
		h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
		h ^= h >> 31;
	}
	return (unsigned int)(h % LIMIT_SETS);
}

/*
 * The address's bucket, or the stalest one (the lowest tat) taken over for
 * it. A stale bucket is already full, so the newcomer starts with a full
 * budget; only when every bucket of the set is in debt (more addresses
 * missing at full rate than the set holds) does it inherit the smallest
 * debt, which keeps address rotation from buying fresh bursts.
 */
static struct limit_bucket *
limit_bucket(struct limit_set *s, const unsigned char *addr)
{
	struct limit_bucket	*b, *stalest = &s->b[0];

	for (b = s->b; b < s->b + LIMIT_WAYS; b++) {
		if (b->tat != 0 && memcmp(b->addr, addr, CIDR_ADDR_LEN) == 0)
			return b;
		if (b->tat < stalest->tat)
			stalest = b;
	}
	memcpy(stalest->addr, addr, CIDR_ADDR_LEN);
	return stalest;
}

int
limit_take(struct limit_table *t, const unsigned char addr[CIDR_ADDR_LEN],
    int64_t now_us, int rate, int burst, int *retry_after_s)
{
	struct limit_set	*s = &t->sets[limit_set_of(t, addr)];
	struct limit_bucket	*b;
	int64_t			 wait = 0;
	int			 ok, rc;

	rc = pthread_mutex_lock(&s->mu);
	if (rc == EOWNERDEAD)
		pthread_mutex_consistent(&s->mu);
	else if (rc != 0)
		return 1;	/* cannot happen: we always mark it consistent */
	b = limit_bucket(s, addr);
	ok = limit_gcra(&b->tat, now_us, rate, burst, &wait);
	pthread_mutex_unlock(&s->mu);
	if (!ok)	/* whole seconds, rounded up: never 0 */
		*retry_after_s = (int)((wait + US - 1) / US) + (wait <= 0);
	return ok;
}

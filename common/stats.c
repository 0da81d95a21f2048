/*
 * stats.c - the shared counters block. Counters only grow: a respawned
 * process takes a free slot and the dead one's totals stay in theirs, so
 * Prometheus never sees a counter go backwards.
 */
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "limit.h"
#include "stats.h"

/*
 * This process's view of the shared block: set once by stats_create or
 * stats_adopt (master) and stats_attach (child), read through the
 * accessors below; what they point to is shared by design.
 */
static struct stats_shared	*stats;
static struct stats_slot	*stats_self;
static struct limit_table	*stats_limits;

struct stats_shared *
stats_block(void)
{
	return stats;
}

struct stats_slot *
stats_slot_self(void)
{
	return stats_self;
}

struct limit_table *
stats_limit_table(void)
{
	return stats_limits;
}

static const int code_list[STATS_NCODES] = {
	200, 202, 204, 400, 401, 403, 404, 405, 408, 409, 411, 413, 414, 415,
	429, 431, 500, 501, 503, 505, 507, 0
};

static const char *const ep_names[EP_MAX] = {
	"/v1/license", "/v1/usage", "/v1/seats", "/v1/seats/grant",
	"/v1/status", "/metrics", "/healthz", "/readyz", "/", "other"
};

static const char *const state_names[] = {
	"Initializing", "Connected", "TrustBased", "Disconnected", "Authority"
};

static int	stats_memfd = -1;

/*
 * A memfd rather than an anonymous mapping: a binary upgrade (USR2) hands
 * the descriptor to the new image, so the counters of the children that
 * keep serving across the exec stay in the figures.
 */
int
stats_create(void)
{
	int fd;

	if ((fd = memfd_create("licproxy-stats", MFD_CLOEXEC)) == -1)
		return -1;
	if (ftruncate(fd, sizeof(*stats)) == -1 || stats_adopt(fd) == -1) {
		close(fd);
		return -1;
	}
	return 0;
}

int
stats_adopt(int fd)
{
	struct stat	 sb;
	void		*p;

	/* Another build may lay the block out differently: then start anew. */
	if (fstat(fd, &sb) == -1 || sb.st_size != (off_t)sizeof(*stats))
		return -1;
	p = mmap(NULL, sizeof(*stats), PROT_READ | PROT_WRITE, MAP_SHARED,
	    fd, 0);
	if (p == MAP_FAILED)
		return -1;
	stats = p;
	stats_memfd = fd;
	/*
	 * Apart from the block, so stats_snapshot does not copy it. Not
	 * handed over by USR2: the new generation starts fresh budgets.
	 */
	p = mmap(NULL, sizeof(*stats_limits), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	stats_limits = p;
	return limit_init(stats_limits);
}

int
stats_fd(void)
{
	return stats_memfd;
}

int
stats_slot_claim(pid_t pid, int role)
{
	int i, free_i = -1;

	/* Prefer a free slot that already had this role (keeps totals tidy). */
	for (i = 0; i < STATS_MAX_SLOTS; i++) {
		if (stats->slots[i].pid != 0)
			continue;
		if (free_i == -1)
			free_i = i;
		if (stats->slots[i].role == role) {
			free_i = i;
			break;
		}
	}
	if (free_i != -1) {
		stats->slots[free_i].role = role;
		/* not accepting until the worker says (conn_fair) */
		stats->slots[free_i].tls_conns = -1;
		__atomic_store_n(&stats->slots[free_i].pid, pid,
		    __ATOMIC_RELEASE);
	}
	return free_i;
}

void
stats_slot_release(pid_t pid)
{
	int i;

	for (i = 0; i < STATS_MAX_SLOTS; i++)
		if (stats->slots[i].pid == pid)
			__atomic_store_n(&stats->slots[i].pid, 0,
			    __ATOMIC_RELEASE);
}

void
stats_attach(int slot)
{
	stats_self = slot >= 0 && slot < STATS_MAX_SLOTS ?
	    &stats->slots[slot] : NULL;
}

static int
stats_code_index(int code)
{
	int i;

	for (i = 0; i < STATS_NCODES && code_list[i] != 0; i++)
		if (code_list[i] == code)
			return i;
	return -1;
}

int
stats_code(int idx)
{
	return idx >= 0 && idx < STATS_NCODES ? code_list[idx] : 0;
}

void
stats_request(enum stats_ep ep, int code)
{
	int i;

	if (stats_self == NULL || (i = stats_code_index(code)) == -1)
		return;
	__atomic_add_fetch(&stats_self->req[ep][i], 1, __ATOMIC_RELAXED);
}

enum stats_ep
stats_endpoint(const char *path)
{
	int i;

	for (i = 0; i < EP_OTHER; i++)
		if (strcmp(path, ep_names[i]) == 0)
			return (enum stats_ep)i;
	return EP_OTHER;
}

const char *
stats_ep_name(enum stats_ep ep)
{
	return ep_names[ep];
}

const char *
stats_state_name(int s)
{
	if (s < 0 || s > ST_AUTHORITY)
		return "Initializing";
	return state_names[s];
}

void
stats_up_begin(void)
{
	__atomic_add_fetch(&stats->seq, 1, __ATOMIC_ACQ_REL);
}

void
stats_up_end(void)
{
	__atomic_add_fetch(&stats->seq, 1, __ATOMIC_ACQ_REL);
}

void
stats_snapshot(struct stats_shared *out)
{
	uint32_t	s1, s2;
	int		tries = 0;

	do {
		s1 = __atomic_load_n(&stats->seq, __ATOMIC_ACQUIRE);
		memcpy(out, stats, sizeof(*out));
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		s2 = __atomic_load_n(&stats->seq, __ATOMIC_ACQUIRE);
	} while ((s1 != s2 || (s1 & 1)) && ++tries < 100);
	out->last_error[sizeof(out->last_error) - 1] = '\0';
}

/* FNV-1a: cheap; two ids merge only on a 64-bit hash collision. */
static uint64_t
stats_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h != 0 ? h : 1;
}

/*
 * The slot holding h (*seen = -1), else the first one free or expired on
 * h's probe chain (*seen = its time, to claim it with); -1 when the table is
 * full of active instances. A slot is claimed by its time first and gets
 * its hash after: one with no hash but a time is being claimed (or its
 * claimer died, and it is free again once that time expires).
 */
static int
stats_instance_find(uint64_t h, int64_t now, int64_t *seen)
{
	uint64_t	cur;
	int64_t		t;
	int		k, i, cand = -1;

	for (k = 0; k < STATS_INSTANCES; k++) {
		i = (int)((h + (uint64_t)k) % STATS_INSTANCES);
		cur = __atomic_load_n(&stats->instances[i].hash,
		    __ATOMIC_ACQUIRE);
		t = __atomic_load_n(&stats->instances[i].seen,
		    __ATOMIC_ACQUIRE);
		if (cur == h) {
			*seen = -1;
			return i;
		}
		if (cand == -1 && ((cur == 0 && t == 0) ||
		    now - t >= STATS_INSTANCE_ACTIVE_S)) {
			cand = i;
			*seen = t;
		}
		if (cur == 0 && t == 0)		/* the end of h's chain */
			break;
	}
	return cand;
}

void
stats_instance_seen(const char *id, int64_t now)
{
	uint64_t	h = stats_hash(id);
	int64_t		t = 0;
	int		i, tries;

	/* A lost claim (another worker took the slot) looks again. */
	for (tries = 0; tries < 8; tries++) {
		if ((i = stats_instance_find(h, now, &t)) == -1)
			break;
		if (t == -1) {
			__atomic_store_n(&stats->instances[i].seen, now,
			    __ATOMIC_RELEASE);
			return;
		}
		if (__atomic_compare_exchange_n(&stats->instances[i].seen, &t,
		    now, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			__atomic_store_n(&stats->instances[i].hash, h,
			    __ATOMIC_RELEASE);
			return;
		}
	}
	__atomic_add_fetch(&stats->instances_untracked, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&stats->instances_full_at, now, __ATOMIC_RELAXED);
}

int
stats_instances_active(const struct stats_shared *s, int64_t now)
{
	int i, n = 0;

	for (i = 0; i < STATS_INSTANCES; i++)
		n += s->instances[i].hash != 0 &&
		    now - s->instances[i].seen < STATS_INSTANCE_ACTIVE_S;
	return n;
}

int
stats_instances_overflow(const struct stats_shared *s, int64_t now)
{
	return s->instances_full_at != 0 &&
	    now - s->instances_full_at < STATS_INSTANCE_ACTIVE_S;
}

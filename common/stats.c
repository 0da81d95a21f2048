/*
 * stats.c - the shared counters block. Counters only grow: a respawned
 * process takes a free slot and the dead one's totals stay in theirs, so
 * Prometheus never sees a counter go backwards.
 */
#include <string.h>
#include <sys/mman.h>

#include "limit.h"
#include "stats.h"

struct stats_shared	*stats;
struct stats_slot	*stats_self;
struct limit_table	*stats_limits;

static const int code_list[STATS_NCODES] = {
	200, 202, 204, 400, 401, 403, 404, 405, 408, 409, 411, 413, 414, 415,
	429, 431, 500, 501, 503, 505, 507, 0
};

static const char *const ep_names[EP_MAX] = {
	"/v1/license", "/v1/usage", "/v1/seats", "/v1/seats/grant",
	"/v1/status", "/metrics", "/healthz", "/readyz", "/", "other"
};

static const char *const role_names[STATS_NROLES] = {
	"worker", "uplink", "issuer"
};

static const char *const state_names[] = {
	"Initializing", "Connected", "TrustBased", "Disconnected", "Authority"
};

int
stats_create(void)
{
	void *p;

	p = mmap(NULL, sizeof(*stats), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	stats = p;
	/* Apart from the block, so stats_snapshot does not copy it. */
	p = mmap(NULL, sizeof(*stats_limits), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	stats_limits = p;
	return limit_init(stats_limits);
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

/* FNV-1a: cheap, and collisions only merge two instances in a count. */
static uint64_t
stats_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h != 0 ? h : 1;
}

void
stats_instance_seen(const char *id, int64_t now)
{
	uint64_t	h = stats_hash(id);
	int		i = (int)(h % STATS_INSTANCES);

	/* Racing workers may overwrite each other's slot: a count, not a log. */
	__atomic_store_n(&stats->instances[i].hash, h, __ATOMIC_RELAXED);
	__atomic_store_n(&stats->instances[i].seen, now, __ATOMIC_RELAXED);
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

const char *
stats_role_name(int role)
{
	return role >= 0 && role < STATS_NROLES ? role_names[role] : "?";
}

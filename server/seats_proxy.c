/*
 * seats_proxy.c - seats at a proxy (in the uplink). The proxy's grant for
 * a key, set aside for it upstream, is its limit: instances (and chained
 * proxies' sub-grants) are served out of it with no upstream request. A
 * request beyond the grant asks upstream to raise it (one flight per key,
 * later askers joining the next); every sync_interval each grant is set
 * to what is in use here, which gives back the rest and renews it. Cut
 * off, the proxy keeps serving out of its grant until the grant expires.
 */
#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "chans.h"
#include "conf.h"
#include "httpc.h"
#include "ipc.h"
#include "log.h"
#include "proc.h"
#include "store.h"
#include "store_seats.h"
#include "token.h"
#include "seats_srv.h"
#include "uplink.h"
#include "upstream.h"

#define SP_MAX_WAITERS	1024	/* per key, beyond: answered at once */
#define SP_MAX_SYNC	4096	/* grants renewed per sync */

struct sp_wait {
	TAILQ_ENTRY(sp_wait)	 entry;
	uint64_t		 chan;
	struct ipc_msg		 m;
	int64_t			 need;	/* seats it lacks */
};
TAILQ_HEAD(sp_waitq, sp_wait);

/* One upstream PUT for a key at a time: a raise, or the sync's renewal. */
struct sp_flight {
	LIST_ENTRY(sp_flight)	 entry;
	char			 kid[TOKEN_KID_LEN + 1];
	int64_t			 want;	/* asked of upstream */
	int64_t			 before;	/* the grant a give-back lowered, or -1 */
	int64_t			 sent;	/* seat clock when asked */
	struct sp_waitq		 counted, late;
	int			 n;
};

/* Key ids, at most SP_MAX_SYNC: a sync's list, the takeovers due. */
struct sp_sync {
	char	 kid[SP_MAX_SYNC][TOKEN_KID_LEN + 1];
	int	 n;
};

static struct {
	const struct conf	*cf;
	struct store		*store;
	int64_t			 next_sync_ms;
	LIST_HEAD(, sp_flight)	 flights;
	/* "X-Instance-Id: ID": proxies sharing a key hold a grant each */
	char			 self[sizeof("X-Instance-Id: ") +
				    STORE_SELF_ID_LEN];
	struct sp_sync		*takeover;	/* grants held unnamed, or NULL */
	int64_t			 seq;		/* the last request's number */
} sp;

static void	sp_start(struct sp_flight *);
static int	sp_sync1(const char *, const struct store_mygrant *, void *);
static void	sp_settled(void);

void
seats_proxy_init(const struct conf *cf, struct store *s)
{
	char	 id[STORE_SELF_ID_LEN + 1];
	int	 made;

	sp.cf = cf;
	sp.store = s;
	LIST_INIT(&sp.flights);
	sp.next_sync_ms = proc_now_ms() + cf->license.sync_interval_ms;
	/*
	 * Without its own name a proxy holds the row of its key alone, as
	 * an older one does: shared with any proxy of the same key.
	 */
	if ((made = store_self_id(s, id)) < 0) {
		log_warnx("seat grants: the store has no instance id: asking "
		    "as the proxy key alone");
		return;
	}
	snprintf(sp.self, sizeof(sp.self), "X-Instance-Id: %s", id);
	log_info("seat grants are held as instance %s", id);
	/*
	 * Grants older than the name were held in the key's unnamed row:
	 * each is taken over by its first answered claim, across restarts,
	 * until none is left.
	 */
	if (made && (sp.takeover = calloc(1, sizeof(*sp.takeover))) != NULL)
		store_mygrant_foreach(s, sp_sync1, sp.takeover);
	if (made && sp.takeover != NULL && sp.takeover->n == 0)
		sp_settled();
}

static void
sp_settled(void)
{
	free(sp.takeover);
	sp.takeover = NULL;
	if (store_self_settled(sp.store) != 0)
		log_warnx("seat grants: cannot note the takeover done");
}

/* kid's grant is still held in the unnamed row; done: no longer. */
static int
sp_takeover(const char *kid, int done)
{
	struct sp_sync	*t = sp.takeover;
	int		 i;

	for (i = 0; t != NULL && i < t->n; i++) {
		if (strcmp(t->kid[i], kid) != 0)
			continue;
		if (done)
			memcpy(t->kid[i], t->kid[--t->n], TOKEN_KID_LEN + 1);
		if (done && t->n == 0)
			sp_settled();
		return 1;
	}
	return 0;
}

static struct sp_flight *
sp_find(const char *kid)
{
	struct sp_flight *f;

	LIST_FOREACH(f, &sp.flights, entry)
		if (strcmp(f->kid, kid) == 0)
			return f;
	return NULL;
}

static void
sp_reply_init(struct ipc_msg *res, const struct ipc_msg *m, int status)
{
	memset(res, 0, sizeof(*res));
	res->type = m->type == IPC_SEAT_REQ ? IPC_SEAT_RES : IPC_GRANT_RES;
	res->rid = m->rid;
	res->status = status;
	res->total = res->granted = -1;
	res->retry_after = 1;
	memcpy(res->kid, m->kid, sizeof(res->kid));
}

static void
sp_kid(const struct ipc_msg *m, char *kid)
{
	unsigned char sha[32];

	if (m->type == IPC_GRANT_REQ) {
		memcpy(kid, m->kid, TOKEN_KID_LEN + 1);
		return;
	}
	token_key_hash(m->key, strlen(m->key), sha);
	token_kid_from_hash(sha, kid);
}

/* Claim out of grant g (a give-back under way has lowered it). */
static int
sp_claim(const struct ipc_msg *m, const char *kid,
    const struct store_mygrant *g, int64_t now, struct store_seat_use *u,
    int64_t *exp)
{
	struct store_claim	 c;
	int64_t			 sub = now + sp.cf->authority.seat_grant_ttl_s;

	memset(&c, 0, sizeof(c));
	c.kid = kid;
	c.now = now;
	c.cap = g->expires > now ? g->seats : 0;
	/*
	 * No seat outlives the grant it is cut from: past it the authority
	 * may hand the seat to another, and a proxy cut off until then
	 * would not know.
	 */
	if (m->type == IPC_SEAT_REQ) {
		c.instance = m->instance;
		c.want = 1;
		c.expires = now + sp.cf->seats.ttl_s;
	} else {
		c.holder = m->holder;
		c.holder_ins = m->instance;
		c.takeover = m->takeover;
		c.seq = m->seq;
		c.want = m->want;
		c.expires = sub;
	}
	if (c.expires > g->expires)
		c.expires = g->expires;
	*exp = c.expires;
	return store_seat_claim(sp.store, &c, u);
}

/*
 * Answer m out of the grant; 0 when it needs more seats than the grant
 * has (unless final: then the answer is what there is).
 */
static int
sp_serve(uint64_t chan, const struct ipc_msg *m, int final, int64_t *need)
{
	struct store_seat_use	u;
	struct store_mygrant	g;
	struct ipc_msg		res;
	char			kid[TOKEN_KID_LEN + 1];
	int64_t			now = store_seat_now(sp.store), exp = 0;
	int			r, seat = m->type == IPC_SEAT_REQ;

	sp_kid(m, kid);
	sp_reply_init(&res, m, 503);
	if (seat && m->op == IPC_SEAT_RELEASE) {
		res.status = store_seat_release(sp.store, kid, m->instance) ==
		    0 ? 204 : 503;
		goto send;
	}
	if ((r = store_mygrant_get(sp.store, kid, &g)) != 0) {
		*need = seat ? 1 : m->want;
		if (r != STORE_ENOTFOUND || final)
			goto send;	/* nothing known of the key: 503 */
		return 0;
	}
	if (g.total == STORE_SEATS_NOLIMIT) {
		res.status = 200;
		res.granted = seat ? -1 : m->want;
		res.expires = seat ? 0 : g.expires;
		goto send;
	}
	if (sp_claim(m, kid, &g, now, &u, &exp) != 0)
		goto send;
	*need = (seat ? 1 : m->want) - u.got;
	if (*need > 0 && !final)
		return 0;
	res.status = !seat || u.got > 0 ? 200 : 409;
	res.total = g.total;
	res.used = u.used;
	res.granted = seat ? (g.expires > now ? g.seats : 0) : u.got;
	res.expires = u.got > 0 || !seat ? exp : 0;
	res.retry_after = seats_retry_after(&u, now,
	    sp.cf->license.sync_interval_ms / 1000);
send:
	chans_send(chan, &res);
	return 1;
}

static struct sp_flight *
sp_flight_new(const char *kid)
{
	struct sp_flight *f;

	if ((f = calloc(1, sizeof(*f))) == NULL)
		return NULL;
	memcpy(f->kid, kid, sizeof(f->kid));
	TAILQ_INIT(&f->counted);
	TAILQ_INIT(&f->late);
	LIST_INSERT_HEAD(&sp.flights, f, entry);
	return f;
}

/* m lacks need seats: wait for the key's next raise. */
static void
sp_wait(uint64_t chan, const struct ipc_msg *m, int64_t need)
{
	struct sp_flight	*f;
	struct sp_wait		*w;
	char			 kid[TOKEN_KID_LEN + 1];
	int			 idle;

	sp_kid(m, kid);
	idle = (f = sp_find(kid)) == NULL;
	if ((idle && (f = sp_flight_new(kid)) == NULL) ||
	    f->n >= SP_MAX_WAITERS || (w = calloc(1, sizeof(*w))) == NULL) {
		sp_serve(chan, m, 1, &need);
		return;
	}
	w->chan = chan;
	w->m = *m;
	w->need = need;
	f->n++;
	TAILQ_INSERT_TAIL(idle ? &f->counted : &f->late, w, entry);
	if (idle)
		sp_start(f);
}

static void	sp_done(int, const struct httpc_res *, void *);

/*
 * A give-back binds here before it leaves: the upstream may apply it and
 * the answer never come back, or this process be killed or restarted
 * while it waits, and a grant still stored at the higher figure would
 * then be served out of while the upstream hands those seats to others.
 * Only a request that never went out (sp_restore) gets the seats back.
 */
static int
sp_lower(struct sp_flight *f)
{
	struct store_mygrant g;

	if (store_mygrant_get(sp.store, f->kid, &g) != 0 ||
	    g.total == STORE_SEATS_NOLIMIT || f->want >= g.seats)
		return 0;
	f->before = g.seats;
	g.seats = f->want;
	if (store_mygrant_put(sp.store, f->kid, &g) == 0)
		return 0;
	log_warnx("seat grant of %s: cannot store the give-back: not sent",
	    f->kid);
	return -1;
}

/* The request never left (a refused connection): it changed nothing. */
static void
sp_restore(struct sp_flight *f)
{
	struct store_mygrant g;

	if (f->before < 0 || store_mygrant_get(sp.store, f->kid, &g) != 0 ||
	    g.seats != f->want)
		return;
	g.seats = f->before;
	store_mygrant_put(sp.store, f->kid, &g);
}

/* Ask upstream for what is in use here plus what the waiters lack. */
static void
sp_start(struct sp_flight *f)
{
	struct store_seat_use	 u;
	struct sp_wait		*w;
	json_t			*j;
	char			*body;
	int64_t			 want, seq;

	f->before = -1;		/* sp_lower sets it for a give-back */
	/*
	 * Numbered on the seat clock in ms, which no restart or clock change
	 * sets back, so the upstream can tell a request held up in the
	 * network from a newer one and apply only the newer.
	 */
	seq = store_seat_now_ms(sp.store);
	sp.seq = seq > sp.seq ? seq : sp.seq + 1;
	f->sent = seq / 1000;
	store_seat_use(sp.store, f->kid, f->sent, &u);
	want = u.used;
	TAILQ_FOREACH(w, &f->counted, entry)
		want += w->need;
	f->want = want < IPC_SEATS_MAX ? want : IPC_SEATS_MAX;
	j = json_pack("{s:s, s:I, s:I}", "key_id", f->kid, "seats",
	    (json_int_t)f->want, "seq", (json_int_t)sp.seq);
	if (sp_takeover(f->kid, 0))
		json_object_set_new(j, "takeover", json_true());
	body = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (body == NULL || sp_lower(f) == -1 ||
	    upstream_call("PUT", "/v1/seats/grant",
	    sp.cf->license.key, sp.self[0] != '\0' ? sp.self : NULL, body,
	    strlen(body), sp_done, f) == -1) {
		struct httpc_res r = { .err = HTTPC_ECONNECT,
		    .errstr = "cannot start the request" };

		free(body);
		sp_done(0, &r, f);
		return;
	}
	free(body);
}

static int64_t
sp_time(json_t *j)
{
	const char	*s = json_string_value(j);
	struct tm	 tm;

	memset(&tm, 0, sizeof(tm));
	if (s == NULL || strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm) == NULL)
		return 0;
	return (int64_t)timegm(&tm);
}

/*
 * The grant's end on our seat clock. A licproxy upstream says how many
 * seconds are left (expires_in), counted here from when we asked, which
 * is no later than when it started them: the two servers' clocks need not
 * agree. Any other upstream's expires_at is read on our clock (NTP).
 */
static int64_t
sp_expires(const struct sp_flight *f, json_t *j)
{
	json_t *in = json_object_get(j, "expires_in");

	if (json_is_integer(in) && json_integer_value(in) >= 0 &&
	    json_integer_value(in) <= STORE_LEASE_MAX_S)
		return f->sent + json_integer_value(in);
	return sp_time(json_object_get(j, "expires_at"));
}

/* Keep what upstream says we hold; 1 if it rejected the key itself. */
static int
sp_store(struct sp_flight *f, const struct httpc_res *r, char *why,
    size_t whysz)
{
	json_t			*j = json_loadb(r->body, r->bodylen, 0, NULL);
	json_t			*tot = json_object_get(j, "total");
	struct store_mygrant	 g;
	int			 rejected = 0;

	if (r->status == 200 && json_is_integer(json_object_get(j,
	    "granted"))) {
		sp_takeover(f->kid, 1);
		g.seats = json_integer_value(json_object_get(j, "granted"));
		g.expires = sp_expires(f, j);
		g.total = json_is_integer(tot) ? json_integer_value(tot) :
		    STORE_SEATS_NOLIMIT;
		/* Never more than asked, or than the key has (SPEC 8). */
		if (g.seats > f->want)
			g.seats = f->want;
		if (g.total != STORE_SEATS_NOLIMIT && g.seats > g.total)
			g.seats = g.total;
		if (g.total == STORE_SEATS_NOLIMIT || g.seats > 0 ||
		    f->want > 0)
			store_mygrant_put(sp.store, f->kid, &g);
		else
			store_mygrant_put(sp.store, f->kid, NULL);
	} else if (r->status == 403 && json_is_string(json_object_get(j,
	    "reason"))) {
		snprintf(why, whysz, "%s",
		    json_string_value(json_object_get(j, "reason")));
		store_mygrant_put(sp.store, f->kid, NULL);
		rejected = 1;
	} else
		log_warnx("seat grant of %s: upstream answered %d", f->kid,
		    r->status);
	json_decref(j);
	return rejected;
}

static void
sp_reject(struct sp_wait *w, const char *why)
{
	struct ipc_msg res;

	sp_reply_init(&res, &w->m, 403);
	snprintf(res.reason, sizeof(res.reason), "%s", why);
	chans_send(w->chan, &res);
}

/*
 * The counted waiters get what there is now; the late ones are served if
 * they can be, and the rest start the next flight.
 */
static void
sp_done(int answered, const struct httpc_res *r, void *arg)
{
	struct sp_flight	*f = arg;
	struct sp_wait		*w;
	char			 why[16] = "";
	int			 rejected = 0;
	int64_t			 need;

	if (answered)
		rejected = sp_store(f, r, why, sizeof(why));
	else
		log_debug("seat grant of %s: %s", f->kid, r->errstr ?
		    r->errstr : "upstream server error");
	/*
	 * Sent but not answered (a timeout, a lost connection, a 5xx a
	 * balancer sent after the upstream applied it): the give-back binds
	 * as if applied; a raise counts only once answered.
	 */
	if (!answered && !r->sent)
		sp_restore(f);
	else if (!answered && f->before >= 0)
		log_warnx("seat grant of %s: no answer to giving back %lld of "
		    "%lld seats: holding %lld", f->kid,
		    (long long)(f->before - f->want), (long long)f->before,
		    (long long)f->want);
	upstream_state(answered, answered ? NULL : r->errstr);
	LIST_REMOVE(f, entry);
	while ((w = TAILQ_FIRST(&f->counted)) != NULL) {
		TAILQ_REMOVE(&f->counted, w, entry);
		if (rejected)
			sp_reject(w, why);
		else
			sp_serve(w->chan, &w->m, 1, &need);
		free(w);
	}
	f->n = 0;
	while ((w = TAILQ_FIRST(&f->late)) != NULL) {
		TAILQ_REMOVE(&f->late, w, entry);
		if (sp_serve(w->chan, &w->m, 0, &w->need)) {
			free(w);
			continue;
		}
		TAILQ_INSERT_TAIL(&f->counted, w, entry);
		f->n++;
	}
	if (f->n == 0) {
		free(f);
		return;
	}
	LIST_INSERT_HEAD(&sp.flights, f, entry);
	sp_start(f);
}

int
seats_proxy_request(uint64_t chan, const struct ipc_msg *m)
{
	int64_t need = 0;

	if (m->type != IPC_SEAT_REQ && m->type != IPC_GRANT_REQ)
		return 0;
	if (m->type == IPC_SEAT_REQ && !token_key_valid(m->key,
	    strlen(m->key))) {
		struct ipc_msg res;

		sp_reply_init(&res, m, 503);
		chans_send(chan, &res);
		return 1;
	}
	if (!sp_serve(chan, m, 0, &need))
		sp_wait(chan, m, need);
	return 1;
}


static int
sp_sync1(const char *kid, const struct store_mygrant *g, void *arg)
{
	struct sp_sync *s = arg;

	(void)g;
	if (s->n == SP_MAX_SYNC)
		return 1;
	memcpy(s->kid[s->n++], kid, TOKEN_KID_LEN + 1);
	return 0;
}

/* Every grant set to what is used here: gives back the rest, renews. */
static void
sp_sync(void)
{
	struct sp_flight	*f;
	struct sp_sync		*s;
	int			 i;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return;
	store_mygrant_foreach(sp.store, sp_sync1, s);
	for (i = 0; i < s->n; i++)
		if (sp_find(s->kid[i]) == NULL &&
		    (f = sp_flight_new(s->kid[i])) != NULL)
			sp_start(f);
	free(s);
}

void
seats_proxy_tick(void)
{
	int64_t now = proc_now_ms();

	if (now >= sp.next_sync_ms) {
		sp.next_sync_ms = now + sp.cf->license.sync_interval_ms;
		if (!uplink->stopping)
			sp_sync();
	}
	seats_gauge(sp.store, store_seat_now(sp.store), 0);
}

int
seats_proxy_idle(void)
{
	return LIST_EMPTY(&sp.flights);
}

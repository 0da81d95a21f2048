/*
 * seats.c - POST/DELETE/GET /v1/seats and PUT /v1/seats/grant. The key is
 * checked as for GET /v1/license (a lease miss parks the request, and it
 * resumes here); a worker never writes a seat: it asks the process that
 * writes leases (issuer or uplink) and the request parks again until the
 * answer comes, so every claim on a key's seats goes through one writer.
 * GET reads the rows directly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "conf.h"
#include "ipc.h"
#include "proc.h"
#include "stats.h"
#include "store.h"
#include "store_seats.h"
#include "token.h"
#include "worker.h"

static json_t *
seats_time(int64_t t)
{
	char buf[32];

	if (t <= 0)
		return json_null();
	http_time(t, buf, sizeof(buf));
	return json_string(buf);
}

static json_t *
seats_count(int64_t n)
{
	return n < 0 ? json_null() : json_integer(n);
}

/* Every body is built here: j is consumed. */
static void
seats_send(struct reply *rp, int code, json_t *j)
{
	char *body = json_dumps(j, JSON_COMPACT);

	json_decref(j);
	if (body == NULL) {
		reply_error(rp, 500, "internal", "out of memory", NULL);
		return;
	}
	reply_owned(rp, code, NULL, body, strlen(body));
}

static void
seats_fail(struct reply *rp, int code, const char *error, const char *msg)
{
	seats_send(rp, code, json_pack("{s:s, s:s}", "error", error,
	    "message", msg));
}

static void
seats_unavailable(struct reply *rp, const char *msg, int retry_after)
{
	seats_fail(rp, 503, "upstream_unavailable", msg);
	reply_header(rp, "Retry-After: %d\r\n", retry_after);
}

/* Park on the writer's answer (seats_resume), as a lease miss does. */
static enum outcome
seats_ask(struct req_state *st, struct ipc_msg *m, struct reply *rp)
{
	if ((rp->rid = upchan_request(m)) == 0) {
		seats_unavailable(rp, "the seat writer did not answer", 1);
		return OUT_REPLY;
	}
	st->seats.phase = SEATS_SEAT;
	return OUT_LEASE;
}

static enum outcome
seats_bad(struct reply *rp, const char *field, const char *msg)
{
	char text[160];

	snprintf(text, sizeof(text), "%s: %s", field, msg);
	seats_fail(rp, 400, "bad_request", text);
	return OUT_REPLY;
}

/*
 * {"key_id":KID, "seats":WANT[, "takeover":true][, "seq":N]}; the
 * caller's role was checked. Extensions: takeover, a proxy upgraded to
 * naming itself held its grant in its key's unnamed row and takes it
 * over; seq, the proxy's increasing request number, so one that arrives
 * after a newer one was applied changes nothing.
 */
static enum outcome
seats_grant(const struct conn *c, struct req_state *st,
    const struct lease *l, struct reply *rp)
{
	struct ipc_msg	 m;
	enum outcome	 out;
	json_t		*j, *want, *tko, *seq;
	const char	*s;

	if (!http_json_type(&c->req)) {
		reply_error(rp, 415, "unsupported_media_type",
		    "send Content-Type: application/json", NULL);
		return OUT_REPLY;
	}
	/* {"seats":1,"seats":2} is ambiguous: refused, as for usage. */
	j = json_loadb(c->body != NULL ? c->body : "", c->bodylen,
	    JSON_REJECT_DUPLICATES, NULL);
	want = json_object_get(j, "seats");
	tko = json_object_get(j, "takeover");
	seq = json_object_get(j, "seq");
	s = json_string_value(json_object_get(j, "key_id"));
	memset(&m, 0, sizeof(m));
	if (c->req.instance_bad)
		out = seats_bad(rp, "X-Instance-Id", TOKEN_INSTANCE_FORM);
	else if (!json_is_object(j))
		out = seats_bad(rp, "body", "a JSON object");
	else if (s == NULL || strlen(s) != TOKEN_KID_LEN ||
	    strspn(s, "0123456789abcdef") != TOKEN_KID_LEN)
		out = seats_bad(rp, "key_id", "16 lowercase hex characters");
	else if (!json_is_integer(want) || json_integer_value(want) < 0 ||
	    json_integer_value(want) > IPC_SEATS_MAX)
		out = seats_bad(rp, "seats", "an integer, 0 to 1000000");
	else if (tko != NULL && !json_is_boolean(tko))
		out = seats_bad(rp, "takeover", "true or false");
	else if (seq != NULL && (!json_is_integer(seq) ||
	    json_integer_value(seq) < 0))
		out = seats_bad(rp, "seq", "a whole number, 0 or more");
	else {
		m.type = IPC_GRANT_REQ;
		memcpy(m.holder, l->kid, sizeof(m.holder));
		/* Proxies sharing one key hold a grant each, by instance. */
		memcpy(m.instance, c->req.instance, sizeof(m.instance));
		m.takeover = json_is_true(tko);
		m.seq = seq != NULL ? json_integer_value(seq) : 0;
		memcpy(m.kid, s, TOKEN_KID_LEN);
		m.want = json_integer_value(want);
		out = seats_ask(st, &m, rp);
	}
	json_decref(j);
	return out;
}

struct seats_list {
	json_t	*a;
	int64_t	 now;
};

static int
seats_list1(const char *kid, const char *instance, int64_t expires,
    void *arg)
{
	struct seats_list *sl = arg;

	(void)kid;
	if (expires > sl->now)
		json_array_append_new(sl->a, json_pack("{s:s, s:o}",
		    "instance", instance, "expires_at", seats_time(expires)));
	return 0;
}

/* The key's limit as this server knows it; -1 for none (or unknown). */
static int64_t
seats_total(const struct req_state *st, const char *kid)
{
	struct store_key	k;
	struct store_mygrant	g;

	if (worker->cf->mode == CONF_AUTHORITY)
		return store_key_get(worker->store, st->lic.sha, &k) == 0 &&
		    k.seats > 0 ? k.seats : -1;
	return store_mygrant_get(worker->store, kid, &g) == 0 ? g.total : -1;
}

static enum outcome
seats_list(const struct req_state *st, struct reply *rp)
{
	struct store_seat_use	u;
	struct seats_list	sl;
	char			kid[TOKEN_KID_LEN + 1];
	int64_t			total;

	token_kid_from_hash(st->lic.sha, kid);
	sl.now = store_seat_now(worker->store);
	sl.a = json_array();
	total = seats_total(st, kid);
	if (store_seat_use(worker->store, kid, sl.now, &u) != 0 ||
	    store_seat_foreach(worker->store, kid, seats_list1, &sl) != 0) {
		json_decref(sl.a);
		reply_error(rp, 500, "internal", "store error", NULL);
		return OUT_REPLY;
	}
	seats_send(rp, 200, json_pack("{s:s, s:o, s:I, s:o}", "key_id", kid,
	    "total", seats_count(total), "used", (json_int_t)u.used,
	    "instances", sl.a));
	return OUT_REPLY;
}

/* The key is good (its lease is l): do what the method asks. */
static enum outcome
seats_go(const struct conn *c, struct req_state *st, const struct lease *l,
    struct reply *rp)
{
	struct ipc_msg	m;
	int		meth = c->req.method;

	if (c->ep == EP_SEATS_GRANT && l->role != ROLE_PROXY) {
		seats_fail(rp, 403, "forbidden",
		    "seat grants are for keys with role proxy");
		return OUT_REPLY;
	}
	if (c->ep == EP_SEATS_GRANT)
		return seats_grant(c, st, l, rp);
	if (meth == HTTP_GET)
		return seats_list(st, rp);
	if (c->req.instance[0] == '\0' || c->req.instance_bad)
		return seats_bad(rp, "X-Instance-Id",
		    "required, " TOKEN_INSTANCE_FORM);
	memset(&m, 0, sizeof(m));
	m.type = IPC_SEAT_REQ;
	memcpy(m.key, st->lic.key, sizeof(m.key));
	m.op = meth == HTTP_POST ? IPC_SEAT_TAKE : IPC_SEAT_RELEASE;
	memcpy(m.instance, c->req.instance, sizeof(m.instance));
	return seats_ask(st, &m, rp);
}

/* conn.c checked the method against the route. */
enum outcome
seats_start(const struct conn *c, struct req_state *st, struct reply *rp)
{
	struct lease	l;
	enum outcome	out;

	st->seats.phase = SEATS_LEASE;
	if (license_check(c, st, &l, rp, &out) == -1)
		return out;	/* answered, or parked on the lease */
	return seats_go(c, st, &l, rp);
}

static json_t *
seats_object(const struct ipc_msg *m)
{
	json_t *o = json_pack("{s:o, s:I}", "total", seats_count(m->total),
	    "used", (json_int_t)m->used);

	if (m->granted >= 0)
		json_object_set_new(o, "granted", json_integer(m->granted));
	return o;
}

static void
seats_answer(const struct conn *c, const struct req_state *st,
    const struct ipc_msg *m, struct reply *rp)
{
	char	kid[TOKEN_KID_LEN + 1];
	int64_t	half = worker->cf->seats.ttl_s / 2;

	token_kid_from_hash(st->lic.sha, kid);
	if (m->status == 204)
		reply_body(rp, 204, NULL, "", 0);
	else if (m->status == 200)
		seats_send(rp, 200, json_pack("{s:s, s:s, s:o, s:o, s:o}",
		    "key_id", kid, "instance", c->req.instance, "expires_at",
		    seats_time(m->expires), "renew_at", seats_time(m->expires >
		    0 ? m->expires - half : 0), "seats", seats_object(m)));
	else {
		seats_send(rp, 409, json_pack("{s:s, s:s, s:o}", "error",
		    "seats_exhausted", "message", "no seat of this key is free",
		    "seats", seats_object(m)));
		reply_header(rp, "Retry-After: %d\r\n",
		    m->retry_after > 0 ? m->retry_after : 1);
	}
}

/*
 * A grant's seconds left (an extension of SPEC 8's answer): the proxy
 * counts them from when it asked, so its clock and ours need not agree
 * and nothing between us (a Date-rewriting balancer) can move its end.
 * Whole seconds rounded down, and one less, since our clock's second has
 * begun already: never more than is left.
 */
static int64_t
seats_left(int64_t expires)
{
	int64_t left = expires - store_seat_now(worker->store) - 1;

	return left > 0 ? left : 0;
}

/*
 * SPEC 8's grant answer; expires_in only for a proxy that names itself
 * (a licproxy proxy, which reads it), so others get exactly that shape.
 */
static void
seats_grant_answer(const struct conn *c, const struct ipc_msg *m,
    struct reply *rp)
{
	json_t *o = json_pack("{s:s, s:I, s:o, s:o}", "key_id", m->kid,
	    "granted", (json_int_t)m->granted, "expires_at",
	    seats_time(m->expires), "total", seats_count(m->total));

	if (c->req.instance[0] != '\0')
		json_object_set_new(o, "expires_in",
		    json_integer(seats_left(m->expires)));
	seats_send(rp, 200, o);
}

/* The writer's answer (a->msg), or none (the uplink lost, the sweep). */
static void
seats_render(const struct conn *c, const struct req_state *st,
    const struct lease_answer *a, struct reply *rp)
{
	const struct ipc_msg *m = a->msg;

	if (m != NULL && m->status == 403)
		seats_send(rp, 403, json_pack("{s:s, s:s, s:s}", "error",
		    "key_rejected", "message", "license key rejected", "reason",
		    m->reason[0] ? m->reason : "unknown"));
	else if (m == NULL || m->status == 503 || (m->type != IPC_SEAT_RES &&
	    m->type != IPC_GRANT_RES))
		seats_unavailable(rp, "no upstream answered", m != NULL &&
		    m->retry_after > 0 ? m->retry_after : 1);
	else if (m->type == IPC_SEAT_RES)
		seats_answer(c, st, m, rp);
	else
		seats_grant_answer(c, m, rp);
}

enum outcome
seats_resume(const struct conn *c, struct req_state *st,
    const struct lease_answer *a, struct reply *rp)
{
	struct lease l;

	if (st->seats.phase == SEATS_SEAT) {
		seats_render(c, st, a, rp);
		return OUT_REPLY;
	}
	if (license_checked(c, st, a, &l, rp) == -1)
		return OUT_REPLY;
	return seats_go(c, st, &l, rp);
}

/*
 * seats.c - POST/DELETE/GET /v1/seats and PUT /v1/seats/grant. The key is
 * checked as for GET /v1/license; a worker never writes a seat: it asks
 * the process that writes leases (issuer or uplink) and answers when the
 * reply comes, so every claim on a key's seats goes through one writer.
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
seats_send(struct conn *c, int code, json_t *j, const char *extra)
{
	char *body = json_dumps(j, JSON_COMPACT);

	json_decref(j);
	if (body == NULL) {
		conn_error(c, 500, "internal", "out of memory", NULL, NULL);
		return;
	}
	conn_reply(c, code, extra, body, strlen(body));
	free(body);
}

static void
seats_fail(struct conn *c, int code, const char *error, const char *msg,
    int retry_after)
{
	char extra[48];

	snprintf(extra, sizeof(extra), "Retry-After: %d\r\n", retry_after);
	seats_send(c, code, json_pack("{s:s, s:s}", "error", error, "message",
	    msg), retry_after > 0 ? extra : NULL);
}

static void
seats_unavailable(struct conn *c)
{
	seats_fail(c, 503, "upstream_unavailable",
	    "the seat writer did not answer", 1);
}

/* Park c on the writer's answer (seats_ipc), as a lease miss does. */
static void
seats_ask(struct conn *c, struct ipc_msg *m)
{
	if (++worker->next_rid == 0)
		worker->next_rid = 1;
	m->rid = worker->next_rid;
	if (worker_send_up(m) == -1) {
		seats_unavailable(c);
		return;
	}
	c->rid = m->rid;
	c->wait_ms = proc_now_ms();
	TAILQ_INSERT_TAIL(&worker->waiting, c, wentry);
}

static void
seats_bad(struct conn *c, const char *field, const char *msg)
{
	char text[160];

	snprintf(text, sizeof(text), "%s: %s", field, msg);
	seats_send(c, 400, json_pack("{s:s, s:s}", "error", "bad_request",
	    "message", text), NULL);
}

/* {"key_id":KID, "seats":WANT}; the caller's role was checked. */
static void
seats_grant(struct conn *c, const struct lease *l)
{
	struct ipc_msg	 m;
	json_t		*j = json_loadb(c->body != NULL ? c->body : "",
			    c->bodylen, 0, NULL);
	json_t		*kid = json_object_get(j, "key_id");
	json_t		*want = json_object_get(j, "seats");
	const char	*s = json_string_value(kid);

	memset(&m, 0, sizeof(m));
	if (!json_is_object(j))
		seats_bad(c, "body", "a JSON object");
	else if (s == NULL || strlen(s) != TOKEN_KID_LEN ||
	    strspn(s, "0123456789abcdef") != TOKEN_KID_LEN)
		seats_bad(c, "key_id", "16 lowercase hex characters");
	else if (!json_is_integer(want) || json_integer_value(want) < 0 ||
	    json_integer_value(want) > IPC_SEATS_MAX)
		seats_bad(c, "seats", "an integer, 0 to 1000000");
	else {
		m.type = IPC_GRANT_REQ;
		memcpy(m.holder, l->kid, sizeof(m.holder));
		memcpy(m.kid, s, TOKEN_KID_LEN);
		m.want = json_integer_value(want);
		seats_ask(c, &m);
	}
	json_decref(j);
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
seats_total(const struct conn *c, const char *kid)
{
	struct store_key	k;
	struct store_mygrant	g;

	if (worker->cf->mode == CONF_AUTHORITY)
		return store_key_get(worker->store, c->sha, &k) == 0 &&
		    k.seats > 0 ? k.seats : -1;
	return store_mygrant_get(worker->store, kid, &g) == 0 ? g.total : -1;
}

static void
seats_list(struct conn *c)
{
	struct store_seat_use	u;
	struct seats_list	sl;
	char			kid[TOKEN_KID_LEN + 1];
	int64_t			total;

	token_kid_from_hash(c->sha, kid);
	sl.now = store_now(worker->store);
	sl.a = json_array();
	total = seats_total(c, kid);
	if (store_seat_use(worker->store, kid, sl.now, &u) != 0 ||
	    store_seat_foreach(worker->store, kid, seats_list1, &sl) != 0) {
		json_decref(sl.a);
		conn_error(c, 500, "internal", "store error", NULL, NULL);
		return;
	}
	seats_send(c, 200, json_pack("{s:s, s:o, s:I, s:o}", "key_id", kid,
	    "total", seats_count(total), "used", (json_int_t)u.used,
	    "instances", sl.a), NULL);
}

void
seats_handle(struct conn *c)
{
	struct ipc_msg	m;
	struct lease	l;
	int		grant = c->ep == EP_SEATS_GRANT, meth = c->req.method;

	if (grant ? meth != HTTP_PUT : meth != HTTP_GET && meth != HTTP_POST &&
	    meth != HTTP_DELETE) {
		seats_send(c, 405, json_pack("{s:s, s:s}", "error",
		    "method_not_allowed", "message", "method not allowed here"),
		    grant ? "Allow: PUT\r\n" : "Allow: GET, POST, DELETE\r\n");
		return;
	}
	if (license_check(c, &l) == -1)
		return;		/* answered, or waiting for the lease */
	if (grant && l.role != ROLE_PROXY)
		seats_send(c, 403, json_pack("{s:s, s:s}", "error", "forbidden",
		    "message", "seat grants are for keys with role proxy"),
		    NULL);
	else if (grant)
		seats_grant(c, &l);
	else if (meth == HTTP_GET)
		seats_list(c);
	else if (c->req.instance[0] == '\0' || c->req.instance_bad)
		seats_bad(c, "X-Instance-Id", "required, 1-64 of [A-Za-z0-9._-]");
	else {
		memset(&m, 0, sizeof(m));
		m.type = IPC_SEAT_REQ;
		memcpy(m.key, c->key, sizeof(m.key));
		m.op = meth == HTTP_POST ? IPC_SEAT_TAKE : IPC_SEAT_RELEASE;
		memcpy(m.instance, c->req.instance, sizeof(m.instance));
		seats_ask(c, &m);
	}
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
seats_answer(struct conn *c, const struct ipc_msg *m)
{
	char	kid[TOKEN_KID_LEN + 1], extra[48];
	int64_t	half = worker->cf->seats.ttl_s / 2;

	token_kid_from_hash(c->sha, kid);
	if (m->status == 204)
		conn_reply(c, 204, NULL, "", 0);
	else if (m->status == 200)
		seats_send(c, 200, json_pack("{s:s, s:s, s:o, s:o, s:o}",
		    "key_id", kid, "instance", c->req.instance, "expires_at",
		    seats_time(m->expires), "renew_at", seats_time(m->expires >
		    0 ? m->expires - half : 0), "seats", seats_object(m)),
		    NULL);
	else {
		snprintf(extra, sizeof(extra), "Retry-After: %d\r\n",
		    m->retry_after > 0 ? m->retry_after : 1);
		seats_send(c, 409, json_pack("{s:s, s:s, s:o}", "error",
		    "seats_exhausted", "message", "no seat of this key is free",
		    "seats", seats_object(m)), extra);
	}
}

void
seats_ipc(const struct ipc_msg *m)
{
	struct conn *c;

	TAILQ_FOREACH(c, &worker->waiting, wentry)
		if (c->rid == m->rid)
			break;
	if (c == NULL)
		return;		/* the client went away meanwhile */
	license_forget(c);
	if (m->status == 403)
		seats_send(c, 403, json_pack("{s:s, s:s, s:s}", "error",
		    "key_rejected", "message", "license key rejected", "reason",
		    m->reason[0] ? m->reason : "unknown"), NULL);
	else if (m->status == 503)
		seats_fail(c, 503, "upstream_unavailable", "no upstream "
		    "answered", m->retry_after > 0 ? m->retry_after : 1);
	else if (m->type == IPC_SEAT_RES)
		seats_answer(c, m);
	else
		seats_send(c, 200, json_pack("{s:s, s:I, s:o, s:o}", "key_id",
		    m->kid, "granted", (json_int_t)m->granted, "expires_at",
		    seats_time(m->expires), "total", seats_count(m->total)),
		    NULL);
}

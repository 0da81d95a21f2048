"""Issue 2, the authority foundation: the real binary in authority mode
(real TLS, temp LMDB stores, free ports). Every status code of the API,
lease tokens checked against the public key with openssl, revocation and
expiry, the status listener, the process tree with respawns, and the CLI."""
import datetime
import http.client
import json
import os
import re
import signal
import socket
import ssl
import time

from lp import (Fixture, Pki, Server, comm, fake_key, free_port, key_id,
                run, sysinject, token_payload, verify_token, wait_for)

LEASE_REFRESH = 45
LEASE_TTL = 72 * 3600
METRIC_NAMES = (
    "licproxy_requests_total", "licproxy_lease_cache_hits_total",
    "licproxy_lease_cache_misses_total", "licproxy_upstream_requests_total",
    "licproxy_upstream_bytes_total", "licproxy_leases_cached",
    "licproxy_usage_pending", "licproxy_usage_forwarded_total",
    "licproxy_process_restarts_total")


def authority(fx, pki=None, workers=2, **server):
    pki = pki or fx.add(Pki())
    extra = {"authority": {"lease_refresh": "%ds" % LEASE_REFRESH,
                           "lease_ttl": "72h"}}
    if server:
        extra["server"] = server
    return fx.add(Server(pki, "authority", workers=workers, extra=extra))


def iso(ts):
    return datetime.datetime.fromtimestamp(
        ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(s):
    return int(datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp())


def utc_day(offset):
    d = datetime.datetime.now(datetime.timezone.utc).date()
    return (d + datetime.timedelta(days=offset)).isoformat()


def end_of_day(day):
    """--expires YYYY-MM-DD is valid through that day, UTC."""
    d = datetime.datetime.strptime(day, "%Y-%m-%d").replace(
        tzinfo=datetime.timezone.utc)
    return int(d.timestamp()) + 86400


def authority_id(pubfile):
    """First 16 hex of SHA-256 of the raw Ed25519 public key (the last 32
    bytes of the SubjectPublicKeyInfo DER)."""
    import base64
    import hashlib
    with open(pubfile) as f:
        der = base64.b64decode("".join(
            ln for ln in f.read().splitlines() if not ln.startswith("-----")))
    return hashlib.sha256(der[-32:]).hexdigest()[:16]


def assert_error(r, status, code, **fields):
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), \
        r.headers
    assert r.headers.get("cache-control") == "no-store", r.headers
    body = r.json()
    assert body.get("error") == code, body
    assert isinstance(body.get("message"), str) and body["message"], body
    want = {"error", "message"} | set(fields)
    assert set(body) == want, body
    for k, v in fields.items():
        assert body[k] == v, body
    return body


def raw(port, data, tls_ctx=None, timeout=10):
    """Send raw bytes, read until the peer closes; returns bytes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls_ctx is not None:
        s = tls_ctx.wrap_socket(s, server_hostname="localhost")
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ssl.SSLError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def serving_pid(srv, conn):
    """Pid of the child holding the server end of an open connection:
    find the socket inode in /proc/net/tcp, then the fd that names it."""
    cport = conn.sock.getsockname()[1]
    inode = None
    with open("/proc/net/tcp") as f:
        for ln in f.read().splitlines()[1:]:
            fld = ln.split()
            lport = int(fld[1].split(":")[1], 16)
            rport = int(fld[2].split(":")[1], 16)
            if lport == srv.port and rport == cport:
                inode = fld[9]
    assert inode is not None, "server end of the connection not found"
    want = "socket:[%s]" % inode
    for pid in srv.children():
        d = "/proc/%d/fd" % pid
        for fd in os.listdir(d):
            try:
                if os.readlink(os.path.join(d, fd)) == want:
                    return pid
            except OSError:
                pass
    return None


def req_counts(m, endpoint):
    """{code: count} of licproxy_requests_total for one endpoint."""
    out = {}
    pre = 'licproxy_requests_total{endpoint="%s",code="' % endpoint
    for k, v in m.items():
        if k.startswith(pre):
            out[int(k[len(pre):].split('"')[0])] = v
    return out


def delta(after, before):
    return {k: after.get(k, 0) - before.get(k, 0)
            for k in set(after) | set(before)
            if after.get(k, 0) != before.get(k, 0)}


def ledger(srv):
    return json.loads(run("usage", "--store", srv.store, "--json").stdout)


def record(rid, qty=1.5):
    return {"id": rid, "product": "engine", "metric": "audio_seconds",
            "quantity": qty, "ts": "2026-11-26T16:00:00Z"}


# -- GET /v1/license ---------------------------------------------------

def test_license_body_and_token():
    """200: exactly the SPEC section 3 fields, a token that verifies with
    openssl against the public key and whose payload matches the JSON;
    refresh/expiry arithmetic; headers; Bearer accepted."""
    with Fixture() as fx:
        auth = authority(fx)
        key = auth.create_key(name="api-1", products="api,engine")
        proxy_key = auth.create_key(name="px", products="api", role="proxy")
        tomorrow, later = utc_day(1), utc_day(10)
        short_key = auth.create_key(name="short", products="engine",
                                    expires=tomorrow)
        long_key = auth.create_key(name="long", products="api",
                                   expires=later)
        today = utc_day(0)
        today_key = auth.create_key(name="today", products="api",
                                    expires=today)
        auth.start()
        iss = authority_id(auth.pki.pub)
        cases = ((key, ["api", "engine"], "member", None),
                 (proxy_key, ["api"], "proxy", None),
                 (short_key, ["engine"], "member", end_of_day(tomorrow)),
                 (long_key, ["api"], "member", end_of_day(later)),
                 (today_key, ["api"], "member", end_of_day(today)))
        tokens = {}
        for k, prd, role, key_exp in cases:
            t0 = int(time.time())
            r = auth.license(k)
            t1 = int(time.time())
            assert r.status == 200, r
            assert r.headers["content-type"].startswith("application/json")
            assert r.headers["cache-control"] == "no-store"
            b = r.json()
            assert set(b) == {"key_id", "status", "products", "role",
                              "issued_at", "refresh_at", "expires_at",
                              "source", "lease"}, b
            assert b["key_id"] == key_id(k)
            assert b["status"] == "active"
            assert b["products"] == prd
            assert b["role"] == role
            assert b["source"] == "authority"
            iat, rat, exp = (parse_iso(b[f]) for f in
                             ("issued_at", "refresh_at", "expires_at"))
            assert t0 - 1 <= iat <= t1 + 1, (t0, iat, t1)
            assert rat - iat == LEASE_REFRESH, b
            want_exp = iat + LEASE_TTL
            if key_exp is not None and key_exp < want_exp:
                want_exp = key_exp
            assert exp == want_exp, (b, want_exp)
            if k in (short_key, today_key):
                assert exp == key_exp, "the key's expiry must cap the lease"
            if k == long_key:
                assert exp == iat + LEASE_TTL < key_exp, b
            tok = b["lease"]
            assert verify_token(tok, auth.pki.pub), "signature must verify"
            p = token_payload(tok)
            assert set(p) == {"v", "kid", "sta", "prd", "rol", "iat", "rat",
                              "exp", "iss"}, p
            assert p["v"] == 1
            assert p["kid"] == b["key_id"]
            assert p["sta"] == b["status"]
            assert p["prd"] == b["products"]
            assert p["rol"] == b["role"]
            assert (p["iat"], p["rat"], p["exp"]) == (iat, rat, exp)
            assert iso(p["iat"]) == b["issued_at"]
            assert p["iss"] == iss, (p["iss"], iss)
            tokens[k] = tok
        # A token whose payload was altered no longer verifies (the check
        # above is not vacuous).
        head, sig = tok.split(".")
        bad = ("A" if head[0] != "A" else "B") + head[1:] + "." + sig
        assert not verify_token(bad, auth.pki.pub)
        # Bearer is accepted and gives the same lease back (served from
        # the store until refresh_at).
        r2 = auth.license(key, scheme="Bearer")
        assert r2.status == 200, r2
        assert r2.json()["key_id"] == key_id(key)
        assert r2.json()["source"] == "authority"
        assert r2.json()["lease"] == tokens[key], "same lease until refresh"
        r2 = auth.request("GET", "/v1/license",
                          headers={"Authorization": "bearer " + key})
        assert r2.status == 200, r2
        # HEAD: same head, no body.
        r3 = auth.request("HEAD", "/v1/license", key=key)
        assert r3.status == 200 and r3.body == "", r3
        assert auth.stop() == 0


# -- errors --------------------------------------------------------------

def test_error_codes():
    """Every applicable error of the API, each with its JSON body, and the
    request counters counting exactly those requests."""
    with Fixture() as fx:
        auth = authority(fx, max_body="1KiB")
        good = auth.create_key(name="good")
        gone = auth.create_key(name="gone")
        old = auth.create_key(name="old", expires=utc_day(-1))
        auth.start()
        before = auth.metrics()
        lic, use = "/v1/license", "/v1/usage"
        expect = {lic: {}, use: {}, "other": {}}

        def count(ep, code):
            expect[ep][code] = expect[ep].get(code, 0) + 1

        # 401 missing_key: no header; another scheme; empty token.
        assert_error(auth.request("GET", lic), 401, "missing_key")
        count(lic, 401)
        assert_error(auth.license(good, scheme="Basic"), 401, "missing_key")
        count(lic, 401)
        # 401 malformed_key: 39, 41 characters, a non-alphanumeric one.
        for bad in (good[:39], good + "x", good[:39] + "-",
                    good[:20] + "!" + good[21:]):
            assert len(bad) in (39, 40, 41)
            assert_error(auth.license(bad), 401, "malformed_key")
            count(lic, 401)
        # ... and one longer than the header field keeps (128 bytes), in
        # either scheme; another scheme that long is still missing_key.
        for scheme in ("Token", "bearer"):
            assert_error(auth.license(good * 5, scheme=scheme), 401,
                         "malformed_key")
            count(lic, 401)
        assert_error(auth.license(good * 5, scheme="Basic"), 401,
                     "missing_key")
        count(lic, 401)
        # 403 unknown: well-formed, never issued.
        assert_error(auth.license(fake_key("nobody")), 403, "key_rejected",
                     reason="unknown")
        count(lic, 403)
        # 403 expired: created with --expires yesterday.
        assert_error(auth.license(old), 403, "key_rejected",
                     reason="expired")
        count(lic, 403)
        # 403 revoked: revoked on the live store, the very next request.
        assert auth.license(gone).status == 200
        count(lic, 200)
        run("keys", "revoke", "--store", auth.store, key_id(gone))
        assert_error(auth.license(gone), 403, "key_rejected",
                     reason="revoked")
        count(lic, 403)
        # ... also through POST /v1/usage, and nothing of it is kept.
        assert_error(auth.usage(gone, [record("r-gone")]), 403,
                     "key_rejected", reason="revoked")
        count(use, 403)
        # 404 on the API port.
        assert_error(auth.request("GET", "/v1/nothing", key=good), 404,
                     "not_found")
        count("other", 404)
        # 405 with Allow.
        r = auth.request("POST", lic, key=good, body={})
        assert_error(r, 405, "method_not_allowed")
        assert "GET" in r.headers["allow"] and "POST" not in \
            r.headers["allow"], r.headers
        count(lic, 405)
        r = auth.request("GET", use, key=good)
        assert_error(r, 405, "method_not_allowed")
        assert r.headers["allow"].replace(" ", "") == "POST", r.headers
        count(use, 405)
        # 413 from Content-Length alone: only the head is sent, the answer
        # comes without the server waiting for a body.
        c = auth.conn(timeout=10)
        r = auth.request("POST", use, key=good, conn=c, headers={
            "Content-Type": "application/json", "Content-Length": "5000"})
        c.close()
        assert_error(r, 413, "too_large")
        count(use, 413)
        # A body of max_body + 1 bytes, really sent, is refused as well.
        body = json.dumps({"records": [record("r-big")]})
        body = body[:-1] + " " * (1025 - len(body)) + "}"
        assert len(body) == 1025
        assert_error(auth.request("POST", use, key=good, body=body,
                                  headers={"Content-Type":
                                           "application/json"}),
                     413, "too_large")
        count(use, 413)
        # 401 on the usage endpoint as well.
        assert_error(auth.request("POST", use, body={"records": [
            record("r-nokey")]}), 401, "missing_key")
        count(use, 401)
        # 415: a good body with the wrong media type.
        assert_error(auth.request(
            "POST", use, key=good, body=json.dumps({"records": [
                record("r-text")]}), headers={"Content-Type": "text/plain"}),
            415, "unsupported_media_type")
        count(use, 415)
        # None of the refused usage was kept.
        assert ledger(auth) == [], ledger(auth)
        # And a good request of exactly max_body bytes is accepted.
        body = json.dumps({"records": [record("r-ok", 2.0)]})
        body = body[:-1] + " " * (1024 - len(body)) + "}"
        r = auth.request("POST", use, key=good, body=body,
                         headers={"Content-Type": "application/json"})
        assert r.status == 202 and r.json() == {"accepted": 1,
                                                "duplicates": 0}, r
        count(use, 202)
        rows = ledger(auth)
        assert [(x["key_id"], x["records"], x["quantity"]) for x in rows] \
            == [(key_id(good), 1, 2.0)], rows
        after = auth.metrics()
        for ep, want in expect.items():
            got = delta(req_counts(after, ep), req_counts(before, ep))
            assert got == want, (ep, got, want)
        assert auth.stop() == 0


def test_keepalive_and_http10_status():
    """Several requests on one TLS connection; the status listener answers
    HTTP/1.0 without a Host header."""
    with Fixture() as fx:
        auth = authority(fx)
        key = auth.create_key()
        auth.start()
        c = auth.conn()
        c.connect()
        local = c.sock.getsockname()
        sock = c.sock
        results = []
        for i in range(5):
            r = auth.request("GET", "/v1/license", key=key, conn=c)
            results.append(r.status)
            assert r.headers.get("connection", "").lower() != "close", r
        r = auth.request("GET", "/v1/license", key=fake_key(1), conn=c)
        results.append(r.status)
        r = auth.usage(key, [record("ka-1")], conn=c)
        results.append(r.status)
        assert c.sock is sock and c.sock.getsockname() == local, \
            "the connection must have stayed open"
        c.close()
        assert results == [200] * 5 + [403, 202], results
        # Pipelined: three requests and a last one asking to close, in one
        # write; four answers in order, then the server closes.
        one = ("GET /v1/license HTTP/1.1\r\nHost: x\r\nAuthorization: "
               "Token %s\r\n\r\n" % key).encode()
        out = raw(auth.port, one * 3 + b"GET /nope HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n", tls_ctx=auth.pki.context())
        codes = re.findall(rb"HTTP/1\.1 (\d{3}) ", out)
        assert codes == [b"200", b"200", b"200", b"404"], out[-300:]
        for path, code in (("/healthz", 200), ("/v1/status", 200),
                           ("/readyz", 200), ("/nope", 404)):
            out = raw(auth.status_port, b"GET %s HTTP/1.0\r\n\r\n" %
                      path.encode())
            head, _, body = out.partition(b"\r\n\r\n")
            status = head.split(b"\r\n")[0].split()
            assert status[0].startswith(b"HTTP/1.") and \
                int(status[1]) == code, out[:200]
            if path == "/v1/status":
                assert json.loads(body)["state"] == "Authority", body
        assert auth.stop() == 0


# -- status listener -----------------------------------------------------

def test_status_listener():
    """/v1/status fields, /healthz, /readyz, every metric name, counters
    that count exactly, and leases_cached from the issuer."""
    with Fixture() as fx:
        auth = authority(fx, workers=3)
        keys = [auth.create_key(name="k%d" % i) for i in range(3)]
        auth.start()
        st = auth.status()
        assert st.status == 200, st
        assert "\n" not in st.body.strip(), "one line"
        s = st.json()
        assert set(s) == {"state", "mode", "version", "uptime_s",
                          "upstream", "leases", "usage", "processes",
                          "instances", "survival_s", "seats"}, s
        assert s["survival_s"] is None, s    # an authority has no limit
        assert s["seats"] == {"keys": 0, "used": 0, "granted": 0}, s
        assert s["instances"] == {"active": 0, "tracked_max": 4096,
                                  "overflow": False}, s
        assert s["state"] == "Authority" and s["mode"] == "authority", s
        assert s["version"] == run("version").stdout.split()[-1]
        assert isinstance(s["uptime_s"], int) and s["uptime_s"] >= 0
        assert set(s["upstream"]) == {"urls", "last_success", "last_error",
                                      "last_error_at"}
        assert s["leases"] == {"cached": 0}, s
        assert s["usage"] == {"pending": 0, "forwarded": 0}, s
        assert s["processes"] == {"workers": 3, "workers_alive": 3,
                                  "uplink_alive": True}, s
        for path in ("/healthz", "/readyz"):
            r = auth.status(path)
            assert r.status == 200, (path, r)
        body = auth.status("/metrics").body
        for name in METRIC_NAMES:
            assert any(ln.startswith(name + "{") or ln.startswith(name + " ")
                       for ln in body.splitlines()), name
        m0 = auth.metrics()
        for role in ("worker", "uplink", "issuer"):
            assert m0['licproxy_process_restarts_total{role="%s"}' %
                      role] == 0
        for d in ("in", "out"):
            assert 'licproxy_upstream_bytes_total{direction="%s"}' % d in m0
        assert any(k.startswith("licproxy_upstream_requests_total{result=")
                   for k in m0), m0
        # 3 keys x 4 requests: one miss per key (the first, which waits for
        # the issuer), then hits from the store; 200 counted 12 times. The
        # issuer caches a lease after it has answered with it, so a request
        # sent before that commit is done is a miss too: wait for it.
        for k in keys:
            assert auth.license(k).status == 200
            wait_for(lambda: key_id(k) in run("cache", "export", "--store",
                                              auth.store).stdout,
                     what="the issuer's cached copy")
            for _ in range(3):
                assert auth.license(k).status == 200
        m1 = auth.metrics()
        assert m1["licproxy_lease_cache_misses_total"] - \
            m0["licproxy_lease_cache_misses_total"] == 3, m1
        assert m1["licproxy_lease_cache_hits_total"] - \
            m0["licproxy_lease_cache_hits_total"] == 9, m1
        assert delta(req_counts(m1, "/v1/license"),
                     req_counts(m0, "/v1/license")) == {200: 12}
        # The status endpoints count themselves too: /metrics asked once
        # between m0 and m1 (the m1 request itself is counted after).
        assert delta(req_counts(m1, "/metrics"),
                     req_counts(m0, "/metrics")) == {200: 1}
        # Authority mode: nothing goes upstream; it is its own upstream.
        assert m1["licproxy_upstream_up"] == 1, m1
        for k, v in m1.items():
            if k.startswith("licproxy_upstream_") and \
                    k != "licproxy_upstream_up":
                assert v == 0, (k, v)
        wait_for(lambda: auth.metrics()["licproxy_leases_cached"] == 3,
                 what="leases_cached = 3")
        assert auth.status_json()["leases"]["cached"] == 3
        # Usage lands in the ledger directly: nothing pending.
        assert auth.usage(keys[0], [record("s-1")]).status == 202
        m2 = auth.metrics()
        assert m2["licproxy_usage_pending"] == 0
        assert m2["licproxy_usage_forwarded_total"] == 0
        assert delta(req_counts(m2, "/v1/usage"),
                     req_counts(m1, "/v1/usage")) == {202: 1}
        r = auth.status("/nothing")
        assert r.status == 404 and r.json()["error"] == "not_found", r
        c = http.client.HTTPConnection(
            "127.0.0.1", auth.status_port, timeout=10)
        c.request("POST", "/metrics", body="x")
        r = c.getresponse()
        assert r.status == 405 and "GET" in r.getheader("Allow", ""), \
            r.status
        assert json.loads(r.read())["error"] == "method_not_allowed"
        c.close()
        assert auth.stop() == 0


# -- processes -----------------------------------------------------------

def test_process_tree_respawn_and_stop():
    """Children are N workers + 1 issuer by comm; a killed worker and a
    killed issuer are respawned and counted; TERM stops everything."""
    with Fixture() as fx:
        # max_connections 2: a worker holding two stops accepting, so the
        # held connections below must spread over every worker.
        auth = authority(fx, workers=3, max_connections=2)
        key = auth.create_key()
        auth.start()
        kids = wait_for(lambda: (lambda k: k if sorted(k) == [
            "licproxy-issuer", "licproxy-worker"] and len(
            k["licproxy-worker"]) == 3 else None)(auth.children_by_comm()),
            what="3 workers + 1 issuer")
        assert len(kids["licproxy-issuer"]) == 1, kids
        assert len(auth.children()) == 4, auth.children_by_comm()
        assert comm(auth.proc.pid) != "licproxy-worker"

        # kill -9 a worker
        victim = kids["licproxy-worker"][0]
        os.kill(victim, signal.SIGKILL)

        def respawned_workers():
            k = auth.children_by_comm()
            w = k.get("licproxy-worker", [])
            return k if len(w) == 3 and victim not in w else None
        kids2 = wait_for(respawned_workers, what="a new worker")
        assert kids2["licproxy-issuer"] == kids["licproxy-issuer"]
        wait_for(lambda: auth.metrics()[
            'licproxy_process_restarts_total{role="worker"}'] == 1,
            what="worker restart counted")
        m = auth.metrics()
        assert m['licproxy_process_restarts_total{role="issuer"}'] == 0
        wait_for(lambda: auth.status_json()["processes"]["workers_alive"]
                 == 3, what="3 workers alive")
        # Service continues, on fresh connections whichever worker takes
        # them.
        for _ in range(6):
            r = auth.license(key)
            assert r.status == 200, r

        # kill -9 the issuer
        issuer = kids2["licproxy-issuer"][0]
        os.kill(issuer, signal.SIGKILL)
        kids3 = wait_for(lambda: (lambda k: k if k.get("licproxy-issuer")
                                  and k["licproxy-issuer"] != [issuer]
                                  else None)(auth.children_by_comm()),
                         what="a new issuer")
        assert len(kids3["licproxy-issuer"]) == 1
        assert sorted(kids3["licproxy-worker"]) == \
            sorted(kids2["licproxy-worker"]), "workers survive"
        wait_for(lambda: auth.metrics()[
            'licproxy_process_restarts_total{role="issuer"}'] == 1,
            what="issuer restart counted")
        assert auth.metrics()[
            'licproxy_process_restarts_total{role="worker"}'] == 1
        # A key created now has no lease yet: only the new issuer can make
        # one. Every worker must reach it: hold connections open until each
        # worker serves one, then ask with a fresh key on each.
        workers = set(kids3["licproxy-worker"])
        conns, seen = [], {}
        for _ in range(60):
            c = auth.conn()
            c.connect()
            conns.append(c)
            pid = wait_for(lambda: serving_pid(auth, c), what="serving pid")
            assert pid in workers, (pid, workers)
            seen.setdefault(pid, c)
            if len(seen) == len(workers):
                break
        assert set(seen) == workers, ("connections not spread", seen)
        for i, (pid, c) in enumerate(sorted(seen.items())):
            k = auth.create_key(name="after%d" % i)
            r = wait_for(lambda: (lambda x: x if x.status == 200 else None)(
                auth.request("GET", "/v1/license", key=k, conn=c)),
                what="a lease from the new issuer via worker %d" % pid)
            assert serving_pid(auth, c) == pid, "same connection"
            assert verify_token(r.json()["lease"], auth.pki.pub)
            assert token_payload(r.json()["lease"])["kid"] == key_id(k)
        for c in conns:
            c.close()
        wait_for(lambda: auth.status_json()["processes"]["uplink_alive"],
                 what="issuer reported alive")

        # TERM: exit 0 within 10 s, no child left.
        before = auth.children()
        assert before
        auth.proc.send_signal(signal.SIGTERM)
        assert auth.proc.wait(10) == 0
        auth.log.close()
        left = [p for p in before if os.path.exists("/proc/%d" % p)]
        assert left == [], "children outlived the master: %r" % left


# -- CLI ---------------------------------------------------------------

def test_cli_keys():
    """keys create prints only the key; list (table and JSON); revoke of an
    unknown or malformed id fails and changes nothing."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki)
        store = auth.store
        p = run("keys", "create", "--store", store, "--name", "engine-a",
                "--products", "engine,api")
        assert p.stdout.endswith("\n") and p.stdout.count("\n") == 1, \
            repr(p.stdout)
        ka = p.stdout.strip()
        assert len(ka) == 40 and ka.isalnum() and ka.isascii(), ka
        assert ka not in p.stderr
        assert key_id(ka) in p.stderr, p.stderr
        kb = auth.create_key(name="relay", products="api", role="proxy")
        kc = auth.create_key(name="old", products="api", expires=utc_day(-1))
        kd = auth.create_key(name="todrop", products="engine")
        assert len({ka, kb, kc, kd}) == 4
        run("keys", "revoke", "--store", store, key_id(kd))
        rows = json.loads(run("keys", "list", "--store", store,
                              "--json").stdout)
        by = {r["key_id"]: r for r in rows}
        assert set(by) == {key_id(k) for k in (ka, kb, kc, kd)}, rows
        for r in rows:
            assert {"key_id", "name", "role", "products", "status"} <= set(r)
        assert (by[key_id(ka)]["name"], by[key_id(ka)]["role"],
                by[key_id(ka)]["products"], by[key_id(ka)]["status"]) == \
            ("engine-a", "member", ["engine", "api"], "active")
        assert (by[key_id(kb)]["role"], by[key_id(kb)]["status"]) == \
            ("proxy", "active")
        assert by[key_id(kc)]["status"] == "expired"
        assert by[key_id(kd)]["status"] == "revoked"
        table = run("keys", "list", "--store", store).stdout
        lines = table.strip().splitlines()
        assert "KEY_ID" in lines[0] and "STATUS" in lines[0], table
        assert len(lines) == 5, table
        for k, status in ((ka, "active"), (kb, "active"), (kc, "expired"),
                          (kd, "revoked")):
            ln = [x for x in lines if x.startswith(key_id(k))]
            assert len(ln) == 1 and status in ln[0].split(), (k, table)
        for k in (ka, kb, kc, kd):
            assert k not in table
        # revoke: unknown id, malformed id -> non-zero, nothing changed.
        for bad in (key_id(fake_key("x")), "NOTHEX", key_id(ka)[:15]):
            r = run("keys", "revoke", "--store", store, bad, check=False)
            assert r.returncode != 0, (bad, r)
            assert r.stderr.strip(), r
        assert json.loads(run("keys", "list", "--store", store,
                              "--json").stdout) == rows
        # create with a bad role or products fails and adds nothing.
        for args in (("--products", "api", "--role", "admin"),
                     ("--products", "Bad-Name"), ("--products", "api",
                                                  "--expires", "tomorrow"),
                     ("--products", "api", "--expires", "2027-02-29"),
                     ("--products", "api", "--expires", "2026-04-31"),
                     ("--products", "api", "--expires", "2026-1-5")):
            a = ["keys", "create", "--store", store, "--name", "bad"] + \
                list(args)
            r = run(*a, check=False)
            assert r.returncode == 2 and r.stdout == "", r
        assert len(json.loads(run("keys", "list", "--store", store,
                                  "--json").stdout)) == 4
        # A real leap day is a valid --expires.
        leap = auth.create_key(name="leap", products="api",
                               expires="2028-02-29")
        rows = json.loads(run("keys", "list", "--store", store,
                              "--json").stdout)
        assert len(rows) == 5
        assert [r.get("expires") for r in rows if r["key_id"] ==
                key_id(leap)] == ["2028-02-29"], rows


def test_check_config_errors():
    """check-config: valid -> 0; YAML, unknown key, bad value, open private
    keys, unknown user -> exit 2 with FILE:LINE:COL and the key or path;
    serve with a bad config -> exit 2 and nothing listens."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki)
        auth.write_conf()
        good = open(auth.conf_path).read()
        p = run("check-config", auth.conf_path)
        assert "OK" in p.stdout and "authority" in p.stdout, p.stdout

        def variant(name, text):
            path = os.path.join(auth.dir, name + ".yaml")
            with open(path, "w") as f:
                f.write(text)
            return path

        def loc_of(text, needle):
            """1-based line and column of the first `needle`."""
            for i, ln in enumerate(text.splitlines(), 1):
                if needle in ln:
                    return i, ln.index(needle) + 1
            raise AssertionError(needle)

        assert "  workers: 2\n" in good
        broken = variant("broken", "mode: authority\nserver: [\n  port: 1\n")
        unknown_t = good.replace("  workers: 2\n",
                                 "  workers: 2\n  wrokers: 3\n")
        unknown = variant("unknown", unknown_t)
        badval_t = good.replace("  workers: 2\n", "  workers: lots\n")
        badval = variant("badval", badval_t)
        badport_t = good.replace("  port: %d\n" % auth.port,
                                 "  port: 70000\n")
        assert badport_t != good
        badport = variant("badport", badport_t)
        cases = (
            (broken, None, None),
            (unknown, "server.wrokers", loc_of(unknown_t, "wrokers")),
            (badval, "server.workers", loc_of(badval_t, "lots")),
            (badport, "server.port", loc_of(badport_t, "70000")),
        )
        for path, keyname, loc in cases:
            r = run("check-config", path, check=False)
            assert r.returncode == 2, (path, r)
            err = r.stderr.strip()
            assert err.startswith(path + ":"), err
            line, col = err[len(path) + 1:].split(":")[:2]
            assert line.isdigit() and col.isdigit() and int(line) >= 1 \
                and int(col) >= 1, err
            if loc is not None:
                assert (int(line), int(col)) == loc, (err, loc)
                assert keyname in err, err
            else:
                assert int(line) in (2, 3, 4), err
        # Private keys readable by others are refused, naming the path.
        for attr, mode in (("signing", 0o644), ("key", 0o644),
                           ("key", 0o640)):
            path = getattr(pki, attr)
            os.chmod(path, mode)
            try:
                r = run("check-config", auth.conf_path, check=False)
            finally:
                os.chmod(path, 0o600)
            assert r.returncode == 2, (attr, r)
            assert path in r.stderr, r.stderr
            assert r.stderr.startswith(auth.conf_path + ":"), r.stderr
        assert run("check-config", auth.conf_path).returncode == 0
        # A server.user that does not exist.
        nouser = variant("nouser", good.replace(
            "  workers: 2\n", "  workers: 2\n  user: \"lp-no-such-user\"\n"))
        r = run("check-config", nouser, check=False)
        assert r.returncode == 2, r
        assert "server.user" in r.stderr and "lp-no-such-user" in r.stderr
        # serve refuses a bad config with exit 2 and never listens.
        for path in (unknown, nouser):
            r = run("serve", path, check=False)
            assert r.returncode == 2, (path, r)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", auth.port)) != 0
        os.chmod(pki.signing, 0o644)
        try:
            r = run("serve", auth.conf_path, check=False)
        finally:
            os.chmod(pki.signing, 0o600)
        assert r.returncode == 2 and pki.signing in r.stderr, r


def test_cli_check_status_version():
    """licproxy check: 0 good, 3 revoked/unknown, 4 unreachable, failover
    from a dead URL; licproxy status; licproxy version."""
    with Fixture() as fx:
        auth = authority(fx)
        good = auth.create_key(name="good")
        bad = auth.create_key(name="bad")
        auth.start()
        run("keys", "revoke", "--store", auth.store, key_id(bad))
        ca = auth.pki.ca
        r = run("check", auth.url, "--key", good, "--ca", ca, check=False)
        assert r.returncode == 0, r
        assert json.loads(r.stdout.strip())["key_id"] == key_id(good)
        r = run("check", auth.url, "--key", bad, "--ca", ca, check=False)
        assert r.returncode == 3, r
        assert json.loads(r.stdout.strip())["reason"] == "revoked", r
        r = run("check", auth.url, "--key", fake_key("u"), "--ca", ca,
                check=False)
        assert r.returncode == 3, r
        dead = "https://127.0.0.1:%d" % free_port()
        r = run("check", dead, "--key", good, "--ca", ca, check=False)
        assert r.returncode == 4, r
        assert r.stdout == "", r
        r = run("check", dead, auth.url, "--key", good, "--ca", ca,
                check=False)
        assert r.returncode == 0, r
        assert dead.split("//")[1] in r.stderr, r.stderr
        assert json.loads(r.stdout.strip())["source"] == "authority"
        # A URL that answers 404 is no verdict on the key: next URL, and
        # "unreachable" when no URL gave an answer.
        wrong = auth.url + "/nothing-here"
        r = run("check", wrong, "--key", good, "--ca", ca, check=False)
        assert r.returncode == 4 and r.stdout == "", r
        r = run("check", wrong, auth.url, "--key", bad, "--ca", ca,
                check=False)
        assert r.returncode == 3, r
        # Without our CA the certificate does not verify: unreachable.
        r = run("check", auth.url, "--key", good, check=False)
        assert r.returncode == 4, r
        r = run("status", "http://127.0.0.1:%d" % auth.status_port)
        assert "Authority" in r.stdout, r.stdout
        assert "authority mode" in r.stdout, r.stdout
        r = run("status", "http://127.0.0.1:%d" % free_port(), check=False)
        assert r.returncode != 0, r
        v = run("version").stdout.strip()
        assert v.startswith("licproxy ") and \
            v.split()[1] == auth.status_json()["version"], v
        assert auth.stop() == 0


def test_raw_key_never_logged():
    """At log level debug, after a run of good, rejected, revoked, malformed
    and usage requests, no raw key appears in the server's log."""
    with Fixture() as fx:
        auth = authority(fx)
        assert auth.conf["log"]["level"] == "debug"
        good = auth.create_key(name="good")
        px = auth.create_key(name="px", role="proxy")
        gone = auth.create_key(name="gone")
        old = auth.create_key(name="old", expires=utc_day(-1))
        unknown = fake_key("never-issued")
        auth.start()
        assert auth.license(good).status == 200
        assert auth.license(good, scheme="Bearer").status == 200
        assert auth.license(px).status == 200
        assert auth.license(gone).status == 200
        run("keys", "revoke", "--store", auth.store, key_id(gone))
        assert auth.license(gone).status == 403
        assert auth.license(old).status == 403
        assert auth.license(unknown).status == 403
        assert auth.license(good + "Z").status == 401
        assert auth.license(good[:39]).status == 401
        assert auth.usage(good, [record("l-1")]).status == 202
        rec = dict(record("l-2"), key_id=key_id(good))
        assert auth.usage(px, [rec]).status == 202
        assert auth.usage(gone, [record("l-3")]).status == 403
        run("check", auth.url, "--key", good, "--ca", auth.pki.ca)
        assert auth.stop() == 0
        logs = auth.logs()
        assert "issued lease" in logs, "debug logging must be on"
        for k in (good, px, gone, old, unknown):
            assert k not in logs, "raw key in the log"
            assert k[:39] not in logs, "raw key prefix in the log"
        # The store never holds a raw key either.
        for root, _, files in os.walk(auth.store):
            for fn in files:
                with open(os.path.join(root, fn), "rb") as f:
                    data = f.read()
                for k in (good, px, gone, old):
                    assert k.encode() not in data, fn


def test_term_with_open_connections():
    """TERM with an idle keep-alive client, a client stalled mid-header on
    each listener and a mid-request waiting on the status port (default
    header and drain timeouts of 10 s): exit 0 within 10 s, no child
    left, and the idle client was answered before."""
    with Fixture() as fx:
        auth = authority(fx, workers=2)
        key = auth.create_key()
        auth.start()
        idle = auth.conn()
        assert auth.license(key, conn=idle).status == 200
        stalled = auth.conn()
        stalled.connect()
        stalled.sock.sendall(b"GET /v1/license HTTP/1.1\r\nHost: x\r\n")
        st = socket.create_connection(("127.0.0.1", auth.status_port))
        st.sendall(b"GET /v1/sta")
        wait_for(lambda: serving_pid(auth, stalled), what="stalled accepted")
        kids = auth.children()
        assert len(kids) == 3, kids
        t0 = time.time()
        auth.proc.send_signal(signal.SIGTERM)
        rc = auth.proc.wait(12)
        took = time.time() - t0
        auth.log.close()
        assert rc == 0, (rc, auth.logs()[-2000:])
        assert took <= 10.0, "TERM took %.1f s" % took
        left = [p for p in kids if os.path.exists("/proc/%d" % p)]
        assert left == [], "children outlived the master: %r" % left
        for c in (idle, stalled):
            c.close()
        st.close()
        # The listeners are gone with it.
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", auth.port)) != 0


def test_master_killed():
    """kill -9 of the master: the children follow it, the same ports bind
    again at once, and the issued lease is still served from the store."""
    with Fixture() as fx:
        auth = authority(fx, workers=2)
        key = auth.create_key()
        auth.start()
        lease = auth.license(key).json()["lease"]
        held = auth.conn()
        assert auth.license(key, conn=held).status == 200
        kids = auth.children()
        assert len(kids) == 3
        auth.proc.kill()
        auth.proc.wait(10)
        auth.log.close()
        wait_for(lambda: not any(os.path.exists("/proc/%d" % p)
                                 for p in kids), timeout=10,
                 what="children to follow the master")
        held.close()
        auth.start()
        r = auth.license(key)
        assert r.status == 200, r
        assert r.json()["lease"] == lease, "the stored lease is served"
        assert auth.stop() == 0


def test_instance_ids_counted():
    """X-Instance-Id names callers: distinct well-formed ids are counted in
    /v1/status and /metrics; a malformed one is ignored, not an error."""
    with Fixture() as fx:
        auth = authority(fx)
        key = auth.create_key()
        auth.start()
        for inst in ("engine-1", "engine-1", "api.7_b", "bad id!", "x" * 65):
            r = auth.license(key, headers={"X-Instance-Id": inst})
            assert r.status == 200, (inst, r)
        assert auth.status_json()["instances"]["active"] == 2
        assert auth.metrics()["licproxy_instances_active"] == 2
        r = auth.license(key)
        assert r.status == 200
        assert auth.status_json()["instances"]["active"] == 2


def test_half_closed_client_still_answered():
    """A client that sends its request and then shuts down its sending side
    (HTTP/1.0 style) still gets the answer, also when the worker has to wait
    for the issuer (a key with no lease yet), and the connection closes."""
    import socket
    with Fixture() as fx:
        auth = authority(fx)
        keys = [auth.create_key(name="h%d" % i) for i in range(3)]
        auth.start()
        for key in keys:
            raw = socket.create_connection(("127.0.0.1", auth.port), 10)
            s = auth.pki.context().wrap_socket(raw,
                                               server_hostname="localhost")
            s.sendall(("GET /v1/license HTTP/1.1\r\nHost: x\r\n"
                       "Authorization: Token %s\r\n\r\n" % key).encode())
            # TCP half-close under the TLS session (SSLSocket.shutdown
            # would drop the TLS layer on our side).
            socket.socket.shutdown(s, socket.SHUT_WR)
            data = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (ssl.SSLEOFError, ConnectionResetError):
                    break
                if not chunk:
                    break
                data += chunk
            s.close()
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), data[:200]
            # The server closed (the loop above ended without its 10 s
            # timeout). Its header says close when it saw the half-close
            # before the answer was ready; when the issuer's answer came
            # first in the same loop turn (seen under SANITIZE=1) it says
            # keep-alive and closes right after.
            assert (b"Connection: close" in head or
                    b"Connection: keep-alive" in head), head
            assert json.loads(body)["key_id"] == key_id(key)
        assert auth.stop() == 0


def test_key_files_must_hold_ed25519_keys():
    """A signing key or trusted key that is not an Ed25519 PEM key is a
    configuration error at start (exit 2, naming the file), not a child
    that keeps failing."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority"))
        auth.conf["authority"]["signing_key"] = pki.key   # an EC key
        auth.write_conf()
        p = run("check-config", auth.conf_path, check=False)
        assert p.returncode == 2, p
        assert "authority.signing_key: %s" % pki.key in p.stderr, p.stderr
        p = run("serve", auth.conf_path, check=False)
        assert p.returncode == 2, p
        assert "not an Ed25519 private key" in p.stderr, p.stderr

        bad = os.path.join(pki.dir, "bad.pub")
        with open(bad, "w") as f:
            f.write("not a key\n")
        proxy = fx.add(Server(pki, "proxy", extra={"license": {
            "server_url": ["https://127.0.0.1:1"], "trusted_keys": [bad]}},
            env={"LICPROXY_LICENSE_KEY": fake_key("k")}))
        proxy.write_conf()
        p = run("check-config", proxy.conf_path, check=False,
                env=proxy.env)
        assert p.returncode == 2, p
        assert "license.trusted_keys: %s" % bad in p.stderr, p.stderr


def test_revocation_counts_on_a_busy_keep_alive_connection():
    """A worker remembers what it read for a key while the store has not
    changed (worker/license.c, license_seen); a revocation is a write, so
    the very next request on the same connection, to the same worker that
    just answered from memory, is refused."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority", workers=1))
        key = auth.create_key(name="busy")
        auth.start()
        c = auth.conn()
        hdrs = {"Authorization": "Token " + key}
        for _ in range(5):
            c.request("GET", "/v1/license", headers=hdrs)
            r = c.getresponse()
            assert r.status == 200, r.status
            assert json.loads(r.read())["source"] == "authority"
        run("keys", "revoke", "--store", auth.store, key_id(key))
        c.request("GET", "/v1/license", headers=hdrs)
        r = c.getresponse()
        body = json.loads(r.read())
        assert r.status == 403, (r.status, body)
        assert body["reason"] == "revoked", body
        c.close()


def test_tls_close_sends_close_notify():
    """A connection licproxy ends (an answer with Connection: close, or a
    keep-alive connection left idle past server.keepalive_timeout) ends
    with a TLS close_notify before the FIN. Without one an OpenSSL 3
    client reads the close as a truncation (UNEXPECTED_EOF) and drops the
    session, so it could never resume."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority", extra={
            "server": {"keepalive_timeout": "1s"}}))
        key = auth.create_key(name="svc", products="api")
        auth.start()
        req = ("GET /v1/license HTTP/1.1\r\nHost: x\r\nAuthorization: "
               "Token %s\r\n%s\r\n")

        def answer(close):
            s = socket.create_connection(("127.0.0.1", auth.port))
            t = pki.context().wrap_socket(s, server_hostname="localhost",
                                          suppress_ragged_eofs=False)
            t.settimeout(10)
            t.sendall((req % (key, "Connection: close\r\n" if close
                              else "")).encode())
            data = b""
            try:
                while True:
                    d = t.recv(4096)
                    if not d:
                        break      # a close_notify: recv returns b""
                    data += d
            finally:
                t.close()
            return data

        assert answer(True).startswith(b"HTTP/1.1 200 ")
        t0 = time.time()
        assert answer(False).startswith(b"HTTP/1.1 200 ")   # idle close
        assert time.time() - t0 < 8


def test_revoked_at_once_under_usage_commits():
    """A worker keeps a key's decoded lease while no lease, key or
    rejection changed, though usage commits move the snapshot: a
    revocation after such commits is still seen on the very next
    request, on the same keep-alive connection."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority", workers=1))
        key = auth.create_key(name="svc", products="api,engine")
        other = auth.create_key(name="other", products="api,engine")
        auth.start()
        c = auth.conn()
        try:
            assert auth.license(key, conn=c).status == 200
            for i in range(5):      # each a commit of its own
                r = auth.usage(key, [record("gen-%d" % i)], conn=c)
                assert r.status == 202, r
                assert auth.license(key, conn=c).status == 200
            # a lease written for another key moves the generation too
            assert auth.license(other, conn=c).status == 200
            assert auth.license(key, conn=c).status == 200
            assert auth.usage(key, [record("gen-last")], conn=c).status \
                == 202
            run("keys", "revoke", "--store", auth.store, key_id(key))
            assert_error(auth.license(key, conn=c), 403, "key_rejected",
                         reason="revoked")
            assert_error(auth.usage(key, [record("gen-after")], conn=c),
                         403, "key_rejected", reason="revoked")
            assert auth.license(other, conn=c).status == 200
        finally:
            c.close()


def test_lease_answered_before_the_issuer_stores_it():
    """The issuer answers with the token it signed and caches it after:
    a cache it cannot write (its data file swapped for a read-only
    /dev/null under it, by ptrace) costs a warning and a signature next
    time, never the client's lease."""
    O_RDONLY, OPEN, DUP2 = 0, 2, 33
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki=pki)
        member = auth.create_key(name="svc")
        late = auth.create_key(name="late")
        auth.start()
        assert auth.license(member).status == 200
        issuer = auth.children_by_comm()["licproxy-issuer"]
        assert len(issuer) == 1, issuer
        fds = [int(fd) for fd in os.listdir("/proc/%d/fd" % issuer[0])
               if os.readlink("/proc/%d/fd/%s" % (issuer[0], fd)).endswith(
                   "/data.mdb")]
        assert fds, "the issuer holds no data.mdb"
        null, err = sysinject(issuer[0], OPEN, "s:/dev/null", O_RDONLY)
        assert null >= 0, err
        for fd in fds:
            assert sysinject(issuer[0], DUP2, null, fd) == (fd, 0)
        for _ in range(2):
            r = auth.license(late)
            assert r.status == 200, r
            tok = r.json()["lease"]
            assert r.json()["source"] == "authority"
            assert verify_token(tok, pki.pub)
            assert token_payload(tok)["kid"] == key_id(late)
        wait_for(lambda: auth.logs().count("lease for %s issued but not "
                                           "stored" % key_id(late)) == 2,
                 what="the issuer's warning, once for each lease")
        # The lease stored before is served as before.
        assert auth.license(member).status == 200

"""Proxy mode (issue 3): a real proxy in front of a real authority (or of a
deliberately misbehaving fake upstream where the issue asks for a fault the
real thing cannot produce)."""
import base64
import calendar
import hashlib
import http.server
import json
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time

from lp import (Fixture, Pki, Server, run, wait_for, verify_token,
                token_payload, fake_key, key_id, b64url_decode, mdb_edit)

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
LIC = 'licproxy_requests_total{endpoint="/v1/license",code="%d"}'
UP = 'licproxy_upstream_requests_total{result="%s"}'
BYTES = 'licproxy_upstream_bytes_total{direction="%s"}'


# ---- helpers ----

def authority(fx, pki, name="authority", **auth):
    return fx.add(Server(pki, "authority", name=name,
                         extra={"authority": auth} if auth else None))


def proxy(fx, pki, upstreams, key, name="proxy", **lic):
    conf = {"server_url": upstreams, "ca_file": pki.ca,
            "trusted_keys": [pki.pub], "timeout": "1s"}
    conf.update(lic)
    return fx.add(Server(pki, "proxy", name=name, extra={"license": conf},
                         env={"LICPROXY_LICENSE_KEY": key}))


def lic_count(srv, code):
    return srv.metrics().get(LIC % code, 0)


def lic_total(srv):
    """All /v1/license requests a server answered, whatever the code."""
    prefix = 'licproxy_requests_total{endpoint="/v1/license",'
    return sum(v for k, v in srv.metrics().items() if k.startswith(prefix))


def up_total(srv):
    m = srv.metrics()
    return sum(m[UP % r] for r in ("ok", "rejected", "error"))


def sha_hex(key):
    return hashlib.sha256(key.encode()).hexdigest()


def export(store):
    """`licproxy cache export` as {sha256: token}."""
    out = run("cache", "export", "--store", store).stdout
    res = {}
    for line in out.splitlines():
        if line.strip():
            j = json.loads(line)
            res[j["sha256"]] = j["lease"]
    return res


def rfc3339(s):
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def issued(auth, key):
    """The authority signed a lease for this key (its debug log says so)."""
    return "issued lease for %s" % key_id(key) in auth.logs()


class FakeUpstream:
    """A tiny HTTPS upstream (the test CA's certificate) that answers
    GET /v1/license with whatever respond(key) returns, or hangs when it
    returns None. Counts what it was asked."""

    def __init__(self, pki, respond):
        self.asked = []
        self.release = threading.Event()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                key = self.headers.get("Authorization", "").split(" ")[-1]
                outer.asked.append((self.path, key))
                ans = respond(key)
                if ans is None:
                    outer.release.wait(30)
                    return
                status, body = ans
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.cert, pki.key)
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.url = "https://127.0.0.1:%d" % self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever,
                                       daemon=True)
        self.thread.start()

    def asked_for(self, key):
        return sum(1 for _, k in self.asked if k == key)

    def cleanup(self):
        self.release.set()
        self.srv.shutdown()
        self.srv.server_close()


class Blackhole:
    """Accepts TCP connections (kernel backlog) and never says a word."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = "https://127.0.0.1:%d" % self.sock.getsockname()[1]

    def cleanup(self):
        self.sock.close()


class TempDir:
    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="lp-proxytest-")

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


def finish(fx):
    """Stop every server still running, newest first: each exits 0 (and a
    graceful stop is quicker than the harness's kill)."""
    for item in reversed(fx.items):
        if isinstance(item, Server) and item.proc is not None and \
                item.proc.poll() is None:
            assert item.stop() == 0, item.logs()[-2000:]


def setup(fx, auth_opts=None, **lic):
    pki = fx.add(Pki())
    auth = authority(fx, pki, **(auth_opts or {}))
    pkey = auth.create_key(name="proxy", role="proxy")
    auth.start()
    p = proxy(fx, pki, [auth.url], pkey, **lic).start()
    return pki, auth, p, pkey


# ---- tests ----

def test_upstream_then_cache():
    """First request waits for the upstream, the next comes from the cache
    without asking upstream again; the lease verifies; upstream metrics."""
    with Fixture() as fx:
        pki, auth, p, _ = setup(fx)
        key = auth.create_key(products="api,engine")
        assert p.status_json()["state"] == "Connected"
        m0 = p.metrics()
        r = p.license(key)
        assert r.status == 200, r
        b = r.json()
        assert b["source"] == "upstream"
        assert b["key_id"] == key_id(key)
        assert b["products"] == ["api", "engine"] and b["role"] == "member"
        assert verify_token(b["lease"], pki.pub)
        pl = token_payload(b["lease"])
        assert pl["kid"] == key_id(key) and pl["sta"] == "active"
        assert rfc3339(b["expires_at"]) == pl["exp"]
        assert rfc3339(b["refresh_at"]) == pl["rat"]
        m1 = p.metrics()
        assert m1[UP % "ok"] == m0[UP % "ok"] + 1, (m0, m1)
        assert m1[BYTES % "in"] > m0[BYTES % "in"]
        assert m1[BYTES % "out"] > m0[BYTES % "out"]
        assert m1["licproxy_lease_cache_misses_total"] == \
            m0["licproxy_lease_cache_misses_total"] + 1
        assert m1["licproxy_leases_cached"] == m0["licproxy_leases_cached"] + 1

        at_auth = lic_total(auth)
        for _ in range(3):
            r2 = p.license(key)
            assert r2.status == 200, r2
            assert r2.json()["source"] == "cache"
            assert r2.json()["lease"] == b["lease"]
        m2 = p.metrics()
        assert lic_total(auth) == at_auth, "cache hit went upstream"
        assert up_total(p) == sum(m1[UP % r] for r in
                                  ("ok", "rejected", "error"))
        assert m2["licproxy_lease_cache_hits_total"] >= \
            m1["licproxy_lease_cache_hits_total"] + 3
        st = p.status_json()
        assert st["state"] == "Connected" and st["mode"] == "proxy"
        assert st["upstream"]["urls"] == [auth.url]
        assert st["upstream"]["last_success"] is not None
        assert p.status("/readyz").status == 200
        assert p.stop() == 0 and auth.stop() == 0
        finish(fx)


def test_upstream_fetch_asks_for_the_token_alone():
    """A proxy's lease fetch sends Prefer: return=minimal and an authority
    (or a proxy above) answers {"lease": TOKEN}: the token carries every
    other field, signed, so the uplink reads nothing else. A client that
    does not ask gets the whole answer; errors are whole either way."""
    with Fixture() as fx:
        pki, auth, p, _ = setup(fx)
        key = auth.create_key(products="api,engine")
        m0 = p.metrics()
        r = p.license(key)
        assert r.status == 200 and r.json()["source"] == "upstream", r
        m1 = p.metrics()
        assert m1[UP % "ok"] == m0[UP % "ok"] + 1, (m0, m1)
        tok = r.json()["lease"]
        full = auth.license(key)
        assert full.status == 200 and full.json()["lease"] == tok, full
        mini = auth.license(key, headers={"Prefer": "return=minimal"})
        assert mini.status == 200 and mini.json() == {"lease": tok}, mini
        assert mini.headers["content-type"] == "application/json"
        assert mini.headers["cache-control"] == "no-store"
        # what the proxy took in for its fetch: a head and the short body,
        # less than the whole answer's body alone
        took = m1[BYTES % "in"] - m0[BYTES % "in"]
        assert len(mini.body) < took < len(full.body), \
            (took, len(mini.body), len(full.body))
        # a proxy's own clients: whole unless they ask, from the cache too
        assert set(p.license(key).json()) == set(full.json())
        pm = p.license(key, headers={"Prefer": "wait=1, return=minimal"})
        assert pm.status == 200 and pm.json() == {"lease": tok}, pm
        bad = p.license(fake_key("minimal"), headers={"Prefer":
                                                      "return=minimal"})
        assert bad.status == 403 and bad.json()["reason"] == "unknown", bad
        finish(fx)


def concurrent(p, key, n=40):
    """n callers, each on its own TLS connection, released at once."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def call(i):
        c = p.conn(timeout=30)
        try:
            c.connect()
            barrier.wait(20)
            results[i] = p.request("GET", "/v1/license", key=key, conn=c)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            results[i] = e
        finally:
            c.close()
    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(getattr(r, "status", None) == 200 for r in results), results
    return [r.json() for r in results]


def test_single_flight():
    """40 concurrent callers of a key the proxy has never seen: exactly one
    upstream request (counted at the authority, after the proxy's own
    start-up key check, which a 1 h sync_interval keeps from repeating)."""
    with Fixture() as fx:
        pki, auth, p, _ = setup(fx, sync_interval="1h")
        key = auth.create_key()
        before_auth = lic_count(auth, 200)
        before_total = lic_total(auth)
        before_up = p.metrics()[UP % "ok"]
        res = concurrent(p, key)
        assert len({r["lease"] for r in res}) == 1, "several leases issued"
        assert "upstream" in [r["source"] for r in res]
        assert lic_count(auth, 200) - before_auth == 1
        assert lic_total(auth) - before_total == 1
        assert p.metrics()[UP % "ok"] - before_up == 1
        finish(fx)


def test_refresh_single_flight():
    """After refresh_at, 40 concurrent callers are all served from cache at
    once and cause exactly one background refresh upstream."""
    with Fixture() as fx:
        pki, auth, p, _ = setup(fx, auth_opts={"lease_refresh": "3s"},
                                sync_interval="1h")
        key = auth.create_key()
        first = p.license(key).json()
        rat = rfc3339(first["refresh_at"])
        before = lic_total(auth)
        wait_for(lambda: time.time() >= rat + 0.1, timeout=6,
                 what="refresh_at")
        res = concurrent(p, key)
        assert {r["source"] for r in res} == {"cache"}, res
        renewed = wait_for(lambda: (lambda t: t if t != first["lease"] else
                                    None)(export(p.store)[sha_hex(key)]),
                           timeout=5, what="the refreshed lease")
        # Callers served before the refresh landed got the old lease (the
        # one that started it did), the rest the new one.
        served = [r["lease"] for r in res]
        assert first["lease"] in served
        assert set(served) <= {first["lease"], renewed}
        assert token_payload(renewed)["rat"] > token_payload(
            first["lease"])["rat"]
        r = p.license(key)
        assert r.json()["source"] == "cache" and r.json()["lease"] == renewed
        assert lic_total(auth) - before == 1
        finish(fx)


def test_states_offline_and_restart():
    """Disconnected with nothing cached; Connected once the upstream
    answers; TrustBased when it goes away (cached key 200, unseen key 503 +
    Retry-After); a restart while it is down serves the cache at once."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki)
        pkey = auth.create_key(name="proxy", role="proxy")
        key = auth.create_key()
        # The authority has not started: nothing answers, nothing cached.
        p = proxy(fx, pki, [auth.url], pkey).start()
        st = p.status()
        assert st.status == 503 and st.json()["state"] == "Disconnected", st
        assert st.json()["upstream"]["last_error"]
        assert p.status("/readyz").status == 503
        assert p.status("/healthz").status == 200
        r = p.license(key)
        assert r.status == 503 and r.json()["error"] == "upstream_unavailable"
        assert int(r.headers["retry-after"]) > 0
        assert p.metrics()[UP % "error"] >= 2

        auth.start()
        r = p.license(key)
        assert r.status == 200 and r.json()["source"] == "upstream", r
        lease = r.json()["lease"]
        assert p.status_json()["state"] == "Connected"
        assert p.status("/readyz").status == 200

        assert auth.stop() == 0
        errors = p.metrics()[UP % "error"]
        unseen = auth.create_key(name="unseen")
        r = p.license(unseen)
        assert r.status == 503, r
        assert r.json()["error"] == "upstream_unavailable"
        assert int(r.headers["retry-after"]) > 0
        assert p.metrics()[UP % "error"] > errors
        st = p.status()
        assert st.status == 200 and st.json()["state"] == "TrustBased", st
        r = p.license(key)
        assert r.status == 200 and r.json()["source"] == "cache", r
        assert r.json()["lease"] == lease

        # Restart with the authority still down: cached key served at once.
        assert p.stop() == 0
        p.start(wait=False)
        wait_for(p._healthy, what="restarted proxy")
        r = p.license(key)
        assert r.status == 200, r
        assert r.json()["source"] == "cache" and r.json()["lease"] == lease
        wait_for(lambda: p.status_json()["state"] == "TrustBased",
                 what="TrustBased after restart")
        assert p.license(unseen).status == 503
        finish(fx)


def test_revoked_after_refresh_at():
    """A revoked key keeps its cached lease until refresh_at; the first
    request after it is still served from cache and starts the background
    refresh; the upstream's 403 then replaces the lease at once."""
    with Fixture() as fx:
        pki, auth, p, _ = setup(fx, auth_opts={"lease_refresh": "1s"})
        key = auth.create_key()
        r = p.license(key)
        assert r.status == 200 and r.json()["source"] == "upstream", r
        rat = rfc3339(r.json()["refresh_at"])
        assert sha_hex(key) in export(p.store)
        run("keys", "revoke", "--store", auth.store, key_id(key))
        assert auth.license(key).json()["reason"] == "revoked"
        rejected = p.metrics()[UP % "rejected"]
        wait_for(lambda: time.time() >= rat + 0.1, timeout=5,
                 what="refresh_at")
        r = p.license(key)
        assert r.status == 200, r
        assert r.json()["source"] == "cache"
        r = wait_for(lambda: (lambda x: x if x.status == 403 else None)(
            p.license(key)), timeout=5, what="403 after the refresh")
        assert r.json()["error"] == "key_rejected"
        assert r.json()["reason"] == "revoked"
        assert p.metrics()[UP % "rejected"] > rejected
        assert sha_hex(key) not in export(p.store), "lease still cached"
        # With the authority gone the rejection stands: no stale lease.
        assert auth.stop() == 0
        r = p.license(key)
        assert r.status == 403 and r.json()["reason"] == "revoked", r
        finish(fx)


def test_foreign_signed_upstream_refused():
    """A second authority signing with another key: the proxy trusts only
    the first key's .pub, so it caches nothing and answers 503."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        tmp = fx.add(TempDir())
        other = os.path.join(tmp.path, "other.key")
        run("keygen", other)
        rogue = authority(fx, pki, name="rogue", signing_key=other)
        pkey = rogue.create_key(name="proxy", role="proxy")
        key = rogue.create_key()
        rogue.start()
        good = rogue.license(key)
        assert good.status == 200 and verify_token(good.json()["lease"],
                                                   other + ".pub")
        assert not verify_token(good.json()["lease"], pki.pub)
        p = proxy(fx, pki, [rogue.url], pkey).start()
        for _ in range(2):
            asked = lic_total(rogue)
            r = p.license(key)
            assert r.status == 503, r
            assert r.json()["error"] == "upstream_unavailable"
            assert int(r.headers["retry-after"]) > 0
            assert lic_total(rogue) == asked + 1   # not from a cache
        assert export(p.store) == {}, "a foreign lease was cached"
        assert p.metrics()["licproxy_leases_cached"] == 0
        assert "does not verify" in p.logs()
        finish(fx)


def test_tampered_lease_from_fake_upstream():
    """A fake upstream returns (a) a genuine token with a modified payload,
    (b) a genuine lease that names another key, (c) garbage: all refused,
    nothing cached, each caller gets 503."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki)
        pkey = auth.create_key(name="proxy", role="proxy")
        k_tamper, k_other, k_junk = (auth.create_key(name=n) for n in
                                     ("t", "o", "j"))
        auth.start()
        genuine = auth.license(k_tamper).json()["lease"]
        payload, sig = genuine.split(".")
        raw = b64url_decode(payload)
        assert b"engine" in raw
        forged = raw.replace(b"engine", b"enginf")
        tampered = base64.urlsafe_b64encode(forged).decode().rstrip("=") + \
            "." + sig
        assert token_payload(tampered)["prd"] == ["api", "enginf"]
        assert not verify_token(tampered, pki.pub)
        proxy_lease = auth.license(pkey).json()
        answers = {
            pkey: (200, proxy_lease),
            k_tamper: (200, dict(proxy_lease, key_id=key_id(k_tamper),
                                 lease=tampered)),
            k_other: (200, dict(proxy_lease, key_id=key_id(k_other),
                                lease=genuine)),
            k_junk: (200, dict(proxy_lease, lease="not.a-token")),
        }
        fake = fx.add(FakeUpstream(pki, lambda k: answers.get(
            k, (403, {"error": "key_rejected", "reason": "unknown"}))))
        p = proxy(fx, pki, [fake.url], pkey).start()
        assert fake.asked_for(pkey) >= 1
        cached0 = export(p.store)
        assert set(cached0) == {sha_hex(pkey)}   # its own genuine lease
        for k in (k_tamper, k_other, k_junk):
            for i in (1, 2):
                r = p.license(k)
                assert r.status == 503, (k, r)
                assert r.json()["error"] == "upstream_unavailable"
                assert fake.asked_for(k) == i, "answered from a cache"
        assert export(p.store) == cached0
        assert p.metrics()["licproxy_leases_cached"] == 1
        logs = p.logs()
        assert "%s does not verify" % key_id(k_tamper) in logs
        assert "lease for %s names key %s" % (key_id(k_other),
                                              key_id(k_tamper)) in logs
        assert "lease for %s does not verify" % key_id(k_junk) in logs
        finish(fx)


def test_clock_set_back_does_not_extend_lease():
    """A lease that expired while the proxy ran is not served after a
    restart with the clock set back 2 h (the store's high-water mark); a
    fresh store under the same fake clock shows the clock really is back."""
    assert os.path.exists(FAKETIME_LIB), FAKETIME_LIB
    with Fixture() as fx:
        pki, auth, p, pkey = setup(fx, auth_opts={"lease_refresh": "1s",
                                                  "lease_ttl": "3s"})
        key = auth.create_key()
        r = p.license(key)
        assert r.status == 200, r
        exp = rfc3339(r.json()["expires_at"])
        assert exp - time.time() < 5
        assert auth.stop() == 0
        wait_for(lambda: p.license(key).status == 503, timeout=8,
                 what="lease to expire")
        assert time.time() >= exp
        # The uplink records the clock every 2 s; let it see a time >= exp.
        time.sleep(2.5)
        leases = export(p.store)
        assert sha_hex(key) in leases
        assert p.stop() == 0

        fake_env = {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": "-2h",
                    "LICPROXY_LICENSE_KEY": pkey}
        # Control: under the fake clock a store without the mark takes the
        # lease as valid (import skips expired leases by the store's now).
        tmp = fx.add(TempDir())
        f = os.path.join(tmp.path, "leases.jsonl")
        with open(f, "w") as fh:
            fh.write(json.dumps({"sha256": sha_hex(key),
                                 "lease": leases[sha_hex(key)]}) + "\n")
        ctl = proxy(fx, pki, [auth.url], pkey, name="control")
        ctl.env = fake_env
        imp = run("cache", "import", "--store", ctl.store, "--trusted-key",
                  pki.pub, f, env=fake_env)
        assert "imported 1 leases, skipped 0 expired" in imp.stderr, imp
        ctl.start()
        r = ctl.license(key)
        assert r.status == 200 and r.json()["source"] == "cache", r

        # The real store has seen a later time: the lease stays expired.
        p.env = fake_env
        p.start()
        r = p.license(key)
        assert r.status == 503, r
        assert r.json()["error"] == "upstream_unavailable"
        st = p.status()
        assert st.json()["leases"]["cached"] == 0, st
        assert st.json()["state"] == "Disconnected" and st.status == 503, st
        finish(fx)


def test_failover_within_timeout():
    """Dead first URLs (one never answers TCP, one completes TLS and never
    answers): the live third one answers within the timeouts plus a
    little."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki)
        pkey = auth.create_key(name="proxy", role="proxy")
        key = auth.create_key()
        auth.start()
        hole = fx.add(Blackhole())
        hang = fx.add(FakeUpstream(pki, lambda k: None))
        p = proxy(fx, pki, [hole.url, hang.url, auth.url], pkey,
                  timeout="1s")
        p.start()
        assert p.status_json()["state"] == "Connected"
        errors = p.metrics()[UP % "error"]
        t0 = time.time()
        r = p.license(key)
        took = time.time() - t0
        assert r.status == 200 and r.json()["source"] == "upstream", r
        assert took < 2 * 1.0 + 2, "failover took %.1fs" % took
        assert hang.asked_for(key) == 1
        assert p.metrics()[UP % "error"] >= errors + 2
        # the issuer logs a signature once it has cached it, after the answer
        wait_for(lambda: issued(auth, key), what="the authority's signing")
        finish(fx)


def test_chain_proxy_proxy_authority():
    """edge proxy -> middle proxy -> authority: the middle proxy asks with
    the client's key (it caches that key's lease; the authority signs it)."""
    with Fixture() as fx:
        pki, auth, mid, _ = setup(fx)
        ekey = auth.create_key(name="edge", role="proxy")
        key = auth.create_key()
        edge = proxy(fx, pki, [mid.url], ekey, name="edge").start()
        assert edge.status_json()["state"] == "Connected"
        r = edge.license(key)
        assert r.status == 200 and r.json()["source"] == "upstream", r
        assert r.json()["key_id"] == key_id(key)
        assert verify_token(r.json()["lease"], pki.pub)
        wait_for(lambda: issued(auth, key), what="the authority's signing")
        mid_cache = export(mid.store)
        assert sha_hex(key) in mid_cache and sha_hex(ekey) in mid_cache
        assert mid_cache[sha_hex(key)] == r.json()["lease"]
        # The middle now answers that key from its cache, the edge too.
        assert mid.license(key).json()["source"] == "cache"
        assert edge.license(key).json()["source"] == "cache"
        # An unknown key's rejection travels down the chain.
        bad = fake_key("chain")
        r = edge.license(bad)
        assert r.status == 403 and r.json()["reason"] == "unknown", r
        finish(fx)


def test_negative_ttl():
    """An unknown key's 403 is cached for negative_ttl: a second request
    does not reach the authority; after it, the proxy asks again."""
    with Fixture() as fx:
        pki, auth, p, _ = setup(fx, negative_ttl="2s")
        bad = fake_key("negative")
        n403 = lic_count(auth, 403)
        rej = p.metrics()[UP % "rejected"]
        r = p.license(bad)
        assert r.status == 403, r
        assert r.json()["error"] == "key_rejected"
        assert r.json()["reason"] == "unknown"
        assert lic_count(auth, 403) == n403 + 1
        assert p.metrics()[UP % "rejected"] == rej + 1
        r = p.license(bad)
        assert r.status == 403 and r.json()["reason"] == "unknown", r
        assert lic_count(auth, 403) == n403 + 1, "rejection not cached"
        wait_for(lambda: p.license(bad).status == 403 and
                 lic_count(auth, 403) == n403 + 2, timeout=6,
                 step=0.2, what="the proxy to ask again after negative_ttl")
        finish(fx)


def test_malformed_key_never_upstream():
    with Fixture() as fx:
        pki, auth, p, _ = setup(fx)
        auth_before = dict((k, v) for k, v in auth.metrics().items()
                           if "/v1/license" in k)
        up_before = up_total(p)
        bad = ["short", "a" * 39, "a" * 41, "a" * 39 + "-", "a" * 39 + "_",
               "a" * 20 + " " + "a" * 19]
        for k in bad:
            for scheme in ("Token", "Bearer"):
                r = p.license(k, scheme=scheme)
                assert r.status == 401, (k, r)
                assert r.json()["error"] == "malformed_key", (k, r)
        r = p.request("GET", "/v1/license")
        assert r.status == 401 and r.json()["error"] == "missing_key", r
        r = p.usage("x" * 12, [{"id": "r1", "product": "api", "metric": "m",
                                "quantity": 1, "ts": "2026-01-01T00:00:00Z"}])
        assert r.status == 401 and r.json()["error"] == "malformed_key", r
        auth_after = dict((k, v) for k, v in auth.metrics().items()
                          if "/v1/license" in k)
        assert auth_after == auth_before
        assert up_total(p) == up_before
        assert all(sha_hex(k) not in export(p.store) for k in bad)
        finish(fx)


def test_proxy_key_sources():
    """The proxy needs its own key: none -> exit 2; LICPROXY_LICENSE_KEY,
    license.key_file and --license-key each reach the authority (which
    signs a lease for exactly that key)."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki)
        k_env, k_file, k_arg, k_loser = (
            auth.create_key(name=n, role="proxy") for n in
            ("env", "file", "arg", "loser"))
        auth.start()

        none = proxy(fx, pki, [auth.url], "", name="nokey")
        none.start(wait=False)
        assert none.proc.wait(15) == 2
        none.log.close()
        assert "license key" in none.logs(), none.logs()
        assert lic_total(auth) == 0

        bad = proxy(fx, pki, [auth.url], "", name="badkey")
        bad.start(wait=False, args=["--license-key", "not-a-key"])
        assert bad.proc.wait(15) == 2
        bad.log.close()
        assert "--license-key: a license key is" in bad.logs(), bad.logs()
        assert lic_total(auth) == 0

        p_env = proxy(fx, pki, [auth.url], k_env, name="env").start()
        wait_for(lambda: issued(auth, k_env), what="env key upstream")

        tmp = fx.add(TempDir())
        kf = os.path.join(tmp.path, "license.key")
        with open(kf, "w") as f:
            f.write("  %s\n\n" % k_file)
        os.chmod(kf, 0o644)   # a readable key file is refused, like ssh
        loose = proxy(fx, pki, [auth.url], "", name="loose", key_file=kf)
        loose.start(wait=False)
        assert loose.proc.wait(15) == 2
        loose.log.close()
        assert kf in loose.logs(), loose.logs()
        assert not issued(auth, k_file)
        os.chmod(kf, 0o600)
        p_file = proxy(fx, pki, [auth.url], "", name="file", key_file=kf)
        p_file.start()
        wait_for(lambda: issued(auth, k_file), what="key_file key upstream")

        # The command line wins over the environment.
        p_arg = proxy(fx, pki, [auth.url], k_loser, name="arg")
        p_arg.start(args=["--license-key", k_arg])
        wait_for(lambda: issued(auth, k_arg), what="--license-key upstream")
        assert not issued(auth, k_loser)
        for p in (p_env, p_file, p_arg):
            assert p.status_json()["state"] == "Connected"
            assert p.stop() == 0
        assert lic_count(auth, 200) == 3
        finish(fx)


def test_cache_export_import():
    """Export from a running proxy, import into a new store (wrong trusted
    key: exit 2, nothing imported; expired lease skipped and counted), then
    a proxy on the new store serves the key with the upstream down."""
    with Fixture() as fx:
        pki, auth, p, pkey = setup(fx)
        key = auth.create_key()
        assert p.license(key).status == 200
        tmp = fx.add(TempDir())
        f = os.path.join(tmp.path, "leases.jsonl")
        out = run("cache", "export", "--store", p.store).stdout
        assert key not in out and pkey not in out, "raw key exported"
        lines = [json.loads(x) for x in out.splitlines() if x.strip()]
        assert {x["sha256"] for x in lines} == {sha_hex(key), sha_hex(pkey)}
        for x in lines:
            assert verify_token(x["lease"], pki.pub)

        # An expired lease signed by the same authority key.
        short = authority(fx, pki, name="short", lease_refresh="1s",
                          lease_ttl="1s")
        old = short.create_key(name="old")
        short.start()
        tok = short.license(old).json()["lease"]
        exp = token_payload(tok)["exp"]
        assert short.stop() == 0
        with open(f, "w") as fh:
            fh.write(out)
            fh.write(json.dumps({"sha256": sha_hex(old), "lease": tok}) + "\n")

        # Wrong trusted key: the whole file is refused.
        other = os.path.join(tmp.path, "other.key")
        run("keygen", other)
        newp = proxy(fx, pki, [auth.url], pkey, name="imported")
        r = run("cache", "import", "--store", newp.store, "--trusted-key",
                other + ".pub", f, check=False)
        assert r.returncode == 2, r
        assert "nothing imported" in r.stderr, r.stderr
        assert not os.path.exists(newp.store) or export(newp.store) == {}

        wait_for(lambda: time.time() > exp, timeout=5, what="lease expiry")
        r = run("cache", "import", "--store", newp.store, "--trusted-key",
                other + ".pub", "--trusted-key", pki.pub, f)
        assert "imported 2 leases, skipped 1 expired" in r.stderr, r.stderr
        got = export(newp.store)
        assert set(got) == {sha_hex(key), sha_hex(pkey)}

        assert auth.stop() == 0
        newp.start()
        r = newp.license(key)
        assert r.status == 200 and r.json()["source"] == "cache", r
        assert verify_token(r.json()["lease"], pki.pub)
        assert newp.status_json()["state"] == "TrustBased"
        assert newp.license(old).status == 503
        finish(fx)


def swap_lease_rows(store, sha_a, sha_b):
    """Swap the values of two rows of the leases table: each key's row
    then holds a lease, correctly signed, for the other key (a store
    edited or damaged by hand)."""
    def swap(lines):
        rows = {lines[i].strip(): i for i in range(0, len(lines) - 1, 2)
                if lines[i].startswith(" ")}
        ka, kb = rows[sha_a], rows[sha_b]
        lines[ka + 1], lines[kb + 1] = lines[kb + 1], lines[ka + 1]
    mdb_edit(store, "leases", swap)


def test_lease_row_for_another_key_is_never_served():
    """A cached row whose signed lease names another key (swapped by hand
    while the proxy was down) is no lease for this key: with the upstream
    down the answer is 503, never the other key's lease; with the upstream
    back, the key gets its own lease and the row is put right."""
    with Fixture() as fx:
        pki, auth, p, _ = setup(fx)
        a, b = auth.create_key(name="a"), auth.create_key(name="b")
        lease = {}
        for k in (a, b):
            r = p.license(k)
            assert r.status == 200, r
            lease[k] = r.json()["lease"]
        assert p.stop() == 0 and auth.stop() == 0
        swap_lease_rows(p.store, sha_hex(a), sha_hex(b))
        assert export(p.store)[sha_hex(a)] == lease[b]     # swapped indeed
        p.start()
        for k in (a, b):
            r = p.license(k)
            assert r.status == 503, (r, r.json())
            assert r.json()["error"] == "upstream_unavailable", r
        auth.start()
        for k in (a, b):
            r = p.license(k)
            assert r.status == 200, (r, p.logs()[-3000:])
            assert r.json()["key_id"] == key_id(k), r
            assert token_payload(r.json()["lease"])["kid"] == key_id(k)
            assert verify_token(r.json()["lease"], pki.pub)
        ex = export(p.store)
        for k in (a, b):
            assert token_payload(ex[sha_hex(k)])["kid"] == key_id(k)
        finish(fx)

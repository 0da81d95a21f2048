"""Floating seats (SPEC section 8): seat cycle at an authority and through
proxies, grants, chains, the last-seat race, the CLI."""
import calendar
import http.client
import json
import os
import select
import socket
import shutil
import subprocess
import tempfile
import threading
import time

from lp import (Fixture, Pki, Server, run, wait_for, key_id, free_port,
                mdb_edit)

TTL = "3s"


def authority(fx, pki, name="authority", grant_ttl=None):
    extra = {"seats": {"ttl": TTL}}
    if grant_ttl:
        extra["authority"] = {"seat_grant_ttl": grant_ttl}
    return fx.add(Server(pki, "authority", name=name, extra=extra))


def proxy(fx, pki, upstreams, key, name="proxy", sync="2s", ttl=TTL,
          timeout="1s"):
    conf = {"server_url": upstreams, "ca_file": pki.ca,
            "trusted_keys": [pki.pub], "timeout": timeout,
            "sync_interval": sync}
    return fx.add(Server(pki, "proxy", name=name,
                         extra={"license": conf, "seats": {"ttl": ttl}},
                         env={"LICPROXY_LICENSE_KEY": key}))


def seat_key(srv, n, name="floating"):
    args = ["keys", "create", "--store", srv.store, "--name", name,
            "--products", "api"]
    if n is not None:
        args += ["--seats", str(n)]
    return run(*args).stdout.strip()


def take(srv, key, inst, method="POST"):
    h = {"X-Instance-Id": inst} if inst is not None else {}
    return srv.request(method, "/v1/seats", key=key, headers=h)


def finish(fx):
    for item in reversed(fx.items):
        if isinstance(item, Server) and item.proc is not None and \
                item.proc.poll() is None:
            assert item.stop() == 0, item.logs()[-2000:]


def seat_cycle(srv, key, total, proxy_mode=False):
    """take, renew, 409 with Retry-After, release, expiry after seats.ttl."""
    r = take(srv, key, None)
    assert r.status == 400 and "X-Instance-Id" in r.json()["message"], r
    got = []
    for i in range(total):
        r = take(srv, key, "inst-%d" % i)
        assert r.status == 200, (r, srv.logs()[-3000:])
        j = r.json()
        assert j["key_id"] == key_id(key) and j["instance"] == "inst-%d" % i
        assert j["seats"]["total"] == total and j["seats"]["used"] == i + 1
        assert j["expires_at"] and j["renew_at"]
        if proxy_mode:
            assert j["seats"]["granted"] >= i + 1, j
        got.append(j)
    # renew: same instance, still total seats
    r = take(srv, key, "inst-0")
    assert r.status == 200 and r.json()["seats"]["used"] == total, r
    r = take(srv, key, "inst-extra")
    assert r.status == 409, r
    assert r.json()["error"] == "seats_exhausted"
    assert r.json()["seats"]["total"] == total
    assert int(r.headers["retry-after"]) >= 1
    lst = srv.request("GET", "/v1/seats", key=key)
    assert lst.status == 200, lst
    assert sorted(i["instance"] for i in lst.json()["instances"]) == \
        ["inst-%d" % i for i in range(total)], lst
    # release, twice: 204 both times; the freed seat goes to another
    assert take(srv, key, "inst-0", "DELETE").status == 204
    assert take(srv, key, "inst-0", "DELETE").status == 204
    r = take(srv, key, "inst-extra")
    assert r.status == 200, r
    # nobody renews: every seat is free again after seats.ttl
    time.sleep(3.5)
    for i in range(total):
        r = take(srv, key, "late-%d" % i)
        assert r.status == 200, (i, r)


def test_seat_cycle_authority():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki).start()
        key = seat_key(auth, 2)
        free = seat_key(auth, None, name="unlimited")
        seat_cycle(auth, key, 2)
        r = take(auth, free, "x")
        assert r.status == 200, r
        j = r.json()
        assert j["seats"] == {"total": None, "used": 0}, j
        assert j["expires_at"] is None and j["renew_at"] is None
        r = take(auth, "A" * 40, "x")
        assert r.status == 403 and r.json()["reason"] == "unknown", r
        r = auth.request("PUT", "/v1/seats", key=key)
        assert r.status == 405, r
        st = auth.status_json()["seats"]
        assert st["keys"] == 1, st
        # seats.ttl is 2s: renew while waiting for the 2 s tick's gauge

        def gauge():
            for i in range(2):
                assert take(auth, key, "late-%d" % i).status == 200
            return auth.status_json()["seats"]["used"] == 2 and \
                auth.metrics()["licproxy_seats_used"] == 2
        wait_for(gauge, timeout=8, step=0.3, what="seats gauge")
        finish(fx)


def test_grant_protocol_authority():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki).start()
        key = seat_key(auth, 3)
        pkey = run("keys", "create", "--store", auth.store, "--name", "p",
                   "--products", "api", "--role", "proxy").stdout.strip()
        kid = key_id(key)
        r = auth.request("PUT", "/v1/seats/grant", key=key,
                         body={"key_id": kid, "seats": 1})
        assert r.status == 403 and r.json()["error"] == "forbidden", r
        for body, field in (({"key_id": "x", "seats": 1}, "key_id"),
                            ({"key_id": kid, "seats": -1}, "seats"),
                            ({"key_id": kid}, "seats"),
                            ({"key_id": kid, "seats": 1, "seq": -1}, "seq"),
                            ({"key_id": kid, "seats": 1, "seq": 1.5}, "seq"),
                            ({"key_id": kid, "seats": 1, "takeover": 1},
                             "takeover")):
            r = auth.request("PUT", "/v1/seats/grant", key=pkey, body=body)
            assert r.status == 400 and field in r.json()["message"], r
        # a field twice is ambiguous; a body not declared JSON is refused
        r = auth.request("PUT", "/v1/seats/grant", key=pkey,
                         body='{"key_id":"%s","seats":1,"seats":2}' % kid,
                         headers={"Content-Type": "application/json"})
        assert r.status == 400 and "body" in r.json()["message"], r
        r = auth.request("PUT", "/v1/seats/grant", key=pkey,
                         body=json.dumps({"key_id": kid, "seats": 1}),
                         headers={"Content-Type": "text/plain"})
        assert r.status == 415, r
        assert r.json()["error"] == "unsupported_media_type", r
        for bad in ("a b", "x" * 65):
            r = auth.request("PUT", "/v1/seats/grant", key=pkey,
                             body={"key_id": kid, "seats": 1},
                             headers={"X-Instance-Id": bad})
            assert r.status == 400, r
            assert "X-Instance-Id" in r.json()["message"], r
        assert grants_of(auth) == [], "nothing of a refused request kept"
        # two instances of one proxy key hold a grant each, counted
        # together: 2 + 2 of 3 seats is 2 + 1
        for ins, want, got in (("p1", 2, 2), ("p2", 2, 1), ("p1", 0, 0)):
            r = auth.request("PUT", "/v1/seats/grant", key=pkey,
                             body={"key_id": kid, "seats": want},
                             headers={"X-Instance-Id": ins})
            assert r.status == 200 and r.json()["granted"] == got, (ins, r)
            # a proxy naming itself also gets the seconds left, never
            # more than the grant's 72 h (whole, less one)
            left = iso(r.json()["expires_at"]) - time.time()
            assert 72 * 3600 - 3 <= r.json()["expires_in"] < 72 * 3600, r
            assert abs(r.json()["expires_in"] - left) <= 2, (r, left)
        assert [(g["instance"], g["seats"]) for g in grants_of(auth)] == \
            [("p2", 1)]
        r = auth.request("PUT", "/v1/seats/grant", key=pkey,
                         body={"key_id": kid, "seats": 0},
                         headers={"X-Instance-Id": "p2"})
        assert r.json()["granted"] == 0 and grants_of(auth) == [], r
        r = auth.request("PUT", "/v1/seats/grant", key=pkey,
                         body={"key_id": "0" * 16, "seats": 1})
        assert r.status == 403 and r.json()["reason"] == "unknown", r
        r = auth.request("PUT", "/v1/seats/grant", key=pkey,
                         body={"key_id": kid, "seats": 2})
        assert r.status == 200, r
        assert set(r.json()) == {"key_id", "granted", "expires_at",
                                 "total"}, r     # SPEC 8's shape exactly
        assert r.json()["granted"] == 2 and r.json()["total"] == 3, r
        assert take(auth, key, "a").status == 200
        assert take(auth, key, "b").status == 409
        r = auth.request("PUT", "/v1/seats/grant", key=pkey,
                         body={"key_id": kid, "seats": 5})
        assert r.json()["granted"] == 2, r      # partial: 1 is held
        r = auth.request("PUT", "/v1/seats/grant", key=pkey,
                         body={"key_id": kid, "seats": 0})
        assert r.json()["granted"] == 0, r
        assert take(auth, key, "b").status == 200
        # CLI: list shows the instances and the grant; release frees
        r = auth.request("PUT", "/v1/seats/grant", key=pkey,
                         body={"key_id": kid, "seats": 1})
        assert r.json()["granted"] == 1, r
        rows = json.loads(run("seats", "list", "--store", auth.store,
                              "--json").stdout)
        assert len(rows) == 1 and rows[0]["total"] == 3, rows
        assert rows[0]["used"] == 3
        assert {i["instance"] for i in rows[0]["instances"]} == {"a", "b"}
        assert [g["holder"] for g in rows[0]["grants"]] == [key_id(pkey)]
        assert set(rows[0]["grants"][0]) == {"holder", "seats",
                                             "expires_at"}  # SPEC 8's
        assert "KEY_ID" in run("seats", "list", "--store",
                               auth.store).stdout
        r = run("seats", "release", "--store", auth.store, kid,
                "--holder", key_id(pkey))
        assert "warning" in r.stderr and "over-issue" in r.stderr, r
        run("seats", "release", "--store", auth.store, kid,
            "--instance", "a")
        assert take(auth, key, "c").status == 200
        assert take(auth, key, "d").status == 200
        assert take(auth, key, "e").status == 409
        r = run("seats", "release", "--store", auth.store, kid, check=False)
        assert r.returncode == 2, r
        keys = json.loads(run("keys", "list", "--store", auth.store,
                              "--json").stdout)
        assert {k["key_id"]: k["seats"] for k in keys}[kid] == 3
        assert " 3 " in run("keys", "list", "--store", auth.store).stdout
        finish(fx)


def grants_of(auth):
    """Every grant; "instance" None for one that named none (the CLI
    leaves the key out then, SPEC 8's shape)."""
    rows = json.loads(run("seats", "list", "--store", auth.store,
                          "--json").stdout)
    return [dict(g, instance=g.get("instance")) for r in rows
            for g in r["grants"]]


def test_last_seat_race():
    """Many concurrent POSTs with distinct instances over two workers for
    a key of one seat: exactly one wins."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki).start()
        key = seat_key(auth, 1)
        auth.license(key)
        conns = [auth.conn() for _ in range(24)]
        for c in conns:
            c.connect()
        res = [None] * len(conns)
        go = threading.Event()

        def one(i):
            go.wait()
            res[i] = auth.request("POST", "/v1/seats", key=key,
                                  headers={"X-Instance-Id": "racer-%d" % i},
                                  conn=conns[i]).status
        ts = [threading.Thread(target=one, args=(i,))
              for i in range(len(conns))]
        for t in ts:
            t.start()
        go.set()
        for t in ts:
            t.join(20)
        assert sorted(res).count(200) == 1 and res.count(409) == \
            len(conns) - 1, res
        for c in conns:
            c.close()
        finish(fx)


def proxy_key(auth, name="proxy"):
    return run("keys", "create", "--store", auth.store, "--name", name,
               "--products", "api", "--role", "proxy").stdout.strip()


def test_seat_cycle_proxy():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki).start()
        key = seat_key(auth, 2)
        free = seat_key(auth, None, name="unlimited")
        p = proxy(fx, pki, [auth.url], proxy_key(auth)).start()
        seat_cycle(p, key, 2, proxy_mode=True)
        r = take(p, free, "x")
        assert r.status == 200 and r.json()["seats"] == \
            {"total": None, "used": 0}, r
        # the authority sees the proxy's grant as used
        r = take(auth, key, "direct")
        assert r.status == 409, r
        rows = json.loads(run("seats", "list", "--store", auth.store,
                              "--json").stdout)
        assert sum(g["seats"] for g in rows[0]["grants"]) == 2, rows
        finish(fx)


def held(srv, key):
    r = srv.request("GET", "/v1/seats", key=key)
    assert r.status == 200, r
    return {i["instance"] for i in r.json()["instances"]}


def test_two_proxies_never_over_issue():
    """3 seats, two proxies: counted over both, never more than 3, with
    the authority up, stopped, and back; seats given back by one proxy
    are taken through the other within two sync intervals."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki).start()
        key = seat_key(auth, 3)
        a = proxy(fx, pki, [auth.url], proxy_key(auth, "pa"), name="pa")
        b = proxy(fx, pki, [auth.url], proxy_key(auth, "pb"), name="pb")
        a.start()
        b.start()
        a.license(key)
        b.license(key)
        ok = [i for i in range(4) if take(a, key, "a%d" % i).status == 200]
        assert len(ok) == 3, ok
        assert take(b, key, "b0").status == 409
        # renewals keep working while the authority is gone; nothing new
        auth.stop()
        for rnd in range(3):
            for i in ok:
                assert take(a, key, "a%d" % i).status == 200, rnd
            assert take(b, key, "b0").status == 409
            assert len(held(a, key)) + len(held(b, key)) <= 3
            time.sleep(0.7)
        auth.start()
        # a gives back two seats; b gets them within two sync intervals
        assert take(a, key, "a0", "DELETE").status == 204
        assert take(a, key, "a1", "DELETE").status == 204
        t0 = time.time()
        got = set()
        while time.time() - t0 < 4.5 and len(got) < 2:
            for n in ("b0", "b1"):
                if n not in got and take(b, key, n).status == 200:
                    got.add(n)
            assert take(a, key, "a2").status == 200
            assert len(held(a, key)) + len(held(b, key)) <= 3
            time.sleep(0.2)
        assert got == {"b0", "b1"}, (got, time.time() - t0)
        assert take(a, key, "a9").status == 409
        finish(fx)


def test_two_proxies_sharing_a_key_never_over_issue():
    """The usual HA pair: two proxies with one configuration, so one proxy
    key. Each holds its own grant (named by its store's instance id), so
    3 seats stay 3 over both; a proxy's restart keeps its name and its
    grant."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki).start()
        key = seat_key(auth, 3)
        pkey = proxy_key(auth, "pair")
        a = proxy(fx, pki, [auth.url], pkey, name="pa").start()
        b = proxy(fx, pki, [auth.url], pkey, name="pb").start()
        ok = [i for i in range(4) if take(a, key, "a%d" % i).status == 200]
        assert len(ok) == 3, ok
        r = take(b, key, "b0")
        assert r.status == 409, (r, b.logs()[-2000:])
        assert r.json()["seats"]["granted"] == 0, r
        rows = grants_of(auth)
        assert {g["holder"] for g in rows} == {key_id(pkey)}, rows
        assert [g["seats"] for g in rows] == [3], rows
        ida = rows[0]["instance"]
        assert ida and ida in a.logs(), (rows, a.logs()[-2000:])
        # a restarts: the same instance id, the same grant, every renewal
        a.stop()
        a.start()
        t0 = time.time()
        while time.time() - t0 < 5:     # over two of a's syncs
            for i in ok:
                assert take(a, key, "a%d" % i).status == 200, i
            assert take(b, key, "b0").status == 409
            assert len(held(a, key)) + len(held(b, key)) <= 3
            time.sleep(0.5)
        assert [g["instance"] for g in grants_of(auth)] == [ida]
        # a gives one back: b, the other instance of the key, gets it
        assert take(a, key, "a0", "DELETE").status == 204
        t0 = time.time()
        while take(b, key, "b0").status != 200:
            assert time.time() - t0 < 6, grants_of(auth)
            for i in ok[1:]:            # seats.ttl is 3 s: keep them
                assert take(a, key, "a%d" % i).status == 200, i
            assert len(held(a, key)) + len(held(b, key)) <= 3
            time.sleep(0.3)
        r = take(a, key, "a0")
        assert r.status == 409, (r, held(a, key), held(b, key),
                                 grants_of(auth), a.logs()[-3000:])
        rows = grants_of(auth)
        assert sorted(g["seats"] for g in rows) == [1, 2], rows
        assert len({g["instance"] for g in rows}) == 2, rows
        # the operator's remedy for one half gone for good: its grant
        # only; then the holder's cancel covers the rest (both stopped
        # first, so no sync puts a grant back in between)
        a.stop()
        b.stop()
        r = run("seats", "release", "--store", auth.store, key_id(key),
                "--holder", key_id(pkey), "--instance", ida + "x")
        assert "nothing cancelled" in r.stderr, r
        assert len(grants_of(auth)) == 2
        r = run("seats", "release", "--store", auth.store, key_id(key),
                "--holder", key_id(pkey), "--instance", ida)
        assert "instance " + ida in r.stderr, r
        rows = grants_of(auth)
        assert [g["instance"] for g in rows] != [ida] and len(rows) == 1, \
            rows
        run("seats", "release", "--store", auth.store, key_id(key),
            "--holder", key_id(pkey))
        assert grants_of(auth) == []
        finish(fx)


def forget_instance_id(store):
    """Zero meta self_id in a stopped proxy's store: the store as a
    version from before instance names left it."""
    def zero(lines):
        lines[lines.index(" " + b"self_id".hex()) + 1] = " " + "00" * 8
    mdb_edit(store, "meta", zero)


def test_upgraded_proxy_takes_over_its_unnamed_grant():
    """A proxy from before instance names held its grant as the bare proxy
    key. Upgraded (its store has grants but no instance id yet), it says
    so with its first claim by name and takes that row over, instead of
    finding its own 3 seats held against it for seat_grant_ttl and its
    instances refused; also when it restarted before the authority could
    answer it. A new proxy of the same key, with no grants of its own,
    takes over nothing: an older proxy may still use the row."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki).start()
        key = seat_key(auth, 3)
        pkey = proxy_key(auth)
        p = proxy(fx, pki, [auth.url], pkey, sync="1s").start()
        for i in range(3):
            assert take(p, key, "i%d" % i).status == 200
        ida = grants_of(auth)[0]["instance"]
        p.stop()
        # what the old version left: the unnamed row, a store without id
        run("seats", "release", "--store", auth.store, key_id(key),
            "--holder", key_id(pkey))
        r = auth.request("PUT", "/v1/seats/grant", key=pkey,
                         body={"key_id": key_id(key), "seats": 3})
        assert r.json()["granted"] == 3, r
        forget_instance_id(p.store)
        # its first start finds the authority down, and it restarts
        # before it could take the row over: the takeover still comes
        auth.stop()
        p.start()
        p.stop()
        auth.start()
        p.start()
        t0 = time.time()
        while time.time() - t0 < 3.5:       # three of its syncs
            for i in range(3):
                assert take(p, key, "i%d" % i).status == 200, \
                    (i, grants_of(auth))
            time.sleep(0.5)
        rows = grants_of(auth)
        assert len(rows) == 1 and rows[0]["seats"] == 3, rows
        assert rows[0]["instance"] not in (None, ida), rows
        assert "takes over its unnamed grant" in auth.logs()
        # an older proxy's row is left alone by a new proxy of the key
        for i in range(3):
            assert take(p, key, "i%d" % i, "DELETE").status == 204
        wait_for(lambda: grants_of(auth) == [], timeout=5,
                 what="the upgraded proxy to give its seats back")
        r = auth.request("PUT", "/v1/seats/grant", key=pkey,
                         body={"key_id": key_id(key), "seats": 2})
        assert r.json()["granted"] == 2, r
        q = proxy(fx, pki, [auth.url], pkey, name="q").start()
        assert take(q, key, "q0").status == 200
        assert take(q, key, "q1").status == 409
        assert sorted((g["instance"] is None, g["seats"])
                      for g in grants_of(auth)) == [(False, 1), (True, 2)]
        finish(fx)


def test_grants_survive_authority_restart():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki).start()
        key = seat_key(auth, 2)
        pkey = proxy_key(auth)
        body = {"key_id": key_id(key), "seats": 2}
        r = auth.request("PUT", "/v1/seats/grant", key=pkey, body=body)
        assert r.json()["granted"] == 2, r
        auth.stop()
        auth.start()
        assert take(auth, key, "x").status == 409
        rows = json.loads(run("seats", "list", "--store", auth.store,
                              "--json").stdout)
        assert rows[0]["grants"][0]["seats"] == 2, rows
        finish(fx)


def test_three_tier_chain_sub_grants():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki).start()
        key = seat_key(auth, 2)
        mid = proxy(fx, pki, [auth.url], proxy_key(auth, "mid"),
                    name="mid").start()
        edge = proxy(fx, pki, [mid.url], proxy_key(auth, "edge"),
                     name="edge").start()
        r = take(edge, key, "e0")
        assert r.status == 200, (r, edge.logs()[-2000:], mid.logs()[-2000:])
        assert r.json()["seats"]["granted"] == 1
        assert take(mid, key, "m0").status == 200
        assert take(edge, key, "e1").status == 409
        assert take(auth, key, "direct").status == 409
        rows = json.loads(run("seats", "list", "--store", mid.store,
                              "--json").stdout)
        assert [g["seats"] for g in rows[0]["grants"]] == [1], rows
        finish(fx)


class Haproxy:
    """HAProxy in TCP mode (TLS passed through), round robin per
    connection over the proxies: the HA setup clients see."""

    def __init__(self, pki, backends):
        self.pki = pki
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="lp-haproxy-")
        cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("global\n  maxconn 512\ndefaults\n  mode tcp\n"
                    "  timeout connect 2s\n  timeout client 20s\n"
                    "  timeout server 20s\nfrontend fe\n"
                    "  bind 127.0.0.1:%d\n  default_backend be\n"
                    "backend be\n  balance roundrobin\n" % self.port)
            for i, b in enumerate(backends):
                f.write("  server s%d 127.0.0.1:%d\n" % (i, b.port))
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", cfg],
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(self._up, what="haproxy to listen")

    def _up(self):
        import socket
        try:
            socket.create_connection(("127.0.0.1", self.port), 1).close()
            return True
        except OSError:
            return False

    def conn(self, ctx=None, timeout=15):
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, timeout=timeout,
            context=ctx or self.pki.context())

    request = Server.request

    def cleanup(self):
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def test_two_proxies_behind_haproxy():
    """Clients through HAProxy over two proxies, 3 seats: the instances
    holding seats, counted over both proxies, never exceed 3 with the
    authority up, stopped and back."""
    # make test installs haproxy (packaging/deps.sh): not a skip
    assert shutil.which("haproxy"), "haproxy missing: run make deps"
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki).start()
        key = seat_key(auth, 3)
        a = proxy(fx, pki, [auth.url], proxy_key(auth, "pa"), name="pa")
        b = proxy(fx, pki, [auth.url], proxy_key(auth, "pb"), name="pb")
        a.start()
        b.start()
        lb = fx.add(Haproxy(pki, [a, b]))

        def rounds(n):
            wins = 0
            for i in range(n):
                r = take(lb, key, "i%d" % i)
                assert r.status in (200, 409), r
                wins += r.status == 200
                total = len(held(a, key)) + len(held(b, key))
                assert total <= 3, (total, held(a, key), held(b, key))
            return wins

        assert rounds(8) >= 1
        auth.stop()
        rounds(8)
        auth.start()
        rounds(8)
        finish(fx)


def test_cut_off_proxy_serves_until_grant_expires():
    """Upstream gone: renewals go on out of the grant; once the grant has
    expired (authority.seat_grant_ttl after its last renewal), 409."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki, grant_ttl="5s").start()
        key = seat_key(auth, 2)
        p = proxy(fx, pki, [auth.url], proxy_key(auth), sync="1s").start()
        assert take(p, key, "x").status == 200
        assert take(p, key, "y").status == 200
        auth.stop()
        t0 = time.time()
        while time.time() - t0 < 3:
            assert take(p, key, "x").status == 200
            assert take(p, key, "y").status == 200
            time.sleep(0.5)
        wait_for(lambda: take(p, key, "x").status == 409, timeout=6,
                 step=0.5, what="the grant to expire")
        r = take(p, key, "y")
        assert r.status == 409 and r.json()["seats"]["granted"] == 0, r
        assert p.status_json()["state"] in ("TrustBased", "Disconnected")
        finish(fx)


class Relay:
    """A TCP forwarder between a proxy and its authority. cut(): every
    connection dropped and new ones refused. lose_answers: requests still
    reach the authority (which acts on them), but from a connection's
    second TLS application-data record on (TLS 1.3: the first is the
    client's Finished, the second its request) nothing it answers comes
    back. hold: from that record on, what the client sends is kept back,
    its connection to the authority left open; release() delivers it late
    (a request held up in the network until the proxy gave up on it)."""

    def __init__(self, target_port):
        self.target = target_port
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.up, self.lose_answers, self.socks = True, False, []
        self.hold, self.kept = False, []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.port

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            try:
                if not self.up:
                    raise OSError("cut")
                u = socket.create_connection(("127.0.0.1", self.target), 2)
            except OSError:
                c.close()
                continue
            self.socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u),
                             daemon=True).start()

    def _pump(self, c, u):
        buf, records, stash = b"", 0, None
        try:
            while self.up:
                for s in select.select([c, u], [], [], 0.2)[0]:
                    d = s.recv(65536)
                    if not d:
                        raise OSError("closed")
                    if s is c:
                        buf += d
                        while len(buf) >= 5 and \
                                len(buf) >= 5 + int.from_bytes(buf[3:5], "big"):
                            records += buf[0] == 0x17
                            buf = buf[5 + int.from_bytes(buf[3:5], "big"):]
                        if stash is None and self.hold and records >= 2:
                            stash = b""
                        if stash is not None:
                            stash += d
                        else:
                            u.sendall(d)
                    elif not (self.lose_answers and records >= 2):
                        c.sendall(d)
        except OSError:
            pass
        c.close()
        if stash is not None:
            self.kept.append((u, stash))
        else:
            u.close()

    def release(self):
        """Deliver what hold kept; the number of requests delivered."""
        kept, self.kept = self.kept, []
        for u, data in kept:
            u.sendall(data)
        return len(kept)

    def cut(self):
        self.up = False
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cleanup(self):
        self.cut()
        self.ls.close()


def iso(s):
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def grants(auth):
    """{holder: (seats, expires_at unix)} of every grant, from the CLI."""
    rows = json.loads(run("seats", "list", "--store", auth.store,
                          "--json").stdout)
    return {g["holder"]: (g["seats"], iso(g["expires_at"]))
            for r in rows for g in r["grants"]}


def one_seat_through_relay(fx, pki, auth):
    """A 1-seat key, and a proxy (seats.ttl 60 s) reaching the authority
    through a Relay, holding that seat for instance "a"."""
    key = seat_key(auth, 1)
    pkey = proxy_key(auth)
    rl = fx.add(Relay(auth.port))
    p = proxy(fx, pki, [rl.url], pkey, sync="1s", ttl="60s").start()
    r = take(p, key, "a")
    assert r.status == 200, r
    return key, pkey, rl, p, r


def test_proxy_seat_never_outlives_its_grant():
    """A proxy's seats.ttl (60 s) is longer than its grant (5 s): a seat it
    hands out ends with the grant, so a proxy cut off before renewing the
    grant has no instance holding a seat once the authority lets the grant
    go and gives the seat to another (the old code said 60 s: two holders
    of a one-seat key)."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki, grant_ttl="5s").start()
        key, pkey, rl, p, r = one_seat_through_relay(fx, pki, auth)
        seat_end = iso(r.json()["expires_at"])
        grant_end = grants(auth)[key_id(pkey)][1]
        assert seat_end <= grant_end, (r.json(), grant_end)
        rl.cut()
        wait_for(lambda: time.time() > grant_end + 1, timeout=10,
                 what="the grant's end")
        assert take(auth, key, "direct").status == 200
        assert held(p, key) == set(), held(p, key)
        r = take(p, key, "a")
        assert r.status == 409 and r.json()["seats"]["granted"] == 0, r
        assert held(auth, key) == {"direct"}
        finish(fx)


def three_held_two_released(fx, pki, auth, sync="2s", timeout="1s"):
    """A 3-seat key; a proxy behind a Relay takes 3 seats and releases 2,
    so its next sync gives 2 back. Returns (key, pkey, relay, proxy)."""
    key = seat_key(auth, 3)
    pkey = proxy_key(auth)
    rl = fx.add(Relay(auth.port))
    p = proxy(fx, pki, [rl.url], pkey, sync=sync, ttl="60s",
              timeout=timeout).start()
    for i in range(3):
        assert take(p, key, "a%d" % i).status == 200
    assert grants(auth)[key_id(pkey)][0] == 3
    for i in (1, 2):
        assert take(p, key, "a%d" % i, "DELETE").status == 204
    return key, pkey, rl, p


def test_give_back_with_its_answer_lost_binds():
    """The proxy gives back two of its three seats and the authority takes
    them, but the answer never arrives: the proxy must count them as given
    back, or it hands them out again while the authority does too (the
    old code did: five holders of a three-seat key)."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki).start()
        key, pkey, rl, p = three_held_two_released(fx, pki, auth)
        rl.lose_answers = True
        wait_for(lambda: grants(auth)[key_id(pkey)][0] == 1, timeout=10,
                 what="the authority to take the give-back")
        said = "no answer to giving back 2 of 3 seats"
        try:        # the request's timeout (1 s); checked below either way
            wait_for(lambda: said in p.logs(), timeout=5)
        except AssertionError:
            pass
        for n in ("b1", "b2"):
            r = take(p, key, n)
            assert r.status == 409, (r, p.logs()[-2000:])
        # What b1 and b2 asked for may have raised the grant again at the
        # authority (their answers are lost too): seats set aside, unused,
        # until the next answered sync. Allowed; more than 3 held is not.
        for n in ("d1", "d2"):
            assert take(auth, key, n).status in (200, 409)
        assert held(p, key) == {"a0"}, held(p, key)
        # the authority's count: its own holders and the grant (a0's seat)
        assert len(held(auth, key)) + grants(auth)[key_id(pkey)][0] <= 3, (
            held(auth, key), grants(auth))
        assert said in p.logs()
        finish(fx)


# ---- the seat clock: seats and grants do not follow the wall clock ----

def test_wall_clock_jump_frees_no_seat():
    """A 1-seat key, seats.ttl 3 s; the wall clock of the authority, then
    of a proxy, jumps 1 h ahead: the seat held stays held (the old code
    took it for expired and gave it to a second instance), renewals go on,
    and the times it reports stay on real time."""
    from test_clock import FakeClock
    with Fixture() as fx:
        pki = fx.add(Pki())
        ca, cp = fx.add(FakeClock()), fx.add(FakeClock())
        auth = authority(fx, pki)
        auth.env = dict(auth.env, **ca.env)
        auth.start()
        key = seat_key(auth, 1)
        assert take(auth, key, "a").status == 200
        ca.set("+1h")
        time.sleep(0.3)
        r = take(auth, key, "b")
        assert r.status == 409, (r, held(auth, key))
        r = take(auth, key, "a")
        assert r.status == 200, r
        assert abs(iso(r.json()["expires_at"]) - (time.time() + 3)) < 3, r
        assert take(auth, key, "a", "DELETE").status == 204
        ca.set("+0")
        time.sleep(0.3)
        p = proxy(fx, pki, [auth.url], proxy_key(auth))
        p.env = dict(p.env, **cp.env)
        p.start()
        assert take(p, key, "pa").status == 200
        cp.set("+1h")
        time.sleep(0.3)
        r = take(p, key, "pb")
        assert r.status == 409, (r, held(p, key))
        assert take(auth, key, "direct").status == 409
        r = take(p, key, "pa")
        assert r.status == 200, r
        assert abs(iso(r.json()["expires_at"]) - (time.time() + 3)) < 3, r
        finish(fx)


def test_grant_read_on_the_authority_clock():
    """The authority's clock is 1 h ahead of its proxy's from the start:
    the proxy counts the grant's expires_in (5 s) from when it asked, not
    its expires_at on the proxy's clock (which would be 1 h too long), so
    once the authority lets the grant go to another, the cut-off proxy
    serves no more."""
    from test_clock import FakeClock
    with Fixture() as fx:
        pki = fx.add(Pki())
        ca = fx.add(FakeClock())
        ca.set("+1h")
        auth = authority(fx, pki, grant_ttl="5s")
        auth.env = dict(auth.env, **ca.env)
        auth.start()
        key, pkey, rl, p, r = one_seat_through_relay(fx, pki, auth)
        assert abs(iso(r.json()["expires_at"]) - (time.time() + 5)) < 3, r
        rl.cut()
        t0 = time.time()
        wait_for(lambda: take(auth, key, "direct").status == 200,
                 timeout=10, step=0.5, what="the authority's grant to end")
        assert time.time() - t0 < 8
        r = take(p, key, "a")
        assert r.status == 409 and r.json()["seats"]["granted"] == 0, r
        finish(fx)


def test_give_back_binds_across_a_restart():
    """The proxy gives back two of its three seats, the authority takes
    them, the answer is lost, and the proxy is killed (and, the second
    time, stopped with TERM while the give-back waits longer than the stop
    deadline) before it learns anything; it comes back with the authority
    out of reach. The give-back was stored before it left, so the proxy
    serves one seat, not three (the old code: 5 holders of a 3-seat
    key)."""
    for how, timeout in (("kill", "5s"), ("term", "10s")):
        with Fixture() as fx:
            pki = fx.add(Pki())
            auth = authority(fx, pki).start()
            key, pkey, rl, p = three_held_two_released(fx, pki, auth,
                                                       timeout=timeout)
            rl.lose_answers = True
            wait_for(lambda: grants(auth)[key_id(pkey)][0] == 1,
                     timeout=10, step=0.05, what="the give-back applied")
            if how == "kill":
                p.kill()
            else:
                p.stop()
            rl.cut()
            p.start()
            for n in ("b1", "b2"):
                assert take(p, key, n).status == 409, (how, n)
            assert take(p, key, "a0").status == 200
            assert [take(auth, key, n).status for n in ("d1", "d2")] == \
                [200, 200]
            assert len(held(p, key)) + len(held(auth, key)) == 3, how
            finish(fx)


def test_late_give_back_does_not_undo_a_newer_raise():
    """The proxy gives back 2 of its 3 seats; the request is held up on
    the way (Relay.hold) until the proxy gives up on it (binding it), its
    instances come back and a raise to 3 is answered; then the old
    give-back arrives. Numbered (seq), it changes nothing (the old code
    applied it: the authority set the grant to 1 while the proxy served
    3, 5 holders of a 3-seat key)."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki).start()
        key, pkey, rl, p = three_held_two_released(fx, pki, auth, sync="4s")
        rl.hold = True
        wait_for(lambda: "no answer to giving back 2 of 3 seats" in
                 p.logs(), timeout=12, step=0.05,
                 what="the give-back to time out")
        rl.hold = False
        assert [take(p, key, n).status for n in ("b1", "b2")] == [200, 200]
        assert [g["seats"] for g in grants_of(auth)] == [3]
        assert rl.release() >= 1
        time.sleep(0.5)
        assert [g["seats"] for g in grants_of(auth)] == [3], grants_of(auth)
        assert [take(auth, key, n).status for n in ("d0", "d1")] == \
            [409, 409]
        assert len(held(p, key)) + len(held(auth, key)) == 3
        finish(fx)


def test_give_back_not_stored_is_not_sent():
    """The uplink's store writes fail (its data.mdb descriptors swapped for
    a read-only /dev/null by sysinject: a stand-in for EIO or a full disk)
    before the sync that gives 2 of 3 seats back. The give-back cannot be
    stored, so it is not sent: the authority keeps the 3 set aside for the
    proxy, which, killed and restarted cut off, serves within them (the
    old code sent it anyway: the authority took 2 back while the restarted
    proxy still had 3 on disk, 5 holders of a 3-seat key)."""
    from lp import sysinject
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki).start()
        key, pkey, rl, p = three_held_two_released(fx, pki, auth, sync="3s")
        up = p.children_by_comm()["licproxy-uplink"][0]
        fds = [int(f) for f in os.listdir("/proc/%d/fd" % up)
               if os.readlink("/proc/%d/fd/%s" % (up, f)).endswith(
                   "data.mdb")]
        ro, err = sysinject(up, 2, "s:/dev/null", 0)     # open, O_RDONLY
        assert ro >= 0, err
        for fd in fds:
            assert sysinject(up, 33, ro, fd)[0] == fd    # dup2
        wait_for(lambda: "cannot store the give-back" in p.logs(),
                 timeout=10, what="the give-back's store write to fail")
        time.sleep(1)                   # had it been sent, it is applied
        assert grants(auth)[key_id(pkey)][0] == 3
        assert "cannot store the give-back: not sent" in p.logs()
        p.kill()
        rl.cut()
        p.start()
        for n in ("b1", "b2"):
            take(p, key, n)
        assert [take(auth, key, n).status for n in ("d1", "d2")] == \
            [409, 409]
        assert len(held(p, key)) + len(held(auth, key)) <= 3
        finish(fx)

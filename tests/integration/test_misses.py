"""Misses are bounded (SPEC section 3): per-client-address miss budget
shared by every worker, miss_exempt, max_rejections and the pruning of
expired rejections. A real proxy in front of a real authority; the
upstream requests are counted at the authority's own /metrics."""
import re
import secrets
import subprocess
import threading
import time

from lp import (Fixture, Pki, Server, run, wait_for, fake_key,
                socket_owner, KEY_CHARS)

LIMITED = "licproxy_misses_limited_total"


def random_key():
    return "".join(secrets.choice(KEY_CHARS) for _ in range(40))


def lic_total(srv):
    """Every /v1/license request a server answered, whatever the code."""
    prefix = 'licproxy_requests_total{endpoint="/v1/license",'
    return sum(v for k, v in srv.metrics().items() if k.startswith(prefix))


def setup(fx, workers=2, **lic):
    pki = fx.add(Pki("misses"))
    auth = fx.add(Server(pki, "authority", name="auth"))
    pkey = auth.create_key(name="proxy", role="proxy")
    auth.start()
    conf = {"server_url": [auth.url], "ca_file": pki.ca,
            "trusted_keys": [pki.pub], "timeout": "2s",
            "sync_interval": "1h"}     # no self-checks during the count
    conf.update(lic)
    p = fx.add(Server(pki, "proxy", name="proxy", workers=workers,
                      extra={"license": conf},
                      env={"LICPROXY_LICENSE_KEY": pkey}))
    p.start()
    return auth, p


def flood(p, n, conn=None):
    """n distinct random well-formed keys on one keep-alive connection:
    [(status, Retry-After or None)]."""
    own = conn is None
    c = conn or p.conn()
    out = []
    try:
        for _ in range(n):
            r = p.license(random_key(), conn=c)
            out.append((r.status, r.headers.get("retry-after")))
            if r.status == 429:
                assert r.json()["error"] == "too_many_requests", r
    finally:
        if own:
            c.close()
    return out


def codes(res):
    return [s for s, _ in res]


def test_one_address_is_limited():
    """One client, many random keys: 429 with Retry-After after about
    miss_burst misses, and the authority sees at most burst + rate *
    elapsed lease requests."""
    burst, rate = 30, 5
    with Fixture() as fx:
        auth, p = setup(fx, miss_burst=burst, miss_rate=rate)
        up0 = lic_total(auth)
        t0 = time.monotonic()
        res = flood(p, 150)
        elapsed = time.monotonic() - t0
        up = lic_total(auth) - up0
        got = codes(res)
        assert got[:burst] == [403] * burst, got[:burst + 5]
        assert 429 in got, got
        assert set(got) <= {403, 429}, got
        for status, ra in res:
            if status == 429:
                assert ra is not None and ra.isdigit() and int(ra) >= 1, ra
        assert up == got.count(403), (up, got.count(403))
        assert up <= burst + rate * elapsed + 1, (up, elapsed)
        assert p.metrics()[LIMITED] == got.count(429)
        assert "lease misses from 127.0.0.1 over license.miss_rate" in \
            p.logs()
        body = p.status("/metrics").body
        assert "# HELP %s " % LIMITED in body
        assert "# TYPE %s counter" % LIMITED in body
        pt = subprocess.run(["promtool", "check", "metrics"], input=body,
                            capture_output=True, text=True)
        # Other metrics' lint findings are not this test's business.
        assert LIMITED not in pt.stdout + pt.stderr, pt.stdout + pt.stderr
        assert "error while linting" not in pt.stdout + pt.stderr
        # Retry-After is honest: after waiting it, a miss is allowed again.
        ra = max(int(ra) for s, ra in res if s == 429)
        time.sleep(ra)
        assert codes(flood(p, 1)) == [403]


def worker_conns(p, want=2, tries=60):
    """{worker pid: [connection]} with `want` connections on each of two
    workers (the kernel picks the worker, so open until both have some)."""
    workers = p.children_by_comm()["licproxy-worker"]
    assert len(workers) == 2, workers
    by = {w: [] for w in workers}
    spare = []
    for _ in range(tries):
        c = p.conn()
        c.connect()
        owner = wait_for(lambda: socket_owner(
            p.port, c.sock.getsockname()[1], workers), timeout=5,
            what="the worker holding the connection")
        (by[owner] if len(by[owner]) < want else spare).append(c)
        if all(len(v) >= want for v in by.values()):
            break
    for c in spare:
        c.close()
    assert all(len(v) >= want for v in by.values()), \
        "connections did not spread over both workers"
    return by


def test_budget_shared_by_workers():
    """Two workers draw on ONE budget: after worker A spent the burst,
    worker B's misses from the same address are limited too."""
    burst, rate = 20, 1
    with Fixture() as fx:
        auth, p = setup(fx, workers=2, miss_burst=burst, miss_rate=rate)
        a, b = worker_conns(p).values()
        up0 = lic_total(auth)
        t0 = time.monotonic()
        first = flood(p, burst, conn=a[0])
        second = flood(p, 15, conn=b[0]) + flood(p, 15, conn=a[1])
        elapsed = time.monotonic() - t0
        up = lic_total(auth) - up0
        assert codes(first) == [403] * burst, first
        assert codes(second).count(429) >= 30 - (rate * elapsed + 1), \
            (second, elapsed)
        # Per-worker budgets would have let 2 * burst through.
        assert up <= burst + rate * elapsed + 1, (up, elapsed)
        for c in a + b:
            c.close()


def test_cached_keys_never_limited():
    """While an address is limited, its cached valid key is still 200 from
    the cache and its cached rejection is still 403."""
    with Fixture() as fx:
        auth, p = setup(fx, miss_burst=10, miss_rate=1,
                        negative_ttl="1m")
        key = auth.create_key()
        bad = fake_key("misses-cached-rejection")
        assert p.license(key).status == 200
        assert p.license(bad).status == 403
        res = flood(p, 30)
        assert codes(res)[-1] == 429, res
        up0 = lic_total(auth)
        for _ in range(5):
            r = p.license(key)
            assert r.status == 200, r
            assert r.json()["source"] == "cache"
            r = p.license(bad)
            assert r.status == 403 and r.json()["reason"] == "unknown", r
        assert lic_total(auth) == up0, "a cached key went upstream"
        assert codes(flood(p, 1)) == [429], "the address is not limited"


def test_exempt_address_never_limited():
    burst = 10
    with Fixture() as fx:
        auth, p = setup(fx, miss_burst=burst, miss_rate=1,
                        miss_exempt=["10.0.0.0/8", "127.0.0.1/32",
                                     "2001:db8::/32"])
        up0 = lic_total(auth)
        res = flood(p, 4 * burst)
        assert codes(res) == [403] * (4 * burst), res
        assert lic_total(auth) - up0 == 4 * burst
        assert p.metrics()[LIMITED] == 0


def test_unknown_key_single_flight():
    """Concurrent misses for one unknown key: one upstream request."""
    n = 20
    with Fixture() as fx:
        auth, p = setup(fx, miss_exempt=["127.0.0.0/8"])
        bad = fake_key("misses-single-flight")
        barrier = threading.Barrier(n)
        results = [None] * n

        def call(i):
            c = p.conn(timeout=30)
            try:
                c.connect()
                barrier.wait(20)
                results[i] = p.license(bad, conn=c).status
            finally:
                c.close()
        up0 = lic_total(auth)
        threads = [threading.Thread(target=call, args=(i,))
                   for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [403] * n, results
        assert lic_total(auth) - up0 == 1


def entries(store, db):
    out = subprocess.run(["mdb_stat", "-s", db, store], capture_output=True,
                         text=True, check=True).stdout
    return int(re.search(r"Entries: (\d+)", out).group(1))


def test_rejections_capped_and_pruned():
    """Thousands of random keys leave at most max_rejections rows, and the
    rows are gone once negative_ttl has passed."""
    cap, n, nthreads = 50, 2000, 4
    with Fixture() as fx:
        auth, p = setup(fx, max_rejections=cap, negative_ttl="3s",
                        miss_exempt=["127.0.0.1"])
        errors = []

        def work():
            try:
                res = flood(p, n // nthreads)
                if set(codes(res)) != {403}:
                    errors.append(set(codes(res)))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=work) for _ in range(nthreads)]
        for t in threads:
            t.start()
        peak = 0
        while any(t.is_alive() for t in threads):
            peak = max(peak, entries(p.store, "rejects"))
            time.sleep(0.2)
        for t in threads:
            t.join()
        assert not errors, errors
        now = entries(p.store, "rejects")
        assert 0 < now <= cap, now
        assert peak <= cap, peak
        assert entries(p.store, "reject_time") == now
        wait_for(lambda: entries(p.store, "rejects") == 0 and
                 entries(p.store, "reject_time") == 0, timeout=8, step=0.5,
                 what="expired rejections to be pruned")


def test_check_config_bad_miss_exempt():
    """A bad miss_exempt entry is FILE:LINE:COL naming the key; every bad
    entry is reported; good ones (IPv4, IPv6, CIDR) pass."""
    with Fixture() as fx:
        pki = fx.add(Pki("misses-conf"))
        srv = fx.add(Server(pki, "proxy", name="conf", extra={"license": {
            "server_url": ["https://127.0.0.1:1"], "ca_file": pki.ca,
            "trusted_keys": [pki.pub], "miss_rate": 7, "miss_burst": 9,
            "max_rejections": 11,
            "miss_exempt": ["10.0.0.0/8", "::1", "fd00::/8"]}},
            env={"LICPROXY_LICENSE_KEY": fake_key("conf")}))
        srv.write_conf()
        env = {"LICPROXY_LICENSE_KEY": fake_key("conf")}
        r = run("check-config", srv.conf_path, env=env, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        srv.conf["license"]["miss_exempt"] = [
            "10.0.0.0/8", "10.0.0.0/33", "bogus", "2001:db8::/129"]
        srv.conf["license"]["miss_rate"] = 0
        srv.write_conf()
        with open(srv.conf_path) as f:
            lines = f.read().splitlines()
        r = run("check-config", srv.conf_path, env=env, check=False)
        assert r.returncode == 2, r.stdout + r.stderr
        for bad in ("10.0.0.0/33", "bogus", "2001:db8::/129"):
            ln = next(i for i, t in enumerate(lines) if "miss_exempt" in t)
            col = lines[ln].index('"%s"' % bad) + 1
            want = "%s:%d:%d: license.miss_exempt: " % (
                srv.conf_path, ln + 1, col)
            assert want in r.stderr, (want, r.stderr)
            assert '"%s"' % bad in r.stderr
        assert '"10.0.0.0/8"' not in r.stderr
        assert "license.miss_rate: must be" in r.stderr, r.stderr

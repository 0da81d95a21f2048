"""Usage limits (SPEC section 3, POST /v1/usage): relay batches bounded in
bytes (and the upstream's max_body learned from 413), the compact de-dup
index with usage.dedup_window and pruning under store pressure, quantity
bounds, real-date `ts`, and a full disk answered 507, never 500."""
import json
import os
import shutil
import subprocess
import tempfile
import time

from lp import Fixture, Pki, Server, run, wait_for, key_id

from test_usage import chain, new_proxy, ledger, ledger_records, \
    wait_drained, accepted, usage_counts

LONG_PRODUCT = "p" * 32
LONG_METRIC = "m" * 32
LONG_TS = "2026-11-26T16:00:00.123456789+01:00"    # 35 characters
LONG_Q = 999999999999.9999


def maximal(prefix, n):
    """n records with every field at its longest (the id is 64 chars)."""
    return [{"id": ("%s-%d-" % (prefix, i)).ljust(64, "x"),
             "product": LONG_PRODUCT, "metric": LONG_METRIC,
             "quantity": LONG_Q, "ts": LONG_TS} for i in range(n)]


def plain(prefix, n, q=1.0, ts="2026-11-26T16:00:00Z"):
    return [{"id": ("%s-%d-" % (prefix, i)).ljust(64, "y"),
             "product": "engine", "metric": "calls", "quantity": q,
             "ts": ts} for i in range(n)]


def big_chain(fx, auth_extra=None, proxy_extra=None):
    pki = fx.add(Pki())
    auth = fx.add(Server(pki, "authority", extra=auth_extra))
    member = auth.create_key(name="svc", products="engine," + LONG_PRODUCT)
    pkey = auth.create_key(name="proxy", role="proxy")
    auth.start()
    proxy = new_proxy(fx, pki, auth.url, pkey, extra=proxy_extra)
    return auth, proxy, member


def wait_ledger(auth, n, timeout):
    wait_for(lambda: ledger_records(auth) == n, timeout, step=0.2,
             what="%d records in the ledger (now %d)" % (
                 n, ledger_records(auth)))


def post_maximal_through(auth, proxy, member):
    batch = maximal("max", 1000)
    body = json.dumps({"records": batch})
    # Inside the proxy's max_body, but past it once key_id is added.
    assert 240000 < len(body) <= 256 * 1024, len(body)
    assert len(json.dumps({"records": [dict(r, key_id="0" * 16)
                                       for r in batch]},
                          separators=(",", ":"))) > 256 * 1024
    accepted(proxy.usage(member, batch), 1000)
    t0 = time.time()
    wait_ledger(auth, 1000, 20)
    wait_drained(proxy, 1000)
    got = ledger(auth)[(key_id(member), LONG_PRODUCT, LONG_METRIC)]
    assert got[1] == 1000 and abs(got[0] / (LONG_Q * 1000) - 1) < 1e-12, got
    return time.time() - t0


def test_relay_maximal_batch_reaches_authority():
    """1000 maximal records fit one request but not one relay batch."""
    with Fixture() as fx:
        auth, proxy, member = big_chain(fx)
        took = post_maximal_through(auth, proxy, member)
        print("1000 maximal records relayed in %.2f s" % took)
        # Exactly once: re-sending them changes nothing upstream.
        accepted(proxy.usage(member, maximal("max", 1000)), 0, 1000)
        time.sleep(1.5)
        assert ledger_records(auth) == 1000


def test_relay_learns_small_upstream_max_body():
    """An upstream with max_body 64KiB: the proxy halves its batches on
    413 until they fit, and keeps that budget."""
    with Fixture() as fx:
        auth, proxy, member = big_chain(
            fx, auth_extra={"server": {"max_body": "64KiB"}})
        took = post_maximal_through(auth, proxy, member)
        print("relayed through a 64KiB upstream in %.2f s" % took)
        logs = proxy.logs()
        assert "413" in logs and "bytes a batch from now on" in logs, \
            logs[-3000:]
        learned = logs.count("bytes a batch from now on")
        # Learned once for the process: the next backlog sends no 413.
        accepted(proxy.usage(member, maximal("two", 1000)), 1000)
        wait_ledger(auth, 2000, 20)
        assert proxy.logs().count("bytes a batch from now on") == learned


def test_dedup_index_small_store_keeps_accepting():
    """A 1 MiB proxy store: the old (key_id, id) index filled it after a
    few thousand records; the compact one prunes its oldest entries and
    usage keeps being accepted while the spool stays small."""
    with Fixture() as fx:
        auth, proxy, member = big_chain(
            fx, proxy_extra={"store": {"max_size": "1MiB"}})
        rounds, per = 40, 1000
        for i in range(rounds):
            r = proxy.usage(member, plain("s%d" % i, per))
            assert r.status == 202, (i, r)
            assert r.json() == {"accepted": per, "duplicates": 0}, (i, r)
            wait_for(lambda: usage_counts(proxy) == (0, (i + 1) * per),
                     10, step=0.05, what="spool drained after round %d" % i)
        wait_drained(proxy, rounds * per)
        pruned = proxy.metrics()["licproxy_usage_dedup_pruned_total"]
        print("%d records through a 1 MiB store, %d de-dup entries "
              "pruned early" % (rounds * per, pruned))
        assert pruned > 0
        wait_ledger(auth, rounds * per, 20)
        # The newest entries are still there: a retry is a duplicate.
        accepted(proxy.usage(member, plain("s%d" % (rounds - 1), per)),
                 0, per)
        body = proxy.status("/metrics").body
        assert "# HELP licproxy_usage_dedup_pruned_total " in body
        assert "# TYPE licproxy_usage_dedup_pruned_total counter" in body


def test_dedup_window_expires():
    """Within usage.dedup_window a re-sent record is a duplicate; after it
    the proxy books it again (the authority's ledger still holds it once)."""
    with Fixture() as fx:
        auth, proxy, member = big_chain(
            fx, proxy_extra={"usage": {"dedup_window": "2s"}})
        rec = plain("w", 1)
        accepted(proxy.usage(member, rec), 1)
        accepted(proxy.usage(member, rec), 0, 1)
        time.sleep(3.2)
        accepted(proxy.usage(member, rec), 1)
        accepted(proxy.usage(member, rec), 0, 1)
        wait_drained(proxy, 2)
        assert ledger_records(auth) == 1
        # Expiry is not a pressure drop.
        assert proxy.metrics()["licproxy_usage_dedup_pruned_total"] == 0


def test_dedup_window_config_checked():
    with Fixture() as fx:
        pki = fx.add(Pki())
        srv = fx.add(Server(pki, "authority",
                            extra={"usage": {"dedup_window": "soon"}}))
        srv.write_conf()
        p = run("check-config", srv.conf_path, check=False)
        assert p.returncode == 2, p
        assert "usage.dedup_window" in p.stderr + p.stdout, p


def test_quantity_bounds():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority"))
        member = auth.create_key(name="svc", products="engine")
        auth.start()
        r = auth.usage(member, plain("huge", 2, q=1.79e308))
        assert r.status == 400, r
        assert r.json()["error"] == "bad_request", r
        assert "records[0].quantity" in r.json()["message"], r
        r = auth.usage(member, plain("ok", 1) + plain("over", 1,
                                                      q=1000000000000.5))
        assert r.status == 400 and "records[1].quantity" in \
            r.json()["message"], r
        assert ledger(auth) == {}
        for i in range(3):
            accepted(auth.usage(member, plain("t%d" % i, 1000, q=1e12)),
                     1000)
        assert ledger(auth) == {(key_id(member), "engine", "calls"):
                                (3e15, 3000)}
        out = run("usage", "--store", auth.store).stdout
        assert "3000000000000000.000" in out, out


def test_ts_must_name_a_real_date():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority"))
        member = auth.create_key(name="svc", products="engine")
        auth.start()
        for bad in ("2026-02-30T00:00:00Z", "2023-02-29T12:00:00Z",
                    "1969-12-31T23:59:59Z", "2026-04-31T00:00:00Z",
                    "2026-11-26T24:00:00Z", "2026-11-26T16:00:60Z",
                    "2026-11-26T23:59:60Z", "1970-01-01T00:00:00+01:00"):
            r = auth.usage(member, plain("ok", 1) + plain("bad", 1, ts=bad))
            assert r.status == 400, (bad, r)
            assert "records[1].ts" in r.json()["message"], (bad, r)
        assert ledger(auth) == {}
        good = ["2024-02-29T00:00:00Z", "2000-02-29T23:59:59.5+02:00",
                "2016-12-31T23:59:60Z", "1970-01-01T00:00:00Z"]
        recs = []
        for i, ts in enumerate(good):
            recs += plain("good%d" % i, 1, ts=ts)
        accepted(auth.usage(member, recs), len(good))


class Tmpfs:
    """A small tmpfs mounted at a temp dir (root only)."""

    def __init__(self, size):
        self.dir = tempfile.mkdtemp(prefix="lp-tmpfs-")
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size,
                            "tmpfs", self.dir], capture_output=True,
                           text=True)
        self.mounted = p.returncode == 0
        self.error = (p.stderr or p.stdout).strip()

    def cleanup(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.dir], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def test_disk_full_is_507_and_nothing_acknowledged_is_lost():
    with Fixture() as fx:
        mnt = fx.add(Tmpfs("2m"))
        if not mnt.mounted:
            print("SKIP: cannot mount a tmpfs here (%s)" % mnt.error)
            return
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority", workers=1, extra={
            "store": {"max_size": "64MiB"}}))
        auth.store = os.path.join(mnt.dir, "store")
        auth.conf["store"]["path"] = auth.store
        member = auth.create_key(name="svc", products="engine")
        auth.start()
        assert auth.license(member).status == 200
        acked, codes = 0, []
        for i in range(60):
            r = auth.usage(member, plain("f%d" % i, 1000))
            codes.append(r.status)
            if r.status == 202:
                acked += r.json()["accepted"]
                continue
            assert r.status == 507, (i, r, codes)
            assert r.json()["error"] == "spool_full", r
            break
        print("disk full after %d records; codes %s" % (acked, codes))
        assert codes[-1] == 507, codes
        assert acked > 0
        # Still full, still 507; leases are still served from the store.
        assert auth.usage(member, plain("again", 1000)).status == 507
        r = auth.license(member)
        assert r.status == 200, r
        assert ledger_records(auth) == acked
        assert "No space left on device (free disk space under " \
            "store.path)" in auth.logs(), auth.logs()[-3000:]
        assert " 500 " not in auth.logs()


def test_product_must_be_licensed_for_the_key():
    """A record for a product the caller's key is not licensed for is a
    400 naming records[i].product; nothing of that request is kept, at the
    proxy and at the authority alike."""
    with Fixture() as fx:
        auth, proxy, member = big_chain(fx)
        for srv in (proxy, auth):
            batch = plain("lic-%s" % srv.mode, 3)
            batch[1]["product"] = "api"    # the key has engine, p*32
            r = srv.usage(member, batch)
            assert r.status == 400, r
            j = r.json()
            assert j["error"] == "bad_request", j
            assert "records[1].product" in j["message"], j
            assert "not licensed for this key" in j["message"], j
            accepted(srv.usage(member, plain("lic-%s" % srv.mode, 3)), 3)
        wait_ledger(auth, 6, 30)

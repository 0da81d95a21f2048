"""The time rule of SPEC 2 ("Time", issue 8 items 4 and 5): a lease lasts
expires_at - issued_at of real elapsed time after it was received, whatever
the wall clock says. The wall clock of a running proxy or authority is moved
with libfaketime's FAKETIME_TIMESTAMP_FILE; FAKETIME_DONT_FAKE_MONOTONIC=1
keeps CLOCK_BOOTTIME and CLOCK_MONOTONIC real, so only the wall clock
moves."""
import os
import shutil
import tempfile
import time

from lp import Fixture, Pki, run, wait_for, key_id, fake_key
from test_proxy import (FAKETIME_LIB, TempDir, authority, proxy, finish,
                        lic_total)

# Below the 2-day glitch, so a lease dated by a stuck mark looks expired.
SHORT_TTL = "1h"


class FakeClock:
    """The wall-clock offset of the processes started with .env."""

    def __init__(self):
        assert os.path.exists(FAKETIME_LIB), FAKETIME_LIB
        self.dir = tempfile.mkdtemp(prefix="lp-clock-")
        self.path = os.path.join(self.dir, "offset")
        self.set("+0")
        self.env = {"LD_PRELOAD": FAKETIME_LIB,
                    "FAKETIME_TIMESTAMP_FILE": self.path,
                    "FAKETIME_NO_CACHE": "1",
                    "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def set(self, offset):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(offset + "\n")
        os.rename(tmp, self.path)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def faked(srv, clock):
    srv.env = dict(srv.env, **clock.env)
    return srv


def state(srv):
    return srv.status_json()["state"]


def cached(srv):
    return srv.status_json()["leases"]["cached"]


def test_clock_set_back_cannot_extend_lease():
    """Upstream down, proxy clock set back 1 h: the cached lease stops
    validating once lease_ttl (6 s) of real time has passed since it was
    fetched, and stays refused after a restart in the same boot with the
    clock still set back."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        clock = fx.add(FakeClock())
        auth = authority(fx, pki, lease_refresh="2s", lease_ttl="6s")
        pkey = auth.create_key(name="proxy", role="proxy")
        key = auth.create_key()
        auth.start()
        p = faked(proxy(fx, pki, [auth.url], pkey, sync_interval="1s"),
                  clock).start()
        r = p.license(key)
        assert r.status == 200 and r.json()["source"] == "upstream", r
        fetched = time.time()
        # Let the uplink's tick record the real time in the store first.
        time.sleep(1.5)
        assert auth.stop() == 0
        clock.set("-1h")
        r = p.license(key)
        assert r.status == 200 and r.json()["source"] == "cache", r
        wait_for(lambda: p.license(key).status == 503, timeout=12,
                 what="the lease to end after 6 s of real time")
        age = time.time() - fetched
        assert 5 <= age <= 10, age
        wait_for(lambda: cached(p) == 0, timeout=3, what="status count")
        assert state(p) == "Disconnected", p.status_json()

        assert p.stop() == 0
        p.start()
        r = p.license(key)
        assert r.status == 503, r
        assert r.json()["error"] == "upstream_unavailable", r
        st = p.status()
        assert st.json()["leases"]["cached"] == 0, st
        assert st.json()["state"] == "Disconnected" and st.status == 503, st
        finish(fx)


def test_forward_glitch_is_forgotten():
    """Proxy clock +2 days for ~3 s, then corrected: within one
    sync_interval (2 s) new keys validate via upstream, cached keys keep
    validating and the status is Connected with those leases counted.
    During the glitch a refused key is never reported as Connected."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        clock = fx.add(FakeClock())
        auth = authority(fx, pki, lease_refresh="60s", lease_ttl=SHORT_TTL)
        pkey = auth.create_key(name="proxy", role="proxy")
        keys = [auth.create_key(name="k%d" % i) for i in range(3)]
        auth.start()
        p = faked(proxy(fx, pki, [auth.url], pkey, sync_interval="2s"),
                  clock).start()
        assert p.license(keys[0]).status == 200
        clock.set("+2d")
        t_end = time.time() + 3
        while time.time() < t_end:
            # Sampled before and after the request: if the key was
            # refused, the proxy must not have claimed Connected all along.
            before = state(p)
            r = p.license(keys[1])
            after = state(p)
            if r.status != 200:
                assert not (before == after == "Connected"), (r, before)
            time.sleep(0.2)
        clock.set("+0")
        corrected = time.time()
        # Within one sync_interval (2 s) plus a tick of slack.
        deadline = corrected + 3
        while True:
            r = p.license(keys[2])
            if r.status == 200:
                break
            assert time.time() < deadline, (r, p.logs()[-3000:])
            time.sleep(0.2)
        assert r.json()["source"] == "upstream", r
        for k in keys:
            r = p.license(k)
            assert r.status == 200, r
        assert "refused" not in p.logs(), "a lease was refused"
        wait_for(lambda: state(p) == "Connected" and cached(p) >= 4,
                 timeout=corrected + 3 - time.time() + 1,
                 what="Connected with 4 leases (3 keys + own)")
        assert p.status("/readyz").status == 200
        finish(fx)


def test_authority_glitch_does_not_delay_revocation():
    """Authority clock +2 days while a proxy fetches a lease (so it is dated
    two days ahead), then corrected; the key is revoked: the proxy answers
    403 after about lease_refresh (2 s) of real time, not two days later."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        clock = fx.add(FakeClock())
        auth = faked(authority(fx, pki, lease_refresh="2s",
                               lease_ttl=SHORT_TTL), clock)
        pkey = auth.create_key(name="proxy", role="proxy")
        key = auth.create_key()
        auth.start()
        p = proxy(fx, pki, [auth.url], pkey, sync_interval="1s").start()
        clock.set("+2d")
        # Let the authority's tick see the glitch, then fetch under it.
        time.sleep(1.5)
        r = p.license(key)
        assert r.status == 200 and r.json()["source"] == "upstream", r
        assert r.json()["issued_at"] > time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400)), r
        time.sleep(1.5)
        clock.set("+0")
        time.sleep(1.5)
        run("keys", "revoke", "--store", auth.store, key_id(key))
        revoked = time.time()
        # Refresh is due 2 s after receipt; one request triggers it in the
        # background, the next sees the rejection.
        deadline = revoked + 6
        while True:
            r = p.license(key)
            if r.status == 403:
                break
            assert r.status == 200, r
            assert time.time() < deadline, (r, p.logs()[-3000:])
            time.sleep(0.2)
        assert r.json()["reason"] == "revoked", r
        # A fresh key issued after the correction is dated by real time.
        k2 = auth.create_key(name="after")
        r = p.license(k2)
        assert r.status == 200, r
        assert r.json()["issued_at"] < time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)), r
        finish(fx)


def test_refused_upstream_is_not_connected():
    """An upstream that answers but whose every lease the proxy refuses
    (signed by a key not in trusted_keys) is not Connected: Disconnected,
    /readyz 503, last_error says why; trusting the key again (restart)
    makes it Connected within one sync_interval."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        tmp = fx.add(TempDir())
        other = os.path.join(tmp.path, "other.key")
        run("keygen", other)
        rogue = authority(fx, pki, name="rogue", signing_key=other)
        pkey = rogue.create_key(name="proxy", role="proxy")
        key = rogue.create_key()
        rogue.start()
        p = proxy(fx, pki, [rogue.url], pkey, sync_interval="1s").start()
        assert p.license(key).status == 503
        st = p.status()
        assert st.json()["state"] == "Disconnected", st
        assert st.status == 503, st
        assert "refused" in st.json()["upstream"]["last_error"], st
        assert p.status("/readyz").status == 503
        assert p.stop() == 0
        p.conf["license"]["trusted_keys"] = [other + ".pub"]
        p.start()
        wait_for(lambda: state(p) == "Connected", timeout=3,
                 what="Connected once its leases are cached")
        assert p.license(key).status == 200
        finish(fx)


def test_rejection_cached_during_glitch_is_forgotten():
    """A rejection cached while the proxy's clock is +2 days ahead lasts
    negative_ttl (2 s) of the corrected clock, not two days: the key is
    asked upstream again. (2 s, not 1: on a loaded CI machine the second
    request once came more than a second after the first.)"""
    with Fixture() as fx:
        pki = fx.add(Pki())
        clock = fx.add(FakeClock())
        auth = authority(fx, pki)
        pkey = auth.create_key(name="proxy", role="proxy")
        auth.start()
        p = faked(proxy(fx, pki, [auth.url], pkey, negative_ttl="2s"),
                  clock).start()
        unknown = fake_key("glitch")
        clock.set("+2d")
        r = p.license(unknown)
        assert r.status == 403 and r.json()["reason"] == "unknown", r
        asked = lic_total(auth)
        assert p.license(unknown).status == 403
        assert lic_total(auth) == asked, "the rejection was not cached"
        clock.set("+0")
        time.sleep(2.5)
        assert p.license(unknown).status == 403
        assert lic_total(auth) == asked + 1, "still the glitch's rejection"
        finish(fx)

"""Binary upgrade (SPEC section 6, USR2): the master re-executes the binary
at its path, same pid, listeners kept, the old children drained; a new
binary that cannot start leaves the old generation serving."""
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time

import lp
from lp import Fixture, Pki, Server, wait_for

CLIENTS_KEEPALIVE = 56
CLIENTS_FRESH = 8


class Load:
    """64 client threads asking GET /v1/license: most on one keep-alive
    connection each, some on a fresh connection per request. Every request
    that does not end in a 200 is a failure."""

    def __init__(self, srv, key, fresh_keys=()):
        self.srv, self.key = srv, key
        self.stop = threading.Event()
        self.ok = 0
        self.failed = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(
            i < CLIENTS_KEEPALIVE,)) for i in range(
            CLIENTS_KEEPALIVE + CLIENTS_FRESH)]
        # Misses too: each of these keys is asked for once, so every one
        # goes through the uplink/issuer across the upgrade.
        self.fresh_keys = list(fresh_keys)
        if self.fresh_keys:
            self.threads.append(threading.Thread(target=self.run, args=(
                True, self.fresh_keys)))

    def run(self, keepalive, keys=None):
        conn = self.srv.conn(timeout=10) if keepalive else None
        while not self.stop.is_set() and (keys is None or keys):
            try:
                key = self.key if keys is None else keys.pop(0)
                r = self.srv.license(key, conn=conn)
                err = None if r.status == 200 else repr(r)
            except Exception as e:  # noqa: BLE001 - every error counts
                err = "%s: %s" % (type(e).__name__, e)
                if conn is not None:
                    conn.close()
            with self.lock:
                if err is None:
                    self.ok += 1
                else:
                    self.failed.append(err)
            # Misses paced so that they last through the hand-over.
            time.sleep(0.01 if keys is None else 0.03)
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        wait_for(lambda: self.ok >= 200, what="load running")
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(15)
        return False


def served_copy(fx):
    """A copy of the binary in a temp dir: the path the server runs from."""
    d = tempfile.mkdtemp(prefix="lp-upgrade-bin-")
    fx.add(type("Dir", (), {"cleanup": lambda self: shutil.rmtree(
        d, ignore_errors=True)})())
    path = os.path.join(d, "licproxy")
    shutil.copy2(lp.BIN, path)
    return path


def replace(path, data=None):
    """Install a new file at path the way dpkg and rpm do: write beside
    it, then rename over it (the running binary cannot be written)."""
    tmp = path + ".new"
    if data is None:
        shutil.copy2(lp.BIN, tmp)
    else:
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o755)
    os.rename(tmp, path)
    return os.stat(path).st_ino


def exe_inode(pid):
    return os.stat("/proc/%d/exe" % pid).st_ino


def start_served(fx, path, workers=2, nkeys=0):
    pki = fx.add(Pki("upgrade"))
    srv = fx.add(Server(pki, "authority", workers=workers, extra={
        "server": {"drain_timeout": "5s"}}))
    key = srv.create_key()
    srv.fresh_keys = [srv.create_key(name="k%d" % i) for i in range(nkeys)]
    saved, lp.BIN = lp.BIN, path
    try:
        srv.start()
    finally:
        lp.BIN = saved
    return srv, key


def start_proxy(fx, path, workers=2):
    """A proxy (served from path) in front of an authority."""
    pki = fx.add(Pki("upgrade"))
    auth = fx.add(Server(pki, "authority", workers=1))
    pkey = auth.create_key(name="proxy", role="proxy")
    key = auth.create_key()
    fresh = [auth.create_key(name="k%d" % i) for i in range(100)]
    auth.start()
    srv = fx.add(Server(pki, "proxy", workers=workers, env={
        "LICPROXY_LICENSE_KEY": pkey}, extra={
        "server": {"drain_timeout": "5s"},
        "license": {"server_url": [auth.url], "ca_file": pki.ca,
                    "trusted_keys": [pki.pub]}}))
    srv.fresh_keys = fresh
    saved, lp.BIN = lp.BIN, path
    try:
        srv.start()
    finally:
        lp.BIN = saved
    return srv, key


def test_usr2_upgrade_fails_no_request():
    with Fixture() as fx:
        path = served_copy(fx)
        srv, key = start_served(fx, path, workers=2, nkeys=150)
        upgrade_under_load(srv, key, path, "licproxy-issuer",
                           srv.fresh_keys)
        assert srv.stop() == 0


def test_usr2_upgrade_proxy_fails_no_request():
    with Fixture() as fx:
        path = served_copy(fx)
        srv, key = start_proxy(fx, path, workers=2)
        upgrade_under_load(srv, key, path, "licproxy-uplink",
                           srv.fresh_keys)
        assert srv.status_json()["state"] == "Connected"
        assert srv.stop() == 0


def upgrade_under_load(srv, key, path, backend, fresh_keys=()):
    """Replace the binary under 64 clients and send USR2: no request fails,
    same master, every child new and running the new file."""
    master = srv.proc.pid
    # ready once the status port answers; the full set of children may
    # take a moment longer on a slow (sanitizer) build
    wait_for(lambda: len(srv.children()) == 3,
             what="3 children (now %r)" % srv.children_by_comm())
    old = srv.children()
    old_ino = exe_inode(master)
    with Load(srv, key, fresh_keys) as load:
        if fresh_keys:
            # some misses asked before the upgrade (on a busy machine the
            # clients can take a while to get to them)
            wait_for(lambda: len(load.fresh_keys) < len(fresh_keys),
                     what="misses before the upgrade")
        new_ino = replace(path)
        assert new_ino != old_ino
        before = load.ok
        misses_left = len(load.fresh_keys)
        srv.proc.send_signal(signal.SIGUSR2)
        wait_for(lambda: "upgraded to" in srv.logs(), what="upgrade")
        # Old children drain while the new ones serve.
        wait_for(lambda: not set(old) & set(srv.children()), timeout=10,
                 what="old children gone")
        wait_for(lambda: len(srv.children()) == 3, what="new children")
        after = load.ok
        time.sleep(0.5)
    assert load.failed == [], load.failed[:5]
    assert load.ok > after > before, (before, after, load.ok)
    if fresh_keys:
        # Misses were asked before, during and after the upgrade.
        assert len(fresh_keys) > misses_left > len(load.fresh_keys), (
            len(fresh_keys), misses_left, len(load.fresh_keys))
    assert srv.proc.poll() is None
    assert srv.proc.pid == master
    assert exe_inode(master) == new_ino, "master runs the new binary"
    kids = srv.children_by_comm()
    assert len(kids.get("licproxy-worker", [])) == 2, kids
    assert len(kids.get(backend, [])) == 1, kids
    for pid in srv.children():
        assert pid not in old
        assert exe_inode(pid) == new_ino, pid
    # No child was counted as crashed, and the figures carried on.
    m = srv.metrics()
    for role in ("worker", "uplink", "issuer"):
        assert m['licproxy_process_restarts_total{role="%s"}' % role] == 0
    served = sum(v for k, v in m.items() if k.startswith(
        'licproxy_requests_total{endpoint="/v1/license",code="200"'))
    assert served >= before, (served, before)
    assert srv.license(key).status == 200


def check_refused(srv, key, path, data, reason):
    master = srv.proc.pid
    old = srv.children()
    old_ino = exe_inode(master)
    with Load(srv, key) as load:
        replace(path, data)
        n = srv.logs().count("upgrade failed")
        srv.proc.send_signal(signal.SIGUSR2)
        wait_for(lambda: srv.logs().count("upgrade failed") > n,
                 what="upgrade refused")
        time.sleep(0.5)
    assert load.failed == [], load.failed[:5]
    assert srv.proc.poll() is None and srv.proc.pid == master
    assert exe_inode(master) == old_ino, "still the old image"
    assert srv.children() == old, "the old generation keeps serving"
    assert reason in srv.logs(), srv.logs()[-2000:]
    assert srv.license(key).status == 200


def test_usr2_broken_binary_keeps_old_generation():
    with Fixture() as fx:
        path = served_copy(fx)
        srv, key = start_served(fx, path, workers=1)
        check_refused(srv, key, path, b"#!/bin/sh\nexit 1\n",
                      "check-config exited with 1")
        with open(lp.BIN, "rb") as f:
            truncated = f.read(4096)
        check_refused(srv, key, path, truncated, "upgrade: %s" % path)
        # Mode bits gone: exec refused.
        replace(path)
        os.chmod(path, stat.S_IRUSR)
        n = srv.logs().count("upgrade failed")
        srv.proc.send_signal(signal.SIGUSR2)
        wait_for(lambda: srv.logs().count("upgrade failed") > n,
                 what="upgrade refused")
        assert srv.license(key).status == 200
        # Fixed: the next USR2 upgrades.
        os.chmod(path, 0o755)
        srv.proc.send_signal(signal.SIGUSR2)
        wait_for(lambda: "upgraded to" in srv.logs(), what="upgrade")
        assert srv.license(key).status == 200
        assert srv.stop() == 0


def test_term_during_a_hung_upgrade_check_exits_in_time():
    """A new binary whose check-config hangs (here: sleeps 30 s) must not
    hold a stop up: TERM during that check still ends the master within
    SPEC's 10 s (the old code waited the check's 10 s out first)."""
    with Fixture() as fx:
        path = served_copy(fx)
        srv, key = start_served(fx, path, workers=1)
        replace(path, b"#!/bin/sh\nsleep 30\n")
        srv.proc.send_signal(signal.SIGUSR2)
        # a script exec'd keeps its file's name as comm
        wait_for(lambda: "licproxy" in srv.children_by_comm(),
                 what="the new binary's check to run")
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        rc = srv.proc.wait(15)
        took = time.monotonic() - t0
        assert rc == 0, srv.logs()[-2000:]
        assert took < 8, took
        assert "check-config abandoned: stopping" in srv.logs(), \
            srv.logs()[-2000:]


def test_usr2_bad_config_keeps_old_generation():
    with Fixture() as fx:
        path = served_copy(fx)
        srv, key = start_served(fx, path, workers=1)
        with open(srv.conf_path, "a") as f:
            f.write("bogus_key: 1\n")
        check_refused(srv, key, path, None, "bogus_key")
        assert srv.stop() == 0


def test_usr2_unopenable_log_file_keeps_old_generation():
    """A log.file the master cannot open is a configuration error, so the
    new binary's check-config refuses the upgrade and the running binary
    keeps serving (as a reload to it is refused), rather than an upgraded
    image that would log to the old file."""
    with Fixture() as fx:
        path = served_copy(fx)
        srv, key = start_served(fx, path, workers=1)
        srv.conf["log"]["file"] = os.path.join(srv.dir, "no", "such.log")
        srv.write_conf()
        check_refused(srv, key, path, None, "log.file: cannot open")
        assert srv.stop() == 0


def test_package_upgrade_script():
    """packaging/upgrade-running (what postinst / %post run) sends USR2 to
    a master that handles it, and refuses a process that would die of it
    (a master older than USR2 upgrades: the packages restart that one)."""
    script = os.path.join(os.path.dirname(lp.__file__), "..", "..",
                          "packaging", "upgrade-running")
    with Fixture() as fx:
        path = served_copy(fx)
        srv, key = start_served(fx, path, workers=1)
        master = srv.proc.pid
        new_ino = replace(path)
        out = subprocess.run([script, str(master)], capture_output=True,
                             text=True, timeout=10)
        assert out.returncode == 0, out
        wait_for(lambda: "upgraded to" in srv.logs(), what="upgrade")
        assert exe_inode(master) == new_ino
        r = srv.license(key)
        assert r.status == 200, (r, srv.logs()[-3000:])
        assert srv.stop() == 0
    other = subprocess.Popen(["sleep", "30"])
    try:
        out = subprocess.run([script, str(other.pid)], capture_output=True,
                             text=True, timeout=10)
        assert out.returncode == 3, out
        assert other.poll() is None, "USR2 sent to a process without it"
    finally:
        other.kill()
        other.wait()


def test_hup_reload_misses_fail_no_request():
    """The reload path the upgrade shares: uncached keys asked across a
    HUP all get 200 (the new workers reach only the new issuer, and the
    old issuer stays until the old workers are gone)."""
    with Fixture() as fx:
        pki = fx.add(Pki("upgrade"))
        srv = fx.add(Server(pki, "authority", workers=2, extra={
            "server": {"drain_timeout": "5s"}}))
        key = srv.create_key()
        fresh = [srv.create_key(name="k%d" % i) for i in range(150)]
        srv.start()
        old = srv.children()
        with Load(srv, key, fresh) as load:
            # misses under way before the HUP (a busy machine starts late)
            wait_for(lambda: len(load.fresh_keys) < len(fresh), timeout=10,
                     what="the load to start on fresh keys")
            misses_left = len(load.fresh_keys)
            srv.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: not set(old) & set(srv.children()), timeout=10,
                     what="old children gone")
            time.sleep(0.5)
        assert load.failed == [], load.failed[:5]
        assert len(fresh) > misses_left > len(load.fresh_keys), (
            len(fresh), misses_left, len(load.fresh_keys))
        assert srv.stop() == 0

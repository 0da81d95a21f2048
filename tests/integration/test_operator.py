"""What an operator reads: the access log (text, JSON, never blocking the
worker), upstream transitions told once each way, and the survival time in
/v1/status, /metrics, the log and `licproxy status` (SPEC sections 4, 9)."""
import json
import os
import re
import select
import subprocess
import tempfile
import threading
import time

from lp import Fixture, Pki, Server, run, wait_for, key_id

FIELDS = ["ts", "remote", "method", "path", "status", "bytes", "us",
          "key_id", "instance", "source"]
TEXT = re.compile(r'^(\S+Z) (\S+) (\S+) "([^"]*)" (\d+) (\d+) (\d+) (\S+) '
                  r'(\S+) (\S+)$')


def pair(fx, pki, auth_extra=None, lic=None, log=None, workers=2):
    auth = fx.add(Server(pki, "authority", extra=auth_extra))
    auth.start()
    relay = auth.create_key(name="relay", role="proxy")
    conf = {"server_url": [auth.url], "ca_file": pki.ca,
            "trusted_keys": [pki.pub], "timeout": "1s"}
    conf.update(lic or {})
    extra = {"license": conf}
    if log:
        extra["log"] = log
    proxy = fx.add(Server(pki, "proxy", name="proxy", extra=extra,
                          workers=workers,
                          env={"LICPROXY_LICENSE_KEY": relay}))
    return auth, proxy


def requests(proxy, key):
    c = proxy.conn()
    try:
        assert proxy.license(key, conn=c, headers={
            "X-Instance-Id": "engine-7"}).status == 200
        assert proxy.license(key, conn=c).status == 200
        assert proxy.request("GET", "/v1/license", conn=c).status == 401
        assert proxy.request("GET", "/no/such\"path", key=key,
                             conn=c).status == 404
    finally:
        c.close()
    assert proxy.status("/healthz").status == 200


def access_lines(proxy, parse):
    out = []
    for line in proxy.logs().splitlines():
        rec = parse(line)
        if rec is not None:
            out.append(rec)
    return out


def text_rec(line):
    m = TEXT.match(line)
    return dict(zip(FIELDS, m.groups())) if m else None


def json_rec(line):
    try:
        j = json.loads(line)
    except ValueError:
        return None
    return j if "remote" in j else None


def check_records(recs, key, absent):
    kid = key_id(key)
    assert [r["status"] for r in recs] == ["200", "200", "401", "404"] or \
        [r["status"] for r in recs] == [200, 200, 401, 404], recs
    first, second, nokey, other = recs
    assert first["source"] == "upstream" and second["source"] == "cache"
    for r in recs:
        assert r["remote"] == "127.0.0.1" and r["method"] == "GET", r
        assert int(r["bytes"]) > 0 and int(r["us"]) >= 0, r
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$",
                        r["ts"]), r
    assert first["key_id"] == kid and first["instance"] == "engine-7"
    assert second["instance"] == absent
    assert nokey["key_id"] == absent and nokey["source"] == absent
    assert other["source"] == absent and other["key_id"] == kid
    return other


def test_access_log_text():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth, proxy = pair(fx, pki, log={"access": "true", "level": "warn"})
        proxy.start()
        key = auth.create_key(name="svc")
        requests(proxy, key)
        recs = wait_for(lambda: len(access_lines(proxy, text_rec)) >= 4 and
                        access_lines(proxy, text_rec), what="access lines")
        other = check_records(recs, key, "-")
        assert other["path"] == "/no/such\\x22path", other
        assert key not in proxy.logs()
        # the status port is not logged, and the others only once each
        assert len(recs) == 4, recs


def test_access_log_json_and_off_by_default():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth, proxy = pair(fx, pki, log={"access": "true", "format": "json",
                                         "level": "warn"})
        proxy.start()
        key = auth.create_key(name="svc")
        requests(proxy, key)
        recs = wait_for(lambda: len(access_lines(proxy, json_rec)) >= 4 and
                        access_lines(proxy, json_rec), what="access lines")
        for r in recs:
            assert list(r) == FIELDS, r
        other = check_records(recs, key, None)
        assert other["path"] == '/no/such"path', other
        assert key not in proxy.logs()
        # off by default: the authority logged no request
        assert access_lines(auth, json_rec) == []
        assert access_lines(auth, text_rec) == []
        bad = Server(pki, "proxy", extra={"log": {"access": "yes"}})
        try:
            bad.write_conf()
            p = run("check-config", bad.conf_path, check=False)
        finally:
            bad.cleanup()
        assert p.returncode == 2 and "log.access" in p.stderr, p.stderr


def test_access_log_never_shows_a_key_in_the_path():
    """A client that puts its key in the path (GET /KEY, a 404) does not
    get it into the access log: a run of 40 or more letters and digits is
    written [redacted]; a shorter one is kept."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth, proxy = pair(fx, pki, log={"access": "true", "level": "warn"})
        proxy.start()
        key = auth.create_key(name="svc")
        paths = ["/" + key, "/v1/license/" + key + "x/y", "/a-" + key[:39]]
        for path in paths:
            assert proxy.request("GET", path, key=key).status == 404
        recs = wait_for(lambda: len(access_lines(proxy, text_rec)) >= 3 and
                        access_lines(proxy, text_rec), what="access lines")
        # two workers log them, so in either order
        assert sorted(r["path"] for r in recs) == sorted([
            "/[redacted]", "/v1/license/[redacted]/y", "/a-" + key[:39]]), recs
        assert key not in proxy.logs()


def test_access_log_never_blocks_the_worker():
    """The log is a pipe nobody reads: requests go on, lines are whole."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        d = tempfile.mkdtemp(prefix="lp-fifo-")
        fifo = os.path.join(d, "log")
        os.mkfifo(fifo)
        rd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            auth, proxy = pair(fx, pki, log={"access": "true", "format":
                                             "json", "level": "error",
                                             "file": fifo}, workers=1)
            proxy.start()
            key = auth.create_key(name="svc")
            c = proxy.conn()
            t0 = time.time()
            for _ in range(3000):    # far more than a 64 KiB pipe holds
                assert proxy.license(key, conn=c).status == 200
            took = time.time() - t0
            c.close()
            assert took < 60, took
            data = b""
            while select.select([rd], [], [], 0.5)[0]:
                chunk = os.read(rd, 65536)
                if not chunk:
                    break
                data += chunk
            lines = data.decode().splitlines()
            assert len(lines) > 100, len(lines)
            for line in lines:
                assert json.loads(line)["status"] == 200, line
        finally:
            os.close(rd)


def test_access_log_file_lines_whole_and_all_there():
    """log.file is a regular file: lines leave in large appends, yet under
    concurrent load from both workers every request has one whole line."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        d = tempfile.mkdtemp(prefix="lp-acc-")
        path = os.path.join(d, "access.log")
        auth, proxy = pair(fx, pki, log={"access": "true", "format": "json",
                                         "level": "error", "file": path})
        proxy.start()
        key = auth.create_key(name="svc")
        assert proxy.license(key).status == 200
        bad = []

        def client(n):
            c = proxy.conn()
            try:
                for _ in range(n):
                    r = proxy.license(key, conn=c)
                    if r.status != 200:
                        bad.append(r.status)
            finally:
                c.close()
        ts = [threading.Thread(target=client, args=(400,)) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert bad == [], bad

        def lines():
            with open(path) as f:
                return f.read().splitlines()
        # all there while the server runs (the log lingers 10 ms at most)
        got = wait_for(lambda: len(lines()) >= 3201 and lines(),
                       what="3201 access lines")
        assert len(got) == 3201, len(got)
        for line in got:
            assert json.loads(line)["status"] == 200, line


def test_access_log_on_a_full_disk_never_stalls_and_is_counted():
    """log.file on a disk that fills up: every request is still answered,
    the lines that find no room wait (up to 1 MiB) and past that are
    dropped and counted in licproxy_access_log_dropped_total; once there
    is room again the waiting lines are written, each whole. Lines in the
    file plus lines counted dropped are all the requests: none lost
    unsaid."""
    d = tempfile.mkdtemp(prefix="lp-full-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", d],
                   check=True)
    try:
        path = os.path.join(d, "access.log")
        filler = os.path.join(d, "filler")
        with open(filler, "wb") as f:   # leave ~64 KiB free
            f.write(b"x" * (2 * 1024 * 1024 - 64 * 1024))
        with Fixture() as fx:
            pki = fx.add(Pki())
            srv = fx.add(Server(pki, "authority", workers=1, extra={"log": {
                "access": "true", "format": "json", "level": "error",
                "file": path}}))
            srv.start()
            key = srv.create_key(name="svc")
            dropped = "licproxy_access_log_dropped_total"
            assert srv.metrics()[dropped] == 0
            bad, sent = [], [0]

            def client(n):
                c = srv.conn()
                try:
                    for _ in range(n):
                        r = srv.license(key, conn=c)
                        sent[0] += 1
                        if r.status != 200:
                            bad.append(r.status)
                finally:
                    c.close()
            # ~64 KiB of room, then 1 MiB waiting: ~5,000 lines of ~230
            # bytes; then more, which are dropped
            while srv.metrics()[dropped] < 500:
                ts = [threading.Thread(target=client, args=(500,))
                      for _ in range(4)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                assert bad == [], bad
                assert sent[0] < 40000, "nothing was dropped"
            assert os.statvfs(d).f_bavail == 0
            os.unlink(filler)           # room again

            def lines():
                with open(path) as f:
                    return f.read().splitlines()

            # what waited goes out (it is retried every 50 ms)
            def settled(seen=[-1]):
                n, seen[0] = seen[0], os.path.getsize(path)
                time.sleep(0.3)
                return n == seen[0]
            wait_for(settled, timeout=20, what="the waiting lines written")
            # the status port is not logged: one TLS request marks the end
            assert srv.license(key, headers={"X-Instance-Id": "last"}
                               ).status == 200
            sent[0] += 1
            got = wait_for(lambda: any('"last"' in ln for ln in lines())
                           and lines(), timeout=20, what="the last line")
            recs = [json.loads(ln) for ln in got]   # each line whole
            assert all(r["status"] == 200 for r in recs)
            assert recs[-1]["instance"] == "last", recs[-1]
            gone = srv.metrics()[dropped]
            assert len(recs) + gone == sent[0], (len(recs), gone, sent[0])
    finally:
        subprocess.run(["umount", "-l", d])
        os.rmdir(d)


def test_upstream_lost_and_back_told_once_with_survival():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth, proxy = pair(fx, pki,
                           auth_extra={"authority": {"lease_ttl": "50m"}},
                           lic={"sync_interval": "500ms"},
                           log={"level": "info"})
        proxy.start()
        key = auth.create_key(name="svc")
        assert proxy.license(key).status == 200
        # the uplink's 1 s tick counts the store
        st = wait_for(lambda: proxy.status_json()["survival_s"] and
                      proxy.status_json(), what="survival_s")
        assert st["state"] == "Connected"
        # two leases of 50 min: the proxy's own and the client's
        assert 2900 < st["survival_s"] <= 3000, st
        auth.stop()
        wait_for(lambda: proxy.status_json()["state"] == "TrustBased",
                 timeout=10, what="TrustBased")
        time.sleep(3)    # several failed attempts at 500 ms
        logs = proxy.logs()
        assert len(re.findall(r"upstream lost \(", logs)) == 1, logs
        assert len(re.findall(r"less than 24 h", logs)) == 1, logs
        assert len(re.findall(r"less than 1 h", logs)) == 1, logs
        st = proxy.status_json()
        assert 2800 < st["survival_s"] < 3000, st
        assert st["upstream"]["last_error"] and \
            st["upstream"]["last_error_at"], st
        m = proxy.metrics()
        assert m["licproxy_upstream_up"] == 0, m
        assert abs(m["licproxy_survival_seconds"] - st["survival_s"]) < 5
        out = run("status", "http://127.0.0.1:%d" % proxy.status_port).stdout
        assert "survival:  0d 00h 4" in out, out
        assert "last error at 20" in out, out
        auth.start()
        wait_for(lambda: "upstream reachable again after" in proxy.logs(),
                 timeout=10, what="recovery line")
        time.sleep(1.5)
        logs = proxy.logs()
        assert len(re.findall(r"upstream reachable again after \d+ s",
                              logs)) == 1, logs
        assert len(re.findall(r"upstream lost \(", logs)) == 1, logs
        assert proxy.metrics()["licproxy_upstream_up"] == 1


def test_startup_errors_at_error_level_then_exiting():
    """A port in use: error lines, a last "exiting" line, exit 1. A
    certificate that is not one: exit 2, the same last line."""
    import socket
    with Fixture() as fx:
        pki = fx.add(Pki())
        busy = socket.socket()
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        try:
            srv = fx.add(Server(pki, "authority"))
            srv.port = busy.getsockname()[1]
            srv.conf["server"]["port"] = srv.port
            srv.start(wait=False)
            assert srv.proc.wait(15) == 1
            lines = srv.logs().strip().splitlines()
            assert re.search(r" error: cannot listen on 127\.0\.0\.1:%d: "
                             r"Address already in use" % srv.port,
                             srv.logs()), srv.logs()
            assert lines[-1].endswith("error: exiting"), lines
        finally:
            busy.close()
        junk = os.path.join(fx.add(Server(pki, "authority")).dir, "c.pem")
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        srv = fx.add(Server(pki, "authority"))
        srv.conf["server"]["tls_cert"] = junk
        srv.start(wait=False)
        assert srv.proc.wait(15) == 2
        lines = srv.logs().strip().splitlines()
        assert " error: " in lines[-2] and "exiting" in lines[-1], lines

"""Operations and hardening on the real binary: supervision and back-off,
reload, graceful stop, sandbox, TLS policy, logging, request bounds,
the outbound proxy and systemd notification."""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import ssl
import threading
import time

from lp import (Fixture, Pki, Server, ConnectProxy, run, wait_for,
                raw_tls_version_refused, socket_owner, fake_key, key_id,
                free_port)

RECORD = {"id": "r-1", "product": "engine", "metric": "audio_seconds",
          "quantity": 12.5, "ts": "2026-11-26T16:00:00Z"}


def proxy_of(fx, auth, pki, key, extra=None, env=None, name="proxy"):
    conf = {"license": {"server_url": [auth.url], "ca_file": pki.ca,
                        "trusted_keys": [pki.pub]}}
    for k, v in (extra or {}).items():
        conf.setdefault(k, {}).update(v)
    e = {"LICPROXY_LICENSE_KEY": key}
    e.update(env or {})
    return fx.add(Server(pki, "proxy", extra=conf, env=e, name=name))


def restarts(srv, role):
    return srv.metrics().get(
        'licproxy_process_restarts_total{role="%s"}' % role)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def one_child(srv, comm_name, not_in=()):
    kids = [p for p in srv.children_by_comm().get(comm_name, [])
            if p not in not_in]
    return kids[0] if len(kids) == 1 else None


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()


def file_fingerprint(path):
    with open(path) as f:
        return fingerprint(ssl.PEM_cert_to_DER_cert(f.read()))


def peer_fingerprint(srv, ctx=None):
    c = srv.conn(ctx)
    try:
        c.connect()
        return fingerprint(c.sock.getpeercert(binary_form=True))
    finally:
        c.close()


def tls_socket(srv, ctx=None, timeout=10):
    ctx = ctx or srv.pki.context()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    return ctx.wrap_socket(s, server_hostname="localhost")


def read_response(s):
    """One HTTP/1.1 response from a socket: (status, headers, body), or
    None if the peer closed before sending anything."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(65536)
        if not b:
            if buf:
                raise AssertionError("truncated response head %r" % buf)
            return None
        buf += b
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, v = ln.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        b = s.recv(65536)
        if not b:
            raise AssertionError("truncated body %r" % body)
        body += b
    return status, headers, body.decode()


def log_lines_after(text, marker):
    i = text.find(marker)
    assert i >= 0, "no %r in log" % marker
    return text[i:]


# -- supervision --

def test_kill_worker_uplink_issuer_respawned_and_counted():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        auth = fx.add(Server(pki, "authority", workers=2))
        k1 = auth.create_key(name="a")
        k2 = auth.create_key(name="b")
        k3 = auth.create_key(name="c")
        pkey = auth.create_key(name="proxy", role="proxy")
        auth.start()
        proxy = proxy_of(fx, auth, pki, pkey, {"server": {"workers": 2}})
        proxy.start()
        assert proxy.license(k1).json()["source"] == "upstream"
        assert restarts(proxy, "worker") == 0
        assert restarts(proxy, "uplink") == 0

        # A worker of the proxy.
        victim = proxy.children_by_comm()["licproxy-worker"][0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len([p for p in proxy.children_by_comm().get(
            "licproxy-worker", []) if p != victim]) == 2,
            what="worker respawn")
        wait_for(lambda: restarts(proxy, "worker") == 1, what="counted")
        assert restarts(proxy, "uplink") == 0
        assert proxy.license(k1).json()["source"] == "cache"

        # The uplink: cached leases keep being served while it is gone,
        # and a miss is fetched through the new one.
        up = one_child(proxy, "licproxy-uplink")
        assert up is not None
        os.kill(up, signal.SIGKILL)
        r = proxy.license(k1)
        assert r.status == 200 and r.json()["source"] == "cache", r
        new_up = wait_for(lambda: one_child(proxy, "licproxy-uplink",
                                            not_in=(up,)),
                          what="uplink respawn")
        assert new_up != up and not alive(up)
        wait_for(lambda: restarts(proxy, "uplink") == 1, what="counted")
        assert restarts(proxy, "worker") == 1
        r = wait_for(lambda: (lambda r: r if r.status == 200 else None)(
            proxy.license(k2)), what="miss through the new uplink")
        assert r.json()["source"] == "upstream", r
        st = proxy.status_json()
        assert st["processes"]["uplink_alive"] is True
        assert st["processes"]["workers_alive"] == 2
        assert "uplink died on signal 9" in proxy.logs()
        assert "worker died on signal 9" in proxy.logs()

        # The authority's issuer.
        iss = one_child(auth, "licproxy-issuer")
        os.kill(iss, signal.SIGKILL)
        wait_for(lambda: one_child(auth, "licproxy-issuer", not_in=(iss,)),
                 what="issuer respawn")
        wait_for(lambda: restarts(auth, "issuer") == 1, what="counted")
        r = wait_for(lambda: (lambda r: r if r.status == 200 else None)(
            auth.license(k3)), what="lease from the new issuer")
        assert r.json()["source"] == "authority"
        assert restarts(auth, "worker") == 0
        assert proxy.stop() == 0
        assert auth.stop() == 0


def test_crash_loop_backs_off():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        srv = fx.add(Server(pki, "authority", workers=1))
        key = srv.create_key()
        srv.start()
        killed, gaps = [], []
        pid = one_child(srv, "licproxy-worker")
        for _ in range(5):
            os.kill(pid, signal.SIGKILL)
            t0 = time.monotonic()
            killed.append(pid)
            pid = wait_for(lambda: one_child(srv, "licproxy-worker",
                                             not_in=killed),
                           timeout=15, step=0.01, what="respawn")
            gaps.append((time.monotonic() - t0) * 1000)
        delays = [int(m) for m in re.findall(
            r"respawning licproxy-worker in (\d+)ms", srv.logs())]
        assert len(delays) == 5, (delays, srv.logs())
        assert all(b > a for a, b in zip(delays, delays[1:])), delays
        # The announced delay is really waited for.
        for d, g in zip(delays, gaps):
            assert g >= d, (delays, gaps)
        assert restarts(srv, "worker") == 5
        r = wait_for(lambda: (lambda r: r if r.status == 200 else None)(
            srv.license(key)), what="service after the crash loop")
        assert r.json()["key_id"] == key_id(key)
        assert srv.stop() == 0


# -- reload --

def test_hup_new_certificate_keepalive_survives():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        srv = fx.add(Server(pki, "authority", workers=2))
        key = srv.create_key()
        srv.start()
        old_cert = file_fingerprint(pki.cert)
        old = srv.conn()
        r = srv.license(key, conn=old)
        assert r.status == 200, r
        assert fingerprint(old.sock.getpeercert(True)) == old_cert
        old_serial = old.sock.getpeercert()["serialNumber"]
        old_workers = srv.children_by_comm()["licproxy-worker"]

        # Renew the certificate in place (same paths, new key and serial).
        pki.issue(pki.cert, pki.key, "localhost",
                  "subjectAltName=DNS:localhost,IP:127.0.0.1")
        new_cert = file_fingerprint(pki.cert)
        assert new_cert != old_cert
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: peer_fingerprint(srv) == new_cert,
                 what="new certificate on new connections")
        wait_for(lambda: all(peer_fingerprint(srv) == new_cert
                             for _ in range(6)),
                 what="only the new certificate")
        c = srv.conn()
        c.connect()
        assert c.sock.getpeercert()["serialNumber"] != old_serial
        r = srv.license(key, conn=c)
        c.close()
        assert r.status == 200, r

        # The connection opened before the reload (old certificate, old
        # worker) still gets its next request answered.
        assert old.sock is not None
        assert socket_owner(srv.port, old.sock.getsockname()[1],
                            old_workers) is not None
        r = srv.license(key, conn=old)
        assert r.status == 200, r
        assert r.json()["key_id"] == key_id(key)
        old.close()
        # ...and the old workers then go away; new ones serve.
        wait_for(lambda: not any(alive(p) for p in old_workers),
                 what="old workers to drain")
        new_workers = srv.children_by_comm()["licproxy-worker"]
        assert len(new_workers) == 2
        assert not set(new_workers) & set(old_workers)
        assert "reloaded: generation 1" in srv.logs()
        assert restarts(srv, "worker") == 0
        assert srv.stop() == 0


def test_hup_broken_config_keeps_serving():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        srv = fx.add(Server(pki, "authority", workers=2))
        key = srv.create_key()
        srv.start()
        workers = srv.children_by_comm()["licproxy-worker"]
        cert = file_fingerprint(pki.cert)

        # A bad value.
        srv.conf["server"]["max_body"] = "lots"
        srv.write_conf()
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in srv.logs(), what="reload error")
        text = srv.logs()
        assert re.search(r"licproxy\.yaml:\d+:\d+: server\.max_body:", text), text
        assert "keeping the running configuration" in text
        assert "reloaded: generation" not in text
        assert srv.license(key).status == 200
        assert srv.children_by_comm()["licproxy-worker"] == workers

        # A certificate that does not match the key.
        srv.conf["server"]["max_body"] = "256KiB"
        other_crt = os.path.join(pki.dir, "other.crt")
        pki.issue(other_crt, os.path.join(pki.dir, "other.key"), "localhost")
        srv.conf["server"]["tls_cert"] = other_crt
        srv.write_conf()
        mark = len(srv.logs())
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in srv.logs()[mark:],
                 what="reload error")
        text = srv.logs()[mark:]
        assert pki.key in text, text
        assert "reloaded: generation" not in srv.logs()
        assert peer_fingerprint(srv) == cert
        assert srv.license(key).status == 200
        assert srv.children_by_comm()["licproxy-worker"] == workers

        # Fixed: the next HUP applies it.
        srv.conf["server"]["tls_cert"] = pki.cert
        srv.conf["server"]["max_body"] = "1KiB"
        srv.write_conf()
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded: generation 1" in srv.logs(),
                 what="good reload")
        big = {"records": [dict(RECORD, id="r-%d" % i) for i in range(40)]}
        r = wait_for(lambda: (lambda r: r if r.status == 413 else None)(
            srv.request("POST", "/v1/usage", key=key, body=big)),
            what="new max_body in force")
        assert r.json()["error"] == "too_large"
        assert srv.stop() == 0


# -- graceful stop --

def test_term_during_load_completes_inflight():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        srv = fx.add(Server(pki, "authority", workers=2))
        hot = srv.create_key(name="hot")
        cold = srv.create_key(name="cold")   # never asked before TERM
        srv.start()
        assert srv.license(hot).status == 200
        kids = srv.children()
        assert len(kids) == 3

        stop = threading.Event()
        results = []   # (status, complete) per answered request
        errors = []

        def load():
            c = None
            while not stop.is_set():
                try:
                    c = c or srv.conn(timeout=3)
                    r = srv.license(hot, conn=c)
                    results.append(r.status)
                    json.loads(r.body)   # a complete body
                    if r.headers.get("connection") == "close":
                        c.close()
                        c = None
                except (ConnectionError, OSError, ssl.SSLError,
                        socket.timeout) as e:
                    errors.append(type(e).__name__)
                    if c is not None:
                        c.close()
                    c = None
                    time.sleep(0.05)
                except Exception as e:  # noqa: BLE001 - http.client's own
                    import http.client
                    if not isinstance(e, http.client.HTTPException):
                        raise
                    errors.append(type(e).__name__)
                    c = None
            if c is not None:
                c.close()

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: len(results) > 20, what="load running")

        # Two requests caught half-way: a head and a body.
        get = tls_socket(srv)
        get_req = ("GET /v1/license HTTP/1.1\r\nHost: localhost\r\n"
                   "Authorization: Token %s\r\n\r\n" % cold).encode()
        get.sendall(get_req[:30])
        body = json.dumps({"records": [RECORD]}).encode()
        post = tls_socket(srv)
        post.sendall(("POST /v1/usage HTTP/1.1\r\nHost: localhost\r\n"
                      "Authorization: Token %s\r\n"
                      "Content-Type: application/json\r\n"
                      "Content-Length: %d\r\n\r\n" % (hot, len(body))
                      ).encode() + body[:10])
        time.sleep(0.3)   # let the workers read what was sent

        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "stopping" in srv.logs(), what="stop begun")
        time.sleep(0.3)   # workers have seen TERM and closed idle ones
        get.sendall(get_req[30:])
        post.sendall(body[10:])
        got = read_response(get)
        posted = read_response(post)
        assert got is not None and got[0] == 200, got
        assert json.loads(got[2])["key_id"] == key_id(cold)
        assert posted is not None and posted[0] == 202, posted
        assert json.loads(posted[2]) == {"accepted": 1, "duplicates": 0}
        assert got[1].get("connection") == "close"

        rc = srv.proc.wait(10)
        elapsed = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(10)
        get.close()
        post.close()
        assert rc == 0
        assert elapsed < 10, elapsed
        assert not any(alive(p) for p in kids), kids
        assert all(s == 200 for s in results), set(results)
        # The accepted record is on disk.
        usage = json.loads(run("usage", "--store", srv.store,
                               "--json").stdout)
        assert [(u["key_id"], u["quantity"], u["records"]) for u in usage] \
            == [(key_id(hot), 12.5, 1)], usage


# -- sandbox and TLS --

def test_worker_status_seccomp_and_no_new_privs():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        srv = fx.add(Server(pki, "authority", workers=2))
        srv.start()
        workers = srv.children_by_comm()["licproxy-worker"]
        assert len(workers) == 2
        for pid in workers:
            with open("/proc/%d/status" % pid) as f:
                st = f.read()
            assert "\nSeccomp:\t2\n" in st, st
            assert "\nNoNewPrivs:\t1\n" in st, st
        # The master has its own (broader) allow-list since its setup is
        # done; test_sandbox_roles shows what each role refuses.
        with open("/proc/%d/status" % srv.proc.pid) as f:
            assert "\nSeccomp:\t2\n" in f.read()
        assert srv.stop() == 0


def test_tls_versions():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        srv = fx.add(Server(pki, "authority", workers=1))
        key = srv.create_key()
        srv.start()
        # Control: the same client does speak TLS 1.1 to a server that
        # allows it, so a refusal below comes from licproxy.
        ctl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctl.load_cert_chain(pki.cert, pki.key)
        ctl.minimum_version = ssl.TLSVersion.TLSv1_1
        ctl.set_ciphers("ALL:@SECLEVEL=0")
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)

        def serve_one():
            c, _ = ls.accept()
            try:
                ctl.wrap_socket(c, server_side=True).close()
            except (ssl.SSLError, OSError):
                c.close()
        t = threading.Thread(target=serve_one)
        t.start()
        control = raw_tls_version_refused(ls.getsockname()[1],
                                          ssl.TLSVersion.TLSv1_1)
        t.join(5)
        ls.close()
        assert not control, "this client cannot do TLS 1.1 at all"
        assert raw_tls_version_refused(srv.port, ssl.TLSVersion.TLSv1_1)
        assert raw_tls_version_refused(srv.port, ssl.TLSVersion.TLSv1)
        ctx = pki.context(maximum_version=ssl.TLSVersion.TLSv1_2)
        c = srv.conn(ctx)
        r = srv.license(key, conn=c)
        assert r.status == 200, r
        assert c.sock.version() == "TLSv1.2"
        assert "ECDHE" in c.sock.cipher()[0], c.sock.cipher()
        c.close()
        assert srv.stop() == 0


def resume_on_workers(srv, ctx, key):
    """First connection's session reused on many; returns the set of
    workers that resumed it."""
    first = srv.conn(ctx)
    assert srv.license(key, conn=first).status == 200
    session = first.sock.session
    assert session is not None
    first.close()
    workers = srv.children_by_comm()["licproxy-worker"]
    hit, socks = {}, []
    try:
        # Held open: with max_connections 2 a worker stops accepting, so
        # the others must take the next ones. Each holds a started next
        # request: an idle keep-alive one would be closed to make room.
        for _ in range(2 * len(workers)):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            t = ctx.wrap_socket(s, server_hostname="localhost",
                                session=session)
            socks.append(t)
            owner = wait_for(lambda: socket_owner(
                srv.port, t.getsockname()[1], workers), what="owner")
            hit.setdefault(owner, []).append(t.session_reused)
            t.sendall(("GET /v1/license HTTP/1.1\r\nHost: localhost\r\n"
                       "Authorization: Token %s\r\n\r\n" % key).encode())
            st = read_response(t)
            assert st is not None and st[0] == 200, st
            t.sendall(b"G")
    finally:
        for t in socks:
            t.close()
    assert len(hit) >= 2, hit
    for owner, reused in hit.items():
        assert all(reused), (owner, hit)
    return hit


def test_session_resumption_across_workers():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        srv = fx.add(Server(pki, "authority", workers=3,
                            extra={"server": {"max_connections": 2}}))
        key = srv.create_key()
        srv.start()
        hit = resume_on_workers(srv, pki.context(), key)
        assert len(hit) == 3, hit
        hit = resume_on_workers(srv, pki.context(
            maximum_version=ssl.TLSVersion.TLSv1_2), key)
        assert len(hit) == 3, hit
        # Control: without the session nothing is resumed.
        c = srv.conn()
        c.connect()
        assert c.sock.session_reused is False
        c.close()
        assert srv.stop() == 0


def two_workers(srv):
    """Both workers' pids, once both have named themselves (a worker
    takes its name first thing, but ready comes from the master, so a slow
    build may list one still under the master's name)."""
    return wait_for(lambda: (lambda w: len(w) == 2 and w)(
        srv.children_by_comm().get("licproxy-worker", [])),
        what="two named workers")


def two_worker_authority(fx):
    """An authority with 2 workers, a key, and the workers' pids."""
    pki = fx.add(Pki("ops"))
    srv = fx.add(Server(pki, "authority", workers=2))
    key = srv.create_key()
    srv.start()
    return srv, key, two_workers(srv)


def served(c, key):
    """One GET /v1/license on the TLS socket c, answered 200."""
    c.sendall(("GET /v1/license HTTP/1.1\r\nHost: localhost\r\n"
               "Authorization: Token %s\r\n\r\n" % key).encode())
    return c.recv(65536).startswith(b"HTTP/1.1 200 ")


def owners(srv, conns, workers):
    """How many of conns each worker holds."""
    per = {w: 0 for w in workers}
    for c in conns:
        per[socket_owner(srv.port, c.getsockname()[1], workers)] += 1
    return per


def test_burst_of_connections_spread_across_workers():
    """40 TLS connections opened at once (a load balancer's or a fleet's
    reconnect): libevent accepts until the backlog is empty, so without
    the fair share most of them stayed on the worker that woke first.
    Each worker stops accepting while it holds more than 4 over the
    other, so the keep-alive connections end up within a few of an
    even split, and all of them are served."""
    with Fixture() as fx:
        srv, key, workers = two_worker_authority(fx)
        raws = []
        for _ in range(40):             # connects first: the backlog fills
            r = socket.socket()
            r.setblocking(False)
            r.connect_ex(("127.0.0.1", srv.port))
            raws.append(r)
        ctx = srv.pki.context()
        conns = []
        for r in raws:
            r.setblocking(True)
            r.settimeout(15)
            conns.append(ctx.wrap_socket(r, server_hostname="localhost"))
        for c in conns:
            assert served(c, key), c
        per = owners(srv, conns, workers)
        print("  split", sorted(per.values()))
        assert sum(per.values()) == 40, per
        assert abs(per[workers[0]] - per[workers[1]]) <= 10, per
        for c in conns:
            c.close()
        assert srv.stop() == 0


def test_fair_share_never_waits_on_a_stuck_worker():
    """The worker a busier one yields to may be stuck (a disk, a lock;
    here SIGSTOP): connects waiting while no worker accepts anything for
    two 20 ms ticks are noticed, and the busier worker accepts them after
    all."""
    with Fixture() as fx:
        srv, key, workers = two_worker_authority(fx)
        ctx = srv.pki.context()
        first = []
        for _ in range(4):
            c = ctx.wrap_socket(socket.create_connection(
                ("127.0.0.1", srv.port), timeout=15),
                server_hostname="localhost")
            assert served(c, key)
            first.append(c)
        per = owners(srv, first, workers)
        stuck = min(workers, key=lambda w: per[w])
        os.kill(stuck, signal.SIGSTOP)
        try:
            more = []
            for _ in range(16):   # well past the 4 the other may lead by
                c = ctx.wrap_socket(socket.create_connection(
                    ("127.0.0.1", srv.port), timeout=15),
                    server_hostname="localhost")
                assert served(c, key)
                more.append(c)
            for c in more:
                assert socket_owner(srv.port, c.getsockname()[1],
                                    workers) != stuck
        finally:
            os.kill(stuck, signal.SIGCONT)
        for c in first + more:
            c.close()
        assert srv.stop() == 0


def test_mtls():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        other = fx.add(Pki("other"))
        srv = fx.add(Server(pki, "authority", workers=1,
                            extra={"server": {"client_ca": pki.ca}}))
        key = srv.create_key()
        crt = os.path.join(pki.dir, "client.crt")
        ck = os.path.join(pki.dir, "client.key")
        pki.issue(crt, ck, "svc-1")
        bad_crt = os.path.join(other.dir, "client.crt")
        bad_key = os.path.join(other.dir, "client.key")
        other.issue(bad_crt, bad_key, "svc-1")
        srv.start()

        ctx = pki.context()
        ctx.load_cert_chain(crt, ck)
        r = srv.license(key, conn=srv.conn(ctx))
        assert r.status == 200, r
        assert r.json()["key_id"] == key_id(key)

        def refused(ctx):
            try:
                srv.license(key, conn=srv.conn(ctx, timeout=5))
            except (ssl.SSLError, ConnectionError, OSError):
                return True
            return False
        assert refused(pki.context()), "no client certificate accepted"
        wrong = pki.context()
        wrong.load_cert_chain(bad_crt, bad_key)
        assert refused(wrong), "certificate of another CA accepted"
        assert refused(pki.context(maximum_version=ssl.TLSVersion.TLSv1_2))
        # The refusals cost nothing: the right client still gets in.
        r = srv.license(key, conn=srv.conn(ctx))
        assert r.status == 200, r
        assert srv.stop() == 0


def test_group_readable_tls_key_refused():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        srv = fx.add(Server(pki, "authority", workers=1))
        os.chmod(pki.key, 0o644)
        srv.write_conf()
        p = run("check-config", srv.conf_path, check=False)
        assert p.returncode == 2, p
        assert pki.key in p.stderr, p.stderr
        srv.start(wait=False)
        rc = srv.proc.wait(10)
        srv.log.close()
        assert rc == 2, srv.logs()
        assert pki.key in srv.logs()
        assert "server.tls_key" in srv.logs()
        # Nothing was started or bound.
        s = socket.socket()
        try:
            assert s.connect_ex(("127.0.0.1", srv.port)) != 0
        finally:
            s.close()
        os.chmod(pki.key, 0o600)
        srv.start()
        assert srv.status_json()["state"] == "Authority"
        assert srv.stop() == 0


# -- logs --

def test_raw_keys_never_logged():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        auth = fx.add(Server(pki, "authority", workers=2))
        good = auth.create_key(name="good")
        revoked = auth.create_key(name="revoked")
        pkey = auth.create_key(name="proxy", role="proxy")
        run("keys", "revoke", "--store", auth.store, key_id(revoked))
        auth.start()
        proxy = proxy_of(fx, auth, pki, pkey,
                         {"license": {"sync_interval": "1s"}})
        proxy.start()
        unknown = fake_key("never issued")
        bad = "x" * 39 + "!"
        for srv in (auth, proxy):
            assert srv.license(good).status == 200
            assert srv.license(good, scheme="Bearer").status == 200
            assert srv.license(revoked).status == 403
            assert srv.license(unknown).status == 403
            assert srv.license(bad).status == 401
            assert srv.usage(good, [RECORD]).status == 202
            assert srv.request("GET", "/nope", key=good).status == 404
        # The relay (with the proxy's own key) has run too.
        wait_for(lambda: proxy.status_json()["usage"]["forwarded"] >= 1,
                 timeout=15, what="usage relayed")
        assert proxy.stop() == 0
        assert auth.stop() == 0
        texts = {"auth": auth.logs(), "proxy": proxy.logs()}
        assert "debug" in texts["proxy"] and "debug" in texts["auth"]
        for name, text in texts.items():
            for k in (good, revoked, pkey, unknown, bad):
                assert k not in text, (name, k)
        # Raw keys are not on disk either (the store names keys by hash).
        for srv in (auth, proxy):
            for root, _, files in os.walk(srv.store):
                for fn in files:
                    with open(os.path.join(root, fn), "rb") as f:
                        data = f.read()
                    for k in (good, revoked, pkey, unknown):
                        assert k.encode() not in data, (srv.mode, fn, k)


def usr1_rotate(srv):
    logfile = srv.conf["log"]["file"]
    pids = [srv.proc.pid] + srv.children()
    wait_for(lambda: os.path.getsize(logfile) > 0, what="log lines")
    with open(logfile) as f:
        assert "listening on" in f.read()
    rotated = logfile + ".1"
    os.rename(logfile, rotated)
    size = os.path.getsize(rotated)
    srv.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: os.path.exists(logfile), what="new log file")
    # Every process writes to the new file now, and none died of USR1.
    for pid in pids:
        wait_for(lambda: os.readlink("/proc/%d/fd/2" % pid) == logfile,
                 what="pid %d to reopen" % pid)
    assert srv.children() == pids[1:]
    # Make them log: a reload (master; the old workers say "drained").
    srv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "drained" in open(logfile).read(),
             what="old workers' lines in the new file")
    with open(logfile) as f:
        text = f.read()
    assert "reloading" in text and "master[" in text, text
    assert os.path.getsize(rotated) == size, "lines went to the old file"
    assert "died on signal" not in text
    for role in ("worker", "uplink", "issuer"):
        assert restarts(srv, role) == 0
    return text


def test_usr1_reopens_log_file():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        auth = fx.add(Server(pki, "authority", workers=2))
        auth.conf["log"]["file"] = os.path.join(auth.dir, "app.log")
        pkey = auth.create_key(name="proxy", role="proxy")
        auth.start()
        proxy = proxy_of(fx, auth, pki, pkey, {"server": {"workers": 2}})
        proxy.conf["log"]["file"] = os.path.join(proxy.dir, "app.log")
        proxy.start()
        assert "listening on" not in auth.logs()   # all went to log.file
        usr1_rotate(auth)
        usr1_rotate(proxy)
        assert proxy.stop() == 0
        assert auth.stop() == 0


def test_log_format_json():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        srv = fx.add(Server(pki, "authority", workers=2,
                            extra={"log": {"format": "json"}}))
        key = srv.create_key()
        srv.start()
        assert srv.license(key).status == 200
        os.kill(srv.children_by_comm()["licproxy-worker"][0], signal.SIGKILL)
        wait_for(lambda: restarts(srv, "worker") == 1, what="restart")
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in srv.logs(), what="reload")
        assert srv.stop() == 0
        lines = srv.logs().splitlines()
        assert len(lines) >= 4
        roles = set()
        for ln in lines:
            obj = json.loads(ln)
            assert isinstance(obj, dict), ln
            assert obj["role"] and obj["level"] and obj["msg"], ln
            assert isinstance(obj["pid"], int), ln
            roles.add(obj["role"])
        assert {"master", "worker", "issuer"} <= roles, roles


# -- request bounds --

def test_header_too_large_and_too_slow():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        srv = fx.add(Server(pki, "authority", workers=1, extra={"server": {
            "max_header": "1KiB", "header_timeout": "1s"}}))
        key = srv.create_key()
        srv.start()
        r = srv.license(key, headers={"X-Pad": "p" * 600})
        assert r.status == 200, r     # under the bound: fine
        r = srv.license(key, headers={"X-Pad": "p" * 2000})
        assert r.status == 431, r
        assert r.json()["error"] == "header_too_large"

        s = tls_socket(srv)
        s.sendall(b"GET /v1/license HTTP/1.1\r\nHost: localhost\r\n")
        t0 = time.monotonic()
        s.settimeout(10)
        try:
            res = read_response(s)
        except (ConnectionError, ssl.SSLError):
            res = None
        waited = time.monotonic() - t0
        assert res is None or res[0] == 408, res
        assert waited >= 0.9, waited   # not before header_timeout
        assert waited < 8, waited
        # The slow one did not hurt others.
        assert srv.license(key).status == 200
        assert srv.stop() == 0


# -- outbound proxy --

def test_uplink_through_connect_proxy_and_no_proxy():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        auth = fx.add(Server(pki, "authority", workers=1))
        k1 = auth.create_key(name="a")
        k2 = auth.create_key(name="b")
        pkey = auth.create_key(name="proxy", role="proxy")
        auth.start()
        cp = fx.add(ConnectProxy())
        noenv = {"HTTPS_PROXY": cp.url, "NO_PROXY": "", "no_proxy": "",
                 "https_proxy": "", "HTTP_PROXY": "", "http_proxy": ""}
        via = proxy_of(fx, auth, pki, pkey, {"server": {"workers": 1}},
                       env=noenv, name="via")
        via.start()
        wait_for(lambda: via.status_json()["state"] == "Connected",
                 what="connected through the proxy")
        r = via.license(k1)
        assert r.status == 200 and r.json()["source"] == "upstream", r
        lines = cp.connects()
        assert lines, "proxy not used"
        assert all(ln == "CONNECT 127.0.0.1:%d HTTP/1.1" % auth.port
                   for ln in lines), lines
        assert via.stop() == 0

        n = len(cp.lines)
        env = dict(noenv, NO_PROXY="127.0.0.1")
        direct = proxy_of(fx, auth, pki, pkey, {"server": {"workers": 1}},
                          env=env, name="direct")
        direct.start()
        wait_for(lambda: direct.status_json()["state"] == "Connected",
                 what="connected directly")
        r = direct.license(k2)
        assert r.status == 200 and r.json()["source"] == "upstream", r
        assert len(cp.lines) == n, cp.lines[n:]
        assert direct.stop() == 0

        # Control: a proxy that is not there makes the upstream unreachable,
        # so the first run really went through it.
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))
        dead_url = "http://127.0.0.1:%d" % dead.getsockname()[1]
        dead.close()
        broken = proxy_of(fx, auth, pki, pkey, {"server": {"workers": 1},
                          "license": {"timeout": "1s"}},
                          env=dict(noenv, HTTPS_PROXY=dead_url),
                          name="broken")
        broken.start()
        wait_for(lambda: broken.status_json()["state"] == "Disconnected",
                 what="unreachable through a dead proxy")
        assert broken.license(fake_key("x")).status == 503
        assert broken.stop() == 0


# -- systemd --

def test_sd_notify_ready_reloading_stopping():
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        path = os.path.join(pki.dir, "notify")
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(path)
        ns.settimeout(10)
        try:
            srv = fx.add(Server(pki, "authority", workers=1,
                                env={"NOTIFY_SOCKET": path}))
            srv.start()

            def recv():
                return ns.recv(4096).decode()
            msgs = [recv()]
            assert "READY=1" in msgs[0].split("\n"), msgs
            assert srv.status("/healthz").status == 200
            srv.proc.send_signal(signal.SIGHUP)
            msgs.append(recv())
            assert "RELOADING=1" in msgs[-1].split("\n"), msgs
            msgs.append(recv())
            assert "READY=1" in msgs[-1].split("\n"), msgs
            assert srv.stop() == 0
            msgs.append(recv())
            assert "STOPPING=1" in msgs[-1].split("\n"), msgs
            ns.settimeout(0.2)
            try:
                extra = recv()
            except socket.timeout:
                extra = None
            assert extra is None, extra
        finally:
            ns.close()


def test_hup_moves_listeners():
    """A reload that changes server.port and status_port applies them: the
    new ports serve, the old ones are closed once the old workers are gone;
    a new port that is taken keeps the old configuration running."""
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        srv = fx.add(Server(pki, "authority", workers=2))
        key = srv.create_key()
        srv.start()
        old_port, old_status = srv.port, srv.status_port

        # A taken port: the reload is refused and nothing moves.
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        srv.conf["server"]["port"] = blocker.getsockname()[1]
        srv.write_conf()
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in srv.logs(), what="reload error")
        blocker.close()
        assert srv.license(key).status == 200
        assert srv.status("/healthz").status == 200

        new_port, new_status = free_port(), free_port()
        srv.conf["server"]["port"] = new_port
        srv.conf["server"]["status_port"] = new_status
        srv.write_conf()
        srv.proc.send_signal(signal.SIGHUP)
        srv.port, srv.status_port = new_port, new_status
        wait_for(lambda: srv.license(key).status == 200, what="new port")
        assert srv.status("/healthz").status == 200

        def closed(port):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
            except OSError:
                return True
            return False
        wait_for(lambda: closed(old_port) and closed(old_status),
                 what="old listeners closed")
        assert srv.stop() == 0


def test_stale_reader_slots_cleared():
    """A worker killed with -9 leaves its LMDB reader slot behind; slots of
    dead processes are cleared (mdb_reader_check: every child at open, the
    uplink every tick), so killed children cannot exhaust the table."""
    def readers(store):
        # mdb_stat exits 1 after printing the table (no -a): read stdout.
        out = subprocess.run(["mdb_stat", "-r", store], capture_output=True,
                             text=True).stdout
        assert "Reader Table Status" in out, out
        return {int(ln.split()[0]) for ln in out.splitlines()[2:]
                if ln.strip() and ln.split()[0].isdigit()}
    with Fixture() as fx:
        pki = fx.add(Pki("ops"))
        auth = fx.add(Server(pki, "authority"))
        key = auth.create_key()
        auth.start()
        proxy_key = auth.create_key(name="proxy", role="proxy")
        proxy = proxy_of(fx, auth, pki, proxy_key)
        proxy.start()
        # A worker that served a lookup keeps its reader slot.
        for _ in range(10):
            assert proxy.license(key).status == 200
        workers = set(proxy.children_by_comm()["licproxy-worker"])
        holding = wait_for(lambda: workers & readers(proxy.store),
                           what="a worker in the reader table")
        victim = min(holding)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in readers(proxy.store),
                 what="the dead worker's slot cleared")
        assert proxy.license(key).status == 200
        assert proxy.stop() == 0

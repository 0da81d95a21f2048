"""Slow clients and framing on the real binary: header_timeout as a total
from accept (TLS handshake included), body_timeout for the whole body, the
status listener's own connection budget, making room by closing the
oldest idle keep-alive connection, bare LF, Expect: 100-continue and a
plain HTTP request on the TLS port."""
import json
import os
import select
import socket
import ssl
import time

from lp import Fixture, Pki, Server

RECORD = {"id": "r-1", "product": "engine", "metric": "audio_seconds",
          "quantity": 12.5, "ts": "2026-11-26T16:00:00Z"}


def server(fx, workers=1, env=None, **srv):
    pki = fx.add(Pki("slow"))
    return fx.add(Server(pki, "authority", workers=workers,
                         extra={"server": srv}, env=env))


def no_asan_quarantine():
    """Under `make test SANITIZE=1` ASan keeps freed blocks in a
    quarantine (256 MB by default) instead of reusing them, so a worker's
    RSS grows with the requests it answered whether or not it holds
    them: a memory bound is measured with the quarantine off. Without
    ASan this adds nothing."""
    opts = os.environ.get("ASAN_OPTIONS")
    if opts is None:
        return None
    return {"ASAN_OPTIONS": opts + ":quarantine_size_mb=0"
            ":thread_local_quarantine_size_kb=0"}


def closed(srv, reason):
    return srv.metrics()[
        'licproxy_connections_closed_total{reason="%s"}' % reason]


def tls(srv, timeout=10):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    return srv.pki.context().wrap_socket(s, server_hostname="localhost")


def client_hello(srv):
    """The bytes of a real ClientHello for srv (never completed)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = srv.pki.context().wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def closed_now(s):
    """True if the peer has closed s (EOF or reset), without blocking."""
    if isinstance(s, ssl.SSLSocket) and s.pending():
        return False
    if not select.select([s], [], [], 0)[0]:
        return False
    try:
        s.setblocking(False)
        return s.recv(1) == b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except (ConnectionError, ssl.SSLError, OSError):
        return True
    finally:
        s.setblocking(True)


def trickle(s, data, limit):
    """Send data one byte per second until the peer closes; returns
    (seconds until closed or None, bytes received meanwhile)."""
    t0, got = time.monotonic(), b""
    for i in range(len(data)):
        if time.monotonic() - t0 > limit:
            return None, got
        try:
            s.sendall(data[i:i + 1])
        except (ConnectionError, ssl.SSLError, OSError):
            return time.monotonic() - t0, got
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            r = select.select([s], [], [], max(0, end - time.monotonic()))[0]
            if not r:
                continue
            try:
                b = s.recv(4096)
            except (ConnectionError, ssl.SSLError, OSError):
                return time.monotonic() - t0, got
            if not b:
                return time.monotonic() - t0, got
            got += b
    return None, got


def read_response(s):
    """(status, headers, body) of one response, or None on EOF first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(65536)
        if not b:
            if buf:
                raise AssertionError("truncated response %r" % buf)
            return None
        buf += b
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
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
    return int(lines[0].split()[1]), headers, body.decode()


def get_license(s, key):
    s.sendall(("GET /v1/license HTTP/1.1\r\nHost: localhost\r\n"
               "Authorization: Token %s\r\n\r\n" % key).encode())
    return read_response(s)


def test_handshake_trickle_closed_by_header_timeout():
    """(a) A ClientHello sent one byte per second is closed once
    header_timeout (2s) has passed since accept."""
    with Fixture() as fx:
        srv = server(fx, header_timeout="2s")
        srv.start()
        hello = client_hello(srv)
        assert len(hello) > 20, hello
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        took, got = trickle(s, hello, limit=8)
        s.close()
        assert took is not None, "still open after 8s of trickling"
        assert 1.5 <= took <= 4.0, took
        # The handshake never finished: nothing readable as HTTP.
        assert b"HTTP/" not in got, got
        assert srv.status("/healthz").status == 200
        assert closed(srv, "header_timeout") == 1
        assert srv.stop() == 0


def test_head_trickle_closed_by_header_timeout():
    """(a) After the handshake, a head sent one byte per second is closed
    (408 at most) header_timeout after accept, not after a gap; a
    keep-alive connection that waits longer than header_timeout before
    its next request is still served (the clock starts at its first
    byte)."""
    with Fixture() as fx:
        srv = server(fx, header_timeout="2s")
        key = srv.create_key()
        srv.start()
        s = tls(srv)
        head = ("GET /v1/license HTTP/1.1\r\nHost: localhost\r\n"
                "Authorization: Token %s\r\n\r\n" % key).encode()
        took, got = trickle(s, head, limit=8)
        s.close()
        assert took is not None, "still open after 8s of trickling"
        assert 1.5 <= took <= 4.0, took
        assert got == b"" or got.startswith(b"HTTP/1.1 408 "), got

        s = tls(srv)
        assert get_license(s, key)[0] == 200
        time.sleep(3)       # idle longer than header_timeout
        r = get_license(s, key)
        assert r is not None and r[0] == 200, r
        s.close()
        assert srv.stop() == 0


def test_body_trickle_closed_by_body_timeout():
    """(b) A complete head, then a body of 100 bytes sent one byte per
    second, is closed body_timeout (2s) after the head, on both
    listeners, though header_timeout (5s) is not over; at most a 408."""
    with Fixture() as fx:
        srv = server(fx, header_timeout="5s", body_timeout="2s")
        key = srv.create_key()
        srv.start()
        body = json.dumps({"records": [RECORD]}).encode()
        body = body + b" " * (100 - len(body))
        for path, mk in (("/v1/usage", lambda: tls(srv)),
                         ("/healthz", lambda: socket.create_connection(
                             ("127.0.0.1", srv.status_port), timeout=10))):
            s = mk()
            s.sendall(("POST %s HTTP/1.1\r\nHost: localhost\r\n"
                       "Authorization: Token %s\r\n"
                       "Content-Type: application/json\r\n"
                       "Content-Length: 100\r\n\r\n" % (path, key)).encode())
            took, got = trickle(s, body, limit=8)
            s.close()
            assert took is not None, (path, "open after 8s of trickling")
            assert 1.5 <= took <= 4.0, (path, took)
            assert got == b"" or got.startswith(b"HTTP/1.1 408 "), got
        # A body sent at once is fine.
        assert srv.usage(key, [RECORD]).status == 202
        assert closed(srv, "body_timeout") == 2
        assert closed(srv, "header_timeout") == 0
        assert srv.stop() == 0


def test_status_budget_and_room_for_new_tls():
    """(c) One worker, max_connections 20: 5 idle keep-alive and 15
    stalled handshakes fill the TLS port. /healthz answers within 1s
    (also with 63 idle status connections, and with more than the status
    budget), and a fresh TLS request succeeds because the oldest idle
    keep-alive connection is closed to make room."""
    with Fixture() as fx:
        srv = server(fx, max_connections=20, header_timeout="30s")
        key = srv.create_key()
        srv.start()
        hello = client_hello(srv)
        idle, stalled, plain = [], [], []
        try:
            for _ in range(5):
                s = tls(srv)
                assert get_license(s, key)[0] == 200
                idle.append(s)
            for _ in range(15):
                s = socket.create_connection(("127.0.0.1", srv.port),
                                             timeout=10)
                s.sendall(hello[:10])
                stalled.append(s)
            time.sleep(0.5)
            for n in (63, 90):
                while len(plain) < n:
                    plain.append(socket.create_connection(
                        ("127.0.0.1", srv.status_port), timeout=10))
                time.sleep(0.3)
                t0 = time.monotonic()
                assert srv_status_fast(srv) == 200
                assert time.monotonic() - t0 < 1.0, n

            c = srv.conn(timeout=5)
            r = srv.license(key, conn=c)
            assert r.status == 200, r
            c.close()
            assert wait_closed(idle[0]), "oldest idle conn still open"
            assert not any(closed_now(s) for s in idle[1:])
            assert not any(closed_now(s) for s in stalled)
            r = get_license(idle[1], key)
            assert r is not None and r[0] == 200, r
            assert closed(srv, "idle_evicted") == 1
            assert closed(srv, "status_evicted") >= 90 - 64
        finally:
            for s in idle + stalled + plain:
                s.close()
        assert srv.stop() == 0


def srv_status_fast(srv):
    s = socket.create_connection(("127.0.0.1", srv.status_port), timeout=1)
    try:
        s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        return read_response(s)[0]
    finally:
        s.close()


def wait_closed(s, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if closed_now(s):
            return True
        time.sleep(0.05)
    return False


def test_bare_lf_is_400_at_once():
    """(d) A head with bare LF line ends is a 400 at once on both
    listeners, long before header_timeout (10s)."""
    with Fixture() as fx:
        srv = server(fx)
        srv.start()
        for mk in (lambda: tls(srv, timeout=3),
                   lambda: socket.create_connection(
                       ("127.0.0.1", srv.status_port), timeout=3)):
            for head in (b"GET / HTTP/1.1\nHost: x\n\n",
                         b"GET /healthz HTTP/1.1\r\nHost: x\n\r\n"):
                s = mk()
                t0 = time.monotonic()
                s.sendall(head)
                r = read_response(s)
                s.close()
                assert r is not None and r[0] == 400, (head, r)
                assert json.loads(r[2])["error"] == "bad_request", r
                assert time.monotonic() - t0 < 1.0
        assert srv.stop() == 0


def test_expect_100_continue():
    """(e) Expect: 100-continue gets 100 Continue before the body is sent,
    then the final answer; over max_body it gets 413 at once instead."""
    with Fixture() as fx:
        srv = server(fx, max_body="1KiB")
        key = srv.create_key()
        srv.start()
        body = json.dumps({"records": [RECORD]}).encode()
        s = tls(srv, timeout=3)
        head = ("POST /v1/usage HTTP/1.1\r\nHost: localhost\r\n"
                "Authorization: Token %s\r\n"
                "Content-Type: application/json\r\n"
                "Expect: 100-continue\r\nContent-Length: %d\r\n\r\n")
        s.sendall((head % (key, len(body))).encode())
        cont = b""
        while b"\r\n\r\n" not in cont:
            b = s.recv(4096)
            assert b, cont
            cont += b
        assert cont == b"HTTP/1.1 100 Continue\r\n\r\n", cont
        s.sendall(body)
        r = read_response(s)
        assert r is not None and r[0] == 202, r

        # The same connection: too large a body is refused before it.
        t0 = time.monotonic()
        s.sendall((head % (key, 4096)).encode())
        r = read_response(s)
        assert r is not None and r[0] == 413, r
        assert json.loads(r[2])["error"] == "too_large", r
        assert time.monotonic() - t0 < 1.0
        s.close()
        assert srv.stop() == 0


def test_plain_http_on_tls_port():
    """(f) A plain HTTP request on the TLS port gets a plain-text 400
    plain_http and the connection is closed."""
    with Fixture() as fx:
        srv = server(fx)
        srv.start()
        # OpenSSL itself names GET, POST, HEAD, PUT and CONNECT; the rest
        # (DELETE is in the API) fail its version check
        for method in ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS",
                       "PATCH", "get", "CONNECT"):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=3)
            s.sendall(("%s /v1/license HTTP/1.1\r\nHost: localhost\r\n"
                       "Content-Length: 0\r\n\r\n" % method).encode())
            r = read_response(s)
            assert r is not None and r[0] == 400, (method, r)
            assert json.loads(r[2])["error"] == "plain_http", r
            assert r[1].get("connection") == "close", r
            assert s.recv(1) == b""
            s.close()
        assert srv.status("/healthz").status == 200
        assert srv.stop() == 0


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def count_answers(buf, pos, got):
    """Whole answers in buf from pos on, their statuses appended to got;
    the position after the last whole one."""
    while True:
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            return pos
        head = buf[pos:end].decode()
        n = 0
        for ln in head.split("\r\n")[1:]:
            k, v = ln.split(":", 1)
            if k.strip().lower() == "content-length":
                n = int(v)
        if len(buf) < end + 4 + n:
            return pos
        got.append(int(head.split()[1]))
        pos = end + 4 + n


def test_pipelining_client_that_never_reads_is_bounded():
    """(f) A client that pipelines GETs and never reads its answers: the
    worker takes no new request while an answer waits unread and stops
    reading once its input buffer is full, so its memory stays bounded;
    when the client reads at last, every request it sent is answered."""
    with Fixture() as fx:
        srv = server(fx, env=no_asan_quarantine())
        key = srv.create_key()
        srv.start()
        worker = srv.children_by_comm()["licproxy-worker"][0]
        req = ("GET /v1/license HTTP/1.1\r\nHost: localhost\r\n"
               "Authorization: Token %s\r\n\r\n" % key).encode()
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", srv.port))
        s = srv.pki.context().wrap_socket(raw, server_hostname="localhost")
        assert get_license(s, key)[0] == 200
        rss0 = rss_kib(worker)
        # 40,000 requests (4.6 MB) would be ~25 MB of answers
        data = req * 40000
        s.setblocking(False)
        sent, stalled = 0, 0
        while sent < len(data) and stalled < 10:
            try:
                sent += s.send(data[sent:sent + 16384])
                stalled = 0
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                stalled += 1
                select.select([], [s], [], 0.1)
        time.sleep(0.5)
        grew = rss_kib(worker) - rss0
        assert grew < 8 * 1024, "worker RSS grew %d KiB" % grew
        # read now, sending the rest: every request is answered, 200
        want = len(data) // len(req)
        got, buf, pos = [], b"", 0
        deadline = time.time() + 60
        while len(got) < want and time.time() < deadline:
            if sent < len(data):
                try:
                    sent += s.send(data[sent:sent + 16384])
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    pass
            try:
                b = s.recv(262144)
                assert b, "closed after %d answers" % len(got)
                buf += b
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                select.select([s], [s] if sent < len(data) else [], [],
                              0.05)
                continue
            pos = count_answers(buf, pos, got)
            buf, pos = buf[pos:], 0
        s.close()
        assert len(got) == want and set(got) == {200}, (len(got), want)

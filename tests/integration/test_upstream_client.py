"""The uplink's HTTPS client (libcurl multi on the uplink's loop): per-URL
timeout and failover order, keep-alive, TLS verification failures, the
upstream client certificate, and the response size bound. Real binary, real
authority; small fake upstreams only where a fault is needed that the real
authority cannot produce."""
import http.server
import os
import socket
import ssl
import threading
import time

from lp import (ConnectProxy, Fixture, Pki, Server, run, wait_for,
                key_id)

BODY_MAX = 4 * 1024 * 1024


def proxy(fx, pki, urls, key, name="proxy", env=None, **lic):
    conf = {"server_url": urls, "ca_file": pki.ca,
            "trusted_keys": [pki.pub], "timeout": "1s"}
    conf.update(lic)
    e = {"LICPROXY_LICENSE_KEY": key, "HTTPS_PROXY": "", "https_proxy": "",
         "NO_PROXY": "", "no_proxy": ""}
    e.update(env or {})
    return fx.add(Server(pki, "proxy", name=name, workers=1,
                         extra={"license": conf}, env=e))


def issued(auth, key):
    return "issued lease for %s" % key_id(key) in auth.logs()


def dead_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = "https://127.0.0.1:%d" % s.getsockname()[1]
    s.close()
    return url


class Fake:
    """An HTTPS upstream (the test CA's certificate) that answers every
    request with respond(self) -> (status, body bytes, chunked), or hangs
    when it returns None. Counts requests and TCP connections."""

    def __init__(self, pki, respond, close=False, headers=()):
        self.asked = 0
        self.resumed = []       # per connection: TLS session resumed?
        self.release = threading.Event()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                outer.resumed.append(self.connection.session_reused)

            def do_GET(self):
                outer.asked += 1
                self.close_connection = close
                ans = respond(outer)
                if ans is None:
                    outer.release.wait(30)
                    return
                status, body, chunked = ans
                self.send_response(status)
                if close:
                    self.send_header("Connection", "close")
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(body), 65536):
                        part = body[i:i + 65536]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.srv.handle_error = lambda *a: None  # aborted on purpose
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.cert, pki.key)
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.url = "https://127.0.0.1:%d" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

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


def test_timeout_bounds_one_url_then_next():
    """An upstream that accepts TCP and never answers: the attempt ends at
    license.timeout and the next URL answers."""
    with Fixture() as fx:
        pki = fx.add(Pki("uc"))
        auth = fx.add(Server(pki, "authority", workers=1)).start()
        key = auth.create_key()
        pkey = auth.create_key(name="proxy", role="proxy")
        hole = fx.add(Blackhole())
        p = proxy(fx, pki, [hole.url, auth.url], pkey).start()
        wait_for(lambda: p.status_json()["state"] == "Connected",
                 timeout=8, what="connected via the second URL")
        t = time.monotonic()
        r = p.license(key)
        took = time.monotonic() - t
        assert r.status == 200 and r.json()["source"] == "upstream", r
        assert 0.9 <= took < 2.5, took
        assert "upstream %s: " % hole.url in p.logs()
        assert "timed out" in p.logs()


def test_failover_order():
    """Refused, then 5xx, then the real authority: each is tried once, in
    the configured order; the URL after the one that answered never is."""
    with Fixture() as fx:
        pki = fx.add(Pki("uc"))
        auth = fx.add(Server(pki, "authority", workers=1)).start()
        key = auth.create_key()
        pkey = auth.create_key(name="proxy", role="proxy")
        err = fx.add(Fake(pki, lambda f: (500, b"{}", False)))
        after = fx.add(Fake(pki, lambda f: (500, b"{}", False)))
        dead = dead_url()
        p = proxy(fx, pki, [dead, err.url, auth.url, after.url], pkey)
        p.start()
        wait_for(lambda: p.status_json()["state"] == "Connected",
                 what="connected")
        n = err.asked
        assert n == 1, n        # the self-check went down the list once
        r = p.license(key)
        assert r.status == 200 and r.json()["source"] == "upstream", r
        assert err.asked == n + 1 and issued(auth, key)
        assert after.asked == 0
        logs = p.logs()
        assert logs.index("upstream %s:" % dead) < logs.index(
            "upstream %s:" % err.url)


def test_keepalive_reuses_one_connection():
    """Several misses in a row go over one TCP connection (counted as
    CONNECTs at an HTTPS_PROXY in front of the authority)."""
    with Fixture() as fx:
        pki = fx.add(Pki("uc"))
        auth = fx.add(Server(pki, "authority", workers=1)).start()
        keys = [auth.create_key(name="k%d" % i) for i in range(5)]
        pkey = auth.create_key(name="proxy", role="proxy")
        cp = fx.add(ConnectProxy())
        p = proxy(fx, pki, [auth.url], pkey, env={"HTTPS_PROXY": cp.url})
        p.start()
        wait_for(lambda: p.status_json()["state"] == "Connected",
                 what="connected")
        for k in keys:
            r = p.license(k)
            assert r.status == 200 and r.json()["source"] == "upstream", r
        assert all(issued(auth, k) for k in keys)
        assert cp.connects() == ["CONNECT 127.0.0.1:%d HTTP/1.1" %
                                 auth.port], cp.lines


def test_tls_session_resumed_on_new_connections():
    """An upstream that closes after each answer: every later connection
    resumes the TLS session of an earlier one (no full handshake)."""
    with Fixture() as fx:
        pki = fx.add(Pki("uc"))
        up = fx.add(Fake(pki, lambda f: (200, b'{"lease": "junk"}', False),
                         close=True))
        p = proxy(fx, pki, [up.url], "p" * 40).start()
        for i in range(3):
            assert p.license("k%039d" % i).status == 503
        assert up.asked >= 4 and len(up.resumed) == up.asked, up.resumed
        assert up.resumed[0] is False and all(up.resumed[1:]), up.resumed


def test_wrong_ca_refused_trustbased():
    """An upstream certificate that does not chain to license.ca_file is
    refused: with a lease cached the state is TrustBased, the error says
    why, and the cached lease is still served."""
    with Fixture() as fx:
        pki = fx.add(Pki("uc"))
        other = fx.add(Pki("other"))
        auth = fx.add(Server(pki, "authority", workers=1)).start()
        key = auth.create_key()
        pkey = auth.create_key(name="proxy", role="proxy")
        p = proxy(fx, pki, [auth.url], pkey).start()
        assert p.license(key).status == 200
        assert p.stop() == 0
        p.conf["license"]["ca_file"] = other.ca
        p.start()
        st = wait_for(lambda: (lambda s: s if s["state"] == "TrustBased"
                               else None)(p.status_json()),
                      what="TrustBased")
        assert "certificate" in st["upstream"]["last_error"], st
        assert "upstream %s: SSL certificate problem" % auth.url in p.logs()
        r = p.license(key)
        assert r.status == 200 and r.json()["source"] == "cache", r


def test_wrong_host_name_refused():
    """A certificate of the right CA for another name is refused."""
    with Fixture() as fx:
        pki = fx.add(Pki("uc"))
        cert = os.path.join(pki.dir, "other.crt")
        ckey = os.path.join(pki.dir, "other.key")
        pki.issue(cert, ckey, "other.example")
        auth = fx.add(Server(pki, "authority", workers=1,
                             extra={"server": {"tls_cert": cert,
                                               "tls_key": ckey}})).start()
        key = auth.create_key()
        pkey = auth.create_key(name="proxy", role="proxy")
        p = proxy(fx, pki, [auth.url], pkey).start()
        st = wait_for(lambda: (lambda s: s if s["state"] == "Disconnected"
                               else None)(p.status_json()),
                      what="Disconnected")
        assert "127.0.0.1" in st["upstream"]["last_error"], st
        assert p.license(key).status == 503
        assert not issued(auth, key)
        assert "does not match target host name" in p.logs() or \
            "subject name matches target host name" in p.logs(), p.logs()


def client_pair(pki, name):
    cert = os.path.join(pki.dir, name + ".crt")
    key = os.path.join(pki.dir, name + ".key")
    pki.issue(cert, key, name, "extendedKeyUsage=clientAuth")
    return cert, key


def test_client_certificate():
    """An authority that requires client certificates (server.client_ca)
    leases to the proxy presenting license.client_cert/client_key and to
    no proxy without one."""
    with Fixture() as fx:
        pki = fx.add(Pki("uc"))
        auth = fx.add(Server(pki, "authority", workers=1,
                             extra={"server": {"client_ca": pki.ca}}))
        auth.start()
        k1, k2 = auth.create_key(name="a"), auth.create_key(name="b")
        pkey = auth.create_key(name="proxy", role="proxy")
        cert, ckey = client_pair(pki, "proxy-client")
        good = proxy(fx, pki, [auth.url], pkey, name="with",
                     client_cert=cert, client_key=ckey).start()
        wait_for(lambda: good.status_json()["state"] == "Connected",
                 what="connected with a client certificate")
        r = good.license(k1)
        assert r.status == 200 and r.json()["source"] == "upstream", r
        bare = proxy(fx, pki, [auth.url], pkey, name="without").start()
        st = wait_for(lambda: (lambda s: s if s["state"] == "Disconnected"
                               else None)(bare.status_json()),
                      what="Disconnected without a client certificate")
        assert st["upstream"]["last_error"], st
        assert bare.license(k2).status == 503
        assert not issued(auth, k2)
        # The operator's by-hand check takes the same pair.
        args = ("check", auth.url, "--key", k2, "--ca", pki.ca)
        r = run(*args, "--client-cert", cert, "--client-key", ckey)
        assert '"lease"' in r.stdout, r
        r = run(*args, check=False)
        assert r.returncode == 4 and auth.url in r.stderr, r


def test_client_certificate_config_checked():
    """Both keys or neither; the key must be private; files must exist."""
    with Fixture() as fx:
        pki = fx.add(Pki("uc"))
        cert, ckey = client_pair(pki, "proxy-client")
        p = proxy(fx, pki, ["https://127.0.0.1:1"], "x" * 40)

        def check(**lic):
            p.conf["license"].pop("client_cert", None)
            p.conf["license"].pop("client_key", None)
            p.conf["license"].update(lic)
            p.write_conf()
            r = run("check-config", p.conf_path, check=False, env=p.env)
            return r.returncode, r.stdout + r.stderr
        assert check(client_cert=cert, client_key=ckey)[0] == 0
        rc, out = check(client_cert=cert)
        assert rc != 0 and "set both or neither" in out, out
        rc, out = check(client_key=ckey)
        assert rc != 0 and "set both or neither" in out, out
        rc, out = check(client_cert=cert, client_key=ckey + ".missing")
        assert rc != 0 and "license.client_key" in out, out
        os.chmod(ckey, 0o640)
        rc, out = check(client_cert=cert, client_key=ckey)
        assert rc != 0 and "readable by group" in out, out
        os.chmod(ckey, 0o600)
        # A key that is not the certificate's: refused at load, not at the
        # first handshake.
        _, other = client_pair(pki, "other-client")
        rc, out = check(client_cert=cert, client_key=other)
        assert rc == 2 and "license.client_key: %s: not the PEM key of %s" \
            % (other, cert) in out, out
        p.conf["license"].update(client_cert=cert, client_key=other)
        p.start(wait=False)
        assert p.proc.wait(10) == 2
        assert "not the PEM key of" in p.logs(), p.logs()


def test_ca_file_without_certificates():
    """A license.ca_file that holds no certificate stops the uplink at
    start with a line naming it, instead of failing every handshake."""
    with Fixture() as fx:
        pki = fx.add(Pki("uc"))
        p = proxy(fx, pki, ["https://127.0.0.1:1"], "x" * 40,
                  ca_file=pki.pub)      # a PEM file, but no certificate
        p.start(wait=False)
        wait_for(lambda: "%s: no CA certificates in it" % pki.pub in
                 p.logs(), what="the uplink refusing the bundle")


def test_response_too_large():
    """A body over the bound (with Content-Length, and chunked) ends that
    attempt as an error; the next URL answers."""
    big = b"x" * (BODY_MAX + 1)
    with Fixture() as fx:
        pki = fx.add(Pki("uc"))
        auth = fx.add(Server(pki, "authority", workers=1)).start()
        key = auth.create_key()
        pkey = auth.create_key(name="proxy", role="proxy")
        cl = fx.add(Fake(pki, lambda f: (200, big, False)))
        ch = fx.add(Fake(pki, lambda f: (200, big, True)))
        p = proxy(fx, pki, [cl.url, ch.url, auth.url], pkey,
                  timeout="3s").start()
        wait_for(lambda: p.status_json()["state"] == "Connected",
                 what="connected")
        r = p.license(key)
        assert r.status == 200 and r.json()["source"] == "upstream", r
        assert cl.asked == 2 and ch.asked == 2, (cl.asked, ch.asked)
        logs = p.logs()
        assert "upstream %s: response body over %d bytes" % (
            cl.url, BODY_MAX) in logs, logs
        assert "upstream %s: response body over %d bytes" % (
            ch.url, BODY_MAX) in logs, logs


def test_files_read_before_privilege_drop():
    """With server.user set, the CA bundle and the client key live where
    the dropped user cannot read (a root-only directory): the uplink read
    them before the drop, so its handshakes still verify and present them."""
    with Fixture() as fx:
        pki = fx.add(Pki("uc"))
        os.chmod(pki.dir, 0o700)
        auth = fx.add(Server(pki, "authority", workers=1,
                             extra={"server": {"client_ca": pki.ca}}))
        auth.start()
        key = auth.create_key()
        pkey = auth.create_key(name="proxy", role="proxy")
        cert, ckey = client_pair(pki, "proxy-client")
        p = proxy(fx, pki, [auth.url], pkey, client_cert=cert,
                  client_key=ckey)
        p.conf["server"]["user"] = "nobody"
        os.chmod(p.dir, 0o711)      # the store is reachable, pki.dir not
        p.start()
        wait_for(lambda: p.status_json()["state"] == "Connected",
                 what="connected after the privilege drop")
        (pid,) = p.children_by_comm()["licproxy-uplink"]
        with open("/proc/%d/status" % pid) as f:
            uids = [ln.split()[1:] for ln in f if ln.startswith("Uid:")][0]
        assert set(uids) == {"65534"}, uids
        r = p.license(key)
        assert r.status == 200 and r.json()["source"] == "upstream", r


def test_redirect_not_followed():
    """A 302 from an upstream is its answer, not a pointer to follow: the
    Location is never asked and the client gets 503."""
    with Fixture() as fx:
        pki = fx.add(Pki("uc"))
        auth = fx.add(Server(pki, "authority", workers=1)).start()
        key = auth.create_key()
        pkey = auth.create_key(name="proxy", role="proxy")
        redir = fx.add(Fake(pki, lambda f: (302, b"{}", False),
                            headers=[("Location", auth.url + "/v1/license")]))
        p = proxy(fx, pki, [redir.url], pkey).start()
        assert p.license(key).status == 503
        assert redir.asked >= 2
        assert "upstream answered 302" in p.logs()
        assert not issued(auth, key)


def test_lowercase_proxy_environment():
    """https_proxy and no_proxy (lower case) work like the upper-case
    names: through the proxy, then past it for a listed host."""
    with Fixture() as fx:
        pki = fx.add(Pki("uc"))
        auth = fx.add(Server(pki, "authority", workers=1)).start()
        k1, k2 = auth.create_key(name="a"), auth.create_key(name="b")
        pkey = auth.create_key(name="proxy", role="proxy")
        cp = fx.add(ConnectProxy())
        via = proxy(fx, pki, [auth.url], pkey, name="via",
                    env={"https_proxy": cp.url}).start()
        assert via.license(k1).status == 200
        assert cp.connects(), "proxy not used"
        assert via.stop() == 0
        n = len(cp.lines)
        direct = proxy(fx, pki, [auth.url], pkey, name="direct",
                       env={"https_proxy": cp.url,
                            "no_proxy": "localhost,127.0.0.1"}).start()
        r = direct.license(k2)
        assert r.status == 200 and r.json()["source"] == "upstream", r
        assert len(cp.lines) == n, cp.lines[n:]

"""Configuration files at their limits and the errors that need the system
(SPEC sections 5, 6, 7 and 9): a file too large or nested too deep is
refused at once, also on a reload; store.path too long for its socket and
an unopenable log.file are configuration errors (FILE:LINE:COL, exit 2);
a long list of errors ends on a whole line; check-config speaks as the
CLI; a reload switches to a new log.file or refuses one it cannot open."""
import os
import re
import signal
import time

from lp import Fixture, Pki, Server, run, wait_for


def _conf(fx, pki, **extra):
    """An authority configuration that passes check-config, written."""
    srv = fx.add(Server(pki, "authority", extra=extra))
    srv.write_conf()
    return srv


def _line_of(path, key):
    """1-based line of the first line that holds `key:`."""
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if line.strip().startswith(key + ":"):
                return i
    raise AssertionError("%s not in %s" % (key, path))


DEEP = "x: " + "[" * 60000 + "]" * 60000 + "\n"     # 120 KB, 12 s before


def test_deep_nesting_refused_at_once():
    with Fixture() as fx:
        pki = fx.add(Pki())
        srv = _conf(fx, pki)
        with open(srv.conf_path, "a") as f:
            f.write(DEEP)
        t0 = time.time()
        p = run("check-config", srv.conf_path, check=False)
        took = time.time() - t0
        assert p.returncode == 2, p
        line = _line_of(srv.conf_path, "x")
        assert "%s:%d:67: nested deeper than 64 levels" % (
            srv.conf_path, line) in p.stderr, p.stderr
        assert took < 2, took


def test_file_too_large_refused():
    with Fixture() as fx:
        pki = fx.add(Pki())
        srv = _conf(fx, pki)
        with open(srv.conf_path, "a") as f:
            f.write("#" * (1 << 20) + "\n")
        p = run("check-config", srv.conf_path, check=False)
        assert p.returncode == 2, p
        assert p.stderr.startswith("%s: larger than 1MiB" % srv.conf_path), \
            p.stderr


def test_reload_of_deep_file_does_not_stall_master():
    """SIGHUP with the deep file: refused, and TERM still stops the master
    within SPEC 7's 10 s."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        srv = fx.add(Server(pki, "authority"))
        srv.start()
        with open(srv.conf_path, "a") as f:
            f.write(DEEP)
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "nested deeper than 64 levels" in srv.logs(),
                 timeout=3, what="reload refused")
        t0 = time.time()
        assert srv.stop() == 0
        assert time.time() - t0 < 10


def test_store_path_too_long_for_socket():
    with Fixture() as fx:
        pki = fx.add(Pki())
        srv = _conf(fx, pki)
        long_store = os.path.join(srv.dir, "s" * 100)
        srv.conf["store"]["path"] = long_store
        srv.write_conf()
        want = "%s:%d:9: store.path: too long" % (
            srv.conf_path, _line_of(srv.conf_path, "path"))
        p = run("check-config", srv.conf_path, check=False)
        assert p.returncode == 2, p
        assert want in p.stderr, p.stderr
        assert "ipc.sock" in p.stderr, p.stderr
        p = run("serve", srv.conf_path, check=False)
        assert p.returncode == 2, p
        assert want in p.stderr, p.stderr


def test_long_error_list_ends_on_a_line():
    with Fixture() as fx:
        pki = fx.add(Pki())
        srv = _conf(fx, pki)
        with open(srv.conf_path, "a") as f:
            for i in range(60000):
                f.write("k%d: 1\n" % i)
        p = run("check-config", srv.conf_path, check=False)
        assert p.returncode == 2, p
        lines = p.stderr.rstrip("\n").split("\n")
        pat = re.compile(r"^%s:\d+:1: k(\d+): unknown key$" %
                         re.escape(srv.conf_path))
        shown = [pat.match(line) for line in lines[:-1]]
        assert all(shown), [l for l, m in zip(lines, shown) if not m][:3]
        assert len(shown) > 10
        m = re.match(r"^%s: (\d+) more errors not shown$" %
                     re.escape(srv.conf_path), lines[-1])
        assert m, lines[-1]
        assert len(shown) + int(m.group(1)) == 60000, (len(shown), m.group(1))


def test_check_config_speaks_as_the_cli():
    with Fixture() as fx:
        pki = fx.add(Pki())
        junk = os.path.join(pki.dir, "junk.key")
        with open(junk, "w") as f:
            f.write("not a key\n")
        os.chmod(junk, 0o600)
        srv = _conf(fx, pki, authority={"signing_key": junk})
        p = run("check-config", srv.conf_path, check=False)
        assert p.returncode == 2, p
        assert "master[" not in p.stderr, p.stderr
        for line in p.stderr.splitlines():
            assert line.startswith(("licproxy: ", srv.conf_path + ":")), \
                p.stderr


def test_unopenable_log_file():
    with Fixture() as fx:
        pki = fx.add(Pki())
        for bad, why in (("/nonexistent/dir/x.log", "No such file"),
                         ("/tmp", "Is a directory")):
            srv = _conf(fx, pki, log={"file": bad})
            want = '%s:%d:9: log.file: cannot open "%s": %s' % (
                srv.conf_path, _line_of(srv.conf_path, "file"), bad, why)
            p = run("check-config", srv.conf_path, check=False)
            assert p.returncode == 2, p
            assert want in p.stderr, p.stderr
            p = run("serve", srv.conf_path, check=False)
            assert p.returncode == 2, p
            assert want in p.stderr, p.stderr
            assert "error: configuration errors: exiting" in p.stderr, \
                p.stderr
        # check-config leaves no log file behind
        srv = _conf(fx, pki, log={"file": os.path.join(pki.dir, "new.log")})
        run("check-config", srv.conf_path)
        assert not os.path.exists(os.path.join(pki.dir, "new.log"))


def test_reload_switches_or_refuses_log_file():
    with Fixture() as fx:
        pki = fx.add(Pki())
        srv = fx.add(Server(pki, "authority", extra={"log": {
            "access": "true"}}))
        srv.start()
        key = srv.create_key()
        srv.conf["log"]["file"] = "/nonexistent/dir/x.log"
        srv.write_conf()
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in srv.logs(), what="refusal")
        assert 'log.file: cannot open "/nonexistent/dir/x.log"' in \
            srv.logs(), srv.logs()
        assert "reloaded: generation" not in srv.logs()
        assert srv.license(key).status == 200

        newlog = os.path.join(srv.dir, "new.log")
        srv.conf["log"]["file"] = newlog
        srv.write_conf()
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: os.path.exists(newlog) and
                 "reloaded: generation 1" in open(newlog).read(),
                 what="master logging to the new file")

        # a key the cache has not seen: the issuer signs its lease
        fresh = srv.create_key(name="fresh")

        def child_logs_there():
            srv.license(fresh)
            text = open(newlog).read()
            return "/v1/license" in text and "issued lease" in text
        wait_for(child_logs_there, what="worker and issuer in the new file")
        assert srv.stop() == 0


def test_check_config_reports_file_contents_at_their_keys():
    """A certificate that is not one and a signing key that is a public
    key: check-config reports both in one run, each as FILE:LINE:COL at
    its key (it stopped at the first, without a position); serve refuses
    the key as a configuration error, exit 2."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        srv = _conf(fx, pki)
        junk = os.path.join(srv.dir, "junk.pem")
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        srv.conf["server"]["tls_cert"] = junk
        pub = os.path.join(srv.dir, "public-as-signing.pem")
        with open(pki.pub) as f, open(pub, "w") as g:
            g.write(f.read())
        os.chmod(pub, 0o600)
        srv.conf["authority"]["signing_key"] = pub
        srv.write_conf()
        p = run("check-config", srv.conf_path, check=False)
        assert p.returncode == 2, p
        cert = "%s:%d:" % (srv.conf_path, _line_of(srv.conf_path, "tls_cert"))
        key = "%s:%d:" % (srv.conf_path,
                          _line_of(srv.conf_path, "signing_key"))
        lines = [ln for ln in p.stderr.splitlines()
                 if ln.startswith(srv.conf_path)]
        assert len(lines) == 2, p.stderr
        assert lines[0].startswith(cert) and \
            "server.tls_cert: %s: cannot load certificate" % junk \
            in lines[0], p.stderr
        assert lines[1].startswith(key) and "authority.signing_key" in \
            lines[1] and "not an Ed25519 private key" in lines[1], p.stderr
        srv.conf["server"]["tls_cert"] = pki.cert
        srv.write_conf()
        p = run("serve", srv.conf_path, check=False)
        assert p.returncode == 2, p
        assert key in p.stderr and "not an Ed25519 private key" in \
            p.stderr, p.stderr

"""Inputs an operator or a client can get wrong (issue 8 item 10): files
given to `cache import` that are not exports, plain-http upstream URLs,
absurd durations and sizes, and more X-Instance-Id values than the status
table tracks."""
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading

from lp import BIN, Fixture, Pki, Server, run


def authority(fx, pki, **kw):
    return fx.add(Server(pki, "authority", **kw))


def proxy(fx, pki, auth, pkey, name="proxy", **lic):
    conf = {"server_url": [auth.url], "ca_file": pki.ca,
            "trusted_keys": [pki.pub], "timeout": "1s"}
    conf.update(lic)
    return fx.add(Server(pki, "proxy", name=name, extra={"license": conf},
                         env={"LICPROXY_LICENSE_KEY": pkey}))


def loc_of(text, needle):
    """1-based line and column of the first `needle` in text."""
    for i, ln in enumerate(text.splitlines(), 1):
        if needle in ln:
            return i, ln.index(needle) + 1
    raise AssertionError(needle)


class TempDir:
    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="lp-inputs-")

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


# ---- cache import ----

def test_cache_import_refuses_what_is_not_an_export():
    """Binary junk, NUL bytes, an empty or blank file, an export cut short
    (mid-line, or just before its last newline), JSON of another shape and
    an export line with junk after a NUL: exit 2, a message naming the
    file, and no store made. The export itself imports (control)."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki)
        pkey = auth.create_key(name="proxy", role="proxy")
        key = auth.create_key()
        auth.start()
        p = proxy(fx, pki, auth, pkey).start()
        assert p.license(key).status == 200
        out = run("cache", "export", "--store", p.store).stdout
        lines = out.splitlines(keepends=True)
        assert len(lines) == 2 and out.endswith("\n"), out
        first = json.loads(lines[0])
        tmp = fx.add(TempDir())
        rnd = random.Random(8)
        junk = bytes(rnd.getrandbits(8) for _ in range(4096))
        cases = {
            "junk": junk,
            "zeros": b"\0" * 4096,
            "empty": b"",
            "blank": b"\n \n\t\r\n",
            "cut-mid-line": out.encode()[:len(lines[0]) + 40],
            "cut-before-newline": out.encode()[:-1],
            "wrapped": json.dumps({"leases": [json.loads(x)
                                              for x in lines]}).encode(),
            "array": (json.dumps([first]) + "\n").encode(),
            "extra-member": (json.dumps(dict(first, note="x")) +
                             "\n").encode(),
            "nul-then-junk": lines[0].encode()[:-1] + b"\0garbage\n",
            "long-line": b'{"sha256":"' + b"a" * 200000 + b'"}\n',
        }
        for name, data in cases.items():
            path = os.path.join(tmp.path, name)
            with open(path, "wb") as f:
                f.write(data)
            store = os.path.join(tmp.path, "store-" + name)
            r = run("cache", "import", "--store", store, "--trusted-key",
                    pki.pub, path, check=False)
            assert r.returncode == 2, (name, r)
            assert "nothing imported" in r.stderr and path in r.stderr, \
                (name, r.stderr)
            assert not os.path.exists(store), (name, "store was made")
        good = os.path.join(tmp.path, "good")
        with open(good, "w") as f:
            f.write(out)
        store = os.path.join(tmp.path, "store-good")
        r = run("cache", "import", "--store", store, "--trusted-key",
                pki.pub, good)
        assert "imported 2 leases, skipped 0 expired" in r.stderr, r
        assert run("cache", "export", "--store", store).stdout.count(
            "\n") == 2
        assert p.stop() == 0 and auth.stop() == 0


# ---- https only ----

def test_plain_http_upstream_refused():
    """An http:// server_url is a configuration error: check-config names
    FILE:LINE:COL and license.server_url; serve with it (or with
    --upstream http://...) exits 2 without listening."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki)
        pkey = auth.create_key(name="proxy", role="proxy")
        p = proxy(fx, pki, auth, pkey)
        plain = "http://127.0.0.1:%d" % auth.port
        p.conf["license"]["server_url"] = [auth.url, plain]
        p.write_conf()
        text = open(p.conf_path).read()
        line, col = loc_of(text, json.dumps(plain))
        env = dict(os.environ, LICPROXY_LICENSE_KEY=pkey)
        r = run("check-config", p.conf_path, check=False, env=env)
        assert r.returncode == 2, r
        want = "%s:%d:%d: license.server_url: must be an https:// URL" % (
            p.conf_path, line, col)
        assert want in r.stderr, (want, r.stderr)

        r = subprocess.run([BIN, "serve", p.conf_path], env=env,
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 2 and "license.server_url" in r.stderr, r

        p.conf["license"]["server_url"] = [auth.url]
        p.write_conf()
        assert run("check-config", p.conf_path, env=env).returncode == 0
        r = subprocess.run([BIN, "serve", p.conf_path, "--upstream", plain],
                           env=env, capture_output=True, text=True,
                           timeout=20)
        assert r.returncode == 2, r
        assert "license.server_url (--upstream): must be an https:// URL" \
            in r.stderr, r.stderr


# ---- durations and sizes ----

def test_absurd_durations_and_sizes_refused():
    """Durations and sizes that overflow, or that would break the daemon,
    are check-config errors at FILE:LINE:COL naming the key; all of them
    are reported in one run."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki)
        bad = {
            ("authority", "lease_ttl"): "10000000000h",
            ("authority", "lease_refresh"): "99999999999999999999999s",
            ("server", "header_timeout"): "20000000000h",
            ("server", "max_body"): "17179869183GiB",
            ("store", "max_size"): "1000000000GiB",
        }
        for (sect, k), v in bad.items():
            auth.conf.setdefault(sect, {})[k] = v
        auth.write_conf()
        text = open(auth.conf_path).read()
        r = run("check-config", auth.conf_path, check=False)
        assert r.returncode == 2, r
        for (sect, k), v in bad.items():
            line, col = loc_of(text, json.dumps(v))
            want = "%s:%d:%d: %s.%s: " % (auth.conf_path, line, col, sect, k)
            assert want in r.stderr, (want, r.stderr)
        # The largest values allowed still pass.
        auth.conf["authority"].update(lease_ttl="876000h",
                                      lease_refresh="60s")
        auth.conf["server"].update(header_timeout="595h", max_body="1GiB")
        auth.conf["store"]["max_size"] = "16384GiB"
        auth.write_conf()
        r = run("check-config", auth.conf_path, check=False)
        assert r.returncode == 0, r


# ---- instances ----

def _licenses(srv, key, ids):
    c = srv.conn()
    try:
        for i in ids:
            c.request("GET", "/v1/license", headers={
                "Authorization": "Token " + key, "X-Instance-Id": i})
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
    finally:
        c.close()


def _send_all(srv, key, ids, nconn=4):
    errs = []

    def one(part):
        try:
            _licenses(srv, key, part)
        except Exception as e:  # noqa: BLE001 - reported below
            errs.append(e)
    ts = [threading.Thread(target=one, args=(ids[i::nconn],))
          for i in range(nconn)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs, errs


def test_instances_counted_past_1024_and_overflow_reported():
    """More than 1024 distinct X-Instance-Id values through two workers are
    counted exactly (the old table capped and merged them); past the
    table's size the count says so (overflow true, a counter of sightings
    not tracked) instead of being silently wrong."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = authority(fx, pki)
        key = auth.create_key()
        auth.start()
        ids = ["inst-%05d" % i for i in range(1500)]
        _send_all(auth, key, ids)
        _send_all(auth, key, ids[:300])          # seen again: same count
        inst = auth.status_json()["instances"]
        tracked = inst.get("tracked_max")
        assert inst["active"] == 1500, inst
        assert inst.get("overflow") is False, inst
        assert auth.metrics()["licproxy_instances_active"] == 1500
        assert isinstance(tracked, int) and tracked >= 1500, inst

        more = ["more-%05d" % i for i in range(tracked - 1500 + 37)]
        _send_all(auth, key, more)
        inst = auth.status_json()["instances"]
        assert inst == {"active": tracked, "tracked_max": tracked,
                        "overflow": True}, inst
        m = auth.metrics()
        assert m["licproxy_instances_active"] == tracked, m
        assert m["licproxy_instances_untracked_total"] == 37, m
        assert auth.stop() == 0


def test_fifo_files_are_refused_not_waited_on():
    """A config file, license.key_file, signing key or TLS certificate
    path that names a FIFO is refused at once with a clear error: opening
    one for reading would otherwise wait for a writer forever, and the
    daemon would hang at start or on a reload with nothing in the log."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        tmp = fx.add(TempDir())
        fifo = os.path.join(tmp.path, "pipe")
        os.mkfifo(fifo, 0o600)

        def check(path, env=None):
            e = dict(os.environ)
            e.update(env or {})
            p = subprocess.run([BIN, "check-config", path],
                               capture_output=True, text=True, env=e,
                               timeout=20)
            assert p.returncode == 2, (p.returncode, p.stderr)
            return p.stderr

        err = check(fifo)
        assert "not a configuration file (not a regular file)" in err, err

        auth = authority(fx, pki)
        auth.conf["authority"]["signing_key"] = fifo
        auth.write_conf()
        err = check(auth.conf_path)
        assert "authority.signing_key" in err and fifo in err, err

        auth.conf["authority"]["signing_key"] = pki.signing
        auth.conf["server"]["tls_cert"] = fifo
        auth.write_conf()
        err = check(auth.conf_path)
        assert "server.tls_cert" in err and "not a regular file" in err, err

        px = proxy(fx, pki, auth, "", key_file=fifo)
        px.env.pop("LICPROXY_LICENSE_KEY", None)
        px.write_conf()
        err = check(px.conf_path, px.env)
        assert "license.key_file: %s: not a regular file" % fifo in err, err

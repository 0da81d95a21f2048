"""The command line as an operator meets it: help, version, unknown
commands and options, and the refusals of keys create (SPEC section 6)."""
import datetime
import json
import os
import tempfile

from lp import Fixture, Pki, Server, run, fake_key, key_id

COMMANDS = ["serve", "check-config", "keygen", "keys create", "keys list",
            "keys revoke", "usage", "cache export", "cache import", "check",
            "status", "version"]


def test_help_and_version():
    """--help everywhere is usage on stdout, exit 0; -V/--version/version
    print the version."""
    for args in (["--help"], ["-h"], ["help"]):
        p = run(*args)
        assert p.stderr == "", p
        for c in COMMANDS:
            assert "licproxy " + c in p.stdout, (args, c, p.stdout)
    for c in COMMANDS:
        p = run(*(c.split() + ["--help"]))
        assert p.stdout.startswith("usage: licproxy " + c), (c, p.stdout)
        assert p.stderr == "", (c, p.stderr)
        h = run("help", *c.split())
        assert h.stdout == p.stdout, (c, h.stdout, p.stdout)
    # status --help is help, not a URL to fetch
    p = run("status", "--help")
    assert "usage: licproxy status" in p.stdout and p.returncode == 0
    keys = run("help", "keys").stdout
    for c in ("keys create", "keys list", "keys revoke"):
        assert c in keys, keys
    want = run("version").stdout
    assert want.startswith("licproxy ") and want.count("\n") == 1, want
    for args in (["--version"], ["-V"]):
        assert run(*args).stdout == want


def test_unknown_command_and_option():
    """Unknown command or option: says which, usage on stderr, exit 2."""
    cases = [
        (["bogus"], 'licproxy: unknown command "bogus"'),
        (["help", "bogus"], 'licproxy: unknown command "bogus"'),
        (["keys", "frob"], 'licproxy: unknown command "keys frob"'),
        (["keys"], 'licproxy: "keys" needs a command'),
        (["serve", "--bogus"], 'licproxy: unknown option "--bogus"'),
        (["check-config", "--nope"], 'licproxy: unknown option "--nope"'),
        (["keys", "list", "--store", "/tmp/x", "--jsn"],
         'licproxy: unknown option "--jsn" for "keys list"'),
        (["status", "--url", "x"],
         'licproxy: unknown option "--url" for "status"'),
        (["usage", "--store"], 'licproxy: option "--store" needs a value'),
        (["serve", "--port"], 'licproxy: option "--port" needs a value'),
        (["version", "extra"], 'licproxy: unexpected argument "extra"'),
    ]
    for args, msg in cases:
        p = run(*args, check=False)
        assert p.returncode == 2, (args, p)
        assert p.stdout == "", (args, p.stdout)
        first = p.stderr.splitlines()[0]
        assert first == msg, (args, p.stderr)
        assert "usage:" in p.stderr, (args, p.stderr)


def test_keys_create_refusals():
    """keys create refuses (exit 2, saying what it got, nothing stored) a
    past --expires, empty product names and missing flags; revoking twice
    says so; keys list and usage on a proxy's store say where keys live."""
    with tempfile.TemporaryDirectory() as d:
        store = os.path.join(d, "store")
        yesterday = (datetime.date.today() -
                     datetime.timedelta(days=1)).isoformat()
        cases = [
            (["--name", "a", "--products", "api", "--expires", "2020-01-01"],
             "2020-01-01"),
            (["--name", "a", "--products", "api", "--expires", yesterday],
             yesterday),
            (["--name", "a", "--products", "a,,b"], '"a,,b"'),
            (["--name", "a", "--products", ",api"], '",api"'),
            (["--name", "a", "--products", "api,"], '"api,"'),
            (["--name", "a", "--products", "api,Bad"], '"Bad"'),
            (["--name", "a"], "--products is required"),
            (["--products", "api"], "--name NAME is required"),
            (["--name", "a", "--products", "api", "--role", "admin"],
             '"admin"'),
            (["--name", "a", "--products", "api", "--expires", "2026-02-30"],
             '"2026-02-30"'),
        ]
        for args, said in cases:
            p = run("keys", "create", "--store", store, *args, check=False)
            assert p.returncode == 2 and p.stdout == "", (args, p)
            assert p.stderr.startswith("licproxy: ") and said in p.stderr, \
                (args, p.stderr)
        # nothing was stored by any refusal (the store may not even exist)
        if os.path.exists(store):
            assert json.loads(run("keys", "list", "--store", store,
                                  "--json").stdout) == []
        tomorrow = (datetime.date.today() +
                    datetime.timedelta(days=1)).isoformat()
        k1 = run("keys", "create", "--store", store, "--name", "a",
                 "--products", "api,engine_2", "--expires", tomorrow
                 ).stdout.strip()
        k2 = run("keys", "create", "--store", store, "--name", "b",
                 "--products", "api", "--expires", "never").stdout.strip()
        rows = {r["key_id"]: r for r in json.loads(
            run("keys", "list", "--store", store, "--json").stdout)}
        assert rows[key_id(k1)]["products"] == ["api", "engine_2"]
        assert rows[key_id(k1)]["expires"] == tomorrow
        assert rows[key_id(k2)].get("expires") is None
        r1 = run("keys", "revoke", "--store", store, key_id(k2))
        assert r1.stderr.strip() == "revoked %s" % key_id(k2), r1.stderr
        r2 = run("keys", "revoke", "--store", store, key_id(k2))
        assert "already revoked" in r2.stderr, r2.stderr
        r3 = run("keys", "revoke", "--store", store,
                 key_id(fake_key("none")), check=False)
        assert r3.returncode == 1 and "no key with key_id" in r3.stderr


def test_cli_messages_prefixed_and_proxy_store_hint():
    """CLI messages say licproxy:, never a daemon role; keys list and usage
    on a proxy's store say that keys and the ledger live upstream."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority"))
        auth.start()
        key = auth.create_key(name="svc")
        relay = auth.create_key(name="relay", role="proxy")
        proxy = fx.add(Server(pki, "proxy", name="proxy", extra={"license": {
            "server_url": [auth.url], "ca_file": pki.ca,
            "trusted_keys": [pki.pub], "timeout": "1s"}},
            env={"LICPROXY_LICENSE_KEY": relay}))
        proxy.start()
        assert proxy.license(key).status == 200
        for args in (["keys", "list", "--store", proxy.store],
                     ["usage", "--store", proxy.store]):
            p = run(*args)
            assert "proxy's store" in p.stderr and "authority" in p.stderr, \
                (args, p.stderr)
            # the proxy's own key and the client's
            assert "2 cached leases" in p.stderr, p.stderr
        # an authority's empty ledger is not a proxy: no hint there
        p = run("usage", "--store", auth.store)
        assert p.stderr == "", p.stderr
        # a CLI client error: prefixed licproxy:, no "master[pid]"
        p = run("status", "http://127.0.0.1:1", check=False)
        assert p.returncode != 0
        for line in p.stderr.splitlines():
            assert line.startswith("licproxy: "), p.stderr
            assert "master[" not in line, p.stderr


def test_check_config_reports_every_error():
    """A wrong port and a missing user are both reported; a directory given
    as CONFIG says so."""
    with tempfile.TemporaryDirectory() as d:
        cf = os.path.join(d, "c.yaml")
        with open(cf, "w") as f:
            f.write("mode: authority\nserver:\n  port: 0\n"
                    "  user: no_such_user_lp\n")
        p = run("check-config", cf, check=False)
        assert p.returncode == 2
        assert "%s:3:9: server.port" % cf in p.stderr, p.stderr
        assert '%s:4:9: server.user: no such user "no_such_user_lp"' % cf \
            in p.stderr, p.stderr
        p = run("check-config", d, check=False)
        assert p.returncode == 2
        assert p.stderr.strip() == "%s: not a configuration file " \
            "(a directory)" % d, p.stderr


K40 = "A" * 40


def test_missing_store_is_a_usage_error():
    """No --store is a usage error (exit 2) for every command that needs
    one; a --store that is there but will not open is a runtime error
    (exit 1)."""
    with tempfile.TemporaryDirectory() as d:
        pub = os.path.join(d, "k")
        run("keygen", pub)
        cases = [
            ["keys", "create", "--name", "a", "--products", "api"],
            ["keys", "list"],
            ["keys", "revoke", key_id(fake_key("x"))],
            ["usage"],
            ["seats", "list"],
            ["cache", "export"],
            ["cache", "import", "--trusted-key", pub + ".pub", pub],
        ]
        for args in cases:
            p = run(*args, check=False)
            assert p.returncode == 2, (args, p)
            assert p.stderr.startswith(
                "licproxy: --store DIR is required\nusage: "), (args, p)
        # a regular file where the store's directory should be
        notdir = os.path.join(d, "file")
        open(notdir, "w").close()
        for args in (["keys", "list"], ["usage"], ["cache", "export"],
                     ["keys", "create", "--name", "a", "--products", "api"]):
            p = run(*args, "--store", os.path.join(notdir, "s"), check=False)
            assert p.returncode == 1, (args, p)
            assert p.stderr.startswith("licproxy: "), (args, p.stderr)


def test_extra_arguments_and_repeated_options_refused():
    """An argument a command does not take, or a value option given
    twice, is refused (exit 2, naming it) before anything is done; it is
    never silently dropped."""
    with tempfile.TemporaryDirectory() as d:
        store = os.path.join(d, "store")
        k1 = run("keys", "create", "--store", store, "--name", "a",
                 "--products", "api").stdout.strip()
        k2 = run("keys", "create", "--store", store, "--name", "b",
                 "--products", "api").stdout.strip()
        id1, id2 = key_id(k1), key_id(k2)
        cases = [
            (["keys", "create", "--store", store, "--name", "x",
              "--products", "a", "extra"], 'unexpected argument "extra"'),
            (["keys", "create", "--store", store, "--name", "x", "--name",
              "y", "--products", "a"], 'option "--name" given twice'),
            (["keys", "revoke", "--store", store, id1, id2],
             'unexpected argument "%s"' % id2),
            (["keys", "list", "--store", store, "extra"],
             'unexpected argument "extra"'),
            (["keys", "list", "--store", store, "--store", store],
             'option "--store" given twice'),
            (["seats", "list", "--store", store, "extra"],
             'unexpected argument "extra"'),
            (["seats", "release", "--store", store, id1, id2, "--instance",
              "i1"], 'unexpected argument "%s"' % id2),
            (["usage", "--store", store, "extra"],
             'unexpected argument "extra"'),
            (["cache", "export", "--store", store, "extra"],
             'unexpected argument "extra"'),
            (["cache", "import", "--store", store, "--trusted-key", "p",
              "f1", "f2"], 'unexpected argument "f2"'),
            (["status", "http://127.0.0.1:1", "extra"],
             'unexpected argument "extra"'),
            (["check", "http://127.0.0.1:1", "--key", K40, "--key", K40],
             'option "--key" given twice'),
            (["keygen", os.path.join(d, "a"), os.path.join(d, "b")],
             'unexpected argument "%s"' % os.path.join(d, "b")),
        ]
        for args, said in cases:
            p = run(*args, check=False)
            assert p.returncode == 2 and p.stdout == "", (args, p)
            assert p.stderr.splitlines()[0] == "licproxy: " + said, \
                (args, p.stderr)
            assert "usage: licproxy " in p.stderr, (args, p.stderr)
        rows = json.loads(run("keys", "list", "--store", store,
                              "--json").stdout)
        assert sorted(r["name"] for r in rows) == ["a", "b"], rows
        assert all(r["status"] == "active" for r in rows), rows
        assert not os.path.exists(os.path.join(d, "a"))
        # the KEY_ID may come before the option, and an option's value
        # is never taken for the KEY_ID
        run("keys", "revoke", id1, "--store", store)
        rows = {r["key_id"]: r for r in json.loads(
            run("keys", "list", "--json", "--store", store).stdout)}
        assert rows[id1]["status"] == "revoked", rows
        assert rows[id2]["status"] == "active", rows


def test_status_of_something_else():
    """status of a URL that answers JSON that is no licproxy status (a 404
    body, the TLS port spoken to in plain HTTP) says so, exit 1, and
    prints no (null) fields."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority"))
        auth.start()
        ok = run("status", "http://127.0.0.1:%d" % auth.status_port)
        assert "Authority" in ok.stdout, ok.stdout
        for url in ("http://127.0.0.1:%d/v1/status" % auth.status_port,
                    "http://127.0.0.1:%d" % auth.port):
            p = run("status", url, check=False)
            assert p.returncode == 1, (url, p)
            assert "(null)" not in p.stdout + p.stderr, (url, p)
            assert p.stdout == "", (url, p.stdout)
            assert p.stderr.startswith("licproxy: %s: not a licproxy "
                                       "status" % url), (url, p.stderr)


def test_check_tries_every_url_prefixed():
    """check tries every URL, also those after an option, and says what
    went wrong with each, prefixed licproxy:."""
    p = run("check", "https://127.0.0.1:1", "--key", K40,
            "https://127.0.0.1:2", check=False)
    assert p.returncode == 4, p
    lines = p.stderr.splitlines()
    assert len(lines) == 2, p.stderr
    assert lines[0].startswith("licproxy: https://127.0.0.1:1: "), lines
    assert lines[1].startswith("licproxy: https://127.0.0.1:2: "), lines
    p = run("check", "notaurl", "--key", K40, check=False)
    assert p.returncode == 4, p
    assert p.stderr.startswith("licproxy: notaurl: "), p.stderr
    p = run("check", "--key", K40, check=False)
    assert p.returncode == 2, p
    assert p.stderr.startswith("licproxy: check: give at least one URL\n"
                               "usage: licproxy check"), p.stderr


def test_cache_import_missing_file_prefixed():
    """cache import of a file that is not there says so, prefixed."""
    with tempfile.TemporaryDirectory() as d:
        key = os.path.join(d, "k")
        run("keygen", key)
        missing = os.path.join(d, "nonexist")
        p = run("cache", "import", "--store", os.path.join(d, "s"),
                "--trusted-key", key + ".pub", missing, check=False)
        assert p.returncode != 0, p
        assert p.stderr == "licproxy: %s: No such file or directory\n" % \
            missing, p.stderr


def test_keygen_never_overwrites():
    """keygen refuses an existing PATH or PATH.pub, and a symlink (exit 1,
    saying so): an authority's signing key is never replaced by accident;
    no half of a pair is left behind."""
    with tempfile.TemporaryDirectory() as d:
        key = os.path.join(d, "authority.key")
        run("keygen", key)
        with open(key) as f:
            before = f.read()
        with open(key + ".pub") as f:
            before_pub = f.read()
        p = run("keygen", key, check=False)
        assert p.returncode == 1, p
        assert p.stderr.startswith("licproxy: %s exists; remove it first\n"
                                   % key), p.stderr
        with open(key) as f:
            assert f.read() == before
        with open(key + ".pub") as f:
            assert f.read() == before_pub
        # a symlink, even one to nothing, is not followed
        target, link = os.path.join(d, "target"), os.path.join(d, "link")
        os.symlink(target, link)
        p = run("keygen", link, check=False)
        assert p.returncode == 1 and "exists" in p.stderr, p
        assert not os.path.exists(target)
        assert not os.path.exists(link + ".pub")
        # PATH.pub there: PATH is not left behind
        other = os.path.join(d, "other.key")
        open(other + ".pub", "w").close()
        p = run("keygen", other, check=False)
        assert p.returncode == 1, p
        assert "%s.pub exists; remove it first" % other in p.stderr, p.stderr
        assert not os.path.exists(other)

"""The packages: `make deb` / `make rpm` (built once per run, from a clean
copy of the tree), their contents, scripts and lint, the unit's hardening,
and a real install, upgrade, remove and purge of the .deb on this machine
(as root; it leaves the machine as it found it)."""
import glob
import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile

import lp

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DIST = os.path.join(ROOT, "dist")
UNIT = os.path.join(ROOT, "packaging", "licproxy.service")
VERSION = open(os.path.join(ROOT, "VERSION")).read().strip()
BUMPED = VERSION + "+up1"       # sorts after VERSION for dpkg
BUILD_TIMEOUT = 300

# rpmlint findings that are choices, each explained in packaging/README.md.
RPMLINT_EXPLAINED = {
    "non-standard-dir-perm",    # /etc/licproxy/tls 0750, /var/lib/licproxy 0700
    "non-readable",             # licproxy.yaml 0640 root:licproxy
    "no-signature",             # packages are signed at release, not here
    "no-packager-tag",          # set by the build system that signs
    "no-group-tag",             # Group: is obsolete on Fedora/RHEL 8+
    "bad-manual-page-folder",   # licproxy.yaml.5 read as section "yaml"
}

_built = {}


def sh(*args, check=True, env=None, timeout=120):
    """env: extra variables; a value of None removes the variable."""
    e = dict(os.environ)
    e.update(env or {})
    e = {k: v for k, v in e.items() if v is not None}
    p = subprocess.run(list(args), capture_output=True, text=True, env=e,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("%s -> %d\n%s%s" % (" ".join(args), p.returncode,
                                                 p.stdout, p.stderr))
    return p


def build(kind, version=VERSION):
    """dist/ file of `make KIND` (PKG_VERSION=version), built once a run."""
    if not _built:
        sh(os.path.join(ROOT, "packaging/build.sh"), "tools",
           timeout=BUILD_TIMEOUT)
    if (kind, version) not in _built:
        env = {} if version == VERSION else {"PKG_VERSION": version}
        # A package is always the release build: `make test SANITIZE=1`
        # must not hand SANITIZE (through MAKEFLAGS) to the package's make.
        env.update({"MAKEFLAGS": None, "MFLAGS": None, "MAKELEVEL": None,
                    "SANITIZE": None})
        before = sh("git", "-C", ROOT, "status", "--porcelain",
                    "--untracked-files=all").stdout
        out = sh("make", "-s", "-C", ROOT, kind, env=env,
                 timeout=BUILD_TIMEOUT).stdout.strip().splitlines()[-1]
        after = sh("git", "-C", ROOT, "status", "--porcelain",
                   "--untracked-files=all").stdout
        # dist/ is the only thing the build adds to the checkout.
        extra = [ln for ln in after.splitlines() if ln not in
                 before.splitlines() and "dist/" not in ln]
        assert extra == [], extra
        _built[(kind, version)] = os.path.join(ROOT, out)
    return _built[(kind, version)]


def test_one_version_everywhere():
    changelog = open(os.path.join(ROOT, "packaging/debian/changelog")).readline()
    spec = open(os.path.join(ROOT, "packaging/rpm/licproxy.spec")).read()
    assert changelog.startswith("licproxy (%s)" % VERSION), changelog
    assert re.search(r"^Version:\s+%s$" % re.escape(VERSION), spec, re.M)
    assert lp.run("version").stdout.strip() == "licproxy " + VERSION


def deb_listing(deb):
    """{path: (mode string, owner)} from dpkg-deb -c."""
    res = {}
    for ln in sh("dpkg-deb", "-c", deb).stdout.splitlines():
        f = ln.split()
        path = f[5].lstrip(".").rstrip("/") or "/"
        res[path] = (f[0], f[1])
    return res


def test_deb_contents_and_lintian():
    deb = build("deb")
    arch = sh("dpkg-architecture", "-qDEB_HOST_ARCH").stdout.strip()
    assert os.path.basename(deb) == "licproxy_%s_%s.deb" % (VERSION, arch)
    files = deb_listing(deb)
    want = {
        "/usr/bin/licproxy": "-rwxr-xr-x",
        "/etc/licproxy/licproxy.yaml": "-rw-r-----",
        "/lib/systemd/system/licproxy.service": "-rw-r--r--",
        "/usr/share/man/man8/licproxy.8.gz": "-rw-r--r--",
        "/usr/share/man/man5/licproxy.yaml.5.gz": "-rw-r--r--",
        "/usr/share/doc/licproxy/examples/licproxy.yaml": "-rw-r--r--",
        "/usr/share/doc/licproxy/OPERATIONS.md.gz": "-rw-r--r--",
        "/usr/libexec/licproxy/upgrade-running": "-rwxr-xr-x",
    }
    for path, mode in want.items():
        assert path in files, (path, sorted(files))
        assert files[path][0] == mode, (path, files[path])
    assert sh("dpkg-deb", "-f", deb, "Version").stdout.strip() == VERSION
    ctl = tempfile.mkdtemp(prefix="lp-deb-")
    try:
        sh("dpkg-deb", "-e", deb, ctl)
        with open(os.path.join(ctl, "conffiles")) as f:
            assert f.read().split() == ["/etc/licproxy/licproxy.yaml"]
        with open(os.path.join(ctl, "postinst")) as f:
            postinst = f.read()
        # An upgrade re-executes the binary (USR2), never a restart.
        assert "/usr/libexec/licproxy/upgrade-running" in postinst
        assert not re.search(r"(systemctl|invoke)[^\n]*restart", postinst)
    finally:
        shutil.rmtree(ctl)
    out = sh("lintian", "--no-tag-display-limit", deb, check=False)
    errors = [ln for ln in out.stdout.splitlines() if ln.startswith("E:")]
    assert errors == [], out.stdout
    readme = open(os.path.join(ROOT, "packaging/README.md")).read()
    for ln in out.stdout.splitlines():
        if ln.startswith("W:"):
            tag = ln.split()[2]
            assert tag in readme, "lintian warning not explained: " + ln


def test_rpm_contents_scripts_and_scratch_root():
    rpm = build("rpm")
    assert re.fullmatch(r"licproxy-%s-\d+\.x86_64\.rpm" % re.escape(VERSION),
                        os.path.basename(rpm)), rpm
    listing = sh("rpm", "-qlvp", rpm).stdout
    files = {}
    for ln in listing.splitlines():
        f = ln.split()
        files[f[8]] = (f[0], f[2], f[3])
    assert files["/usr/bin/licproxy"][0] == "-rwxr-xr-x"
    assert files["/etc/licproxy/licproxy.yaml"] == ("-rw-r-----", "root",
                                                    "licproxy")
    assert files["/var/lib/licproxy"] == ("drwx------", "licproxy",
                                          "licproxy")
    for path in ("/usr/lib/systemd/system/licproxy.service",
                 "/usr/libexec/licproxy/upgrade-running",
                 "/usr/share/man/man8/licproxy.8",
                 "/usr/share/man/man5/licproxy.yaml.5",
                 "/usr/share/doc/licproxy/examples/licproxy.yaml"):
        assert any(p.startswith(path) for p in files), (path, sorted(files))
    for p in files:
        assert p.startswith(("/usr/bin/", "/usr/lib/", "/usr/libexec/",
                             "/usr/share/", "/etc/licproxy",
                             "/var/lib/licproxy")), p
        assert not p.startswith("/usr/com"), p
    conf = sh("rpm", "-qp", "--configfiles", rpm).stdout.split()
    assert conf == ["/etc/licproxy/licproxy.yaml"], conf
    scripts = sh("rpm", "-qp", "--scripts", rpm).stdout
    assert not re.search(r"%\{?[A-Za-z_]", scripts), scripts
    assert "useradd -r" in scripts
    assert "/usr/libexec/licproxy/upgrade-running" in scripts
    assert not re.search(r"systemctl[^\n]*restart", scripts), scripts
    assert "[ -d /run/systemd/system ]" in scripts
    out = sh("rpmlint", rpm, check=False).stdout
    for ln in out.splitlines():
        if ": E: " in ln:
            assert ln.split(": E: ")[1].split()[0] in RPMLINT_EXPLAINED, ln
    # Into a scratch root: owners come from that root's passwd, so give it
    # the user %pre would create (scriptlets need a shell the root lacks).
    root = tempfile.mkdtemp(prefix="lp-rpmroot-")
    try:
        os.makedirs(os.path.join(root, "etc"))
        with open(os.path.join(root, "etc/passwd"), "w") as f:
            f.write("root:x:0:0::/root:/bin/sh\n"
                    "licproxy:x:990:990::/var/lib/licproxy:/sbin/nologin\n")
        with open(os.path.join(root, "etc/group"), "w") as f:
            f.write("root:x:0:\nlicproxy:x:990:\n")
        db = ["--root", root, "--dbpath", "/var/lib/rpm"]
        sh("rpm", *db, "--initdb")
        sh("rpm", *db, "--nodeps", "--noscripts", "-i", rpm)
        assert sh("rpm", *db, "-q", "licproxy").stdout.startswith(
            "licproxy-" + VERSION)
        st = os.stat(os.path.join(root, "etc/licproxy/licproxy.yaml"))
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (
            0o640, 0, 990)
        st = os.stat(os.path.join(root, "var/lib/licproxy"))
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 990)
        assert not os.path.exists(os.path.join(root, "usr/com"))
        out = sh(os.path.join(root, "usr/bin/licproxy"), "version").stdout
        assert out.strip() == "licproxy " + VERSION
    finally:
        shutil.rmtree(root)


def test_unit_hardening_score():
    sh(os.path.join(ROOT, "packaging/build.sh"), "tools",
       timeout=BUILD_TIMEOUT)
    p = sh("systemd-analyze", "security", "--offline=true", UNIT,
           check=False)
    m = re.search(r"Overall exposure level for licproxy.service: ([0-9.]+)",
                  p.stdout + p.stderr)
    assert m, p.stdout + p.stderr
    print("exposure %s" % m.group(1))
    assert float(m.group(1)) < 3.0, p.stdout
    text = open(UNIT).read()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text   # reload keeps HUP


# -- a real install on this machine --

def installed():
    return sh("dpkg-query", "-W", "-f", "${Status}", "licproxy",
              check=False).stdout.endswith("installed")


def dpkg(*args):
    # --force-confold: never ask about a conffile (no terminal here).
    return sh("dpkg", "--force-confold", *args,
              env={"DEBIAN_FRONTEND": "noninteractive"})


def complete_config():
    """Certificate, key, authority key and license key where the sample
    configuration names them, as the README tells an operator."""
    pki = lp.Pki("pkg")
    try:
        os.makedirs("/etc/licproxy/tls", exist_ok=True)
        shutil.copy(pki.cert, "/etc/licproxy/tls/server.crt")
        shutil.copy(pki.key, "/etc/licproxy/tls/server.key")
        os.chmod("/etc/licproxy/tls/server.key", 0o600)
    finally:
        pki.cleanup()
    sh("/usr/bin/licproxy", "keygen", "/etc/licproxy/authority.key")
    fd = os.open("/etc/licproxy/license.key", os.O_WRONLY | os.O_CREAT,
                 0o600)
    os.write(fd, b"A" * 40 + b"\n")
    os.close(fd)


def no_licproxy_running():
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.readlink("/proc/%s/exe" % d) == "/usr/bin/licproxy":
                    return False
            except OSError:
                pass
    return True


def serve_once():
    """The installed binary, as root, as an authority on the package's
    store (children drop to licproxy): one lease, then stop. Returns it."""
    pki = lp.Pki("pkg")
    srv = lp.Server(pki, "authority", workers=1, extra={
        "store": {"path": "/var/lib/licproxy"},
        "server": {"user": "licproxy"}})
    srv.store = "/var/lib/licproxy"
    saved, lp.BIN = lp.BIN, "/usr/bin/licproxy"
    try:
        key = srv.create_key(name="kept", products="api")
        srv.start()
        r = srv.license(key)
        assert r.status == 200, r
        assert srv.stop() == 0
        return r.json()["lease"]
    finally:
        lp.BIN = saved
        srv.cleanup()
        pki.cleanup()


def check_installed(version):
    assert installed()
    assert sh("/usr/bin/licproxy", "version").stdout.strip() == \
        "licproxy " + version
    pw = pwd.getpwnam("licproxy")
    gr = grp.getgrnam("licproxy")
    st = os.stat("/etc/licproxy/licproxy.yaml")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (
        0o640, 0, gr.gr_gid)
    st = os.stat("/var/lib/licproxy")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, pw.pw_uid)
    # Installed without systemd running: nothing was started.
    assert no_licproxy_running()


def test_deb_install_upgrade_remove_purge():
    if os.geteuid() != 0:
        print("SKIP: installing a package needs root")
        return
    if not installed() and (os.path.exists("/etc/licproxy") or
                            os.path.exists("/var/lib/licproxy")):
        print("SKIP: /etc/licproxy or /var/lib/licproxy exist without the "
              "package; a purge would delete them")
        return
    deb, newer = build("deb"), build("deb", BUMPED)
    if installed():
        dpkg("--purge", "licproxy")
    try:
        out = dpkg("-i", deb)
        assert "warning" not in out.stderr.lower(), out.stderr
        check_installed(VERSION)
        complete_config()
        out = sh("/usr/bin/licproxy", "check-config")
        assert "configuration OK" in out.stdout, out.stdout
        # The unit verifies now that its binary and man pages are there.
        out = sh("systemd-analyze", "verify",
                 "/lib/systemd/system/licproxy.service", check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        # An operator's edit, and a lease in the store.
        with open("/etc/licproxy/licproxy.yaml", "a") as f:
            f.write("# edited by the operator\n")
        lease = serve_once()
        out = dpkg("-i", newer)
        check_installed(BUMPED)
        with open("/etc/licproxy/licproxy.yaml") as f:
            assert "# edited by the operator" in f.read()
        man = sh("zcat", "/usr/share/man/man8/licproxy.8.gz").stdout
        assert '"licproxy %s"' % BUMPED in man.splitlines()[0], man[:200]
        assert not glob.glob("/etc/licproxy/licproxy.yaml.dpkg-*")
        keys = sh("/usr/bin/licproxy", "keys", "list", "--store",
                  "/var/lib/licproxy").stdout
        assert "kept" in keys, keys
        assert lease in sh("/usr/bin/licproxy", "cache", "export", "--store",
                           "/var/lib/licproxy").stdout
        # Remove keeps configuration, keys and store.
        dpkg("--remove", "licproxy")
        assert not os.path.exists("/usr/bin/licproxy")
        for path in ("/etc/licproxy/licproxy.yaml", "/etc/licproxy/tls/"
                     "server.key", "/var/lib/licproxy/data.mdb"):
            assert os.path.exists(path), path
        pwd.getpwnam("licproxy")
        # Purge removes them, with the directories, and says nothing.
        out = dpkg("--purge", "licproxy")
        assert "warning" not in (out.stdout + out.stderr).lower(), \
            out.stdout + out.stderr
        for path in ("/etc/licproxy", "/var/lib/licproxy"):
            assert not os.path.exists(path), path
        assert not installed()
    finally:
        if installed() or os.path.exists("/var/lib/dpkg/info/licproxy.list"):
            sh("dpkg", "--purge", "licproxy", check=False)

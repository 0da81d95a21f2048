"""Harness for the integration tests: real binary, real TLS, real LMDB
stores in temp dirs, random free ports. No mocks."""
import base64
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time

BIN = os.environ.get("LICPROXY") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "licproxy")
BIN = os.path.abspath(BIN)
# `make valgrind`: the daemon runs under this command (never set in
# production); everything it does then takes up to this many times longer,
# so every wait_for waits that much longer.
WRAP = shlex.split(os.environ.get("LICPROXY_WRAP", ""))
SLOW = 5 if WRAP else 1


# Every port handed out in this run: the kernel may give a just-closed
# ephemeral port out again, and two servers (or one server's port and
# status_port) drawing the same number fail to start.
_ports_given = set()


def free_port():
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _ports_given:
            _ports_given.add(port)
            return port


def run(*args, env=None, input=None, check=True):
    """Run the CLI; returns CompletedProcess (text)."""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([BIN] + [str(a) for a in args], capture_output=True,
                       text=True, env=e, input=input, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError("licproxy %s -> %d\n%s%s" % (
            " ".join(map(str, args)), p.returncode, p.stdout, p.stderr))
    return p


def wait_for(pred, timeout=10.0, step=0.05, what="condition"):
    end = time.time() + timeout * SLOW
    last = None
    while time.time() < end:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - retried until timeout
            last = e
        time.sleep(step)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


class Pki:
    """A temp dir with a CA, a server certificate for 127.0.0.1/localhost
    signed by it, and an Ed25519 signing key pair."""

    def __init__(self, name="pki"):
        self.dir = tempfile.mkdtemp(prefix="lp-%s-" % name)
        d = self.dir
        self.ca = os.path.join(d, "ca.crt")
        self.ca_key = os.path.join(d, "ca.key")
        self.cert = os.path.join(d, "server.crt")
        self.key = os.path.join(d, "server.key")
        self.signing = os.path.join(d, "signing.key")
        self.pub = self.signing + ".pub"
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes", "-subj",
                      "/CN=licproxy test CA", "-days", "3", "-keyout",
                      self.ca_key, "-out", self.ca)
        self.issue(self.cert, self.key, "localhost",
                   "subjectAltName=DNS:localhost,IP:127.0.0.1")
        run("keygen", self.signing)

    def _openssl(self, *args):
        subprocess.run(["openssl"] + list(args), check=True,
                       capture_output=True)

    def issue(self, cert, key, cn, ext=None):
        csr = cert + ".csr"
        self._openssl("req", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes", "-subj",
                      "/CN=" + cn, "-keyout", key, "-out", csr)
        extfile = cert + ".ext"
        with open(extfile, "w") as f:
            f.write((ext or "subjectAltName=DNS:" + cn) + "\n")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey",
                      self.ca_key, "-CAcreateserial", "-days", "3",
                      "-extfile", extfile, "-out", cert)
        os.chmod(key, 0o600)

    def context(self, **kw):
        ctx = ssl.create_default_context(cafile=self.ca)
        for k, v in kw.items():
            setattr(ctx, k, v)
        return ctx

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def to_yaml(d, indent=0):
    out = []
    pad = "  " * indent
    for k, v in d.items():
        if isinstance(v, dict):
            out.append("%s%s:" % (pad, k))
            out.append(to_yaml(v, indent + 1))
        elif isinstance(v, list):
            out.append("%s%s: [%s]" % (pad, k, ", ".join(
                json.dumps(str(x)) for x in v)))
        else:
            out.append("%s%s: %s" % (pad, k, json.dumps(v) if isinstance(
                v, str) else v))
    return "\n".join(out)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:300])


class Server:
    """One `licproxy serve` (the master) with its own store and ports."""

    def __init__(self, pki, mode="authority", workers=2, extra=None,
                 env=None, name=None):
        self.pki = pki
        self.mode = mode
        self.dir = tempfile.mkdtemp(prefix="lp-%s-" % (name or mode))
        self.store = os.path.join(self.dir, "store")
        self.port = free_port()
        self.status_port = free_port()
        self.conf_path = os.path.join(self.dir, "licproxy.yaml")
        self.log_path = os.path.join(self.dir, "licproxy.log")
        self.env = env or {}
        self.proc = None
        self.conf = {
            "mode": mode,
            "server": {
                "host": "127.0.0.1", "port": self.port,
                "status_host": "127.0.0.1", "status_port": self.status_port,
                "workers": workers, "tls_cert": pki.cert,
                "tls_key": pki.key,
            },
            "store": {"path": self.store},
            "log": {"level": "debug"},
        }
        if mode == "authority":
            self.conf["authority"] = {"signing_key": pki.signing}
        for section, values in (extra or {}).items():
            if isinstance(values, dict):
                self.conf.setdefault(section, {}).update(values)
            else:
                self.conf[section] = values

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.port

    def write_conf(self):
        with open(self.conf_path, "w") as f:
            f.write(to_yaml(self.conf) + "\n")

    def start(self, wait=True, args=()):
        self.write_conf()
        e = dict(os.environ)
        e.update(self.env)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(WRAP + [BIN, "serve", self.conf_path] +
                                     list(args), stdout=self.log,
                                     stderr=subprocess.STDOUT, env=e)
        if wait:
            wait_for(self._healthy, what="licproxy to listen")
            wait_for(lambda: self.status_json().get("state") !=
                     "Initializing", what="first state")
            # the first worker answers while the master may still be
            # forking the others (slow on a sanitizer build)
            wait_for(self._all_children, what="every child started")
        return self

    def _all_children(self):
        p = self.status_json()["processes"]
        return p["workers_alive"] == p["workers"] > 0 and p["uplink_alive"]

    def _healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError("licproxy exited %d:\n%s" % (
                self.proc.returncode, self.logs()))
        return self.status("/healthz").status == 200

    def logs(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def kill(self):
        """SIGKILL the master and every child (a crash of the whole proxy)."""
        kids = self.children()
        self.proc.kill()
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        wait_for(lambda: not any(os.path.exists("/proc/%d" % p)
                                 for p in kids), what="children to die")
        self.log.close()

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        found = self.sanitizer_reports()
        shutil.rmtree(self.dir, ignore_errors=True)
        if found:
            raise AssertionError("sanitizer report in %s log:\n%s" % (
                self.mode, found))

    def sanitizer_reports(self):
        """ASan/UBSan findings (make test SANITIZE=1) in this log."""
        try:
            text = self.logs()
        except OSError:
            return ""
        for marker in ("ERROR: AddressSanitizer", "runtime error:",
                       "ERROR: LeakSanitizer"):
            i = text.find(marker)
            if i != -1:
                return text[max(0, i - 200):i + 2000]
        # valgrind memcheck (make valgrind)
        m = re.search(r"==\d+== (Invalid (read|write|free)|Mismatched free|"
                      r"Syscall param .* points to unaddressable|"
                      r"[1-9][\d,]* bytes in [\d,]+ blocks are definitely "
                      r"lost)", text)
        if m:
            return text[max(0, m.start() - 200):m.start() + 3000]
        return ""

    # -- processes --
    def children(self):
        return sorted(ppid_map().get(self.proc.pid, []))

    def children_by_comm(self):
        res = {}
        for pid in self.children():
            try:
                res.setdefault(comm(pid), []).append(pid)
            except OSError:
                pass
        return res

    # -- HTTP --
    def conn(self, ctx=None, timeout=15):
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, timeout=timeout,
            context=ctx or self.pki.context())

    def request(self, method, path, key=None, body=None, headers=None,
                conn=None, scheme="Token"):
        h = dict(headers or {})
        if key is not None:
            h["Authorization"] = "%s %s" % (scheme, key)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        own = conn is None
        c = conn or self.conn()
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read().decode()
            return Response(r.status, {k.lower(): v for k, v in
                                       r.getheaders()}, data)
        finally:
            if own:
                c.close()

    def license(self, key, **kw):
        return self.request("GET", "/v1/license", key=key, **kw)

    def usage(self, key, records, **kw):
        return self.request("POST", "/v1/usage", key=key,
                            body={"records": records}, **kw)

    def status(self, path="/v1/status"):
        c = http.client.HTTPConnection("127.0.0.1", self.status_port,
                                       timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return Response(r.status, {k.lower(): v for k, v in
                                       r.getheaders()}, r.read().decode())
        finally:
            c.close()

    def status_json(self):
        return self.status().json()

    def metrics(self):
        """{ 'name{labels}': value } from /metrics."""
        m = {}
        for line in self.status("/metrics").body.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                m[k] = float(v)
        return m

    # -- keys (authority) --
    def create_key(self, name="svc", products="api,engine", role=None,
                   expires=None):
        args = ["keys", "create", "--store", self.store, "--name", name,
                "--products", products]
        if role:
            args += ["--role", role]
        env = None
        if expires:
            args += ["--expires", expires]
            env = backdated_env(expires)
        return run(*args, env=env).stdout.strip()


FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def backdated_env(day):
    """keys create refuses an expiry in the past, as it should; a key that
    has expired since is made by running it back then (libfaketime)."""
    import datetime
    if day == "never":
        return None
    ago = (datetime.date.today() - datetime.date.fromisoformat(day)).days
    if ago < 0:
        return None
    return {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": "-%dd" % (ago + 2)}


def ppid_map():
    """{ppid: [pid, ...]} for every process now in /proc."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


# tests/tools/sysinject.c, built by `make test`/`make integration` into
# the binary's own BUILD dir (build/tests/, build-san/tests/).
SYSINJECT = os.path.join(os.path.dirname(BIN), "tests", "sysinject")


def sysinject_run(pid, nr, *args):
    """Make pid's main thread call syscall nr (x86_64 number) with args
    (ints, or "s:TEXT" for a string put in its memory), by ptrace; the
    CompletedProcess of the tool (stdout "RV ERRNO", exit 0; exit 2 on a
    ptrace failure or the target's death)."""
    assert os.access(SYSINJECT, os.X_OK), (
        "%s not built (make test / make integration build it)" % SYSINJECT)
    return subprocess.run([SYSINJECT, str(pid), str(nr)] +
                          [str(a) for a in args], capture_output=True,
                          text=True, timeout=60)


def sysinject(pid, nr, *args):
    """(return value, errno) of syscall nr made by pid itself: (-1, 1) for
    EPERM, (fd, 0) for a socket()."""
    p = sysinject_run(pid, nr, *args)
    assert p.returncode == 0, (pid, nr, args, p.returncode, p.stderr)
    rv, err = p.stdout.split()
    return int(rv), int(err)


def comm(pid):
    with open("/proc/%d/comm" % pid) as f:
        return f.read().strip()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def verify_token(token, pubfile):
    """True if `openssl pkeyutl` verifies the token's Ed25519 signature."""
    payload, sig = token.split(".")
    d = tempfile.mkdtemp(prefix="lp-verify-")
    try:
        pf, sf = os.path.join(d, "payload"), os.path.join(d, "sig")
        with open(pf, "wb") as f:
            f.write(b64url_decode(payload))
        with open(sf, "wb") as f:
            f.write(b64url_decode(sig))
        p = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin",
                            "-inkey", pubfile, "-rawin", "-in", pf,
                            "-sigfile", sf], capture_output=True)
        return p.returncode == 0
    finally:
        shutil.rmtree(d, ignore_errors=True)


def msgpack_decode(data):
    """Just enough msgpack for lease payloads (maps, arrays, str, ints)."""
    def dec(i):
        b = data[i]
        if b <= 0x7f:
            return b, i + 1
        if b >= 0xe0:
            return b - 0x100, i + 1
        if 0xa0 <= b <= 0xbf:
            n = b & 0x1f
            return data[i + 1:i + 1 + n].decode(), i + 1 + n
        if 0x80 <= b <= 0x9f or b in (0xdc, 0xdd, 0xde, 0xdf):
            is_map = b <= 0x8f or b in (0xde, 0xdf)
            if b >= 0xdc:       # 16- or 32-bit count follows
                w = 2 if b in (0xdc, 0xde) else 4
                n = int.from_bytes(data[i + 1:i + 1 + w], "big")
                i += w
            else:
                n = b & 0x0f
            i += 1
            items = []
            for _ in range(2 * n if is_map else n):
                v, i = dec(i)
                items.append(v)
            if is_map:
                return dict(zip(items[0::2], items[1::2])), i
            return items, i
        if b in (0xd9, 0xda, 0xdb):
            w = {0xd9: 1, 0xda: 2, 0xdb: 4}[b]
            n = int.from_bytes(data[i + 1:i + 1 + w], "big")
            s = i + 1 + w
            return data[s:s + n].decode(), s + n
        if b in (0xcc, 0xcd, 0xce, 0xcf):
            w = {0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}[b]
            return int.from_bytes(data[i + 1:i + 1 + w], "big"), i + 1 + w
        if b in (0xd0, 0xd1, 0xd2, 0xd3):
            w = {0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8}[b]
            return int.from_bytes(data[i + 1:i + 1 + w], "big",
                                  signed=True), i + 1 + w
        if b == 0xc0:
            return None, i + 1
        if b in (0xc2, 0xc3):
            return b == 0xc3, i + 1
        raise ValueError("msgpack type 0x%02x" % b)
    v, end = dec(0)
    if end != len(data):
        raise ValueError("trailing bytes")
    return v


def token_payload(token):
    return msgpack_decode(b64url_decode(token.split(".")[0]))


def raw_tls_version_refused(port, version):
    """True if a handshake limited to `version` fails."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = version
    ctx.maximum_version = version
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            with ctx.wrap_socket(s):
                return False
    except (ssl.SSLError, ConnectionError, OSError):
        return True


class Fixture:
    """Context manager that cleans up servers and PKIs in reverse order."""

    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)
        return item

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        errors = []
        for item in reversed(self.items):
            try:
                item.cleanup()
            except AssertionError as e:
                errors.append(str(e))
        if errors and exc[0] is None:
            raise AssertionError("\n".join(errors))
        return False


KEY_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def fake_key(seed):
    """A well-formed key nobody issued."""
    import hashlib
    h = hashlib.sha256(str(seed).encode()).digest() * 2
    return "".join(KEY_CHARS[b % 62] for b in h[:40])


def key_id(key):
    import hashlib
    return hashlib.sha256(key.encode()).hexdigest()[:16]


__all__ = ["Pki", "Server", "Fixture", "run", "wait_for", "free_port",
           "verify_token", "token_payload", "comm", "fake_key", "key_id",
           "raw_tls_version_refused", "struct"]


# -- helpers for test_ops (appended) --

def socket_owner(server_port, client_port, pids):
    """The pid among `pids` that holds the server end of the TCP connection
    127.0.0.1:client_port -> :server_port, or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            lport = int(cols[1].rsplit(":", 1)[1], 16)
            rport = int(cols[2].rsplit(":", 1)[1], 16)
            if lport == server_port and rport == client_port:
                inodes.add("socket:[%s]" % cols[9])
    for pid in pids:
        fd_dir = "/proc/%d/fd" % pid
        try:
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(os.path.join(fd_dir, fd)) in inodes:
                        return pid
                except OSError:
                    pass
        except OSError:
            pass
    return None


class ConnectProxy:
    """A small threaded HTTP CONNECT proxy on 127.0.0.1 that records the
    request lines it was sent (self.lines) and tunnels the bytes."""

    def __init__(self):
        import threading
        self.lines = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,),
                             daemon=True).start()

    def _serve(self, c):
        import select
        up = None
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                b = c.recv(4096)
                if not b:
                    return
                head += b
            line = head.split(b"\r\n", 1)[0].decode(errors="replace")
            with self.lock:
                self.lines.append(line)
            parts = line.split()
            if len(parts) != 3 or parts[0] != "CONNECT":
                c.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n"
                          b"Content-Length: 0\r\n\r\n")
                return
            host, port = parts[1].rsplit(":", 1)
            try:
                up = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                c.sendall(b"HTTP/1.1 502 Bad Gateway\r\n"
                          b"Content-Length: 0\r\n\r\n")
                return
            c.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            rest = head.split(b"\r\n\r\n", 1)[1]
            if rest:
                up.sendall(rest)
            socks = [c, up]
            while not self.closed:
                r, _, _ = select.select(socks, [], [], 0.5)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (up if s is c else c).sendall(data)
        except OSError:
            pass
        finally:
            c.close()
            if up is not None:
                up.close()

    def connects(self):
        with self.lock:
            return [ln for ln in self.lines if ln.startswith("CONNECT ")]

    def cleanup(self):
        self.closed = True
        self.sock.close()


def mdb_edit(store, db, edit):
    """Rewrite table db of a stopped server's store by hand: mdb_dump it,
    edit(lines) changes the dump's lines (a key line, then its value line,
    each " " + hex) in place, mdb_load writes them back (a store edited or
    damaged by hand, or left by an older version)."""
    out = subprocess.run(["mdb_dump", "-s", db, store], check=True,
                         capture_output=True, text=True).stdout
    head, _, rest = out.partition("HEADER=END\n")
    # mdb_load of the same LMDB warns about a keyword it does not read
    head = "".join(ln for ln in head.splitlines(True)
                   if not ln.startswith("db_pagesize="))
    lines = rest.split("\n")
    edit(lines)
    subprocess.run(["mdb_load", "-s", db, store], check=True,
                   input=head + "HEADER=END\n" + "\n".join(lines), text=True)

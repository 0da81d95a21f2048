#!/usr/bin/env python3
"""licproxy benchmark driver (run through bench/run.sh or bench/usage.sh).

Starts, on this machine and in one run: a PKI, an authority, a proxy in front
of it and an nginx serving a same-size static body with the same certificate
and the same number of workers, measures each row of issue 13's table side by
side (medians of --rounds rounds, the order of the servers alternated from
one round to the next), and prints ONE table:

  get     1  cached GET /v1/license, keep-alive (wrk): req/s, p50, p99 and
             server CPU per request, proxy (from cache) and authority
             against nginx; PSS of each server's process tree
  conn    2  one request per connection, a full TLS handshake each
             (bench/tlsload): server CPU per connection against nginx
  resume  3  the same, every handshake offering the last session ticket
             (tlsload -r); how many really resumed is counted per server
  usage   4  durable 1-record POST /v1/usage, keep-alive (wrk), authority
             (ledger) and proxy (spool), against the raw fdatasync rate
  miss    5  first GET /v1/license for a new key through the proxy's
             uplink to the local authority (sequential, p50/p99)
  scale   6-8 from bench/scale.py (its own servers), when it exists
  access  9  row 1 at the proxy with the access log off and on

Server CPU is the sum over every process (and thread) of the server's tree
of the first field of /proc/PID/task/TID/schedstat (ns on a CPU), before
and after each run; utime+stime from /proc/PID/stat is kept beside it as a
cross-check. wrk and tlsload share the 2 cores with the servers, so CPU per
request is the steadier comparison; req/s moves with everything else on
the machine ("other CPU s" in the details says how busy it was).

Everything measured goes to $BENCH_OUT/results.json; the table and the
per-round details to $BENCH_OUT/results.md. Uses the integration-test
harness (tests/integration/lp.py) to make the PKI and start the servers.
"""
import argparse
import glob
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
os.environ.setdefault("LICPROXY", os.path.join(ROOT, "build", "licproxy"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import lp  # noqa: E402  (needs LICPROXY set first)

TICK = os.sysconf("SC_CLK_TCK")
WRK_THREADS, WRK_CONNS = 2, 64
PARTS = ["get", "access", "conn", "resume", "miss", "usage", "scale"]


def log(*a):
    print("bench:", *a, flush=True)


# ---------------------------------------------------------------- /proc

def proc_tree(pid):
    """pid and all its descendants."""
    kids = lp.ppid_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def sched_ns(pid):
    """ns on a CPU of every thread of pid (schedstat's first field)."""
    t = 0
    for f in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            with open(f) as fh:
                t += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return t


def cpu_ticks(pid):
    """utime+stime of pid (ticks)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            f_ = f.read().rsplit(")", 1)[1].split()
        return int(f_[11]) + int(f_[12])
    except (OSError, IndexError):
        return 0


def tree_cpu(pid):
    """{pid: (sched_ns, ticks)} for the tree of pid."""
    return {p: (sched_ns(p), cpu_ticks(p)) for p in proc_tree(pid)}


def cpu_delta(before, after):
    """(ns, ticks) used between two tree_cpu() snapshots; a process born
    in between counts in full, one gone in between is lost (none should:
    both servers prefork)."""
    ns = ticks = 0
    for p, (n1, t1) in after.items():
        n0, t0 = before.get(p, (0, 0))
        ns += max(0, n1 - n0)
        ticks += max(0, t1 - t0)
    return ns, ticks, len(set(before) - set(after))


def tree_pss(pid):
    """(PSS KiB summed over the tree, number of processes)."""
    kib, n = 0, 0
    for p in proc_tree(pid):
        try:
            with open("/proc/%d/smaps_rollup" % p) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        kib += int(line.split()[1])
                        n += 1
                        break
        except OSError:
            pass
    return kib, n


def sys_ticks():
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def mdb_txnid(store):
    """LMDB's last transaction id (= write commits so far), or None."""
    if shutil.which("mdb_stat") is None:
        return None
    p = subprocess.run(["mdb_stat", "-e", store], capture_output=True,
                       text=True)
    m = re.search(r"Last transaction ID: (\d+)", p.stdout)
    return int(m.group(1)) if m else None


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    fs = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS",
                         "-T", tempfile.gettempdir()], capture_output=True,
                        text=True).stdout.strip()

    def ver(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    return {"nproc": os.cpu_count(), "cpu": model,
            "kernel": os.uname().release, "tmpdir": tempfile.gettempdir(),
            "tmpfs": fs, "wrk": ver(["wrk", "-v"]),
            "nginx": ver(["nginx", "-v"]),
            "openssl": ver(["openssl", "version"]),
            "licproxy": ver([lp.BIN, "version"])}


# ---------------------------------------------------------------- load

def run_load(cmd, server_pid, env=None):
    """Runs a load generator that prints a BENCH_JSON line; returns that
    summary plus the CPU used by the server tree (schedstat and
    utime+stime), by the load generator and by everything else on the
    machine (other tenants: far from 0 means a noisy run)."""
    e = dict(os.environ)
    e.update(env or {})
    c0, s0, t0 = tree_cpu(server_pid), sys_ticks(), os.times()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=e, text=True)
    out, err = p.communicate()
    c1, s1, t1 = tree_cpu(server_pid), sys_ticks(), os.times()
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s%s" % (cmd[0], p.returncode,
                                                     out, err))
    m = re.search(r"^BENCH_JSON (.*)$", out, re.M)
    if not m:
        raise RuntimeError("no summary from %s:\n%s%s" % (cmd[0], out, err))
    r = json.loads(m.group(1))
    secs = r["duration_us"] / 1e6
    n = max(r["requests"], 1)
    ns, ticks, gone = cpu_delta(c0, c1)
    r["rps"] = r["requests"] / secs
    r["server_cpu_s"] = ns / 1e9
    r["server_cpu_us_per_req"] = ns / 1e3 / n
    r["server_ticks_us_per_req"] = ticks / TICK * 1e6 / n
    r["server_procs"] = len(c1)
    r["server_procs_gone"] = gone
    r["load_cpu_s"] = (t1.children_user + t1.children_system -
                       t0.children_user - t0.children_system)
    r["machine_busy"] = (s1[0] - s0[0]) / max(s1[1] - s0[1], 1)
    r["other_cpu_s"] = max(0.0, (s1[0] - s0[0]) / TICK - ns / 1e9 -
                           r["load_cpu_s"])
    r["errors"] = sum(r[k] for k in r if k.startswith("err_")) + \
        r.get("bad", 0) + (r["errors"] if "handshakes" in r else 0)
    return r


def wrk(url, script, server_pid, duration, headers=(), env=None,
        threads=WRK_THREADS, conns=WRK_CONNS):
    cmd = ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % duration,
           "--latency", "-s", script]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    return run_load(cmd, server_pid, env)


def tlsload(binary, port, server_pid, duration, resume, headers=()):
    cmd = [binary, "-c", str(WRK_CONNS), "-d", str(duration)]
    if resume:
        cmd.append("-r")
    for h in headers:
        cmd += ["-H", h]
    cmd += ["127.0.0.1", str(port), "/v1/license"]
    return run_load(cmd, server_pid)


def background_load(secs=2.0):
    """Fraction of the machine busy while this benchmark does nothing."""
    s0 = sys_ticks()
    time.sleep(secs)
    s1 = sys_ticks()
    return (s1[0] - s0[0]) / max(s1[1] - s0[1], 1)


def alternate(targets, rounds, fn):
    """fn(target, round) for every target, rounds times, the order
    reversed every other round; returns {target name: [result, ...]}."""
    res = {t[0]: [] for t in targets}
    for rnd in range(rounds):
        order = targets if rnd % 2 == 0 else list(reversed(targets))
        for t in order:
            r = fn(t, rnd + 1)
            r["round"] = rnd + 1
            res[t[0]].append(r)
    return res


def med(rs, k):
    return statistics.median(r[k] for r in rs)


# ---------------------------------------------------------------- nginx

class Nginx:
    """nginx answering every path with a fixed body; with reuse_log, it
    logs $ssl_session_reused per connection (to check a client)."""

    def __init__(self, pki, body, workers=2, reuse_log=False):
        self.dir = tempfile.mkdtemp(prefix="lp-nginx-")
        self.port = lp.free_port()
        self.proc = None
        if "'" in body or "\\" in body or "$" in body:
            raise ValueError("body needs nginx escaping")
        d = self.dir
        self.reuse_log = os.path.join(d, "reuse.log")
        alog = ("log_format reuse '$ssl_session_reused';\n"
                "    access_log %s reuse;" % self.reuse_log
                if reuse_log else "access_log off;")
        self.conf = os.path.join(d, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write("""\
worker_processes %(workers)d;
daemon off;
master_process on;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections 4096; }
http {
    %(alog)s
    server_tokens off;
    client_body_temp_path %(d)s/body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:%(port)d ssl;
        ssl_certificate %(cert)s;
        ssl_certificate_key %(key)s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
        ssl_prefer_server_ciphers on;
        location / {
            default_type application/json;
            add_header Cache-Control no-store;
            return 200 '%(body)s';
        }
    }
}
""" % {"workers": workers, "d": d, "port": self.port, "cert": pki.cert,
                "key": pki.key, "body": body, "alog": alog})

    def start(self):
        self.log = open(os.path.join(self.dir, "stderr.log"), "wb")
        self.proc = subprocess.Popen(
            ["nginx", "-p", self.dir, "-e", os.path.join(self.dir,
                                                         "error.log"),
             "-c", self.conf], stdout=self.log, stderr=subprocess.STDOUT)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited %d: %s" % (
                    self.proc.returncode, open(os.path.join(
                        self.dir, "error.log")).read()))
            with socket.create_connection(("127.0.0.1", self.port), 1):
                return True
        lp.wait_for(up, what="nginx to listen")
        return self

    def reused_counts(self):
        """(connections logged, of which resumed) from the reuse log."""
        try:
            with open(self.reuse_log) as f:
                v = f.read().split()
        except OSError:
            return 0, 0
        return len(v), v.count("r")

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()   # TERM: fast shutdown of master+workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- setup

class Bench:
    def __init__(self, args, fx):
        self.args = args
        self.fx = fx
        self.pki = fx.add(lp.Pki("bench"))
        quiet = {"log": {"level": "warn"}, "store": {"max_size": "8GiB"}}
        self.auth = fx.add(lp.Server(self.pki, "authority",
                                     workers=args.workers, extra=quiet,
                                     name="bench-auth"))
        self.member = self.auth.create_key(name="bench-get")
        proxy_key = self.auth.create_key(name="bench-proxy", role="proxy")
        self.auth.start()
        extra = dict(quiet)
        extra["license"] = {"server_url": [self.auth.url],
                            "ca_file": self.pki.ca,
                            "trusted_keys": [self.pki.pub],
                            # A spool tail below one relay batch (1000)
                            # waits sync_interval; 5s keeps the bench short.
                            "sync_interval": "5s",
                            # Row 5 sends 3 x --keys misses from one
                            # address back to back: the default budget
                            # (50/s, burst 200) would answer part of them
                            # with 429 and pollute the series.
                            "miss_rate": 1048576, "miss_burst": 1048576}
        self.proxy = fx.add(lp.Server(self.pki, "proxy", workers=args.workers,
                                      extra=extra, name="bench-proxy",
                                      env={"LICPROXY_LICENSE_KEY":
                                           proxy_key}))
        self.proxy.start()
        self.nginx = None
        self.hdr = ["Authorization: Token " + self.member]

    def get_body(self, server):
        r = server.license(self.member)
        if r.status != 200:
            raise AssertionError("GET %s: %r" % (server.mode, r))
        return r

    def ensure_nginx(self):
        """Starts nginx with the authority's body for the bench key (the
        proxy's differs by a few bytes: "source":"cache"), once."""
        if self.nginx is None:
            body = self.get_body(self.auth).body
            self.nginx = self.fx.add(Nginx(self.pki, body,
                                           workers=self.args.workers).start())
        return self.nginx

    def warm_proxy(self):
        self.get_body(self.proxy)
        r = self.get_body(self.proxy)
        assert r.json()["source"] == "cache", r
        return r


# ---------------------------------------------------------------- 1: get

def bench_get(b, rounds, duration):
    auth_r = b.get_body(b.auth)
    prox_r = b.warm_proxy()
    ng = b.ensure_nginx()
    # Same bytes on the wire for the body; headers are reported as measured.
    c = http.client.HTTPSConnection("127.0.0.1", ng.port,
                                    context=b.pki.context(), timeout=10)
    c.request("GET", "/v1/license", headers={"Authorization":
                                             "Token " + b.member})
    r = c.getresponse()
    nbody = r.read().decode()
    nhead = len(str(r.msg)) + len("HTTP/1.1 200 OK\r\n") + 2
    c.close()
    assert nbody == auth_r.body, "nginx body differs"
    sizes = {"authority_body": len(auth_r.body),
             "proxy_body": len(prox_r.body), "nginx_body": len(nbody),
             "nginx_head": nhead}
    sizes["licproxy_head"] = len("HTTP/1.1 200 OK\r\n") + sum(
        len(k) + 2 + len(v) + 2 for k, v in auth_r.headers.items()) + 2
    log("body sizes", sizes)
    targets = [("proxy", b.proxy.url, b.proxy.proc.pid),
               ("authority", b.auth.url, b.auth.proc.pid),
               ("nginx", "https://127.0.0.1:%d" % ng.port, ng.proc.pid)]
    script = os.path.join(HERE, "get.lua")
    for name, url, pid in targets:      # warm-up: caches, page faults
        wrk(url + "/v1/license", script, pid, 2, headers=b.hdr)

    def one(t, rnd):
        name, url, pid = t
        r = wrk(url + "/v1/license", script, pid, duration, headers=b.hdr)
        log("1 GET %-9s round %d: %8.0f req/s p50 %5.2f ms p99 %5.2f ms "
            "server CPU %5.1f us/req (utime+stime %5.1f), load CPU %.1fs, "
            "other CPU %.1fs, errors %d" % (
                name, rnd, r["rps"], r["p50_us"] / 1e3, r["p99_us"] / 1e3,
                r["server_cpu_us_per_req"], r["server_ticks_us_per_req"],
                r["load_cpu_s"], r["other_cpu_s"], r["errors"]))
        return r
    runs = alternate(targets, rounds, one)
    # PSS right after the load, every process of each server's tree.
    pss = {}
    for name, url, pid in targets:
        kib, n = tree_pss(pid)
        pss[name] = {"kib": kib, "procs": n}
        log("1 PSS %-9s %.1f MiB in %d processes" % (name, kib / 1024, n))
    assert b.get_body(b.proxy).json()["source"] == "cache"
    return {"sizes": sizes, "runs": runs, "pss": pss}


# ---------------------------------------------------------------- 2, 3

def check_wrk_resumes(b):
    """Does wrk resume TLS sessions when it reconnects? One second of
    `wrk -H 'Connection: close'` against an nginx that logs
    $ssl_session_reused; also checks tlsload both ways the same way."""
    body = b.get_body(b.auth).body
    ng = b.fx.add(Nginx(b.pki, body, workers=1, reuse_log=True).start())
    out = {}
    try:
        url = "https://127.0.0.1:%d/v1/license" % ng.port
        subprocess.run(["wrk", "-t1", "-c4", "-d1s", "-H",
                        "Connection: close", url], capture_output=True,
                       check=True)
        out["wrk"] = ng.reused_counts()
        for resume in (False, True):
            n0 = ng.reused_counts()
            cmd = [b.args.tlsload_bin, "-c", "4", "-d", "1"] + \
                (["-r"] if resume else []) + \
                ["127.0.0.1", str(ng.port), "/v1/license"]
            subprocess.run(cmd, capture_output=True, check=True)
            n1 = ng.reused_counts()
            out["tlsload -r" if resume else "tlsload"] = (
                n1[0] - n0[0], n1[1] - n0[1])
    finally:
        ng.cleanup()
        b.fx.items.remove(ng)
    for k, (n, r) in out.items():
        log("2/3 %s with Connection: close: nginx logged %d connections, "
            "%d resumed" % (k, n, r))
    return {k: {"conns": v[0], "resumed": v[1]} for k, v in out.items()}


def bench_handshake(b, rounds, duration, resume):
    """Rows 2 (resume False) and 3 (True): one GET per TLS connection."""
    b.warm_proxy()
    ng = b.ensure_nginx()
    targets = [("proxy", b.proxy.port, b.proxy.proc.pid),
               ("nginx", ng.port, ng.proc.pid)]
    if b.args.handshake_authority:
        targets.insert(1, ("authority", b.auth.port, b.auth.proc.pid))
    row = 3 if resume else 2
    for name, port, pid in targets:
        tlsload(b.args.tlsload_bin, port, pid, 1, resume, b.hdr)

    def one(t, rnd):
        name, port, pid = t
        r = tlsload(b.args.tlsload_bin, port, pid, duration, resume, b.hdr)
        r["resumed_share"] = r["reused"] / max(r["handshakes"], 1)
        log("%d conn %-9s round %d: %6.0f conn/s p50 %5.2f ms p99 %5.2f ms "
            "server CPU %6.1f us/conn (utime+stime %6.1f), resumed %d of "
            "%d, load CPU %.1fs, other CPU %.1fs, errors %d" % (
                row, name, rnd, r["rps"], r["p50_us"] / 1e3,
                r["p99_us"] / 1e3, r["server_cpu_us_per_req"],
                r["server_ticks_us_per_req"], r["reused"], r["handshakes"],
                r["load_cpu_s"], r["other_cpu_s"], r["errors"]))
        return r
    out = {"runs": alternate(targets, rounds, one)}
    if not resume:
        out["wrk_resume_check"] = check_wrk_resumes(b)
    return out


# ---------------------------------------------------------------- 9: access

def bench_access(b, rounds, duration):
    """Row 1 (cached GET at the proxy) with log.access off and on (JSON, to
    a file), alternated in one run."""
    extra = {"log": {"level": "warn", "access": "true", "format": "json"},
             "store": {"max_size": "8GiB"},
             "license": dict(b.proxy.conf["license"])}
    on = b.fx.add(lp.Server(b.pki, "proxy", workers=b.args.workers,
                            extra=extra, name="bench-access",
                            env=b.proxy.env))
    extra["log"]["file"] = os.path.join(on.dir, "access.log")
    on.conf["log"] = extra["log"]
    on.start()
    b.warm_proxy()
    b.get_body(on)
    assert b.get_body(on).json()["source"] == "cache"
    targets = [("off", b.proxy), ("on", on)]
    script = os.path.join(HERE, "get.lua")
    for name, srv in targets:
        wrk(srv.url + "/v1/license", script, srv.proc.pid, 2, headers=b.hdr)

    def one(t, rnd):
        name, srv = t
        r = wrk(srv.url + "/v1/license", script, srv.proc.pid, duration,
                headers=b.hdr)
        log("9 GET access log %-3s round %d: %8.0f req/s p99 %5.2f ms "
            "server CPU %5.1f us/req (utime+stime %5.1f), other CPU %.1fs" % (
                name, rnd, r["rps"], r["p99_us"] / 1e3,
                r["server_cpu_us_per_req"], r["server_ticks_us_per_req"],
                r["other_cpu_s"]))
        return r
    runs = alternate(targets, rounds, one)
    with open(extra["log"]["file"]) as f:
        lines = sum(1 for _ in f)
    log("9 access log lines written: %d" % lines)
    on.cleanup()
    b.fx.items.remove(on)
    return {"runs": runs, "lines": lines,
            "requests_on": sum(r["requests"] for r in runs["on"])}


# ---------------------------------------------------------------- 5: miss

def time_gets(server, keys, want_source):
    """Sequential GETs on one connection: (latencies ms, answers that were
    not a 200 from want_source, {status/source: count})."""
    c = server.conn()
    lat = []
    bad = 0
    seen = {}
    try:
        for k in keys:
            t = time.perf_counter()
            r = server.license(k, conn=c)
            lat.append((time.perf_counter() - t) * 1e3)
            src = r.json().get("source") if r.status == 200 else None
            what = "%d %s" % (r.status, src)
            seen[what] = seen.get(what, 0) + 1
            if src != want_source:
                bad += 1
    finally:
        c.close()
    return lat, bad, seen


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def summary(lat, bad, seen):
    return {"n": len(lat), "bad": bad, "p50_ms": pct(lat, 50),
            "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
            "max_ms": max(lat), "mean_ms": statistics.mean(lat),
            "answers": seen}


def bench_miss(b, n):
    def mk(tag):
        return [b.auth.create_key(name="%s-%d" % (tag, i)) for i in range(n)]
    t = time.time()
    cold, direct, warm = mk("miss-cold"), mk("miss-auth"), mk("miss-warm")
    log("5 created %d keys in %.1fs" % (3 * n, time.time() - t))
    b.warm_proxy()
    out = {}
    # Cache hit on a warm connection, as the baseline of the same client.
    out["proxy hit (baseline)"] = summary(*time_gets(
        b.proxy, [b.member] * n, "cache"))
    out["proxy miss, authority cold (signs)"] = summary(*time_gets(
        b.proxy, cold, "upstream"))
    out["authority first request (signs)"] = summary(*time_gets(
        b.auth, direct, "authority"))
    time_gets(b.auth, warm, "authority")        # the authority now holds
    out["proxy miss, authority warm"] = summary(*time_gets(
        b.proxy, warm, "upstream"))
    for k, v in out.items():
        log("5 miss %-36s p50 %6.2f ms p90 %6.2f ms p99 %6.2f ms max %6.2f "
            "ms (n=%d, not as expected=%d, answers %s)" % (
                k, v["p50_ms"], v["p90_ms"], v["p99_ms"], v["max_ms"],
                v["n"], v["bad"], v["answers"]))
    return out


# ---------------------------------------------------------------- 4: usage

def fsync_rate(binary, directory, secs=3):
    p = subprocess.run([binary, directory, str(secs)], capture_output=True,
                       text=True, check=True)
    return float(p.stdout.split()[0])


def ledger_records(store, kid):
    p = lp.run("usage", "--store", store, "--json")
    return sum(t["records"] for t in json.loads(p.stdout)
               if t["key_id"] == kid)


def relay_drain(b, t_start, fwd0, timeout=600):
    """Waits until the proxy's spool is empty (its uplink relays it to the
    authority), so the next run does not compete with the relay."""
    t_end = time.time()
    st = lp.wait_for(lambda: (lambda s: s["usage"]["pending"] == 0 and s)(
        b.proxy.status_json()), timeout=timeout, step=0.2,
        what="relay to drain")
    t = time.time()
    n = st["usage"]["forwarded"] - fwd0
    return {"relay_forwarded": n, "relay_drain_s": t - t_end,
            "relay_per_s": n / (t - t_start)}


def usage_run(b, target, batch, rnd, duration, nonce, ids):
    key = b.auth.create_key(name="usage-%s-%d-%d" % (target.mode, batch, rnd))
    r0 = target.license(key)            # lease cached / issued
    assert r0.status == 200, r0
    t0 = mdb_txnid(target.store)
    fwd0 = b.proxy.status_json()["usage"]["forwarded"]
    t_start = time.time()
    r = wrk(target.url + "/v1/usage", os.path.join(HERE, "usage.lua"),
            target.proc.pid, duration,
            env={"BENCH_KEY": key, "BENCH_BATCH": str(batch),
                 "BENCH_IDS": ids,
                 "BENCH_RUN": "%s-%s-%d-%d" % (nonce, target.mode, batch,
                                               rnd)})
    t1 = mdb_txnid(target.store)
    secs = r["duration_us"] / 1e6
    r.update({"target": target.mode, "batch": batch,
              "key_id": lp.key_id(key),
              "records_per_s": r["accepted"] / secs})
    if t0 is not None and t1 is not None:
        r["commits"] = t1 - t0
        r["commits_per_s"] = (t1 - t0) / secs
        r["posts_per_commit"] = r["requests"] / max(t1 - t0, 1)
    if target is b.proxy:
        r.update(relay_drain(b, t_start, fwd0))
        log("4 relay: %d records forwarded upstream, drained %.1fs after the"
            " run ended" % (r["relay_forwarded"], r["relay_drain_s"]))
    log("4 usage %-9s batch %3d round %d: %7.0f POST/s %8.0f records/s p50 "
        "%5.2f ms p99 %6.2f ms POSTs/commit %s server CPU %.0f us/POST "
        "other CPU %.1fs not-202 %d dups %d errors %d" % (
            target.mode, batch, rnd, r["rps"], r["records_per_s"],
            r["p50_us"] / 1e3, r["p99_us"] / 1e3,
            "%.1f" % r["posts_per_commit"] if "commits" in r else "?",
            r["server_cpu_us_per_req"], r["other_cpu_s"], r["not_202"],
            r["duplicates"], r["errors"]))
    return r


def bench_usage(b, rounds, duration, fsync_bin, batches, ids):
    res = {"fsync_per_s": [], "runs": {}, "ids": ids}
    d = os.path.dirname(b.auth.store)
    res["fsync_dir"] = d
    nonce = "%x" % int(time.time() * 1000)
    targets = [("authority", b.auth), ("proxy", b.proxy)]
    seen = set()
    for batch in batches:
        def one(t, rnd):
            if (batch, rnd) not in seen:    # raw rate before each round
                seen.add((batch, rnd))
                res["fsync_per_s"].append(fsync_rate(fsync_bin, d))
                log("4 raw pwrite+fdatasync: %.0f/s in %s" % (
                    res["fsync_per_s"][-1], d))
            return usage_run(b, t[1], batch, rnd, duration, nonce, ids)
        runs = alternate(targets, rounds, one)
        for name, rs in runs.items():
            res["runs"]["%s %d" % (name, batch)] = rs
    # Exactly-once check: what the wrk clients saw accepted must be in the
    # authority's ledger (>=: requests in flight when wrk stopped were
    # committed but not counted by wrk). Proxy runs: after the relay.
    def relayed():
        st = b.proxy.status_json()
        return st["usage"]["pending"] == 0 and st
    try:
        lp.wait_for(relayed, timeout=120, step=0.5, what="relay to drain")
    except AssertionError as e:
        log("relay did not drain:", e)
    for rs in res["runs"].values():
        for r in rs:
            r["ledger_records"] = ledger_records(b.auth.store, r["key_id"])
            r["ledger_ok"] = r["ledger_records"] >= r["accepted"] and \
                r["ledger_records"] <= r["accepted"] + WRK_CONNS * r["batch"]
            if not r["ledger_ok"]:
                log("4 LEDGER MISMATCH %s batch %d round %d: wrk accepted "
                    "%d, ledger %d" % (r["target"], r["batch"], r["round"],
                                       r["accepted"], r["ledger_records"]))
    return res


# ---------------------------------------------------------------- 6-8

def bench_scale(out, script, timeout, extra):
    """Rows 6-8 come from bench/scale.py (another script, its own servers):
    it writes DIR/scale.json = {"rows": [ROW, ...]}."""
    if not os.path.exists(script):
        log("6-8 %s not present: rows 6-8 left out" % script)
        return {"rows": [], "missing": True}
    d = os.path.join(out, "scale")
    os.makedirs(d, exist_ok=True)
    t = time.time()
    # Its own process group, so a run past the timeout ends with all it
    # started (and nothing else).
    p = subprocess.Popen([sys.executable, script, "--out", d,
                          "--licproxy", lp.BIN] + extra.split(), cwd=ROOT,
                         start_new_session=True)
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        log("6-8 scale.py still running after %ds: stopping it" % timeout)
        os.killpg(p.pid, 15)
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            rc = p.wait()
    res = {"rc": rc, "secs": time.time() - t, "rows": []}
    try:
        with open(os.path.join(d, "scale.json")) as f:
            res["rows"] = json.load(f)["rows"]
    except (OSError, ValueError, KeyError) as e:
        res["error"] = str(e)
    if rc != 0 or "error" in res:
        log("6-8 scale.py exited %d (%s)" % (rc, res.get("error", "")))
    log("6-8 scale.py took %.0fs, %d rows" % (res["secs"], len(res["rows"])))
    return res


# ---------------------------------------------------------------- rows

def n0(x):
    return "{:,.0f}".format(x)


def row(n, what, lic, ref, ratio, goal, met):
    return {"n": str(n), "what": what, "licproxy": lic, "reference": ref,
            "ratio": ratio, "goal": goal, "met": met}


def xr(r):
    return "%.2fx" % r


def rows_get(g):
    out = []
    ng = g["runs"]["nginx"]
    n_rps, n_cpu = med(ng, "rps"), med(ng, "server_cpu_us_per_req")
    n_p50, n_p99 = med(ng, "p50_us") / 1e3, med(ng, "p99_us") / 1e3
    for name, label in (("proxy", "proxy, from cache"),
                        ("authority", "authority")):
        rs = g["runs"][name]
        rps, cpu = med(rs, "rps"), med(rs, "server_cpu_us_per_req")
        p50, p99 = med(rs, "p50_us") / 1e3, med(rs, "p99_us") / 1e3
        w = "cached GET /v1/license, keep-alive, %s: " % label
        out.append(row(1, w + "req/s", n0(rps) + " req/s",
                       "nginx " + n0(n_rps), xr(rps / n_rps), ">= 1.0x",
                       rps >= n_rps))
        out.append(row(1, w + "server CPU/req (schedstat; utime+stime)",
                       "%.1f us (%.1f)" % (cpu, med(
                           rs, "server_ticks_us_per_req")),
                       "nginx %.1f us (%.1f)" % (n_cpu, med(
                           ng, "server_ticks_us_per_req")),
                       xr(cpu / n_cpu), "<= 1.0x", cpu <= n_cpu))
        out.append(row(1, w + "latency p50 / p99",
                       "%.2f / %.2f ms" % (p50, p99),
                       "nginx %.2f / %.2f ms" % (n_p50, n_p99),
                       xr(p99 / n_p99) + " (p99)", "p99 <= nginx",
                       p99 <= n_p99))
    npss = g["pss"]["nginx"]
    for name in ("proxy", "authority"):
        p = g["pss"][name]
        out.append(row(1, "PSS after row 1, all processes, %s" % name,
                       "%.1f MiB (%d processes)" % (p["kib"] / 1024,
                                                    p["procs"]),
                       "nginx %.1f MiB (%d processes)" % (
                           npss["kib"] / 1024, npss["procs"]),
                       xr(p["kib"] / max(npss["kib"], 1)), "-", None))
    return out


def rows_handshake(h, n, label):
    out = []
    ng = h["runs"]["nginx"]
    n_cpu = med(ng, "server_cpu_us_per_req")
    n_res = med(ng, "resumed_share")
    for name, rs in h["runs"].items():
        if name == "nginx":
            continue
        cpu = med(rs, "server_cpu_us_per_req")
        res = med(rs, "resumed_share")
        out.append(row(n, "one GET per connection, %s, %s: server CPU/conn"
                       % (label, name),
                       "%.0f us (%s conn/s, %.0f%% resumed)" % (
                           cpu, n0(med(rs, "rps")), res * 100),
                       "nginx %.0f us (%s conn/s, %.0f%% resumed)" % (
                           n_cpu, n0(med(ng, "rps")), n_res * 100),
                       xr(cpu / n_cpu), "<= 1.0x", cpu <= n_cpu))
    return out


def rows_usage(u):
    out = []
    f = statistics.median(u["fsync_per_s"])
    for name, rs in u["runs"].items():
        target, batch = name.split()
        if batch != "1":
            continue
        rps = med(rs, "rps")
        ok = all(r.get("ledger_ok") for r in rs)
        out.append(row(4, "durable 1-record POST /v1/usage, keep-alive, %s"
                       "%s%s" % ("authority (ledger)" if target == "authority"
                                 else "proxy (spool)",
                                 ", random ids" if u.get("ids") == "random"
                                 else "",
                                 "" if ok else " [LEDGER MISMATCH]"),
                       n0(rps) + " POST/s",
                       "raw fdatasync %s/s" % n0(f), xr(rps / f),
                       ">= 30,000 POST/s", rps >= 30000 and ok))
    return out


def rows_miss(m):
    v = m["proxy miss, authority cold (signs)"]
    hit = m["proxy hit (baseline)"]
    a = m["authority first request (signs)"]
    return [row(5, "miss: first GET /v1/license through the proxy's uplink "
                "(authority signs), p50 / p99",
                "%.2f / %.2f ms%s" % (v["p50_ms"], v["p99_ms"],
                                       " (%d of %d not a 200 from upstream)"
                                       % (v["bad"], v["n"]) if v["bad"]
                                       else ""),
                "cache hit %.2f / %.2f ms; authority direct %.2f / %.2f ms"
                % (hit["p50_ms"], hit["p99_ms"], a["p50_ms"], a["p99_ms"]),
                "-", "p50 <= 1.0 ms", v["p50_ms"] <= 1.0 and v["bad"] == 0)]


def rows_access(a):
    on, off = a["runs"]["on"], a["runs"]["off"]
    c_on = med(on, "server_cpu_us_per_req")
    c_off = med(off, "server_cpu_us_per_req")
    r_on, r_off = med(on, "rps"), med(off, "rps")
    return [row(9, "access log on against off (row 1, proxy): "
                "server CPU/req, req/s",
                "on: %.1f us, %s req/s" % (c_on, n0(r_on)),
                "off: %.1f us, %s req/s" % (c_off, n0(r_off)),
                "%+.1f%% CPU, %+.1f%% req/s" % ((c_on / c_off - 1) * 100,
                                               (r_on / r_off - 1) * 100),
                "<= 5% more CPU/req", c_on <= c_off * 1.05)]


def table_rows(results):
    rows = []
    if "get" in results:
        rows += rows_get(results["get"])
    if "conn" in results:
        rows += rows_handshake(results["conn"], 2, "full handshake")
    if "resume" in results:
        rows += rows_handshake(results["resume"], 3, "resumed (tickets)")
    if "usage" in results:
        rows += rows_usage(results["usage"])
    if "miss" in results:
        rows += rows_miss(results["miss"])
    if "scale" in results:
        if results["scale"].get("missing"):
            rows.append(row("6-8", "scale (bench/scale.py not present)",
                            "-", "-", "-", "-", None))
        elif not results["scale"]["rows"]:
            rows.append(row("6-8", "scale: bench/scale.py gave no rows "
                            "(exit %s)" % results["scale"].get("rc"),
                            "-", "-", "-", "-", False))
        rows += results["scale"]["rows"]
    if "access" in results:
        rows += rows_access(results["access"])

    def key(r):
        m = re.match(r"\d+", str(r.get("n", "")))
        return int(m.group(0)) if m else 99
    return sorted(rows, key=key)


# ---------------------------------------------------------------- report

def cell(v):
    if v is True:
        return "yes"
    if v is False:
        return "**no**"
    if v is None:
        return "-"
    return str(v).replace("|", "\\|")


def table(rows):
    out = ["| # | measurement | licproxy | reference | ratio | goal | met |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append("| " + " | ".join(cell(r.get(k)) for k in (
            "n", "what", "licproxy", "reference", "ratio", "goal",
            "met")) + " |")
    return "\n".join(out)


def details_load(title, runs, unit):
    out = ["", "%s (per round: rate, p50/p99 ms, server CPU us/%s by "
           "schedstat | by utime+stime, load generator CPU s, other CPU s, "
           "errors)" % (title, unit), ""]
    for name, rs in runs.items():
        out.append("- %s: " % name + "; ".join(
            "r%d %s/s %.2f/%.2f %.1f|%.1f %.1f %.1f %d%s" % (
                r["round"], n0(r["rps"]), r["p50_us"] / 1e3,
                r["p99_us"] / 1e3, r["server_cpu_us_per_req"],
                r["server_ticks_us_per_req"], r["load_cpu_s"],
                r["other_cpu_s"], r["errors"],
                " resumed %d/%d, close_notify %d/%d" % (
                    r["reused"], r["handshakes"], r["close_notify"],
                    r["requests"])
                if "handshakes" in r else "") for r in rs))
    return out


def notes(results):
    """Lines under the table: what the reader must know to trust rows 2
    and 3, from this run's own checks."""
    out = []
    chk = results.get("conn", {}).get("wrk_resume_check")
    if chk:
        out.append("")
        out.append("- Rows 2-3 use bench/tlsload, not wrk: reconnecting "
                   "with `Connection: close`, wrk resumed %d of %d sessions "
                   "(nginx's $ssl_session_reused); tlsload %d of %d, "
                   "tlsload -r %d of %d." % (
                       chk["wrk"]["resumed"], chk["wrk"]["conns"],
                       chk["tlsload"]["resumed"], chk["tlsload"]["conns"],
                       chk["tlsload -r"]["resumed"],
                       chk["tlsload -r"]["conns"]))
    for k, n in (("conn", 2), ("resume", 3)):
        if k not in results:
            continue
        cn = []
        for name, rs in results[k]["runs"].items():
            cn.append("%s %d of %d" % (
                name, sum(r["close_notify"] for r in rs),
                sum(r["requests"] for r in rs)))
        out.append("- Row %d: answers ended by a close_notify (the rest by "
                   "a bare FIN, which OpenSSL 3 clients take for an error "
                   "that voids the session): %s." % (n, ", ".join(cn)))
    return out


def report(results):
    m = results["machine"]
    out = ["Machine: %s x%d, kernel %s; %s; %s, %s, %s; background load "
           "before start %.0f%%" % (
               m["cpu"], m["nproc"], m["kernel"], m["tmpfs"], m["wrk"],
               m["nginx"], m["openssl"], results["background_load"] * 100),
           "Run: %s, %d rounds of %ds (order alternated), wrk -t%d -c%d, "
           "tlsload -c%d, %d workers each" % (
               results["started"], results["args"]["rounds"],
               results["args"]["duration"], WRK_THREADS, WRK_CONNS,
               WRK_CONNS, results["args"]["workers"]), "",
           table(table_rows(results))]
    out += notes(results)
    head, out = out, []
    if "get" in results:
        out += details_load("1: cached GET", results["get"]["runs"], "req")
        out.append("- sizes: %s" % results["get"]["sizes"])
    for k, n in (("conn", 2), ("resume", 3)):
        if k in results:
            out += details_load("%d: one GET per connection" % n,
                                results[k]["runs"], "conn")
    if "conn" in results and "wrk_resume_check" in results["conn"]:
        out.append("- resumption seen by nginx ($ssl_session_reused) with "
                   "Connection: close: " + ", ".join(
                       "%s %d of %d" % (k, v["resumed"], v["conns"])
                       for k, v in results["conn"]["wrk_resume_check"]
                       .items()))
    if "usage" in results:
        u = results["usage"]
        out += details_load("4: POST /v1/usage", u["runs"], "POST")
        out.append("- raw 4 KiB pwrite+fdatasync in %s: %s /s" % (
            u["fsync_dir"], ", ".join(n0(x) for x in u["fsync_per_s"])))
        out.append("- POSTs per LMDB commit: " + "; ".join(
            "%s %s" % (k, ", ".join("%.1f" % r["posts_per_commit"]
                                    for r in rs if "posts_per_commit" in r))
            for k, rs in u["runs"].items()))
    if "miss" in results:
        out += ["", "5: first request for a new key (sequential, one "
                "keep-alive connection): n, p50/p90/p99/max ms, wrong", ""]
        for k, v in results["miss"].items():
            out.append("- %s: %d, %.2f/%.2f/%.2f/%.2f, %d (answers: %s)" % (
                k, v["n"], v["p50_ms"], v["p90_ms"], v["p99_ms"],
                v["max_ms"], v["bad"], ", ".join(
                    "%s x%d" % kv for kv in v["answers"].items())))
    if "access" in results:
        out += details_load("9: access log", results["access"]["runs"],
                            "req")
        out.append("- access log lines: %d (requests in timed runs %d)" % (
            results["access"]["lines"], results["access"]["requests_on"]))
    if "elapsed" in results:
        out += ["", "Time per part (s): " + ", ".join(
            "%s %.0f" % kv for kv in results["elapsed"].items())]
    return "\n".join(head), "\n".join(out)


def run_parts(args, results, out):
    todo = PARTS if args.what == "all" else [args.what]
    el = results["elapsed"] = {}
    local = [p for p in todo if p != "scale"]
    if local:
        with lp.Fixture() as fx:
            b = Bench(args, fx)
            for part in local:
                t = time.time()
                results[part] = run_part(b, args, part)
                el[part] = time.time() - t
            for s in (b.auth, b.proxy):
                if s.proc.poll() is not None:
                    log("%s exited early: %d" % (s.mode, s.proc.returncode))
            results["proxy_metrics_cache_hits"] = b.proxy.metrics().get(
                "licproxy_lease_cache_hits_total")
    if "scale" in todo:     # after our servers are gone: it has its own
        t = time.time()
        results["scale"] = bench_scale(out, args.scale_script,
                                       args.scale_timeout, args.scale_args)
        el["scale"] = time.time() - t


def run_part(b, args, part):
    log("---- part %s" % part)
    if part == "get":
        return bench_get(b, args.rounds, args.duration)
    if part == "access":
        return bench_access(b, args.rounds, args.duration)
    if part in ("conn", "resume"):
        return bench_handshake(b, args.rounds, args.duration,
                               part == "resume")
    if part == "miss":
        return bench_miss(b, args.keys)
    if part == "usage":
        if not args.fsync_bin:
            sys.exit("--fsync-bin is required for usage")
        return bench_usage(b, args.rounds, args.duration, args.fsync_bin,
                           [int(x) for x in args.usage_batches.split(",")],
                           args.usage_ids)
    raise ValueError(part)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="all",
                    choices=["all"] + PARTS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--keys", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--usage-batches", default="1",
                    help="records per POST, comma-separated (row 4 is 1)")
    ap.add_argument("--usage-ids", choices=["counter", "random"],
                    default="counter",
                    help="record ids numbered per wrk thread (counter) or "
                    "random hex, as a UUID reporter sends (random)")
    ap.add_argument("--handshake-authority", action="store_true",
                    help="rows 2, 3 also against the authority")
    ap.add_argument("--scale-script", default=os.path.join(HERE,
                                                            "scale.py"))
    ap.add_argument("--scale-timeout", type=int, default=600)
    ap.add_argument("--scale-args", default="",
                    help='more arguments for scale.py, e.g. "--quick"')
    ap.add_argument("--fsync-bin", default=None)
    ap.add_argument("--tlsload-bin", default=None)
    ap.add_argument("--out", default=os.environ.get("BENCH_OUT"))
    args = ap.parse_args()
    if args.what in ("all", "conn", "resume") and not args.tlsload_bin:
        sys.exit("--tlsload-bin is required for conn and resume")
    out = args.out or tempfile.mkdtemp(prefix="licproxy-bench-")
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    results = {"machine": machine(), "args": vars(args),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    log("machine", results["machine"])
    results["background_load"] = background_load()
    log("background load before start: %.0f%% of the machine" % (
        results["background_load"] * 100))
    run_parts(args, results, out)
    results["elapsed"]["total"] = time.time() - t0
    results["rows"] = table_rows(results)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    head, details = report(results)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(head + "\n\n## Details\n" + details + "\n")
    print(details)      # the table last, where it is seen
    print()
    print(head)
    print()
    print("results: %s/results.json, %s/results.md" % (out, out))


if __name__ == "__main__":
    main()

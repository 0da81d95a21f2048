#!/usr/bin/env python3
"""licproxy benchmark driver (run through bench/run.sh or bench/usage.sh).

Starts, on this machine and in one run: a PKI, an authority, a proxy in front
of it and an nginx serving a same-size static body with the same certificate,
then measures

  get    cached GET /v1/license req/s, latency and CPU per request
         (authority, proxy from cache, nginx), wrk -t2 -c64 -d10s
  miss   first-request latency for new keys (proxy cold, authority cold,
         proxy with the authority already holding the lease)
  usage  durable POST /v1/usage, 1-record and 100-record, against the
         authority (ledger) and the proxy (spool), next to the raw
         pwrite+fdatasync rate of the same file system

and prints a Markdown table; everything measured also goes to
$BENCH_OUT/results.json. Uses the integration-test harness
(tests/integration/lp.py) to make the PKI and start the servers.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import ssl
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


def cpu_ticks(pids):
    """utime+stime of the given processes (ticks)."""
    t = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                f_ = f.read().rsplit(")", 1)[1].split()
            t += int(f_[11]) + int(f_[12])
        except OSError:
            pass
    return t


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


# ---------------------------------------------------------------- wrk

def wrk(url, script, server_pid, duration, headers=(), env=None):
    """Runs wrk; returns its summary plus the CPU used by the server tree,
    by wrk itself, by the whole machine and by everything else (other
    tenants of the machine: a number far from 0 means a noisy run)."""
    cmd = ["wrk", "-t%d" % WRK_THREADS, "-c%d" % WRK_CONNS,
           "-d%ds" % duration, "--latency", "-s", script]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    e = dict(os.environ)
    e.update(env or {})
    pids = proc_tree(server_pid)
    c0, s0, t0 = cpu_ticks(pids), sys_ticks(), os.times()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=e, text=True)
    out, err = p.communicate()
    c1, s1, t1 = cpu_ticks(proc_tree(server_pid)), sys_ticks(), os.times()
    if p.returncode != 0:
        raise RuntimeError("wrk failed (%d): %s%s" % (p.returncode, out, err))
    m = re.search(r"^BENCH_JSON (.*)$", out, re.M)
    if not m:
        raise RuntimeError("no summary from wrk:\n" + out + err)
    r = json.loads(m.group(1))
    secs = r["duration_us"] / 1e6
    r["rps"] = r["requests"] / secs
    r["server_cpu_s"] = (c1 - c0) / TICK
    r["server_cpu_us_per_req"] = r["server_cpu_s"] / max(
        r["requests"], 1) * 1e6
    # wrk's own CPU: this process's waited-for children grow by it.
    r["wrk_cpu_s"] = (t1.children_user + t1.children_system -
                      t0.children_user - t0.children_system)
    r["machine_busy"] = (s1[0] - s0[0]) / max(s1[1] - s0[1], 1)
    r["other_cpu_s"] = max(0.0, (s1[0] - s0[0]) / TICK - r["server_cpu_s"] -
                           r["wrk_cpu_s"])
    r["errors"] = sum(r[k] for k in r if k.startswith("err_"))
    return r


def background_load(secs=2.0):
    """Fraction of the machine busy while this benchmark does nothing."""
    s0 = sys_ticks()
    time.sleep(secs)
    s1 = sys_ticks()
    return (s1[0] - s0[0]) / max(s1[1] - s0[1], 1)


# ---------------------------------------------------------------- nginx

class Nginx:
    def __init__(self, pki, body, workers=2):
        self.dir = tempfile.mkdtemp(prefix="lp-nginx-")
        self.port = lp.free_port()
        self.proc = None
        if "'" in body or "\\" in body or "$" in body:
            raise ValueError("body needs nginx escaping")
        d = self.dir
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
    access_log off;
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
                "key": pki.key, "body": body})

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
            import socket
            with socket.create_connection(("127.0.0.1", self.port), 1):
                return True
        lp.wait_for(up, what="nginx to listen")
        return self

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
                            "sync_interval": "5s"}
        self.proxy = fx.add(lp.Server(self.pki, "proxy", workers=args.workers,
                                      extra=extra, name="bench-proxy",
                                      env={"LICPROXY_LICENSE_KEY":
                                           proxy_key}))
        self.proxy.start()
        self.nginx = None

    def get_body(self, server):
        r = server.license(self.member)
        if r.status != 200:
            raise AssertionError("GET %s: %r" % (server.mode, r))
        return r


# ---------------------------------------------------------------- get

def bench_get(b, rounds, duration):
    auth_r = b.get_body(b.auth)
    prox_r = b.get_body(b.proxy)
    prox_r = b.get_body(b.proxy)
    assert prox_r.json()["source"] == "cache", prox_r
    body = auth_r.body
    b.nginx = b.fx.add(Nginx(b.pki, body, workers=b.args.workers).start())
    # Same bytes on the wire for the body; headers are reported as measured.
    c = http.client.HTTPSConnection("127.0.0.1", b.nginx.port,
                                    context=b.pki.context(), timeout=10)
    c.request("GET", "/v1/license", headers={"Authorization":
                                             "Token " + b.member})
    r = c.getresponse()
    nbody = r.read().decode()
    nhead = len(str(r.msg)) + len("HTTP/1.1 200 OK\r\n") + 2
    c.close()
    assert nbody == body, "nginx body differs"
    sizes = {"authority_body": len(auth_r.body),
             "proxy_body": len(prox_r.body), "nginx_body": len(nbody),
             "nginx_head": nhead}
    # licproxy's head: Content-Type, Content-Length, Cache-Control, Connection
    sizes["licproxy_head"] = len("HTTP/1.1 200 OK\r\n") + sum(
        len(k) + 2 + len(v) + 2 for k, v in auth_r.headers.items()) + 2
    log("body sizes", sizes)
    targets = [("licproxy authority", b.auth.url, b.auth.proc.pid),
               ("licproxy proxy (cache)", b.proxy.url, b.proxy.proc.pid),
               ("nginx static", "https://127.0.0.1:%d" % b.nginx.port,
                b.nginx.proc.pid)]
    res = {t[0]: [] for t in targets}
    hdr = ["Authorization: Token " + b.member]
    for name, url, pid in targets:      # warm-up: sessions, caches, JIT-less
        wrk(url + "/v1/license", os.path.join(HERE, "get.lua"), pid, 2,
            headers=hdr)
    for rnd in range(rounds):
        for name, url, pid in targets:
            r = wrk(url + "/v1/license",
                             os.path.join(HERE, "get.lua"), pid, duration,
                             headers=hdr)
            r["round"] = rnd + 1
            res[name].append(r)
            log("GET %-24s round %d: %8.0f req/s p50 %5.2f ms p99 %5.2f ms"
                " server CPU %5.1f us/req, wrk CPU %.1fs, machine busy %.0f%%,"
                " other CPU %.1fs, errors %d" % (
                    name, rnd + 1, r["rps"], r["p50_us"] / 1e3,
                    r["p99_us"] / 1e3, r["server_cpu_us_per_req"],
                    r["wrk_cpu_s"], r["machine_busy"] * 100,
                    r["other_cpu_s"], r["errors"]))
    # Still cached from the store? (a proxy's source stays "cache")
    assert b.get_body(b.proxy).json()["source"] == "cache"
    return {"sizes": sizes, "runs": res}


# ---------------------------------------------------------------- access

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
    b.get_body(on)
    assert b.get_body(on).json()["source"] == "cache"
    targets = [("access log off", b.proxy), ("access log on", on)]
    res = {t[0]: [] for t in targets}
    hdr = ["Authorization: Token " + b.member]
    for name, srv in targets:
        wrk(srv.url + "/v1/license", os.path.join(HERE, "get.lua"),
            srv.proc.pid, 2, headers=hdr)
    for rnd in range(rounds):
        order = targets if rnd % 2 == 0 else list(reversed(targets))
        for name, srv in order:
            r = wrk(srv.url + "/v1/license", os.path.join(HERE, "get.lua"),
                    srv.proc.pid, duration, headers=hdr)
            r["round"] = rnd + 1
            res[name].append(r)
            log("GET %-16s round %d: %8.0f req/s p99 %5.2f ms server CPU "
                "%5.1f us/req" % (name, rnd + 1, r["rps"], r["p99_us"] / 1e3,
                                  r["server_cpu_us_per_req"]))
    with open(extra["log"]["file"]) as f:
        lines = sum(1 for _ in f)
    log("access log lines written: %d" % lines)
    return {"runs": res, "lines": lines}


# ---------------------------------------------------------------- miss

def time_gets(server, keys, want_source):
    c = server.conn()
    lat = []
    bad = 0
    try:
        for k in keys:
            t = time.perf_counter()
            r = server.license(k, conn=c)
            lat.append((time.perf_counter() - t) * 1e3)
            if r.status != 200 or r.json().get("source") != want_source:
                bad += 1
    finally:
        c.close()
    return lat, bad


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def summary(lat, bad):
    return {"n": len(lat), "bad": bad, "p50_ms": pct(lat, 50),
            "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
            "max_ms": max(lat), "mean_ms": statistics.mean(lat)}


def bench_miss(b, n):
    def mk(tag):
        return [b.auth.create_key(name="%s-%d" % (tag, i)) for i in range(n)]
    t = time.time()
    cold, direct, warm = mk("miss-cold"), mk("miss-auth"), mk("miss-warm")
    log("created %d keys in %.1fs" % (3 * n, time.time() - t))
    out = {}
    # Cache hit on a warm connection, as the baseline of the same client.
    lat, bad = time_gets(b.proxy, [b.member] * n, "cache")
    out["proxy hit (baseline)"] = summary(lat, bad)
    lat, bad = time_gets(b.proxy, cold, "upstream")
    out["proxy miss, authority cold (signs)"] = summary(lat, bad)
    lat, bad = time_gets(b.auth, direct, "authority")
    out["authority first request (signs)"] = summary(lat, bad)
    lat, bad = time_gets(b.auth, warm, "authority")     # authority now holds
    lat, bad = time_gets(b.proxy, warm, "upstream")
    out["proxy miss, authority warm"] = summary(lat, bad)
    for k, v in out.items():
        log("miss %-36s p50 %6.2f ms p90 %6.2f ms p99 %6.2f ms max %6.2f ms"
            " (n=%d, wrong=%d)" % (k, v["p50_ms"], v["p90_ms"], v["p99_ms"],
                                   v["max_ms"], v["n"], v["bad"]))
    return out


# ---------------------------------------------------------------- usage

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


def bench_usage(b, rounds, duration, fsync_bin):
    res = {"fsync_per_s": [], "runs": []}
    d = os.path.dirname(b.auth.store)
    res["fsync_dir"] = d
    res["fsync_per_s"].append(fsync_rate(fsync_bin, d))
    log("raw pwrite+fdatasync: %.0f/s in %s" % (res["fsync_per_s"][-1], d))
    nonce = "%x" % int(time.time() * 1000)
    for rnd in range(rounds):
        for target in (b.auth, b.proxy):
            for batch in (1, 100):
                key = b.auth.create_key(name="usage-%s-%d-%d" % (
                    target.mode, batch, rnd))
                r0 = target.license(key)            # lease cached / issued
                assert r0.status == 200, r0
                t0 = mdb_txnid(target.store)
                fwd0 = b.proxy.status_json()["usage"]["forwarded"]
                t_start = time.time()
                r = wrk(
                    target.url + "/v1/usage",
                    os.path.join(HERE, "usage.lua"), target.proc.pid,
                    duration, env={"BENCH_KEY": key, "BENCH_BATCH":
                                   str(batch), "BENCH_RUN": "%s-%s-%d-%d" % (
                                       nonce, target.mode, batch, rnd)})
                t1 = mdb_txnid(target.store)
                r["_t_start"] = t_start
                r["_fwd0"] = fwd0
                secs = r["duration_us"] / 1e6
                r.update({"target": target.mode, "batch": batch,
                          "round": rnd + 1, "key_id": lp.key_id(key),
                          "records_per_s": r["accepted"] / secs})
                if t0 is not None and t1 is not None:
                    r["commits"] = t1 - t0
                    r["commits_per_s"] = (t1 - t0) / secs
                    r["posts_per_commit"] = r["requests"] / max(t1 - t0, 1)
                if target is b.proxy:
                    r.update(relay_drain(b, r["_t_start"], r["_fwd0"]))
                    log("relay: %d records forwarded upstream, drained %.1fs "
                        "after the run ended (%.0f records/s since the run "
                        "started)" % (r["relay_forwarded"],
                                      r["relay_drain_s"], r["relay_per_s"]))
                del r["_t_start"], r["_fwd0"]
                res["runs"].append(r)
                log("usage %-9s batch %3d round %d: %7.0f POST/s %8.0f "
                    "records/s p50 %5.2f ms p99 %6.2f ms commits/s %s "
                    "POSTs/commit %s server CPU %.0f us/POST machine busy "
                    "%.0f%% other CPU %.1fs not-202 %d dups %d errors %d" % (
                        target.mode, batch, rnd + 1, r["rps"],
                        r["records_per_s"], r["p50_us"] / 1e3,
                        r["p99_us"] / 1e3,
                        "%.0f" % r["commits_per_s"] if "commits" in r
                        else "?", "%.1f" % r["posts_per_commit"]
                        if "commits" in r else "?",
                        r["server_cpu_us_per_req"], r["machine_busy"] * 100,
                        r["other_cpu_s"], r["not_202"],
                        r["duplicates"], r["errors"]))
        res["fsync_per_s"].append(fsync_rate(fsync_bin, d))
        log("raw pwrite+fdatasync: %.0f/s" % res["fsync_per_s"][-1])
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
    for r in res["runs"]:
        r["ledger_records"] = ledger_records(b.auth.store, r["key_id"])
        r["ledger_ok"] = r["ledger_records"] >= r["accepted"] and \
            r["ledger_records"] <= r["accepted"] + WRK_CONNS * r["batch"]
        if not r["ledger_ok"]:
            log("LEDGER MISMATCH %s batch %d round %d: wrk accepted %d, "
                "ledger %d" % (r["target"], r["batch"], r["round"],
                               r["accepted"], r["ledger_records"]))
    res["proxy_status_after"] = b.proxy.status_json()
    return res


# ---------------------------------------------------------------- report

def med(rs, k):
    return statistics.median(r[k] for r in rs)


def report(results):
    out = []
    m = results["machine"]
    out.append("Machine: %s x%d, kernel %s; %s" % (m["cpu"], m["nproc"],
                                                   m["kernel"], m["tmpfs"]))
    if "access" in results:
        out.append("")
        out.append("| cached GET, log.access | req/s (median) | p99 ms "
                   "| server CPU us/req (median) |")
        out.append("|---|---|---|---|")
        for name, rs in results["access"]["runs"].items():
            out.append("| %s | %.0f | %.2f | %.1f |" % (
                name, statistics.median(r["rps"] for r in rs),
                statistics.median(r["p99_us"] for r in rs) / 1e3,
                statistics.median(r["server_cpu_us_per_req"] for r in rs)))
    if "get" in results:
        g = results["get"]
        ng = g["runs"]["nginx static"]
        nrps = statistics.mean(r["rps"] for r in ng)
        out.append("")
        out.append("| GET /v1/license (wrk -t%d -c%d) | req/s (each round) "
                   "| p50 ms | p99 ms | server CPU us/req | wrk CPU us/req "
                   "| other tenants' CPU s | vs nginx |" % (
                       WRK_THREADS, WRK_CONNS))
        out.append("|---|---|---|---|---|---|---|---|")
        for name, rs in g["runs"].items():
            rps = statistics.mean(r["rps"] for r in rs)
            out.append("| %s | %.0f (%s) | %.2f | %.2f | %.1f | %.1f | %s "
                       "| %.2fx |" % (
                           name, rps, ", ".join("%.0f" % r["rps"]
                                                for r in rs),
                           med(rs, "p50_us") / 1e3, med(rs, "p99_us") / 1e3,
                           med(rs, "server_cpu_us_per_req"),
                           statistics.median(r["wrk_cpu_s"] / r["requests"]
                                             * 1e6 for r in rs),
                           ", ".join("%.1f" % r["other_cpu_s"] for r in rs),
                           rps / nrps))
    if "miss" in results:
        out.append("")
        out.append("| first request for a new key (sequential, keep-alive) "
                   "| n | p50 ms | p90 ms | p99 ms | max ms |")
        out.append("|---|---|---|---|---|---|")
        for k, v in results["miss"].items():
            out.append("| %s | %d | %.2f | %.2f | %.2f | %.2f |" % (
                k, v["n"], v["p50_ms"], v["p90_ms"], v["p99_ms"],
                v["max_ms"]))
    if "usage" in results:
        u = results["usage"]
        f = statistics.mean(u["fsync_per_s"])
        out.append("")
        out.append("Raw pwrite(4 KiB)+fdatasync on the store's file system: "
                   "%s /s (mean %.0f)" % (
                       ", ".join("%.0f" % x for x in u["fsync_per_s"]), f))
        out.append("")
        out.append("| POST /v1/usage (wrk -t%d -c%d) | records/POST | POST/s "
                   "| records/s | p50 ms | p99 ms | LMDB commits/s "
                   "| POSTs/commit | POST/s / fsync/s | server CPU us/POST "
                   "| other CPU s | relay records/s | ledger ok |" % (
                       WRK_THREADS, WRK_CONNS))
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in u["runs"]:
            out.append("| %s r%d | %d | %.0f | %.0f | %.2f | %.2f | %s | %s "
                       "| %.2f | %.0f | %.1f | %s | %s |" % (
                           "authority (ledger)" if r["target"] == "authority"
                           else "proxy (spool)", r["round"], r["batch"],
                           r["rps"], r["records_per_s"], r["p50_us"] / 1e3,
                           r["p99_us"] / 1e3,
                           "%.0f" % r["commits_per_s"] if "commits" in r
                           else "?",
                           "%.1f" % r["posts_per_commit"] if "commits" in r
                           else "?", r["rps"] / f,
                           r["server_cpu_us_per_req"], r["other_cpu_s"],
                           "%.0f" % r["relay_per_s"] if "relay_per_s" in r
                           else "-",
                           "yes" if r.get("ledger_ok") else "NO"))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="all",
                    choices=["all", "get", "miss", "usage", "access"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--keys", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fsync-bin", default=None)
    ap.add_argument("--out", default=os.environ.get("BENCH_OUT"))
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="licproxy-bench-")
    os.makedirs(out, exist_ok=True)
    results = {"machine": machine(), "args": vars(args),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    log("machine", results["machine"])
    results["background_load"] = background_load()
    log("background load before start: %.0f%% of the machine" % (
        results["background_load"] * 100))
    with lp.Fixture() as fx:
        b = Bench(args, fx)
        if args.what in ("all", "get"):
            results["get"] = bench_get(b, args.rounds, args.duration)
        if args.what in ("all", "access"):
            results["access"] = bench_access(b, max(args.rounds, 3),
                                             args.duration)
        if args.what in ("all", "miss"):
            results["miss"] = bench_miss(b, args.keys)
        if args.what in ("all", "usage"):
            if not args.fsync_bin:
                sys.exit("--fsync-bin is required for usage")
            results["usage"] = bench_usage(b, args.rounds, args.duration,
                                           args.fsync_bin)
        for s in (b.auth, b.proxy):
            if s.proc.poll() is not None:
                log("%s exited early: %d" % (s.mode, s.proc.returncode))
        results["proxy_metrics_cache_hits"] = b.proxy.metrics().get(
            "licproxy_lease_cache_hits_total")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    text = report(results)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text + "\n")
    print()
    print(text)
    print()
    print("results: %s/results.json, %s/results.md" % (out, out))


if __name__ == "__main__":
    main()

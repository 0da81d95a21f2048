#!/usr/bin/env python3
"""licproxy scale benchmark: issue #13 rows 6, 7 and 8.

  python3 bench/scale.py --out DIR --licproxy BIN [--quick]

  6  a proxy over 1, 10k, 100k and 1M cached leases (--quick: 1 and 100k),
     all running at once: cached GET req/s and server CPU per request (wrk
     -t1 -c64, median of --rounds rounds interleaved over the sizes), the miss
     p50 through the uplink to a local authority, and the memory of all its
     processes (RSS, PSS, and PSS without the LMDB data.mdb mapping), next
     to nginx's PSS serving the same body.
  7  restart to ready: from exec to /readyz 200 with the largest store and
     the upstream down (a URL nobody listens on).
  8  upstream bytes per minute (licproxy_upstream_bytes_total in + out)
     while 1,000 instances on 10 keys check once a minute, usage aside.

Leases come from bench/mkleases.c (built here against the build's
liblicproxy.a): key i is "S" + i in 39 digits, signed with the PKI's
signing key, written 10,000 to a transaction. Writes DIR/scale.json as
{"rows": [...]} and prints the rows. Uses tests/integration/lp.py.
"""
import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PKGS = ("lmdb libcrypto libssl libevent libevent_openssl msgpack yaml-0.1 "
        "jansson libseccomp libcurl")
NGINX_PSS_MIB = 13.4    # issue #13's reading, when nginx cannot be started


def log(*a):
    print("scale:", *a, flush=True)


def lease_key(i):
    return "S%039d" % i


# ---------------------------------------------------------------- tools

def build_mkleases(out, binpath):
    """mkleases against the library next to BIN, else the tree's build/."""
    exe = os.path.join(out, "mkleases")
    libs = subprocess.run(["pkg-config", "--libs"] + PKGS.split(),
                          capture_output=True, text=True,
                          check=True).stdout.split()
    err = ""
    for lib in (os.path.join(os.path.dirname(binpath), "liblicproxy.a"),
                os.path.join(ROOT, "build", "liblicproxy.a")):
        if not os.path.exists(lib):
            continue
        p = subprocess.run(["cc", "-std=gnu11", "-O2", "-Wall", "-Wextra",
                            "-D_GNU_SOURCE", "-I" + os.path.join(ROOT,
                                                                "common"),
                            "-I" + os.path.join(ROOT, "store"), "-o", exe,
                            os.path.join(HERE, "mkleases.c"), lib] + libs +
                           ["-lm"], capture_output=True, text=True)
        if p.returncode == 0:
            return exe
        err += p.stderr
    raise RuntimeError("cannot build mkleases:\n" + err)


def fill(mk, store, n, signing):
    t = time.time()
    subprocess.run([mk, store, str(n), signing], check=True,
                   capture_output=True)
    log("%d leases written in %.1f s" % (n, time.time() - t))


def tree(pid):
    """pid and its descendants (bench.py's walk; imported late, as lp is)."""
    import bench
    return bench.proc_tree(pid)


def memory(pid):
    """KiB summed over the process tree: rss, pss, and pss of data.mdb."""
    rss = pss = data = 0
    for p in tree(pid):
        try:
            with open("/proc/%d/smaps" % p) as f:
                name = ""
                for line in f:
                    if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                        name = line.split()[-1] if len(line.split()) > 5 \
                            else ""
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        v = int(line.split()[1])
                        pss += v
                        if name.endswith("/data.mdb"):
                            data += v
        except OSError:
            pass
    return {"rss_kib": rss, "pss_kib": pss, "pss_data_mdb_kib": data,
            "pss_no_data_kib": pss - data, "processes": len(tree(pid))}


def wrk(url, key, duration):
    cmd = ["wrk", "-t1", "-c64", "-d%ds" % duration, "--latency", "-s",
           os.path.join(HERE, "get.lua"), "-H", "Authorization: Token " + key,
           url + "/v1/license"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"^BENCH_JSON (.*)$", p.stdout, re.M)
    if p.returncode != 0 or not m:
        raise RuntimeError("wrk: %s%s" % (p.stdout, p.stderr))
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    errs = sum(v for k, v in r.items() if k.startswith("err_"))
    if errs:
        raise RuntimeError("wrk saw %d errors" % errs)
    return r


def tree_cpu_s(pid):
    """utime+stime of the server's process tree, seconds: with wrk on the
    same 2 cores, CPU per request is steadier than req/s."""
    t = 0
    for q in tree(pid):
        try:
            with open("/proc/%d/stat" % q) as f:
                v = f.read().rsplit(")", 1)[1].split()
            t += int(v[11]) + int(v[12])
        except OSError:
            pass
    return t / os.sysconf("SC_CLK_TCK")


def uplink_idle_cpu(p, secs):
    """ms of CPU per second the idle uplink uses (its tick's work)."""
    pid = p.children_by_comm()["licproxy-uplink"][0]

    def ticks():
        with open("/proc/%d/stat" % pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
        return int(v[11]) + int(v[12])
    t0, c0 = time.time(), ticks()
    time.sleep(secs)
    return (ticks() - c0) * 1000.0 / os.sysconf("SC_CLK_TCK") / (
        time.time() - t0)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


# ---------------------------------------------------------------- setup

class Scale:
    def __init__(self, args, fx):
        self.args = args
        self.fx = fx
        self.pki = fx.add(lp.Pki("scale"))
        self.quiet = {"log": {"level": "warn"},
                      "store": {"max_size": "8GiB"}}
        self.auth = fx.add(lp.Server(self.pki, "authority", workers=2,
                                     extra=self.quiet, name="scale-auth"))
        self.proxy_key = self.auth.create_key(name="scale-proxy",
                                              role="proxy")
        self.auth.start()
        self.mk = build_mkleases(args.out, lp.BIN)

    def proxy(self, name, url=None, sync="60s"):
        extra = dict(self.quiet)
        extra["license"] = {"server_url": [url or self.auth.url],
                            "ca_file": self.pki.ca,
                            "trusted_keys": [self.pki.pub],
                            "sync_interval": sync,
                            # The miss series must measure upstream misses,
                            # not the per-address 429 budget.
                            "miss_rate": 1048576, "miss_burst": 1048576}
        return self.fx.add(lp.Server(self.pki, "proxy", workers=2,
                                     extra=extra, name=name,
                                     env={"LICPROXY_LICENSE_KEY":
                                          self.proxy_key}))


# ---------------------------------------------------------------- row 6

def miss_series(s, proxy, n, tag):
    """n first requests for new keys, one keep-alive connection: ms each."""
    keys = [s.auth.create_key(name="scale-miss-%s-%d" % (tag, i))
            for i in range(n)]
    c = proxy.conn()
    lat = []
    try:
        for k in keys:
            t = time.perf_counter()
            r = proxy.license(k, conn=c)
            lat.append((time.perf_counter() - t) * 1e3)
            if r.status != 200 or r.json().get("source") != "upstream":
                raise AssertionError("miss: %r" % r)
    finally:
        c.close()
    return lat


def start_size(s, n):
    """A proxy over n leases, checked to answer lease n/2 from its cache."""
    p = s.proxy("scale-%d" % n)
    fill(s.mk, p.store, n, s.pki.signing)
    p.start()
    key = lease_key(n // 2)
    r = p.license(key)
    if r.status != 200 or r.json().get("source") != "cache":
        raise AssertionError("lease %d not served from cache: %r" % (
            n // 2, r))
    idle = uplink_idle_cpu(p, 5)
    wrk(p.url, key, 2)     # warm-up: TLS sessions, the worker's lease slot
    return p, {"n": n, "key": key, "uplink_idle_cpu_ms_per_s": idle,
               "runs": [], "miss_ms": []}


def rounds(s, live):
    """wrk rounds and miss series interleaved over every size (order
    reversed every other round), so that the machine's load falls on all
    sizes alike: a single series of misses per size took whatever the
    machine did in its half-second (1.23x at one size, 1.04x at the next
    in one run)."""
    per = max(1, s.args.misses // s.args.rounds)
    for rnd in range(s.args.rounds):
        for p, res in (live if rnd % 2 == 0 else live[::-1]):
            c0 = tree_cpu_s(p.proc.pid)
            r = wrk(p.url, res["key"], s.args.duration)
            r["cpu_us_per_req"] = (tree_cpu_s(p.proc.pid) - c0) / max(
                r["requests"], 1) * 1e6
            res["runs"].append(r)
            lat = miss_series(s, p, per, "%d-%d" % (res["n"], rnd))
            res["miss_ms"].extend(lat)
            log("n=%d round %d: %.0f req/s, %.1f us/req server CPU, miss "
                "p50 %.2f ms (%d)" % (res["n"], rnd + 1, r["rps"],
                                      r["cpu_us_per_req"], pct(lat, 50),
                                      len(lat)))


def finish_size(s, p, res):
    runs = res.pop("runs")
    res["rps"] = statistics.median(r["rps"] for r in runs)
    res["rps_runs"] = [r["rps"] for r in runs]
    res["cpu_us_per_req"] = statistics.median(r["cpu_us_per_req"]
                                              for r in runs)
    res["p99_us"] = statistics.median(r["p99_us"] for r in runs)
    lat = res.pop("miss_ms")
    res["misses"] = len(lat)
    res["miss_p50_ms"], res["miss_p99_ms"] = pct(lat, 50), pct(lat, 99)
    res["memory"] = mem = memory(p.proc.pid)
    res["leases_cached"] = p.status_json().get("leases", {}).get("cached")
    log("n=%d: %.0f req/s, %.1f us/req, miss p50 %.2f ms p99 %.2f ms, RSS "
        "%.1f MiB, PSS %.1f MiB (%.1f without data.mdb), leases_cached %s, "
        "idle uplink %.1f ms CPU/s" % (
            res["n"], res["rps"], res["cpu_us_per_req"], res["miss_p50_ms"],
            res["miss_p99_ms"], mem["rss_kib"] / 1024,
            mem["pss_kib"] / 1024, mem["pss_no_data_kib"] / 1024,
            res["leases_cached"], res["uplink_idle_cpu_ms_per_s"]))
    return res


def nginx_pss(s):
    """nginx's PSS after a wrk run (bench.py's Nginx), or None."""
    try:
        import bench
        body = s.auth.license(s.auth.create_key(name="scale-ng")).body
        ng = s.fx.add(bench.Nginx(s.pki, body, workers=2).start())
        # the same load as the proxy had before its reading: connections
        # and TLS buffers are what a server's heap holds on to
        wrk("https://127.0.0.1:%d" % ng.port, "x" * 40, s.args.duration)
        return memory(ng.proc.pid)["pss_kib"] / 1024
    except Exception as e:     # noqa: BLE001 (the reference is optional)
        import traceback
        traceback.print_exc()
        log("nginx not measured (%s): using %.1f MiB" % (e, NGINX_PSS_MIB))
        return None


# ---------------------------------------------------------------- row 7

def restart_ms(s, p):
    """exec to /readyz 200, the upstream down."""
    p.stop()
    p.conf["license"]["server_url"] = ["https://127.0.0.1:%d" %
                                       lp.free_port()]
    out = []
    for _ in range(s.args.restarts):
        t0 = time.perf_counter()
        p.start(wait=False)
        while True:
            try:
                if p.status("/readyz").status == 200:
                    break
            except OSError:
                pass
            if p.proc.poll() is not None:
                raise AssertionError("proxy exited:\n" + p.logs())
            if time.perf_counter() - t0 > 60:
                raise AssertionError("not ready in 60 s")
            time.sleep(0.002)
        out.append((time.perf_counter() - t0) * 1e3)
        p.stop()
    return statistics.median(out), out


# ---------------------------------------------------------------- row 8

def upstream_bytes(s, secs):
    """1,000 instances on 10 keys, once a minute each: ~16.7 GETs/s."""
    keys = [s.auth.create_key(name="scale-b-%d" % i) for i in range(10)]
    p = s.proxy("scale-bytes").start()
    for k in keys:
        assert p.license(k).status == 200

    def total(mm):
        return sum(v for k, v in mm.items()
                   if k.startswith("licproxy_upstream_bytes_total"))
    t0 = time.time()
    stop = threading.Event()

    def instances():
        c = p.conn()
        i = 0
        while not stop.is_set():
            r = p.license(keys[i % 10], conn=c)
            if r.status != 200:
                raise AssertionError(r)
            i += 1
            # 1000 checks per 60 s, spread evenly
            time.sleep(max(0.0, t0 + i * 0.06 - time.time()))
        c.close()
    th = threading.Thread(target=instances)
    th.start()
    # The leases fetched just now fall due together 60 s on (the
    # authority's lease_refresh): a window from 30 s on, a whole number
    # of minutes long, holds every key's refresh once a minute exactly.
    time.sleep(30)
    m = p.metrics()
    b0, w0 = total(m), time.time()
    time.sleep(secs)
    m1 = p.metrics()
    b1, t1 = total(m1), time.time()
    stop.set()
    th.join()
    per_min = (b1 - b0) / (t1 - w0) * 60
    split = {k: v - m.get(k, 0) for k, v in m1.items()
             if k.startswith("licproxy_upstream_")}
    log("upstream: %.0f bytes/min over %.0f s: %s" % (per_min, t1 - w0,
                                                      split))
    p.stop()
    return per_min, split


# ---------------------------------------------------------------- rows

def row(n, what, value, ref, ratio, goal, met):
    return {"n": n, "what": what, "licproxy": value, "reference": ref,
            "ratio": ratio, "goal": goal, "met": met}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--licproxy", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", help="comma-separated lease counts")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--misses", type=int, default=300,
                    help="misses per size, spread over the rounds")
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--bytes-secs", type=int, default=120,
                    help="row 8's window: whole minutes (60, 120, ...)")
    ap.add_argument("--skip", default="", help="rows to skip: 6,7,8")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    args.out = os.path.abspath(args.out)
    os.environ["LICPROXY"] = os.path.abspath(args.licproxy)
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    sys.path.insert(0, HERE)
    global lp
    import lp   # noqa: E402  (reads LICPROXY)
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else (
        [1, 100000] if args.quick else [1, 10000, 100000, 1000000])
    if args.quick:
        args.rounds, args.misses, args.bytes_secs = 2, 100, 60
    skip = set(args.skip.split(","))
    rows, raw = [], {"sizes": [], "args": vars(args)}
    with lp.Fixture() as fx:
        s = Scale(args, fx)
        last = None
        if "6" not in skip or "7" not in skip:
            live = [start_size(s, n) for n in sizes]
            rounds(s, live)
            for p, res in live:
                raw["sizes"].append(finish_size(s, p, res))
            for p, _ in live[:-1]:
                p.stop()
            last = live[-1][0]
        if "6" not in skip and raw["sizes"]:
            rows += rows6(s, raw)
        if "7" not in skip and last is not None:
            ms, runs = restart_ms(s, last)
            raw["restart_ms"] = runs
            big = raw["sizes"][-1]["n"]
            rows.append(row("7", "restart to ready: exec to /readyz 200 at "
                            "%s leases, upstream down" % format(big, ","),
                            "%.0f ms" % ms, "-", "-", "<= 100 ms",
                            ms <= 100))
        if "8" not in skip:
            per_min, split = upstream_bytes(s, args.bytes_secs)
            raw["upstream"] = split
            rows.append(row("8", "upstream bytes per minute, 1,000 instances"
                            " on 10 keys once a minute",
                            "%.0f B/min" % per_min, "-", "-",
                            "<= 4 KiB/min", per_min <= 4096))
    with open(os.path.join(args.out, "scale.json"), "w") as f:
        json.dump({"rows": rows, "raw": raw}, f, indent=1)
    for r in rows:
        print("| %s | %s | %s | %s | %s | %s | %s |" % (
            r["n"], r["what"], r["licproxy"], r["reference"], r["ratio"],
            r["goal"] or "-", {True: "met", False: "not met",
                               None: "-"}[r["met"]]))


def rows6(s, raw):
    base = raw["sizes"][0]
    out = []
    for res in raw["sizes"][1:]:
        n = format(res["n"], ",")
        ratio = res["rps"] / base["rps"]
        out.append(row("6", "scale: cached GET req/s at %s leases" % n,
                       "%s req/s" % format(int(res["rps"]), ","),
                       "%s lease: %s req/s" % (base["n"], format(
                           int(base["rps"]), ",")), "%.2fx" % ratio,
                       "within 10% of 1 lease", ratio >= 0.9))
        cr = res["cpu_us_per_req"] / base["cpu_us_per_req"]
        out.append(row("6", "scale: server CPU per cached GET at %s leases"
                       % n, "%.1f us/req" % res["cpu_us_per_req"],
                       "%s lease: %.1f us/req" % (
                           base["n"], base["cpu_us_per_req"]),
                       "%.2fx" % cr, None, None))
        mr = res["miss_p50_ms"] / base["miss_p50_ms"]
        out.append(row("6", "scale: miss p50 at %s leases" % n,
                       "%.2f ms" % res["miss_p50_ms"], "%s lease: %.2f ms" % (
                           base["n"], base["miss_p50_ms"]), "%.2fx" % mr,
                       "within 10% of 1 lease", mr <= 1.1))
    ng = nginx_pss(s)
    ref = ng if ng is not None else NGINX_PSS_MIB
    for res in raw["sizes"]:
        m = res["memory"]
        v = m["pss_no_data_kib"] / 1024
        out.append(row("6", "scale: PSS of all %d processes at %s leases, "
                       "data.mdb aside (RSS %.1f MiB, PSS %.1f MiB)" % (
                           m["processes"], format(res["n"], ","),
                           m["rss_kib"] / 1024, m["pss_kib"] / 1024),
                       "%.1f MiB" % v, "nginx PSS %.1f MiB%s" % (
                           ref, "" if ng is not None else " (issue #13)"),
                       "%.2fx" % (v / ref), "<= nginx PSS", v <= ref))
    return out


if __name__ == "__main__":
    main()

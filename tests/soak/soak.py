#!/usr/bin/python3
"""Soak (issue 8, `make soak`; not part of `make test`): SOAK_SECONDS
(default 600) of mixed load against a proxy (2 workers) in front of an
authority, with kill -9 of a random child every 20 s and an upstream that
comes and goes. It ends with and asserts:

- every usage record acknowledged with a 202 is in the authority's ledger
  exactly once (`licproxy usage --json`: records and quantities), after the
  relay has drained; a deliberate re-send is never booked again;
- no 5xx but 503 `upstream_unavailable` and 507 `spool_full`; answers to
  unknown keys are 403, 429 `too_many_requests` or 503;
- memory and stores stay bounded: the private memory (RssAnon) of every
  process may not grow past 2x its figure at a third of the run, nor pass a
  cap; its whole RSS may add at most the store file it maps (LMDB pages);
  both stores grow by design with every accepted usage record (the
  de-duplication index lives for usage.dedup_window, 24h, and the
  authority keeps its ledger), so they are bounded per acknowledged record,
  over the whole run and since the third;
- slow clients are closed within header_timeout (plus slack);
- every child is alive at the end (the process tree as in lp.py).

It prints a table of figures and exits 1 if any check failed.
"""
import collections
import http.client
import json
import os
import random
import re
import signal
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "integration"))
from lp import Fixture, Pki, Server, comm, fake_key, key_id, run, wait_for  # noqa: E402,E501

SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
NKEYS = 50
LOADERS = 4
KILL_EVERY = 20
HEADER_TIMEOUT = 5
ANON_CAP = 128 << 20            # bytes of private memory, any one process
STORE_PER_RECORD = 1024         # bytes of data.mdb per acknowledged record
STORE_FLOOR = 32 << 20          # ... plus this
GROWTH = 2.0                    # final may not exceed GROWTH x the 1/3 figure
FLOOR = 16 << 20                # growth is judged above this (noise)
METRIC = "soak_units"


class Stats:
    """Figures shared by the threads; one lock, small critical sections."""

    def __init__(self):
        self.lock = threading.Lock()
        self.codes = collections.Counter()      # (kind, code, error)
        self.conn_errors = collections.Counter()
        self.unexpected = []
        self.acked_records = 0
        self.acked_qty = 0
        self.acked_by_key = collections.Counter()
        self.resent = 0
        self.rebooked = 0
        self.uncertain = []                     # batches with no answer yet
        self.kills = collections.Counter()
        self.outages = 0
        self.slow = []                          # seconds until closed
        self.samples = []       # (t, {proc: (rss, anon)}, sizes, acked)
        self.failures = []

    def code(self, kind, status, err):
        with self.lock:
            self.codes[(kind, status, err)] += 1

    def bad(self, what):
        with self.lock:
            if len(self.unexpected) < 50:
                self.unexpected.append(what)


def now_ts():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Client:
    """One keep-alive TLS connection to the proxy, reopened after errors."""

    def __init__(self, srv):
        self.srv = srv
        self.c = None

    def req(self, method, path, key, body=None, headers=None):
        h = dict(headers or {})
        h["Authorization"] = "Token " + key
        if body is not None:
            body = json.dumps(body)
            h["Content-Type"] = "application/json"
        if self.c is None:
            self.c = self.srv.conn(timeout=15)
        try:
            self.c.request(method, path, body=body, headers=h)
            r = self.c.getresponse()
            data = r.read()
            if r.getheader("connection", "").lower() == "close":
                self.close()
            try:
                j = json.loads(data) if data else {}
            except ValueError:
                j = {"error": "<not json>"}
            return r.status, j
        except (OSError, http.client.HTTPException, ssl.SSLError):
            self.close()
            return None, None

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


class Soak:
    def __init__(self, fx):
        self.st = Stats()
        self.stop = threading.Event()
        self.auth_lock = threading.Lock()       # held while restarting
        self.t0 = time.time()
        self.pki = fx.add(Pki(name="soak"))
        self.auth = fx.add(Server(self.pki, "authority", name="soak-auth"))
        self.auth.conf["log"]["level"] = "info"
        pkey = self.auth.create_key(name="proxy", role="proxy")
        self.keys = [self.auth.create_key(name="svc%d" % i)
                     for i in range(NKEYS)]
        self.proxy = fx.add(Server(
            self.pki, "proxy", name="soak-proxy", workers=2,
            env={"LICPROXY_LICENSE_KEY": pkey}, extra={
                "license": {"server_url": [self.auth.url],
                            "ca_file": self.pki.ca,
                            "trusted_keys": [self.pki.pub],
                            "timeout": "1s", "sync_interval": "2s"},
                "server": {"header_timeout": "%ds" % HEADER_TIMEOUT},
                "log": {"level": "info"}}))
        self.auth.start()
        self.proxy.start()
        wait_for(lambda: self.proxy.status_json()["state"] == "Connected",
                 what="proxy Connected")
        c = Client(self.proxy)
        for k in self.keys:         # warm the cache while the upstream is up
            s, _ = c.req("GET", "/v1/license", k)
            assert s == 200, s
        c.close()
        self.seq = 0

    # ---- load ----
    def next_id(self):
        with self.st.lock:
            self.seq += 1
            return "soak-%d" % self.seq

    def license(self, c, rnd):
        k = rnd.choice(self.keys)
        s, j = c.req("GET", "/v1/license", k, headers={
            "X-Instance-Id": "inst-%d" % rnd.randrange(300)})
        self.judge("license", s, j, ok=(200,), errs=("upstream_unavailable",))

    def unknown(self, c, rnd):
        s, j = c.req("GET", "/v1/license", fake_key(rnd.random()))
        self.judge("unknown", s, j, ok=(403,),
                   errs=("upstream_unavailable", "too_many_requests"))

    def judge(self, kind, s, j, ok, errs):
        if s is None:
            with self.st.lock:
                self.st.conn_errors[kind] += 1
            return
        err = (j or {}).get("error")
        self.st.code(kind, s, err if s != 200 else None)
        if s in ok or (s in (429, 503) and err in errs) or \
                (s == 507 and err == "spool_full"):
            return
        self.st.bad("%s -> %d %r" % (kind, s, j))

    def usage(self, c, rnd, batch=None, resend=False):
        if batch is None:
            k = rnd.choice(self.keys)
            recs = [{"id": self.next_id(), "product": "engine",
                     "metric": METRIC, "quantity": rnd.randint(1, 10),
                     "ts": now_ts()} for _ in range(rnd.randint(1, 5))]
            batch = (k, recs)
        k, recs = batch
        s, j = c.req("POST", "/v1/usage", k, body={"records": recs})
        self.judge("usage" if not resend else "resend", s, j, ok=(202,),
                   errs=("upstream_unavailable",))
        if s is None and resend:
            return None
        if s is None:           # maybe stored: retry the same ids later
            with self.st.lock:
                self.st.uncertain.append(batch)
            return None
        if s != 202:
            return None
        if resend:
            with self.st.lock:
                self.st.resent += 1
                self.st.rebooked += j.get("accepted", 0)
            return batch
        with self.st.lock:
            self.st.acked_records += len(recs)
            self.st.acked_qty += sum(r["quantity"] for r in recs)
            self.st.acked_by_key[key_id(k)] += len(recs)
            if j.get("accepted", 0) + j.get("duplicates", 0) != len(recs):
                self.st.bad("usage 202 %r for %d records" % (j, len(recs)))
        return batch

    def retry_uncertain(self, c):
        with self.st.lock:
            if not self.st.uncertain:
                return False
            batch = self.st.uncertain.pop(0)
        k, recs = batch
        s, j = c.req("POST", "/v1/usage", k, body={"records": recs})
        if s == 202:
            with self.st.lock:
                self.st.acked_records += len(recs)
                self.st.acked_qty += sum(r["quantity"] for r in recs)
                self.st.acked_by_key[key_id(k)] += len(recs)
        else:                   # still unknown whether it is stored
            with self.st.lock:
                self.st.uncertain.append(batch)
            if s is not None and s != 503:
                self.st.bad("uncertain batch retry -> %s %r" % (s, j))
            time.sleep(0.2)
        return True

    def loader(self, n):
        rnd = random.Random(n)
        c = Client(self.proxy)
        done = collections.deque(maxlen=50)
        while not self.stop.is_set():
            x = rnd.random()
            if x < 0.05 and self.retry_uncertain(c):
                continue
            if x < 0.45:
                self.license(c, rnd)
            elif x < 0.80:
                b = self.usage(c, rnd)
                if b is not None:
                    done.append(b)
            elif x < 0.85 and done:
                self.usage(c, rnd, batch=rnd.choice(done), resend=True)
            elif x < 0.92:
                self.unknown(c, rnd)
                time.sleep(0.02)
            else:
                time.sleep(0.01)
        c.close()

    def slow_client(self):
        """Trickles a request head one byte a second; times the close."""
        head = b"GET /v1/license HTTP/1.1\r\nHost: x\r\nX-Pad: " + \
            b"a" * 200
        while not self.stop.is_set():
            t = time.time()
            try:
                raw = socket.create_connection(("127.0.0.1",
                                                self.proxy.port), 5)
                s = self.pki.context().wrap_socket(raw, server_hostname=
                                                   "localhost")
                s.settimeout(1)
                for b in head:
                    s.send(bytes([b]))
                    try:
                        s.recv(1)       # an answer (408) or the close
                        break
                    except socket.timeout:
                        pass
                    except (ssl.SSLError, OSError):
                        break
                    if time.time() - t > HEADER_TIMEOUT * 6:
                        break
                s.close()
            except (OSError, ssl.SSLError):
                pass
            with self.st.lock:
                self.st.slow.append(time.time() - t)
            self.stop.wait(1)

    # ---- faults ----
    def killer(self):
        rnd = random.Random(7)
        n = 0
        while not self.stop.wait(KILL_EVERY):
            n += 1
            if n % 4 == 0 and self.auth_lock.acquire(blocking=False):
                try:
                    self.kill_child(self.auth, rnd, "authority")
                finally:
                    self.auth_lock.release()
            else:
                self.kill_child(self.proxy, rnd, "proxy")

    def kill_child(self, srv, rnd, name):
        if srv.proc is None or srv.proc.poll() is not None:
            return
        kids = srv.children()
        if not kids:
            return
        pid = rnd.choice(kids)
        try:
            role = comm(pid)
            os.kill(pid, signal.SIGKILL)
        except OSError:
            return
        with self.st.lock:
            self.st.kills["%s %s" % (name, role)] += 1

    def flapper(self):
        rnd = random.Random(11)
        while not self.stop.wait(rnd.uniform(25, 45)):
            with self.auth_lock:
                if self.auth.stop() != 0:
                    self.st.failures.append("authority stop exit != 0:\n" +
                                            self.auth.logs()[-1500:])
                with self.st.lock:
                    self.st.outages += 1
                self.stop.wait(rnd.uniform(15, 30))
                self.auth.start()

    # ---- figures ----
    def procs(self):
        res = {}
        for name, srv in (("proxy", self.proxy), ("auth", self.auth)):
            if srv.proc is None or srv.proc.poll() is not None:
                continue
            pids = [(srv.proc.pid, "master")] + [
                (p, None) for p in srv.children()]
            for pid, role in pids:
                try:
                    role = role or comm(pid).replace("licproxy-", "")
                    with open("/proc/%d/status" % pid) as f:
                        v = {ln.split(":")[0]: int(ln.split()[1]) * 1024
                             for ln in f if ln.startswith(("VmRSS:",
                                                           "RssAnon:"))}
                    rss, anon = v["VmRSS"], v["RssAnon"]
                except (OSError, ValueError, KeyError):
                    continue
                k = "%s %s" % (name, role)
                old = res.get(k, (0, 0))
                res[k] = (max(old[0], rss), max(old[1], anon))
        return res

    def store_sizes(self):
        res = {}
        for name, srv in (("proxy", self.proxy), ("auth", self.auth)):
            try:
                st = os.stat(os.path.join(srv.store, "data.mdb"))
                res[name] = st.st_blocks * 512
            except OSError:
                pass
        return res

    def sampler(self):
        while not self.stop.wait(5):
            s = (time.time() - self.t0, self.procs(), self.store_sizes(),
                 self.st.acked_records)
            with self.st.lock:
                self.st.samples.append(s)

    # ---- the run ----
    def run(self):
        threads = [threading.Thread(target=self.loader, args=(i,))
                   for i in range(LOADERS)]
        threads += [threading.Thread(target=f) for f in (
            self.slow_client, self.slow_client, self.killer, self.flapper,
            self.sampler)]
        for t in threads:
            t.daemon = True
            t.start()
        self.stop.wait(SECONDS)
        self.stop.set()
        for t in threads:
            t.join(120)
        with self.auth_lock:
            if self.auth.proc is None or self.auth.proc.poll() is not None:
                self.auth.start()
        c = Client(self.proxy)
        end = time.time() + 60
        while self.st.uncertain and time.time() < end:
            self.retry_uncertain(c)
        c.close()
        self.final = (time.time() - self.t0, self.procs(), self.store_sizes(),
                      self.st.acked_records)

    def ledger(self):
        out = run("usage", "--store", self.auth.store, "--json").stdout
        recs = qty = 0
        by_key = collections.Counter()
        for e in json.loads(out):
            if e["metric"] != METRIC:
                continue
            recs += e["records"]
            qty += e["quantity"]
            by_key[e["key_id"]] += e["records"]
        return recs, qty, by_key

    def drain(self):
        """Waits for the proxy's spool to empty and the ledger to settle."""
        wait_for(lambda: self.proxy.status_json()["state"] == "Connected",
                 timeout=60, what="proxy Connected again")
        wait_for(lambda: self.proxy.status_json()["usage"]["pending"] == 0,
                 timeout=120, step=0.5, what="usage spool drained")
        last = None
        for _ in range(10):
            cur = self.ledger()
            if cur[:2] == (self.st.acked_records, self.st.acked_qty) or \
                    cur == last:
                return cur
            last = cur
            time.sleep(2)
        return last


def check(soak):
    st, fail = soak.st, soak.st.failures
    try:
        recs, qty, by_key = soak.drain()
    except AssertionError as e:     # still compare what the ledger has
        fail.append("relay did not drain: %s" % e)
        recs, qty, by_key = soak.ledger()
    if st.uncertain:
        fail.append("%d usage batches never got an answer" %
                    len(st.uncertain))
    if (recs, qty) != (st.acked_records, st.acked_qty):
        diff = {k: (st.acked_by_key[k], by_key[k]) for k in
                set(st.acked_by_key) | set(by_key)
                if st.acked_by_key[k] != by_key[k]}
        fail.append("ledger %d records / %s quantity != acknowledged %d / %d"
                    " (per key acked, ledger: %s)" % (
                        recs, qty, st.acked_records, st.acked_qty,
                        dict(list(diff.items())[:5])))
    if st.rebooked:
        fail.append("%d re-sent records booked again" % st.rebooked)
    if st.unexpected:
        fail.append("unexpected answers: %s" % st.unexpected[:10])
    if not st.slow or max(st.slow) > HEADER_TIMEOUT + 5:
        fail.append("a slow client was held %.1f s (header_timeout %d s)" %
                    (max(st.slow or [0]), HEADER_TIMEOUT))
    check_growth(soak, fail)
    soak.findings = log_findings(soak, fail)
    kills = sum(n for k, n in st.kills.items() if k.startswith("proxy "))
    restarts = sum(v for k, v in soak.proxy.metrics().items()
                   if k.startswith("licproxy_process_restarts_total"))
    if restarts != kills:
        fail.append("proxy restarts %d != kills %d" % (restarts, kills))
    for name, srv, lead in (("proxy", soak.proxy, "licproxy-uplink"),
                            ("authority", soak.auth, "licproxy-issuer")):
        want = {"licproxy-worker": 2, lead: 1}
        try:
            wait_for(lambda: {k: len(v) for k, v in
                              srv.children_by_comm().items()} == want,
                     timeout=15, what="%s children %r" % (name, want))
        except AssertionError as e:
            fail.append("%s process tree: %s" % (name, e))
        if srv.proc.poll() is not None:
            fail.append("%s master exited" % name)
    return recs, qty


def log_findings(soak, fail):
    """Warnings and errors in both logs, digits folded, most frequent first;
    a child that died other than by our kill -9 is a failure."""
    found = {}
    for name, srv in (("proxy", soak.proxy), ("auth", soak.auth)):
        c = collections.Counter()
        for ln in srv.logs().splitlines():
            m = re.search(r" (warn|error): (.*)", ln)
            if m:
                c["%s: %s" % (m.group(1), re.sub(r"\d+", "N",
                                                 m.group(2))[:90])] += 1
            m = re.search(r"(licproxy-\w+) (died on signal (\d+)|exited "
                          r"with (-?\d+))", ln)
            if m and m.group(3) != "9":
                fail.append("%s: %s" % (name, ln.strip()[-120:]))
        found[name] = c.most_common(8)
    return found


def peak(samples, f):
    return max([f(x) for x in samples] + [0])


def check_growth(soak, fail):
    st = soak.st
    third = [x for x in st.samples if x[0] >= SECONDS / 3.0]
    if not third:
        fail.append("no sample at a third of the run")
        return
    mid, final = third[0], soak.final
    allx = st.samples + [final]
    for proc in final[1]:
        store = final[2].get(proc.split()[0], 0)
        rss = peak(allx, lambda x: x[1].get(proc, (0, 0))[0])
        anon = peak(allx, lambda x: x[1].get(proc, (0, 0))[1])
        if anon > ANON_CAP or rss > ANON_CAP + store:
            fail.append("%s RSS %d MiB (private %d MiB) > cap" % (
                proc, rss >> 20, anon >> 20))
        m, f = mid[1].get(proc, (0, 0))[1], final[1][proc][1]
        if f > GROWTH * max(m, FLOOR):
            fail.append("%s private memory grew %d -> %d KiB" % (
                proc, m >> 10, f >> 10))
    for name in ("proxy", "auth"):
        m, f = mid[2].get(name, 0), final[2].get(name, 0)
        if f > STORE_FLOOR + STORE_PER_RECORD * final[3]:
            fail.append("%s store %d KiB for %d records" % (
                name, f >> 10, final[3]))
        if f - m > STORE_PER_RECORD * max(final[3] - mid[3], 1) + FLOOR:
            fail.append("%s store grew %d -> %d KiB for %d more records" % (
                name, m >> 10, f >> 10, final[3] - mid[3]))


def summary(soak, recs, qty):
    st = soak.st
    print("\nsoak: %d s, %d keys, proxy 2 workers, authority 2 workers" % (
        SECONDS, NKEYS))
    print("%-44s %12s" % ("requests (kind code error)", "count"))
    for (kind, code, err), n in sorted(st.codes.items(),
                                       key=lambda x: str(x[0])):
        print("  %-42s %12d" % ("%s %d %s" % (kind, code, err or ""), n))
    for kind, n in sorted(st.conn_errors.items()):
        print("  %-42s %12d" % ("%s connection lost (kill)" % kind, n))
    rows = [
        ("usage records acknowledged", st.acked_records),
        ("usage records in authority ledger", recs),
        ("usage quantity acknowledged", st.acked_qty),
        ("usage quantity in authority ledger", qty),
        ("deliberate re-sends (batches)", st.resent),
        ("re-sent records booked again", st.rebooked),
        ("upstream outages", st.outages),
        ("slow clients (max s until closed)", "%d (%.1f)" % (
            len(st.slow), max(st.slow or [0]))),
    ]
    rows += [("kill -9 %s" % k, n) for k, n in sorted(st.kills.items())]
    allx = st.samples + [soak.final]
    third = [x for x in st.samples if x[0] >= SECONDS / 3.0] or [soak.final]
    for proc in sorted(soak.final[1]):
        rows.append(("RSS %s max / final (KiB)" % proc, "%d / %d" % (
            peak(allx, lambda x: x[1].get(proc, (0, 0))[0]) >> 10,
            soak.final[1][proc][0] >> 10)))
        rows.append(("  private %s 1/3 / max / final" % proc,
                     "%d / %d / %d" % (
                         third[0][1].get(proc, (0, 0))[1] >> 10,
                         peak(allx, lambda x: x[1].get(proc, (0, 0))[1])
                         >> 10, soak.final[1][proc][1] >> 10)))
    for name in ("proxy", "auth"):
        f = soak.final[2].get(name, 0)
        rows.append(("store %s data.mdb 1/3 / final (KiB)" % name,
                     "%d / %d" % (third[0][2].get(name, 0) >> 10, f >> 10)))
        rows.append(("  %s bytes per acked record" % name,
                     "%d" % (f // max(soak.final[3], 1))))
    for k, v in rows:
        print("%-44s %12s" % (k, v))
    for name, lines in soak.findings.items():
        print("%s log, most frequent warnings/errors:" % name)
        for ln, n in lines:
            print("  %6d  %s" % (n, ln))


def main():
    with Fixture() as fx:
        soak = Soak(fx)
        soak.run()
        recs, qty = check(soak)
        summary(soak, recs, qty)
        for srv in (soak.proxy, soak.auth):
            rc = srv.stop()
            if rc != 0:
                soak.st.failures.append("%s exit %s on TERM" % (srv.mode, rc))
        for f in soak.st.failures:
            print("FAIL: " + f)
        print("soak: %s" % ("FAILED" if soak.st.failures else "ok"))
        return 1 if soak.st.failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""POST /v1/usage end to end: validation, de-duplication, the spool, the
relay upstream and the authority's ledger, through crashes and outages.
Every test ends with exact counts at the authority (`licproxy usage
--store AUTH --json`)."""
import http.client
import json
import os
import signal
import socket
import ssl
import threading

from lp import Fixture, Pki, Server, run, wait_for, key_id, fake_key

TS = "2026-11-26T16:00:00Z"
PRODUCT, METRIC = "engine", "audio_seconds"


def recs(prefix, n, q=1.5, **kw):
    out = []
    for i in range(n):
        r = {"id": "%s-%d" % (prefix, i), "product": PRODUCT,
             "metric": METRIC, "quantity": q, "ts": TS}
        r.update(kw)
        out.append(r)
    return out


def ledger(auth):
    """{(key_id, product, metric): (quantity, records)} at the authority."""
    out = run("usage", "--store", auth.store, "--json").stdout
    return {(t["key_id"], t["product"], t["metric"]):
            (t["quantity"], t["records"]) for t in json.loads(out)}


def ledger_records(auth):
    return sum(v[1] for v in ledger(auth).values())


def usage_counts(srv):
    u = srv.status_json()["usage"]
    return u["pending"], u["forwarded"]


def wait_drained(proxy, forwarded, timeout=20):
    """The spool is empty and exactly `forwarded` records went upstream."""
    wait_for(lambda: usage_counts(proxy) == (0, forwarded), timeout,
             what="spool drained with forwarded=%d (now %r)" % (
                 forwarded, usage_counts(proxy)))
    m = proxy.metrics()
    assert m["licproxy_usage_pending"] == 0, m
    assert m["licproxy_usage_forwarded_total"] == forwarded, m


def accepted(r, acc, dup=0):
    assert r.status == 202, r
    assert r.json() == {"accepted": acc, "duplicates": dup}, r


def chain(fx, workers=2, proxy_extra=None, upstream=None, name="proxy"):
    """An authority with a member key and a proxy key, and a proxy in front
    of it (started) with a 1 s sync_interval."""
    pki = fx.add(Pki())
    auth = fx.add(Server(pki, "authority"))
    # the longest product name too: test_values_survive_the_relay sends it
    member = auth.create_key(name="svc", products="api,engine," + "p" * 32)
    pkey = auth.create_key(name="proxy", role="proxy")
    auth.start()
    proxy = new_proxy(fx, pki, upstream or auth.url, pkey, workers,
                      proxy_extra, name)
    return pki, auth, proxy, member


def new_proxy(fx, pki, upstream, pkey, workers=2, extra=None, name="proxy"):
    ex = {"license": {"server_url": [upstream], "ca_file": pki.ca,
                      "trusted_keys": [pki.pub], "sync_interval": "1s",
                      "timeout": "2s"}}
    for k, v in (extra or {}).items():
        ex.setdefault(k, {}).update(v)
    p = fx.add(Server(pki, "proxy", workers=workers, extra=ex,
                      env={"LICPROXY_LICENSE_KEY": pkey}, name=name))
    return p.start()


def raw_post(srv, key, headers, body=b""):
    """A POST over a raw TLS socket, for requests http.client would not send
    as is (a Content-Length with no body behind it)."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    t = srv.pki.context().wrap_socket(s, server_hostname="127.0.0.1")
    try:
        head = "POST /v1/usage HTTP/1.1\r\nHost: 127.0.0.1\r\n" \
               "Authorization: Token %s\r\n" % key
        head += "".join("%s: %s\r\n" % kv for kv in headers.items())
        t.sendall(head.encode() + b"\r\n" + body)
        r = http.client.HTTPResponse(t)
        r.begin()
        return r.status, json.loads(r.read())
    finally:
        t.close()


# ---------------------------------------------------------------------------

def test_duplicates_counted_and_stored_once():
    with Fixture() as fx:
        pki, auth, proxy, member = chain(fx)
        batch = recs("d", 10, q=2.5)
        batch.append(dict(batch[3]))        # a duplicate inside the batch
        accepted(proxy.usage(member, batch), 10, 1)
        accepted(proxy.usage(member, batch), 0, 11)   # a retried batch
        wait_drained(proxy, 10)
        # Forwarded and gone from the spool, yet still recognised.
        accepted(proxy.usage(member, batch), 0, 11)
        # The same ids straight at the authority: already in its ledger.
        accepted(auth.usage(member, batch[:4]), 0, 4)
        # Ids are unique per key: another key may reuse them.
        other = auth.create_key(name="svc2", products="engine")
        accepted(proxy.usage(other, batch[:5]), 5, 0)
        wait_drained(proxy, 15)
        assert ledger(auth) == {
            (key_id(member), PRODUCT, METRIC): (25.0, 10),
            (key_id(other), PRODUCT, METRIC): (12.5, 5)}, ledger(auth)
        assert usage_counts(proxy) == (0, 15)


def _bad_cases(member):
    """(name, body, expected field in the message)."""
    def body(bad, i):
        good = recs("bad%d" % i, 2)
        return {"records": good + [bad]}
    ok = recs("x", 1)[0]

    def mod(**kw):
        r = dict(ok)
        for k, v in kw.items():
            if v is None:
                r.pop(k)
            else:
                r[k] = v
        return r
    cases = [
        ("id missing", mod(id=None), "records[2].id"),
        ("id bad char", mod(id="a b"), "records[2].id"),
        ("id too long", mod(id="i" * 65), "records[2].id"),
        ("id empty", mod(id=""), "records[2].id"),
        ("product upper", mod(product="Engine"), "records[2].product"),
        ("product missing", mod(product=None), "records[2].product"),
        ("product too long", mod(product="p" * 33), "records[2].product"),
        ("metric bad", mod(metric="audio-seconds"), "records[2].metric"),
        ("metric number", mod(metric=5), "records[2].metric"),
        ("quantity negative", mod(quantity=-1), "records[2].quantity"),
        ("quantity string", mod(quantity="12.5"), "records[2].quantity"),
        ("quantity missing", mod(quantity=None), "records[2].quantity"),
        ("quantity bool", mod(quantity=True), "records[2].quantity"),
        ("ts bad", mod(ts="yesterday"), "records[2].ts"),
        ("ts month 13", mod(ts="2026-13-26T16:00:00Z"), "records[2].ts"),
        ("ts no zone", mod(ts="2026-11-26T16:00:00"), "records[2].ts"),
        ("key_id from member", mod(key_id=key_id(member)),
         "records[2].key_id"),
        ("unknown field", mod(colour="blue"), "records[2].colour"),
        ("not an object", "r-1", "records[2]"),
        # A name that would break the JSON answer is left out of it.
        ("unknown odd field", dict(ok, **{'a"b\\': 1}), "records[2]"),
    ]
    out = [(n, body(b, i), f) for i, (n, b, f) in enumerate(cases)]
    out += [
        ("0 records", {"records": []}, "records"),
        ("1001 records", {"records": recs("big", 1001)}, "records"),
        ("missing records", {"record": recs("m", 1)}, "records"),
        ("records not array", {"records": ok}, "records"),
        ("extra top-level field", {"records": [ok], "x": 1}, "records"),
        ("body an array", [ok], "records"),
        ("invalid JSON", '{"records": [', "body"),
        ("NaN", '{"records":[{"id":"n","product":"engine","metric":"m",'
         '"quantity":NaN,"ts":"%s"}]}' % TS, "body"),
        # JSON numbers past what a double or jansson's integer holds: the
        # message says where and why
        ("integer past int64", '{"records":[{"id":"n","product":"engine",'
         '"metric":"m","quantity":99999999999999999999,"ts":"%s"}]}' % TS,
         "body: not valid JSON at byte 85: too big integer"),
        ("real overflow", '{"records":[{"id":"n","product":"engine",'
         '"metric":"m","quantity":1e400,"ts":"%s"}]}' % TS,
         "body: not valid JSON at byte 70: real number overflow"),
        ("byte 0xff", b'{"records":[{"id":"\xff"}]}',
         "body: not valid JSON at byte 19: unable to decode byte 0xff"),
    ]
    return out


def test_bad_requests_name_the_field_and_keep_nothing():
    with Fixture() as fx:
        pki, auth, proxy, member = chain(fx)
        kept = []
        for name, body, field in _bad_cases(member):
            r = proxy.request("POST", "/v1/usage", key=member, body=body,
                              headers={"Content-Type": "application/json"})
            assert r.status == 400, (name, r)
            j = r.json()
            assert j["error"] == "bad_request", (name, j)
            assert j["message"].startswith(field + ":") or (
                field + " ") in j["message"], (name, field, j)
            if isinstance(body, dict) and "records" in body and isinstance(
                    body["records"], list) and len(body["records"]) == 3:
                kept += body["records"][:2]
        assert r.headers.get("cache-control") == "no-store", r.headers
        # 415: wrong or missing Content-Type.
        for ct in ("text/plain", None):
            h = {"Content-Type": ct} if ct else {}
            r = proxy.request("POST", "/v1/usage", key=member, headers=h,
                              body=json.dumps({"records": recs("ct", 1)}))
            assert r.status == 415, (ct, r)
            assert r.json()["error"] == "unsupported_media_type", r
        # 413: decided from Content-Length, before the body is read.
        st, j = raw_post(proxy, member, {"Content-Type": "application/json",
                                         "Content-Length": 300 * 1024})
        assert st == 413 and j["error"] == "too_large", (st, j)
        # 1000 records is the limit, not an error.
        assert usage_counts(proxy) == (0, 0)
        accepted(proxy.usage(member, recs("max", 1000)), 1000)
        # Nothing of a rejected request was kept: not even its valid
        # records' ids, so they are new now.
        assert len(kept) == 2 * 20
        accepted(proxy.usage(member, kept), len(kept), 0)
        wait_drained(proxy, 1000 + len(kept))
        assert ledger(auth) == {(key_id(member), PRODUCT, METRIC): (
            1.5 * (1000 + len(kept)), 1000 + len(kept))}, ledger(auth)


def test_authority_ledger_and_key_id_rule():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority"))
        member = auth.create_key(name="svc", products="engine")
        pkey = auth.create_key(name="relay", role="proxy")
        auth.start()
        accepted(auth.usage(member, recs("a", 5, q=2)), 5)
        # A member may not report for another key: 400, nothing kept.
        bad = recs("b", 3, q=7)
        bad[1]["key_id"] = key_id(pkey)
        r = auth.usage(member, bad)
        assert r.status == 400 and r.json()["error"] == "bad_request", r
        assert r.json()["message"].startswith("records[1].key_id:"), r
        # Not even its own key_id spelled out.
        r = auth.usage(member, recs("c", 1, key_id=key_id(member)))
        assert r.status == 400 and "records[0].key_id" in r.json()[
            "message"], r
        # A proxy key may; records without key_id are its own.
        mixed = recs("b", 3, q=7, key_id=key_id(member)) + recs("own", 1)
        accepted(auth.usage(pkey, mixed), 4)
        for kid in ("ABCDEF0123456789", "abc", 5):
            r = auth.usage(pkey, recs("k", 1, key_id=kid))
            assert r.status == 400 and "records[0].key_id" in r.json()[
                "message"], (kid, r)
        # Keys that hold no valid lease are refused before anything else.
        r = auth.usage(fake_key("nobody"), recs("z", 1))
        assert r.status == 403 and r.json()["reason"] == "unknown", r
        r = auth.request("POST", "/v1/usage", body={"records": recs("z", 1)})
        assert r.status == 401 and r.json()["error"] == "missing_key", r
        run("keys", "revoke", "--store", auth.store, key_id(member))
        r = auth.usage(member, recs("rev", 1))
        assert r.status == 403 and r.json()["reason"] == "revoked", r
        r = auth.request("GET", "/v1/usage", key=pkey)
        assert r.status == 405 and r.headers["allow"] == "POST", r
        assert ledger(auth) == {
            (key_id(member), PRODUCT, METRIC): (31.0, 8),
            (key_id(pkey), PRODUCT, METRIC): (1.5, 1)}, ledger(auth)
        # The text form names the same totals.
        out = run("usage", "--store", auth.store).stdout
        assert key_id(member) in out and key_id(pkey) in out, out


def test_spool_full_507_then_drain():
    with Fixture() as fx:
        pki, auth, proxy, member = chain(
            fx, proxy_extra={"store": {"max_size": "256KiB"}})
        assert proxy.license(member).status == 200
        auth.stop()             # the spool cannot drain meanwhile
        ok = 0
        for i in range(20):
            batch = recs("f%d" % i, 1000)
            r = proxy.usage(member, batch)
            if r.status == 507:
                break
            accepted(r, 1000)
            ok += 1000
        else:
            raise AssertionError("a 256KiB store never filled")
        assert r.json()["error"] == "spool_full", r
        assert ok > 0, "the first batch already did not fit"
        # The spool holds exactly the acknowledged records (the drain
        # below forwards exactly `ok`: nothing of the 507 was kept).
        wait_for(lambda: usage_counts(proxy) == (ok, 0), what="pending")
        wait_for(lambda: "usage store full" in proxy.logs(),
                 what="the spool-full log line")
        # Leases keep being served from the cache.
        r = proxy.license(member)
        assert r.status == 200 and r.json()["source"] == "cache", r
        assert proxy.status_json()["state"] == "TrustBased"
        auth.start()
        wait_drained(proxy, ok, timeout=30)
        assert ledger(auth) == {(key_id(member), PRODUCT, METRIC): (
            1.5 * ok, ok)}, ledger(auth)
        # The refused batch left no id behind: it is new when it fits.
        # (LMDB reuses the pages the drain freed only after one more
        # commit, so the first tries may still be 507: each keeps nothing.)
        small = batch[:50]
        res = []
        wait_for(lambda: res.append(proxy.usage(member, small)) or
                 res[-1].status != 507, what="room in the store again")
        accepted(res[-1], 50, 0)
        wait_drained(proxy, ok + 50)
        assert ledger_records(auth) == ok + 50


def test_authority_outage_then_recovery():
    with Fixture() as fx:
        pki, auth, proxy, member = chain(fx)
        assert proxy.license(member).status == 200
        auth.stop()
        n = 0
        for i, size in enumerate((1000, 1000, 500)):
            accepted(proxy.usage(member, recs("o%d" % i, size, q=0.5)), size)
            n += size
        wait_for(lambda: proxy.status_json()["state"] == "TrustBased",
                 what="TrustBased")
        wait_for(lambda: usage_counts(proxy) == (n, 0), what="pending")
        assert proxy.metrics()["licproxy_usage_pending"] == n
        assert ledger_records(auth) == 0
        auth.start()
        # Batches of at most 1000 (the authority refuses more).
        wait_drained(proxy, n, timeout=30)
        assert ledger(auth) == {(key_id(member), PRODUCT, METRIC): (
            0.5 * n, n)}, ledger(auth)
        assert "upstream refused a usage batch" not in proxy.logs()


def test_kill_worker_right_after_202():
    with Fixture() as fx:
        pki, auth, proxy, member = chain(fx, workers=1)
        n = 0
        for i in range(3):
            pid = proxy.children_by_comm()["licproxy-worker"][0]
            accepted(proxy.usage(member, recs("w%d" % i, 100)), 100)
            os.kill(pid, signal.SIGKILL)
            n += 100
            wait_for(lambda: proxy.children_by_comm().get(
                "licproxy-worker", [pid]) != [pid], what="worker respawn")
            wait_for(lambda: proxy.status("/healthz").status == 200)
        # Every acknowledged record (and a retry of one) counted once.
        wait_for(lambda: proxy.usage(member, recs("w0", 100)).status == 202,
                 what="a worker to answer again")
        accepted(proxy.usage(member, recs("w2", 100)), 0, 100)
        wait_drained(proxy, n)
        assert ledger(auth) == {(key_id(member), PRODUCT, METRIC): (
            1.5 * n, n)}, ledger(auth)
        assert proxy.metrics()['licproxy_process_restarts_total'
                               '{role="worker"}'] >= 3


def _read_http(s, request=False):
    """One HTTP message: head and body (Content-Length; a response without
    one runs to EOF, a request without one has no body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            return buf, b""
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    clen = None
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            clen = int(v)
    if clen is None and request:
        clen = 0
    while clen is None or len(rest) < clen:
        d = s.recv(65536)
        if not d:
            break
        rest += d
    return head + b"\r\n\r\n", rest


class TrapRelay:
    """TLS in, TLS out, one request per connection (the uplink sends
    Connection: close). When armed, the next POST /v1/usage is passed to
    the upstream and its answer read in full, then `trap` runs and the
    client side is dropped without that answer."""

    def __init__(self, pki, upstream_port):
        self.pki, self.up = pki, upstream_port
        self.sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.sctx.load_cert_chain(pki.cert, pki.key)
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.trap = None
        self.usage_log = []         # (ids sent, status, answer, passed on)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.port

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,),
                             daemon=True).start()

    def _serve(self, raw):
        raw.settimeout(10)
        try:
            c = self.sctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        try:
            head, body = _read_http(c, request=True)
            u = self.pki.context().wrap_socket(socket.create_connection(
                ("127.0.0.1", self.up), timeout=10),
                server_hostname="127.0.0.1")
            u.sendall(head + body)
            rhead, rbody = _read_http(u)
            u.close()
            usage = head.startswith(b"POST /v1/usage ")
            trap = self.trap if usage else None
            if usage:
                self.trap = None
                ids = [r["id"] for r in json.loads(body)["records"]]
                self.usage_log.append((ids, int(rhead.split()[1]),
                                       json.loads(rbody), trap is None))
            if trap is not None:
                trap()
                return          # dropped: the answer never reaches it
            c.sendall(rhead + rbody)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            c.close()

    def cleanup(self):
        self.closed = True
        self.ls.close()


def test_kill_uplink_mid_batch():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority"))
        member = auth.create_key(name="svc", products="engine")
        pkey = auth.create_key(name="proxy", role="proxy")
        auth.start()
        relay = fx.add(TrapRelay(pki, auth.port))
        proxy = new_proxy(fx, pki, relay.url, pkey)
        # its first key check may still be on the way (under valgrind the
        # first handshake through the relay can outlast the 2 s timeout;
        # the next comes a sync_interval later)
        wait_for(lambda: proxy.status_json()["state"] == "Connected",
                 timeout=20, what="Connected")
        seen = {}

        def kill_uplink():
            # The authority has committed the batch; the spool still has it.
            seen["ledger"] = ledger_records(auth)
            seen["pending"] = usage_counts(proxy)[0]
            pid = proxy.children_by_comm()["licproxy-uplink"][0]
            seen["pid"] = pid
            os.kill(pid, signal.SIGKILL)
        relay.trap = kill_uplink
        accepted(proxy.usage(member, recs("u", 200)), 200)
        wait_for(lambda: "pid" in seen, what="the trapped batch")
        assert seen["ledger"] == 200 and seen["pending"] == 200, seen
        wait_for(lambda: proxy.children_by_comm().get(
            "licproxy-uplink", [seen["pid"]]) != [seen["pid"]],
            what="uplink respawn")
        wait_drained(proxy, 200)
        assert ledger(auth) == {(key_id(member), PRODUCT, METRIC): (
            300.0, 200)}, ledger(auth)
        # The batch was resent once the uplink was back, and recognised.
        first, again = relay.usage_log[0], relay.usage_log[1]
        assert first[1:] == (202, {"accepted": 200, "duplicates": 0},
                             False), first
        assert sorted(again[0]) == sorted(first[0]), again
        assert again[1:] == (202, {"accepted": 0, "duplicates": 200},
                             True), again
        assert proxy.metrics()['licproxy_process_restarts_total'
                               '{role="uplink"}'] == 1


def test_kill_whole_proxy_then_restart():
    with Fixture() as fx:
        pki, auth, proxy, member = chain(fx)
        assert proxy.license(member).status == 200
        auth.stop()             # keep the records in the spool
        accepted(proxy.usage(member, recs("k", 300, q=3)), 300)
        proxy.kill()
        proxy.start()
        wait_for(lambda: usage_counts(proxy) == (300, 0), what="pending")
        # Its de-duplication ids survived the crash too.
        accepted(proxy.usage(member, recs("k", 300, q=3)), 0, 300)
        accepted(proxy.usage(member, recs("after", 10, q=3)), 10)
        auth.start()
        wait_drained(proxy, 310)
        assert ledger(auth) == {(key_id(member), PRODUCT, METRIC): (
            930.0, 310)}, ledger(auth)


def test_chained_proxies_keep_key_id():
    with Fixture() as fx:
        pki, auth, p1, member = chain(fx, name="tier1")
        p2key = auth.create_key(name="tier2", role="proxy")
        p2 = new_proxy(fx, pki, p1.url, p2key, name="tier2")
        other = auth.create_key(name="svc2", products="engine")
        accepted(p2.usage(member, recs("c", 20, q=1)), 20)
        accepted(p1.usage(other, recs("c", 5, q=2)), 5)
        # A member behind the lower tier still may not name a key_id.
        r = p2.usage(member, recs("c", 1, key_id=key_id(other)))
        assert r.status == 400 and "records[0].key_id" in r.json()[
            "message"], r
        wait_drained(p2, 20)
        wait_drained(p1, 25)
        assert ledger(auth) == {
            (key_id(member), PRODUCT, METRIC): (20.0, 20),
            (key_id(other), PRODUCT, METRIC): (10.0, 5)}, ledger(auth)


def test_concurrent_clients_group_commit():
    """Many clients at once (group commits across requests): every
    answer adds up, overlapping ids are counted once."""
    with Fixture() as fx:
        pki, auth, proxy, member = chain(fx)
        other = auth.create_key(name="svc2", products="engine")
        answers, errors = [], []

        def client(t):
            key = member if t % 2 else other
            for j in range(5):
                # Threads t and t+2 share a key and half their ids.
                batch = recs("t%d-%d" % (t // 4, j), 40) + \
                    recs("own%d-%d" % (t, j), 10)
                try:
                    r = proxy.usage(key, batch)
                    answers.append((key, r.status, r.json()))
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(e)
        ts = [threading.Thread(target=client, args=(t,)) for t in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert not errors, errors
        assert len(answers) == 40 and all(a[1] == 202 for a in answers), \
            answers
        # Per key: 2 groups of 5x40 shared ids + 4 threads x 5x10 own ids.
        for key in (member, other):
            got = [a[2] for a in answers if a[0] == key]
            assert sum(g["accepted"] for g in got) == 2 * 200 + 4 * 50, got
            assert sum(g["duplicates"] for g in got) == 2 * 200, got
        wait_drained(proxy, 1200)
        assert ledger(auth) == {
            (key_id(member), PRODUCT, METRIC): (900.0, 600),
            (key_id(other), PRODUCT, METRIC): (900.0, 600)}, ledger(auth)


def test_backlog_wakes_the_relay_before_sync_interval():
    with Fixture() as fx:
        pki, auth, proxy, member = chain(
            fx, proxy_extra={"license": {"sync_interval": "60s"}})
        # The first relay pass (a second after start) takes these ...
        accepted(proxy.usage(member, recs("s", 10)), 10)
        wait_drained(proxy, 10)
        # ... the next is a minute away, but a full batch does not wait.
        accepted(proxy.usage(member, recs("b1", 600)), 600)
        accepted(proxy.usage(member, recs("b2", 600)), 600)
        wait_drained(proxy, 1210, timeout=15)
        assert ledger_records(auth) == 1210


def test_authority_ledger_full_507():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority",
                             extra={"store": {"max_size": "256KiB"}}))
        member = auth.create_key(name="svc", products="engine")
        auth.start()
        assert auth.license(member).status == 200
        ok = 0
        for i in range(50):
            r = auth.usage(member, recs("a%d" % i, 200))
            if r.status == 507:
                break
            accepted(r, 200)
            ok += 200
        else:
            raise AssertionError("a 256KiB store never filled")
        assert r.json()["error"] == "spool_full", r
        assert ok > 0, "the first batch already did not fit"
        assert ledger(auth) == {(key_id(member), PRODUCT, METRIC): (
            1.5 * ok, ok)}, ledger(auth)
        r = auth.license(member)
        assert r.status == 200, r
        assert "usage store full" in auth.logs()


def test_proxy_with_member_key_keeps_records():
    """An upstream that refuses the relayed batch (this proxy's key may not
    name key_id) loses nothing: the records stay spooled, the log says
    why, the authority counts none."""
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority"))
        member = auth.create_key(name="svc", products="engine")
        notproxy = auth.create_key(name="wrongrole", products="engine")
        auth.start()
        proxy = new_proxy(fx, pki, auth.url, notproxy)
        accepted(proxy.usage(member, recs("m", 5)), 5)
        wait_for(lambda: "upstream refused a usage batch with 400" in
                 proxy.logs(), what="the refusal in the log")
        assert "records[0].key_id" in proxy.logs()
        wait_for(lambda: usage_counts(proxy) == (5, 0), what="pending")
        assert ledger(auth) == {}


def test_values_survive_the_relay():
    """Quantities, RFC 3339 forms and groups arrive at the authority as
    sent (the relay re-encodes every record)."""
    with Fixture() as fx:
        pki, auth, proxy, member = chain(fx)
        q = 12.345678901234567
        batch = [
            {"id": "v:1", "product": "api", "metric": "requests",
             "quantity": q, "ts": "2026-11-26T16:00:00.123456+01:00"},
            {"id": "V.2_x-y", "product": "api", "metric": "tokens",
             "quantity": 0, "ts": "2026-11-26t16:00:00z"},
            {"id": "i" * 64, "product": "p" * 32, "metric": "m" * 32,
             "quantity": 1e12, "ts": "2026-11-26T16:00:00-05:30"},
        ]
        accepted(proxy.usage(member, batch), 3)
        wait_drained(proxy, 3)
        k = key_id(member)
        assert ledger(auth) == {
            (k, "api", "requests"): (q, 1), (k, "api", "tokens"): (0.0, 1),
            (k, "p" * 32, "m" * 32): (1e12, 1)}, ledger(auth)
        # Ids are case-sensitive and compared whole.
        accepted(proxy.usage(member, [dict(batch[0], id="V:1")]), 1)
        accepted(proxy.usage(member, [dict(batch[0], id="v:1")]), 0, 1)

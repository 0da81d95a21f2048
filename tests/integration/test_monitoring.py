"""The monitoring kit in etc/ against the real /metrics: the alert rules
pass promtool (syntax and behaviour), the live exposition passes
`promtool check metrics` in both modes, and every metric the rules and the
Grafana dashboard use is one licproxy exports."""
import json
import os
import re
import shutil
import subprocess

from lp import Fixture, Pki, Server

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
RULES = os.path.join(TOP, "etc", "prometheus", "licproxy-alerts.yml")
RULE_TESTS = os.path.join(TOP, "tests", "prometheus", "alerts_test.yml")
GRAFANA = os.path.join(TOP, "etc", "grafana", "licproxy.json")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

# SPEC section 4: present in both modes, zero where it does not apply.
SPEC_METRICS = [
    "licproxy_requests_total", "licproxy_lease_cache_hits_total",
    "licproxy_lease_cache_misses_total", "licproxy_upstream_requests_total",
    "licproxy_upstream_bytes_total", "licproxy_leases_cached",
    "licproxy_usage_pending", "licproxy_usage_forwarded_total",
    "licproxy_process_restarts_total", "licproxy_survival_seconds",
    "licproxy_seats_used", "licproxy_seats_granted",
    "licproxy_usage_dedup_pruned_total", "licproxy_misses_limited_total",
    "licproxy_upstream_up", "licproxy_store_used_bytes",
    "licproxy_store_max_bytes",
]


def promtool(*args, input=None):
    p = subprocess.run([PROMTOOL] + list(args), capture_output=True,
                       text=True, input=input, timeout=60)
    return p.returncode, p.stdout + p.stderr


def exported(text):
    """{name: (help, type)} of a Prometheus exposition."""
    names = {}
    for m in re.finditer(r"^# (HELP|TYPE) (\w+) (.*)$", text, re.M):
        names.setdefault(m.group(2), {})[m.group(1)] = m.group(3)
    samples = set(re.findall(r"^(\w+)[{ ]", text, re.M))
    return names, samples


def used_names(exprs):
    words = set()
    for e in exprs:
        words |= set(re.findall(r"\blicproxy_\w+", e))
    return words


def test_alert_rules_pass_promtool():
    rc, out = promtool("check", "rules", RULES)
    assert rc == 0 and "SUCCESS" in out, out
    rc, out = promtool("test", "rules", RULE_TESTS)
    assert rc == 0 and "SUCCESS" in out, out


def test_live_metrics_and_the_kit_agree():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority"))
        auth.start()
        key = auth.create_key(name="svc")
        relay = auth.create_key(name="relay", role="proxy")
        proxy = fx.add(Server(pki, "proxy", name="proxy", extra={
            "license": {"server_url": [auth.url], "ca_file": pki.ca,
                        "trusted_keys": [pki.pub], "timeout": "1s"}},
            env={"LICPROXY_LICENSE_KEY": relay}))
        proxy.start()
        assert proxy.license(key).status == 200
        texts = {}
        for srv in (auth, proxy):
            r = srv.status("/metrics")
            assert r.status == 200, r
            texts[srv.mode] = r.body
            rc, out = promtool("check", "metrics", input=r.body)
            assert rc == 0 and out.strip() == "", (srv.mode, out)
            meta, samples = exported(r.body)
            for name in SPEC_METRICS:
                assert name in samples, (srv.mode, name)
                assert "HELP" in meta.get(name, {}) and \
                    "TYPE" in meta[name], (srv.mode, name)
        _, proxy_samples = exported(texts["proxy"])
        with open(RULES) as f:
            rule_names = used_names(re.findall(r"expr: (.*)", f.read()))
        with open(GRAFANA) as f:
            dash = json.load(f)
        graf_names = used_names(t["expr"] for p in dash["panels"]
                                for t in p["targets"])
        assert rule_names and graf_names
        assert rule_names <= proxy_samples, rule_names - proxy_samples
        assert graf_names <= proxy_samples, graf_names - proxy_samples
        # the dashboard shows at least the figures the status page has
        for name in ("licproxy_upstream_up", "licproxy_survival_seconds",
                     "licproxy_leases_cached", "licproxy_usage_pending",
                     "licproxy_seats_used"):
            assert name in graf_names, name

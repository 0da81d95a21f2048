#!/usr/bin/env python3
"""Seat take/renew per second at a proxy (served out of its grant, no
upstream round trip) and the p99, with wrk -t2 -c16 on POST /v1/seats.
Uses the integration harness (tests/integration/lp.py) for the PKI, an
authority and a proxy in front of it. Usage: bench/seats.py [SECONDS]"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("LICPROXY", os.path.join(HERE, "..", "build",
                                               "licproxy"))
from lp import Fixture, Pki, Server, run  # noqa: E402


def main():
    secs = sys.argv[1] if len(sys.argv) > 1 else "10"
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority", extra={"log":
                                                      {"level": "info"}}))
        auth.start()
        key = run("keys", "create", "--store", auth.store, "--name", "b",
                  "--products", "api", "--seats", "1000").stdout.strip()
        pkey = run("keys", "create", "--store", auth.store, "--name", "p",
                   "--products", "api", "--role", "proxy").stdout.strip()
        p = fx.add(Server(pki, "proxy", extra={
            "license": {"server_url": [auth.url], "ca_file": pki.ca,
                        "trusted_keys": [pki.pub]},
            "log": {"level": "info"}}, env={"LICPROXY_LICENSE_KEY": pkey}))
        p.start()
        env = dict(os.environ, BENCH_KEY=key, BENCH_INSTANCES="16")
        script = os.path.join(HERE, "seats.lua")
        for d in ("2", secs):       # warm-up takes the seats, then renewals
            out = subprocess.run(["wrk", "-t2", "-c16", "-d" + d + "s",
                                  "-s", script, p.url + "/v1/seats"],
                                 env=env, capture_output=True, text=True,
                                 check=True).stdout
        m = re.search(r"RESULT rps=(\d+) p50_us=(\d+) p99_us=(\d+) "
                      r"bad=(\d+)", out)
        print("| seat renew at a proxy (wrk -t2 -c16, %ss) | %s req/s | "
              "p50 %.2f ms | p99 %.2f ms | non-200: %s |" % (
                  secs, m.group(1), int(m.group(2)) / 1000,
                  int(m.group(3)) / 1000, m.group(4)))
        p.stop()
        auth.stop()


if __name__ == "__main__":
    main()

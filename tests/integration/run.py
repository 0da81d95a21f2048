#!/usr/bin/python3
"""Runs every test_* function of tests/integration/test_*.py against the
real binary ($LICPROXY). Prints one line per test and, last,
"integration: N passed, N failed". Pass names to run a subset:
    tests/integration/run.py test_authority test_proxy.test_failover
"""
import importlib
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def collect(selected):
    tests = []
    for fn in sorted(os.listdir(HERE)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        mod_name = fn[:-3]
        mod = importlib.import_module(mod_name)
        for name in sorted(dir(mod)):
            if not name.startswith("test_"):
                continue
            full = "%s.%s" % (mod_name, name)
            if selected and not any(full == s or mod_name == s for s in selected):
                continue
            tests.append((full, getattr(mod, name)))
    return tests


def main():
    passed = failed = 0
    for full, fn in collect(sys.argv[1:]):
        t0 = time.time()
        try:
            fn()
        except Exception:
            failed += 1
            print("FAIL %s (%.1fs)" % (full, time.time() - t0))
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print("ok   %s (%.1fs)" % (full, time.time() - t0))
        sys.stdout.flush()
    print("integration: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/bin/sh
# `make bench`: cached GET vs nginx, miss-path latency, durable usage.
# Takes about 4 minutes. Env: LICPROXY (binary, default build/licproxy),
# BENCH_OUT (result dir), TMPDIR (where stores live: must be a real disk
# for the fsync numbers to mean anything). Extra args go to bench.py,
# e.g. `bench/run.sh get --rounds 1`.
. "$(dirname "$0")/common.sh"
[ $# -gt 0 ] || set -- all
exec python3 bench/bench.py "$@" --fsync-bin "$FSYNC_BIN"

#!/bin/sh
# `make bench`: issue 13's table, every row side by side in one run.
# Usage: bench/run.sh [PART] [--rounds N] [--duration S] [bench.py options]
# PART: get conn resume usage miss access scale all (default all).
# Takes about 5 minutes plus bench/scale.py's own time (stopped at 10).
# Env: LICPROXY (binary, default build/licproxy), BENCH_OUT (result dir),
# TMPDIR (where stores live: must be a real disk for the fsync numbers to
# mean anything). `make bench BENCH_ARGS="get --rounds 1"` passes args.
. "$(dirname "$0")/common.sh"
[ $# -gt 0 ] || set -- all
exec python3 bench/bench.py "$@" --fsync-bin "$FSYNC_BIN" \
    --tlsload-bin "$TLSLOAD_BIN"

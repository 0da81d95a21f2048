#!/bin/sh
# Durable POST /v1/usage only (authority ledger and proxy spool), next to the
# raw fdatasync rate of the same file system. About 2 minutes.
. "$(dirname "$0")/common.sh"
exec python3 bench/bench.py usage --fsync-bin "$FSYNC_BIN" "$@"

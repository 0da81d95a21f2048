# Sourced by bench/run.sh and bench/usage.sh: tools, binary, the fsync
# probe and the one-request-per-connection TLS client.
set -eu
cd "$(dirname "$0")/.."
LICPROXY=${LICPROXY:-build/licproxy}
case $LICPROXY in /*) ;; *) LICPROXY=$(pwd)/$LICPROXY ;; esac
export LICPROXY
if [ ! -x "$LICPROXY" ]; then
	echo "bench: $LICPROXY not built (make build, or set LICPROXY)" >&2
	exit 1
fi
# wrk and nginx are bench-only tools: packaging/deps.sh does not install them.
need=""
command -v wrk >/dev/null 2>&1 || need="$need wrk"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need="$need nginx-light"
command -v python3 >/dev/null 2>&1 || need="$need python3"
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
command -v mdb_stat >/dev/null 2>&1 || need="$need lmdb-utils"
[ -f /usr/include/openssl/ssl.h ] || need="$need libssl-dev"
if [ -n "$need" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "bench: missing:$need (run as root or apt-get install$need)" >&2
		exit 1
	fi
	echo "bench: installing$need" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends $need >/dev/null 2>&1 ||
		{ apt-get update >/dev/null &&
		  apt-get install -y --no-install-recommends $need; }
fi
PATH=$PATH:/usr/sbin
BENCH_OUT=${BENCH_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/licproxy-bench.XXXXXX")}
mkdir -p "$BENCH_OUT"
export BENCH_OUT
FSYNC_BIN=$BENCH_OUT/fsync_rate
cc -O2 -Wall -o "$FSYNC_BIN" bench/fsync_rate.c
TLSLOAD_BIN=$BENCH_OUT/tlsload
cc -O2 -Wall -Wextra -D_GNU_SOURCE -o "$TLSLOAD_BIN" bench/tlsload.c \
    -lssl -lcrypto -lpthread

#!/bin/sh
# Install the build and test dependencies that are missing (Debian 12).
# Only runs apt-get when something is actually missing, and only as root.
set -e
need=""
chk() {	# pkg-config-name debian-package
	pkg-config --exists "$1" 2>/dev/null || need="$need $2"
}
chk lmdb liblmdb-dev
chk libssl libssl-dev
chk libevent libevent-dev
chk msgpack libmsgpack-dev
chk yaml-0.1 libyaml-dev
chk jansson libjansson-dev
chk libseccomp libseccomp-dev
chk libcurl libcurl4-openssl-dev
chk cmocka libcmocka-dev
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
command -v cc >/dev/null 2>&1 || need="$need gcc"
# the fuzz targets (libFuzzer) run in `make test` and `make fuzz`
command -v clang >/dev/null 2>&1 || need="$need clang"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
command -v curl >/dev/null 2>&1 || need="$need curl"
[ -x /usr/bin/python3 ] || need="$need python3"
command -v faketime >/dev/null 2>&1 || need="$need faketime"
command -v mdb_stat >/dev/null 2>&1 || need="$need lmdb-utils"
# the seats HA test runs two proxies behind a real HAProxy
command -v haproxy >/dev/null 2>&1 || need="$need haproxy"
# the dashboard test runs a real browser; the monitoring kit is checked
# with Prometheus' own promtool
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v promtool >/dev/null 2>&1 || need="$need prometheus"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "licproxy: missing packages:$need" >&2
	echo "licproxy: run as root or: sudo apt-get install$need" >&2
	exit 1
fi
echo "licproxy: installing$need" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends $need >/dev/null 2>&1 ||
	{ apt-get update >/dev/null && apt-get install -y --no-install-recommends $need; }

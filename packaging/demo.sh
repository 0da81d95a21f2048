#!/bin/sh
# demo.sh - what `make run` starts: a local authority (background) and a
# proxy in front of it (foreground), with throw-away keys under ./demo/.
#
# Everything lives in ./demo (git-ignored) and is reused on the next run;
# `rm -rf demo` starts over. Ctrl-C stops the proxy and the authority.
set -eu
cd "$(dirname "$0")/.."

BIN=build/licproxy
D=demo
AUTH_PORT=9443
AUTH_STATUS=9089
PROXY_PORT=8443
PROXY_STATUS=8089

die() {
	echo "demo: $*" >&2
	exit 1
}

[ -x "$BIN" ] || die "$BIN is missing; run 'make' (or 'make run') first"
command -v openssl >/dev/null 2>&1 || die "openssl is needed for the demo certificate"
command -v curl >/dev/null 2>&1 || die "curl is needed to check the servers"

# Everything made here is private by default (keys, stores, logs).
umask 077
mkdir -p "$D"

# ---- processes left over from an earlier run ----

# The pid in $1 if it is still a licproxy serving config file $2.
ours() {
	[ -f "$1" ] || return 1
	pid=$(cat "$1" 2>/dev/null) || return 1
	case "$pid" in '' | *[!0-9]*) return 1 ;; esac
	[ -r "/proc/$pid/cmdline" ] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "serve $2" || return 1
	echo "$pid"
}

# TERM, then wait up to 12 s (licproxy promises to be gone within 10 s).
stop_pid() {
	kill "$1" 2>/dev/null || return 0
	n=0
	while kill -0 "$1" 2>/dev/null && [ $n -lt 120 ]; do
		sleep 0.1
		n=$((n + 1))
	done
	if kill -0 "$1" 2>/dev/null; then
		echo "demo: pid $1 did not stop, killing it" >&2
		kill -9 "$1" 2>/dev/null || true
	fi
}

for name in authority proxy; do
	if pid=$(ours "$D/$name.pid" "$D/$name.yaml"); then
		echo "demo: stopping the $name left from an earlier run (pid $pid)"
		stop_pid "$pid"
	fi
	rm -f "$D/$name.pid"
done

# ---- the ports must be free ----

port_free() {
	if [ -x /usr/bin/python3 ]; then
		/usr/bin/python3 - "$1" <<-'EOF'
		import socket, sys
		s = socket.socket()
		s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
		try:
		    s.bind(("127.0.0.1", int(sys.argv[1])))
		except OSError:
		    sys.exit(1)
		EOF
	else
		# curl exit code 7: nothing listens there
		rc=0
		curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/" || rc=$?
		[ "$rc" = 7 ]
	fi
}

busy=""
for p in $PROXY_PORT $PROXY_STATUS $AUTH_PORT $AUTH_STATUS; do
	port_free "$p" || busy="$busy $p"
done
if [ -n "$busy" ]; then
	echo "demo: port(s)$busy on 127.0.0.1 are already in use." >&2
	echo "demo: the demo needs 8443, 8089 (proxy) and 9443, 9089 (authority)." >&2
	echo "demo: stop whatever listens there (see: ss -ltnp) and run 'make run' again." >&2
	exit 1
fi

# ---- keys and certificate (made once, then reused) ----

if [ ! -f "$D/authority.key" ] || [ ! -f "$D/authority.key.pub" ]; then
	echo "demo: creating the authority's Ed25519 signing key"
	rm -f "$D/authority.key" "$D/authority.key.pub"
	"$BIN" keygen "$D/authority.key" 2>/dev/null
	# Leases cached under an older signing key are of no use now.
	rm -rf "$D/proxy-store"
fi

if [ ! -f "$D/tls.crt" ] || [ ! -f "$D/tls.key" ]; then
	echo "demo: creating a self-signed TLS certificate for localhost and 127.0.0.1"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
	    -nodes -days 365 -subj "/CN=localhost" \
	    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
	    -keyout "$D/tls.key" -out "$D/tls.crt" >/dev/null 2>&1 ||
	    die "openssl could not create the certificate"
	chmod 600 "$D/tls.key"
	chmod 644 "$D/tls.crt"
fi

kid_of() {
	printf '%s' "$(cat "$1")" | sha256sum | cut -c1-16
}

# A key file is reused only if the authority's registry still knows it.
known() {
	[ -s "$1" ] || return 1
	"$BIN" keys list --store "$D/authority-store" --json 2>/dev/null |
	    grep -q "\"key_id\":\"$(kid_of "$1")\""
}

if ! known "$D/proxy.key"; then
	echo "demo: creating the proxy's own key (role proxy)"
	"$BIN" keys create --store "$D/authority-store" --name demo-proxy \
	    --products api,engine --role proxy >"$D/proxy.key" 2>/dev/null
	chmod 600 "$D/proxy.key"
fi
if ! known "$D/demo.key"; then
	echo "demo: creating a member key for a licensed service"
	"$BIN" keys create --store "$D/authority-store" --name demo \
	    --products api,engine >"$D/demo.key" 2>/dev/null
	chmod 600 "$D/demo.key"
fi
KEY=$(cat "$D/demo.key")

# ---- configuration (rewritten every run) ----

cat >"$D/authority.yaml" <<EOF
# Written by packaging/demo.sh; rewritten on every 'make run'.
mode: authority
server:
  host: 127.0.0.1
  port: $AUTH_PORT
  status_host: 127.0.0.1
  status_port: $AUTH_STATUS
  workers: 2
  tls_cert: $D/tls.crt
  tls_key: $D/tls.key
store:
  path: $D/authority-store
authority:
  signing_key: $D/authority.key
log:
  level: info
EOF

cat >"$D/proxy.yaml" <<EOF
# Written by packaging/demo.sh; rewritten on every 'make run'.
mode: proxy
server:
  host: 127.0.0.1
  port: $PROXY_PORT
  status_host: 127.0.0.1
  status_port: $PROXY_STATUS
  workers: 2
  tls_cert: $D/tls.crt
  tls_key: $D/tls.key
license:
  server_url: ["https://127.0.0.1:$AUTH_PORT"]
  key_file: $D/proxy.key
  ca_file: $D/tls.crt
  trusted_keys: [$D/authority.key.pub]
  sync_interval: 10s
store:
  path: $D/proxy-store
log:
  level: info
EOF

# ---- start ----

APID=""
PROXY_PID=""
cleanup() {
	trap - EXIT INT TERM HUP
	if [ -n "$PROXY_PID" ]; then
		stop_pid "$PROXY_PID"
		rm -f "$D/proxy.pid"
	fi
	if [ -n "$APID" ]; then
		if kill -0 "$APID" 2>/dev/null; then
			echo "demo: stopping the authority (pid $APID)"
		fi
		stop_pid "$APID"
		rm -f "$D/authority.pid"
	fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM HUP

# $1 = status port, $2 = pid, $3 = what, $4 = its log (or "")
wait_up() {
	n=0
	until curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$1/healthz"; do
		if ! kill -0 "$2" 2>/dev/null; then
			echo "demo: the $3 exited during start-up" >&2
			[ -n "$4" ] && tail -n 20 "$4" >&2
			exit 1
		fi
		n=$((n + 1))
		[ $n -lt 100 ] || die "the $3 did not answer on :$1 within 10 s"
		sleep 0.1
	done
}

"$BIN" serve "$D/authority.yaml" >"$D/authority.log" 2>&1 &
APID=$!
echo "$APID" >"$D/authority.pid"
wait_up "$AUTH_STATUS" "$APID" authority "$D/authority.log"
echo "demo: authority running (pid $APID, log $D/authority.log)"

# The proxy logs to this terminal. It runs as a background job so that this
# script knows its pid; Ctrl-C reaches the trap above, which stops both.
"$BIN" serve "$D/proxy.yaml" &
PROXY_PID=$!
echo "$PROXY_PID" >"$D/proxy.pid"
wait_up "$PROXY_STATUS" "$PROXY_PID" proxy ""
# Its first upstream check sets the state; give it a moment.
n=0
while curl -s --max-time 1 "http://127.0.0.1:$PROXY_STATUS/v1/status" |
    grep -q '"state":"Initializing"' && [ $n -lt 50 ]; do
	sleep 0.1
	n=$((n + 1))
done

cat <<EOF

  licproxy demo: an authority on :$AUTH_PORT and a proxy in front of it on :$PROXY_PORT.

  Demo license key (also in $D/demo.key):
    $KEY

  Ask the proxy whether the key is good:
    curl --cacert $D/tls.crt -H "Authorization: Token $KEY" https://127.0.0.1:$PROXY_PORT/v1/license

  Report usage:
    curl --cacert $D/tls.crt -H "Authorization: Token $KEY" -H "Content-Type: application/json" -d '{"records":[{"id":"r-1","product":"engine","metric":"audio_seconds","quantity":12.5,"ts":"2026-11-26T16:00:00Z"}]}' https://127.0.0.1:$PROXY_PORT/v1/usage

  Proxy status:
    curl http://127.0.0.1:$PROXY_STATUS/v1/status

  Outage demo: stop the authority, then repeat the first curl:
    kill \$(cat $D/authority.pid)
  The key keeps validating from the proxy's cache, and within about 10 s
  the status says "TrustBased".

  Ctrl-C stops the proxy and the authority.

EOF

rc=0
wait "$PROXY_PID" || rc=$?
PROXY_PID=""
exit "$rc"

#!/usr/bin/env bash
# map646 demo: an IPv4-only client fetches a web page from an IPv6-only
# server through the translator, each in its own network namespace.
#
#   demo-client 192.0.2.2 ── 192.0.2.1 demo-xlat 2001:db8:6::1 ── 2001:db8:6::10 demo-server
#                                      (map646, tun "map646")
#
# The server is published at 198.51.100.10 (an RFC 7757 mapping to
# 2001:db8:6::10); the client appears to it as 2001:db8:64::c000:202, the
# RFC 6052 prefix 2001:db8:64::/96 followed by 192.0.2.2. Only documentation
# addresses are used and nothing leaves the namespaces.
#
# Usage (as root, from anywhere in the checkout):  demo/run.sh
#   MAP646_BIN=path   use this binary instead of building one
#   demo/run.sh --clean   remove what an interrupted demo left behind
set -euo pipefail

NS_CLIENT=demo-client NS_XLAT=demo-xlat NS_SERVER=demo-server
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  set +e
  [[ -n "${XLAT_PID:-}" ]] && kill -TERM "$XLAT_PID" 2>/dev/null && wait "$XLAT_PID" 2>/dev/null
  [[ -n "${HTTP_PID:-}" ]] && kill -TERM "$HTTP_PID" 2>/dev/null && wait "$HTTP_PID" 2>/dev/null
  for ns in "$NS_CLIENT" "$NS_XLAT" "$NS_SERVER"; do
    ip netns del "$ns" 2>/dev/null
  done
  [[ -n "${WORK:-}" ]] && rm -rf "$WORK"
}

if [[ "${1:-}" == "--clean" ]]; then
  cleanup
  exit 0
fi
if [[ $EUID -ne 0 ]]; then
  echo "demo/run.sh: needs root (it creates network namespaces and a tun device)" >&2
  exit 1
fi
for tool in ip python3 curl; do
  command -v "$tool" >/dev/null || { echo "demo/run.sh: needs $tool (see deps.sh)" >&2; exit 1; }
done
for ns in "$NS_CLIENT" "$NS_XLAT" "$NS_SERVER"; do
  if ip netns list | grep -qw "$ns"; then
    echo "demo/run.sh: namespace $ns exists: a demo is running, or one was interrupted (then: demo/run.sh --clean)" >&2
    exit 1
  fi
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d /tmp/map646-demo.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM

BIN=${MAP646_BIN:-}
if [[ -z "$BIN" ]]; then
  say "Building map646"
  (cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$WORK/map646" ./cmd/map646)
  BIN=$WORK/map646
fi

say "Creating namespaces $NS_CLIENT (IPv4 only), $NS_XLAT (translator), $NS_SERVER (IPv6 only)"
for ns in "$NS_CLIENT" "$NS_XLAT" "$NS_SERVER"; do
  ip netns add "$ns"
  # No duplicate address detection: the demo's links are new and private.
  ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  ip -n "$ns" link set lo up
done
ip -n "$NS_CLIENT" link add veth0 type veth peer name v4side netns "$NS_XLAT"
ip -n "$NS_XLAT" link add v6side type veth peer name veth0 netns "$NS_SERVER"
# The client knows only IPv4.
ip -n "$NS_CLIENT" addr add 192.0.2.2/24 dev veth0
ip -n "$NS_CLIENT" link set veth0 up
ip -n "$NS_CLIENT" route add default via 192.0.2.1
ip netns exec "$NS_CLIENT" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1
# The translator's two sides.
ip -n "$NS_XLAT" addr add 192.0.2.1/24 dev v4side
ip -n "$NS_XLAT" addr add 2001:db8:6::1/64 dev v6side nodad
ip -n "$NS_XLAT" link set v4side up
ip -n "$NS_XLAT" link set v6side up
# The server knows only IPv6; replies to IPv4 clients go to the translator.
ip -n "$NS_SERVER" addr add 2001:db8:6::10/64 dev veth0 nodad
ip -n "$NS_SERVER" link set veth0 up
ip -n "$NS_SERVER" -6 route add 2001:db8:64::/96 via 2001:db8:6::1
ip -n "$NS_SERVER" -6 route add default via 2001:db8:6::1

say "Starting the web server on [2001:db8:6::10]:80 (IPv6 only)"
mkdir -p "$WORK/www"
cat >"$WORK/www/index.html" <<'HTML'
<h1>Hello from an IPv6-only server</h1>
HTML
ip netns exec "$NS_SERVER" python3 -u -m http.server --bind 2001:db8:6::10 --directory "$WORK/www" 80 \
  >"$WORK/server.log" 2>&1 &
HTTP_PID=$!

say "Starting the translator: map646 run --demo-config (198.51.100.10 <-> 2001:db8:6::10)"
ip netns exec "$NS_XLAT" "$BIN" run --demo-config --control-socket "$WORK/map646.sock" >"$WORK/map646.log" 2>&1 &
XLAT_PID=$!
for _ in $(seq 100); do
  grep -q 'msg=ready' "$WORK/map646.log" && break
  kill -0 "$XLAT_PID" 2>/dev/null || { cat "$WORK/map646.log"; echo "demo/run.sh: the translator exited" >&2; exit 1; }
  sleep 0.1
done
grep -q 'msg=ready' "$WORK/map646.log" || { cat "$WORK/map646.log"; echo "demo/run.sh: the translator is not ready after 10 s" >&2; exit 1; }
sed 's/^/  map646: /' "$WORK/map646.log"
echo "  routes in $NS_XLAT:"
ip -n "$NS_XLAT" route show dev map646 | sed 's/^/    /'
ip -n "$NS_XLAT" -6 route show dev map646 proto 64 | sed 's/^/    /'
for _ in $(seq 50); do
  ip netns exec "$NS_SERVER" python3 -c 'import socket; socket.create_connection(("2001:db8:6::10", 80), 0.2)' 2>/dev/null && break
  sleep 0.1
done

say "The IPv4-only client fetches http://198.51.100.10/"
echo "  \$ curl http://198.51.100.10/"
ip netns exec "$NS_CLIENT" curl -sS --max-time 10 http://198.51.100.10/ | sed 's/^/  /'

say "The server's log: the client appears as 2001:db8:64::c000:202 (prefix + 192.0.2.2)"
sleep 0.2
sed 's/^/  /' "$WORK/server.log"

say "The translator's counters (map646 stats)"
"$BIN" stats --control-socket "$WORK/map646.sock" | sed 's/^/  /'

say "Stopping; everything the demo created is removed"
if grep -q '2001:db8:64::c000:202 .*"GET / HTTP' "$WORK/server.log"; then
  echo "demo: OK"
else
  echo "demo: FAILED (the server did not log the translated client address)"
  exit 1
fi

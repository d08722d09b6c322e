#!/usr/bin/env bash
# make demo: boot the map646 appliance image under QEMU between an
# IPv4-only client network namespace and an IPv6-only web server namespace,
# and fetch a page over IPv4 from a server that has only IPv6.
#
#   qm-demo-client          qm-demo-vm (QEMU, TCG)              qm-demo-server
#   203.0.113.2/28  --- br4/tap4 = eth0 [map646] eth1 = tap6/br6 --- 2001:db8:ffff::2/64
#                                                                   web: [2001:db8:6::10]:80
#   curl http://198.51.100.10/  -->  translated to  -->  http://[2001:db8:6::10]/
#
# Needs root, qemu-system-x86_64, syslinux, python3, curl (deps.sh). Only
# documentation addresses, only inside the namespaces it creates; it removes
# them, and stops what it started, on exit.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/map646-demo.XXXXXX)
NS4=qm-demo-client NS6=qm-demo-server NSV=qm-demo-vm
qemu_pid= web_pid=

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
	[[ -n $web_pid ]] && kill "$web_pid" 2>/dev/null || true
	if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
		kill "$qemu_pid" 2>/dev/null || true
		wait "$qemu_pid" 2>/dev/null || true
	fi
	for ns in $NS4 $NS6 $NSV; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

[[ $(id -u) == 0 ]] || { echo "demo.sh: run as root (network namespaces, tap devices)" >&2; exit 1; }
for p in qemu-system-x86_64 qemu-img syslinux python3 curl ip go; do
	command -v "$p" >/dev/null || { echo "demo.sh: $p not found; run ./deps.sh" >&2; exit 1; }
done
for ns in $NS4 $NS6 $NSV; do
	if ip netns list | grep -qw "$ns"; then echo "demo.sh: namespace $ns exists: is another demo running?" >&2; exit 1; fi
done

say "Building map646 (static) and the appliance image"
version=$(cd "$root" && git describe --always --dirty 2>/dev/null || echo dev)
(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$work/map646" ./cmd/map646)
"$work/map646" image build -c "$root/image/demo.hcl" -o "$work/image"

say "Creating the namespaces: an IPv4-only client, an IPv6-only web server, and the VM's"
for ns in $NS4 $NS6 $NSV; do
	ip netns add "$ns"
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
	ip -n "$ns" link set lo up
done
# In the VM's namespace each tap is bridged to a veth whose peer is the
# client's or the server's interface.
for side in 4 6; do
	mtu=1500; [[ $side == 6 ]] && mtu=1520
	peer_ns=$NS4; [[ $side == 6 ]] && peer_ns=$NS6
	ip -n $NSV tuntap add dev tap$side mode tap
	ip -n $NSV link add br$side type bridge
	ip link add v$side netns $NSV mtu $mtu type veth peer name eth0 netns "$peer_ns" mtu $mtu
	for l in tap$side v$side; do ip -n $NSV link set $l mtu $mtu master br$side up; done
	ip -n $NSV link set br$side up
done
ip -n $NS4 addr add 203.0.113.2/28 dev eth0
ip -n $NS4 link set eth0 up
ip -n $NS4 route add 198.51.100.0/24 via 203.0.113.1
ip -n $NS6 addr add 2001:db8:ffff::2/64 dev eth0 nodad
ip -n $NS6 addr add 2001:db8:6::10/128 dev lo
ip -n $NS6 link set eth0 up
ip -n $NS6 route add 2001:db8:64::/96 via 2001:db8:ffff::1
echo "client: $(ip -n $NS4 -br addr show eth0)"
echo "server: $(ip -n $NS6 -br addr show eth0) + 2001:db8:6::10 (no IPv4 at all)"

say "Booting the appliance (QEMU, TCG: 10-30 s)"
ip netns exec $NSV qemu-system-x86_64 -accel tcg -m 256 -smp 1 \
	-display none -monitor none -serial "file:$work/console.log" -no-reboot \
	-qmp "unix:$work/qmp.sock,server=on,wait=off" \
	-drive "file=$work/image/map646.qcow2,format=qcow2,if=virtio,snapshot=on" \
	-device virtio-rng-pci -nic none \
	-netdev tap,id=n0,ifname=tap4,script=no,downscript=no -device virtio-net-pci,netdev=n0 \
	-netdev tap,id=n1,ifname=tap6,script=no,downscript=no -device virtio-net-pci,netdev=n1 &
qemu_pid=$!
for _ in $(seq 1 180); do
	grep -aq "map646 ready" "$work/console.log" 2>/dev/null && break
	kill -0 $qemu_pid 2>/dev/null || { cat "$work/console.log"; echo "demo.sh: QEMU exited" >&2; exit 1; }
	sleep 1
done
grep -a "map646 ready" "$work/console.log" || { cat "$work/console.log"; echo "demo.sh: no ready line in 180 s" >&2; exit 1; }

say "Starting a web server that listens on IPv6 only: [2001:db8:6::10]:80"
mkdir -p "$work/www"
echo "Hello from an IPv6-only server, reached over IPv4 through map646." > "$work/www/index.html"
ip netns exec $NS6 python3 -m http.server --bind 2001:db8:6::10 --directory "$work/www" 80 >"$work/web.log" 2>&1 &
web_pid=$!
for _ in $(seq 1 50); do ip netns exec $NS6 ss -ltn | grep -q ':80 ' && break; sleep 0.1; done

say "The IPv4-only client fetches http://198.51.100.10/"
ip netns exec $NS4 curl -sS --max-time 30 --retry 3 --retry-connrefused http://198.51.100.10/
echo "server log (the client appears inside 2001:db8:64::/96):"
sed 's/^/  /' "$work/web.log"

say "Pressing the ACPI power button (QMP system_powerdown)"
python3 - "$work/qmp.sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline()
for cmd in ("qmp_capabilities", "system_powerdown"):
    f.write(json.dumps({"execute": cmd}) + "\n"); f.flush()
    while "return" not in json.loads(f.readline()): pass
PY
for _ in $(seq 1 60); do kill -0 $qemu_pid 2>/dev/null || break; sleep 1; done
grep -a "map646:" "$work/console.log" | tail -3
echo "done."

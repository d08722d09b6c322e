#!/usr/bin/env bash
# Adapter for the external SIIT/EAM conformance suite (shared/conformance):
# the harness starts it as XLAT_CMD inside namespace j-xlat. It turns the
# harness's address plan (XLAT_* variables) into a map646 HCL configuration
# and execs `map646 run` in the foreground; the harness stops it by killing
# its process group.
#
# MAP646_LINK picks the link mode (run.sh sets it and XLAT_TUN to match):
#   tun  (default) host mode: map646 creates the tun XLAT_TUN and routes into
#        it; the kernel forwards in and out (XLAT_TTL_DEC=2).
#   fd   the same tun, but opened here (IFF_TUN|IFF_NO_PI, no vnet header)
#        and inherited by map646 as fd 3, as a supervisor would hand it
#        over; map646 neither creates nor routes it (the harness routes
#        into XLAT_TUN once it appears).
#   fd-vnet  as fd, but the tun opened with IFF_VNET_HDR and a 12-byte
#        header, as QEMU and Firecracker open a VM's tap: map646 finds
#        that out from the fd and carries super-packets whole.
#   nic  XLAT_TUN empty: map646 does its own routing on XLAT_IF4/XLAT_IF6
#        (j-x4/j-x6), AF_PACKET with kernel forwarding off, TTL decremented
#        once by the translator (XLAT_TTL_DEC=1, the harness's default then).
#
#   MAP646_BIN   the binary to run (default: bin/map646 of this checkout)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${MAP646_BIN:-$ROOT/bin/map646}
: "${XLAT_WORKDIR:?the conformance harness sets XLAT_WORKDIR}"
: "${XLAT_PREFIX6:?}" "${XLAT_EAM:?}"
LINK=${MAP646_LINK:-tun}
case "$LINK" in
  tun | nic) ;;
  fd | fd-vnet) : "${XLAT_TUN:?fd mode needs XLAT_TUN, the tun to open and hand over}" ;;
  *) echo "adapter.sh: MAP646_LINK=$LINK: not tun, fd, fd-vnet or nic" >&2; exit 2 ;;
esac

conf=$XLAT_WORKDIR/map646.hcl
{
  echo "translator {"
  echo "  prefix = \"$XLAT_PREFIX6\""
  for m in $XLAT_EAM; do
    printf '  mapping {\n    ipv4 = "%s"\n    ipv6 = "%s"\n  }\n' "${m%%=*}" "${m##*=}"
  done
  echo "  lowest_ipv6_mtu = ${XLAT_LOWEST_IPV6_MTU:-1280}"
  [[ -n "${XLAT_POOL6791:-}" ]] && echo "  icmp_source_pool = [\"$XLAT_POOL6791\"]"
  if [[ "$LINK" == fd* ]]; then
    echo "  fd {"
    echo "    fd = 3"
    echo "  }"
  elif [[ -n "${XLAT_TUN:-}" ]]; then
    echo "  tun {"
    echo "    name   = \"$XLAT_TUN\""
    echo "    queues = 1"
    echo "    routes = true"
    # The harness's sides, as an operator names them: rule 6459 keeps
    # each family off the other side's interface.
    [[ -n "${XLAT_IF4:-}" ]] && echo "    ipv4_interfaces = [\"$XLAT_IF4\"]"
    [[ -n "${XLAT_IF6:-}" ]] && echo "    ipv6_interfaces = [\"$XLAT_IF6\"]"
    echo "  }"
  else
    : "${XLAT_IF4:?NIC mode (XLAT_TUN empty) needs XLAT_IF4}" "${XLAT_IF6:?NIC mode needs XLAT_IF6}"
    echo "  nic {"
    echo "    ipv4   = \"$XLAT_IF4\""
    echo "    ipv6   = \"$XLAT_IF6\""
    echo "    queues = 1"
    echo "  }"
  fi
  echo "}"
  echo "log {"
  echo "  level = \"${MAP646_LOG_LEVEL:-info}\""
  echo "}"
} >"$conf"

args=(run -c "$conf" --control-socket "$XLAT_WORKDIR/map646.sock")
if [[ "$LINK" == fd* ]]; then
  # Bash cannot issue TUNSETIFF; the suite's own Python can. It opens the
  # tun as fd 3 (inheritable) and execs map646 with it.
  exec /usr/bin/python3 -c '
import fcntl, os, struct, sys
TUNSETIFF, TUNSETVNETHDRSZ = 0x400454CA, 0x400454D8
IFF_TUN, IFF_NO_PI, IFF_VNET_HDR = 0x0001, 0x1000, 0x4000
vnet = sys.argv[1] == "fd-vnet"
fd = os.open("/dev/net/tun", os.O_RDWR)
flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet else 0)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", sys.argv[2].encode(), flags))
if vnet:
    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", 12))
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.execv(sys.argv[3], sys.argv[3:])
' "$LINK" "$XLAT_TUN" "$BIN" "${args[@]}"
fi
exec "$BIN" "${args[@]}"

#!/usr/bin/env bash
# Adapter for the external SIIT/EAM conformance suite (shared/conformance):
# the harness starts it as XLAT_CMD inside namespace j-xlat. It turns the
# harness's address plan (XLAT_* variables) into a map646 HCL configuration
# and execs `map646 run` in the foreground; the harness stops it by killing
# its process group.
#
# With XLAT_TUN set (the default) map646 runs in host mode on that tun. With
# XLAT_TUN empty it does its own routing: NIC mode on XLAT_IF4/XLAT_IF6
# (j-x4/j-x6), AF_PACKET with kernel forwarding off, TTL decremented once
# by the translator (run with XLAT_TTL_DEC=1, the harness's default then).
#
#   MAP646_BIN   the binary to run (default: bin/map646 of this checkout)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${MAP646_BIN:-$ROOT/bin/map646}
: "${XLAT_WORKDIR:?the conformance harness sets XLAT_WORKDIR}"
: "${XLAT_PREFIX6:?}" "${XLAT_EAM:?}"

conf=$XLAT_WORKDIR/map646.hcl
{
  echo "translator {"
  echo "  prefix = \"$XLAT_PREFIX6\""
  for m in $XLAT_EAM; do
    printf '  mapping {\n    ipv4 = "%s"\n    ipv6 = "%s"\n  }\n' "${m%%=*}" "${m##*=}"
  done
  echo "  lowest_ipv6_mtu = ${XLAT_LOWEST_IPV6_MTU:-1280}"
  [[ -n "${XLAT_POOL6791:-}" ]] && echo "  icmp_source_pool = [\"$XLAT_POOL6791\"]"
  if [[ -n "${XLAT_TUN:-}" ]]; then
    echo "  tun {"
    echo "    name   = \"$XLAT_TUN\""
    echo "    queues = 1"
    echo "    routes = true"
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

exec "$BIN" run -c "$conf" --control-socket "$XLAT_WORKDIR/map646.sock"

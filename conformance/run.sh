#!/usr/bin/env bash
# Runs the external conformance suite against map646 (the lead's
# `make conformance`). Extra arguments go to run.py, e.g. `-k icmp6 -v`.
# MAP646_LINK=nic runs the translator in NIC mode on j-x4/j-x6 (XLAT_TUN
# empty: no tun, the translator routes) instead of host mode on a tun.
#
# The suite lives beside the checkout in CI (../shared/conformance) and in
# /work/shared/conformance on the developers' machines; CONFORMANCE_DIR
# overrides both. It uses fixed namespace names (j-cli, j-xlat, j-srv), so
# only one run at a time per machine: this script refuses to start while
# they exist.
set -euo pipefail

ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
SUITE=${CONFORMANCE_DIR:-}
if [[ -z "$SUITE" ]]; then
  for d in "$ROOT/../shared/conformance" /work/shared/conformance; do
    [[ -f "$d/run.py" ]] && { SUITE=$d; break; }
  done
fi
[[ -n "$SUITE" && -f "$SUITE/run.py" ]] || { echo "conformance/run.sh: the suite (run.py) is not at ../shared/conformance; set CONFORMANCE_DIR" >&2; exit 1; }
[[ $EUID -eq 0 ]] || { echo "conformance/run.sh: needs root (network namespaces)" >&2; exit 1; }
/usr/bin/python3 -c 'import scapy' 2>/dev/null || { echo "conformance/run.sh: needs Debian's python3-scapy (deps.sh)" >&2; exit 1; }
if ip netns list | grep -Eq '^j-(cli|xlat|srv)\b'; then
  echo "conformance/run.sh: namespaces j-cli/j-xlat/j-srv exist: another conformance run is in progress" >&2
  exit 1
fi

if [[ -z "${MAP646_BIN:-}" ]]; then
  tmp=$(mktemp -d /tmp/map646-conformance.XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$tmp/map646" ./cmd/map646)
  export MAP646_BIN=$tmp/map646
fi
export MAP646_BIN=$(realpath "$MAP646_BIN")
export XLAT_CMD=$ROOT/conformance/adapter.sh
if [[ "${MAP646_LINK:-tun}" == nic ]]; then
  export XLAT_TUN=
else
  export XLAT_TUN=${XLAT_TUN:-j-tun}
fi

cd "$SUITE"
# run.py copies nothing into the read-only suite folder; its work files go
# to a temporary directory that it creates.
/usr/bin/python3 ./run.py --set public "$@"

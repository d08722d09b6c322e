#!/usr/bin/env bash
# Runs the external conformance suite against map646 (`make conformance`)
# once per link mode: MAP646_LINKS (default "tun fd fd-vnet nic") in that order.
#   tun  host mode on the tun j-tun that map646 creates and routes into;
#   fd   the tun j-tun opened by the adapter and inherited as fd 3;
#   fd-vnet  the same with IFF_VNET_HDR (a 12-byte virtio_net_hdr);
#   nic  NIC mode on j-x4/j-x6 (XLAT_TUN empty: no tun, the translator
#        routes itself).
# Each mode prints the suite's closing line ("N passed, M failed, K
# skipped"); then a line per mode with its time, and last the sum over the
# modes in the suite's own format, which CI reads. The exit
# status is 0 only if every mode passed. Extra arguments go to run.py, e.g.
# `-k icmp6 -v`.
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
tun=${XLAT_TUN:-j-tun}

cd "$SUITE"
status=0
summary=()
passed=0 failed=0 skipped=0
for link in ${MAP646_LINKS:-tun fd fd-vnet nic}; do
  case "$link" in
    tun | fd | fd-vnet) export XLAT_TUN=$tun ;;
    nic) export XLAT_TUN= ;;
    *) echo "conformance/run.sh: link mode $link: not tun, fd, fd-vnet or nic" >&2; exit 2 ;;
  esac
  export MAP646_LINK=$link
  echo "== conformance, link mode $link"
  start=$SECONDS
  # run.py copies nothing into the read-only suite folder; its work files
  # go to a temporary directory that it creates. Its last line is the
  # summary that CI reads.
  out=$(mktemp /tmp/map646-conformance-out.XXXXXX)
  rc=0
  /usr/bin/python3 ./run.py --set public "$@" | tee "$out" || rc=$?
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$out" | tail -n 1 || true)
  rm -f "$out"
  if [[ "$line" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed,\ ([0-9]+)\ skipped ]]; then
    ((passed += BASH_REMATCH[1], failed += BASH_REMATCH[2], skipped += BASH_REMATCH[3])) || true
  fi
  summary+=("$link: ${line:-no summary line (run.py exit status $rc)} in $((SECONDS - start)) s")
  ((rc == 0)) || status=1
done
echo "== conformance by link mode"
printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed, $skipped skipped"
exit $status

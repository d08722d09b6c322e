#!/usr/bin/env bash
# Installs what map646's build, demo and tests need on Debian/Ubuntu (run as root).
# Idempotent: packages already present are not fetched again.
set -euo pipefail

pkgs=(
  make git ca-certificates iproute2 iputils-ping curl ethtool procps kmod
  systemd dpkg gzip                # systemd-analyze verify and dpkg --root: the package test
  python3 python3-scapy            # the external conformance suite
  iperf3 tayga                     # benchmarks: throughput and the TAYGA baseline
  bird2                            # the upstream router of the failover test
  qemu-system-x86 qemu-utils ovmf  # the appliance image under QEMU (TCG)
  syslinux syslinux-common mtools dosfstools systemd-boot-efi xorriso
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# tayga's package ships a service; the benchmarks start their own instance.
systemctl disable --now tayga >/dev/null 2>&1 || true

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null || { echo "deps.sh: Go 1.26 or newer is required (https://go.dev/dl)" >&2; exit 1; }
go mod download

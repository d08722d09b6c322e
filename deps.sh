#!/usr/bin/env bash
# Installs what map646's build, demo and tests need on Debian 12 / Ubuntu 24.04
# (run as root): the Debian packages, Go (into /usr/local/go when no Go on PATH
# is as new as go.mod asks) and the Go modules.
# Idempotent: packages already present are not fetched again, a good enough Go
# is kept. Sourcing it (". ./deps.sh") defines the functions and runs nothing:
# internal/deps's tests call them.

# Where Go comes from: the Go module proxy serves every release as the module
# golang.org/toolchain (what `go` itself downloads for GOTOOLCHAIN). Its h1:
# hash is the one the sumdb endpoint DEPS_GOSUMDB serves over TLS: by
# default proxy.golang.org's, which passes on sum.golang.org's answers
# (sum.golang.org itself need not resolve), whatever DEPS_GOPROXY is, so that
# a mirror set there serves the zip but not the hash it is checked against.
# deps.sh reads the hash from the lookup's record and does not verify the
# signed tree note that comes with it (go does): it trusts the endpoint's TLS.
DEPS_GOPROXY=${DEPS_GOPROXY:-https://proxy.golang.org}
DEPS_GOSUMDB=${DEPS_GOSUMDB:-https://proxy.golang.org/sumdb/sum.golang.org}
DEPS_GO_PREFIX=${DEPS_GO_PREFIX:-/usr/local/go}
# go and gofmt are linked here when the Go on PATH is missing or too old, so
# that make, the scripts and the tests that run `go` find the new one
# (/usr/local/bin comes before /usr/bin on Debian's and Ubuntu's PATH).
DEPS_GO_LINKS=${DEPS_GO_LINKS:-/usr/local/bin}

# go_wanted prints the Go release go.mod needs ("1.26.3") and the one to
# install ("1.26.3", or its toolchain line's), from the go.mod given.
go_wanted() {
	local need inst
	need=$(awk '$1 == "go" { print $2; exit }' "$1")
	inst=$(awk '$1 == "toolchain" { sub(/^go/, "", $2); print $2; exit }' "$1")
	[ -n "$need" ] || { echo "deps.sh: no go line in $1" >&2; return 1; }
	# "go 1.26" means the release 1.26.0 (its toolchain is go1.26.0).
	[[ $need == *.*.* || $need == *rc* || $need == *beta* ]] || need=$need.0
	echo "$need ${inst:-$need}"
}

# go_version prints the release of the go binary $1 (an absolute path) as
# "1.26.8", or nothing when it cannot run. GOTOOLCHAIN=local and the root
# directory: the binary's own version, never one it would download for a
# go.mod that asks for more.
go_version() {
	local v
	v=$(cd / && GOTOOLCHAIN=local "$1" env GOVERSION 2>/dev/null) || return 0
	echo "${v#go}"
}

# version_ge: is release $1 at least $2 (version order: 1.9 < 1.26)?
version_ge() {
	[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

# go_arch prints the Go name of this machine's architecture.
go_arch() {
	case "$(uname -m)" in
	x86_64 | amd64) echo amd64 ;;
	aarch64 | arm64) echo arm64 ;;
	*) echo "deps.sh: no Go toolchain for $(uname -m) (amd64 and arm64 only)" >&2; return 1 ;;
	esac
}

# go_install VERSION PREFIX: downloads go$VERSION for linux/$(go_arch) from
# the module proxy, checks the zip against the h1: hash (Go's dirhash Hash1)
# DEPS_GOSUMDB serves for it and installs it as PREFIX (replaced whole; the
# Go it replaces is kept as PREFIX.old until the next install). Nothing is
# changed unless the hash matches. Every step is checked: it runs where set
# -e is off (in ensure_go's $(...) and || lists).
go_install() {
	local version=$1 prefix=$2 arch mod zip tmp sum
	arch=$(go_arch) || return 1
	mod="v0.0.1-go$version.linux-$arch"
	# Beside PREFIX, so that the new tree moves into place with a rename.
	mkdir -p "$(dirname "$prefix")" || return 1
	tmp=$(mktemp -d "$(dirname "$prefix")/.deps-go.XXXXXX") || return 1
	zip="$tmp/go.zip"
	echo "deps.sh: installing Go $version ($DEPS_GOPROXY, golang.org/toolchain@$mod) into $prefix" >&2
	if ! curl -fsSL --retry 3 -o "$zip" "$DEPS_GOPROXY/golang.org/toolchain/@v/$mod.zip"; then
		echo "deps.sh: cannot download golang.org/toolchain@$mod from $DEPS_GOPROXY" >&2
		rm -rf "$tmp"
		return 1
	fi
	sum=$(curl -fsSL --retry 3 "$DEPS_GOSUMDB/lookup/golang.org/toolchain@$mod" |
		awk -v m="golang.org/toolchain" -v v="$mod" '$1 == m && $2 == v { print $3; exit }')
	if [ -z "$sum" ]; then
		echo "deps.sh: $DEPS_GOSUMDB has no hash for golang.org/toolchain@$mod" >&2
		rm -rf "$tmp"
		return 1
	fi
	if ! python3 - "$zip" "golang.org/toolchain@$mod/" "$sum" "$tmp/go" <<'EOF'; then
# Verifies the module zip argv[1] against the h1: hash argv[3] and extracts
# the files under the prefix argv[2] into argv[4], with their modes.
# h1 is Go's dirhash.Hash1: SHA-256 over the sorted lines
# "<sha256 hex of the file>  <name in the zip>\n", base64.
import base64, hashlib, os, stat, sys, zipfile
path, top, want, dest = sys.argv[1:5]
with zipfile.ZipFile(path) as z:
    names = sorted(i.filename for i in z.infolist() if not i.filename.endswith("/"))
    summary = hashlib.sha256()
    for n in names:
        if "\n" in n:
            sys.exit("deps.sh: file name with a newline in the zip: %r" % n)
        summary.update(("%s  %s\n" % (hashlib.sha256(z.read(n)).hexdigest(), n)).encode())
    got = "h1:" + base64.b64encode(summary.digest()).decode()
    if got != want:
        sys.exit("deps.sh: %s does not match the hash the sumdb endpoint serves: %s, want %s" % (path, got, want))
    for i in z.infolist():
        n = i.filename
        if n.endswith("/"):
            continue
        if not n.startswith(top) or ".." in n.split("/") or n.startswith("/"):
            sys.exit("deps.sh: unexpected file %r in the zip" % n)
        out = os.path.join(dest, n[len(top):])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(i) as src, open(out, "wb") as dst:
            dst.write(src.read())
        mode = (i.external_attr >> 16) & 0o777
        os.chmod(out, mode if mode else 0o644)
EOF
		rm -rf "$tmp"
		return 1
	fi
	if [ "$(go_version "$tmp/go/bin/go")" != "$version" ]; then
		echo "deps.sh: the installed go does not report version $version" >&2
		rm -rf "$tmp"
		return 1
	fi
	# Replace PREFIX whole: files of an older release left behind would break
	# it. The Go replaced last time goes now (no build runs from it any
	# more); the one replaced now stays as PREFIX.old, for a build that may
	# be running from it (a go started before: its working directory, its
	# open files), until the next install.
	if ! rm -rf "$prefix.old"; then
		echo "deps.sh: cannot remove the Go of the last install, $prefix.old" >&2
		rm -rf "$tmp"
		return 1
	fi
	if [ -e "$prefix" ] || [ -L "$prefix" ]; then
		if ! mv -T "$prefix" "$prefix.old"; then
			echo "deps.sh: cannot move $prefix aside" >&2
			rm -rf "$tmp"
			return 1
		fi
	fi
	if ! mv -T "$tmp/go" "$prefix"; then
		echo "deps.sh: cannot move Go $version into $prefix" >&2
		if [ -e "$prefix.old" ] && [ ! -e "$prefix" ]; then mv -T "$prefix.old" "$prefix"; fi
		rm -rf "$tmp"
		return 1
	fi
	rm -rf "$tmp"
	if [ -e "$prefix.old" ]; then
		echo "deps.sh: the Go it replaced is in $prefix.old until the next install" >&2
	fi
}

# ensure_go GOMOD: prints the path of a go at least as new as GOMOD's go
# line: the one on PATH if it is, else $DEPS_GO_PREFIX/bin/go, installed
# (go_install) unless already good enough and then linked into
# $DEPS_GO_LINKS.
ensure_go() {
	local need inst g v
	read -r need inst < <(go_wanted "$1") || return 1
	[ -n "$need" ] || return 1
	if g=$(command -v go) && v=$(go_version "$g") && [ -n "$v" ] && version_ge "$v" "$need"; then
		echo "$g"
		return 0
	fi
	g=$DEPS_GO_PREFIX/bin/go
	v=$(go_version "$g")
	if [ -z "$v" ] || ! version_ge "$v" "$need"; then
		go_install "$inst" "$DEPS_GO_PREFIX" || return 1
	fi
	mkdir -p "$DEPS_GO_LINKS" || return 1
	local tool
	for tool in go gofmt; do
		# Never replace a real file: only our own link, or nothing.
		if [ -L "$DEPS_GO_LINKS/$tool" ] || [ ! -e "$DEPS_GO_LINKS/$tool" ]; then
			ln -sfn "$DEPS_GO_PREFIX/bin/$tool" "$DEPS_GO_LINKS/$tool" || return 1
		else
			echo "deps.sh: $DEPS_GO_LINKS/$tool is not ours; use GO=$g with make" >&2
		fi
	done
	echo "$g"
}

deps_main() {
	set -euo pipefail
	cd "$(dirname "${BASH_SOURCE[0]}")"
	local pkgs=(
		make git ca-certificates iproute2 iputils-ping curl ethtool procps kmod
		systemd dpkg gzip                # systemd-analyze verify and dpkg --root: the package test
		python3 python3-scapy            # the external conformance suite; Go's zip check below
		iperf3 tayga                     # benchmarks: throughput and the TAYGA baseline
		bird2                            # the upstream router of the failover test
		qemu-system-x86 qemu-utils ovmf  # the appliance image under QEMU (TCG)
		syslinux syslinux-common mtools dosfstools systemd-boot-efi xorriso
	)
	local missing=() p
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

	local go
	go=$(ensure_go go.mod)
	echo "deps.sh: $go, Go $(go_version "$go")" >&2
	"$go" mod download
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	deps_main "$@"
fi

# map646 — see README.md. Every target works from a clean checkout (run ./deps.sh first, as root).
# The go on PATH, else the one deps.sh installs; whatever make runs (scripts,
# tests that build with go) finds the same one first on PATH.
ifeq ($(origin GO),undefined)
GO := $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
endif
ifneq ($(findstring /,$(GO)),)
export PATH := $(patsubst %/,%,$(dir $(GO))):$(PATH)
endif
BIN     := bin/map646
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
IMAGE_CONFIG ?= examples/appliance.hcl
IMAGE_OUT    ?= out/image
MAN_DIR      := out/man
PKG_DIR      ?= out/pkg
# Debian versions must start with a digit; tags are not used yet.
DEB_VERSION  ?= 0.0.0+git$(shell git rev-parse --short HEAD 2>/dev/null || echo 0)
DEB_ARCH     ?= $(shell $(GO) env GOARCH)
# runs a `go test -json` command and summarises it (see test below)
TESTSUM := $(GO) run ./internal/testsummary

.PHONY: build man package vet test test-race test-large conformance bench bench-go bench-netns demo demo-netns image failover failover-vm fuzz clean

## build: the static map646 binary (the appliance's /init as well)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/map646

## man: the manual pages (section 8), made from the command tree, in out/man/*.8.gz
man: build
	rm -rf $(MAN_DIR)
	$(BIN) man -o $(MAN_DIR)
	gzip -9nf $(MAN_DIR)/*.8

## package: the Debian package out/pkg/map646_VERSION_ARCH.deb (binary, systemd
## unit, man pages, /etc/map646/map646.hcl as a conffile), built by nfpm (pinned in go.mod)
package: build man
	mkdir -p $(PKG_DIR)
	MAP646_BIN=$(BIN) MAP646_MAN=$(MAN_DIR) MAP646_DEB_VERSION=$(DEB_VERSION) MAP646_DEB_ARCH=$(DEB_ARCH) \
		$(GO) tool nfpm package -f packaging/nfpm.yaml -p deb -t $(PKG_DIR)/

## vet: go vet and gofmt
vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

## test: everything — unit, fuzz seeds, race detector on the packet path, root tests in
## network namespaces, QEMU boots of the appliance image (and the two-VM failover), a smoke
## run of the netns benchmark harness, and last the external conformance suite in every
## link mode, whose closing line ("N passed, M failed, K skipped", summed over the modes)
## is the run's summary. Each go test run
## prints go test's own lines, then how many tests ran, passed, failed and skipped per
## package and why each skip happened (internal/testsummary). With CI=true a test that
## lacks root, a tun, QEMU or a tool fails instead of skipping (internal/testenv).
test: build vet
	MAP646_FAILOVER_VM=1 $(TESTSUM) $(GO) test -json -count=1 -timeout 70m ./...
	$(GO) -C third_party/eapache-channels test -count=1 ./...
	$(MAKE) test-race
	$(GO) run ./bench/netns -quick -map646 $(BIN)
	$(MAKE) conformance

## test-race: the race detector over the concurrent packet-path and reload code
test-race:
	$(TESTSUM) $(GO) test -json -count=1 -race -short ./mapping/... ./stack/... ./appliance/config/... ./appliance/daemon/... ./appliance/netsetup/... ./appliance/metrics/...

## test-large: the timed 1M-mapping loads (config parse, daemon start and reload in a
## namespace), which every go test run would otherwise pay for
test-large:
	MAP646_LARGE=1 $(GO) test -count=1 -v -timeout 20m -run 'Million' ./appliance/config ./appliance/daemon

## conformance: the external black-box suite (../shared/conformance) against map646 in
## every link mode (tun, fd, fd-vnet, nic; MAP646_LINKS picks some), each mode's summary
## line and time, then their sum; fails if any mode fails
MAP646_LINKS ?= tun fd fd-vnet nic
conformance: build
	MAP646_LINKS='$(MAP646_LINKS)' MAP646_BIN=$(abspath $(BIN)) ./conformance/run.sh

## bench: Go benchmarks of the hot code, then the netns harness (native, TAYGA, map646)
bench: bench-go bench-netns

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./mapping ./stack/...

## bench-netns: TAYGA_FORK=/path/to/tayga adds the apalrd/tayga fork (docs/benchmarks.md says how
## to build it); BENCH_NETNS_FLAGS passes more harness flags (-rounds 3, -setups ..., -quick)
TAYGA_FORK ?=
BENCH_NETNS_FLAGS ?=
bench-netns: build
	$(GO) run ./bench/netns -map646 $(BIN) $(if $(TAYGA_FORK),-tayga-fork $(abspath $(TAYGA_FORK))) -out docs/benchmarks.md $(BENCH_NETNS_FLAGS)

## demo: boot the appliance image under QEMU between an IPv4-only client and an IPv6-only web server
demo: build
	MAP646_BIN=$(abspath $(BIN)) ./image/demo.sh

## demo-netns: the same through a map646 process in namespaces (no VM)
demo-netns: build
	MAP646_BIN=$(abspath $(BIN)) ./demo/run.sh

## image: the bootable appliance (vmlinuz, initrd.img, map646.img, map646.qcow2)
image: build
	$(BIN) image build -c $(IMAGE_CONFIG) -o $(IMAGE_OUT)

## failover: the failover experiment with two map646 processes in namespaces (rewrites docs/failover*.svg)
failover: build
	MAP646_BIN=$(abspath $(BIN)) MAP646_FAILOVER_OUT=$(CURDIR)/docs $(GO) test -count=1 -v -timeout 20m -run TestFailover ./internal/failover

## failover-vm: the same with two appliance VMs under QEMU, as in the original paper's experiment
failover-vm: build
	MAP646_FAILOVER_VM=1 MAP646_FAILOVER_OUT=$(CURDIR)/docs $(GO) test -count=1 -v -timeout 20m -run TestFailoverVMs ./qemu-tests/failover

## fuzz: a few minutes of each fuzz target
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzTable$$' -fuzztime 60s ./mapping
	$(GO) test -run '^$$' -fuzz '^FuzzParseCSV$$' -fuzztime 60s ./mapping
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 60s ./appliance/config
	$(GO) test -run '^$$' -fuzz '^FuzzProcess46$$' -fuzztime 120s ./stack/xlat
	$(GO) test -run '^$$' -fuzz '^FuzzProcess64$$' -fuzztime 120s ./stack/xlat

clean:
	rm -rf bin out

# map646 — see README.md. Every target runs from a clean checkout.
GO      ?= go
BIN     := bin/map646
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: build test bench demo deps conformance image qemu-test vet

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/map646

vet:
	$(GO) vet ./...
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"

test: build vet
	$(GO) test -count=1 ./...

# Portico. `make run` starts a local demo; `make test` is what CI runs.
# Only Go is needed: buf, the protoc plugins and Consul are built from pinned
# modules under tools/ on first use.

SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
BUF := $(GO) tool -modfile=$(CURDIR)/tools/buf/go.mod buf
PLUGINS := $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-grpc-gateway $(BIN)/protoc-gen-openapiv2 $(BIN)/protoc-gen-portico
PROTODEPS := build/protodeps

.PHONY: all build generate check-generated protodeps plugins lint vet fmt-check test test-unit fuzz bench run consul tools clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

## Tools ---------------------------------------------------------------------

$(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-grpc-gateway $(BIN)/protoc-gen-openapiv2: tools/go.mod tools/go.sum
	cd tools && $(GO) build -o $(BIN)/ \
		google.golang.org/protobuf/cmd/protoc-gen-go \
		google.golang.org/grpc/cmd/protoc-gen-go-grpc \
		github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway \
		github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2

$(BIN)/protoc-gen-portico: $(wildcard cmd/protoc-gen-portico/*.go) go.mod
	$(GO) build -o $@ ./cmd/protoc-gen-portico

plugins: $(PLUGINS)

# Third-party .proto imports, printed from the Go packages that register them.
protodeps:
	cd tools && $(GO) run ./protodeps -out $(CURDIR)/$(PROTODEPS)

# A Consul agent for `make run` and the integration tests (about three minutes
# the first time). A consul already on PATH is used by `make run` instead.
$(BIN)/consul: tools/consul/go.mod tools/consul/go.sum
	cd tools/consul && $(GO) build -o $(BIN)/consul github.com/hashicorp/consul

consul: $(BIN)/consul

$(BIN)/grpcurl: tools/go.mod tools/go.sum
	cd tools && $(GO) build -o $(BIN)/ github.com/fullstorydev/grpcurl/cmd/grpcurl

tools: plugins consul $(BIN)/grpcurl

## Generation ----------------------------------------------------------------

generate: plugins protodeps
	rm -rf gen
	$(BUF) generate
	$(GO) build ./gen/...

# Regenerates into a temporary tree and fails on any difference with gen/.
check-generated: plugins protodeps
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(BUF) generate -o "$$tmp" && \
	if ! diff -r gen "$$tmp/gen"; then echo "gen/ is stale: run 'make generate' and commit" >&2; exit 1; fi; \
	echo "gen/ is current"

lint: protodeps
	$(BUF) lint
	$(BUF) format -d --exit-code proto

## Checks --------------------------------------------------------------------

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:" >&2; echo "$$out" >&2; exit 1; fi

# PORTICO_REQUIRE_CONSUL turns the integration tests' skip (no consul found)
# into a failure, so `make test` never passes on skipped tests.
test: consul check-generated lint vet fmt-check
	PORTICO_REQUIRE_CONSUL=1 PORTICO_CONSUL_BIN=$(BIN)/consul $(GO) test -race -count=1 ./...
	$(MAKE) fuzz

# Each fuzz target briefly, beyond its committed seed corpus (testdata/fuzz).
FUZZTIME ?= 5s
FUZZ_TARGETS := ./gateway/auth:FuzzParseBearer ./gateway/auth:FuzzAuthenticate
fuzz:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done

test-unit:
	$(GO) test -race ./...

# Benchmarks: add a package to BENCH_PKGS to include its bench_test.go;
# BENCH narrows them (make bench BENCH=Parallel).
BENCH_PKGS := ./gateway/ratelimit/...
BENCH ?= .

bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem $(BENCH_PKGS)

## Demo ----------------------------------------------------------------------

run: build consul $(BIN)/grpcurl
	./scripts/run.sh

clean:
	rm -rf bin build

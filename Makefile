# Portico. `make run` starts a local demo; `make test` is what CI runs.
# Only Go is needed: buf, the protoc plugins and Consul are built from pinned
# modules under tools/ on first use.

SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
BUF := $(GO) tool -modfile=$(CURDIR)/tools/buf/go.mod buf
PLUGINS := $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-grpc-gateway $(BIN)/protoc-gen-openapiv2 $(BIN)/protoc-gen-portico
PROTODEPS := build/protodeps

.PHONY: all build generate check-generated protodeps plugins lint vet fmt-check tidy-check test test-unit fuzz bench pgo screenshot run certs consul tools clean redoc redoc-install check-redoc

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

# After buf: the OpenAPI 3 document the gateway serves, from buf's OpenAPI v2
# files (internal/openapigen).
generate: plugins protodeps
	rm -rf gen
	$(BUF) generate
	$(GO) run ./internal/openapigen -dir gen
	$(GO) build ./gen/...

# Regenerates into a temporary tree and fails on any difference with gen/.
check-generated: plugins protodeps
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(BUF) generate -o "$$tmp" && $(GO) run ./internal/openapigen -dir "$$tmp/gen" && \
	if ! diff -r gen "$$tmp/gen"; then echo "gen/ is stale: run 'make generate' and commit" >&2; exit 1; fi; \
	echo "gen/ is current"

# The docs page's renderer: Redoc's standalone bundle from the npm package
# pinned in gateway/web/redoc/package-lock.json. The bundle is committed, so
# a bare clone builds with Go alone; `make redoc` copies it from the pinned
# package after a change to the lock, and `make check-redoc` (in make test)
# proves the committed file is the pinned package's.
REDOC := gateway/web/redoc
REDOC_FILES := redoc.standalone.js redoc.standalone.js.LICENSE.txt
redoc-install:
	@rm -rf build/redoc && mkdir -p build/redoc && cp $(REDOC)/package.json $(REDOC)/package-lock.json build/redoc/
	cd build/redoc && npm ci --ignore-scripts --legacy-peer-deps --no-audit --no-fund --silent

redoc: redoc-install
	for f in $(REDOC_FILES); do cp build/redoc/node_modules/redoc/bundles/$$f $(REDOC)/; done

check-redoc: redoc-install
	@for f in $(REDOC_FILES); do cmp build/redoc/node_modules/redoc/bundles/$$f $(REDOC)/$$f || \
		{ echo "$(REDOC)/$$f is not the pinned package's: run 'make redoc' and commit" >&2; exit 1; }; done; \
	echo "$(REDOC) is the pinned package's"

lint: protodeps
	$(BUF) lint
	$(BUF) format -d --exit-code proto

## Checks --------------------------------------------------------------------

vet:
	$(GO) vet ./...

# Every module's go.mod and go.sum say exactly what its code imports.
TIDY_MODULES := . bench tools tools/buf tools/consul
tidy-check:
	@for m in $(TIDY_MODULES); do (cd $$m && $(GO) mod tidy -diff) || \
		{ echo "$$m: go.mod is not tidy: run 'go mod tidy' there and commit" >&2; exit 1; }; done

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:" >&2; echo "$$out" >&2; exit 1; fi

# PORTICO_REQUIRE_CONSUL, PORTICO_REQUIRE_REDIS and PORTICO_REQUIRE_BROWSER
# turn the integration tests' skips (no consul, redis-server or chromium
# found) into failures, so `make test` never passes on skipped tests. The
# admin page's browser test leaves its screenshot in build/admin.png. The
# benchmark module (bench/, a module of its own) is vetted and its tests run
# too: the harness's report and servers.
test: consul check-generated check-redoc lint vet fmt-check tidy-check
	@mkdir -p build
	PORTICO_REQUIRE_CONSUL=1 PORTICO_REQUIRE_REDIS=1 PORTICO_REQUIRE_BROWSER=1 PORTICO_SCREENSHOT=$(CURDIR)/build/admin.png \
		PORTICO_CONSUL_BIN=$(BIN)/consul $(GO) test -race -count=1 ./...
	cd bench && $(GO) vet ./... && $(GO) test -race -count=1 ./...
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
# BENCH narrows them (make bench BENCH=Parallel). Then the hot path's
# micro-benchmarks in bench/micro (a module of its own, which holds the
# peers' dependencies), compared by benchstat with
# bench/results/micro.base.txt when it exists (copy micro.txt there before a
# change), and last the side-by-side harness, which writes
# bench/results/latest.{md,json,png} and profiles/ (BENCH_FLAGS passes it
# flags: BENCH_FLAGS='-workloads get -closed 3s'). About half an hour on two
# cores once Consul is built; the harness installs nginx when it is missing.
BENCH_PKGS := ./gateway/ratelimit/... ./gateway/stats/... ./gateway
BENCH ?= .
BENCH_COUNT ?= 6
BENCH_TIME ?= 150ms
BENCH_FLAGS ?=

bench: consul
	@mkdir -p bench/results
	set -o pipefail; PORTICO_CONSUL_BIN=$(BIN)/consul $(GO) test -run '^$$' -bench '$(BENCH)' -benchmem $(BENCH_PKGS) \
		| tee bench/results/micro-gateway.txt
	set -o pipefail; cd bench && PORTICO_CONSUL_BIN=$(BIN)/consul $(GO) test -run '^$$' -bench '$(BENCH)' -benchmem \
		-count $(BENCH_COUNT) -benchtime $(BENCH_TIME) ./micro/ | tee results/micro.txt
	cd bench && if [ -f results/micro.base.txt ]; then $(GO) tool benchstat results/micro.base.txt results/micro.txt; \
		else $(GO) tool benchstat results/micro.txt; fi | tee results/micro.benchstat.txt | tail -n 40
	cd bench && $(GO) build -pgo=$(if $(filter off auto,$(PGO)),$(PGO),$(abspath $(PGO))) -o $(BIN)/porticobench ./cmd/porticobench
	cd bench && PORTICO_CONSUL_BIN=$(BIN)/consul $(BIN)/porticobench -out results $(BENCH_FLAGS)

# Profile-guided optimisation, measured and not adopted: make pgo profiles
# Portico under the harness's profiled phases (native gRPC get, REST create
# and get, 32 calls in flight) and merges the CPU profiles into
# build/pgo/default.pgo (about two minutes); make bench PGO=build/pgo/default.pgo
# measures the gateway built with it. Five interleaved pairs of runs of
# 2026-11-30 gave no lower CPU per call with it on gRPC or REST, within the
# runs' noise (docs/performance.md), so cmd/gateway has no default.pgo and
# PGO is off.
PGO ?= off
pgo: consul
	@rm -rf build/pgo && mkdir -p build/pgo
	cd bench && $(GO) build -pgo=off -o $(BIN)/porticobench ./cmd/porticobench
	cd bench && PORTICO_CONSUL_BIN=$(BIN)/consul $(BIN)/porticobench -out $(CURDIR)/build/pgo \
		-workloads get,create -modes grpc-1conn,rest -rounds 1 -closed 300ms -open 300ms -warm 100ms -profile 20s -profile-nochain=false
	$(GO) tool pprof -proto build/pgo/profiles/*.cpu.pprof > build/pgo/default.pgo

# Regenerates docs/admin.png, the README's picture of the admin page, with
# the browser test (needs chromium).
screenshot: consul
	@mkdir -p docs
	PORTICO_REQUIRE_BROWSER=1 PORTICO_SCREENSHOT=$(CURDIR)/docs/admin.png PORTICO_CONSUL_BIN=$(BIN)/consul \
		$(GO) test -count=1 -run '^TestAdminPageInBrowser$$' ./internal/e2e/

## Demo ----------------------------------------------------------------------

run: build consul $(BIN)/grpcurl
	./scripts/run.sh

# Throwaway certificates for trying TLS locally (a CA, a server certificate
# for localhost and 127.0.0.1, a client certificate with a SPIFFE ID), valid
# for a day; it prints how to use them. See docs/tls.md.
certs:
	$(GO) run ./cmd/portico-certs -out build/certs

clean:
	rm -rf bin build

# Tollgate: audited, certificate-based access to databases.
SHELL := /usr/bin/env bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)

GO       ?= go
BIN      := bin
PKGS     := ./...
FUZZTIME ?= 20s

.PHONY: all deps build deb rpm image run test bench faults fuzz lint generate screenshots clean

all: build

# Install the Debian packages and Go modules the tests use (only what is missing).
deps:
	.ci/install-deps

# What `tollgate version` and `tg version` report.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
BUILDINFO := github.com/tollgate-db/tollgate/internal/buildinfo
LDFLAGS   := -X $(BUILDINFO).Version=$(VERSION) -X $(BUILDINFO).Commit=$(COMMIT) -X $(BUILDINFO).Date=$(DATE)

build:
	@echo "build: $(BIN)/tollgate and $(BIN)/tg (a first build compiles every dependency and takes a few minutes)"
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

# Packages and the container image in dist/, built in Go (deploy/pkg,
# internal/packaging): static binaries stamped as `make build` does, the
# hardened systemd units, the tollgate user, the default configuration and
# shell completions. dist/tollgate_<version>_<arch>.deb, the .rpm beside it,
# and dist/tollgate-image.tar (OCI layout and docker-save manifest in one tar).
DIST    := dist
PKGFLAGS = -out=$(DIST) -version=$(VERSION) -commit=$(COMMIT) -date=$(DATE)

deb:
	$(GO) run ./deploy/pkg -format=deb $(PKGFLAGS)

rpm:
	$(GO) run ./deploy/pkg -format=rpm $(PKGFLAGS)

image:
	$(GO) run ./deploy/pkg -format=image $(PKGFLAGS)

# Everything in one process on an embedded default: NATS, broker, agent and a
# throwaway PostgreSQL, with a demo user.
run: deps build
	$(BIN)/tollgate demo

# The whole suite against real servers. Starts its own instances on free ports.
test: deps
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -p 2 -timeout 25m $(PKGS)

# Pictures of the web UI's pages, at 1280 px and on a phone, taken by its
# browser test in headless Chromium.
screenshots: deps
	mkdir -p docs/screenshots
	TOLLGATE_WEBUI_SCREENSHOTS=$(CURDIR)/docs/screenshots $(GO) test -count=1 -run '^TestBrowser$$' ./webui

# End-to-end benchmark settings: pgbench -T per run, client counts, pgbench
# scale, COPY size, repetitions (median kept), where the report goes.
BENCH_TIME    ?= 10s
BENCH_CLIENTS ?= 1,8,32
BENCH_SCALE   ?= 10
BENCH_COPY_MB ?= 320
BENCH_ROUNDS  ?= 3
BENCH_REPORT  ?= report.md

# Go benchmarks of the hot paths, then the end-to-end benchmarks: pgbench -S
# and COPY directly, through a byte-copying TLS relay, pgbouncer, the agent
# (strict and async audit) and the strict agent through the proxy and its
# reverse tunnel, and the memory of 1,000 idle sessions directly and over
# one tunnel, printed and written to test/bench/report.md.
bench: deps
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 30m $(PKGS)
	$(GO) test -count=1 -v -timeout 90m -run '^TestPgbenchReport$$' ./test/bench -args -bench-report \
		-bench-time=$(BENCH_TIME) -bench-clients=$(BENCH_CLIENTS) -bench-scale=$(BENCH_SCALE) \
		-bench-copy-mb=$(BENCH_COPY_MB) -bench-rounds=$(BENCH_ROUNDS) -bench-unsigned -bench-out=$(BENCH_REPORT)

# Fault campaign and load: load through the agent while NATS, the agent, the
# broker and the exporter are SIGKILLed, the store fills up and the agent is
# cut from NATS; R3 cluster against R1 with a node killed; a leaf agent cut
# from its hub; 1,000 idle + 200 busy sessions and a connection storm. Fails
# on any statement without its event or event not delivered; writes
# test/bench/faults.md and test/bench/load.md. FAULTS_DURATION is the load
# per fault, FAULTS_RATE the pgbench transactions/s asked (0: as fast as it
# goes), FAULTS_OUTAGE how long NATS stays down and the agent cut,
# FAULTS_LEAF_CUT how long the leaf is cut from its hub.
FAULTS_DURATION ?= 60s
FAULTS_RATE     ?= 300
FAULTS_OUTAGE   ?= 10s
FAULTS_LEAF_CUT ?= 30s

faults: deps
	TOLLGATE_FAULTS=1 TOLLGATE_FAULTS_DURATION=$(FAULTS_DURATION) TOLLGATE_FAULTS_RATE=$(FAULTS_RATE) \
		TOLLGATE_FAULTS_OUTAGE=$(FAULTS_OUTAGE) TOLLGATE_FAULTS_LEAF_CUT=$(FAULTS_LEAF_CUT) \
		TOLLGATE_FAULTS_REPORT=$(CURDIR)/test/bench/faults.md $(GO) test -count=1 -v -timeout 90m ./test/faults
	TOLLGATE_FAULTS=1 TOLLGATE_LOAD_REPORT=$(CURDIR)/test/bench/load.md $(GO) test -count=1 -v -timeout 30m ./test/load

# Every fuzz target for FUZZTIME each.
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

# Regenerate checked-in files (JSON Schemas of every event type).
generate:
	$(GO) generate $(PKGS)

clean:
	rm -rf $(BIN) $(DIST)

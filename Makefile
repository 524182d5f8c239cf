# Tollgate: audited, certificate-based access to databases.
SHELL := /usr/bin/env bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)

GO       ?= go
BIN      := bin
PKGS     := ./...
FUZZTIME ?= 20s

.PHONY: all deps build run test bench fuzz lint generate clean

all: build

# Install the Debian packages and Go modules the tests use (only what is missing).
deps:
	.ci/install-deps

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Everything in one process on an embedded default: NATS, broker, agent and a
# throwaway PostgreSQL, with a demo user.
run: deps build
	$(BIN)/tollgate demo

# The whole suite against real servers. Starts its own instances on free ports.
test: deps
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -p 2 -timeout 25m $(PKGS)

# Go benchmarks of the hot paths, then the end-to-end benchmarks.
bench: deps
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 30m $(PKGS)

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
	rm -rf $(BIN)

# drydock-statemgmt. `make help` lists the targets.
SHELL := /bin/bash
BIN := node_modules/.bin
# buf runs the protoc-gen-es plugin by name: it must be on PATH.
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: help deps gen gen-check lint format breaking contract typecheck build run test check clean bench bench-smoke \
  python-client python-client-check clients-test

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: node_modules/.installed ## Install dependencies (npm ci) when missing or stale

gen: deps ## Regenerate gen/ from proto/ (buf generate)
	$(BIN)/buf generate

gen-check: deps ## Fail when gen/ differs from what proto/ generates
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	  $(BIN)/buf generate -o $$tmp || { echo "buf generate failed: gen/ was not checked" >&2; exit 1; }; \
	  if ! diff -r gen $$tmp/gen; then echo "gen/ is out of date: run make gen and commit it" >&2; exit 1; fi; \
	  echo "gen/ is in sync with proto/"

lint: deps ## buf lint, then Biome (format and lint; any diagnostic, warnings too, fails)
	$(BIN)/buf lint
	$(BIN)/biome ci --error-on-warnings .

format: deps ## Format with Biome and apply its safe lint fixes (what make lint checks)
	$(BIN)/biome format --write .
	$(BIN)/biome lint --write .

breaking: deps ## buf breaking: proto/ against the released contract, proto/contract.binpb
	$(BIN)/buf breaking --against proto/contract.binpb
	@echo "proto/ is wire- and source-compatible with proto/contract.binpb"

contract: deps ## Record proto/ as the released contract (on a release, deliberately; commit proto/contract.binpb)
	$(BIN)/buf build -o proto/contract.binpb

PY_STUBS := clients/python/drydock_statemgmt/_proto

python-client: ## Regenerate the Python library's stubs (needs protoc and grpc_python_plugin)
	rm -rf $(PY_STUBS)
	clients/gen-python.sh --lib $(PY_STUBS)

python-client-check: ## Fail when the Python library's stubs differ from what proto/ generates
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	  clients/gen-python.sh --lib $$tmp/_proto; \
	  if ! diff -r -x __pycache__ $(PY_STUBS) $$tmp/_proto; then echo "$(PY_STUBS) is out of date: run make python-client and commit it" >&2; exit 1; fi; \
	  echo "$(PY_STUBS) is in sync with proto/"

clients-test: build ## Python library, raw Python stubs and Go against a real server (.ci/clients.sh; Debian packages: see docs/clients.md)
	.ci/clients.sh

typecheck: deps ## TypeScript type check
	$(BIN)/tsc --noEmit -p .

build: deps ## Compile to dist/
	$(BIN)/tsc -p .

run: build ## Start the server on 127.0.0.1:50051, metrics on 127.0.0.1:9464 (embedded PostgreSQL in .data/ unless DATABASE_URL is set)
	node dist/src/main.js --metrics-listen $${STATEMGMT_METRICS_LISTEN:-127.0.0.1:9464}

test: build ## Run the test suite (embedded PostgreSQL unless DATABASE_URL is set)
	$(BIN)/mocha

bench: build ## Benchmarks (a few minutes): table on stdout, figures in bench/results/
	node dist/bench/run.js

bench-smoke: build ## The benchmark harness in a few seconds (CI runs it so it cannot rot)
	node dist/bench/run.js --smoke

check: gen-check lint breaking test bench-smoke clients-test ## What CI runs

clean: ## Remove build output (keeps .data/)
	rm -rf dist

# `make test` and `make run` do all set-up on a fresh machine (Rust toolchain and Python 3.11 present).
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
# Debian packages (redis-server for the tests) need root; use sudo when not root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-stamp
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help ## list the targets
help:
	@grep -E '^\.PHONY: [a-z-]+ ##' $(MAKEFILE_LIST) | sed -E 's/\.PHONY: ([a-z-]+) ## (.*)/  \1\t\2/'

$(DEPS_STAMP): requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: install ## create the virtual environment with the pinned dependencies
install: $(DEPS_STAMP)

PROTOS := $(wildcard proto/button_sidecar/v1/*.proto)
PROTO_OUT := python/button_sidecar/v1
PROTO_STAMP := $(PROTO_OUT)/.generated

$(PROTO_STAMP): $(PROTOS) $(DEPS_STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=python --pyi_out=python --grpc_python_out=python $(PROTOS)
	touch $@

.PHONY: proto ## generate the Python protobuf and gRPC modules from proto/ (the Rust side does it in build.rs)
proto: $(PROTO_STAMP)

.PHONY: build ## build the Rust extension (release) into the virtual environment
build: $(DEPS_STAMP) $(PROTO_STAMP)
	rm -f python/button_sidecar/_core*.so
	maturin develop --release --quiet

.PHONY: run ## build, then serve with the embedded defaults
run: build
	$(VENV)/bin/button-sidecar serve

.PHONY: lint-rust ## rustfmt check and clippy with warnings denied
lint-rust:
	cargo fmt --check
	cargo clippy --quiet --all-targets --features python -- -D warnings

.PHONY: lint-python ## ruff, mypy and stubtest against the built module
lint-python: build
	ruff check python tests benches fuzz
	ruff format --check python tests benches fuzz
	mypy
	$(PY) -m mypy.stubtest button_sidecar._core

.PHONY: lint ## every linter
lint: lint-rust lint-python

.PHONY: test-rust ## cargo test (pure core, no Python needed)
test-rust:
	cargo test --quiet

.PHONY: redis-server-installed ## install Debian's redis-server (the tests start their own) when it is missing
redis-server-installed:
	command -v redis-server >/dev/null || { $(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends redis-server; }

.PHONY: test-python ## pytest against the built extension
test-python: build redis-server-installed
	$(PY) -m pytest -q

FUZZ_SECS ?= 60
CARGO_FUZZ := target/tools/bin/cargo-fuzz
FUZZ_TARGETS := transform_json transform_proto

$(CARGO_FUZZ):
	cargo install cargo-fuzz --version =0.13.1 --locked --root target/tools --quiet

.PHONY: fuzz ## run every fuzz target for FUZZ_SECS seconds (default 60), seeded from the golden files
fuzz: $(CARGO_FUZZ) build
	$(PY) fuzz/seed_corpus.py
	# cargo-fuzz passes unstable rustc flags; RUSTC_BOOTSTRAP lets the one stable toolchain accept them.
	for t in $(FUZZ_TARGETS); do \
		RUSTC_BOOTSTRAP=1 $(CARGO_FUZZ) run --sanitizer none $$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECS) -max_len=65536 -print_final_stats=1 || exit 1; \
	done

.PHONY: test ## build, then every test and linter, and a short fuzz run
test: build test-rust lint test-python
	$(MAKE) fuzz FUZZ_SECS=15

.PHONY: format ## apply rustfmt and ruff format
format: $(DEPS_STAMP)
	cargo fmt
	ruff format python tests benches fuzz
	ruff check --fix python tests benches fuzz

.PHONY: bench ## every benchmark at full size against the release build (~20 min on 2 cores): table, var/bench/
bench: build
	$(PY) -m benches.run

.PHONY: bench-quick ## the benchmarks at smoke-test sizes (BENCH_QUICK=1, under 3 min)
bench-quick: build
	BENCH_QUICK=1 $(PY) -m benches.run

SOAK_SECS ?= 600

.PHONY: soak ## a bounded soak: mixed gRPC + HTTP load on `serve` with Button faults for SOAK_SECS (default 600): a line every 10 s, JSON in var/bench/
soak: build
	SOAK_SECS=$(SOAK_SECS) $(PY) -m benches.soak

.PHONY: clean ## remove build products and the virtual environment
clean:
	rm -rf $(VENV) target python/button_sidecar/_core*.so $(PROTO_OUT)/*_pb2* $(PROTO_STAMP)

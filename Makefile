# `make test` and `make run` do all set-up on a fresh machine (Rust toolchain and Python 3.11 present).
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
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

.PHONY: lint-rust ## rustfmt check and clippy with warnings denied
lint-rust:
	cargo fmt --check
	cargo clippy --quiet --all-targets --features python -- -D warnings

.PHONY: lint-python ## ruff, mypy and stubtest against the built module
lint-python: build
	ruff check python tests benches
	ruff format --check python tests benches
	mypy
	$(PY) -m mypy.stubtest button_sidecar._core

.PHONY: lint ## every linter
lint: lint-rust lint-python

.PHONY: test-rust ## cargo test (pure core, no Python needed)
test-rust:
	cargo test --quiet

.PHONY: test-python ## pytest against the built extension
test-python: build
	$(PY) -m pytest -q

.PHONY: test ## build, then every test and linter
test: build test-rust lint test-python

.PHONY: format ## apply rustfmt and ruff format
format: $(DEPS_STAMP)
	cargo fmt
	ruff format python tests benches
	ruff check --fix python tests benches

.PHONY: clean ## remove build products and the virtual environment
clean:
	rm -rf $(VENV) target python/button_sidecar/_core*.so $(PROTO_OUT)/*_pb2* $(PROTO_STAMP)

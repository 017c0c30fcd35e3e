# tadsr-edge: `make demo` and `make test` set everything up first (cached).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
GPU ?= 0
CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tadsr-edge
VENV = $(CACHE)/venv-$(shell sha256sum export/requirements.txt | cut -c1-16)
PY = $(VENV)/bin/python
MODEL ?= models/tiny
BIN := target/release/tadsr-edge

.PHONY: setup build demo test test-rust test-python lint bench clean-out

setup:
	GPU=$(GPU) scripts/setup.sh >/dev/null

build: setup
	cargo build --release --locked

demo: build
	$(BIN) info --model $(MODEL)
	$(BIN) run examples/ -o out/ --model $(MODEL)
	@echo "demo: upscaled images are in out/"

test: setup
	cargo build --release --locked
	cargo test --release --locked
	$(PY) -m pytest -q export/tests
	cargo clippy --release --locked --all-targets -- -D warnings
	cargo fmt --all -- --check

bench: build
	cargo bench --locked

clean-out:
	rm -rf out

# tadsr-edge: `make demo` and `make test` set everything up first (cached).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
GPU ?= 0
CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tadsr-edge
VENV = $(CACHE)/venv-$(shell sha256sum export/requirements.txt | cut -c1-16)
PY = $(VENV)/bin/python
MODEL ?= models/nano
# cargo builds under $CARGO_TARGET_DIR when it is set
BIN := $(or $(CARGO_TARGET_DIR),target)/release/tadsr-edge

.PHONY: setup setup-runtime build demo test bench sd21 compare clean-out

# Everything: ONNX Runtime, the export venv (torch, ~3 GB once), rustfmt/clippy.
setup:
	GPU=$(GPU) scripts/setup.sh >/dev/null

# What running needs: ONNX Runtime only (no torch).
setup-runtime:
	GPU=$(GPU) RUNTIME_ONLY=1 scripts/setup.sh >/dev/null

build: setup-runtime
	cargo build --release --locked

demo: build
	$(BIN) info --model $(MODEL)
	$(BIN) run examples/ -o out/ --model $(MODEL)
	@echo "demo: upscaled images are in out/"

test: setup
	cargo build --release --locked
	cargo test --release --locked
	TADSR_EDGE_BIN=$(abspath $(BIN)) $(PY) -m pytest -q export/tests
	$(PY) -m ruff check export scripts tests/fixtures src/runtime
	cargo clippy --release --locked --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --release --locked --no-deps
	cargo fmt --all -- --check

bench: build
	cargo bench --locked

# SD-2.1-size random bundle for benchmarks (git-ignored, ~3.6 GB, ~90 s).
sd21: setup
	test -f models/sd21/manifest.json || $(PY) -m export --synthetic sd21 --seed 0 --out models/sd21

# PyTorch eager vs onnxruntime from Python vs tadsr-edge on models/sd21 (minutes).
compare: build sd21
	$(PY) scripts/compare_runtimes.py --bundle models/sd21 --threads 2 --repeats 3 --check

clean-out:
	rm -rf out

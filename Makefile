# Every target runs inside ./.venv, created on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
MODEL   ?= models/default
PIP     := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: help install install-build install-test demo serve convert train train-tiny lint test soak bench bench-quick bench-scale browser image image-arm64 clean

help:
	@echo "make demo     install, convert if stale, serve on :5000 and stream simulated readings (MODEL=dir: your own model)"
	@echo "make test     install everything, run make lint, then the test suite"
	@echo "make lint     ruff and mypy over edge/, convert/, simulator/, bench/"
	@echo "make serve    run the appliance (runtime only)"
	@echo "make convert  Keras + scalers in $(MODEL) -> ONNX + scalers.npz + manifest.json (only if a source changed)"
	@echo "make train    train the default model on simulated data (slow); train-tiny for a smoke run"
	@echo "make bench    benchmarks: prints a table, writes bench/results/latest.json and latest.md (bench-quick: <1 min smoke)"
	@echo "make bench-scale  what reads cost as the history grows to 10M readings (about 20 min)"
	@echo "make image    x86-64 container image; image-arm64 for a Raspberry Pi (buildx + qemu)"
	@echo "make soak     long reliability run (10 min by default)"
	@echo "make examples regenerate examples/ (reading.json, readings.ndjson, data.csv) from the simulator"

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade pip

# Stamps so each install re-runs only when the dependency files change.
$(VENV)/.runtime: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	@touch $@
$(VENV)/.build: $(VENV)/.runtime
	$(PIP) -e '.[build]'
	@touch $@
$(VENV)/.test: $(VENV)/.build
	$(PIP) -e '.[build,test,lint]'
	@touch $@

install: $(VENV)/.runtime
install-build: $(VENV)/.build
install-test: $(VENV)/.test

convert: $(VENV)/.runtime
	$(BIN)/fdedge convert --model-dir $(MODEL) --if-stale

# Training converts and benchmarks the new model itself.
train: $(VENV)/.build
	$(BIN)/fdedge train --model-dir $(MODEL)

train-tiny: $(VENV)/.build
	$(BIN)/fdedge train --model-dir /tmp/fdedge-tiny --rows 5000 --epochs 2 --width 32 --no-bench

serve: convert
	$(BIN)/fdedge serve --model-dir $(MODEL)

demo: convert
	$(BIN)/fdedge demo --model-dir $(MODEL)

# The request bodies the README's curl lines send; deterministic (fixed seeds and times).
.PHONY: examples
examples: $(VENV)/.runtime
	$(BIN)/python examples/make_examples.py

# Lint and types first: a ruff or mypy error fails `make test` (and so CI) before any test runs.
LINTED := edge convert simulator bench tests/test_layers.py
lint: $(VENV)/.test
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -m "not soak" $(PYTEST_ARGS)

soak: $(VENV)/.test
	$(BIN)/python -m pytest -m soak -p no:cacheprovider $(PYTEST_ARGS)

browser: $(VENV)/.test
	$(BIN)/python -m pytest -m browser $(PYTEST_ARGS)

# The appliance under test runs in a runtime-only venv, as the images install it: the dev venv's
# extras change what runtime libraries import (engineio's client takes `requests`: 5 MB of RSS).
RUNTIME_VENV := .venv-runtime
$(RUNTIME_VENV)/.runtime: pyproject.toml constraints.txt
	$(PY) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install --disable-pip-version-check -q -c constraints.txt -e .
	@touch $@

bench: $(VENV)/.test $(RUNTIME_VENV)/.runtime
	$(BIN)/python -m bench --runtime-python $(RUNTIME_VENV)/bin/python $(BENCH_ARGS)

bench-quick: $(VENV)/.test $(RUNTIME_VENV)/.runtime
	$(BIN)/python -m bench --quick --runtime-python $(RUNTIME_VENV)/bin/python $(BENCH_ARGS)

# The growth table up to 10M readings (116 days of 10 machines): about 20 minutes and 6 GB of disk.
bench-scale: $(VENV)/.test
	$(BIN)/python -m bench --sections scale --scale-sizes 10000,1000000,10000000 --name scale $(BENCH_ARGS)

image:
	docker build -t fdedge:latest .

image-arm64:
	docker buildx build --platform linux/arm64 -f Dockerfile.arm64 -t fdedge:arm64 --load .

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) .pytest_cache .hypothesis test-output

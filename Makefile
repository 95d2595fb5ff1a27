# bulkscribe — `make run` for a first result, `make test` for the whole suite.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
BIN     := $(VENV)/bin
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS := ffmpeg espeak-ng sox pocketsphinx-testdata systemd
DEMO    ?= demo

.PHONY: help deps install run test test-fast check bench services browser clean

help:
	@echo "make run     transcribe a generated demo manifest into $(DEMO)/out"
	@echo "make test    the whole test suite (real ffmpeg, model, Redis, PostgreSQL, Celery)"
	@echo "make check   ruff (lint, format) + mypy"
	@echo "make bench   benchmarks (tables of ratios, see bench/)"

# System packages: ffmpeg for media, espeak-ng to speak the demo and test audio,
# pocketsphinx-testdata for real recorded speech in the accuracy tests, systemd for
# `systemd-analyze verify` of deploy/systemd (the other deploy validators are PyPI packages).
deps:
	@missing=""; \
	for t in ffmpeg ffprobe espeak-ng sox systemd-analyze; do command -v $$t >/dev/null || missing=yes; done; \
	[ -d /usr/share/pocketsphinx/test/data/librivox ] || missing=yes; \
	if [ -n "$$missing" ]; then \
	  echo "installing $(APT_PKGS) with apt-get"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(APT_PKGS); \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: deps $(VENV)/.installed

run: install
	$(PY) -m pipeline.demo $(DEMO)
	$(BIN)/bulkscribe run $(DEMO)/manifest.jsonl --out $(DEMO)/out
	@echo; echo "transcripts are in $(DEMO)/out:"; ls $(DEMO)/out

# Redis and PostgreSQL for the distributed-mode tests; started only if not answering.
services:
	@bash .ci/services

# chromium: the console's browser tests drive Debian's build through Playwright.
browser:
	@command -v chromium >/dev/null || { echo "installing chromium with apt-get"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium; }

# Two processes, each taking whole test files (--dist loadfile): most tests wait on
# workers, servers and subprocesses, so two at once fill the two cores CI has.
test: install services browser
	$(BIN)/pytest -n 2 --dist loadfile

test-fast: install
	$(BIN)/pytest -m "not slow and not celery"

check: install
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/ruff check pipeline workers tests bench
	$(BIN)/ruff format --check pipeline workers tests bench
	$(BIN)/mypy pipeline workers

bench: install services
	$(PY) bench/preprocess_bench.py
	$(PY) bench/plan_bench.py
	$(PY) bench/engine_bench.py
	$(PY) bench/beam_bench.py
	$(PY) bench/emulator_bench.py
	$(PY) bench/dashscope_bench.py
	$(PY) bench/distributed_bench.py
	$(PY) bench/console_bench.py
	$(PY) bench/scale_bench.py

clean:
	rm -rf $(DEMO) .pytest_cache

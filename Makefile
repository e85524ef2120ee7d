# One way to build, test and lint: the README and .ci/run both call these.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup install browser redis test test-rust test-python splash-install test-e2e dist test-wheels bench bench-quick bench-overhead lint format demo clean

# The virtualenv with the build and test tools; redone when the list changes.
$(VENV)/.deps: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

setup: $(VENV)/.deps

# Builds the wheel (release) and installs it, as a user's `pip install .` does.
install: setup
	$(PY) -m pip install -q --no-build-isolation .

test-rust: redis
	cargo test --all-targets

# The shared fleet's tests (src/core/fleet_tests.rs) start Debian's
# redis-server on free loopback ports; installed when we may (root with apt),
# else those tests fail saying how to install it.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "redis-server is not installed and this is not root: the fleet's tests will fail"; fi; }

# The stats page's browser test drives Debian's Chromium; installed when we
# may (root with apt), else that one test is skipped locally (never in CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is not installed and this is not root: the browser test will be skipped"; fi; }

test-python: install browser redis
	$(PY) -m pytest

test: test-rust test-python

# Real Splash 3.5 without Docker: Debian's Qt packages and a venv under
# ~/.cache (idempotent; apt needs root).
splash-install:
	python3 scripts/splash.py install

# End-to-end tier: real crawls through real Splash nodes, with real faults
# (about 2 min, most of it waiting for Splash's 60 s --maxrss check).
test-e2e: install splash-install
	$(PY) -m pytest tests/e2e -q

# The release files in dist/: the sdist, and the abi3 wheel (cp310-abi3)
# that pip builds from that sdist, so each `make dist` proves the sdist whole
# and buildable with cargo. The build reuses the dependencies compiled in
# target/ (crates.io sources, fixed by Cargo.lock) but never this crate's:
# the sdist dates every file 2006, so cargo would take an older build of the
# crate for fresh. "pypi" keeps the manylinux tag that pip's builds drop.
dist: setup
	rm -rf dist
	$(VENV)/bin/maturin sdist --out dist
	cargo clean --release -p scrapy-splash-cluster --target-dir $(CURDIR)/target
	CARGO_TARGET_DIR=$(CURDIR)/target MATURIN_PEP517_ARGS="--compatibility pypi" \
	  $(PY) -m pip wheel -q --no-build-isolation --no-deps --no-cache-dir -w dist dist/*.tar.gz
	@ls -l dist

# That one wheel in a fresh venv of every CPython from 3.10 up (pyenv): the
# core's tests without Scrapy, then a real crawl with the newest Scrapy, the
# floors on 3.10; and the sdist without Rust (about 5 min). A missing Python
# is skipped locally and fails under CI=true.
test-wheels: dist
	$(PY) tests/wheel/matrix.py

# Side by side with scrapy-splash behind HAProxy and on one node, on mock
# nodes (needs haproxy; about 21 min); writes docs/benchmarks.md.
bench: setup
	$(PY) bench/run.py --repeats 3

bench-quick: setup
	$(PY) bench/run.py --quick

# The add-on's own cost per page against bare Scrapy on the same mock nodes
# (issue 15; about 7 min, no HAProxy); writes its section of docs/benchmarks.md.
# BEFORE=<site-packages of another build> crawls that build too.
bench-overhead: install
	$(PY) bench/overhead.py --repeats 5 $(if $(BEFORE),--before $(BEFORE) --before-label "$(BEFORE_LABEL)")

# README command one: a crawl through three mock Splash nodes, one killed mid-crawl.
demo: install
	$(PY) examples/run_demo.py

lint: install
	$(PY) -m mypy.stubtest scrapy_splash_cluster._core
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests scripts examples bench build_backend
	$(VENV)/bin/ruff format --check python tests scripts examples bench build_backend

format: setup
	cargo fmt
	$(VENV)/bin/ruff format python tests scripts examples bench build_backend
	$(VENV)/bin/ruff check --fix python tests scripts examples bench build_backend

clean:
	rm -rf $(VENV) target dist

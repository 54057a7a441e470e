# mor-workbench: set-up, demo and tests. Every target installs what it needs.
SHELL := /bin/bash
PY := .venv/bin/python
BIN := $(CURDIR)/node_modules/.bin
export PATH := $(BIN):$(PATH)

.PHONY: setup chromium demo test test-python test-notebooks test-contracts lint artifacts contracts-build bench bench-peers bench-speed

# Python virtual environment with the package and its dev tools.
.venv/installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Chain tools (forge, anvil, cast, solcjs) from npm, pinned by package-lock.json.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

setup: .venv/installed node_modules/.installed

# Debian's headless Chromium for the widget tests in a real browser (Playwright drives it).
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

contracts-build: node_modules/.installed
	cd contracts && forge build

test-contracts: node_modules/.installed
	cd contracts && forge test

# Regenerate the compiled contracts shipped inside the package.
artifacts: contracts-build .venv/installed
	$(PY) contracts/export_artifacts.py

lint: .venv/installed
	$(PY) -m ruff check mor_workbench tests bench contracts conftest.py
	$(PY) -m ruff format --check mor_workbench tests bench contracts conftest.py
	.venv/bin/lint-imports

test-python: .venv/installed node_modules/.installed chromium
	$(PY) -m pytest

# The notebooks run in an environment built the way Binder builds it (binder/requirements.txt,
# then binder/postBuild), plus only the test runner, so a dependency Binder lacks fails here.
.binder-venv/installed: binder/requirements.txt binder/postBuild pyproject.toml
	rm -rf .binder-venv && python3 -m venv .binder-venv
	.binder-venv/bin/python -m pip install -q --upgrade pip
	.binder-venv/bin/python -m pip install -q -r binder/requirements.txt
	PATH=$(CURDIR)/.binder-venv/bin:$$PATH bash binder/postBuild
	.binder-venv/bin/python -m pip install -q pytest nbval
	touch $@

test-notebooks: .binder-venv/installed node_modules/.installed
	.binder-venv/bin/python -m pytest -p no:cacheprovider -o addopts="-ra --nbval" notebooks

test: setup lint test-contracts test-python test-notebooks

demo: setup
	$(PY) -m mor_workbench.cli demo

# Every bench but those that install LiteLLM into a venv of their own (bench-peers, bench-speed).
bench: setup
	for b in bench/*.py; do case $$b in bench/peer_bench.py|bench/speed.py) continue;; esac; echo "== $$b"; $(PY) $$b || exit 1; done

# Our serve and wb.stream beside LiteLLM's proxy (in .bench-venvs/litellm) on one backend.
bench-peers: setup
	$(PY) bench/peer_bench.py

# Issue 16's figures in one run: per-chunk µs (live wire, fast channel), added latency of
# wb.stream, serve and LiteLLM's proxy at 1 and 50 concurrent, the 10,000-bid snapshot.
bench-speed: setup
	$(PY) bench/speed.py

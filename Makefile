# relaybot: `make run` starts the bot on embedded defaults; `make test` runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run chat test test-fast check bench system-deps install clean

install: $(STAMP)

# The main install is not --quiet: a silent minute looks like a hang; pip names each package it fetches.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "Installing relaybot and its dependencies into $(VENV) (about a minute the first time)..."
	$(PY) -m pip install -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: install
	$(VENV)/bin/relaybot run

chat: install
	$(VENV)/bin/relaybot chat

# Redis, PostgreSQL and Chromium are real parts of the tests: installed from Debian when missing.
system-deps:
	bash tests/support/install-system-deps.sh

test: install system-deps
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not browser and not postgres and not distributed"

check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install system-deps
	$(PY) bench/ws_throughput.py
	$(PY) bench/history_cost.py
	$(PY) bench/llm_overhead.py
	$(PY) bench/distributed_throughput.py
	$(PY) bench/redis_client.py
	$(PY) bench/slack_events.py
	$(PY) bench/slack_turns.py
	$(PY) bench/context_growth.py
	$(PY) bench/knowledge.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Rhythm: every target creates the virtual environment it needs by itself.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
RHYTHM := $(VENV)/bin/rhythm
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv test test-unit test-integration lint run bench kafka-fetch kafka-up kafka-down kafka-status clean

help:
	@echo "make run     - the main job on the embedded default (coming: see README)"
	@echo "make test    - lint, type-check, unit and integration tests on a real local Kafka"
	@echo "make bench   - benchmarks, written to BENCHMARKS.md"
	@echo "make kafka-up / kafka-down / kafka-status - the local single-node KRaft broker"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

kafka-fetch: $(STAMP)
	$(RHYTHM) kafka fetch

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: kafka-fetch
	$(PY) -m pytest tests/integration

# pytest exits 5 when it collected no test: that is a failure here, as any non-zero code.
test: lint kafka-fetch
	$(PY) -m pytest tests

kafka-up: kafka-fetch
	$(RHYTHM) kafka up

kafka-down: $(STAMP)
	$(RHYTHM) kafka down

kafka-status: $(STAMP)
	$(RHYTHM) kafka status

bench: kafka-fetch
	$(PY) -m bench.run

run: $(STAMP)
	@echo "make run: the full pipeline (processors, sink, simulator, report) is coming (issue 5)."
	@echo "Today: 'make kafka-up' starts the broker and 'rhythm ingest FILE.jsonl' publishes events."
	@exit 1

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Rhythm: every target creates the virtual environment it needs by itself.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
RHYTHM := $(VENV)/bin/rhythm
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv test test-unit test-integration test-faults test-scale lint run up down bench bench-smoke eval kafka-fetch kafka-up kafka-down kafka-status clean

help:
	@echo "make run     - the main job on the embedded default: simulate, process, report"
	@echo "make up / make down - the local stack (Kafka, processors, sink, Prometheus if installed) in the background"
	@echo "make test    - lint, type-check, unit and integration tests on a real local Kafka"
	@echo "make test-faults - the full fault and bad-input suite (tests/faults, long runs too)"
	@echo "make test-scale - a broker killed and workers rebalanced on a 3-node Kafka (slow)"
	@echo "make bench   - benchmarks, written to BENCHMARKS.md (RHYTHM_BENCH_* sizes: bench/README.md)"
	@echo "make bench-smoke - the benchmarks on small sizes, not written to BENCHMARKS.md"
	@echo "make eval    - alert precision/recall on large labelled scenarios -> docs/signals-quality.md"
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
	$(PY) -m pytest tests/unit -n 2

test-integration: kafka-fetch
	$(PY) -m pytest tests/integration

# pytest exits 5 when it collected no test: that is a failure here, as any non-zero code.
# The unit tests run in two processes (pytest-xdist: half the time on the two cores), the
# rest one at a time (they share the session's broker and measure wall-clock behaviour).
test: lint kafka-fetch
	$(PY) -m pytest tests/unit -m "not long" -n 2 --durations=5
	$(PY) -m pytest tests -m "not long" --ignore=tests/unit --durations=15

# The whole fault suite, the `long` tests included (200k events through kills, a broker
# restart and a ClickHouse outage; the client through a broker outage; the processors killed
# a dozen times mid-stream; the history lane's norms hand-off and a live stream beside a
# backfill, in wall-clock time): tens of minutes.
# The table it prints also goes to .rhythm/faults-report.md (for RELIABILITY.md).
test-faults: kafka-fetch
	RHYTHM_FAULTS_REPORT=$(RUN_HOME)/faults-report.md $(PY) -m pytest tests/faults \
		tests/integration/test_processors.py tests/integration/test_stack_supervisor.py \
		tests/integration/test_backfill.py \
		--timeout 5400

# Scale-out on a real 3-node Kafka cluster (minutes: three JVMs and several workers); not in
# `make test`, whose quick part covers the cluster's configuration (tests/unit).
test-scale: kafka-fetch
	RHYTHM_TEST_SCALE=1 $(PY) -m pytest -m scale tests/integration/test_scale_out.py

kafka-up: kafka-fetch
	$(RHYTHM) kafka up

kafka-down: $(STAMP)
	$(RHYTHM) kafka down

kafka-status: $(STAMP)
	$(RHYTHM) kafka status

bench: kafka-fetch
	$(PY) -m bench.run

# The same sections on small sizes (~20 min on a busy 2-core machine): checks the harness.
bench-smoke: kafka-fetch
	RHYTHM_BENCH_EVENTS=20000 RHYTHM_BENCH_PEER_SCALE=0.05 RHYTHM_BENCH_ROUNDS=1 \
	RHYTHM_BENCH_PROFILE_S=5 RHYTHM_BENCH_LIVE_S=20 \
	RHYTHM_BENCH_LIVE_ENTITIES=50 RHYTHM_BENCH_LANES_S=20 RHYTHM_BENCH_LANES_BACKFILL=5000 \
	RHYTHM_BENCH_SCALE_EVENTS=5000 RHYTHM_BENCH_SCALE_ENTITIES=500 \
	RHYTHM_BENCH_RECOVERY_ENTITIES=5000 RHYTHM_BENCH_COLLECTOR_EVENTS=20000 \
	RHYTHM_BENCH_WORKERS_SCALE=0.1 RHYTHM_BENCH_WORKERS_DAYS=7 RHYTHM_BENCH_WORKERS_ROUNDS=1 \
	RHYTHM_BENCH_COLLECTOR_LATENCY_S=5 RHYTHM_BENCH_COLLECTOR_ROUNDS=1 \
	RHYTHM_BENCH_RESULTS=bench/.work-smoke/results \
	RHYTHM_BENCH_HOME=bench/.work-smoke/run $(PY) -m bench.run --events 2000 --rounds 1

# The alert rules on three large labelled scenarios of the independent generator
# (tests/scenarios), in-process (about 3 minutes each): docs/signals-quality.md.
eval: $(STAMP)
	$(PY) -m bench.alert_quality

# The main job on the embedded default, from a clean slate each time: a fresh broker and
# store, a simulated month published first (a running pipeline whose watermark already
# follows the clock would rightly call a month-old replay late), then the processors, the
# sink and the notifier work through it, `rhythm sync` waits until it is all queryable and
# every alert routed, the report prints, and then the daily digest of one person (the
# manager of the first account that went quiet). The notifier mails through a local SMTP
# server (aiosmtpd) that keeps every message in the Maildir $(RUN_HOME)/mail.
# The stack stays up afterwards for exploring; `make down` stops it.
RUN_HOME := .rhythm
SCALE ?= 1.0
MAIL_PORT ?= 2525
MAIL_PID := $(RUN_HOME)/mail.pid
run: kafka-fetch
	-$(RHYTHM) down >/dev/null 2>&1
	-$(RHYTHM) kafka down >/dev/null 2>&1
	-test -f $(MAIL_PID) && kill $$(cat $(MAIL_PID)) 2>/dev/null
	rm -rf $(RUN_HOME)
	$(RHYTHM) kafka up
	$(RHYTHM) simulate --scale $(SCALE)
	mkdir -p $(RUN_HOME)/mail $(RUN_HOME)/logs
	$(PY) -m aiosmtpd -n -l 127.0.0.1:$(MAIL_PORT) -c aiosmtpd.handlers.Mailbox $(RUN_HOME)/mail \
		>$(RUN_HOME)/logs/mail.log 2>&1 & echo $$! > $(MAIL_PID)
	RHYTHM_NOTIFIER_SMTP_HOST=127.0.0.1 RHYTHM_NOTIFIER_SMTP_PORT=$(MAIL_PORT) \
		RHYTHM_NOTIFIER_SMTP_SECURITY=none $(RHYTHM) up
	$(RHYTHM) sync --timeout 540 --watermark-at-least -60 --notifier
	$(RHYTHM) report --html $(RUN_HOME)/report.html
	$(RHYTHM) digest --html $(RUN_HOME)/digest.html --for "$$($(PY) -c \
		'import json, sys; print(json.load(open(sys.argv[1]))["digest_for"])' $(RUN_HOME)/simulation.json)"
	@echo "The stack is still running: rhythm status | rhythm query \"SQL\" | make down"

up: kafka-fetch
	$(RHYTHM) up

down: $(STAMP)
	$(RHYTHM) down
	-test -f $(MAIL_PID) && kill $$(cat $(MAIL_PID)) 2>/dev/null && rm -f $(MAIL_PID)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

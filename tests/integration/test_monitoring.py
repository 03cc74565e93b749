"""The pipeline under a real Prometheus: the processors and the sink as `rhythm` processes on
the session broker, events published with the client (its metrics served from this process),
Prometheus scraping all three every second with the project's rules (shortened `for:`), and
an HTTP collector whose Kafka never answers.

Then: every dashboard expression and every rule expression evaluates without error and the
core panels have data; a processor blocked on its output (its internal updates topic
deleted) fails /healthz and fires RhythmConsumerStalled
from its own verdict; once the process is frozen (SIGSTOP) it fires again from Prometheus'
side (the scrape fails while input was waiting), and RhythmPipelineDown fires too. The
collector, its acknowledgements never coming, answers 503 (Kafka's timeout, then its buffer
full) and fires RhythmCollectorShedding and RhythmCollectorBufferFull."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from prometheus_client import start_http_server

from rhythm.stack import prometheus as prom
from rhythm.stack.kafka import LocalKafka
from rhythm.stack.ports import free_ports

from .test_sink_support import SinkProcess, event, make_topics, poll, publisher

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "rhythm.json"
# Grafana's variables, as Grafana would fill them in for a 1 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$__interval": "1s", "$__range": "5m"}
# The panels an on-call person reads first: every query in them must return data.
CORE_PANELS = {
    "Parts up",
    "Making progress",
    "Freshness p95 (events)",
    "Open alerts",
    "Throughput (events/s)",
    "Lag (messages waiting)",
    "Freshness (occurred_at to queryable)",
}
STALL_AFTER_S = 3


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, variables substituted."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    found = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"unsubstituted variable in {panel['title']!r}: {expr}"
            found.append((panel["title"], expr))
    return found


def now_event(i: int) -> dict[str, Any]:
    ts = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"
    return event(i, event_id=str(uuid.uuid4()), occurred_at=stamp)


def publish(bootstrap: str, topic: str, count: int, start: int = 0) -> None:
    with publisher(bootstrap, topic) as client:
        for i in range(start, start + count):
            client.send(now_event(i))
        assert client.flush(30) == 0


def http_status(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except OSError:
        return 0, {}


def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics([topic]).values():
        future.result(30)


@contextlib.contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def collector_without_kafka(tmp_path: Path, port: int) -> tuple[list[str], dict[str, str], str]:
    """`rhythm collector` whose bootstrap is a port nobody listens on: whatever it sends
    waits in its buffer (for ten minutes), so requests time out after 1 s and, once 20
    events wait, are refused as buffer_full. Returns argv, env and a write key."""
    (nobody,) = free_ports(1)
    env = dict(
        os.environ,
        RHYTHM_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{nobody}",
        RHYTHM_CLIENT_DELIVERY_TIMEOUT_MS="600000",
        RHYTHM_COLLECTOR_PORT=str(port),
        RHYTHM_COLLECTOR_KEYS_FILE=str(tmp_path / "collector-keys.json"),
        RHYTHM_COLLECTOR_BUFFER_MAX_EVENTS="20",
        RHYTHM_COLLECTOR_ACK_TIMEOUT_S="1",
    )
    cli = [sys.executable, "-m", "rhythm.stack.cli"]
    created = subprocess.run(
        [*cli, "keys", "create", "acme"], env=env, capture_output=True, text=True, check=True
    )
    return [*cli, "collector"], env, json.loads(created.stdout)["key"]


def post_batch(port: int, key: str, n: int) -> int:
    """A Segment batch of `n` events to the collector; its status."""
    body = json.dumps(
        {"batch": [{"type": "track", "userId": f"u{i}", "event": "Viewed"} for i in range(n)]}
    ).encode()
    token = base64.b64encode(f"{key}:".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/batch",
        data=body,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def firing(port: int, alertname: str, **labels: str) -> list[dict[str, Any]]:
    alerts = prom.query(port, "/api/v1/alerts")["data"]["alerts"]
    return [
        a
        for a in alerts
        if a["labels"].get("alertname") == alertname
        and a["state"] == "firing"
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def test_dashboard_and_alerts_against_a_real_prometheus(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    if prom.binary() is None:
        pytest.fail("prometheus is not installed: `apt-get install prometheus` (CI does)")
    bootstrap = kafka_broker.bootstrap
    topics = make_topics(kafka_broker, "monitoring")
    updates = f"upd.{topics.events}"
    proc_port, client_port, prom_port, collector_port = free_ports(4)
    name = f"mon-{uuid.uuid4().hex[:8]}"
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        RHYTHM_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        RHYTHM_PROCESSOR_APP_ID=name,
        RHYTHM_PROCESSOR_DATA_DIR=str(tmp_path / "state"),
        RHYTHM_PROCESSOR_EVENTS_TOPIC=topics.events,
        RHYTHM_PROCESSOR_UPDATES_TOPIC=updates,
        RHYTHM_PROCESSOR_SIGNALS_TOPIC=topics.signals,
        RHYTHM_PROCESSOR_ALERTS_TOPIC=topics.alerts,
        RHYTHM_PROCESSOR_DEAD_LETTERS_TOPIC=topics.dead_letters,
        RHYTHM_PROCESSOR_UPDATES_PARTITIONS="2",
        RHYTHM_PROCESSOR_WEB_PORT="0",
        RHYTHM_PROCESSOR_METRICS_PORT=str(proc_port),
        RHYTHM_PROCESSOR_SESSION_TIMEOUT_S="6",
        RHYTHM_PROCESSOR_TICK_S="0.5",
        RHYTHM_PROCESSOR_IDLE_AFTER_S="3",
        RHYTHM_PROCESSOR_STALL_AFTER_S=str(STALL_AFTER_S),
        RHYTHM_PROCESSOR_HEALTH_CHECK_S="1",
    )
    processors = [sys.executable, "-m", "rhythm.stack.cli", "processors"]
    sink = SinkProcess(
        bootstrap, topics, tmp_path / "sink", f"{name}-sink", stall_after_s=STALL_AFTER_S
    )
    sink.workdir.mkdir()
    collector_argv, collector_env, collector_key = collector_without_kafka(tmp_path, collector_port)
    client_server, _thread = start_http_server(client_port, "127.0.0.1")
    config = prom.write_config(
        tmp_path / "prometheus",
        prom.render_config(
            processors=[f"127.0.0.1:{proc_port}"],
            sinks=[f"127.0.0.1:{sink.metrics_port}"],
            clients=(f"127.0.0.1:{client_port}",),
            collectors=(f"127.0.0.1:{collector_port}",),
            prometheus=f"127.0.0.1:{prom_port}",
            scrape_interval="1s",
            scrape_timeout="1s",
            evaluation_interval="1s",
        ),
        prom.rules_text(for_override="2s"),
    )
    prom_argv = prom.command(
        str(prom.binary()), config, tmp_path / "prometheus" / "data", prom_port
    )
    proc_url = f"http://127.0.0.1:{proc_port}"
    try:
        with (
            process(processors, env, tmp_path / "processors.log") as worker,
            process(prom_argv, dict(os.environ), tmp_path / "prometheus.log"),
            process(collector_argv, collector_env, tmp_path / "collector.log"),
        ):
            sink.start()
            assert prom.wait_ready(prom_port, 60), (tmp_path / "prometheus.log").read_text()
            poll(lambda: http_status(proc_url + "/readyz")[0] == 200, 90, "processors ready")
            publish(bootstrap, topics.events, 300)

            # -- healthy: every expression evaluates, the core panels have data ------------
            def events_written() -> bool:
                r = prom.query(
                    prom_port,
                    "/api/v1/query",
                    query='sum(rhythm_sink_rows_written_total{table="events"})',
                )["data"]["result"]
                return bool(r) and float(r[0]["value"][1]) >= 300

            poll(events_written, 60, "Prometheus to see 300 events written by the sink")
            assert http_status(proc_url + "/healthz")[0] == 200
            # The metrics the issue names that no panel above needs to show have data too.
            # Each from its own job: the test's client endpoint serves this pytest process's
            # default registry, which holds the processors' metrics (at 0) once any test
            # module has imported them.
            for expr in (
                'rhythm_processor_recovery_seconds_count{job="rhythm-processors"}',  # start
                f'rhythm_processor_committed_offset{{job="rhythm-processors",'
                f'topic="{topics.events}"}}',
                'rhythm_sink_freshness_seconds_count{job="rhythm-sink",table="events"}',
            ):

                def positive(expr: str = expr) -> bool:
                    answer = prom.query(prom_port, "/api/v1/query", query=expr)
                    result = answer["data"]["result"]
                    return bool(result) and all(float(r["value"][1]) > 0 for r in result)

                poll(positive, 30, f"data for {expr}", interval=0.5)
            assert http_status(f"http://127.0.0.1:{sink.metrics_port}/healthz")[0] == 200
            assert http_status(f"http://127.0.0.1:{sink.metrics_port}/readyz")[0] == 200

            rules = [
                (rule["name"], rule["query"])
                for group in prom.query(prom_port, "/api/v1/rules")["data"]["groups"]
                for rule in group["rules"]
            ]
            assert {"RhythmConsumerStalled", "RhythmPipelineDown"} <= {n for n, _ in rules}
            for rule_name, expr in rules:
                answer = prom.query(prom_port, "/api/v1/query", query=expr)
                assert answer["status"] == "success", (rule_name, expr, answer)

            def empty_core_queries() -> list[tuple[str, str]]:
                empty = []
                for title, expr in dashboard_queries():
                    answer = prom.query(prom_port, "/api/v1/query", query=expr)
                    assert answer["status"] == "success", (title, expr, answer)
                    if title in CORE_PANELS and not answer["data"]["result"]:
                        empty.append((title, expr))
                return empty

            deadline = time.monotonic() + 30
            while (empty := empty_core_queries()) and time.monotonic() < deadline:
                time.sleep(1)
            assert not empty, f"core panel queries without data: {empty}"

            # -- a collector whose Kafka never acknowledges: 503s, its buffer full ----------
            collector_url = f"http://127.0.0.1:{collector_port}"
            poll(lambda: http_status(collector_url + "/healthz")[0] == 200, 60, "the collector")
            assert http_status(collector_url + "/readyz")[0] == 503  # Kafka not reached
            statuses = [post_batch(collector_port, collector_key, 10) for _ in range(4)]
            # Two batches wait for Kafka (timing out: 503) and fill the buffer of 20; the
            # next are refused at once (503 buffer_full).
            assert statuses == [503] * 4, statuses
            assert not firing(prom_port, "RhythmCollectorShedding")

            def shedding() -> list[dict[str, Any]]:
                post_batch(collector_port, collector_key, 10)
                return firing(prom_port, "RhythmCollectorShedding", job="rhythm-collector")

            poll(shedding, 60, "RhythmCollectorShedding", interval=0.5)
            poll(
                lambda: firing(prom_port, "RhythmCollectorBufferFull", job="rhythm-collector"),
                60,
                "RhythmCollectorBufferFull",
            )
            rejects = prom.query(
                prom_port,
                "/api/v1/query",
                query='sum by (reason) (rhythm_collector_rejects_total{job="rhythm-collector"})',
            )["data"]["result"]
            reasons = {r["metric"]["reason"]: float(r["value"][1]) for r in rejects}
            assert reasons.get("kafka_timeout") == 2 and reasons.get("buffer_full", 0) >= 2, reasons

            # -- a processor blocked on its output: /healthz fails, the alert fires --------
            # Its internal topic deleted (the broker creates no topics by itself), stage 1
            # waits for it to come back: input waits, nothing moves, the process is fine.
            delete_topic(bootstrap, updates)
            publish(bootstrap, topics.events, 200, start=300)

            def failing_verdict() -> dict[str, Any] | None:
                code, body = http_status(proc_url + "/healthz")
                return body if code == 503 else None

            verdict = poll(failing_verdict, 60, "the blocked processor's /healthz to fail")
            assert verdict["waiting"] > 0 and "no progress" in verdict["reason"], verdict
            poll(
                lambda: firing(prom_port, "RhythmConsumerStalled", component="processors"),
                60,
                "RhythmConsumerStalled from the processor's own verdict",
            )
            assert not firing(prom_port, "RhythmConsumerStalled", job="rhythm-sink")

            # -- the process frozen: no scrape, input waiting -> stalled and down ----------
            os.killpg(worker.pid, signal.SIGSTOP)

            def stalled_by_scrape() -> bool:
                return any(
                    "component" not in a["labels"]
                    for a in firing(prom_port, "RhythmConsumerStalled", job="rhythm-processors")
                )

            poll(stalled_by_scrape, 60, "RhythmConsumerStalled for the frozen processor")
            poll(
                lambda: firing(prom_port, "RhythmPipelineDown", job="rhythm-processors"),
                60,
                "RhythmPipelineDown for the frozen processor",
            )
    finally:
        client_server.shutdown()
        client_server.server_close()
        sink.close()

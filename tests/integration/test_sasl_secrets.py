"""The SASL password against a real broker that checks it: a local Kafka with a
SASL_PLAINTEXT listener (PLAIN, Kafka's static JAAS users; rhythm.stack.kafka's
`sasl_users`). With the right password the client, `rhythm ingest`, `rhythm tail` and the
sink produce and consume through that listener; with a wrong one they fail. Then the password
(and the wrong one) is in none of their output, logs, /metrics, `rhythm sync` output, the
sink's status, and the exception messages of the failures.

The processors likewise (their aiokafka clients through faust.SASLCredentials).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import REGISTRY, generate_latest

from rhythm.producers import Client, ClientSettings, KafkaSettings
from rhythm.runtime.process import stop_group
from rhythm.schemas.topics import TopicSpec
from rhythm.stack.kafka import LocalKafka, LocalKafkaSettings, stop_orphans
from rhythm.stack.ports import free_ports

from .test_processors import Pipeline
from .test_sink_support import RHYTHM, SinkProcess, Topics, event

pytestmark = pytest.mark.integration

USER = "rhythm-svc"


class SaslBroker:
    def __init__(self, broker: LocalKafka, password: str) -> None:
        self.broker = broker
        self.password = password

    def env(self, password: str | None = None, **extra: str) -> dict[str, str]:
        """A component's environment for the SASL listener (`password`: another one)."""
        return (
            os.environ
            | {
                "RHYTHM_KAFKA_BOOTSTRAP_SERVERS": self.broker.sasl_bootstrap,
                "RHYTHM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "RHYTHM_KAFKA_SASL_MECHANISM": "PLAIN",
                "RHYTHM_KAFKA_SASL_USERNAME": USER,
                "RHYTHM_KAFKA_SASL_PASSWORD": self.password if password is None else password,
            }
            | extra
        )

    def settings(self, password: str | None = None) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=self.broker.sasl_bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username=USER,
            sasl_password=self.password if password is None else password,
        )


@pytest.fixture(scope="module")
def sasl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    stop_orphans()
    password = f"sasl-{uuid.uuid4().hex}"
    broker = LocalKafka(
        LocalKafkaSettings(
            home=tmp_path_factory.mktemp("kafka-sasl"),
            port=0,
            controller_port=0,
            sasl_users={USER: password},
        ),
        owned=True,
    )
    try:
        broker.up([])
        yield SaslBroker(broker, password)
    finally:
        broker.down()


def _run(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RHYTHM, *args], env=env, capture_output=True, text=True, timeout=timeout
    )  # fmt: skip


def _absent(secrets: list[str], where: dict[str, str]) -> None:
    for name, text in where.items():
        for secret in secrets:
            assert secret not in text, f"the password is in {name}"


def test_the_password_opens_the_listener_and_is_shown_nowhere(
    sasl: SaslBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    secrets = [sasl.password, wrong]
    topic = f"sasl.{uuid.uuid4().hex[:8]}"
    sasl.broker.create_topics([TopicSpec(topic, 2, {})])
    shown: dict[str, str] = {}

    # The client library, in this process: delivered with the password, not without it.
    caplog.set_level(logging.DEBUG)
    client = Client(ClientSettings(kafka=sasl.settings(), topic=topic, linger_ms=5))
    try:
        for i in range(5):
            client.send(event(i))
        assert client.flush(60) == 0
    finally:
        client.close()
    failures: list[str] = []
    refused = Client(
        ClientSettings(
            kafka=sasl.settings(wrong), topic=topic, linger_ms=5, delivery_timeout_ms=5000
        ),
        on_error=lambda ev, reason: failures.append(f"{ev['event_id']}: {reason}"),
    )
    try:
        refused.send(event(100))
        refused.flush(20)
    finally:
        refused.close()
    assert len(failures) == 1, failures  # not delivered with the wrong password
    shown["the client's on_error reasons"] = "\n".join(failures)
    shown["this process's log records"] = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    )
    shown["the client's /metrics (default registry)"] = generate_latest(REGISTRY).decode()
    shown["the client settings' repr"] = repr(sasl.settings()) + str(sasl.settings().model_dump())

    # rhythm ingest and rhythm tail, as a person runs them.
    lines = tmp_path / "events.jsonl"
    lines.write_text("".join(json.dumps(event(i)) + "\n" for i in range(10, 13)))
    ingested = _run(["ingest", str(lines), "--topic", topic], sasl.env())
    assert ingested.returncode == 0, ingested.stderr
    tailed = _run(
        ["tail", topic, "--from-beginning", "--limit", "8", "--idle-timeout", "30"], sasl.env()
    )
    assert tailed.returncode == 0, tailed.stderr
    got = {json.loads(line)["value"]["event_id"] for line in tailed.stdout.splitlines()}
    assert got == {event(i)["event_id"] for i in [*range(5), *range(10, 13)]}
    refused_ingest = _run(
        ["ingest", str(lines), "--topic", topic],
        sasl.env(wrong, RHYTHM_CLIENT_DELIVERY_TIMEOUT_MS="5000"),
    )
    assert refused_ingest.returncode == 2, refused_ingest.stderr  # valid, but not delivered
    refused_tail = _run(["tail", topic, "--from-beginning", "--limit", "1"], sasl.env(wrong))
    assert refused_tail.returncode != 0 and refused_tail.stdout == ""
    assert "Authentication failed" in refused_tail.stderr  # the broker's own refusal
    for name, run in {
        "ingest": ingested,
        "tail": tailed,
        "ingest (wrong password)": refused_ingest,
        "tail (wrong password)": refused_tail,
    }.items():
        shown[f"rhythm {name} stdout"] = run.stdout
        shown[f"rhythm {name} stderr (its exception too)"] = run.stderr

    # The sink consumes through the SASL listener; its log, /metrics, status, rhythm sync.
    topics = Topics(
        topic, f"sig.{topic}", f"al.{topic}", f"dl.{topic}"
    )  # fmt: skip
    sasl.broker.create_topics(
        [TopicSpec(t, 1, {}) for t in (topics.signals, topics.alerts, topics.dead_letters)]
    )
    sink = SinkProcess(sasl.broker.bootstrap, topics, tmp_path, f"sink-{uuid.uuid4().hex[:6]}")
    sink.env.update(sasl.env(RHYTHM_SINK_LOG_LEVEL="debug"))
    sink.env["RHYTHM_SINK_DSN"] = f"chdb://{sink.store}"
    try:
        sink.start(120)
        assert sink.sync(120), sink.log()[-3000:]  # (read through the PLAINTEXT listener)
        assert sink.scalar("SELECT uniqExact(event_id) FROM rhythm.events") == 8
        synced = _run(["sync", "--sink-only", "--timeout", "60"], sink.env)
        assert synced.returncode == 0, synced.stderr
        shown["rhythm sync output"] = synced.stdout + synced.stderr
        shown["the sink's /metrics"] = sink.metrics()
        shown["the sink's status"] = json.dumps(sink.status())
        assert sink.stop() == 0
    finally:
        sink.close()
    shown["the sink's log"] = sink.log()
    assert f"{USER}" not in shown["the sink's /metrics"]  # no credentials in labels at all

    _absent(secrets, shown)
    # and it looked at something: what must say something did
    must_say = [n for n in shown if "stdout" not in n and "stderr" not in n]
    must_say += [n for n in shown if "wrong password) stderr" in n]
    assert [n for n in must_say if not shown[n]] == []


def test_the_processors_connect_with_the_password_and_show_it_nowhere(
    sasl: SaslBroker, tmp_path: Path
) -> None:
    """The processors' aiokafka clients (faust.SASLCredentials) and their librdkafka ones (end
    offsets, topic set-up) through the SASL listener: every event is taken and committed with
    the password; with a wrong one the worker takes nothing; neither password is in the
    worker's output or its /metrics."""
    wrong = f"wrong-{uuid.uuid4().hex}"
    n = 40

    def worker(name: str, password: str) -> tuple[Pipeline, subprocess.Popen[bytes], int]:
        pipeline = Pipeline(sasl.broker.bootstrap, name, tmp_path / name)  # test side: PLAINTEXT
        pipeline.home.mkdir()
        pipeline.create_topics()
        pipeline.send([event(i) for i in range(n)])
        metrics_port = free_ports(1)[0]
        env = pipeline.env() | sasl.env(
            password,
            RHYTHM_PROCESSOR_METRICS_PORT=str(metrics_port),
            RHYTHM_PROCESSOR_LOG_LEVEL="info",
        )
        log = (pipeline.home / "processor.log").open("ab")
        proc = subprocess.Popen(
            [*RHYTHM, "processors"], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        return pipeline, proc, metrics_port

    def committed(pipeline: Pipeline) -> int:
        consumer = Consumer({"bootstrap.servers": sasl.broker.bootstrap, "group.id": pipeline.name})
        try:
            tps = [TopicPartition(pipeline.topics["events"], p) for p in range(4)]
            return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
        finally:
            consumer.close()

    shown: dict[str, str] = {}
    good, proc, port = worker(f"sasl-ok-{uuid.uuid4().hex[:6]}", sasl.password)
    try:
        deadline = time.monotonic() + 240
        while committed(good) < n:  # taken and committed, through the SASL listener
            assert proc.poll() is None, (good.home / "processor.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (good.home / "processor.log").read_text()[-3000:]
            time.sleep(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            shown["the processors' /metrics"] = r.read().decode()
        assert "rhythm_processor_events_total" in shown["the processors' /metrics"]
    finally:
        stop_group(proc, 60.0)
    shown["the processors' output"] = (good.home / "processor.log").read_text(errors="replace")

    bad, proc, _ = worker(f"sasl-bad-{uuid.uuid4().hex[:6]}", wrong)
    try:
        log_path = bad.home / "processor.log"
        deadline = time.monotonic() + 120
        while "Authentication failed" not in log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
            time.sleep(1)
        assert committed(bad) == 0  # took nothing
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)
    shown["the refused processors' output (exceptions too)"] = log_path.read_text(errors="replace")
    _absent([sasl.password, wrong], shown)

"""The local Kafka broker for real: topics, a round trip, restarts keeping data, perf tools."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from rhythm.schemas.topics import DEFAULT_TOPICS, TopicSpec
from rhythm.stack.cli.kafka import app
from rhythm.stack.kafka import LocalKafka, LocalKafkaError, LocalKafkaSettings

pytestmark = pytest.mark.integration

EVENTS_TOPIC = "rhythm.events"


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    for key, value in messages:
        producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "messages still queued after 30 s"
    assert failures == []


def consume(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    """Values of `topic` read from the beginning by a fresh group, until `expected` arrived."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    values: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(values) < expected and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                assert message.error() is None, message.error()
                value = message.value()
                assert value is not None
                values.append(value)
    finally:
        consumer.close()
    return values


def test_default_topics_exist_with_their_partition_counts(kafka_broker: LocalKafka) -> None:
    metadata = AdminClient({"bootstrap.servers": kafka_broker.bootstrap}).list_topics(timeout=10)
    for spec in DEFAULT_TOPICS:
        assert spec.name in metadata.topics
        assert len(metadata.topics[spec.name].partitions) == spec.partitions
    assert len(metadata.topics[EVENTS_TOPIC].partitions) >= 4
    assert len(metadata.brokers) == 1


def test_creating_topics_again_is_a_no_op(kafka_broker: LocalKafka) -> None:
    assert kafka_broker.create_topics(DEFAULT_TOPICS) == []
    assert kafka_broker.up(DEFAULT_TOPICS) == kafka_broker.bootstrap  # reuses the running one


def test_produce_consume_round_trip(kafka_broker: LocalKafka, topic: str) -> None:
    sent = [(f"k{i % 10}".encode(), f"v{i}".encode()) for i in range(500)]
    produce(kafka_broker.bootstrap, topic, sent)
    received = consume(kafka_broker.bootstrap, topic, len(sent))
    assert sorted(received) == sorted(value for _, value in sent)


def test_status_of_the_running_broker(kafka_broker: LocalKafka, topic: str) -> None:
    status = kafka_broker.status()
    assert status["running"] is True
    assert status["bootstrap"] == kafka_broker.bootstrap
    assert status["version"] == "4.1.2"
    assert status["topics"][topic] == 4
    assert status["topics"][EVENTS_TOPIC] >= 4
    assert not any(name.startswith("__") for name in status["topics"])


def test_stop_and_start_keep_the_data(tmp_path: Path) -> None:
    home = tmp_path / "kafka"
    broker = LocalKafka(LocalKafkaSettings(home=home, port=0, controller_port=0))
    topic = TopicSpec("restart.test", 2, {})
    try:
        bootstrap = broker.up([topic])
        produce(bootstrap, topic.name, [(b"k", b"before-down")])

        # Another instance for the same home (as `rhythm kafka status` in another process)
        # finds the running broker and its port, whatever its own port settings say.
        assert LocalKafka(LocalKafkaSettings(home=home)).status()["bootstrap"] == bootstrap

        assert broker.down() is True
        status = broker.status()
        assert status["running"] is False
        assert status["pid"] is None
        assert status["topics"] == {}
        assert not broker.pid_file.exists()
        assert broker.down() is False  # no-op when stopped

        assert broker.up(()) == bootstrap  # same home, same ports
        assert broker.status()["running"] is True
        assert consume(bootstrap, topic.name, 1) == [b"before-down"]

        # A hard kill (no controlled shutdown) loses no acknowledged message either.
        produce(bootstrap, topic.name, [(b"k", b"before-kill")])
        assert broker.kill() is True
        assert broker.is_running() is False
        assert broker.restart() == bootstrap
        assert sorted(consume(bootstrap, topic.name, 2)) == [b"before-down", b"before-kill"]
    finally:
        broker.down()
    assert broker.status()["running"] is False


def test_perf_tools_run_against_the_broker(kafka_broker: LocalKafka, topic: str) -> None:
    produced = kafka_broker.producer_perf(topic, num_records=20_000, record_size=100)
    assert produced["records"] == 20_000
    assert produced["records_per_s"] > 0
    assert produced["mb_per_s"] > 0
    assert 0 <= produced["p50_ms"] <= produced["p99_ms"] <= produced["max_latency_ms"]

    consumed = kafka_broker.consumer_perf(topic, messages=20_000)
    assert consumed["records"] == 20_000
    assert consumed["records_per_s"] > 0
    assert consumed["mb_per_s"] > 0
    assert consumed["mb"] == pytest.approx(20_000 * 100 / 1024 / 1024, rel=0.01)


def test_a_port_in_use_is_a_clear_error(kafka_broker: LocalKafka, tmp_path: Path) -> None:
    other = LocalKafka(
        LocalKafkaSettings(home=tmp_path / "kafka", port=kafka_broker.port, controller_port=0)
    )
    with pytest.raises(LocalKafkaError, match="already in use"):
        other.up(())
    assert not other.pid_file.exists()


def test_cli_status_and_errors(kafka_broker: LocalKafka, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["status", "--json", "--home", str(kafka_broker.home)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bootstrap"] == kafka_broker.bootstrap

    result = runner.invoke(app, ["status", "--home", str(tmp_path / "nothing")])
    assert result.exit_code == 3
    assert "stopped" in result.stdout

    busy = str(kafka_broker.port)
    home = str(tmp_path / "busy")
    result = runner.invoke(app, ["up", "--port", busy, "--controller-port", "0", "--home", home])
    assert result.exit_code == 1
    assert "already in use" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)

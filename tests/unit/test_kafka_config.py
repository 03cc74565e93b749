"""The local broker's configuration, without a broker: settings, server.properties, tool output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rhythm.stack.kafka import (
    LocalKafka,
    LocalKafkaError,
    LocalKafkaSettings,
    parse_consumer_perf,
    parse_producer_perf,
    render_server_properties,
)
from rhythm.stack.kafka.settings import FETCH_MARKER


def parse_properties(text: str) -> dict[str, str]:
    """java.util.Properties, as far as our template needs: later keys win."""
    props: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "RHYTHM_CACHE_DIR",
        "RHYTHM_KAFKA_LOCAL_CACHE_DIR",
        "RHYTHM_KAFKA_LOCAL_HOME",
        "RHYTHM_KAFKA_LOCAL_PORT",
        "RHYTHM_KAFKA_LOCAL_CONTROLLER_PORT",
        "RHYTHM_KAFKA_LOCAL_EXTRA_PROPERTIES",
        "RHYTHM_KAFKA_LOCAL_JVM_OPTIONS",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = LocalKafkaSettings()
    assert settings.version == "4.1.2"
    assert settings.cache_dir == Path.home() / ".cache" / "rhythm"
    assert settings.home.parts[-2:] == (".rhythm", "kafka")
    assert (settings.host, settings.port, settings.controller_port) == ("127.0.0.1", 9092, 9093)
    assert settings.heap == "512m"
    assert settings.start_timeout_s == 60
    # Kafka's own start script's GC options (G1, a 20 ms pause goal)
    assert "-XX:MaxGCPauseMillis=20" in settings.jvm_options


def test_environment(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("RHYTHM_CACHE_DIR", str(tmp_path / "shared"))
    clean_env.setenv("RHYTHM_KAFKA_LOCAL_PORT", "19092")
    clean_env.setenv("RHYTHM_KAFKA_LOCAL_HOME", str(tmp_path / "home"))
    clean_env.setenv("RHYTHM_KAFKA_LOCAL_EXTRA_PROPERTIES", '{"log.retention.ms": "60000"}')
    settings = LocalKafkaSettings()
    assert settings.cache_dir == tmp_path / "shared"
    assert settings.port == 19092
    assert settings.home == tmp_path / "home"
    assert settings.extra_properties == {"log.retention.ms": "60000"}
    clean_env.setenv("RHYTHM_KAFKA_LOCAL_JVM_OPTIONS", "[]")
    assert LocalKafkaSettings().jvm_options == []
    assert LocalKafka(settings).lib_dir == tmp_path / "shared" / "kafka-4.1.2" / "lib"

    clean_env.setenv("RHYTHM_KAFKA_LOCAL_CACHE_DIR", str(tmp_path / "mine"))
    assert LocalKafkaSettings().cache_dir == tmp_path / "mine"


@pytest.mark.parametrize(
    "overrides",
    [{"heap": "lots"}, {"port": 70000}, {"port": 9092, "controller_port": 9092}],
)
def test_invalid_settings(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LocalKafkaSettings.model_validate(overrides)


def test_server_properties(tmp_path: Path) -> None:
    settings = LocalKafkaSettings(home=tmp_path, port=19092, controller_port=19093, node_id=3)
    text = render_server_properties(settings)
    assert "${" not in text
    props = parse_properties(text)
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "3"
    assert props["controller.quorum.voters"] == "3@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["log.dirs"] == str(tmp_path / "data")
    # One node: every internal topic must be satisfiable with a single replica.
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_server_properties_explicit_ports_and_extras(tmp_path: Path) -> None:
    settings = LocalKafkaSettings(
        home=tmp_path,
        port=0,
        controller_port=0,
        extra_properties={"num.partitions": "8", "log.retention.ms": "60000"},
    )
    with pytest.raises(ValueError, match="concrete ports"):
        render_server_properties(settings)
    props = parse_properties(
        render_server_properties(settings, port=40001, controller_port=40002, log_dir=tmp_path)
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:40001,CONTROLLER://127.0.0.1:40002"
    assert props["log.dirs"] == str(tmp_path)
    assert props["num.partitions"] == "8"  # extras win over the template
    assert props["log.retention.ms"] == "60000"


def test_fetch_is_a_marker_check_when_cached(tmp_path: Path) -> None:
    settings = LocalKafkaSettings(cache_dir=tmp_path, mvn="no-such-mvn", home=tmp_path / "h")
    kafka = LocalKafka(settings)
    with pytest.raises(LocalKafkaError, match="Maven"):
        kafka.fetch()
    kafka.lib_dir.mkdir(parents=True)
    (kafka.lib_dir / FETCH_MARKER).write_text(json.dumps({"version": "4.1.2"}))
    assert kafka.fetch() == tmp_path / "kafka-4.1.2" / "lib"  # mvn is not needed any more


def test_missing_java_is_a_clear_error(tmp_path: Path) -> None:
    settings = LocalKafkaSettings(cache_dir=tmp_path, java="no-such-java", home=tmp_path / "h")
    with pytest.raises(LocalKafkaError, match="Java"):
        LocalKafka(settings).fetch()


def test_status_without_a_broker(tmp_path: Path) -> None:
    kafka = LocalKafka(LocalKafkaSettings(home=tmp_path, port=0, controller_port=0))
    status = kafka.status()
    assert status["running"] is False
    assert status["pid"] is None
    assert status["topics"] == {}
    assert kafka.down() is False
    assert kafka.kill() is False
    with pytest.raises(LocalKafkaError, match="no broker is running"):
        kafka.producer_perf("t", 10, 10)


PRODUCER_OUTPUT = """\
7469 records sent, 1493.5 records/sec (0.14 MB/sec), 1077.2 ms avg latency, 1563.0 ms max latency.
20000 records sent, 6276.2 records/sec (0.60 MB/sec), 129.30 ms avg latency, 433.00 ms max \
latency, 129 ms 50th, 141 ms 95th, 142 ms 99th, 147 ms 99.9th.
"""

CONSUMER_OUTPUT = """\
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, \
rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
WARNING: Exiting before consuming the expected number of messages: timeout (2000 ms) exceeded.
2026-11-22 00:34:42:694, 2026-11-22 00:34:45:192, 4.1008, 1.6416, 23000, 9207.3659, 308, 2190, \
1.8725, 10502.2831
"""


def test_parse_producer_perf() -> None:
    assert parse_producer_perf(PRODUCER_OUTPUT) == {
        "records": 20000,
        "records_per_s": 6276.2,
        "mb_per_s": 0.60,
        "avg_latency_ms": 129.30,
        "max_latency_ms": 433.0,
        "p50_ms": 129,
        "p95_ms": 141,
        "p99_ms": 142,
        "p999_ms": 147,
    }
    with pytest.raises(LocalKafkaError):
        parse_producer_perf("Exception in thread main")


def test_parse_consumer_perf() -> None:
    assert parse_consumer_perf(CONSUMER_OUTPUT) == {
        "mb": 4.1008,
        "mb_per_s": 1.6416,
        "records": 23000,
        "records_per_s": 9207.3659,
        "rebalance_ms": 308,
        "fetch_ms": 2190,
        "fetch_mb_per_s": 1.8725,
        "fetch_records_per_s": 10502.2831,
    }
    with pytest.raises(LocalKafkaError):
        parse_consumer_perf("start.time, end.time\n")


def test_server_properties_with_sasl_users(tmp_path: Path) -> None:
    """A SASL_PLAINTEXT listener with PLAIN beside PLAINTEXT, one JAAS entry per user; the
    password is quoted for JAAS and then for java.util.Properties, and never in a repr."""
    settings = LocalKafkaSettings(
        home=tmp_path, port=0, controller_port=0, sasl_users={"svc": 'p"w\\x', "b.ot": "s3"}
    )
    assert 'p"w' not in repr(settings) and "s3" not in repr(settings)
    with pytest.raises(ValueError, match="port of its own"):
        render_server_properties(settings, port=40001, controller_port=40002)
    props = parse_properties(
        render_server_properties(settings, port=40001, controller_port=40002, sasl_port=40003)
    )
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:40001,CONTROLLER://127.0.0.1:40002,SASL_PLAINTEXT://127.0.0.1:40003"
    )
    assert props["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:40001,SASL_PLAINTEXT://127.0.0.1:40003"
    )
    assert props["listener.security.protocol.map"].endswith(",SASL_PLAINTEXT:SASL_PLAINTEXT")
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] == "PLAIN"
    assert props["listener.name.sasl_plaintext.plain.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'user_b.ot="s3" user_svc="p\\\\"w\\\\\\\\x";'
    )
    with pytest.raises(ValueError, match="bad SASL user name"):
        LocalKafkaSettings(sasl_users={'a"b': "x"})
    plain = render_server_properties(
        LocalKafkaSettings(home=tmp_path), port=40001, controller_port=40002, sasl_port=40003
    )
    assert "SASL" not in plain  # no users: no listener

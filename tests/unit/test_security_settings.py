"""SASL/SSL settings reach every Kafka client Rhythm builds, from the environment alone:
the client library's producer, the sink's consumer and dead-letter producer, the processors'
admin client and Faust app (aiokafka credentials), `rhythm sync`, `tail` and `ingest`; and the
secrets stay out of reprs and dumps. The librdkafka clients are built for real where they
can be (config errors surface at construction); where a client would connect at once, its
configuration is captured instead of a connection attempted."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

SASL_ENV = {
    "RHYTHM_KAFKA_BOOTSTRAP_SERVERS": "broker-1:9094,broker-2:9094",
    "RHYTHM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "RHYTHM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "RHYTHM_KAFKA_SASL_USERNAME": "rhythm-svc",
    "RHYTHM_KAFKA_SASL_PASSWORD": "s3cr3t-sasl-pw",
    "RHYTHM_KAFKA_SSL_KEY_PASSWORD": "s3cr3t-key-pw",
}
EXPECTED = {
    "bootstrap.servers": "broker-1:9094,broker-2:9094",
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "rhythm-svc",
    "sasl.password": "s3cr3t-sasl-pw",
    "ssl.ca.location": None,  # filled in by the fixture
    "ssl.key.password": "s3cr3t-key-pw",
}


@pytest.fixture
def sasl_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import certifi  # a real CA bundle: librdkafka and ssl read it at construction

    ca = certifi.where()
    for key, value in (SASL_ENV | {"RHYTHM_KAFKA_SSL_CA_LOCATION": str(ca)}).items():
        monkeypatch.setenv(key, value)
    return EXPECTED | {"ssl.ca.location": str(ca)}


def assert_passes(conf: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        assert conf.get(key) == value, key


class CapturedError(Exception):
    """Raised by a stand-in client constructor once it has the configuration."""

    def __init__(self, conf: dict[str, Any]) -> None:
        super().__init__("captured")
        self.conf = conf


def capture(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> None:
    def build(conf: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        raise CapturedError(conf)

    monkeypatch.setattr(module, name, build)


def test_the_client_library(sasl_env: dict[str, Any]) -> None:
    from rhythm.producers import ClientSettings

    conf = ClientSettings().to_librdkafka()
    assert_passes(conf, sasl_env)
    from confluent_kafka import Producer

    Producer(conf)  # librdkafka accepts it (unknown or misspelt keys would raise here)
    assert "s3cr3t" not in repr(ClientSettings()) and "s3cr3t" not in str(
        ClientSettings().model_dump()
    )


def test_the_sink(sasl_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from confluent_kafka import Consumer

    from rhythm.sinks import dead_letters
    from rhythm.sinks.consumer import consumer_config
    from rhythm.sinks.settings import SinkSettings

    settings = SinkSettings()
    conf = consumer_config(settings)
    assert_passes(conf, sasl_env)
    Consumer(conf).close()
    capture(monkeypatch, dead_letters, "Producer")
    with pytest.raises(CapturedError) as dead:
        dead_letters.DeadLetterTopic(settings.kafka, "rhythm.dead_letters")
    assert_passes(dead.value.conf, sasl_env)
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings.model_dump())


def test_sync_tail_and_the_cli_options(
    sasl_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rhythm.runtime import offsets
    from rhythm.runtime.kafka_settings import KafkaSettings
    from rhythm.stack import tailing
    from rhythm.stack.cli import client as client_cli
    from rhythm.stack.cli import sink as sink_cli

    capture(monkeypatch, offsets, "Consumer")
    with pytest.raises(CapturedError) as got:
        offsets.Offsets(KafkaSettings(), "rhythm-sink").partitions(["rhythm.events"])
    assert_passes(got.value.conf, sasl_env)

    capture(monkeypatch, tailing, "Consumer")
    with pytest.raises(CapturedError) as got:
        next(iter(tailing.tail_topic(KafkaSettings(), "rhythm.events")))
    assert_passes(got.value.conf, sasl_env)

    # --bootstrap on the command line replaces only the address, not the credentials.
    override = sasl_env | {"bootstrap.servers": "other:9094"}
    ingest = client_cli._client_settings("rhythm.events", "other:9094")
    assert_passes(ingest.to_librdkafka(), override)
    sink = sink_cli._settings(bootstrap="other:9094")
    assert_passes(sink.kafka.to_librdkafka(), override)


def test_the_processors(sasl_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import faust

    from rhythm.processors import app as app_module
    from rhythm.processors import connection, worker
    from rhythm.processors.settings import ProcessorSettings

    settings = ProcessorSettings()
    capture(monkeypatch, worker, "AdminClient")
    with pytest.raises(CapturedError) as got:
        worker.events_partitions(settings)
    assert_passes(got.value.conf, sasl_env)

    credentials = connection.credentials(settings.kafka)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "rhythm-svc"
    assert credentials.password == "s3cr3t-sasl-pw"
    assert str(credentials.mechanism.value if hasattr(credentials.mechanism, "value")
               else credentials.mechanism) == "SCRAM-SHA-512"  # fmt: skip
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    # The Faust app is built with them: its aiokafka clients get them from app.conf.
    processors = app_module.Processors(settings, events_partitions=4)
    given: Any = processors.app.conf.broker_credentials
    assert isinstance(given, faust.SASLCredentials) and given.username == "rhythm-svc"
    assert [str(u) for u in processors.app.conf.broker] == [
        "kafka://broker-1:9094",
        "kafka://broker-2:9094",
    ]
    assert "s3cr3t" not in repr(settings)


def test_ssl_without_sasl_loads_the_client_certificate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import faust

    from rhythm.processors import connection
    from rhythm.processors.settings import ProcessorSettings

    loaded: list[tuple[Any, ...]] = []
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", lambda *a, **k: None)
    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", lambda _self, *a: loaded.append(a))
    monkeypatch.setenv("RHYTHM_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("RHYTHM_KAFKA_SSL_CA_LOCATION", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("RHYTHM_KAFKA_SSL_CERTIFICATE_LOCATION", str(tmp_path / "cert.pem"))
    monkeypatch.setenv("RHYTHM_KAFKA_SSL_KEY_LOCATION", str(tmp_path / "key.pem"))
    monkeypatch.setenv("RHYTHM_KAFKA_SSL_KEY_PASSWORD", "s3cr3t-key-pw")
    credentials = connection.credentials(ProcessorSettings().kafka)
    assert isinstance(credentials, faust.SSLCredentials)
    assert loaded == [(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), "s3cr3t-key-pw")]


def test_clickhouse_password_from_env_or_file_never_in_reprs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rhythm.sinks.settings import SinkSettings

    monkeypatch.setenv("RHYTHM_SINK_DSN", "https://analytics@ch.example:8443")
    monkeypatch.setenv("RHYTHM_SINK_CLICKHOUSE_PASSWORD", "s3cr3t-ch-env")
    dsn = SinkSettings().store_dsn()
    assert dsn.password is not None and dsn.password.get_secret_value() == "s3cr3t-ch-env"
    assert "s3cr3t" not in dsn.redacted() + repr(dsn) + repr(SinkSettings())

    monkeypatch.delenv("RHYTHM_SINK_CLICKHOUSE_PASSWORD")
    secret = tmp_path / "ch-password"
    secret.write_text("s3cr3t-ch-file\n")
    monkeypatch.setenv("RHYTHM_SINK_CLICKHOUSE_PASSWORD_FILE", str(secret))
    dsn = SinkSettings().store_dsn()
    assert dsn.password is not None and dsn.password.get_secret_value() == "s3cr3t-ch-file"
    assert "s3cr3t" not in dsn.redacted() + repr(dsn) + str(SinkSettings().model_dump())

"""SinkSettings: defaults, the store DSN, credentials that never show, consistency checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from rhythm.sinks.settings import SinkSettings, parse_dsn


def test_defaults_put_the_embedded_store_under_the_data_directory(tmp_path: Path) -> None:
    settings = SinkSettings(data_dir=tmp_path)
    dsn = settings.store_dsn()
    assert dsn.embedded and dsn.path == str(tmp_path / "clickhouse")
    assert settings.endpoint_state_file() == tmp_path / "clickhouse.sink.json"
    assert (settings.http_host, settings.http_port, settings.metrics_port) == (
        "127.0.0.1", 8123, 9464,
    )  # fmt: skip
    assert settings.topics == [
        "rhythm.events",
        "rhythm.signals",
        "rhythm.alerts",
        "rhythm.people",
        "rhythm.notifications",
        "rhythm.feedback",
        "rhythm.history",  # imported history, into events
    ]
    assert settings.topic_kinds["rhythm.history"] == "events"
    assert "rhythm.history" not in SinkSettings(data_dir=tmp_path, history_topic="").topics
    assert settings.dead_letter_topic == "rhythm.dead_letters"
    assert settings.group_id == "rhythm-sink"


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHYTHM_SINK_BATCH_MAX_ROWS", "500")
    monkeypatch.setenv("RHYTHM_SINK_DSN", "chdb:///var/lib/rhythm/ch")
    monkeypatch.setenv("RHYTHM_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    settings = SinkSettings()
    assert settings.batch_max_rows == 500
    assert settings.store_dsn().path == "/var/lib/rhythm/ch"
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"


def test_server_dsns_and_their_credentials(tmp_path: Path) -> None:
    dsn = parse_dsn("https://writer:p%40ss@ch.example.com/?max_insert_threads=4")
    assert (dsn.kind, dsn.host, dsn.port, dsn.username) == (
        "https", "ch.example.com", 8443, "writer",
    )  # fmt: skip
    assert dsn.password is not None and dsn.password.get_secret_value() == "p@ss"
    assert dsn.settings == {"max_insert_threads": "4"}
    assert "p@ss" not in dsn.redacted() and "p@ss" not in repr(dsn)
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    settings = SinkSettings(dsn="http://ch:8123", clickhouse_password_file=secret)
    resolved = settings.store_dsn()
    assert resolved.password == SecretStr("from-a-file") and resolved.port == 8123
    settings = SinkSettings(dsn="http://u:x@ch", clickhouse_password=SecretStr("env"))
    assert settings.store_dsn().password == SecretStr("env")
    assert "env" not in repr(settings) and "env" not in str(settings.model_dump())
    assert settings.endpoint_state_file() is None


@pytest.mark.parametrize(
    "changes",
    [
        {"dsn": "mysql://x"},
        {"dsn": "chdb://"},
        {"batch_max_rows": 10, "buffer_max_rows": 5},
        {"batch_max_bytes": 10**9, "buffer_max_bytes": 10**6},
        {"retry_backoff_min_s": 5, "retry_backoff_max_s": 1},
        {"database": "bad-name"},
    ],
)
def test_inconsistent_settings_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SinkSettings(**changes)  # type: ignore[arg-type]

"""Client settings: environment in, librdkafka config out, secrets masked everywhere else."""

from __future__ import annotations

import pytest

from rhythm.producers import ClientSettings, KafkaSettings


def test_defaults_give_an_idempotent_bounded_producer() -> None:
    conf = ClientSettings().to_librdkafka()
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    assert conf["queue.buffering.max.messages"] == 100_000
    assert conf["bootstrap.servers"] == "127.0.0.1:9092"
    assert "sasl.password" not in conf


def test_environment_configures_sasl_and_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHYTHM_KAFKA_BOOTSTRAP_SERVERS", "k1:9093,k2:9093")
    monkeypatch.setenv("RHYTHM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RHYTHM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("RHYTHM_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("RHYTHM_KAFKA_SASL_PASSWORD", "s3cr3t-planted")
    monkeypatch.setenv("RHYTHM_KAFKA_SSL_CA_LOCATION", "/etc/ca.pem")
    monkeypatch.setenv("RHYTHM_CLIENT_FULL_QUEUE_POLICY", "drop")
    settings = ClientSettings()
    conf = settings.to_librdkafka()
    assert conf["bootstrap.servers"] == "k1:9093,k2:9093"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "s3cr3t-planted"
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert settings.full_queue_policy == "drop"
    # Masked in every human-facing rendering of the settings.
    for rendering in (repr(settings), str(settings), settings.model_dump_json()):
        assert "s3cr3t-planted" not in rendering


def test_invalid_settings_are_rejected_with_the_field_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RHYTHM_CLIENT_FULL_QUEUE_POLICY", "sometimes")
    with pytest.raises(ValueError, match="full_queue_policy"):
        ClientSettings()


def test_extra_librdkafka_settings_pass_through() -> None:
    settings = ClientSettings(kafka=KafkaSettings(), extra={"message.max.bytes": 2_000_000})
    assert settings.to_librdkafka()["message.max.bytes"] == 2_000_000

"""Where the Kafka cluster is and how to authenticate: the connection settings every part of
Rhythm shares (the client, the processors, the sink, the notifier, the stack).

Each part has one settings object read from the environment (pydantic-settings), with
documented defaults, that dumps to the librdkafka configuration dict its Kafka client takes.
Secrets are `SecretStr`: masked in `repr()`, logs and `model_dump()`, unwrapped only in
`to_librdkafka()`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KafkaSettings", "SaslMechanism", "SecurityProtocol"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"]


class KafkaSettings(BaseSettings):
    """Where the Kafka cluster is and how to authenticate (env prefix `RHYTHM_KAFKA_`)."""

    model_config = SettingsConfigDict(env_prefix="RHYTHM_KAFKA_", extra="ignore")

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = Field(None, description="PEM file of the CA to trust.")
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    client_id: str = "rhythm"

    def to_librdkafka(self) -> dict[str, Any]:
        """The connection part of a librdkafka config (confluent-kafka's dict)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        optional: dict[str, str | SecretStr | None] = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password,
        }
        for key, value in optional.items():
            if value is None:
                continue
            conf[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return conf

    def manual_commit_consumer(
        self, group_id: str, session_timeout_ms: int, instance_id: str | None = None
    ) -> dict[str, Any]:
        """A consumer whose offsets are committed by hand, only once what it read is done
        with (the sink: rows in ClickHouse; the notifier: deliveries in its ledger)."""
        conf = self.to_librdkafka()
        conf.update(
            {
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": max(500, session_timeout_ms // 4),
                "log.connection.close": False,
            }
        )
        if instance_id:
            conf["group.instance.id"] = instance_id
        return conf

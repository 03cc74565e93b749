"""Settings for talking to Kafka, shared by every Rhythm component.

Each component has one settings object read from the environment (pydantic-settings), with
documented defaults, that dumps to the librdkafka configuration dict its Kafka client takes.
Secrets are `SecretStr`: masked in `repr()`, logs and `model_dump()`, unwrapped only in
`to_librdkafka()`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from rhythm.schemas.topics import EVENTS_TOPIC, PEOPLE_TOPIC

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


FullQueuePolicy = Literal["block", "drop"]


class ClientSettings(BaseSettings):
    """The client library's behaviour (env prefix `RHYTHM_CLIENT_`).

    The bounded queue is librdkafka's own send queue: `produce()` never waits on the network,
    and when the queue is full the policy decides: `block` waits up to `block_timeout_s` for
    room (then gives the event up as `queue_full`), `drop` gives it up at once. Either way the
    event is counted and reported to `on_error`; nothing is dropped silently.
    """

    model_config = SettingsConfigDict(env_prefix="RHYTHM_CLIENT_", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topic: str = EVENTS_TOPIC
    people_topic: str = PEOPLE_TOPIC
    queue_max_messages: int = Field(100_000, ge=1, description="Events buffered at most.")
    queue_max_kbytes: int = Field(65_536, ge=1, description="Bytes buffered at most, in KiB.")
    full_queue_policy: FullQueuePolicy = "block"
    block_timeout_s: float = Field(5.0, ge=0)
    linger_ms: float = Field(20.0, ge=0, description="How long librdkafka waits to fill a batch.")
    batch_size: int = Field(1_000_000, ge=1, description="Bytes per batch request at most.")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    delivery_timeout_ms: int = Field(
        300_000, ge=1, description="Retries go on this long; then the event is reported failed."
    )
    flush_on_exit_timeout_s: float = Field(
        10.0, ge=0, description="At interpreter exit, wait this long for delivery, then report."
    )
    poll_interval_s: float = Field(0.1, gt=0, description="Background delivery-report polling.")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Any other librdkafka setting, passed through."
    )

    def to_librdkafka(self) -> dict[str, Any]:
        conf = self.kafka.to_librdkafka()
        conf.update(
            {
                # Idempotence keeps per-partition order and avoids duplicates on retry.
                "enable.idempotence": True,
                "acks": "all",
                "queue.buffering.max.messages": self.queue_max_messages,
                "queue.buffering.max.kbytes": self.queue_max_kbytes,
                "linger.ms": self.linger_ms,
                "batch.size": self.batch_size,
                "compression.codec": self.compression,
                "delivery.timeout.ms": self.delivery_timeout_ms,
                # A broker restart is not news worth a log line per connection.
                "log.connection.close": False,
            }
        )
        conf.update(self.extra)
        return conf

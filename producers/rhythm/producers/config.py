"""The client library's settings (`ClientSettings`); the connection part is the shared
`rhythm.runtime.kafka_settings.KafkaSettings`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.schemas.topics import EVENTS_TOPIC, PEOPLE_TOPIC

__all__ = ["ClientSettings", "FullQueuePolicy", "KafkaSettings"]

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

"""The dead-letter topic: each poison message as it came (key and value untouched), with
where it came from and why in its headers (rhythm.schemas.dead_letters). Delivery is
confirmed before the batch's offsets are committed; a batch retried after a crash may publish
a dead letter twice (the headers name the source position, and the dead_letters table is
deduplicated on it)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.schemas import dead_letters
from rhythm.sinks.tables.rows import DeadLetter

__all__ = ["DeadLetterTopic", "DeliveryFailedError"]


class DeliveryFailedError(RuntimeError):
    pass


def headers(dead: DeadLetter, extra: list[tuple[str, str]]) -> list[tuple[str, str | bytes | None]]:
    m = dead.message
    return dead_letters.headers(
        dead.reason, dead.detail, m.topic, m.partition, m.offset, m.timestamp_ms, extra
    )


class DeadLetterTopic:
    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.topic = topic
        conf: dict[str, Any] = kafka.to_librdkafka()
        conf.update({"enable.idempotence": True, "acks": "all", "linger.ms": 5})
        self._producer = Producer(conf)
        self._lock = threading.Lock()

    def publish(self, dead: Sequence[DeadLetter], timeout: float = 30.0) -> None:
        """Publish and wait for every delivery; raises DeliveryFailedError if any failed."""
        errors: list[str] = []

        def report(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(str(err))

        with self._lock:
            for item in dead:
                value, extra = dead_letters.cut(item.message.value or b"")
                self._producer.produce(
                    self.topic,
                    value=value,
                    key=item.message.key,
                    headers=headers(item, extra),
                    on_delivery=report,
                )
            left = self._producer.flush(timeout)
        if left or errors:
            raise DeliveryFailedError(
                f"{len(errors)} dead letters failed, {left} undelivered: {errors[:3]}"
            )

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)

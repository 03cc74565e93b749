"""Read a topic without joining a consumer group and decode each message for people."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.schemas import WireError, decode_event


def decode_value(value: bytes | None) -> Any:
    """Rhythm's Avro wire format if it is that, else JSON, else the bytes as text."""
    if value is None:
        return None
    if value[:1] == b"\x00":
        try:
            return decode_event(value)
        except WireError as exc:
            return {"undecodable": exc.reason, "bytes": value[:64].hex()}
    try:
        return json.loads(value)
    except ValueError:
        return value.decode("utf-8", "replace")


def tail_topic(
    kafka: KafkaSettings,
    topic: str,
    *,
    from_beginning: bool = False,
    limit: int = 0,
    idle_timeout: float = 0.0,
) -> Iterator[dict[str, Any]]:
    conf = kafka.to_librdkafka()
    # A throwaway group id: assign() reads without joining or committing anything.
    conf.update({"group.id": f"rhythm-tail-{uuid.uuid4()}", "enable.auto.commit": False})
    consumer = Consumer(conf)
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            raise SystemExit(f"topic {topic!r} not found on {kafka.bootstrap_servers}")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in sorted(info.partitions)])
        seen = 0
        last = time.monotonic()
        while limit == 0 or seen < limit:
            msg = consumer.poll(0.5)
            if msg is None:
                if idle_timeout and time.monotonic() - last > idle_timeout:
                    return
                continue
            if msg.error() is not None:
                continue
            last = time.monotonic()
            seen += 1
            key = msg.key()
            yield {
                "partition": msg.partition(),
                "offset": msg.offset(),
                "key": key.decode("utf-8", "replace") if key is not None else None,
                "value": decode_value(msg.value()),
            }
    finally:
        consumer.close()

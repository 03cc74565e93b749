"""Helpers for integration tests: read back what reached a topic."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

ReadTopic = Callable[..., list[Message]]


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[Message]:
    """All messages of `topic` from the beginning: returns once `expected` have arrived and the
    topic's end offsets are reached (so extra, duplicate messages would be seen too), or when
    `timeout` passes (the caller's assertion then shows what was missing)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-read-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        consumer.assign(tps)
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, 0.5)
            messages.extend(m for m in batch if m.error() is None)
            if len(messages) >= expected and _at_end(consumer, tps, messages):
                break
        return messages
    finally:
        consumer.close()


def _at_end(consumer: Consumer, tps: list[TopicPartition], messages: list[Message]) -> bool:
    last: dict[int, int] = {}
    for m in messages:
        partition, offset = m.partition(), m.offset()
        assert partition is not None and offset is not None
        last[partition] = max(last.get(partition, -1), offset)
    for tp in tps:
        _low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), 5)
        if high > 0 and last.get(tp.partition, -1) < high - 1:
            return False
    return True


@pytest.fixture
def read() -> ReadTopic:
    return read_topic


def payload(message: Message) -> bytes:
    """A message's value, which the tests' topics always have."""
    value = message.value()
    assert value is not None
    return value

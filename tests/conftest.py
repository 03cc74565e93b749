"""Fixtures shared by all tests. The real local Kafka broker is started lazily: only when a
test asks for `kafka_broker` (or `topic`), once per session, and stopped at the end."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from rhythm.schemas.topics import DEFAULT_TOPICS, TopicSpec
from rhythm.stack.kafka import LocalKafka, LocalKafkaSettings, stop_orphans


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A single-node Kafka for the whole session with DEFAULT_TOPICS created; `.bootstrap`
    is its address. Its home is a temporary dir and its ports are free ones (picked at start),
    so parallel test runs on one machine do not collide. Brokers left by killed test runs
    are stopped first."""
    stop_orphans()
    broker = LocalKafka(
        LocalKafkaSettings(home=tmp_path_factory.mktemp("kafka"), port=0, controller_port=0),
        owned=True,
    )
    try:
        broker.up(DEFAULT_TOPICS)
        yield broker
    finally:
        broker.down()


@pytest.fixture
def topic(kafka_broker: LocalKafka, request: pytest.FixtureRequest) -> str:
    """A fresh topic with 4 partitions, named after the test, for tests that need isolation."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:80].strip("-.")
    name = f"test.{slug}.{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topics([TopicSpec(name, 4, {})])
    return name

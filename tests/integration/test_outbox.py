"""outbox.py against the real broker and Faust's real producer: the keyed records a batch
sends per partition arrive once each, in order, in the partition aiokafka's own partitioner
(and Java's) gives their key."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import faust
from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]
from tests.integration.conftest import ReadTopic

from rhythm.processors import faust_private
from rhythm.processors.outbox import Outbox
from rhythm.stack.kafka import LocalKafka


async def _send_all(bootstrap: str, topic: str, datadir: Path, rounds: list[list[int]]) -> None:
    app = faust.App(
        f"test-outbox-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        datadir=str(datadir),
        producer_max_batch_size=16 * 1024,  # several batches per partition and round
        producer_acks=-1,
    )
    await app.producer.start()
    try:
        producer = faust_private.kafka_producer(app)
        for numbers in rounds:
            outbox = Outbox(producer, topic)
            for n in numbers:
                outbox.add(f"entity-{n % 97}".encode(), f"{n:08d}".encode() + b"x" * 300)
            assert len(outbox) == len(numbers)
            pending = await outbox.send()
            assert len(outbox) == 0
            await asyncio.gather(*pending)  # acknowledged by Kafka
    finally:
        await app.producer.stop()


def test_keyed_records_arrive_once_in_order_in_their_keys_partition(
    kafka_broker: LocalKafka, topic: str, read: ReadTopic, tmp_path: Path
) -> None:
    rounds = [list(range(0, 2500)), [], list(range(2500, 3000))]
    asyncio.run(_send_all(kafka_broker.bootstrap, topic, tmp_path, rounds))

    messages = read(kafka_broker.bootstrap, topic, 3000)
    assert len(messages) == 3000  # raw: a record sent twice would be counted
    partitioner = DefaultPartitioner()
    last: dict[str, int] = {}
    per_partition: dict[int, list[int]] = {}
    for m in messages:
        key, value, partition = m.key(), m.value(), m.partition()
        assert key is not None and value is not None and partition is not None
        assert partition == partitioner(key, [0, 1, 2, 3], [0, 1, 2, 3])
        n = int(value[:8])
        assert key == f"entity-{n % 97}".encode() and value[8:] == b"x" * 300
        assert n > last.get(key.decode(), -1)  # in the order added, per key
        last[key.decode()] = n
        per_partition.setdefault(partition, []).append(n)
    assert sorted(n for ns in per_partition.values() for n in ns) == list(range(3000))
    for ns in per_partition.values():
        assert ns == sorted(ns)  # within a partition too
    assert len(per_partition) == 4

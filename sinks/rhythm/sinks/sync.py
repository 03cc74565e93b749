"""`wait_for_sink`: block until everything published so far is in ClickHouse.

"So far" is the end offsets of every partition of the topics when the call starts; "in
ClickHouse" is the sink group's committed offsets reaching them (the sink commits only
after ClickHouse acknowledged a batch, and an intent commit never moves the offset past
unwritten messages). Messages published after the call started are not waited for.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from rhythm.runtime.kafka_settings import KafkaSettings

__all__ = ["PartitionGap", "SyncReport", "wait_for_sink"]


@dataclass(frozen=True)
class PartitionGap:
    topic: str
    partition: int
    end: int
    committed: int | None

    @property
    def missing(self) -> int:
        return self.end - max(self.committed or 0, 0)

    def __str__(self) -> str:
        done = "nothing committed" if self.committed is None else f"committed {self.committed}"
        return f"{self.topic}[{self.partition}]: end {self.end}, {done} ({self.missing} left)"


@dataclass
class SyncReport:
    ok: bool
    gaps: list[PartitionGap] = field(default_factory=list)
    elapsed_s: float = 0.0

    def __bool__(self) -> bool:
        return self.ok

    def describe(self) -> str:
        if self.ok:
            return f"in sync after {self.elapsed_s:.1f} s"
        missing = sum(g.missing for g in self.gaps)
        lines = [f"not in sync after {self.elapsed_s:.1f} s: {missing} messages not written"]
        lines += [f"  {gap}" for gap in self.gaps]
        return "\n".join(lines)


def _consumer(kafka: KafkaSettings, group_id: str) -> Consumer:
    conf: dict[str, Any] = kafka.to_librdkafka()
    # The sink's group id, to read its commits; this consumer never subscribes, so it
    # never joins the group or commits anything.
    conf.update({"group.id": group_id, "enable.auto.commit": False})
    conf["client.id"] = f"rhythm-sync-{uuid.uuid4().hex[:8]}"
    return Consumer(conf)


def _ends(consumer: Consumer, topics: Sequence[str], timeout: float) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    metadata = consumer.list_topics(timeout=timeout)
    for topic in topics:
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            continue  # no topic: nothing was published to it
        for partition in info.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            if high > low:  # else empty (or emptied by retention): nothing to wait for
                ends[(topic, partition)] = high
    return ends


def wait_for_sink(
    kafka: KafkaSettings,
    topics: Sequence[str],
    timeout: float = 60.0,
    *,
    group_id: str = "rhythm-sink",
    poll_interval: float = 0.2,
) -> SyncReport:
    """True-ish (a `SyncReport`) once the sink group has committed past every end offset
    of `topics` as they were when this was called; else, at `timeout`, what is missing."""
    started = time.monotonic()
    deadline = started + timeout
    consumer = _consumer(kafka, group_id)
    try:
        ends = _ends(consumer, topics, timeout=max(1.0, min(10.0, timeout)))
        gaps: list[PartitionGap] = []
        while True:
            gaps = _gaps(consumer, ends, timeout=max(1.0, min(10.0, deadline - time.monotonic())))
            elapsed = time.monotonic() - started
            if not gaps:
                return SyncReport(True, [], elapsed)
            if time.monotonic() + poll_interval > deadline:
                return SyncReport(False, gaps, elapsed)
            time.sleep(poll_interval)
    finally:
        consumer.close()


def _gaps(
    consumer: Consumer, ends: dict[tuple[str, int], int], timeout: float
) -> list[PartitionGap]:
    if not ends:
        return []
    try:
        committed = consumer.committed(
            [TopicPartition(t, p) for t, p in sorted(ends)], timeout=timeout
        )
    except KafkaException:
        committed = []
    offsets = {(tp.topic, tp.partition): tp.offset for tp in committed if tp.error is None}
    gaps = []
    for (topic, partition), end in sorted(ends.items()):
        offset = offsets.get((topic, partition))
        if offset is None or offset < end:
            done = offset if offset is not None and offset >= 0 else None
            gaps.append(PartitionGap(topic, partition, end, done))
    return gaps

"""End offsets, log starts, committed offsets and lag: the one implementation every part uses
(the processors' health watch and hole recovery, `rhythm sync`, the stack's status).

`Offsets` asks the broker through a librdkafka consumer of its own that never subscribes,
so it never joins the group whose commits it reads and never commits anything; each call
has its own timeout. The lag arithmetic is the pure `lag()`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from rhythm.runtime.kafka_settings import KafkaSettings

__all__ = ["TP", "Offsets", "group_lag", "lag"]

TP = tuple[str, int]  # (topic, partition)


def lag(end: int, done: int | None) -> int:
    """Messages of a partition not yet done: its end offset minus the next offset to do
    (None or negative: nothing done yet, so everything from offset 0 counts)."""
    return max(0, end - max(done or 0, 0))


class Offsets:
    """Reads a partition's offsets from the broker for `group_id` (whose commits
    `committed()` returns; the group is never joined). Thread-safe: one call at a time."""

    def __init__(self, kafka: KafkaSettings, group_id: str, timeout_s: float = 5.0) -> None:
        self._conf: dict[str, Any] = {
            **kafka.to_librdkafka(),
            "group.id": group_id,
            "enable.auto.commit": False,
            "client.id": f"{kafka.client_id}-offsets-{uuid.uuid4().hex[:8]}",
        }
        self.timeout_s = timeout_s
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self._conf)
        return self._consumer

    def partitions(self, topics: Sequence[str]) -> list[TP]:
        """Every partition of `topics` that exists (a missing topic has none)."""
        with self._lock:
            metadata = self._client().list_topics(timeout=self.timeout_s)
        out: list[TP] = []
        for topic in topics:
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                continue
            out.extend((topic, p) for p in sorted(info.partitions))
        return out

    def watermarks(self, tps: Iterable[TP]) -> dict[TP, tuple[int, int]]:
        """(log start, end offset) per partition; a partition the broker did not answer
        for (away, topic gone) is left out."""
        out: dict[TP, tuple[int, int]] = {}
        with self._lock:
            consumer = self._client()
            for topic, partition in tps:
                try:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=self.timeout_s
                    )
                except KafkaException:
                    continue
                if low is not None and high is not None and high >= 0:
                    out[(topic, partition)] = (int(low), int(high))
        return out

    def ends(self, tps: Iterable[TP]) -> dict[TP, int]:
        """End offsets: the next offset each partition will write."""
        return {tp: high for tp, (_low, high) in self.watermarks(tps).items()}

    def committed(self, tps: Sequence[TP]) -> dict[TP, int | None] | None:
        """The group's committed offset per partition (None: nothing committed); None for
        the whole call when the broker did not answer (e.g. its coordinator is loading)."""
        if not tps:
            return {}
        with self._lock:
            try:
                found = self._client().committed(
                    [TopicPartition(t, p) for t, p in tps], timeout=self.timeout_s
                )
            except KafkaException:
                return None
        return {
            (tp.topic, tp.partition): (int(tp.offset) if tp.offset >= 0 else None)
            for tp in found
            if tp.error is None
        }

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


def group_lag(
    kafka: KafkaSettings, group_id: str, topics: Sequence[str], timeout_s: float = 5.0
) -> dict[str, int]:
    """Messages each topic still holds for `group_id` (per topic, the sum over partitions
    of end offset minus committed offset); a topic the broker did not answer for is left
    out."""
    offsets = Offsets(kafka, group_id, timeout_s)
    try:
        out: dict[str, int] = {}
        for topic in topics:
            tps = offsets.partitions([topic])
            committed = offsets.committed(tps)
            if not tps or committed is None:
                continue
            ends = offsets.ends(tps)
            out[topic] = sum(lag(end, committed.get(tp)) for tp, end in ends.items())
        return out
    finally:
        offsets.close()

"""End offsets for the health watch, asked from the broker by a librdkafka consumer of our own.

Not through Faust's consumer: its `highwaters()` runs aiokafka's `end_offsets` on the
consumer thread, which also fetches and commits; asked during a broker restart it blocked
that thread, and the worker went on processing what it had fetched but never committed again
(seen in the fault suite). This consumer never joins a group (no subscribe, no commit), so it
cannot disturb the worker's group; its calls run in a thread with their own timeout.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from rhythm.runtime.kafka_settings import KafkaSettings

__all__ = ["EndOffsets"]


class EndOffsets:
    def __init__(
        self, kafka: KafkaSettings, group_id: str, timeout_s: float, app_group: str = ""
    ) -> None:
        self._conf: dict[str, Any] = {
            **kafka.to_librdkafka(),
            "group.id": group_id,  # required by the client; never joined
            "enable.auto.commit": False,
        }
        self._app_group = app_group  # whose committed offsets `starts` reads (never joined)
        self._timeout_s = timeout_s
        self._consumer: Consumer | None = None
        self._reader: Consumer | None = None
        self._lock = threading.Lock()  # one call at a time: the timer may overlap itself

    def _watermarks(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        with self._lock:
            if self._consumer is None:
                self._consumer = Consumer(self._conf)
            out: dict[tuple[str, int], tuple[int, int]] = {}
            for topic, partition in tps:
                try:
                    low, high = self._consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=self._timeout_s
                    )
                except Exception:  # no answer (broker away, topic gone): keep the last known
                    continue
                out[(topic, partition)] = (int(low), int(high))
            return out

    async def ask(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """End offsets (the next offset each partition will write)."""
        marks = await asyncio.to_thread(self._watermarks, tps)
        return {tp: high for tp, (_low, high) in marks.items() if high >= 0}

    async def log_start(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The first offset each partition still holds (retention moves it)."""
        marks = await asyncio.to_thread(self._watermarks, tps)
        return {tp: low for tp, (low, _high) in marks.items() if low >= 0}

    def _starts(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        marks = self._watermarks(tps)
        with self._lock:
            if self._reader is None:
                self._reader = Consumer({**self._conf, "group.id": self._app_group})
            try:
                committed = self._reader.committed(
                    [TopicPartition(t, p) for t, p in tps], timeout=self._timeout_s
                )
            except Exception:  # no answer: nothing to say
                return {}
        out: dict[tuple[str, int], int] = {}
        for tp in committed:
            key = (tp.topic, tp.partition)
            if tp.error is not None:
                continue
            if tp.offset >= 0:
                out[key] = int(tp.offset)
            elif key in marks:  # nothing committed: auto_offset_reset earliest
                out[key] = marks[key][0]
        return out

    async def starts(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Where the app's consumer group starts each partition: its committed offset, else
        (nothing committed) the log start. Read from the broker: Faust's own record of the
        committed offset is empty while a rebalance revokes the partition."""
        return await asyncio.to_thread(self._starts, tps)

    def close(self) -> None:
        with self._lock:
            for consumer in (self._consumer, self._reader):
                if consumer is not None:
                    consumer.close()
            self._consumer = self._reader = None

"""The worker's questions to the broker (end offsets, log starts, where the group starts a
partition), asked off the event loop through `rhythm.runtime.offsets`.

Not through Faust's consumer: its `highwaters()` runs aiokafka's `end_offsets` on the
consumer thread, which also fetches and commits; asked during a broker restart it blocked
that thread, and the worker went on processing what it had fetched but never committed again
(seen in the fault suite). `Offsets` never joins a group (no subscribe, no commit), so it
cannot disturb the worker's group; its calls run in a thread with their own timeout.
"""

from __future__ import annotations

import asyncio

from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.runtime.offsets import TP, Offsets

__all__ = ["EndOffsets"]


class EndOffsets:
    def __init__(
        self, kafka: KafkaSettings, group_id: str, timeout_s: float, app_group: str = ""
    ) -> None:
        self._offsets = Offsets(kafka, group_id, timeout_s)
        # Whose committed offsets `starts` reads (the app's own group; never joined).
        self._group = Offsets(kafka, app_group or group_id, timeout_s)

    async def ask(self, tps: list[TP]) -> dict[TP, int]:
        """End offsets (the next offset each partition will write)."""
        return await asyncio.to_thread(self._offsets.ends, tps)

    async def log_start(self, tps: list[TP]) -> dict[TP, int]:
        """The first offset each partition still holds (retention moves it)."""
        marks = await asyncio.to_thread(self._offsets.watermarks, tps)
        return {tp: low for tp, (low, _high) in marks.items() if low >= 0}

    def _starts(self, tps: list[TP]) -> dict[TP, int]:
        committed = self._group.committed(tps)
        if committed is None:  # no answer: nothing to say
            return {}
        marks = self._offsets.watermarks([tp for tp, o in committed.items() if o is None])
        out: dict[TP, int] = {}
        for tp, offset in committed.items():
            if offset is not None:
                out[tp] = offset
            elif tp in marks:  # nothing committed: auto_offset_reset earliest
                out[tp] = marks[tp][0]
        return out

    async def starts(self, tps: list[TP]) -> dict[TP, int]:
        """Where the app's consumer group starts each partition: its committed offset, else
        (nothing committed) the log start. Read from the broker: Faust's own record of the
        committed offset is empty while a rebalance revokes the partition."""
        return await asyncio.to_thread(self._starts, tps)

    def close(self) -> None:
        self._offsets.close()
        self._group.close()

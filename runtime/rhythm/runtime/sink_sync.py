"""`wait_for_sink`: block until everything published so far is in ClickHouse.

"So far" is the end offsets of every partition of the topics when the call starts; "in
ClickHouse" is the sink group's committed offsets reaching them (the sink commits only
after ClickHouse acknowledged a batch, and an intent commit never moves the offset past
unwritten messages). Messages published after the call started are not waited for.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.runtime.offsets import TP, Offsets, lag
from rhythm.schemas.topics import SINK_GROUP

__all__ = ["PartitionGap", "SyncReport", "wait_for_sink"]


@dataclass(frozen=True)
class PartitionGap:
    topic: str
    partition: int
    end: int
    committed: int | None

    @property
    def missing(self) -> int:
        return lag(self.end, self.committed)

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


def _ends(offsets: Offsets, topics: Sequence[str]) -> dict[TP, int]:
    tps = offsets.partitions(topics)
    marks = offsets.watermarks(tps)
    unanswered = sorted(set(tps) - set(marks))
    if unanswered:  # waiting for less than was published would say "in sync" too early
        raise RuntimeError(f"the broker gave no end offsets for {unanswered}")
    # An empty partition (or one emptied by retention) has nothing to wait for.
    return {tp: high for tp, (low, high) in marks.items() if high > low}


def wait_for_sink(
    kafka: KafkaSettings,
    topics: Sequence[str],
    timeout: float = 60.0,
    *,
    group_id: str = SINK_GROUP,
    poll_interval: float = 0.2,
) -> SyncReport:
    """True-ish (a `SyncReport`) once the sink group has committed past every end offset
    of `topics` as they were when this was called; else, at `timeout`, what is missing."""
    started = time.monotonic()
    deadline = started + timeout
    # The sink's group id, to read its commits; never joined, nothing committed.
    offsets = Offsets(kafka, group_id, timeout_s=max(1.0, min(10.0, timeout)))
    try:
        ends = _ends(offsets, topics)
        gaps: list[PartitionGap] = []
        while True:
            offsets.timeout_s = max(1.0, min(10.0, deadline - time.monotonic()))
            gaps = _gaps(offsets, ends)
            elapsed = time.monotonic() - started
            if not gaps:
                return SyncReport(True, [], elapsed)
            if time.monotonic() + poll_interval > deadline:
                return SyncReport(False, gaps, elapsed)
            time.sleep(poll_interval)
    finally:
        offsets.close()


def _gaps(offsets: Offsets, ends: dict[TP, int]) -> list[PartitionGap]:
    if not ends:
        return []
    committed = offsets.committed(sorted(ends)) or {}
    gaps = []
    for (topic, partition), end in sorted(ends.items()):
        done = committed.get((topic, partition))
        if done is None or done < end:
            gaps.append(PartitionGap(topic, partition, end, done))
    return gaps

"""Offsets Faust never delivered: notice them and have them read again.

Faust 0.15.3's fetch loop drops records aiokafka has already returned in a few places: when
the flow stops or the consumer generation changes in the middle of a fetched batch, and for
partitions that were resumed while the fetch was in flight (`tp not in active_partitions`).
aiokafka's position has moved past them, so they are never fetched again: a *hole*. What
follows is acked, and Faust's commit then either stops at the hole for good (two or more
offsets: `_new_offset` waits for the gap to fill, the worker processes on and never commits
again) or steps over it (one offset: lost). Both were seen around rebalances after a broker
restart or a SIGKILLed worker.

Stage 2 must not apply what comes after a hole before the hole itself: an entity skips
updates at or below the newest source offset it applied, so the hole's updates, arriving
later, would be taken for duplicates. So the agents process only the contiguous run, leave
the rest un-acked for good (their copies come again) and seek the partition back to the
hole. `deliverable()` is the pure part; `OffsetGuard` keeps the next offset each partition
should deliver, and how far it was processed without a gap: the only offset the processors
let Faust commit for their inputs (faust_private.guard_commits; Faust's own choice steps
over holes, tests/unit/test_holes_faust.py).

Where a partition starts: the committed offset, or, before the group's first commit, the
log start offset (the consumer resets to the earliest offset); the agents ask the broker
for it rather than taking the first offset that happens to arrive, which may be after a hole.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

__all__ = ["OffsetGuard", "deliverable"]

K = TypeVar("K")


def deliverable(expected: int | None, offsets: Sequence[int]) -> tuple[int, int | None]:
    """`offsets` ascending. Returns (n, hole): the first n may be processed; when n is short
    of all, the offsets from `hole` up to offsets[n] never arrived. Offsets below `expected`
    (read again after a seek or a rebalance) are fine: processing is idempotent per offset."""
    if expected is None:
        return len(offsets), None
    wanted = expected
    for i, offset in enumerate(offsets):
        if offset > wanted:
            return i, wanted
        wanted = max(wanted, offset + 1)
    return len(offsets), None


class OffsetGuard(Generic[K]):
    """Per partition (any hashable key), the next offset it should deliver, and the hole it
    is waiting for after a seek back. Messages already fetched when the seek was made still
    arrive first (from Faust's queues), so a batch beyond the hole right after the seek is
    expected and skipped too; only if the hole has not come after `reseek_after_s` is the
    seek made again."""

    def __init__(self, reseek_after_s: float = 5.0) -> None:
        self.reseek_after_s = reseek_after_s
        self._next: dict[K, int] = {}
        self._waiting: dict[K, tuple[int, float]] = {}  # hole, when it was last sought
        self._last_seen: dict[K, float] = {}  # when a batch (or a seek) was last made
        self._done: dict[K, int] = {}  # everything below it was processed (this assignment)
        self._rereads: dict[K, int] = {}  # re-reads for quiet since it last delivered

    def expected(self, key: K, committed: int | None) -> int | None:
        """What was seen in this assignment, else the committed offset the consumer was
        set to (None: unknown, nothing to compare with)."""
        return self._next.get(key, committed)

    def begin(self, key: K, offset: int) -> None:
        """Where the partition starts when nothing was committed (its log start)."""
        self._next.setdefault(key, offset)

    def done(self, key: K, last_offset: int) -> None:
        """The agent finished a batch that `passed` up to `last_offset` (its messages sent
        and acknowledged, its table writes made): everything up to it was processed, since
        every batch let through starts at or below the offset expected."""
        self._done[key] = max(self._done.get(key, 0), last_offset + 1)

    def commit_offset(self, key: K) -> int | None:
        """The offset that may be committed: everything below it was processed. None while
        nothing was processed in this assignment (the committed offset stands)."""
        return self._done.get(key)

    def passed(self, key: K, last_offset: int, now: float = 0.0) -> None:
        self._last_seen[key] = now
        self._rereads.pop(key, None)
        self._next[key] = max(self._next.get(key, 0), last_offset + 1)
        waiting = self._waiting.get(key)
        if waiting is not None and waiting[0] <= last_offset:
            del self._waiting[key]  # the hole came in

    def is_new(self, key: K) -> bool:
        """No seek back is pending for this partition: a hole found now is a new one."""
        return key not in self._waiting

    def should_seek(self, key: K, hole: int, now: float) -> bool:
        """Seek back to `hole` now? Yes for a new hole, and again when the last seek to it
        is `reseek_after_s` old; no while its copies may still be on their way."""
        waiting = self._waiting.get(key)
        if waiting is not None and waiting[0] == hole and now - waiting[1] < self.reseek_after_s:
            return False
        self._waiting[key] = (hole, now)
        return True

    def quiet(self, keys: Iterable[K], now: float, after_s: float) -> list[K]:
        """Partitions nothing was delivered for in `after_s` (the clock starts at the first
        call for a partition), doubled for each re-read (`reread`) that brought nothing
        since, up to 16 times: a worker too busy to be handed its input (seen at load 8,
        building a million entities) would otherwise drop what it had fetched and read it
        again every `after_s`, making itself busier. A hole at the end of what was written
        has no later message to reveal it: the caller compares these with their end
        offsets."""
        out = []
        for key in keys:
            seen = self._last_seen.setdefault(key, now)
            if now - seen >= after_s * 2 ** min(self._rereads.get(key, 0), 4):
                out.append(key)
        return out

    def touch(self, key: K, now: float) -> None:
        self._last_seen[key] = now

    def reread(self, key: K, now: float) -> None:
        """A quiet partition was sought back to what it owes."""
        self._last_seen[key] = now
        self._rereads[key] = self._rereads.get(key, 0) + 1

    def forget(self, keys: Iterable[K]) -> None:
        """Revoked: the next owner (maybe this worker again) starts from the commit."""
        for key in keys:
            self._next.pop(key, None)
            self._waiting.pop(key, None)
            self._last_seen.pop(key, None)
            self._done.pop(key, None)
            self._rereads.pop(key, None)

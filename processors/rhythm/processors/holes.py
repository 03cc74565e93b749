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
should deliver.
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
    """Per partition (any hashable key), the next offset it should deliver."""

    def __init__(self) -> None:
        self._next: dict[K, int] = {}
        self._sought: dict[K, int] = {}

    def expected(self, key: K, committed: int | None) -> int | None:
        """What was seen in this assignment, else the committed offset the consumer was
        set to (None: unknown, nothing to compare with)."""
        return self._next.get(key, committed)

    def passed(self, key: K, last_offset: int) -> None:
        self._next[key] = max(self._next.get(key, 0), last_offset + 1)
        if self._sought.get(key, last_offset + 1) <= last_offset:
            del self._sought[key]  # the hole came in

    def seek_or_accept(self, key: K, hole: int) -> bool:
        """True: seek back to `hole`. False: the same hole came back right after a seek to
        it, so those offsets are gone from the broker (retention): go on without them."""
        if self._sought.get(key) == hole:
            del self._sought[key]
            return False
        self._sought[key] = hole
        return True

    def forget(self, keys: Iterable[K]) -> None:
        """Revoked: the next owner (maybe this worker again) starts from the commit."""
        for key in keys:
            self._next.pop(key, None)
            self._sought.pop(key, None)

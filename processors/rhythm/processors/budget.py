"""Stage 1's per-tenant budget: one tenant's flood cannot take the other tenants' share of
stage 2.

Counted per source partition and per minute of event time, not of the wall clock: a replay,
or a restart with lag, must decide as living through the same events did. A tenant's first
`per_minute` events of a minute go to stage 2 one by one (exact); the rest of that minute go
in the degraded mode: stage 1 joins an entity's consecutive events of one second into one
*run* (explode.py), which stage 2 applies in one step (entity.add_run). Counts, sums and
maxima stay exact; gaps are then between busy seconds instead of events. Threads (the
unanswered rule) stay exact: they are already capped per thread.

The counts are saved with the partition's watermark, so a restart decides as before: the
ones that can matter (over an eighth of the budget), at most MAX_SAVED of them, so the
record stays small whatever the number of tenants.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MINUTE_MS = 60_000
MAX_SAVED = 256


class Budget:
    def __init__(self, per_minute: int, lateness_ms: int) -> None:
        self.per_minute = per_minute
        self.lateness_ms = lateness_ms
        self._counts: dict[tuple[str, int], int] = {}

    def take(self, tenant: str, ts: int, crossed: list[str]) -> bool:
        """Count one event; False when its tenant is over the budget for the event's minute.
        A tenant that crosses the budget, not having been over it the minute before (a new
        episode), is appended to `crossed`."""
        minute = ts // MINUTE_MS
        key = (tenant, minute)
        n = self._counts.get(key, 0) + 1
        self._counts[key] = n
        if n <= self.per_minute:
            return True
        before = self._counts.get((tenant, minute - 1), 0)
        if n == self.per_minute + 1 and before <= self.per_minute:
            crossed.append(tenant)
        return False

    def expire(self, watermark_ms: int, tenant_marks: Mapping[str, int] | None = None) -> None:
        """A minute's count is dropped once the watermark is past it by the lateness: few
        events of it can still come (late ones start a fresh count). `tenant_marks`: each
        tenant's own watermark, where tenants have their own event time (the history lane)."""
        marks = tenant_marks or {}

        def kept(tenant: str, minute: int) -> bool:
            mark = marks.get(tenant, watermark_ms)
            return minute >= (mark - self.lateness_ms) // MINUTE_MS - 1

        if not all(kept(*k) for k in self._counts):
            self._counts = {k: n for k, n in self._counts.items() if kept(*k)}

    def over(self) -> set[str]:
        """Tenants over the budget in a minute still counted."""
        return {tenant for (tenant, _), n in self._counts.items() if n > self.per_minute}

    def saved(self) -> list[list[Any]]:
        floor = self.per_minute // 8
        big = sorted(
            ((n, tenant, minute) for (tenant, minute), n in self._counts.items() if n > floor),
            reverse=True,
        )[:MAX_SAVED]
        return [[tenant, minute, n] for n, tenant, minute in big]

    def restore(self, saved: list[list[Any]]) -> None:
        self._counts = {(str(tenant), int(minute)): int(n) for tenant, minute, n in saved}

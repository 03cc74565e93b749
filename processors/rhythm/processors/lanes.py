"""The two lanes' pure rules (ARCHITECTURE.md, "the history lane"): which events the live
lane routes to the history lane, how far an idle history lane closes its windows, and how
the two lanes' versions of one window merge in the store.

- **Routing.** An event is *too late* for the live lane when every window it falls in has
  closed and is past the late retention (`late_retention_ms` after closing) at the
  watermark: stage 2 could no longer count it anywhere. Stage 1 decides this with the
  watermark its partition last reported, which is never behind the stage-2 watermark the
  event will meet (stage 2's is the minimum over the source partitions'): so every event
  stage 2 would drop as too late is routed, and every event not routed is one stage 2 still
  counts. A routed event goes to the history lane whole (header `routed`); the live lane's
  stage 2 only notes its time in the entity's sequence of final events (so the next live
  event's gap is exact) and counts it (`late_events_total{outcome="routed"}`). The history
  lane first brings in the stored events of its windows (copies.py, expansion.py), so the
  windows it re-emits hold the live events too.
- **Idle history.** The history lane's watermark never follows the wall clock (history is
  older than the clock by design). When its input is drained and has been quiet for the
  idle time, the lane has been told all it will be told for now: its watermark moves to the
  end of the largest window holding its newest event, plus the lateness, so every window
  holding imported events closes (`flush_mark`).
- **Versions.** Both lanes emit a window with the same key; the store keeps the highest
  `version` (ReplacingMergeTree). The history lane's versions are offset by
  `HISTORY_VERSION_BASE` (2^32): for a window both lanes emitted, the history lane's row,
  computed in order after the period was imported from every event of the window (its
  own, and the stored ones it was given as copies: copies.py), wins whatever the live
  lane's correction count; within a lane the later correction wins, as before. It only
  re-emits windows the live lane will never change again (closed and past its late
  retention: `rhythm backfill` leaves out newer history). A tenant the history lane
  computes again from the start (a *rewind*: tenants.py) adds its epoch above the
  corrections (`epoch_version`), so the new computation's rows win over the old one's.
"""

from __future__ import annotations

from rhythm.schemas.topics import HISTORY_LANE

#: Added to the history lane's signal versions (the store's version column is UInt64).
HISTORY_VERSION_BASE = 1 << 32
#: A rewound tenant's epoch n adds n << EPOCH_SHIFT (tenants.py): each computation's own
#: corrections stay below 2^EPOCH_SHIFT, so the latest epoch's row wins.
EPOCH_SHIFT = 40


def too_late(
    ts: int,
    watermark: int,
    window_sizes_ms: tuple[int, ...],
    lateness_ms: int,
    late_retention_ms: int,
) -> bool:
    """Whether an event at `ts` meets only windows closed and past retention at `watermark`
    (entity.py's TOO_LATE, which depends on nothing but the times)."""
    return all(
        ts - ts % size + size + lateness_ms + late_retention_ms <= watermark
        for size in window_sizes_ms
    )


def too_late_before(
    watermark: int, window_sizes_ms: tuple[int, ...], lateness_ms: int, late_retention_ms: int
) -> int:
    """The time every event before which, and none at or after, is `too_late` at
    `watermark`: one comparison per event instead of one per window size (a window ends by
    `watermark - lateness - retention` exactly when it starts before that time rounded down
    to its size)."""
    mark = watermark - lateness_ms - late_retention_ms
    return min(mark - mark % size for size in window_sizes_ms)


def flush_mark(newest: int, window_sizes_ms: tuple[int, ...], lateness_ms: int) -> int:
    """The watermark that closes every window holding an event at `newest` or before."""
    return max(newest - newest % size + size for size in window_sizes_ms) + lateness_ms


def signal_version(lane: str, version: int) -> int:
    """A window's version as published by `lane` (see the module's "Versions")."""
    return version + HISTORY_VERSION_BASE if lane == HISTORY_LANE else version


def epoch_version(version: int, epoch: int) -> int:
    """A rewound tenant's window version in its `epoch` (module doc, "Versions")."""
    return version + (epoch << EPOCH_SHIFT)


def lane_of_version(version: int) -> str:
    """Which lane published a window's version."""
    return HISTORY_LANE if version > HISTORY_VERSION_BASE else "live"

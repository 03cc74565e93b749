"""Is a peer's output the windows it should be? The pure checks behind the peers table.

The reference (`reference_windows`) is computed here from the input messages themselves, by
none of the peers' code: each event counted once by event_id (the first copy to arrive), for
every entity it touches (actor, object, target, each distinct tag), in tumbling windows of
its own time; an event later than `drop_after_ms` past its window's end, behind the newest
event time read before it, is left out (Rhythm's lateness + late retention, Quix's grace) and
counted. `check` compares a peer's windows with it: every window the peer emitted must be
in the reference and equal; the reference's windows the peer did not emit are counted (each
peer closes windows on its own clock, so the newest may still be open) and shown.

Compared per (entity key, window size, window start):
- `event_count` and `weight_max` exactly,
- `weight_sum` to a relative 1e-9 (the summation order differs).
The gap fields are not compared: Quix sees an entity's events in arrival order, Rhythm in
event-time order after its allowed lateness, and the simulator's arrival jitter makes them
differ by design. Rhythm's highest `version` of a window is the one compared; for Faust, the
last value of each window key in its tables' changelogs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rhythm.schemas.keys import SEP, EntityKey

COMPARED = ("event_count", "weight_sum", "weight_max")

WindowKey = tuple[str, int, int]  # (tenant␟role␟type␟id, window_seconds, window_start ms)


def rhythm_windows(signals: Iterable[Mapping[str, Any]]) -> dict[WindowKey, Mapping[str, Any]]:
    """Rhythm's signal records by window, highest version kept."""
    out: dict[WindowKey, Mapping[str, Any]] = {}
    for s in signals:
        entity = EntityKey.of(s).encode()
        key = (entity, int(s["window_seconds"]), int(s["window_start"]))
        if key not in out or out[key]["version"] < s["version"]:
            out[key] = s
    return out


def faust_windows(
    changelogs: Iterable[tuple[int, Sequence[Any], Sequence[Any] | None]],
) -> dict[WindowKey, Mapping[str, Any]]:
    """The plain Faust peer's windowed tables from their changelogs, in log order:
    (window seconds, key `[entity, [start s, end s]]`, value `[count, sum, max]`), the last
    value of each key kept (a `None` value, a deletion, removes it)."""
    out: dict[WindowKey, Mapping[str, Any]] = {}
    for size, key, value in changelogs:
        entity, (start_s, _end_s) = key
        window = (str(entity), int(size), round(float(start_s) * 1000))
        if value is None:
            out.pop(window, None)
            continue
        count, total, top = value
        out[window] = {"event_count": count, "weight_sum": total, "weight_max": top}
    return out


def entity_keys(record: Mapping[str, Any]) -> list[str]:
    """The entities an event counts for: the contract's rule, written here once more."""
    tenant = record["tenant"]
    keys = [SEP.join((tenant, "actor", record["actor_type"], record["actor_id"]))]
    for role in ("object", "target"):
        entity_type = record.get(f"{role}_type")
        if entity_type is not None:
            keys.append(SEP.join((tenant, role, entity_type, record[f"{role}_id"])))
    for tag in dict.fromkeys(record.get("tags") or ()):
        keys.append(SEP.join((tenant, "tag", "tag", tag)))
    return keys


@dataclass
class Reference:
    windows: dict[WindowKey, dict[str, Any]]
    events: int = 0  # distinct events counted
    duplicates: int = 0  # copies of an event already counted
    dropped: int = 0  # (event, window size) pairs left out as too late


def reference_windows(
    records: Iterable[Mapping[str, Any]],
    window_seconds: Sequence[int] = (3600, 86400),
    drop_after_ms: int | None = None,
) -> Reference:
    """The windows every peer should emit, from the decoded input records in log order."""
    ref = Reference({})
    seen: set[str] = set()
    newest = None
    for record in records:
        event_id = record["event_id"]
        if event_id in seen:
            ref.duplicates += 1
            continue
        seen.add(event_id)
        ref.events += 1
        ts = int(record["occurred_at"])
        weight = float(record.get("weight", 1.0))
        keys = entity_keys(record)
        for size in window_seconds:
            size_ms = size * 1000
            start = ts - ts % size_ms
            late = newest is not None and start + size_ms + (drop_after_ms or 0) <= newest
            if drop_after_ms is not None and late:
                ref.dropped += 1
                continue
            for key in keys:
                window = ref.windows.get((key, size, start))
                if window is None:
                    ref.windows[(key, size, start)] = {
                        "event_count": 1,
                        "weight_sum": weight,
                        "weight_max": weight,
                    }
                else:
                    window["event_count"] += 1
                    window["weight_sum"] += weight
                    window["weight_max"] = max(window["weight_max"], weight)
        newest = ts if newest is None else max(newest, ts)
    return ref


def quix_windows(rows: Iterable[Mapping[str, Any]]) -> dict[WindowKey, Mapping[str, Any]]:
    """The Quix peer's rows (`key`, `window_seconds`, `start`, aggregates) by window."""
    return {(r["key"], int(r["window_seconds"]), int(r["start"])): r for r in rows}


def _same(field_name: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if field_name == "weight_sum":
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return bool(float(a) == float(b))


@dataclass
class Check:
    """A peer's windows against the reference."""

    emitted: int = 0
    equal: int = 0
    extra: int = 0  # emitted, not in the reference
    missing: int = 0  # in the reference, not emitted (still open on the peer's clock)
    reference: int = 0
    examples: list[str] = field(default_factory=list)
    missing_starts: tuple[int, int] | None = None  # the oldest and newest not emitted (ms)

    @property
    def all_equal(self) -> bool:
        """Every emitted window is in the reference and equal (and something was emitted)."""
        return self.emitted > 0 and self.equal == self.emitted and self.extra == 0

    def summary(self) -> str:
        text = (
            f"{self.equal:,} of {self.emitted:,} windows emitted equal the reference "
            f"({', '.join(COMPARED)}); {self.extra:,} not in it; "
            f"{self.missing:,} of its {self.reference:,} not emitted"
        )
        if self.missing_starts:
            oldest, newest = (_utc(ms) for ms in self.missing_starts)
            text += f" (starting {oldest} to {newest})"
        return text


def check(
    reference: Mapping[WindowKey, Mapping[str, Any]],
    peer: Mapping[WindowKey, Mapping[str, Any]],
    max_examples: int = 5,
) -> Check:
    result = Check(emitted=len(peer), reference=len(reference))
    for key, theirs in peer.items():
        mine = reference.get(key)
        if mine is None:
            result.extra += 1
            if len(result.examples) < max_examples:
                result.examples.append(f"{key[0].replace(SEP, '/')} {key[1]}s@{key[2]}: extra")
            continue
        diffs = [f for f in COMPARED if not _same(f, mine[f], theirs[f])]
        if not diffs:
            result.equal += 1
        elif len(result.examples) < max_examples:
            result.examples.append(
                f"{key[0].replace(SEP, '/')} {key[1]}s@{key[2]}: "
                + ", ".join(f"{f} {theirs[f]} (reference {mine[f]})" for f in diffs)
            )
    starts = [key[2] for key in reference if key not in peer]
    result.missing = len(starts)
    if starts:
        result.missing_starts = (min(starts), max(starts))
    return result


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")

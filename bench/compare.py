"""Is the Quix peer's output the same as Rhythm's? The pure check behind the peers table.

Compared per (entity key, window size, window start) present in both outputs (each side
closes windows on its own clock: Rhythm on the minimum watermark over the source partitions
plus its lateness, Quix per partition plus its grace, so the newest windows may be closed on
one side only; those are counted, not compared):
- `event_count` and `weight_max` exactly,
- `weight_sum` to a relative 1e-9 (the summation order differs).
The gap fields are not compared: Quix sees an entity's events in arrival order, Rhythm in
event-time order after its allowed lateness, and the simulator's arrival jitter makes them
differ by design. Rhythm's highest `version` of a window is the one compared.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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


def quix_windows(rows: Iterable[Mapping[str, Any]]) -> dict[WindowKey, Mapping[str, Any]]:
    """The Quix peer's rows (`key`, `window_seconds`, `start`, aggregates) by window."""
    return {(r["key"], int(r["window_seconds"]), int(r["start"])): r for r in rows}


@dataclass
class Comparison:
    both: int = 0
    equal: int = 0
    only_rhythm: int = 0
    only_other: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def all_equal(self) -> bool:
        return self.both > 0 and self.equal == self.both

    def summary(self) -> str:
        return (
            f"{self.equal:,} of {self.both:,} windows closed on both sides equal "
            f"({', '.join(COMPARED)}); closed only by Rhythm {self.only_rhythm:,}, "
            f"only by the peer {self.only_other:,}"
        )


def _same(field_name: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if field_name == "weight_sum":
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return bool(float(a) == float(b))


def compare(
    rhythm: Mapping[WindowKey, Mapping[str, Any]],
    other: Mapping[WindowKey, Mapping[str, Any]],
    max_examples: int = 5,
) -> Comparison:
    result = Comparison()
    for key, mine in rhythm.items():
        theirs = other.get(key)
        if theirs is None:
            result.only_rhythm += 1
            continue
        result.both += 1
        diffs = [f for f in COMPARED if not _same(f, mine[f], theirs[f])]
        if not diffs:
            result.equal += 1
        elif len(result.examples) < max_examples:
            entity = key[0].replace(SEP, "/")
            result.examples.append(
                f"{entity} {key[1]}s@{key[2]}: "
                + ", ".join(f"{f} {mine[f]} != {theirs[f]}" for f in diffs)
            )
    result.only_other = sum(1 for key in other if key not in rhythm)
    return result

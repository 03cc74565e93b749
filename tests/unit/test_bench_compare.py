"""The benchmark's output-equality check (bench/compare.py): what counts as the same signals."""

from __future__ import annotations

from typing import Any

from bench.compare import compare, quix_windows, rhythm_windows

from rhythm.schemas.keys import SEP


def _signal(entity_id: str, count: int, total: float, top: float, version: int = 1) -> Any:
    return {
        "tenant": "acme",
        "role": "actor",
        "entity_type": "user",
        "entity_id": entity_id,
        "window_seconds": 3600,
        "window_start": 3_600_000,
        "event_count": count,
        "weight_sum": total,
        "weight_max": top,
        "version": version,
    }


def _row(entity_id: str, count: int, total: float, top: float, start: int = 3_600_000) -> Any:
    key = SEP.join(("acme", "actor", "user", entity_id))
    return {
        "key": key,
        "window_seconds": 3600,
        "start": start,
        "end": start + 3_600_000,
        "event_count": count,
        "weight_sum": total,
        "weight_max": top,
    }


def test_equal_windows_match_despite_summation_order() -> None:
    rhythm = rhythm_windows([_signal("u1", 3, 0.1 + 0.2 + 0.3, 0.3)])
    quix = quix_windows([_row("u1", 3, 0.3 + 0.2 + 0.1, 0.3)])
    result = compare(rhythm, quix)
    assert result.all_equal
    assert (result.both, result.equal, result.only_rhythm, result.only_other) == (1, 1, 0, 0)


def test_a_different_count_is_reported_with_an_example() -> None:
    result = compare(
        rhythm_windows([_signal("u1", 3, 6.0, 3.0)]), quix_windows([_row("u1", 2, 6.0, 3.0)])
    )
    assert not result.all_equal
    assert result.equal == 0 and result.both == 1
    assert "event_count 3 != 2" in result.examples[0]


def test_the_highest_rhythm_version_is_compared() -> None:
    rhythm = rhythm_windows([_signal("u1", 2, 4.0, 2.0), _signal("u1", 3, 6.0, 2.0, version=2)])
    result = compare(rhythm, quix_windows([_row("u1", 3, 6.0, 2.0)]))
    assert result.all_equal


def test_windows_closed_on_one_side_only_are_counted_not_compared() -> None:
    rhythm = rhythm_windows([_signal("u1", 1, 1.0, 1.0), _signal("u2", 1, 1.0, 1.0)])
    quix = quix_windows([_row("u1", 1, 1.0, 1.0), _row("u3", 5, 5.0, 1.0, start=0)])
    result = compare(rhythm, quix)
    assert (result.both, result.equal, result.only_rhythm, result.only_other) == (1, 1, 1, 1)
    assert result.all_equal


def test_nothing_in_common_is_not_equal() -> None:
    result = compare(rhythm_windows([_signal("u1", 1, 1.0, 1.0)]), {})
    assert not result.all_equal

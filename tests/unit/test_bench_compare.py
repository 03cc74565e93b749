"""The benchmark's output checks (bench/compare.py): the reference and what counts as equal."""

from __future__ import annotations

from typing import Any

from bench.compare import (
    check,
    faust_windows,
    quix_windows,
    reference_windows,
    rhythm_windows,
)

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


def test_peer_windows_match_despite_summation_order() -> None:
    rhythm = rhythm_windows([_signal("u1", 3, 0.1 + 0.2 + 0.3, 0.3)])
    quix = quix_windows([_row("u1", 3, 0.3 + 0.2 + 0.1, 0.3)])
    result = check(rhythm, quix)
    assert result.all_equal
    assert (result.emitted, result.equal, result.extra, result.missing) == (1, 1, 0, 0)


def test_the_highest_rhythm_version_is_compared() -> None:
    rhythm = rhythm_windows([_signal("u1", 2, 4.0, 2.0), _signal("u1", 3, 6.0, 2.0, version=2)])
    assert check(rhythm, quix_windows([_row("u1", 3, 6.0, 2.0)])).all_equal
    assert not check(rhythm, quix_windows([_row("u1", 2, 4.0, 2.0)])).all_equal


def test_windows_not_emitted_are_counted_not_compared() -> None:
    rhythm = rhythm_windows([_signal("u1", 1, 1.0, 1.0), _signal("u2", 1, 1.0, 1.0)])
    result = check(rhythm, quix_windows([_row("u1", 1, 1.0, 1.0)]))
    assert (result.emitted, result.equal, result.extra, result.missing) == (1, 1, 0, 1)
    assert result.all_equal


def _event(event_id: str, ts: int, weight: float = 1.0, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "tenant": "acme",
        "actor_type": "user",
        "actor_id": "u1",
        "occurred_at": ts,
        "weight": weight,
        **extra,
    }


def _key(role: str, entity_type: str, entity_id: str) -> str:
    return SEP.join(("acme", role, entity_type, entity_id))


def test_reference_counts_each_event_once_for_every_entity_it_touches() -> None:
    events = [
        _event("e1", 1_000, 2.0, object_type="doc", object_id="d1", tags=["x", "x", "y"]),
        _event("e1", 1_000, 2.0, object_type="doc", object_id="d1", tags=["x", "x", "y"]),
        _event("e2", 3_601_000, 5.0),
    ]
    ref = reference_windows(events, (3600,))
    assert (ref.events, ref.duplicates, ref.dropped) == (2, 1, 0)
    actor = ref.windows[(_key("actor", "user", "u1"), 3600, 0)]
    assert (actor["event_count"], actor["weight_sum"], actor["weight_max"]) == (1, 2.0, 2.0)
    assert ref.windows[(_key("actor", "user", "u1"), 3600, 3_600_000)]["weight_sum"] == 5.0
    assert ref.windows[(_key("object", "doc", "d1"), 3600, 0)]["event_count"] == 1
    assert ref.windows[(_key("tag", "tag", "x"), 3600, 0)]["event_count"] == 1  # tag given twice
    assert (_key("tag", "tag", "y"), 3600, 0) in ref.windows
    assert len(ref.windows) == 5


def test_reference_leaves_out_events_later_than_the_allowed_delay() -> None:
    day = 86_400_000
    events = [_event("e1", 10 * day), _event("late", 0), _event("ok", 9 * day + 1)]
    ref = reference_windows(events, (3600,), drop_after_ms=day)
    assert ref.dropped == 1
    assert (_key("actor", "user", "u1"), 3600, 0) not in ref.windows
    assert ref.windows[(_key("actor", "user", "u1"), 3600, 9 * day)]["event_count"] == 1
    # without a limit every event counts
    assert reference_windows(events, (3600,)).dropped == 0


def test_faust_windows_keep_each_keys_last_changelog_value() -> None:
    key = _key("actor", "user", "u1")
    changelog = [
        (3600, [key, [3600.0, 7199.9]], [1, 1.0, 1.0]),
        (3600, [key, [3600.0, 7199.9]], [2, 3.0, 2.0]),
        (3600, [key, [0.0, 3599.9]], [1, 1.0, 1.0]),
        (3600, [key, [0.0, 3599.9]], None),  # a deletion
    ]
    windows = faust_windows(changelog)
    assert list(windows) == [(key, 3600, 3_600_000)]
    assert windows[(key, 3600, 3_600_000)] == {
        "event_count": 2,
        "weight_sum": 3.0,
        "weight_max": 2.0,
    }


def test_check_against_the_reference() -> None:
    ref = reference_windows([_event("e1", 1_000, 0.1), _event("e2", 2_000, 0.2)], (3600,))
    key = (_key("actor", "user", "u1"), 3600, 0)
    same = {key: {"event_count": 2, "weight_sum": 0.2 + 0.1, "weight_max": 0.2}}
    result = check(ref.windows, same)
    assert result.all_equal and (result.emitted, result.equal, result.missing) == (1, 1, 0)

    short = {key: {"event_count": 1, "weight_sum": 0.1, "weight_max": 0.1}}
    result = check(ref.windows, short)
    assert not result.all_equal
    assert "event_count 1 (reference 2)" in result.examples[0]

    extra_key = (_key("actor", "user", "u9"), 3600, 0)
    result = check(ref.windows, {**same, extra_key: same[key]})
    assert not result.all_equal and result.extra == 1

    nothing = check(ref.windows, {})
    assert not nothing.all_equal and nothing.missing == 1
    assert "1 of its 1 not emitted (starting 1970-01-01 00:00 UTC to 1970-01-01 00:00 UTC)" in (
        nothing.summary()
    )

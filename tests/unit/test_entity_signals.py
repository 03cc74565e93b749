"""Signal math on plain data: windows, gaps, lateness, silence."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import pytest

from rhythm.processors.signals.calendar import BusinessCalendar
from rhythm.processors.signals.entity import (
    ADDED,
    LATE,
    TOO_LATE,
    AdvanceResult,
    EntityState,
    SignalConfig,
    add_event,
    advance,
    next_due_ms,
)
from rhythm.processors.signals.rhythm import SilenceConfig, SilenceRule

MIN = 60_000
HOUR = 3_600_000
CFG = SignalConfig(window_sizes_ms=(HOUR,), lateness_ms=5 * MIN, late_retention_ms=HOUR)
# Every day a working day, all day: the rhythm is one rate, as for a round-the-clock entity.
ALWAYS = BusinessCalendar(working_days=frozenset(range(7)), start_hour=0, end_hour=24)
RULE = SilenceRule(ALWAYS, SilenceConfig(min_gaps=8, min_span_ms=HOUR))


def reference(events: list[tuple[int, float]], size: int) -> dict[int, dict[str, Any]]:
    """Signals computed the plain way: sort, then bucket. Written apart from the processor."""
    events = sorted(events)
    out: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"event_count": 0, "weight_sum": 0.0, "weight_max": float("-inf"), "gaps": []}
    )
    previous = None
    for ts, weight in events:
        w = out[ts // size * size]
        w["event_count"] += 1
        w["weight_sum"] += weight
        w["weight_max"] = max(w["weight_max"], weight)
        if previous is not None:
            w["gaps"].append(ts - previous)
        previous = ts
    return out


def run(
    arrivals: list[tuple[int, float]],
    watermark_lag: int,
    cfg: SignalConfig = CFG,
    rule: SilenceRule | None = RULE,
) -> tuple[EntityState, list[dict[str, Any]], AdvanceResult]:
    """Feed events in arrival order with a watermark trailing the newest time by `lag`,
    then let the watermark run past everything."""
    state = EntityState()
    emitted: list[dict[str, Any]] = []
    alerts = AdvanceResult()
    watermark = 0
    for ts, weight in arrivals:
        watermark = max(watermark, ts - watermark_lag)
        add_event(state, ts, weight, watermark, cfg, alerts, rule)
        result = advance(state, watermark, cfg, rule)
        emitted.extend(result.signals)
        alerts.alerts.extend(result.alerts)
    final = advance(state, 10**15, cfg, rule)
    emitted.extend(final.signals)
    alerts.alerts.extend(final.alerts)
    return state, emitted, alerts


def test_out_of_order_within_lateness_equals_sorted_reference() -> None:
    rng = random.Random(1)
    times = sorted(rng.randrange(0, 10 * HOUR) for _ in range(500))
    events = [(t, round(rng.random() * 10, 3)) for t in times]
    # shuffle locally: each event moved by at most 4 minutes of event time
    arrivals = sorted(events, key=lambda e: e[0] + rng.randrange(0, 4 * MIN))
    _, emitted, _ = run(arrivals, watermark_lag=0)
    expected = reference(events, HOUR)
    assert {s["window_start"] for s in emitted} == set(expected)
    for signal in emitted:
        ref = expected[signal["window_start"]]
        assert signal["version"] == 1
        assert signal["event_count"] == ref["event_count"]
        assert signal["weight_sum"] == pytest.approx(ref["weight_sum"])
        assert signal["weight_max"] == ref["weight_max"]
        assert signal["gap_count"] == len(ref["gaps"])
        if ref["gaps"]:
            assert signal["gap_min_s"] == min(ref["gaps"]) / 1000
            assert signal["gap_max_s"] == max(ref["gaps"]) / 1000
            assert signal["gap_mean_s"] == pytest.approx(sum(ref["gaps"]) / len(ref["gaps"]) / 1000)


def test_each_window_is_emitted_once_when_the_watermark_passes_end_plus_lateness() -> None:
    state = EntityState()
    out = AdvanceResult()
    add_event(state, 10 * MIN, 1.0, 10 * MIN, CFG, out)
    assert advance(state, HOUR + 5 * MIN - 1, CFG).signals == []
    first = advance(state, HOUR + 5 * MIN, CFG).signals
    assert [s["window_start"] for s in first] == [0]
    assert advance(state, 2 * HOUR, CFG).signals == []


def test_gaps_across_window_borders_count_in_the_later_events_window() -> None:
    _, emitted, _ = run([(55 * MIN, 1.0), (65 * MIN, 1.0)], watermark_lag=0)
    by_start = {s["window_start"]: s for s in emitted}
    assert by_start[0]["gap_count"] == 0 and by_start[0]["gap_min_s"] is None
    assert by_start[HOUR]["gap_count"] == 1
    assert by_start[HOUR]["gap_min_s"] == 600.0
    assert by_start[HOUR]["silence_before_s"] == 600.0


def test_first_event_ever_has_no_gap() -> None:
    _, emitted, _ = run([(MIN, 2.0)], watermark_lag=0)
    assert emitted[0]["gap_count"] == 0
    assert emitted[0]["gap_mean_s"] is None


def test_late_event_in_an_emitted_window_emits_a_corrected_version() -> None:
    state = EntityState()
    out = AdvanceResult()
    add_event(state, 10 * MIN, 1.0, 10 * MIN, CFG, out)
    add_event(state, 20 * MIN, 1.0, 20 * MIN, CFG, out)
    first = advance(state, HOUR + 10 * MIN, CFG).signals
    assert [(s["event_count"], s["version"]) for s in first] == [(2, 1)]
    # older than the last final event: counted, flagged late, no gap
    assert add_event(state, 15 * MIN, 3.0, HOUR + 10 * MIN, CFG, out) == LATE
    again = advance(state, HOUR + 10 * MIN, CFG).signals
    assert [(s["event_count"], s["weight_max"], s["late_count"], s["version"]) for s in again] == [
        (3, 3.0, 1, 2)
    ]
    assert again[0]["gap_count"] == 1


def test_late_event_newer_than_the_last_final_one_extends_the_gaps_exactly() -> None:
    state = EntityState()
    out = AdvanceResult()
    add_event(state, 10 * MIN, 1.0, 10 * MIN, CFG, out)
    advance(state, 30 * MIN, CFG)
    assert add_event(state, 20 * MIN, 1.0, 30 * MIN, CFG, out) == LATE
    signals = advance(state, 2 * HOUR, CFG).signals
    assert signals[0]["gap_count"] == 1 and signals[0]["gap_min_s"] == 600.0


def test_too_late_events_are_reported_not_counted() -> None:
    state = EntityState()
    out = AdvanceResult()
    add_event(state, 10 * MIN, 1.0, 10 * MIN, CFG, out)
    advance(state, 3 * HOUR, CFG)  # window [0, 1h) closed and past its retention
    assert add_event(state, 11 * MIN, 1.0, 3 * HOUR, CFG, out) == TOO_LATE
    assert advance(state, 4 * HOUR, CFG).signals == []


def test_on_time_events_are_added() -> None:
    state = EntityState()
    assert add_event(state, 10 * MIN, 1.0, 12 * MIN, CFG, AdvanceResult()) == ADDED


def steady(n: int, every: int, start: int = 0) -> list[tuple[int, float]]:
    return [(start + i * every, 1.0) for i in range(n)]


def test_silence_needs_history_and_fires_once_then_resumes() -> None:
    events = steady(20, 10 * MIN)  # a steady pace, a gap of 10 min
    state, _, out = run(events, watermark_lag=0)
    # after the stream ends the watermark runs far ahead: one silence alert, no resume yet
    assert [a.kind for a in out.alerts] == ["silence"]
    alert = out.alerts[0]
    assert state.rhythm is not None and state.rhythm.due_ms == alert.fired_at_ms
    assert alert.last_event_at_ms == 190 * MIN
    # measured in expected events: at least 3 (a young entity's tail is assumed heavier
    # than Poisson until its history says otherwise)
    assert 30 * MIN <= alert.expected_within_ms <= 4 * HOUR
    assert alert.details["expected_events"] >= 3
    assert 0 < alert.score < 1


def test_replayed_history_gives_the_same_alerts_as_live() -> None:
    events = steady(20, 10 * MIN) + steady(5, 10 * MIN, start=20 * HOUR)
    _, _, live = run(events, watermark_lag=0)
    # replay: every event arrives before the watermark moves at all
    state = EntityState()
    out = AdvanceResult()
    for ts, w in events:
        add_event(state, ts, w, 0, CFG, out, RULE)
    out.alerts.extend(advance(state, 10**15, CFG, RULE).alerts)
    assert [(a.kind, a.fired_at_ms) for a in out.alerts] == [
        (a.kind, a.fired_at_ms) for a in live.alerts
    ]
    assert [a.kind for a in live.alerts] == ["silence", "resumed", "silence"]


def test_no_silence_alert_without_enough_history() -> None:
    _, _, out = run(steady(7, 10 * MIN), watermark_lag=0)
    assert out.alerts == []


def test_no_silence_alert_for_an_entity_without_a_rule() -> None:
    state, _, out = run(steady(40, 10 * MIN), watermark_lag=0, rule=None)
    assert out.alerts == [] and state.rhythm is None


def test_next_due_is_when_advance_has_work() -> None:
    state = EntityState()
    add_event(state, 10 * MIN, 1.0, 10 * MIN, CFG, AdvanceResult(), RULE)
    due = next_due_ms(state, CFG, RULE)
    assert due == 10 * MIN + 5 * MIN + 1
    assert advance(state, due - 1, CFG).signals == []
    assert state.pending == [10 * MIN]
    advance(state, due, CFG)
    assert state.pending == []


# -- a hot entity: bounded state whatever its rate ------------------------------------------

HOT_CFG = SignalConfig(
    window_sizes_ms=(MIN, HOUR), lateness_ms=5 * MIN, late_retention_ms=HOUR, max_pending=1000
)


def _assert_exact(emitted: list[dict[str, Any]], events: list[tuple[int, float]]) -> None:
    latest: dict[tuple[int, int], dict[str, Any]] = {}
    for signal in emitted:
        latest[(signal["window_seconds"], signal["window_start"])] = signal
    for size in HOT_CFG.window_sizes_ms:
        expected = reference(events, size)
        got = {start: s for (secs, start), s in latest.items() if secs * 1000 == size}
        assert set(got) == set(expected)
        for start, ref in expected.items():
            signal = got[start]
            assert signal["event_count"] == ref["event_count"]
            assert signal["weight_sum"] == pytest.approx(ref["weight_sum"])
            assert signal["weight_max"] == ref["weight_max"]
            assert signal["gap_count"] == len(ref["gaps"])
            assert signal["gap_min_s"] == min(ref["gaps"]) / 1000
            assert signal["gap_max_s"] == max(ref["gaps"]) / 1000
            assert signal["gap_mean_s"] == pytest.approx(sum(ref["gaps"]) / len(ref["gaps"]) / 1000)
            assert signal["late_count"] == 0


def test_a_hot_entity_in_order_keeps_bounded_state_and_exact_signals() -> None:
    """1,000 events/s for 10 minutes of event time (ties included), in order: the pending
    buffer never passes its cap, and every window is exact, gaps and all."""
    rng = random.Random(7)
    events = sorted(
        (rng.randrange(0, 10 * MIN), float(rng.randrange(1, 100))) for _ in range(600_000)
    )
    state = EntityState()
    emitted: list[dict[str, Any]] = []
    out = AdvanceResult()
    biggest = 0
    for i, (ts, weight) in enumerate(events):
        watermark = ts  # the watermark follows the newest event: nothing is final for 5 min
        assert add_event(state, ts, weight, watermark, HOT_CFG, out) == ADDED
        biggest = max(biggest, len(state.pending))
        if i % 5000 == 0:
            emitted.extend(advance(state, watermark, HOT_CFG).signals)
    emitted.extend(advance(state, 10**15, HOT_CFG).signals)
    assert biggest <= HOT_CFG.max_pending
    assert out.became_hot and out.early > 590_000
    _assert_exact(emitted, events)


def test_a_hot_entity_counts_an_event_older_than_its_early_final_ones_as_late() -> None:
    state = EntityState()
    out = AdvanceResult()
    cfg = HOT_CFG
    for i in range(cfg.max_pending + 1):
        add_event(state, MIN + i, 1.0, MIN + i, cfg, out)
    assert out.early == (cfg.max_pending + 1) // 2 and state.last_ms is not None
    # Within the lateness, but older than the events already made final: counted, no gap.
    assert add_event(state, MIN - 10, 5.0, MIN + cfg.max_pending, cfg, out) == LATE
    final = advance(state, 10**15, cfg)
    minute = next(s for s in final.signals if s["window_seconds"] == 60 and s["window_start"] == 0)
    assert minute["event_count"] == 1 and minute["late_count"] == 1
    assert minute["gap_count"] == 0
    total = sum(s["event_count"] for s in final.signals if s["window_seconds"] == 3600)
    assert total == cfg.max_pending + 2


def test_a_hot_entity_cools_down_once_its_pending_events_are_final() -> None:
    state = EntityState()
    out = AdvanceResult()
    for i in range(HOT_CFG.max_pending + 1):
        add_event(state, i, 1.0, i, HOT_CFG, out)
    assert state.hot
    advance(state, 10**9, HOT_CFG)
    assert not state.hot and not state.pending


def test_a_held_watermark_keeps_a_busy_entitys_signals_exact() -> None:
    """A source partition not heard from holds the watermark while a busy (not hot) entity's
    events pile up, out of order within the lateness: past the cap, only events more than the
    lateness behind its newest are made final, so every gap is still exact."""
    rng = random.Random(11)
    events = [(t, 1.0) for t in sorted(rng.randrange(0, 30 * HOUR) for _ in range(20_000))]
    arrivals = sorted(events, key=lambda e: e[0] + rng.randrange(0, 4 * MIN))
    state, out, emitted = EntityState(), AdvanceResult(), []
    for ts, weight in arrivals:
        assert add_event(state, ts, weight, 0, HOT_CFG, out) == ADDED  # watermark held at 0
        assert len(state.pending) <= HOT_CFG.max_pending
    emitted.extend(advance(state, 10**15, HOT_CFG).signals)
    assert out.early > 10_000 and not out.became_hot
    _assert_exact(emitted, events)

"""The history lane's pure parts: the routing decision, the idle flush, the version merge
rule, the live lane's note of a routed event, and `rhythm backfill`'s selection, order and
progress (processors/lanes.py, stack/backfill.py)."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import pytest

from rhythm.processors.lanes import (
    HISTORY_VERSION_BASE,
    flush_mark,
    lane_of_version,
    signal_version,
    too_late,
    too_late_before,
)
from rhythm.processors.messages import ROUTED, UpdatesMessage
from rhythm.processors.settings import ProcessorSettings
from rhythm.processors.signals.conversation import ReplyConfig
from rhythm.processors.signals.entity import SignalConfig
from rhythm.processors.stage1 import Stage1Config, Stage1Partition
from rhythm.processors.stage2 import Stage2Partition
from rhythm.schemas import decode_event
from rhythm.schemas.outputs import Alert
from rhythm.schemas.topics import HISTORY_GROUP, HISTORY_TOPIC, HISTORY_UPDATES_TOPIC
from rhythm.stack.backfill import Selection, Tracker, in_order, read_file

from .test_stages import wire

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
NOW = 1_800_000_000_000 - 1_800_000_000_000 % DAY + 10 * HOUR  # 10:00 UTC of some day
L = 5 * MIN
SIZES = (HOUR, DAY)


def test_too_late_is_when_every_window_is_past_its_retention() -> None:
    day_start = NOW - NOW % DAY
    # the day before yesterday: its day window closed over a day (+ lateness) ago
    assert too_late(day_start - DAY - 1, NOW, SIZES, L, DAY)
    # yesterday's day window closed at midnight: still correctable for a day
    assert not too_late(day_start - 1, NOW, SIZES, L, DAY)
    # the boundary is exact: end + lateness + retention <= watermark
    end = day_start - DAY
    assert too_late(end - 1, end + L + DAY, SIZES, L, DAY)
    assert not too_late(end - 1, end + L + DAY - 1, SIZES, L, DAY)


def test_the_idle_flush_closes_every_window_holding_the_newest_event() -> None:
    newest = NOW + 17 * MIN
    mark = flush_mark(newest, SIZES, L)
    assert mark == NOW - NOW % DAY + DAY + L  # the end of its day window, plus lateness
    for size in SIZES:
        assert newest - newest % size + size + L <= mark


def test_the_history_lanes_versions_win_and_later_corrections_win_within_a_lane() -> None:
    live = [signal_version("live", v) for v in (1, 2, 40)]
    history = [signal_version("history", v) for v in (1, 2)]
    assert max(live) < min(history)  # for one window, the store keeps the history lane's
    assert history[0] < history[1]  # and its later correction
    assert live == [1, 2, 40]
    assert {lane_of_version(v) for v in history} == {"history"}
    assert {lane_of_version(v) for v in live} == {"live"}
    assert history[1] - HISTORY_VERSION_BASE == 2
    assert history[1] < 2**64  # the store's UInt64


def test_the_history_lane_has_its_own_names_unless_given() -> None:
    s = ProcessorSettings(lane="history")
    assert (s.app_id, s.events_topic, s.updates_topic) == (
        HISTORY_GROUP,
        HISTORY_TOPIC,
        HISTORY_UPDATES_TOPIC,
    )
    assert not s.routes
    assert s.lateness_s == s.history_lateness_s == 3 * 86400
    given = ProcessorSettings(lane="history", app_id="t-h", events_topic="t.h")
    assert (given.app_id, given.events_topic) == ("t-h", "t.h")
    assert ProcessorSettings().routes
    assert not ProcessorSettings(history_topic="").routes
    # the history lane yields the CPU to the live lane unless told; it hands off its norms
    assert (
        s.niceness,
        ProcessorSettings().niceness,
        ProcessorSettings(lane="history", nice=0).niceness,
    ) == (10, 0, 0)
    assert s.hands_off and not ProcessorSettings().hands_off
    assert not ProcessorSettings(lane="history", handoff_topic="").hands_off


LIVE = Stage1Config(
    updates_partitions=1, dedup_horizon_ms=DAY + L, lateness_ms=L, window_sizes_ms=SIZES,
    late_retention_ms=DAY, route=True,
)  # fmt: skip
HISTORY = Stage1Config(
    updates_partitions=1, dedup_horizon_ms=DAY + L, lateness_ms=L, window_sizes_ms=SIZES,
    late_retention_ms=DAY, follow_clock=False,
)  # fmt: skip


def test_live_routes_what_stage2_would_drop_and_only_that() -> None:
    source = Stage1Partition(0, LIVE)
    source.process([(0, wire(NOW))], NOW, 0.0)
    old, recent = NOW - 3 * DAY, NOW - 2 * HOUR
    out = source.process([(1, wire(old, actor="b")), (2, wire(recent, actor="b"))], NOW, 1.0)
    assert [decode_event(v)["occurred_at"] for v in out.routed] == [old]
    updates = out.messages[0]["u"]
    routed = [u for u in updates if u[-1] == ROUTED]
    assert [u[1] for u in routed] == [old]  # stage 2 hears its time, marked
    assert [u[1] for u in updates if u[-1] != ROUTED] == [recent]
    assert source.watermark == NOW  # a routed event moves nothing


def test_live_routes_by_what_it_reported_an_idle_clock_included_and_remembers_it() -> None:
    source = Stage1Partition(0, LIVE)
    first = source.process([(0, wire(NOW - 10 * DAY))], NOW - 10 * DAY, 0.0)
    assert not first.routed  # nothing reported yet: nothing is too late
    assert source.tick(1, NOW, 100.0) is not None  # idle: the clock's watermark reported
    out = source.process([(1, wire(NOW - 3 * DAY, actor="b"))], NOW, 101.0)
    assert len(out.routed) == 1  # stage 2 met the clock's watermark: it would drop it
    restored = Stage1Partition(0, LIVE)
    restored.restore([(k, v) for k, v in out.writes if v is not None])
    assert restored.reported == source.reported


def test_an_idle_history_partition_closes_what_it_holds_and_never_follows_the_clock() -> None:
    source = Stage1Partition(0, HISTORY)
    assert source.tick(0, NOW, 100.0) is None  # nothing seen: nothing to close
    source.process([(0, wire(NOW - 30 * DAY))], NOW, 0.0)
    out = source.tick(1, NOW, 100.0)
    assert out is not None
    mark = out.messages[0]["wm"]
    assert out.messages[0].get("f") == 1  # a flush: no evidence that anything stayed quiet
    assert mark == flush_mark(NOW - 30 * DAY, SIZES, L)
    assert mark is not None and mark < NOW - 28 * DAY
    # a history lane routes nothing, however old
    assert not source.process([(1, wire(NOW - 40 * DAY, actor="b"))], NOW, 101.0).routed


def _stage2() -> Stage2Partition:
    return Stage2Partition(
        0, 1, SignalConfig(window_sizes_ms=(HOUR,), lateness_ms=L, late_retention_ms=HOUR),
        ReplyConfig(lateness_ms=L), _policy(),
    )  # fmt: skip


def _policy() -> Any:
    return ProcessorSettings().alert_policy()


def test_stage2_notes_a_routed_event_so_the_next_live_gap_is_exact() -> None:
    proc = _stage2()
    source = Stage1Partition(0, LIVE)
    source.process([(0, wire(NOW - 5 * HOUR, actor="c"))], NOW, 0.0)  # reported: NOW-5h
    source.reported = NOW  # as if the partition had been idle until now
    out = source.process(
        [(1, wire(NOW - 3 * DAY, actor="c")), (2, wire(NOW - 2 * HOUR, actor="c"))], NOW, 1.0
    )
    assert len(out.routed) == 1
    message: UpdatesMessage = out.messages[0]
    message["wm"] = NOW
    signals = proc.apply(message).signals + proc.apply({"p": 0, "wm": NOW + 2 * HOUR}).signals
    got = [s for s in signals if s["role"] == "actor" and s["entity_id"] == "c"]
    assert [s["event_count"] for s in got] == [1]
    # the window of the live event (2 h ago) has the gap from the routed one: 3 d - 2 h
    assert got[0]["gap_count"] == 1
    assert got[0]["gap_min_s"] == (3 * DAY - 2 * HOUR) / 1000


def test_an_alert_is_live_unless_marked_historical() -> None:
    base: dict[str, Any] = {
        "alert_id": "a", "kind": "silence", "tenant": "t", "role": "actor",
        "entity_type": "user", "entity_id": "u", "context_id": None, "fired_at": 1,
        "last_event_at": 0, "expected_within_s": 1.0, "details": {},
    }  # fmt: skip
    assert Alert.model_validate(base).historical is False
    assert Alert.model_validate({**base, "historical": True}).historical is True


def test_backfill_selects_and_sorts_by_event_time_and_rejects_invalid_lines() -> None:
    def line(ts_iso: str, tenant: str = "acme", actor: str = "u") -> bytes:
        event = {
            "tenant": tenant, "occurred_at": ts_iso, "actor": {"type": "user", "id": actor},
            "verb": "viewed",
        }  # fmt: skip
        return json.dumps(event).encode() + b"\n"

    lines = [
        line("2026-03-02T10:00:00Z"),
        line("2026-03-01T10:00:00Z"),
        b"not json\n",
        line("2026-03-01T12:00:00Z", tenant="other"),
        line("2026-02-01T00:00:00Z"),
        b"\n",
    ]
    rejects = io.StringIO()
    march = Selection("acme", 1772323200000, None)  # from 2026-03-01
    read = read_file(lines, march, rejects, now_ms=0)
    assert (read.lines, read.invalid, read.left_out) == (5, 1, 2)
    assert json.loads(rejects.getvalue())["line"] == 3
    times = [ts for ts, _ in in_order(read.events)]
    assert times == sorted(times) and len(times) == 2
    assert {decode_event(v)["tenant"] for _, v in read.events} == {"acme"}


def test_backfill_progress_gives_a_rate_and_an_eta() -> None:
    t = Tracker(total=1000, started=100.0)
    assert t.eta_s() is None  # no rate yet
    t.update(250, 1_700_000_000.0, 110.0)
    assert t.rate == pytest.approx(25.0)
    assert t.eta_s() == pytest.approx(30.0)
    assert "250/1,000 events" in t.line() and "2023-11-14" in t.line() and "ETA 30s" in t.line()
    t.update(200, None, 111.0)  # progress never goes back (a lag read mid-commit)
    assert t.done == 250 and t.event_time_s == 1_700_000_000.0
    t.update(5000, None, 120.0)
    assert t.done == 1000 and t.eta_s() == 0.0


def test_alerts_past_the_evidence_of_a_flush_are_held_back_and_it_survives_a_restart() -> None:
    proc = _stage2()
    proc.apply({"p": 0, "wm": NOW})
    proc.apply({"p": 0, "wm": NOW + DAY, "f": 1})
    assert proc.watermark == NOW + DAY and proc._evidence() == NOW
    restored = _stage2()
    restored.restore(proc.take_dirty())
    assert restored.watermark == NOW + DAY and restored._evidence() == NOW
    live = _stage2()  # the clock's watermark is evidence
    live.apply({"p": 0, "wm": NOW + DAY})
    assert live._evidence() == NOW + DAY


def test_sync_waits_for_the_live_lane_then_the_history_lane_then_the_sink(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rhythm.runtime.kafka_settings import KafkaSettings
    from rhythm.runtime.sink_sync import SyncReport
    from rhythm.stack.supervisor import sync

    hops: list[tuple[list[str], str | None]] = []

    def wait(_kafka: Any, topics: list[str], _left: float, group_id: str | None) -> SyncReport:
        hops.append((topics, group_id))
        return SyncReport(True)

    monkeypatch.setattr(sync, "wait_for_sink", wait)
    assert sync.wait_for_pipeline(KafkaSettings(), 1.0)
    assert [group for _, group in hops] == [
        "rhythm-processors", "rhythm-processors", HISTORY_GROUP, HISTORY_GROUP, "rhythm-sink",
    ]  # fmt: skip
    assert hops[2][0] == [HISTORY_TOPIC] and hops[3][0] == [HISTORY_UPDATES_TOPIC]
    hops.clear()
    assert sync.wait_for_pipeline(KafkaSettings(), 1.0, history_group=None)
    assert HISTORY_GROUP not in [group for _, group in hops]


def test_too_late_before_is_the_boundary_of_too_late_for_any_window_sizes() -> None:
    rng = random.Random(5)
    for _ in range(2_000):
        sizes = tuple(rng.choice((1_000, 5_000, 7_000, 60_000, 3_600_000, 86_400_000))
                      for _ in range(rng.randint(1, 3)))  # fmt: skip
        watermark = rng.randrange(-(10**9), 10**13)
        lateness, retention = rng.randrange(0, 10**6), rng.randrange(0, 10**8)
        before = too_late_before(watermark, sizes, lateness, retention)
        for ts in (before - 1, before, rng.randrange(-(10**9), 10**13)):
            assert too_late(ts, watermark, sizes, lateness, retention) == (ts < before)

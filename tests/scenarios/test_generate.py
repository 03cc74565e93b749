"""The scenario generator: deterministic, valid events, labels consistent with the events.

Fast (a few seconds): the "small" size only; `-m long` also checks "large"
seed 1 with the same consistency checks (about a minute).
"""

from __future__ import annotations

import bisect
import collections
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from tests.scenarios.generate import (
    DAY_MS,
    MAX_DISORDER_MS,
    MIN_HISTORY_DAYS,
    STOP_CLEARANCE,
    Scenario,
    generate,
    labels_json,
    main,
    parse_ms,
    write_jsonl,
)

from rhythm.schemas.event import validate_record

WORKFLOW_VERBS = {"assigned", "resolved", "closed"}  # staff/bot events that are not messages
LABELS = {"missed", "replied_normal", "replied_slow", "ends_thread", "ours"}


@pytest.fixture(scope="module")
def small() -> Scenario:
    return generate(seed=1, size="small")


@pytest.fixture(scope="module")
def small_b() -> Scenario:
    return generate(seed=1, size="small", variant="b")


def _unique_events(sc: Scenario) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for ev in sc.events:
        if ev["event_id"] not in seen:
            seen.add(ev["event_id"])
            out.append(ev)
    return out


def _local_date(ms: int, tz: str) -> date:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).date()


# -- checks shared by every size and variant ----------------------------------------------------


def check_events(sc: Scenario) -> None:
    ids = collections.Counter(ev["event_id"] for ev in sc.events)
    assert {k for k, n in ids.items() if n > 1} == set(sc.duplicates)
    assert all(ids[k] == 2 for k in sc.duplicates)
    first: dict[str, dict[str, Any]] = {}
    running_max = 0
    for ev in sc.events:
        validate_record(ev)
        ms = parse_ms(ev["occurred_at"])
        assert sc.start_ms <= ms < sc.end_ms
        assert running_max - ms < MAX_DISORDER_MS + 1_000  # arrival disorder under a minute
        running_max = max(running_max, ms)
        if ev["event_id"] in first:
            assert ev == first[ev["event_id"]]  # an exact re-send
        first[ev["event_id"]] = ev
    assert set(ev["tenant"] for ev in sc.events) == set(sc.tenants)


def check_waits(sc: Scenario) -> None:
    events = {ev["event_id"]: ev for ev in sc.events}
    internal = {t for cfg in sc.tenants.values() for t in cfg["internal_types"]}
    by_ctx: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for ev in events.values():
        if "context_id" in ev:
            by_ctx[ev["context_id"]].append(ev)
    labelled = {w.event_id for w in sc.wait_labels}
    # every event of a conversation carries exactly one wait label
    assert labelled == {e for evs in by_ctx.values() for e in (x["event_id"] for x in evs)}
    assert len(labelled) == len(sc.wait_labels)

    def ours_messages_after(ctx: str, ms: int) -> list[int]:
        return sorted(
            parse_ms(e["occurred_at"])
            for e in by_ctx[ctx]
            if e["actor"]["type"] in internal
            and e["verb"] not in WORKFLOW_VERBS
            and parse_ms(e["occurred_at"]) > ms
        )

    for w in sc.wait_labels:
        ev = events[w.event_id]
        assert w.label in LABELS
        assert (ev["tenant"], ev.get("context_id"), ev["verb"]) == (w.tenant, w.context_id, w.verb)
        assert (ev["actor"]["type"], ev["actor"]["id"]) == (w.actor_type, w.actor_id)
        assert parse_ms(ev["occurred_at"]) == w.sent_at_ms
        assert (w.side == "ours") == (w.actor_type in internal) == (w.label == "ours")
        if w.label == "missed":
            assert not ours_messages_after(w.context_id, w.sent_at_ms)
            assert w.replied_at_ms is None and w.due_at_ms is not None
            assert w.due_at_ms < sc.end_ms
        if w.label in ("replied_normal", "replied_slow"):
            assert w.reply_event_id is not None
            reply = events[w.reply_event_id]
            assert reply["actor"]["type"] in internal and reply["context_id"] == w.context_id
            assert w.replied_at_ms == parse_ms(reply["occurred_at"])
            assert w.replied_at_ms == ours_messages_after(w.context_id, w.sent_at_ms)[0]
            assert w.due_at_ms is not None and w.replied_at_ms <= w.due_at_ms
        if w.ambiguous:
            assert w.label in ("ends_thread", "missed") and w.side == "outside"
        if w.sent_at_ms < sc.start_ms + 2 * DAY_MS:
            assert w.cold_start
        if ev.get("in_reply_to") is not None:
            assert ev["in_reply_to"] in events  # names an earlier message of the thread
            assert events[ev["in_reply_to"]]["context_id"] == w.context_id


def check_silence(sc: Scenario) -> None:
    keys = {(s.tenant, s.role, s.entity_type, s.entity_id): s for s in sc.silence_labels}
    assert len(keys) == len(sc.silence_labels)
    times: dict[tuple[str, str, str, str], list[int]] = {k: [] for k in keys}
    for ev in _unique_events(sc):
        ms = parse_ms(ev["occurred_at"])
        for role in ("actor", "target"):
            ent = ev.get(role)
            if ent is not None:
                lst = times.get((ev["tenant"], role, ent["type"], ent["id"]))
                if lst is not None:
                    lst.append(ms)
    clearance = STOP_CLEARANCE[sc.size]
    min_history = MIN_HISTORY_DAYS[sc.size] * DAY_MS
    for key, s in keys.items():
        ts = sorted(times[key])
        cfg = sc.tenants[s.tenant]
        assert len(ts) == s.n_events and ts[0] == s.first_at_ms and ts[-1] == s.last_at_ms
        if s.stationary:
            assert s.stop_at_ms is None and s.pace_change_at_ms is None and not s.days_off
        if s.stop_kind == "stop":
            assert s.stop_at_ms == ts[-1]  # the last event: nothing after the stop
            assert s.resumes_at_ms is None
        elif s.stop_kind == "pause":
            assert s.stop_at_ms is not None and s.resumes_at_ms is not None
            k = ts.index(s.stop_at_ms)
            assert ts[k + 1] == s.resumes_at_ms  # nothing in between
            assert s.resumes_at_ms - s.stop_at_ms >= 7 * DAY_MS
        else:
            assert s.stop_at_ms is None
        if s.stop_at_ms is not None and sc.days >= (91 if sc.size == "large" else 12):
            slack = 0 if s.stop_kind == "stop" else 3 * DAY_MS  # a pause starts on a Monday
            assert s.stop_at_ms - sc.start_ms >= min_history - slack, key
        if s.stop_kind == "stop" and s.max_active_gap_ms and s.max_gap_ms:
            # the silence after the stop dwarfs any silence before it
            assert s.stop_at_ms is not None
            assert sc.end_ms - s.stop_at_ms >= clearance * s.max_active_gap_ms
            if not s.weekday_only:  # (weekday-only: on the active clock only)
                assert sc.end_ms - s.stop_at_ms >= clearance * s.max_gap_ms
        if s.weekday_only:
            for t in ts:
                assert _local_date(t, s.tz).weekday() in cfg["working_days"], (key, t)
        if s.observes_holidays == "all":
            holidays = set(cfg["holidays"])
            assert not any(_local_date(t, s.tz).isoformat() in holidays for t in ts), key
        for d in s.days_off:
            assert not any(_local_date(t, s.tz).isoformat() == d for t in ts), key
        if s.pace_change_at_ms is not None:
            assert s.pace_factor and not s.stationary and s.stop_kind is None


def check_sizes(sc: Scenario) -> None:
    labels = collections.Counter(w.label for w in sc.wait_labels)
    stops = [s for s in sc.silence_labels if s.stop_kind == "stop"]
    stationary = [s for s in sc.silence_labels if s.stationary]
    cold_missed = [w for w in sc.wait_labels if w.label == "missed" and w.cold_start]
    if sc.size == "small":
        assert 20_000 <= len(sc.events) <= 40_000
        assert len(sc.silence_labels) >= 40 and len(stops) >= 8
        assert len(sc.wait_labels) >= 300 and labels["missed"] >= 10
    else:
        assert len(sc.events) <= 1_000_000
        assert len(sc.silence_labels) >= 300 and len(stops) >= 40
        assert len(stationary) >= 150 and any(s.weekday_only for s in stationary)
        assert len(sc.wait_labels) >= 3_000 and labels["missed"] >= 60
    assert len(cold_missed) >= 3
    assert set(labels) == LABELS
    assert any(w.ambiguous for w in sc.wait_labels)
    assert any(s.pace_factor == 0.5 for s in sc.silence_labels)
    tz = {cfg["tz"] for cfg in sc.tenants.values()}
    assert len(tz) == len(sc.tenants) >= 3


# -- the tests ------------------------------------------------------------------------------------


def test_same_seed_same_scenario(small: Scenario) -> None:
    again = generate(seed=1, size="small")
    assert again.events == small.events
    assert labels_json(again) == labels_json(small)
    other = generate(seed=2, size="small")
    assert other.events[0]["event_id"] != small.events[0]["event_id"]


def test_events_are_valid_and_arrive_almost_in_order(small: Scenario, small_b: Scenario) -> None:
    check_events(small)
    check_events(small_b)


def test_wait_labels_match_the_events(small: Scenario, small_b: Scenario) -> None:
    check_waits(small)
    check_waits(small_b)


def test_silence_labels_match_the_events(small: Scenario, small_b: Scenario) -> None:
    check_silence(small)
    check_silence(small_b)


def test_small_has_the_promised_sizes(small: Scenario, small_b: Scenario) -> None:
    check_sizes(small)
    check_sizes(small_b)


def test_variant_b_changes_what_a_rule_should_not_care_about(
    small: Scenario, small_b: Scenario
) -> None:
    tz_a = {c["tz"] for c in small.tenants.values()}
    tz_b = {c["tz"] for c in small_b.tenants.values()}
    assert not tz_a & tz_b
    verbs_a = collections.Counter(ev["verb"] for ev in small.events)
    verbs_b = collections.Counter(ev["verb"] for ev in small_b.events)
    assert set(verbs_b) - set(verbs_a)  # other product vocabularies


def test_tenant_configuration(small: Scenario) -> None:
    for cfg in small.tenants.values():
        ZoneInfo(cfg["tz"])
        assert set(cfg["working_days"]) <= set(range(7))
        start, end = cfg["working_hours"]
        assert 0 <= start < end <= 24
        assert cfg["internal_types"] and cfg["external_types"]
        for d in cfg["holidays"]:
            assert date.fromisoformat(d).weekday() in cfg["working_days"]


def test_outputs_and_cli(small: Scenario, tmp_path: Path) -> None:
    labels = labels_json(small)
    text = json.dumps(labels)
    assert json.loads(text)["meta"]["n_events"] == len(small.events)
    write_jsonl(small, tmp_path / "e.jsonl")
    lines = (tmp_path / "e.jsonl").read_text().splitlines()
    assert len(lines) == len(small.events) and json.loads(lines[0]) == small.events[0]
    out = tmp_path / "cli"
    assert main(["--size", "small", "--seed", "1", "--days", "6", "--out", str(out)]) == 0
    written = json.loads((out / "labels.json").read_text())
    assert written["meta"]["days"] == 6 and (out / "events.jsonl").stat().st_size > 0


def test_start_anywhere() -> None:
    start = int(datetime(2027, 3, 24, 17, 30, tzinfo=UTC).timestamp() * 1000)  # DST weeks
    sc = generate(seed=5, days=9, start_ms=start, size="small")
    check_events(sc)
    check_waits(sc)
    check_silence(sc)


@pytest.mark.long  # about a minute: `pytest -m long tests/scenarios`
@pytest.mark.parametrize("variant", ["a", "b"])
def test_large(variant: str) -> None:
    sc = generate(seed=1, size="large", variant=variant)
    check_sizes(sc)
    check_events(sc)
    check_waits(sc)
    check_silence(sc)


def test_stops_are_spread_in_time(small: Scenario) -> None:
    stops = sorted(s.stop_at_ms for s in small.silence_labels if s.stop_at_ms is not None)
    assert stops
    mid = small.start_ms + small.days * DAY_MS // 2
    assert bisect.bisect(stops, mid) < len(stops)  # some stops in the second half

"""A tenant rewound in the history lane (stage1.py `rewind`, tenants.py epochs, `rhythm
backfill`'s `with_replay`, entity.py `take_norms` by epoch): history older than what the lane
made final for its tenant (a part not cut at midnight, a second source of the same period)
is computed again, with the tenant's stored events, exactly as one sorted computation; the
new rows win; a restart of either stage, and an older epoch's updates sent again, change
nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rhythm.processors import copies
from rhythm.processors.codec import decode_entity, encode_entity
from rhythm.processors.lanes import EPOCH_SHIFT, HISTORY_VERSION_BASE, signal_version
from rhythm.processors.signals.entity import (
    ADOPTED,
    COMBINED,
    OVERLAP,
    AdvanceResult,
    EntityState,
    add_event,
    advance,
    take_norms,
)
from rhythm.processors.stage1 import (
    SKIP,
    Marks,
    Stage1Partition,
    rewind_mark,
    split_at_rewinds,
)
from rhythm.processors.tenants import epoch_key
from rhythm.schemas import decode_event
from rhythm.schemas.keys import SEP
from rhythm.schemas.topics import HISTORY_KIND_HEADER, KIND_COPY, KIND_REPLAY, KIND_REWIND
from rhythm.stack import backfill as bf

from .test_norms_handoff import CFG, RULE, model_of, times
from .test_stages import wire
from .test_tenant_time import (
    DAY,
    HISTORY,
    HOUR,
    NOW,
    Lane,
    _history,
    _id,
    _reference,
    _tenants,
)

Sent = tuple[int, bytes, str | None]  # (ts, value, kind: None for history of its own)


def feed(lane: Lane, messages: list[Sent], batch: int = 40) -> None:
    """Like `Lane.feed`, with the kinds the worker reads from the headers as marks, and a
    batch cut before each rewind, as the worker cuts it (`split_at_rewinds`)."""
    for i in range(0, len(messages), batch):
        chunk = messages[i : i + batch]
        values: list[tuple[int, bytes | None]] = []
        marks: dict[int, tuple[str, tuple[str, ...]]] = {}
        for j, (_ts, value, kind) in enumerate(chunk):
            offset = lane.offset + j
            values.append((offset, value))
            if kind == KIND_REWIND:
                marks[offset] = rewind_mark(value)
            elif kind is not None:
                marks[offset] = (kind, ())
        lane.offset += len(chunk)
        starts = split_at_rewinds([o for o, _ in values], marks)
        for start, end in zip(starts, [*starts[1:], len(values)], strict=True):
            lane.process(values[start:end], marks)


def rewind(tenant: str, epoch: int) -> Sent:
    value, _headers = copies.rewind_message(tenant, epoch)
    return (-1, value, KIND_REWIND)


def as_is(events: list[tuple[int, bytes]], kind: str | None = None) -> list[Sent]:
    return [(ts, value, kind) for ts, value in events]


def merged(*parts: list[Sent]) -> list[Sent]:
    return sorted((m for part in parts for m in part), key=lambda m: m[0])


def test_a_part_not_cut_at_midnight_is_exact_once_the_tenant_is_rewound() -> None:
    history = _history("a", NOW - 30 * DAY, 6, seed=21)
    cut = NOW - 27 * DAY + 13 * HOUR  # noon-ish: the first part's last day is not whole
    first = [e for e in history if e[0] < cut]
    second = [e for e in history if e[0] >= cut]
    # Rewound: the first part's events again (from the store, whole) with the second.
    lane = Lane()
    lane.feed(first)
    lane.flush()
    feed(lane, [rewind("a", 1), *merged(as_is(first, KIND_REPLAY), as_is(second))])
    lane.flush()
    assert lane.too_late == 0
    assert lane.final() == _reference(history)
    for signal in lane.signals[-10:]:  # the new epoch's rows win whatever the corrections
        assert signal["version"] >= 1 << EPOCH_SHIFT


def test_a_rewound_tenants_alerts_and_norms_name_their_epoch() -> None:
    proc = _tenants()[0]
    proc._args = (*proc._args[:4], True)  # hands its norms off, as the history worker does
    user = f"a{SEP}actor{SEP}user{SEP}u1"
    stamps = [NOW - 20 * DAY + i * HOUR for i in range(0, 24 * 8, 5)]
    proc.apply({"p": 0, "te": {"a": 2}, "tw": {"a": stamps[-1]},
                "u": [[user, t, 1.0, 0, i] for i, t in enumerate(stamps)]})  # fmt: skip
    out = proc.apply({"p": 0, "te": {"a": 2}, "tw": {"a": NOW}})  # the quiet since is news
    assert out.alerts and all(a["details"]["epoch"] == 2 for a in out.alerts)
    out = proc.apply({"p": 0, "te": {"a": 2}, "tw": {"a": NOW + DAY}, "f": 1})
    assert out.norms and all(item[0] == user and item[3] == 2 for item in out.norms)


def test_a_second_source_of_the_same_period_and_restarts_stay_exact() -> None:
    crm = _history("a", NOW - 60 * DAY, 5, seed=22)
    tickets = [
        (ts, wire(ts, actor=f"t{n % 2}", tenant="a", event_id=_id(10_000 + n)))
        for n, (ts, _) in enumerate(_history("a", NOW - 60 * DAY, 5, seed=23))
    ]
    other = _history("b", NOW - 59 * DAY, 2, seed=24)  # another tenant: untouched
    lane = Lane()
    lane.feed(sorted(crm + other, key=lambda e: e[0]))
    lane.flush()
    before_b = {k: v for k, v in lane.final().items() if k[0] == "b"}
    # Without a rewind the second source meets the first one's time: late, or lost.
    plain = Lane()
    plain.feed(sorted(crm + other, key=lambda e: e[0]))
    plain.flush()
    plain.feed(tickets)
    plain.flush()
    assert plain.too_late > 0 and plain.final() != _reference(crm + tickets + other)
    saved1 = dict(lane.saved1)  # stage 1 as saved before the rewind
    messages = [rewind("a", 1), *merged(as_is(crm, KIND_REPLAY), as_is(tickets))]
    half = len(messages) // 2
    feed(lane, messages[:half])
    lane.restart()
    feed(lane, messages[half:])
    lane.flush()
    want = _reference(crm + tickets + other)
    assert lane.final() == want
    assert {k: v for k, v in lane.final().items() if k[0] == "b"} == before_b
    # Stage 1 restarted from before the rewind sends the old epoch's updates again:
    # stage 2 ignores them (they were applied to the state it forgot).
    count = len(lane.signals)
    lane.source = Stage1Partition(0, HISTORY)
    assert not lane.source.restore(sorted(saved1.items()))
    assert lane.source.tenant_epochs == {}
    lane.offset = 0
    lane.feed(crm[:50])
    assert lane.final() == want and len(lane.signals) == count
    # the epoch is saved beside the tenant's watermarks, in every stage-2 partition
    for k, saved in lane.saved2.items():
        assert json.loads(saved[epoch_key(k, "a")]) == 1


def test_a_rewind_forgets_what_the_new_epoch_does_not_bring_back() -> None:
    gone = f"a{SEP}actor{SEP}user{SEP}gone"
    lane = Lane()
    lane.feed([(NOW - 9 * DAY, wire(NOW - 9 * DAY, actor="gone", tenant="a"))])
    lane.flush()
    assert any(gone in saved for saved in lane.saved2.values())
    saved1 = dict(lane.saved1)
    again = NOW - 9 * DAY + HOUR
    feed(lane, [rewind("a", 1), (again, wire(again, actor="kept", tenant="a"), None)])
    lane.flush()
    assert not any(gone in saved for saved in lane.saved2.values())
    # stage 1 restarted from before the rewind sends the old epoch's event again: ignored
    lane.source = Stage1Partition(0, HISTORY)
    assert not lane.source.restore(sorted(saved1.items()))
    lane.offset = 0
    lane.feed([(NOW - 9 * DAY, wire(NOW - 9 * DAY, actor="gone", tenant="a"))])
    assert not any(gone in saved for saved in lane.saved2.values())
    lane.restart()
    for proc in lane.stage2.values():
        assert proc.epochs == {"a": 1}


def test_stage1_salts_a_rewound_tenants_ids_and_takes_a_rewind_once() -> None:
    source = Stage1Partition(0, HISTORY)
    a = wire(NOW - 5 * DAY, actor="x", tenant="a", event_id=_id(1))
    b = wire(NOW - 5 * DAY, actor="y", tenant="b", event_id=_id(2))
    assert source.process([(0, a), (1, b)], NOW, 0.0).events == 2
    rewind_value, headers = copies.rewind_message("a", 1)
    assert dict(headers)[HISTORY_KIND_HEADER] == KIND_REWIND.encode()
    marks: Marks = {2: rewind_mark(rewind_value), 3: (KIND_REPLAY, ())}
    with pytest.raises(ValueError, match="rewind must start its batch"):
        source.process([(1, b), (2, rewind_value)], NOW, 0.0, marks)
    out = source.process([(2, rewind_value), (3, a), (4, b)], NOW, 0.0, marks)
    # a's event is new to its next epoch (replayed), b's is still a duplicate
    assert (out.rewinds, out.replays, out.events, out.duplicates) == (1, 1, 0, 1)
    assert all(m["te"] == {"a": 1} for m in out.messages.values())
    assert source.tenant_marks == {"a": NOW - 5 * DAY, "b": NOW - 5 * DAY}
    # the same rewind again (re-read after a crash) changes nothing
    again = source.process([(2, rewind_value)], NOW, 0.0, marks)
    assert again.rewinds == 0 and source.tenant_epochs == {"a": 1}
    assert source.process([(5, a)], NOW, 0.0).duplicates == 1  # once per epoch
    # unreadable rewinds are skipped; cuts fall before each rewind but the first
    assert rewind_mark(b"{}") == (SKIP, ()) and rewind_mark(b'{"tenant":"a","epoch":0}')[0] == SKIP
    assert split_at_rewinds([7, 8, 9, 10], {7: marks[2], 9: marks[2]}) == [0, 2]


def test_versions_of_a_later_epoch_win_and_stay_the_history_lanes() -> None:
    old = signal_version("history", 900)
    new = signal_version("history", 1 + (1 << EPOCH_SHIFT))
    assert new > old > HISTORY_VERSION_BASE


def test_the_live_lane_replaces_norms_taken_of_an_earlier_epoch() -> None:
    """Norms of epoch 1 (history computed again with more events: another first event)
    replace those of epoch 0, by either route; each epoch's are taken once."""
    ts = times(150, seed=25)
    first = model_of(ts[20:50])  # the first import: ts[20..49]
    again = model_of(ts[:60])  # the rewound history: more before and after
    for live in (False, True):
        state = EntityState()
        out = AdvanceResult()
        assert take_norms(state, first, ts[49], ts[49], CFG, RULE) == ADOPTED
        if live:
            for t in ts[90:]:
                add_event(state, t, 1.0, t, CFG, out, RULE)
            advance(state, ts[-1] + CFG.lateness_ms + 1, CFG, RULE)
        state, _ = decode_entity(encode_entity(state, {}))  # read back as after a restart
        assert state.taken_epoch == 0
        watermark = ts[-1] if live else ts[59]
        assert take_norms(state, again, ts[59], watermark, CFG, RULE, epoch=1) == (
            COMBINED if live else ADOPTED
        )
        state, _ = decode_entity(encode_entity(state, {}))
        assert state.taken_epoch == 1 and state.taken_ms == ts[59]
        saved = encode_entity(state, {})
        assert take_norms(state, again, ts[59], watermark, CFG, RULE, epoch=1) == OVERLAP
        assert take_norms(state, first, ts[49], watermark, CFG, RULE, epoch=0) == OVERLAP
        assert encode_entity(state, {}) == saved
        assert state.rhythm is not None and state.rhythm.first_ms == ts[0]


def _row(ts: int, event_id: str, actor: str, tenant: str = "a") -> dict[str, Any]:
    return {
        "tenant": tenant, "role": "actor", "entity_type": "user", "entity_id": actor,
        "event_id": event_id, "ts": ts, "verb": "viewed", "actor_type": "user",
        "actor_id": actor, "object_type": "document", "object_id": "d", "target_type": "",
        "target_id": "", "channel": "web", "context_id": "", "weight": 1.0, "tags": [],
    }  # fmt: skip


def test_with_replay_sends_the_rewind_and_the_stored_events_in_place_of_copies() -> None:
    day = NOW - NOW % DAY - 10 * DAY
    stored = [_row(day + h * HOUR, _id(100 + h), "u1") for h in range(0, 30, 3)]
    own = wire(day + 5 * HOUR, actor="u2", tenant="a", event_id=_id(1))
    other = wire(day + 5 * HOUR, actor="u3", tenant="b", event_id=_id(2))
    copy_early = copies.stored_events([stored[0]])[0]
    copy_late = copies.stored_events([stored[-1]])[0]  # the next day: an extended span
    messages = [
        (copy_early[0], copy_early[1], copies.headers(KIND_COPY, ["k"])),
        (day + 5 * HOUR, own, []),
        (day + 5 * HOUR, other, []),
        (copy_late[0], copy_late[1], copies.headers(KIND_COPY, ["k"])),
    ]
    asked: list[str] = []

    def rows(sql: str) -> list[dict[str, Any]]:
        asked.append(sql)
        return [r for r in stored if r["ts"] < day + 2 * DAY]

    plan = {"a": bf.Rewind("a", 2, day + DAY)}
    out = bf.with_replay(messages, plan, rows, "rhythm", (HOUR, DAY), before_ms=NOW)
    assert out.messages[0][0] == -1 and copies.read_rewind(out.messages[0][1]) == ("a", 2)
    # the import reaches the next day (the late copy): the replay goes to its end
    assert "tenant = 'a'" in asked[0] and f"fromUnixTimestamp64Milli({day + 2 * DAY})" in asked[0]
    kinds = [dict(h).get(HISTORY_KIND_HEADER) for _, _, h in out.messages[1:]]
    assert kinds.count(KIND_REPLAY.encode()) == len(stored) == out.replayed
    assert kinds.count(KIND_COPY.encode()) == 0 and out.dropped == 2
    assert [decode_event(v)["tenant"] for _, v, h in out.messages if not h] == ["a", "b"]
    times_sent = [ts for ts, _, _ in out.messages[1:]]
    assert times_sent == sorted(times_sent)
    # never into what the live lane may still change
    bf.with_replay(messages, plan, rows, "rhythm", (HOUR, DAY), before_ms=day + DAY)
    assert f"fromUnixTimestamp64Milli({day + DAY})" in asked[-1]
    # no plan, no change
    assert bf.with_replay(messages, {}, rows, "rhythm", (HOUR, DAY), NOW).messages == messages


def test_rewinds_are_planned_from_the_lanes_tenants_page() -> None:
    events = [
        (NOW - 9 * DAY, wire(NOW - 9 * DAY, tenant="a")),
        (NOW - 9 * DAY, wire(NOW - 9 * DAY, tenant="b")),
        (NOW - 2 * DAY, wire(NOW - 2 * DAY, tenant="c")),
    ]
    page = {"watermarks": {"a": NOW - 5 * DAY, "c": NOW - 5 * DAY}, "epochs": {"a": 3}}
    assert bf.rewinds(events, page, 0) == {"a": bf.Rewind("a", 4, NOW - 5 * DAY)}
    assert bf.rewinds(events, None, 0) == {}

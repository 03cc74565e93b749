"""The hand-off of learned silence norms from the history lane to the live lane (entity.py
`take_norms`, rhythm.py `combine`, stage 2's "n" messages): nothing counted twice, taken
once however often it is sent, and the live lane's silence judged as over the whole
sequence."""

from __future__ import annotations

import itertools
import random

import pytest

from rhythm.processors.codec import decode_entity, encode_entity
from rhythm.processors.messages import HANDOFF, UpdatesMessage
from rhythm.processors.settings import ProcessorSettings
from rhythm.processors.signals import rhythm
from rhythm.processors.signals.calendar import DAY_MS, HOUR_MS, BusinessCalendar
from rhythm.processors.signals.conversation import ReplyConfig
from rhythm.processors.signals.entity import (
    ADOPTED,
    COMBINED,
    EXPIRED,
    OVERLAP,
    AdvanceResult,
    EntityState,
    SignalConfig,
    add_event,
    advance,
    take_norms,
)
from rhythm.processors.signals.rhythm import Rhythm, SilenceConfig, SilenceRule
from rhythm.processors.stage2 import Stage2Partition
from rhythm.schemas.keys import EntityKey

MIN = 60_000
L = 5 * MIN
START = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS
RULE = SilenceRule(BusinessCalendar(working_days=frozenset(range(7)), start_hour=0, end_hour=24),
                   SilenceConfig())  # fmt: skip
CFG = SignalConfig(window_sizes_ms=(HOUR_MS,), lateness_ms=L, late_retention_ms=HOUR_MS)


def times(n: int, seed: int, start: int = START, pace: int = 6 * HOUR_MS) -> list[int]:
    rng = random.Random(seed)
    out, t = [], start
    for _ in range(n):
        out.append(t)
        t += int(pace * rng.uniform(0.3, 1.7))
    return out


def model_of(ts: list[int]) -> Rhythm:
    """A model the plain way: the rule's own steps over sorted times."""
    model = rhythm.start(ts[0], RULE)
    for last, t in itertools.pairwise(ts):
        rhythm.observe_gap(model, last, t, RULE, RULE.calendar.split(last, t))
    return model


def test_combining_the_parts_gives_the_whole_sequences_counts_exposure_and_gaps() -> None:
    ts = times(120, seed=1)
    whole = model_of(ts)
    for k in (10, 60, 119):
        got = rhythm.combine(model_of(ts[:k]), ts[k - 1], model_of(ts[k:]), ts[-1], RULE)
        assert got.first_ms == whole.first_ms and got.gaps == whole.gaps
        assert got.counts == pytest.approx(whole.counts, rel=1e-9)
        assert got.exposure == pytest.approx(whole.exposure, rel=1e-9)
        if k == 119:  # the later part is one event: it scored nothing, so all is exact
            assert (got.scored, got.over, got.excess) == pytest.approx(
                (whole.scored, whole.over, whole.excess), rel=1e-9
            )
            assert got.armed == whole.armed and got.expected == pytest.approx(whole.expected)
            assert rhythm.due(got, ts[-1], RULE) == rhythm.due(whole, ts[-1], RULE)


def test_with_no_model_here_the_history_is_taken_and_judged_from_the_next_event() -> None:
    ts = times(60, seed=2)
    learned = model_of(ts)
    state = EntityState()
    assert take_norms(state, learned, ts[-1], ts[-1], CFG, RULE) == ADOPTED
    assert state.last_ms == ts[-1]
    # the quiet after the history's last event is the history lane's to judge, as after a
    # routed event: nothing here, and no `resumed` when the next event ends it
    assert advance(state, ts[-1] + 30 * DAY_MS, CFG, RULE).alerts == []
    nxt = ts[-1] + 30 * DAY_MS + MIN
    out = AdvanceResult()
    add_event(state, nxt, 1.0, nxt, CFG, out, RULE)
    out.alerts += advance(state, nxt + L + 1, CFG, RULE).alerts
    assert out.alerts == []
    # from the next event on, the norms judge the quiet after it
    assert state.rhythm is not None
    due = rhythm.due(state.rhythm, nxt, RULE)
    assert due is not None
    got = advance(state, due + L + 1, CFG, RULE).alerts
    assert [(a.kind, a.fired_at_ms) for a in got] == [("silence", due)]


def test_the_same_norms_again_are_left_so_taking_is_idempotent() -> None:
    ts = times(60, seed=3)
    learned = model_of(ts)
    state = EntityState()
    assert take_norms(state, learned, ts[-1], ts[-1], CFG, RULE) == ADOPTED
    saved = encode_entity(state, {})
    for _ in range(3):  # a restart re-reads the message; a re-sent one
        assert take_norms(state, learned, ts[-1], ts[-1], CFG, RULE) == OVERLAP
    assert encode_entity(state, {}) == saved
    # a later hand-off of the history lane, with more of the same history (a second
    # import): nothing finalized here since, so it is taken whole instead; and once only
    more = model_of([*ts, ts[-1] + HOUR_MS])
    assert take_norms(state, more, ts[-1] + HOUR_MS, ts[-1], CFG, RULE) == ADOPTED
    assert state.rhythm is not None and state.last_ms == ts[-1] + HOUR_MS
    assert (state.rhythm.gaps, state.rhythm.counts) == (more.gaps, more.counts)
    for again, last in ((more, ts[-1] + HOUR_MS), (learned, ts[-1])):
        assert take_norms(state, again, last, ts[-1], CFG, RULE) == OVERLAP


def test_norms_of_events_not_older_than_every_live_event_are_left() -> None:
    ts = times(40, seed=4)
    state = EntityState()
    out = AdvanceResult()
    add_event(state, ts[20], 1.0, ts[20], CFG, out, RULE)
    advance(state, ts[20] + L + 1, CFG, RULE)  # final here: the live lane's first event
    before = encode_entity(state, {})
    assert take_norms(state, model_of(ts[:25]), ts[24], ts[24], CFG, RULE) == OVERLAP
    assert encode_entity(state, {}) == before
    pending = EntityState()
    add_event(pending, ts[20], 1.0, ts[20], CFG, out, RULE)  # not final yet
    assert take_norms(pending, model_of(ts[:25]), ts[24], ts[24], CFG, RULE) == OVERLAP
    assert pending.rhythm is None


def test_a_live_model_of_later_events_is_combined_and_its_events_counted_once() -> None:
    ts = times(80, seed=5)
    state = EntityState()
    out = AdvanceResult()
    for t in ts[50:]:
        add_event(state, t, 1.0, t, CFG, out, RULE)
    advance(state, ts[-1] + L + 1, CFG, RULE)
    assert state.rhythm is not None and state.rhythm.first_ms == ts[50]
    assert take_norms(state, model_of(ts[:50]), ts[49], ts[-1], CFG, RULE) == COMBINED
    whole = model_of(ts)
    assert state.rhythm.gaps == whole.gaps == len(ts) - 1
    assert state.rhythm.counts == pytest.approx(whole.counts, rel=1e-9)
    assert state.last_ms == ts[-1]
    # and once only
    assert take_norms(state, model_of(ts[:50]), ts[49], ts[-1], CFG, RULE) == OVERLAP


def test_norms_older_than_the_live_lane_keeps_them_are_left() -> None:
    ts = times(40, seed=6)
    state = EntityState()
    watermark = ts[-1] + CFG.norms_ttl_ms
    assert take_norms(state, model_of(ts), ts[-1], watermark, CFG, RULE) == EXPIRED
    assert state.rhythm is None


def test_an_entity_saved_before_the_hand_off_decodes_with_none_handed() -> None:
    state = EntityState(last_ms=5, rhythm=model_of([1, 5]))
    data = encode_entity(state, {0: 3})
    assert b'"h"' not in data  # the live lane never writes it
    assert decode_entity(data)[0].handed_ms is None
    state.handed_ms = 5
    assert decode_entity(encode_entity(state, {0: 3}))[0].handed_ms == 5


# -- both lanes' stage 2 -------------------------------------------------------------------

SETTINGS = ProcessorSettings(
    working_days=[0, 1, 2, 3, 4, 5, 6], working_hours=(0, 24), silence_min_span_s=3600
)


def stage2(hand_off: bool = False) -> Stage2Partition:
    return Stage2Partition(
        0, 1, CFG, ReplyConfig(lateness_ms=L), SETTINGS.alert_policy(), hand_off=hand_off
    )


KEY = EntityKey("acme", "actor", "account", "a-1").encode()


def updates(ts: list[int], first_offset: int = 0) -> UpdatesMessage:
    return {"p": 0, "u": [[KEY, t, 1.0, 0, first_offset + i] for i, t in enumerate(ts)]}


def silences(proc: Stage2Partition, messages: list[UpdatesMessage]) -> list[tuple[str, int]]:
    out = []
    for m in messages:
        out += [(a["kind"], a["fired_at"]) for a in proc.apply(m).alerts]
    return out


def test_live_alerts_the_silence_after_history_and_live_as_one_sequence_would() -> None:
    ts = times(60, seed=8, pace=2 * HOUR_MS)
    history, live_ts = ts[:50], ts[50:53]
    end = live_ts[-1] + 30 * DAY_MS
    # the independent run: one partition given the whole sequence
    one = stage2()
    expected = silences(
        one, [{**updates(history + live_ts), "wm": live_ts[-1]}, {"p": 0, "wm": end}]
    )
    assert [k for k, _ in expected] == ["silence"]
    # the history lane: the import, then its flush, hands the norms off
    lane = stage2(hand_off=True)
    lane.apply({**updates(history), "wm": history[-1]})
    handed = lane.apply({"p": 0, "wm": history[-1] + DAY_MS, "f": 1}).norms
    assert [n[0] for n in handed] == [KEY]
    assert lane.apply({"p": 0, "wm": history[-1] + DAY_MS, "f": 1}).norms == []  # once
    # the live lane: the norms first, then its own events
    live = stage2()
    norms: UpdatesMessage = {"p": HANDOFF, "n": handed}
    taken = live.apply(norms).norms_taken
    assert taken == {ADOPTED: 1}
    got = silences(live, [{**updates(live_ts), "wm": live_ts[-1]}, {"p": 0, "wm": end}])
    assert got == expected
    # without the hand-off: three events are too short a history to judge a silence by
    alone = stage2()
    assert silences(alone, [{**updates(live_ts), "wm": live_ts[-1]}, {"p": 0, "wm": end}]) == []
    # the message again, after a restart of the live lane: left, nothing changes
    restarted = stage2()
    restarted.restore(live.take_dirty())
    assert restarted.apply(norms).norms_taken == {OVERLAP: 1}


def test_a_restarted_history_lane_hands_off_only_what_it_had_not() -> None:
    ts = times(20, seed=9, pace=2 * HOUR_MS)
    ts += times(10, seed=10, start=ts[-1] + 2 * DAY_MS, pace=2 * HOUR_MS)  # after the flush
    lane = stage2(hand_off=True)
    lane.apply({**updates(ts[:20]), "wm": ts[19]})
    assert len(lane.apply({"p": 0, "wm": ts[19] + DAY_MS, "f": 1}).norms) == 1
    saved = lane.take_dirty()
    again = stage2(hand_off=True)
    again.restore(saved)
    assert again.apply({"p": 0, "wm": ts[19] + DAY_MS, "f": 1}).norms == []
    # learned more since: handed off again, with its newer last event
    unsaved = stage2(hand_off=True)
    unsaved.restore(saved)
    unsaved.apply({**updates(ts[20:], 20), "wm": ts[-1]})
    third = stage2(hand_off=True)
    third.restore(saved + unsaved.take_dirty())
    handed = third.apply({"p": 0, "wm": ts[-1] + DAY_MS, "f": 1}).norms
    assert [(n[0], n[1]) for n in handed] == [(KEY, ts[-1])]


def _same(got: Rhythm, want: Rhythm, tail: bool = True) -> None:
    assert (got.first_ms, got.gaps) == (want.first_ms, want.gaps)
    assert got.counts == pytest.approx(want.counts, rel=1e-9)
    assert got.exposure == pytest.approx(want.exposure, rel=1e-9)
    if tail:
        assert (got.scored, got.over, got.excess, got.far, got.far_excess) == pytest.approx(
            (want.scored, want.over, want.excess, want.far, want.far_excess), rel=1e-9, abs=1e-9
        )


def test_without_takes_the_earlier_part_and_its_gap_out_of_a_whole_model() -> None:
    ts = times(150, seed=11)
    whole = model_of(ts)
    for k in (5, 40, 100, 149):
        earlier = model_of(ts[:k])
        later = rhythm.without(whole, ts[-1], earlier, ts[k - 1], ts[k], RULE)
        # counts, exposure and gaps are the later part's own; its gaps are scored as the
        # whole model scored them, so combining again gives the whole model back
        _same(later, model_of(ts[k:]), tail=False)
        _same(rhythm.combine(earlier, ts[k - 1], later, ts[-1], RULE), whole)


def test_a_second_imports_norms_replace_the_first_ones_beside_the_live_lanes_own() -> None:
    """The live lane took a first import's norms (history up to ts[49]) beside its own
    events (from ts[90]); a second import brings the history up to ts[89]: the result is
    what one hand-off of the whole history would have given."""
    ts = times(150, seed=12)
    for adopted_first in (False, True):
        state = EntityState()
        out = AdvanceResult()
        if adopted_first:  # the first norms came before any live event
            assert take_norms(state, model_of(ts[:50]), ts[49], ts[49], CFG, RULE) == ADOPTED
        for t in ts[90:]:
            add_event(state, t, 1.0, t, CFG, out, RULE)
        advance(state, ts[-1] + L + 1, CFG, RULE)
        if not adopted_first:
            assert take_norms(state, model_of(ts[:50]), ts[49], ts[-1], CFG, RULE) == COMBINED
        state, _ = decode_entity(encode_entity(state, {}))  # what a restart reads back
        second = model_of(ts[:90])
        assert take_norms(state, second, ts[89], ts[-1], CFG, RULE) == COMBINED
        assert state.rhythm is not None and state.last_ms == ts[-1]
        if adopted_first:  # the live gaps were scored on the adopted norms' rates
            _same(state.rhythm, model_of(ts), tail=False)
        else:
            one = EntityState()
            for t in ts[90:]:
                add_event(one, t, 1.0, t, CFG, out, RULE)
            advance(one, ts[-1] + L + 1, CFG, RULE)
            assert take_norms(one, second, ts[89], ts[-1], CFG, RULE) == COMBINED
            assert one.rhythm is not None
            _same(state.rhythm, one.rhythm)
        # once only: the same again, or the first again, is left
        saved = encode_entity(state, {})
        assert take_norms(state, second, ts[89], ts[-1], CFG, RULE) == OVERLAP
        assert take_norms(state, model_of(ts[:50]), ts[49], ts[-1], CFG, RULE) == OVERLAP
        assert encode_entity(state, {}) == saved
        # history reaching the live lane's own events is left too
        assert take_norms(state, model_of(ts[:95]), ts[94], ts[-1], CFG, RULE) == OVERLAP
        # a history that does not start where the taken one did is another sequence: left
        assert take_norms(state, model_of(ts[1:89]), ts[88], ts[-1], CFG, RULE) == OVERLAP

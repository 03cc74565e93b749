"""The hand-off of learned reply norms (the `unanswered` rule's finished waits) from the
history lane to the live lane: after an import, a live message of a kind the history knows
is judged as one sequence of history and live messages would judge it; taken once however
often it is sent; kept across restarts of either lane; forgotten with its threads."""

from __future__ import annotations

import random

from rhythm.processors.codec import decode_context, encode_batch, encode_context, loads
from rhythm.processors.messages import HANDOFF, UpdatesMessage
from rhythm.processors.signals.conversation import (
    HANDED_EXPIRED,
    HANDED_OVERLAP,
    HANDED_TAKEN,
    ContextMessage,
    ContextState,
    Contribution,
    Conversations,
    ReplyConfig,
)
from rhythm.processors.signals.entity import SignalConfig
from rhythm.processors.signals.policy import AlertPolicy
from rhythm.processors.signals.survival import KindStats
from rhythm.processors.stage2 import Stage2Partition
from rhythm.schemas.keys import context_key

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
L = 5 * MIN
CFG = ReplyConfig(lateness_ms=L, min_replies=10, horizon_ms=2 * DAY)
POLICY = AlertPolicy()
START = 1_800_000_000_000


def thread_messages(threads: int, start: int, seed: int) -> list[tuple[str, ContextMessage]]:
    """Answered threads: a customer's email, our employee's reply 10 to 30 minutes later."""
    rng = random.Random(seed)
    out = []
    for i in range(threads):
        t = start + i * HOUR
        key = context_key("acme", f"t-{seed}-{i}")
        out.append((key, ContextMessage(t, ("customer", f"c-{i}"), "email", "wrote", "", 0, i)))
        reply = t + rng.randrange(10 * MIN, 30 * MIN)
        out.append((key, ContextMessage(reply, ("employee", "e-1"), "email", "replied", "", 0,
                                        10_000 + i)))  # fmt: skip
    return sorted(out, key=lambda km: km[1].ts)


def feed(conv: Conversations, messages: list[tuple[str, ContextMessage]]) -> None:
    for key, m in messages:
        conv.add(key, "acme", key.split("\x1f")[-1], m)


def kinds(conv: Conversations) -> dict[tuple[object, ...], tuple[list[int], list[int]]]:
    """The customers' kinds' (and pool's) learned delays, replied and censored, on both
    clocks (our side's waits on them are `follow_up`'s, off here)."""
    learned: list[tuple[tuple[object, ...], KindStats]] = [*conv.stats.items()]
    learned += conv.pools.items()
    return {
        k: (s.wall.replied.counts, s.wall.censored.counts + s.work.replied.counts)
        for k, s in learned
        if (s.wall.replied.total or s.wall.censored.total) and ("customer" in k or "theirs" in k)
    }


HISTORY = thread_messages(30, START, seed=1)
END = HISTORY[-1][1].ts
LIVE_T = END + 3 * DAY
LIVE = [(context_key("acme", "live-1"),
         ContextMessage(LIVE_T, ("customer", "c-live"), "email", "wrote", "", 1, 0))]  # fmt: skip


def alerts_at(conv: Conversations, until: int) -> list[tuple[str, str, int, float]]:
    return [(a.kind, a.context_id, a.fired_at_ms, a.score) for a in conv.advance(until)]


def handed_from_history() -> list[tuple[str, int, list[Contribution]]]:
    lane = Conversations(CFG, POLICY, hand_off=True)
    feed(lane, HISTORY)
    lane.advance(END + DAY)
    return lane.take_hand_off()


def test_a_live_message_is_judged_as_one_sequence_of_history_and_live_would_judge_it() -> None:
    one = Conversations(CFG, POLICY)
    feed(one, HISTORY + LIVE)
    expected = alerts_at(one, LIVE_T + 2 * DAY)
    assert [a[:2] for a in expected] == [("unanswered", "live-1")]  # the scenario holds
    handed = handed_from_history()
    assert len(handed) == 30  # each thread's customer wait (and ours, once past the horizon)
    live = Conversations(CFG, POLICY)
    for key, newest, waits in handed:
        outcome = live.take_handed(key, "acme", key.split("\x1f")[-1], newest, waits, LIVE_T)
        assert outcome == HANDED_TAKEN
    assert kinds(live) == kinds(one)
    feed(live, LIVE)
    assert alerts_at(live, LIVE_T + 2 * DAY) == expected
    # without the hand-off the kind is unknown: the message is never judged (cold)
    alone = Conversations(CFG, POLICY)
    feed(alone, LIVE)
    assert alerts_at(alone, LIVE_T + 2 * DAY) == []


def test_the_same_waits_again_are_left_and_older_than_the_threads_time_to_live_expire() -> None:
    key, newest, waits = handed_from_history()[0]
    live = Conversations(CFG, POLICY)
    args: tuple[str, str, str, int, list[Contribution]] = (key, "acme", "x", newest, waits)
    assert live.take_handed(*args, LIVE_T) == HANDED_TAKEN
    before = kinds(live)
    assert live.take_handed(*args, LIVE_T) == HANDED_OVERLAP
    assert kinds(live) == before
    # after a restart of the live lane (the thread's saved state), still left
    restored = Conversations(CFG, POLICY)
    restored.restore({key: decode_context(encode_context(live.contexts[key]))})
    restored.advance(LIVE_T)
    assert kinds(restored) == before
    assert restored.take_handed(*args, LIVE_T) == HANDED_OVERLAP
    # a thread the live lane would have forgotten by now teaches nothing
    late = Conversations(CFG, POLICY)
    assert late.take_handed(*args, newest + CFG.ttl_ms + L) == HANDED_EXPIRED
    assert late.contexts == {} and kinds(late) == {}
    # ...and one taken in time is forgotten with its thread's time to live
    live.advance(newest + CFG.ttl_ms + L + 1)
    assert key not in live.contexts and kinds(live) == {}


def test_a_restarted_history_lane_hands_off_only_the_waits_it_had_not() -> None:
    lane = Conversations(CFG, POLICY, hand_off=True)
    feed(lane, HISTORY[:20])
    lane.advance(HISTORY[19][1].ts + DAY)
    first = lane.take_hand_off()
    assert first and lane.take_hand_off() == []
    saved = {k: encode_context(lane.contexts[k]) for k in lane.dirty}
    again = Conversations(CFG, POLICY, hand_off=True)
    again.restore({k: decode_context(v) for k, v in saved.items()})
    again.advance(HISTORY[19][1].ts + DAY)
    assert again.take_hand_off() == []
    # more history of the same threads and new ones: only the new waits
    feed(again, HISTORY[20:])
    again.advance(END + DAY)
    second = again.take_hand_off()
    handed = [(c.opened, c.closed) for _, _, w in first + second for c in w]
    at_once = [(c.opened, c.closed) for _, _, w in handed_from_history() for c in w]
    assert len(handed) == len(set(handed)) and set(handed) == set(at_once)


def test_a_thread_saved_before_the_hand_off_decodes_with_nothing_handed() -> None:
    ctx = ContextState("acme", "t")
    data = encode_context(ctx)
    assert b'"h"' not in data  # the live lane never writes it
    assert decode_context(data).handed is None


# -- both lanes' stage 2, as the workers run them ------------------------------------------


def stage2(hand_off: bool = False) -> Stage2Partition:
    cfg = SignalConfig(window_sizes_ms=(HOUR,), lateness_ms=L, late_retention_ms=HOUR)
    return Stage2Partition(0, 1, cfg, CFG, POLICY, hand_off=hand_off)


def contexts(messages: list[tuple[str, ContextMessage]]) -> UpdatesMessage:
    return {
        "p": 0,
        "c": [
            [k, m.ts, m.sender[0], m.sender[1], m.channel, m.verb, m.about, 0, i]
            for i, (k, m) in enumerate(messages)
        ],
    }


def test_stage2_hands_threads_off_at_a_flush_and_the_live_lane_alerts_from_them() -> None:
    history = stage2(hand_off=True)
    history.apply({**contexts(HISTORY), "wm": END})
    out = history.apply({"p": 0, "wm": END + DAY, "f": 1})
    assert len(out.replies) == 30
    assert history.apply({"p": 0, "wm": END + DAY, "f": 1}).replies == []  # once
    # the hand-off as the history worker sends it: split under the size limit, in order
    message: UpdatesMessage = {"p": HANDOFF, "r": out.replies}
    parts = [loads(part) for part in encode_batch(message, max_bytes=2_000)]
    assert len(parts) > 1 and [r for p in parts for r in p["r"]] == out.replies
    live = stage2()
    live.apply({"p": 0, "wm": LIVE_T - MIN})
    taken: dict[str, int] = {}
    for part in parts:
        for outcome, n in live.apply(part).replies_taken.items():
            taken[outcome] = taken.get(outcome, 0) + n
    assert taken == {HANDED_TAKEN: 30}
    got = live.apply({**contexts(LIVE), "wm": LIVE_T + 2 * DAY}).alerts
    assert [(a["kind"], a["context_id"]) for a in got] == [("unanswered", "live-1")]
    # a live worker restarted on its saved state takes the same hand-off as already there
    restarted = stage2()
    restarted.restore(live.take_dirty())
    assert restarted.apply(parts[0]).replies_taken == {HANDED_OVERLAP: len(parts[0]["r"])}


def test_a_split_batch_keeps_its_watermark_and_flush_mark_on_the_last_part() -> None:
    message: UpdatesMessage = {"p": 0, "wm": 5, "f": 1, "c": contexts(HISTORY)["c"]}
    parts = [loads(p) for p in encode_batch(message, max_bytes=1_000)]
    assert len(parts) > 2
    assert [("wm" in p, "f" in p) for p in parts] == [(False, False)] * (len(parts) - 1) + [
        (True, True)
    ]


def copied(m: ContextMessage) -> ContextMessage:
    """The same message as the history lane gets it from the store (copies.py)."""
    return ContextMessage(m.ts, m.sender, m.channel, m.verb, m.about, 2, m.src_offset, True)


def test_a_thread_with_live_replies_to_imported_messages_learns_them_once() -> None:
    """Imported customer messages whose replies were live (stored, given as copies): the
    history lane learns each wait with its real delay and hands it off, and fires no
    alert; a wait a copy opened (a live customer message, answered live or by an import)
    never alerts there and is not handed off: the live lane judged and learned it."""
    imported = [(k, m) for k, m in HISTORY if m.sender[0] == "customer"]
    live_replies = [(k, copied(m)) for k, m in HISTORY if m.sender[0] == "employee"]
    key = context_key("acme", "live-opened")
    opened_live = [(key, copied(ContextMessage(END + HOUR, ("customer", "c-9"), "email",
                                               "wrote", "", 2, 99)))]  # fmt: skip
    lane = Conversations(CFG, POLICY, hand_off=True)
    feed(lane, sorted(imported + live_replies + opened_live, key=lambda km: km[1].ts))
    # a restart in between keeps which waits copies opened
    lane.advance(END + 2 * HOUR)
    saved = {k: encode_context(c) for k, c in lane.contexts.items()}
    lane = Conversations(CFG, POLICY, hand_off=True)
    lane.restore({k: decode_context(v) for k, v in saved.items()})
    waiting = lane.contexts[key].waiting
    assert waiting is not None and waiting.copied
    assert alerts_at(lane, END + 10 * DAY) == []  # past every norm and the horizon
    handed = lane.take_hand_off()
    assert key not in {k for k, _, _ in handed}
    # the imported waits and their delays: as the whole history's
    whole = handed_from_history()
    assert [(k, [(c.kind, c.delay_ms) for c in w]) for k, _, w in handed] == [
        (k, [(c.kind, c.delay_ms) for c in w if c.kind[1] == "customer"]) for k, _, w in whole
    ]
    # without the copies, each imported wait stays open: censored at the horizon
    alone = Conversations(CFG, POLICY, hand_off=True)
    feed(alone, imported)
    alone.advance(END + 10 * DAY)
    assert all(c.delay_ms is None for _, _, w in alone.take_hand_off() for c in w)

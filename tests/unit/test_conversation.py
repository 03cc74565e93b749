"""The `unanswered` rule on plain data."""

from __future__ import annotations

import itertools
import random
from typing import Any

from rhythm.processors.signals.conversation import (
    Conversations,
    ReplyConfig,
    UnansweredAlert,
)

OFFSETS = itertools.count()
MIN = 60_000
HOUR = 60 * MIN
CFG = ReplyConfig(lateness_ms=5 * MIN, min_samples=10, min_reply_rate=0.9, horizon_ms=2 * 24 * HOUR)
CUSTOMER = ("customer", "c-1")
AGENT = ("employee", "e-1")


def history(conv: Conversations, threads: int, start: int = 0, answered: bool = True) -> int:
    """Answered threads: a customer email, an employee reply 10 to 30 minutes later."""
    rng = random.Random(3)
    t = start
    for i in range(threads):
        key = f"hist-{start}-{i}"
        conv.add(key, "acme", key, t, ("customer", f"c-{i}"), "email", 0, next(OFFSETS))
        if answered:
            conv.add(
                key,
                "acme",
                key,
                t + rng.randrange(10 * MIN, 30 * MIN),
                AGENT,
                "email",
                0,
                next(OFFSETS),
            )
        t += HOUR
    return t


def drain(conv: Conversations, until: int) -> list[UnansweredAlert]:
    return conv.advance(until)


def test_a_message_of_a_kind_that_always_gets_a_reply_alerts_once_overdue() -> None:
    conv = Conversations(CFG)
    t = history(conv, 20)
    conv.add("late", "acme", "thread-late", t, CUSTOMER, "email", 0, next(OFFSETS))
    alerts = drain(conv, t + 10 * HOUR)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.context_id == "thread-late"
    assert alert.sender == CUSTOMER
    assert alert.last_event_at_ms == t
    # judged against nearly all past replies (10-30 min), by the histogram's bucket bound
    assert 30 * MIN <= alert.expected_within_ms <= 45 * MIN
    assert alert.fired_at_ms == t + alert.expected_within_ms
    assert alert.reply_rate == 1.0 and alert.samples == 20
    assert drain(conv, t + 40 * HOUR) == []  # once per episode


def test_an_answer_within_the_usual_time_is_no_alert() -> None:
    conv = Conversations(CFG)
    t = history(conv, 20)
    conv.add("ok", "acme", "thread-ok", t, CUSTOMER, "email", 0, next(OFFSETS))
    conv.add("ok", "acme", "thread-ok", t + 28 * MIN, AGENT, "email", 0, next(OFFSETS))
    assert drain(conv, t + 10 * HOUR) == []


def test_threads_that_usually_just_end_never_alert() -> None:
    conv = Conversations(CFG)
    t = history(conv, 20, answered=False)
    t = drain_to(conv, t + 3 * 24 * HOUR)
    conv.add("x", "acme", "thread-x", t, CUSTOMER, "email", 0, next(OFFSETS))
    assert drain(conv, t + 10 * 24 * HOUR) == []
    stats = conv.stats[("acme", "email", "customer")]
    assert stats.unreplied == 21 and stats.replied == 0


def drain_to(conv: Conversations, t: int) -> int:
    conv.advance(t)
    return t


def test_no_alert_before_the_watermark_passes_the_deadline() -> None:
    conv = Conversations(CFG)
    t = history(conv, 20)
    conv.add("late", "acme", "thread-late", t, CUSTOMER, "email", 0, next(OFFSETS))
    # a stalled pipeline: the watermark stays just after the message
    assert drain(conv, t + 6 * MIN) == []
    assert len(drain(conv, t + 10 * HOUR)) == 1


def test_another_message_from_the_same_sender_does_not_restart_the_wait() -> None:
    conv = Conversations(CFG)
    t = history(conv, 20)
    conv.add("c", "acme", "thread-c", t, CUSTOMER, "email", 0, next(OFFSETS))
    conv.add("c", "acme", "thread-c", t + 20 * MIN, CUSTOMER, "email", 0, next(OFFSETS))
    alerts = drain(conv, t + 10 * HOUR)
    assert [a.last_event_at_ms for a in alerts] == [t]


def test_not_enough_history_means_no_alert() -> None:
    conv = Conversations(CFG)
    t = history(conv, 5)
    conv.add("late", "acme", "thread-late", t, CUSTOMER, "email", 0, next(OFFSETS))
    assert drain(conv, t + 10 * HOUR) == []


def test_replay_equals_live() -> None:
    def feed(conv: Conversations, step: bool) -> list[tuple[str, int]]:
        rng = random.Random(9)
        out: list[tuple[str, int]] = []
        t = 0
        for i in range(60):
            key = f"k{i}"
            conv.add(key, "acme", key, t, ("customer", f"c{i}"), "chat", 0, next(OFFSETS))
            if i % 7 != 3:
                conv.add(
                    key,
                    "acme",
                    key,
                    t + rng.randrange(MIN, 20 * MIN),
                    AGENT,
                    "chat",
                    0,
                    next(OFFSETS),
                )
            t += 30 * MIN
            if step:
                out += [(a.context_id, a.fired_at_ms) for a in conv.advance(t - 40 * MIN)]
        out += [(a.context_id, a.fired_at_ms) for a in conv.advance(t + 30 * 24 * HOUR)]
        return out

    cfg = ReplyConfig(lateness_ms=5 * MIN, min_samples=10, min_reply_rate=0.8)
    live = feed(Conversations(cfg), step=True)
    replay = feed(Conversations(cfg), step=False)
    assert live == replay
    assert len(live) > 0


def test_a_crash_with_contexts_saved_unevenly_changes_nothing() -> None:
    """Save each changed context only sometimes (as a crash between key writes would), restart
    from what was saved, replay the input: the alerts and the learned stats are unchanged."""
    import copy

    cfg = ReplyConfig(lateness_ms=5 * MIN, min_samples=8, min_reply_rate=0.8)
    rng = random.Random(5)
    events: list[tuple[str, int, tuple[str, str], int]] = []  # (key, ts, sender, offset)
    t = 0
    for i in range(80):
        key = f"k{i % 23}"
        events.append((key, t, ("customer", f"c{i % 23}"), len(events)))
        if i % 6 != 2:
            reply_at = t + rng.randrange(MIN, 25 * MIN)
            events.append((key, reply_at, AGENT, len(events)))
        t += 20 * MIN
    batches = [events[i : i + 7] for i in range(0, len(events), 7)]

    def step(conv: Conversations, batch: list[tuple[str, int, tuple[str, str], int]]) -> list[Any]:
        for key, ts, sender, offset in batch:
            conv.add(key, "acme", key, ts, sender, "chat", 0, offset)
        newest = max(ts for _, ts, _, _ in batch)
        return [(a.context_id, a.fired_at_ms) for a in conv.advance(newest - 30 * MIN)]

    clean = Conversations(cfg)
    expected: list[Any] = []
    for batch in batches:
        expected += step(clean, batch)
    expected += [(a.context_id, a.fired_at_ms) for a in clean.advance(t + 30 * 24 * HOUR)]
    assert expected

    for crash_after, seed in [(c, s) for c in (3, 6, 9) for s in range(8)]:
        rng = random.Random(seed)
        saved: dict[str, Any] = {}
        conv = Conversations(cfg)
        got: list[Any] = []
        for batch in batches[:crash_after]:
            got += step(conv, batch)
            for key in sorted(conv.dirty):
                if rng.random() < 0.5:
                    saved[key] = copy.deepcopy(conv.contexts[key])
            conv.dirty.clear()
        restarted = Conversations(cfg)
        restarted.restore(copy.deepcopy(saved))
        for batch in batches:  # replay from the start: applied offsets skip what was saved
            got += step(restarted, batch)
        got += [(a.context_id, a.fired_at_ms) for a in restarted.advance(t + 30 * 24 * HOUR)]
        assert sorted(set(got)) == sorted(set(expected))
        assert restarted.stats == clean.stats

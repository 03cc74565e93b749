"""The `unanswered` rule on plain data."""

from __future__ import annotations

import copy
import itertools
import random
from typing import Any

from rhythm.processors.signals.conversation import (
    ContextMessage,
    Conversations,
    ReplyConfig,
    UnansweredAlert,
)
from rhythm.processors.signals.policy import AlertPolicy
from rhythm.processors.signals.survival import ClockStats, curve

OFFSETS = itertools.count()
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
CFG = ReplyConfig(lateness_ms=5 * MIN, min_replies=10, horizon_ms=2 * DAY)
POLICY = AlertPolicy()
CUSTOMER = ("customer", "c-1")
AGENT = ("employee", "e-1")


def msg(
    ts: int, sender: tuple[str, str], verb: str = "wrote", channel: str = "email"
) -> ContextMessage:
    return ContextMessage(ts, sender, channel, verb, "account:a-1", 0, next(OFFSETS))


def put(conv: Conversations, key: str, m: ContextMessage) -> None:
    conv.add(key, "acme", key, m)


def history(conv: Conversations, threads: int, start: int = 0, answered: bool = True) -> int:
    """Answered threads: a customer email, an employee reply 10 to 30 minutes later."""
    rng = random.Random(3)
    t = start
    for i in range(threads):
        key = f"hist-{start}-{i}"
        put(conv, key, msg(t, ("customer", f"c-{i}")))
        if answered:
            put(conv, key, msg(t + rng.randrange(10 * MIN, 30 * MIN), AGENT, "replied"))
        t += HOUR
    return t


def drain(conv: Conversations, until: int) -> list[UnansweredAlert]:
    return conv.advance(until)


def test_a_message_of_a_kind_that_always_gets_a_reply_alerts_once_overdue() -> None:
    conv = Conversations(CFG, POLICY)
    t = history(conv, 20)
    put(conv, "late", msg(t, CUSTOMER))
    alerts = drain(conv, t + 10 * HOUR)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.kind == "unanswered" and alert.context_id == "late"
    assert alert.sender == CUSTOMER
    assert alert.since_ms == t
    # 1.5 x the 99th percentile of past replies (10-30 min), on the histogram's bucket bound
    assert 45 * MIN <= alert.expected_within_ms <= 70 * MIN
    assert alert.fired_at_ms == t + alert.expected_within_ms
    # the wait itself is an observation too (open at its age): 20 of 21 got a reply
    assert alert.details["reply_share"] == round(20 / 21, 4) and alert.details["replies"] == 20
    assert alert.owners == ["queue:default"]  # nobody of ours in that thread yet
    assert 0.9 < alert.score <= 1.0
    assert drain(conv, t + 40 * HOUR) == []  # once per episode


def test_the_alert_names_our_people_in_the_thread() -> None:
    conv = Conversations(CFG, POLICY)
    t = 0
    for i in range(20):  # two turns each: their follow-ups get answered too
        key, them = f"two-{i}", ("customer", f"c-{i}")
        for turn in range(2):
            put(conv, key, msg(t + turn * HOUR, them))
            put(conv, key, msg(t + turn * HOUR + 15 * MIN, AGENT, "replied"))
        t += 3 * HOUR
    put(conv, "th", msg(t, CUSTOMER))
    put(conv, "th", msg(t + 10 * MIN, ("employee", "e-7"), "replied"))
    put(conv, "th", msg(t + 20 * MIN, CUSTOMER, "wrote"))  # a follow-up nobody answers
    (alert,) = drain(conv, t + 10 * HOUR)
    assert alert.owners == ["employee:e-7"] and alert.since_ms == t + 20 * MIN


def test_an_answer_within_the_usual_time_is_no_alert() -> None:
    conv = Conversations(CFG, POLICY)
    t = history(conv, 20)
    put(conv, "ok", msg(t, CUSTOMER))
    put(conv, "ok", msg(t + 28 * MIN, AGENT, "replied"))
    assert drain(conv, t + 10 * HOUR) == []


def test_our_own_messages_are_never_unanswered_and_follow_up_is_off_by_default() -> None:
    def run(cfg: ReplyConfig) -> list[UnansweredAlert]:
        conv = Conversations(cfg, POLICY)
        t = 0
        for i in range(30):  # we write, they answer within the hour
            put(conv, f"o{i}", msg(t, AGENT, "emailed"))
            put(conv, f"o{i}", msg(t + 30 * MIN, ("customer", f"c{i}"), "replied"))
            t += HOUR
        put(conv, "mine", msg(t, AGENT, "emailed"))
        return drain(conv, t + DAY)

    assert run(CFG) == []
    (alert,) = run(ReplyConfig(lateness_ms=5 * MIN, min_replies=10, follow_up=True))
    assert alert.kind == "follow_up" and alert.sender == AGENT


def test_threads_that_usually_end_with_their_message_never_alert() -> None:
    conv = Conversations(CFG, POLICY)
    t = 0
    for i in range(40):  # they ask, we answer, they thank us: the thanks gets no reply
        key = f"k{i}"
        put(conv, key, msg(t, ("customer", f"c{i}"), "asked"))
        put(conv, key, msg(t + 20 * MIN, AGENT, "replied"))
        put(conv, key, msg(t + 50 * MIN, ("customer", f"c{i}"), "thanked"))
        t += 2 * HOUR
    put(conv, "x", msg(t, CUSTOMER, "thanked"))
    alerts = drain(conv, t + 5 * DAY)
    assert alerts == []
    thanks = conv.stats[("acme", "email", "customer", "thanked", False)]
    assert thanks.wall.replied.total == 0


def test_actors_on_neither_side_wait_for_no_one() -> None:
    conv = Conversations(CFG, POLICY)
    t = history(conv, 20)
    put(conv, "sys", msg(t, ("system", "helpdesk"), "closed"))
    put(conv, "sys2", msg(t, CUSTOMER))
    put(conv, "sys2", msg(t + 5 * MIN, ("system", "bot"), "acknowledged"))  # no answer
    alerts = drain(conv, t + 10 * HOUR)
    assert [a.context_id for a in alerts] == ["sys2"]


def test_no_alert_before_the_watermark_passes_the_deadline() -> None:
    conv = Conversations(CFG, POLICY)
    t = history(conv, 20)
    put(conv, "late", msg(t, CUSTOMER))
    # a stalled pipeline: the watermark stays just after the message
    assert drain(conv, t + 6 * MIN) == []
    assert len(drain(conv, t + 10 * HOUR)) == 1


def test_another_message_from_the_same_side_does_not_restart_the_wait() -> None:
    conv = Conversations(CFG, POLICY)
    t = history(conv, 20)
    put(conv, "c", msg(t, CUSTOMER))
    put(conv, "c", msg(t + 20 * MIN, ("customer", "c-2")))  # a colleague of theirs
    alerts = drain(conv, t + 10 * HOUR)
    assert [a.since_ms for a in alerts] == [t]


def test_a_cold_start_wait_alerts_once_its_kind_is_known() -> None:
    conv = Conversations(CFG, POLICY)
    put(conv, "early", msg(0, CUSTOMER))  # nothing is known about customer emails yet
    t = history(conv, 20, start=HOUR)
    alerts = drain(conv, t + DAY)
    assert [a.context_id for a in alerts] == ["early"]
    alert = alerts[0]
    assert alert.details["cold_start"] is True and alert.since_ms == 0
    # decided when the kind became known (about 20 h in, after 20 replies), not at 0 + norm
    assert alert.fired_at_ms > alert.since_ms + alert.expected_within_ms
    assert alert.fired_at_ms <= t + alert.fired_at_ms // 4 + 15 * MIN


def test_open_waits_count_from_day_one() -> None:
    """Half of a kind's waits are answered within the hour, half never: the reply share is
    about a half as soon as the open ones are an hour old, not 100 % until a horizon."""
    conv = Conversations(CFG, POLICY)
    t = 0
    for i in range(40):
        put(conv, f"k{i}", msg(t, ("customer", f"c{i}")))
        if i % 2 == 0:
            put(conv, f"k{i}", msg(t + 20 * MIN, AGENT, "replied"))
        t += 10 * MIN
    drain(conv, t + 3 * HOUR)
    stats = conv.stats[("acme", "email", "customer", "wrote", True)]
    share = curve(stats.wall, t + 3 * HOUR).reply_share
    assert 0.4 <= share <= 0.6
    assert drain(conv, t + 3 * DAY) == []  # a kind answered half the time never alerts


def test_kaplan_meier_on_a_known_case() -> None:
    stats = ClockStats()
    for d in (1_500, 3_000, 6_000):  # replies at 1.5 s, 3 s, 6 s
        stats.replied.add(d)
    stats.open = [0]  # one wait still open, 100 s old
    c = curve(stats, 100_000)
    # life table: 4 at risk, 3 replies, the open one never leaves before its age
    assert c.reply_share == 0.75
    assert c.replied == 3 and c.observations == 4
    assert c.quantile_ms(1.0) is not None


def test_replay_equals_live() -> None:
    def feed(conv: Conversations, step: bool) -> list[tuple[str, int]]:
        rng = random.Random(9)
        out: list[tuple[str, int]] = []
        t = 0
        for i in range(60):
            key = f"k{i}"
            put(conv, key, msg(t, ("customer", f"c{i}"), channel="chat"))
            if i % 7 != 3:
                put(conv, key, msg(t + rng.randrange(MIN, 20 * MIN), AGENT, channel="chat"))
            t += 30 * MIN
            if step:
                out += [(a.context_id, a.fired_at_ms) for a in conv.advance(t - 40 * MIN)]
        out += [(a.context_id, a.fired_at_ms) for a in conv.advance(t + 30 * 24 * HOUR)]
        return out

    cfg = ReplyConfig(lateness_ms=5 * MIN, min_replies=10)
    live = feed(Conversations(cfg, POLICY), step=True)
    replay = feed(Conversations(cfg, POLICY), step=False)
    assert live == replay
    assert len(live) > 0


def test_a_crash_with_contexts_saved_unevenly_changes_nothing() -> None:
    """Save each changed context only sometimes (as a crash between key writes would), restart
    from what was saved, replay the input: the alerts and the learned stats are unchanged."""
    cfg = ReplyConfig(lateness_ms=5 * MIN, min_replies=8)
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
            conv.add(key, "acme", key, ContextMessage(ts, sender, "chat", "wrote", "", 0, offset))
        newest = max(ts for _, ts, _, _ in batch)
        return [(a.context_id, a.fired_at_ms) for a in conv.advance(newest - 30 * MIN)]

    clean = Conversations(cfg, POLICY)
    expected: list[Any] = []
    for batch in batches:
        expected += step(clean, batch)
    expected += [(a.context_id, a.fired_at_ms) for a in clean.advance(t + 30 * 24 * HOUR)]
    assert expected

    for crash_after, seed in [(c, s) for c in (3, 6, 9) for s in range(8)]:
        rng = random.Random(seed)
        saved: dict[str, Any] = {}
        conv = Conversations(cfg, POLICY)
        got: list[Any] = []
        for batch in batches[:crash_after]:
            got += step(conv, batch)
            for key in sorted(conv.dirty):
                if rng.random() < 0.5:
                    saved[key] = copy.deepcopy(conv.contexts[key])
            conv.dirty.clear()
        restarted = Conversations(cfg, POLICY)
        restarted.restore(copy.deepcopy(saved))
        for batch in batches:  # replay from the start: applied offsets skip what was saved
            got += step(restarted, batch)
        got += [(a.context_id, a.fired_at_ms) for a in restarted.advance(t + 30 * 24 * HOUR)]
        assert sorted(set(got)) == sorted(set(expected))
        assert restarted.stats == clean.stats

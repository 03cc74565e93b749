"""Feedback "done" in a thread (the notifier's `rhythm.done` event): it closes the open wait
without being a reply, so the norms learn no fake delay and no wait opens on our side."""

from __future__ import annotations

import dataclasses

from rhythm.processors.codec import decode_context, encode_context
from rhythm.processors.signals.conversation import ContextMessage, Conversations
from rhythm.schemas.feedback import DONE_VERB

from .test_conversation import AGENT, CFG, CUSTOMER, HOUR, MIN, OFFSETS, POLICY, history, msg, put


def done(ts: int, by: tuple[str, str] = AGENT, about: str = "customer:c-1") -> ContextMessage:
    return ContextMessage(ts, by, "", DONE_VERB, about, 0, next(OFFSETS))


def test_done_closes_the_wait_as_censored_not_as_a_reply() -> None:
    conv = Conversations(CFG, POLICY)
    t = history(conv, 20)
    put(conv, "t", msg(t, CUSTOMER))
    kind = ("acme", "email", "customer", "wrote", True)
    assert len(conv.advance(t + 10 * HOUR)) == 1  # the heads-up
    replied_before = conv.stats[kind].wall.replied.total
    put(conv, "t", done(t + 11 * HOUR))
    conv.advance(t + 12 * HOUR)
    ctx = conv.contexts["t"]
    assert ctx.waiting is None
    stats = conv.stats[kind]
    assert stats.wall.replied.total == replied_before  # no reply learned
    assert stats.wall.censored.total == 1 and stats.wall.open == []  # censored at its age
    assert ctx.finished[-1].censored and ctx.finished[-1].delay_ms == 11 * HOUR
    # The same customer writing again is a new wait of its own.
    put(conv, "t", msg(t + 20 * HOUR, CUSTOMER))
    conv.advance(t + 21 * HOUR)
    assert ctx.waiting is not None and ctx.waiting.since_ms == t + 20 * HOUR


def test_without_done_the_old_wait_stays_open_and_swallows_the_next_message() -> None:
    """The control of the test above: the difference is done's."""
    conv = Conversations(CFG, POLICY)
    t = history(conv, 20)
    put(conv, "t", msg(t, CUSTOMER))
    assert len(conv.advance(t + 10 * HOUR)) == 1
    put(conv, "t", msg(t + 20 * HOUR, CUSTOMER))
    assert conv.advance(t + 40 * HOUR) == []
    waiting = conv.contexts["t"].waiting
    assert waiting is not None and waiting.since_ms == t  # still the first one


def test_done_opens_no_wait_of_ours_so_no_follow_up() -> None:
    conv = Conversations(dataclasses.replace(CFG, follow_up=True), POLICY)
    t = history(conv, 20)
    put(conv, "t", msg(t, CUSTOMER))
    put(conv, "t", done(t + 5 * MIN))  # before it alerts: never alerts
    assert conv.advance(t + 47 * HOUR) == []
    assert conv.contexts["t"].waiting is None


def test_done_about_another_sender_or_with_nothing_open_changes_nothing() -> None:
    conv = Conversations(CFG, POLICY)
    t = history(conv, 20)
    put(conv, "t", done(t - 1, about="customer:c-1"))  # nothing open yet
    put(conv, "t", msg(t, CUSTOMER))
    put(conv, "t", done(t + MIN, about="customer:someone-else"))
    conv.advance(t + 10 * MIN)  # final: the lateness (5 min) behind
    assert conv.contexts["t"].waiting is not None
    assert AGENT not in conv.contexts["t"].parties  # done is no message in the thread
    assert len(conv.advance(t + 10 * HOUR)) == 1


def test_a_closed_by_done_wait_survives_a_restart_and_is_unlearned_alike() -> None:
    conv = Conversations(CFG, POLICY)
    t = history(conv, 20)
    put(conv, "t", msg(t, CUSTOMER))
    put(conv, "t", done(t + 2 * HOUR))
    conv.advance(t + 3 * HOUR)
    saved = {k: decode_context(encode_context(c)) for k, c in conv.contexts.items()}
    assert saved["t"].finished[-1].censored
    fresh = Conversations(CFG, POLICY)
    fresh.restore(saved)
    fresh.advance(t + 3 * HOUR)
    kind = ("acme", "email", "customer", "wrote", True)
    assert fresh.stats[kind].wall.censored.counts == conv.stats[kind].wall.censored.counts
    assert fresh.stats[kind].wall.replied.counts == conv.stats[kind].wall.replied.counts
    # Forgotten with its thread: taken back out exactly.
    fresh._unlearn("acme", fresh.contexts["t"].finished[-1])
    assert fresh.stats[kind].wall.censored.total == 0

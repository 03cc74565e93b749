"""The `unanswered` rule on mail as the mail connector maps it (rhythm.connectors.mail):
auto-replies, bounces, list traffic and mail among our own people are no message either
way, and the recipients of a message nobody answered are whom the heads-up names."""

from __future__ import annotations

import itertools

from rhythm.connectors.mail.mapping import NOT_MESSAGES
from rhythm.processors.signals.conversation import (
    ContextMessage,
    Conversations,
    ReplyConfig,
)
from rhythm.processors.signals.policy import AlertPolicy

OFFSETS = itertools.count()
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
CFG = ReplyConfig(lateness_ms=5 * MIN, min_replies=10, horizon_ms=2 * DAY)


def msg(ts: int, sender: tuple[str, str], verb: str, to: str) -> ContextMessage:
    return ContextMessage(ts, sender, "email", verb, to, 0, next(OFFSETS))


def history(conv: Conversations, threads: int) -> int:
    t = 0
    for i in range(threads):
        key = f"h-{i}"
        conv.add(key, "acme", key, msg(t, ("contact", f"c{i}"), "emailed", "employee:ann"))
        conv.add(
            key, "acme", key, msg(t + 20 * MIN, ("employee", "ann"), "replied", f"contact:c{i}")
        )
        t += HOUR
    return t


def test_the_connectors_excluded_verbs_are_no_messages_to_the_rule() -> None:
    assert ReplyConfig().not_replies >= NOT_MESSAGES


def test_an_auto_reply_of_ours_does_not_answer_the_customer() -> None:
    conv = Conversations(CFG, AlertPolicy())
    t = history(conv, 20)
    them, us = ("contact", "carl"), ("employee", "bob")
    conv.add("t", "acme", "t", msg(t, them, "emailed", "employee:bob"))
    conv.add("t", "acme", "t", msg(t + MIN, us, "auto_replied", "contact:carl"))  # out of office
    conv.add("t", "acme", "t", msg(t + 2 * MIN, us, "noted", "employee:ann"))  # fwd to a colleague
    (alert,) = conv.advance(t + 10 * HOUR)
    assert alert.kind == "unanswered" and alert.since_ms == t
    assert alert.owners == ["employee:bob", "employee:ann"]  # whom it was sent to, first


def test_list_posts_and_bounces_open_no_wait() -> None:
    conv = Conversations(CFG, AlertPolicy())
    t = history(conv, 20)
    them = ("contact", "carl")
    conv.add("l", "acme", "l", msg(t, them, "posted_to_list", "employee:bob"))
    conv.add("b", "acme", "b", msg(t, ("contact", "mailer-daemon"), "bounced", "employee:bob"))
    conv.add("a", "acme", "a", msg(t, them, "auto_sent", "employee:bob"))
    assert conv.advance(t + 10 * HOUR) == []


def test_targets_on_no_side_are_not_parties() -> None:
    conv = Conversations(CFG, AlertPolicy())
    t = history(conv, 20)
    conv.add("x", "acme", "x", msg(t, ("contact", "carl"), "emailed", "account:a-1"))
    (alert,) = conv.advance(t + 10 * HOUR)
    assert alert.owners == ["queue:default"]

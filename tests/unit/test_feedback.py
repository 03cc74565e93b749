"""Feedback on heads-ups, the pure parts and the links' API on 127.0.0.1: tokens (forged,
expired, another action, used twice), the not-useful threshold, what the ledger does with
each kind, the links in every channel, the done event, the sink's rows."""

from __future__ import annotations

import itertools
import json
import os
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from rhythm.notifier.channels import email_message, slack_payload, webhook_payload
from rhythm.notifier.feedback import (
    done_event,
    feedback_from_cli,
    feedback_from_link,
    links,
    threshold,
)
from rhythm.notifier.feedback_api import FeedbackApi, RequestError, parse_until
from rhythm.notifier.ledger import Ledger, NewDelivery, snooze_key
from rhythm.notifier.metrics import NotifierMetrics
from rhythm.notifier.service import plan_deliveries
from rhythm.notifier.signing import Claims, TokenError, make_token, read_token
from rhythm.schemas import decode_event, encode_event
from rhythm.schemas.feedback import DONE_VERB, Feedback
from rhythm.sinks.tables import FEEDBACK
from rhythm.sinks.tables.feedback import process as transform_feedback
from rhythm.sinks.tables.rows import DeadLetter, Message

from .test_notifier import alert, settings

KEY = b"feedback-key"
NOW = 1_767_000_000.0


def claims(action: str = "done", expires: int = int(NOW) + 3600) -> Claims:
    return Claims("acme", "a1", "user:u-1", action, expires)


# -- tokens ------------------------------------------------------------------------------------


def test_a_token_reads_back_for_its_own_action_until_it_expires() -> None:
    token = make_token(KEY, claims("snooze"))
    assert read_token(KEY, token, "snooze", NOW) == claims("snooze")
    with pytest.raises(TokenError) as expired:
        read_token(KEY, token, "snooze", NOW + 3601)
    assert expired.value.status == 410


def test_a_token_for_another_action_is_refused() -> None:
    token = make_token(KEY, claims("snooze"))
    with pytest.raises(TokenError) as wrong:
        read_token(KEY, token, "done", NOW)
    assert wrong.value.status == 403 and "snooze" in wrong.value.reason


def test_forged_tokens_are_refused() -> None:
    token = make_token(KEY, claims())
    body, _, mac = token.partition(".")
    # Another alert (or recipient, action, expiry) under the old signature.
    other = make_token(KEY, Claims("acme", "a2", "user:u-1", "done", int(NOW) + 3600))
    cases = [
        other.partition(".")[0] + "." + mac,
        make_token(b"not-our-key", claims()),
        body + "." + "0" * 64,
        body + "." + mac[:-1] + ("0" if mac[-1] != "0" else "1"),
    ]
    for forged in cases:
        with pytest.raises(TokenError) as refused:
            read_token(KEY, forged, "done", NOW)
        assert refused.value.status == 403, forged
    # A later expiry written into the payload: the signature covers it.
    longer = make_token(KEY, claims(expires=int(NOW) + 10**6)).partition(".")[0]
    with pytest.raises(TokenError):
        read_token(KEY, longer + "." + mac, "done", NOW)


@pytest.mark.parametrize("bad", ["", "abc", "abc.def", "!!!." + "0" * 64, "e30." + "0" * 64])
def test_malformed_tokens_are_400(bad: str) -> None:
    with pytest.raises(TokenError) as refused:
        read_token(KEY, bad, "done", NOW)
    assert refused.value.status == 400


def test_a_token_used_twice_is_one_piece_of_feedback_applied_once(tmp_path: Path) -> None:
    token = make_token(KEY, claims())
    first = feedback_from_link(claims(), token, 1, None, None)
    again = feedback_from_link(claims(), token, 2, None, None)
    assert first.feedback_id == again.feedback_id
    ledger = Ledger(tmp_path / "l.db")
    assert ledger.record_feedback(first, "actor:contact", "unanswered", None, 1)
    assert not ledger.record_feedback(again, "actor:contact", "unanswered", None, 2)
    assert ledger.feedback_on("acme", "user:u-1", "actor:contact", 0) == {"done": 1}


# -- the threshold -----------------------------------------------------------------------------


def test_the_threshold_rises_with_each_net_not_useful_up_to_its_cap() -> None:
    assert threshold(0, 0, 0.2, 0.9) == 0.0
    steps = [threshold(n, 0, 0.2, 0.9) for n in range(1, 15)]
    assert steps[:3] == pytest.approx([0.2, 0.36, 0.488])
    assert all(a < b for a, b in itertools.pairwise(steps) if b < 0.9)
    assert max(steps) == 0.9
    assert threshold(3, 1, 0.2, 0.9) == threshold(2, 0, 0.2, 0.9)  # done counts as useful
    assert threshold(1, 4, 0.2, 0.9) == 0.0


def test_alerts_under_a_recipients_threshold_are_not_sent_to_them(tmp_path: Path) -> None:
    s = settings(tmp_path, smtp_host=None)
    a = alert(owners=["user:u-1", "user:u-2"], score=0.3)
    bars = {"user:u-1": 0.36, "user:u-2": 0.0}
    _, planned, suppressed = plan_deliveries(
        s, a, {}, [], lambda _r, _d: 0, 1_000, lambda ref: bars[ref]
    )
    states = {d.recipient: (d.state, d.last_error) for d in planned}
    assert states["user:u-2"] == ("pending", None)
    assert states["user:u-1"][0] == "suppressed"
    assert "not useful" in (states["user:u-1"][1] or "")
    assert suppressed["not_useful"] == 1
    # A surer alert still reaches them.
    _, planned, _ = plan_deliveries(
        s, alert(owners=["user:u-1"], score=0.5), {}, [], lambda _r, _d: 0, 1_000,
        lambda ref: bars[ref],
    )  # fmt: skip
    assert [d.state for d in planned] == ["pending"]


# -- the ledger --------------------------------------------------------------------------------


def _delivery(key: str, recipient: str, state: str = "pending") -> NewDelivery:
    return NewDelivery(key, recipient, "webhook", "http://x", "owner", state, 0, "2026-12-07")  # type: ignore[arg-type]


def _fb(kind: str, recipient: str = "user:u-1", until: int | None = None, n: int = 0) -> Feedback:
    return feedback_from_cli("acme", "a1", recipient, kind, 100 + n, until, None)  # type: ignore[arg-type]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "state.db")
    a = alert(owners=["user:u-1", "user:u-2"]).model_dump()
    ledger.intake(
        a, [_delivery("k1", "user:u-1"), _delivery("k2", "user:u-2", "held")],
        ["user:u-1", "user:u-2"], 0,
    )  # fmt: skip
    yield ledger
    ledger.close()


def test_done_cancels_whatever_of_the_alert_is_not_sent_yet(ledger: Ledger) -> None:
    ledger.start_attempt("k1", 1)
    ledger.sent("k1", 2)
    assert ledger.record_feedback(_fb("done"), "actor:contact", "unanswered", None, 3)
    states = {d.key: d.state for d in ledger.all()}
    assert states == {"k1": "sent", "k2": "cancelled"}  # u-2's held one is not sent now
    assert ledger.due(10**15) == []


def test_snooze_holds_what_is_unsent_and_re_delivers_what_was_sent_once(ledger: Ledger) -> None:
    ledger.start_attempt("k1", 1)
    ledger.sent("k1", 2)
    ledger.record_feedback(_fb("snooze", until=5_000), None, None, None, 3)
    ledger.record_feedback(_fb("snooze", "user:u-2", until=6_000), None, None, None, 3)
    states = {d.key: (d.state, d.due_at) for d in ledger.all()}
    again = snooze_key("k1", 5_000)
    assert states == {"k1": ("sent", 0), "k2": ("snoozed", 6_000), again: ("snoozed", 5_000)}
    assert ledger.due(10**15) == []  # a snooze does not block the destination
    assert ledger.snoozed_due(4_999) == []
    # A later snooze of the same heads-up replaces the one still waiting.
    ledger.record_feedback(_fb("snooze", until=7_000, n=1), None, None, None, 4)
    assert {d.key: d.due_at for d in ledger.all()}[again] == 7_000
    assert [d.key for d in ledger.snoozed_due(7_000)] == ["k2", again]
    ledger.wake(again, 7_000, None)
    assert [d.key for d in ledger.due(7_000)] == [again]
    ledger.wake(again, 7_001, None)  # woken once: nothing more
    assert {d.key: d.state for d in ledger.all()}[again] == "pending"


def test_a_snooze_ending_in_quiet_hours_waits_for_the_working_day(ledger: Ledger) -> None:
    ledger.record_feedback(_fb("snooze", until=5_000), None, None, None, 3)
    ledger.wake("k1", 5_000, 9_000)
    assert {d.key: (d.state, d.due_at) for d in ledger.all()}["k1"] == ("held", 9_000)


def test_the_not_useful_rate_counts_heads_ups_told(ledger: Ledger) -> None:
    for key in ("k1", "k2"):
        ledger.start_attempt(key, 1)
        ledger.sent(key, 2)
    ledger.record_feedback(_fb("not_useful"), "actor:contact", "unanswered", None, 3)
    assert ledger.told_counts() == {"unanswered": 2}
    assert ledger.feedback_counts() == {("not_useful", "unanswered"): 1}


# -- what a heads-up carries -------------------------------------------------------------------


def test_every_channel_carries_the_three_links(tmp_path: Path) -> None:
    s = settings(tmp_path)
    made = links("https://rhythm.example.com", KEY, "acme", "a1", "user:u-1", NOW, 3600)
    assert set(made) == {"done", "snooze", "not_useful"}
    for action, url in made.items():
        parts = urllib.parse.urlsplit(url)
        assert parts.path == f"/feedback/{action}"
        token = urllib.parse.parse_qs(parts.query)["t"][0]
        assert read_token(KEY, token, action, NOW).alert_id == "a1"
    a = alert().model_dump()
    body = json.loads(webhook_payload("k", a, {"ref": "user:u-1"}, "text", made))
    assert body["links"] == made
    slack = json.dumps(json.loads(slack_payload("<@U1>", a, "text", made)))
    email = email_message(s, "k", "ann@example.com", "Ann", a, "text", made)
    plain = email.get_body(("plain",))
    rich = email.get_body(("html",))
    assert plain is not None and rich is not None
    for url in made.values():
        assert url in slack and url in plain.get_content()
        assert url.replace("&", "&amp;") in rich.get_content()
    assert "links" not in json.loads(webhook_payload("k", a, {}, "text"))


def test_done_on_a_threads_alert_is_an_event_in_that_thread() -> None:
    a = alert().model_dump()
    fb = feedback_from_cli("acme", "a1", "user:u-1", "done", 1_767_000_000_000, None, a)
    made = done_event(fb, a)
    assert made is not None
    record, key = made
    decoded = decode_event(encode_event(record))
    assert decoded["verb"] == DONE_VERB and decoded["context_id"] == "t-1"
    assert (decoded["actor_type"], decoded["actor_id"]) == ("user", "u-1")
    assert (decoded["target_type"], decoded["target_id"]) == ("contact", "c-1")
    assert decoded["occurred_at"] == 1_767_000_000_000
    assert key == "acme:user:u-1"
    assert done_event(fb, a) == made  # the same id: a copy is the same event
    silence = alert(kind="silence", context_id=None).model_dump()
    assert done_event(fb, silence) is None
    snooze = feedback_from_cli("acme", "a1", "user:u-1", "snooze", 1, 5, a)
    assert done_event(snooze, a) is None


def test_the_contract_wants_until_for_snooze_only() -> None:
    with pytest.raises(ValidationError):
        feedback_from_cli("acme", "a1", "user:u-1", "snooze", 1, None, None)
    with pytest.raises(ValidationError):
        feedback_from_cli("acme", "a1", "user:u-1", "done", 1, 5, None)
    with pytest.raises(ValidationError):
        feedback_from_cli("acme", "a1", "nobody", "done", 1, None, None)


def test_parse_until() -> None:
    now = 1_767_000_000_000
    assert parse_until({"for_s": "60"}, now) == now + 60_000
    assert parse_until({"until": str(now + 5)}, now) == now + 5
    assert parse_until({"until": "2025-12-29T10:00:00Z"}, now) == 1_767_002_400_000
    for bad in ({}, {"until": "2025-12-29T10:00:00"}, {"until": str(now - 1)}, {"for_s": "x"},
                {"for_s": str(91 * 86_400)}):  # fmt: skip
        with pytest.raises(RequestError):
            parse_until(bad, now)


# -- the sink ----------------------------------------------------------------------------------


def test_the_sink_writes_feedback_rows() -> None:
    a = alert().model_dump()
    fb = feedback_from_cli("acme", "a1", "user:u-1", "snooze", 10, 20, a)
    row = transform_feedback(
        Message("rhythm.feedback", 0, 7, 11, b"a1", fb.model_dump_json().encode())
    )
    assert isinstance(row, tuple) and len(row) == len(FEEDBACK.columns)
    named = dict(zip((c.name for c in FEEDBACK.columns), row, strict=True))
    assert named["kind"] == "snooze" and named["snooze_until"] == 20
    assert (named["role"], named["entity_type"], named["alert_kind"]) == (
        "actor",
        "contact",
        "unanswered",
    )
    assert named["kafka_offset"] == 7
    for bad in (b"", b"{", b'{"kind": "maybe"}'):
        out = transform_feedback(Message("rhythm.feedback", 0, 8, 11, None, bad))
        assert isinstance(out, DeadLetter)


def test_the_links_key_is_made_once_private_and_never_printed(tmp_path: Path) -> None:
    s = settings(tmp_path)
    key = s.feedback_key()
    assert s.feedback_key() == key and len(key) == 64
    assert stat.S_IMODE(os.stat(tmp_path / "feedback.secret").st_mode) == 0o600
    given = settings(tmp_path, feedback_secret=SecretStr("given-key"))
    assert given.feedback_key() == b"given-key" and "given-key" not in repr(given)


# -- the API, on 127.0.0.1 ---------------------------------------------------------------------


class Taken:
    """What the API published: a producer that acknowledges at once (the API's own
    behaviour is under test here; the integration test runs it on the real broker)."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def produce(
        self, topic: str, value: bytes, key: bytes, on_delivery: Callable[..., None]
    ) -> None:
        self.values.append(value)
        on_delivery(None, None)

    def flush(self, timeout: float = 0) -> int:
        return 0


def _call(
    url: str, data: dict[str, str] | None = None, accept: str = "application/json"
) -> tuple[int, Any]:
    body = None if data is None else urllib.parse.urlencode(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    return status, json.loads(text) if accept == "application/json" else text


def test_the_api_confirms_on_get_acts_on_post_once_and_refuses_bad_links(tmp_path: Path) -> None:
    s = settings(tmp_path, feedback_port=0, feedback_secret=SecretStr("k"))
    ledger = Ledger(s.ledger_path)
    ledger.intake(alert().model_dump(), [_delivery("k1", "user:u-1")], ["user:u-1"], 0)
    taken = Taken()
    clock = [NOW]
    api = FeedbackApi(s, NotifierMetrics(60), taken, now=lambda: clock[0]).start()  # type: ignore[arg-type]
    try:
        made = links(api.url, b"k", "acme", "a1", "user:u-1", NOW, 3600)
        page = _call(made["done"], accept="text/html")
        assert page[0] == 200 and "<form method='post'" in page[1] and "contact c-1" in page[1]
        assert taken.values == []  # a GET (a mail scanner's prefetch) does nothing
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(made["done"]).query)["t"][0]
        status, answer = _call(f"{api.url}/feedback/done", {"t": token})
        assert status == 200 and answer["recorded"]["action"] == "done"
        fb = Feedback.model_validate_json(taken.values[0])
        assert (fb.kind, fb.alert_id, fb.recipient, fb.entity_type) == (
            "done",
            "a1",
            "user:u-1",
            "contact",
        )
        assert _call(f"{api.url}/feedback/done", {"t": token})[0] == 409  # replayed
        assert _call(f"{api.url}/feedback/not_useful", {"t": token})[0] == 403  # another action
        assert _call(f"{api.url}/feedback/done", {"t": token[:-2] + "00"})[0] == 403
        assert _call(f"{api.url}/feedback/done", {"t": "nonsense"})[0] == 400
        assert _call(f"{api.url}/feedback/done", {})[0] == 400
        assert _call(f"{api.url}/elsewhere", {})[0] == 404
        snooze = urllib.parse.parse_qs(urllib.parse.urlsplit(made["snooze"]).query)["t"][0]
        assert _call(f"{api.url}/feedback/snooze", {"t": snooze})[0] == 400  # until what?
        status, answer = _call(f"{api.url}/feedback/snooze", {"t": snooze, "for_s": "3600"})
        assert status == 200 and answer["recorded"]["snooze_until"] == int(NOW * 1000) + 3_600_000
        clock[0] = NOW + 3601
        assert _call(made["not_useful"])[0] == 410  # expired
        assert len(taken.values) == 2
    finally:
        api.stop()
        ledger.close()

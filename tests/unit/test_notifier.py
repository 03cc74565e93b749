"""The notifier's pure parts: signing and verification, routing, quiet hours and caps, the
ledger's idempotency bookkeeping; and the directory's contract and sink rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from rhythm.notifier.channels import email_message, headline, slack_payload, webhook_payload
from rhythm.notifier.ledger import Ledger, NewDelivery
from rhythm.notifier.lookups import engaged_query
from rhythm.notifier.routing import Recipient, destinations, idempotency_key, route
from rhythm.notifier.schedule import (
    WorkingTime,
    backoff_s,
    local_day,
    next_send_at,
    working_time,
)
from rhythm.notifier.service import plan_deliveries
from rhythm.notifier.settings import NotifierSettings
from rhythm.notifier.signing import SignatureError, sign, signature, verify
from rhythm.producers.prepare import make_person
from rhythm.schemas import ContractError
from rhythm.schemas.outputs import Alert
from rhythm.schemas.people import DeliveryRecord, Person, Traits
from rhythm.sinks.tables import NOTIFICATIONS, PEOPLE
from rhythm.sinks.tables.notifications import process as transform_notification
from rhythm.sinks.tables.people import process as transform_person
from rhythm.sinks.tables.rows import DeadLetter, Message

SECRET = b"s3cret"
T0 = 1_767_000_000.0


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def alert(**overrides: Any) -> Alert:
    base: dict[str, Any] = {
        "alert_id": "a1",
        "kind": "unanswered",
        "tenant": "acme",
        "role": "actor",
        "entity_type": "contact",
        "entity_id": "c-1",
        "context_id": "t-1",
        "fired_at": ms("2026-12-07T12:00:00+00:00"),
        "last_event_at": ms("2026-12-07T08:00:00+00:00"),
        "expected_within_s": 7200.0,
        "score": 0.9,
        "owners": ["user:u-1"],
        "details": {"channel": "email"},
    }
    base.update(overrides)
    return Alert.model_validate(base)


def person(ref: str, **traits: Any) -> Person:
    kind, _, ident = ref.partition(":")
    return Person(
        tenant="acme", actor_type=kind, actor_id=ident, traits=Traits(**traits), updated_at=1
    )


def settings(tmp_path: Path, **overrides: Any) -> NotifierSettings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "webhook_url": "http://127.0.0.1:9/hook",
        "webhook_secret": SecretStr("s3cret"),
        "smtp_host": "127.0.0.1",
        "quiet_hours": False,
        "daily_cap": 0,
    }
    values.update(overrides)
    return NotifierSettings(**values)


# -- signing -------------------------------------------------------------------------------


def test_a_signed_request_verifies_and_any_change_or_delay_is_refused() -> None:
    body = b'{"a":1}'
    headers = sign(SECRET, body, T0)
    assert headers["X-Rhythm-Signature"] == f"v1={signature(SECRET, int(T0), body)}"
    assert verify(SECRET, headers, body, T0 + 10) == int(T0)
    # Header names are case-insensitive, as HTTP's are.
    assert verify(SECRET, {k.lower(): v for k, v in headers.items()}, body, T0) == int(T0)
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, headers, b'{"a":2}', T0)
    with pytest.raises(SignatureError, match="does not match"):
        verify(b"other", headers, body, T0)
    with pytest.raises(SignatureError, match="stale"):  # a replay, later
        verify(SECRET, headers, body, T0 + 301)
    with pytest.raises(SignatureError, match="stale"):  # or from the future
        verify(SECRET, headers, body, T0 - 301)
    forged = dict(headers, **{"X-Rhythm-Timestamp": str(int(T0) + 100)})  # new time, old mac
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, forged, body, T0 + 100)
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, {}, body, T0)
    # While a secret rotates a sender may send two signatures: either matching is enough.
    rotated = dict(headers, **{"X-Rhythm-Signature": "v1=00ff, " + headers["X-Rhythm-Signature"]})
    assert verify(SECRET, rotated, body, T0) == int(T0)


# -- routing -------------------------------------------------------------------------------


def test_owners_are_told_first_and_each_once() -> None:
    a = alert(owners=["user:u-1", "user:u-2", "user:u-1"])
    got = route(a, ["user:u-9"], "queue:default", {}, ["user"], 3)
    assert got == [Recipient("user:u-1", "owner"), Recipient("user:u-2", "owner")]
    queued = route(alert(owners=["queue:support"]), [], "queue:default", {}, ["user"], 3)
    assert queued == [Recipient("queue:support", "queue")]


def test_a_silent_account_goes_to_the_internal_people_most_engaged_with_it() -> None:
    a = alert(kind="silence", owners=[], entity_type="account", entity_id="acct-7")
    directory = {
        "user:u-2": person("user:u-2", internal=False),  # says it is not one of ours
        "bot:b-1": person("bot:b-1", internal=True),  # says it is, whatever its type
    }
    engaged = ["account:acct-7", "contact:c-1", "user:u-2", "user:u-3", "bot:b-1", "user:u-4"]
    got = route(a, engaged, "queue:default", directory, ["user"], 2)
    assert got == [Recipient("user:u-3", "engaged"), Recipient("bot:b-1", "engaged")]
    # Nobody engaged: the tenant's queue.
    assert route(a, ["contact:c-1"], "queue:acme", {}, ["user"], 2) == [
        Recipient("queue:acme", "queue")
    ]


def test_each_recipient_gets_the_channels_it_has_an_address_for() -> None:
    directory = {"user:u-1": person("user:u-1", email="ann@example.com", chat_handle="U1")}
    recipients = [Recipient("user:u-1", "owner"), Recipient("queue:default", "queue")]
    got = destinations(recipients, directory, ["webhook", "slack", "email"], "http://h/x")
    assert [(d.recipient.ref, d.channel, d.address) for d in got] == [
        ("user:u-1", "webhook", "http://h/x"),
        ("user:u-1", "slack", "<@U1>"),
        ("user:u-1", "email", "ann@example.com"),
        ("queue:default", "webhook", "http://h/x"),
        ("queue:default", "slack", "queue:default"),
    ]
    assert idempotency_key("a", "user:u-1", "email") == idempotency_key("a", "user:u-1", "email")
    assert idempotency_key("a", "user:u-1", "email") != idempotency_key("a", "user:u-1", "slack")


def test_the_engaged_query_quotes_what_it_is_given() -> None:
    a = alert(kind="silence", owners=[], entity_id="x' OR 1=1 --")
    sql = engaged_query(a, "rhythm", ["user"], 30, 8)
    assert "entity_id = 'x\\' OR 1=1 --'" in sql and sql.endswith("LIMIT 8")


# -- quiet hours, caps, backoff ------------------------------------------------------------

BERLIN = WorkingTime(ZoneInfo("Europe/Berlin"), (9, 18), frozenset(range(5)))


def test_quiet_hours_hold_until_the_recipients_working_day_starts() -> None:
    # Monday 2026-12-07, 10:00 Berlin: inside working hours, now.
    inside = ms("2026-12-07T10:00:00+01:00")
    assert next_send_at(inside, BERLIN) == inside
    # 07:30 the same day: at 09:00.
    assert next_send_at(ms("2026-12-07T07:30:00+01:00"), BERLIN) == ms("2026-12-07T09:00:00+01:00")
    # Friday 19:00: Monday 09:00, over the weekend.
    assert next_send_at(ms("2026-12-11T19:00:00+01:00"), BERLIN) == ms("2026-12-14T09:00:00+01:00")
    # Saturday noon: Monday too.
    assert next_send_at(ms("2026-12-12T12:00:00+01:00"), BERLIN) == ms("2026-12-14T09:00:00+01:00")
    # Across the spring DST change (Sunday 29 March 2026): Monday 09:00 CEST.
    got = next_send_at(ms("2026-03-27T20:00:00+01:00"), BERLIN)
    assert got == ms("2026-03-30T09:00:00+02:00")
    # The same instant is another day in Tokyo.
    instant = ms("2026-12-07T20:00:00+00:00")
    assert local_day(instant, ZoneInfo("Asia/Tokyo")) == "2026-12-08"
    assert local_day(instant, ZoneInfo("UTC")) == "2026-12-07"


def test_a_persons_own_zone_and_hours_win_over_the_defaults() -> None:
    p = person("user:u-1", timezone="America/New_York", working_hours=(8, 16), working_days=(0,))
    wt = working_time(p, "UTC", (9, 18), (0, 1, 2, 3, 4))
    assert wt.zone.key == "America/New_York" and wt.hours == (8, 16) and wt.days == {0}
    assert working_time(None, "UTC", (9, 18), (0, 1)).days == {0, 1}


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n, 2, 30) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


def test_caps_suppress_past_the_daily_limit_and_quiet_hours_hold(tmp_path: Path) -> None:
    slack = SecretStr("http://127.0.0.1:9/s")
    s = settings(tmp_path, daily_cap=2, quiet_hours=True, smtp_host=None, webhook_url=None,
                 webhook_secret=None, slack_webhook_url=slack)  # fmt: skip
    ledger = Ledger(tmp_path / "l.db")
    people = {"user:u-1": person("user:u-1", timezone="Europe/Berlin")}
    monday_10 = ms("2026-12-07T10:00:00+01:00")
    states = []
    for i in range(3):
        a = alert(alert_id=f"a{i}")
        recipients, planned, suppressed = plan_deliveries(
            s, a, people, [], ledger.count_for_day, monday_10
        )
        assert recipients == ["user:u-1"]
        ledger.intake(a.model_dump(), planned, recipients, monday_10)
        states.append([d.state for d in planned])
    assert states == [["pending"], ["pending"], ["suppressed"]]
    assert suppressed == {"quiet_hours": 0, "cap": 1, "not_useful": 0}
    # At 20:00 the heads-up is held to Tuesday 09:00, and Tuesday's cap is Tuesday's.
    evening = ms("2026-12-07T20:00:00+01:00")
    _, planned, suppressed = plan_deliveries(
        s, alert(alert_id="a9"), people, [], ledger.count_for_day, evening
    )
    (held,) = planned
    assert held.state == "held" and held.due_at == ms("2026-12-08T09:00:00+01:00")
    assert held.day == "2026-12-08" and suppressed == {"quiet_hours": 1, "cap": 0, "not_useful": 0}


# -- the ledger ----------------------------------------------------------------------------


def _new(key: str, recipient: str = "user:u-1", channel: str = "webhook") -> NewDelivery:
    return NewDelivery(key, recipient, channel, "addr", "owner", "pending", 0, "2026-12-07")


def test_an_alert_is_routed_once_however_often_it_is_read(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state.db")
    a = alert().model_dump()
    assert ledger.intake(a, [_new("k1"), _new("k2", channel="email")], ["user:u-1"], 1)
    # Read again (a crash before the offset commit): nothing added, even if routing now
    # would say something else.
    assert not ledger.intake(a, [_new("k3")], ["user:u-9"], 2)
    assert [d.key for d in ledger.all()] == ["k1", "k2"]
    assert ledger.routed("a1") and not ledger.routed("a2")


def test_each_destination_gets_its_deliveries_in_order_and_a_crash_mid_send_resends(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    ledger = Ledger(path)
    ledger.intake(alert(alert_id="a1").model_dump(), [_new("a1-w"), _new("a1-e", channel="email")],
                  ["user:u-1"], 1)  # fmt: skip
    ledger.intake(alert(alert_id="a2").model_dump(), [_new("a2-w")], ["user:u-1"], 2)
    assert [d.key for d in ledger.due(10)] == ["a1-w", "a1-e"]  # a2-w waits behind a1-w
    ledger.start_attempt("a1-w", 10)
    ledger.close()  # SIGKILL mid-send: the attempt is on disk, the outcome is not
    ledger = Ledger(path)
    (again, _) = ledger.due(20)
    assert again.key == "a1-w" and again.state == "sending" and again.attempts == 1
    ledger.retry("a1-w", 20, due_at=1000, error="unreachable")
    assert [d.key for d in ledger.due(500)] == ["a1-e"]  # a2-w still waits behind a1-w
    ledger.start_attempt("a1-e", 499)
    ledger.sent("a1-e", 500)
    assert [d.key for d in ledger.due(1000)] == ["a1-w"]
    ledger.start_attempt("a1-w", 1000)
    ledger.sent("a1-w", 1001)
    assert [d.key for d in ledger.due(1002)] == ["a2-w"]
    ledger.start_attempt("a2-w", 1002)
    ledger.dead("a2-w", 1003, "http_403")
    assert ledger.due(10**12) == []
    assert ledger.counts() == {"sent": 2, "dead": 1}
    sent = ledger.get("a1-w")
    assert sent is not None and sent.attempts == 2 and sent.sent_at == 1001
    # Every change is published once Kafka acknowledged its latest version.
    pending = {d.key: d.version for d in ledger.unpublished()}
    assert pending == {"a1-w": 5, "a1-e": 3, "a2-w": 3}
    ledger.published([("a1-w", 4), ("a1-e", 3), ("a2-w", 3)])
    assert [(d.key, d.version) for d in ledger.unpublished()] == [("a1-w", 5)]
    record = sent.record()
    assert record.state == "sent" and record.version == 5


# -- what a heads-up says ------------------------------------------------------------------


def test_payloads_say_what_and_for_whom(tmp_path: Path) -> None:
    a = alert().model_dump()
    text = headline(a, ZoneInfo("Europe/Berlin"))
    assert text.startswith("contact c-1 has waited 4.0 h for a reply on email (since Mon 07 Dec")
    assert "CET" in text
    assert "gone quiet" in headline(alert(kind="silence", owners=[]).model_dump(), ZoneInfo("UTC"))
    body = json.loads(webhook_payload("k", a, {"ref": "user:u-1"}, text))
    assert body["type"] == "rhythm.heads_up" and body["idempotency_key"] == "k"
    assert body["alert"]["alert_id"] == "a1" and body["recipient"]["ref"] == "user:u-1"
    slack = json.loads(slack_payload("<@U1>", a, text))
    assert slack["text"].startswith("<@U1> contact c-1") and slack["blocks"][0]["type"] == "section"
    msg = email_message(settings(tmp_path), "k", "ann@example.com", "Ann", a, text)
    assert msg["To"] == "Ann <ann@example.com>" and msg["Message-ID"] == "<k@rhythm.notifier>"
    plain = msg.get_body(("plain",))
    rich = msg.get_body(("html",))
    assert plain is not None and rich is not None
    assert "has waited" in plain.get_content() and "<strong>" in rich.get_content()


def test_secrets_never_show_in_the_settings_text(tmp_path: Path) -> None:
    s = settings(tmp_path, smtp_password=SecretStr("hunter2"),
                 slack_webhook_url=SecretStr("https://hooks.example/T/B/xyz"))  # fmt: skip
    text = f"{s!r} {s} {s.model_dump()}"
    assert "hunter2" not in text and "s3cret" not in text and "xyz" not in text
    with pytest.raises(ValueError, match="webhook_secret"):
        NotifierSettings(data_dir=tmp_path, webhook_url="http://h/x")


# -- the directory's contract and the sink's rows ------------------------------------------


def test_identify_validates_traits() -> None:
    p = make_person("acme", ("user", "u-1"), {"name": "Ann", "timezone": "Europe/Berlin"}, 5)
    assert p.key == "acme:user:u-1" and p.ref == "user:u-1" and p.traits.name == "Ann"
    for bad in (
        {"timezone": "Mars/Olympus"},
        {"email": "not-an-address"},
        {"working_hours": [18, 9]},
        {"working_days": [7]},
        {"favourite_colour": "blue"},
    ):
        with pytest.raises(ContractError):
            make_person("acme", ("user", "u-1"), bad, 5)
    with pytest.raises(ContractError):
        make_person("ACME", ("user", "u-1"), {}, 5)


def _message(value: bytes) -> Message:
    return Message("t", 0, 7, 1_767_000_000_000, b"k", value)


def test_the_sink_writes_people_and_notifications_rows() -> None:
    p = person("user:u-1", name="Ann", working_hours=(8, 16), internal=True)
    row = transform_person(_message(p.model_dump_json().encode()))
    assert isinstance(row, tuple) and len(row) == len(PEOPLE.column_names)
    assert row[:4] == ("acme", "user", "u-1", "Ann") and row[7] == [8, 16]
    record = DeliveryRecord(
        key="k", alert_id="a1", tenant="acme", kind="unanswered", recipient="user:u-1",
        channel="email", address="ann@example.com", reason="owner", state="sent", attempts=1,
        created_at=1, due_at=1, updated_at=2, sent_at=2, version=3,
    )  # fmt: skip
    row = transform_notification(_message(record.model_dump_json().encode()))
    assert isinstance(row, tuple) and len(row) == len(NOTIFICATIONS.column_names)
    bad = transform_person(_message(b'{"tenant": "acme"}'))
    assert isinstance(bad, DeadLetter) and bad.reason == "invalid_person"
    assert datetime.fromtimestamp(0, UTC).year == 1970


# -- rhythm up -----------------------------------------------------------------------------


def test_rhythm_up_supervises_the_notifier_when_a_channel_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rhythm.stack.supervisor.control import Stack, StackSettings

    for name in ("WEBHOOK_URL", "SLACK_WEBHOOK_URL", "SMTP_HOST", "CLICKHOUSE_URL"):
        monkeypatch.delenv(f"RHYTHM_NOTIFIER_{name}", raising=False)
    settings = StackSettings(
        home=tmp_path, prometheus_port=0, notifier_metrics_port=19467, collector_port=0
    )
    names = [p.name for p in Stack(settings)._parts("127.0.0.1:9")]
    assert names == ["processors", "history", "sink"]
    monkeypatch.setenv("RHYTHM_NOTIFIER_SMTP_HOST", "127.0.0.1")
    parts = {p.name: p for p in Stack(settings)._parts("127.0.0.1:9")}
    notifier = parts["notifier"]
    assert notifier.argv[-1] == "notifier" and notifier.ready_port == 19467
    assert notifier.health_url == "http://127.0.0.1:19467/healthz"
    assert notifier.env["RHYTHM_NOTIFIER_DATA_DIR"] == str(tmp_path.resolve() / "notifier")
    assert notifier.env["RHYTHM_NOTIFIER_CLICKHOUSE_URL"] == "http://127.0.0.1:8123"
    assert notifier.env["RHYTHM_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9"


def test_every_alert_kind_has_its_own_words_and_a_delivery_decision() -> None:
    """A new alert kind must say what it is (not fall through to another kind's words), and
    be either delivered by default or deliberately not (resumed: good news)."""
    from rhythm.schemas.outputs import ALERT_KINDS

    zone = ZoneInfo("UTC")
    base = {
        "entity_type": "account", "entity_id": "a-1", "fired_at": 10 * 86_400_000,
        "last_event_at": 86_400_000, "expected_within_s": 3600.0, "details": {},
    }  # fmt: skip
    words = {kind: headline({**base, "kind": kind}, zone) for kind in ALERT_KINDS}
    assert len(set(words.values())) == len(ALERT_KINDS), words
    not_delivered_by_default = {"resumed"}
    assert set(NotifierSettings().kinds) | not_delivered_by_default == set(ALERT_KINDS)


def test_a_historical_alert_is_never_routed_nor_delivered(tmp_path: Path) -> None:
    from rhythm.notifier.service import Notifier

    notifier = Notifier(settings(tmp_path), engaged=lambda alert, n: [])
    try:
        past = alert(alert_id="h1", historical=True).model_dump_json().encode()
        assert not notifier.handle_alert(past)
        assert not notifier.ledger.routed("h1") and notifier.ledger.all() == []
        assert notifier.metrics.alerts.labels("historical")._value.get() == 1
        assert notifier.handle_alert(alert(alert_id="l1").model_dump_json().encode())
        assert notifier.ledger.routed("l1")
    finally:
        notifier.ledger.close()

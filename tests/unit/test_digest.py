"""The daily digest's pure parts: ranking, the cap, nothing new, escaping, when a person's
day starts; and the notifier's digest planning with an injected clock and store (its ledger
is the real SQLite one)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rhythm.notifier.digest import (
    Digest,
    DigestInputs,
    Move,
    OpenAlert,
    build_digest,
    has_new,
)
from rhythm.notifier.digest_render import digest_html, digest_slack_payload, digest_text
from rhythm.notifier.ledger import Ledger, NewDelivery
from rhythm.notifier.schedule import WorkingTime, digest_due
from rhythm.notifier.service import Notifier
from rhythm.notifier.settings import NotifierSettings
from rhythm.producers.prepare import make_person

UTC_ZONE = ZoneInfo("UTC")
NOW = int(datetime.fromisoformat("2026-12-08T09:05:00+00:00").timestamp() * 1000)
H = 3_600_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def owed(i: int, since_h: float, score: float = 0.8) -> OpenAlert:
    return OpenAlert(
        alert_id=f"owed-{i}", kind="unanswered", entity_type="contact", entity_id=f"c-{i}",
        context_id=f"t-{i}", fired_at=NOW - int(since_h * H) + 2 * H,
        last_event_at=NOW - int(since_h * H), expected_within_s=7200.0, score=score,
        details={"channel": "email"},
    )  # fmt: skip


def quiet(entity_id: str, fired_h: float, score: float = 0.9) -> OpenAlert:
    return OpenAlert(
        alert_id=f"quiet-{entity_id}", kind="silence", entity_type="account",
        entity_id=entity_id, context_id=None, fired_at=NOW - int(fired_h * H),
        last_event_at=NOW - int(fired_h * H) - 20 * H, expected_within_s=40_000.0, score=score,
    )  # fmt: skip


def move(etype: str, eid: str, pace_z: float, amplitude_z: float = 0.0) -> Move:
    return Move(
        entity_type=etype, entity_id=eid, window_start=NOW - 33 * H, window_s=86_400,
        current_count=90, baseline_count=30.0, current_weight=900.0, baseline_weight=300.0,
        pace_z=pace_z, amplitude_z=amplitude_z,
    )  # fmt: skip


def build(inputs: DigestInputs, cap: int = 10, name: str | None = "Ann") -> Digest:
    return build_digest(
        tenant="acme", person="user:u-42", name=name, zone=UTC_ZONE, day="2026-12-08",
        now_ms=NOW, inputs=inputs, cap=cap,
    )  # fmt: skip


def test_owed_come_first_oldest_first_then_quiet_and_movers_by_rank() -> None:
    inputs = DigestInputs(
        owed=[owed(1, 5), owed(2, 30), owed(3, 12)],
        quiet=[quiet("acct-near", 2), quiet("acct-far", 2), quiet("acct-unknown", 1)],
        moves=[move("account", "acct-busy", 6.0), move("tag", "analytics", -9.0)],
        engagement={
            "account:acct-near": 40,
            "account:acct-far": 4,
            "account:acct-busy": 8,
            "tag:team": 300,
            "tag:analytics": 30,
        },
    )
    d = build(inputs)
    assert [i.kind for i in d.items] == ["owed"] * 3 + ["quiet"] * 2 + ["mover", "community"]
    assert [i.entity for i in d.items[:3]] == ["contact:c-2", "contact:c-3", "contact:c-1"]
    # The same alert score: the account they are close to before the one they barely touch;
    # an account they never touched is not theirs.
    assert [i.entity for i in d.items[3:5]] == ["account:acct-near", "account:acct-far"]
    assert d.items[3].affinity == 1.0 and d.items[4].affinity == pytest.approx(0.1)
    assert "has waited 30.0 h for a reply on email" in d.items[0].why
    assert "you had 40 events with it in 30 days" in d.items[3].why
    assert d.items[6].why.startswith("tag analytics is down: ")
    # Tags are weighed against tags: their own team's tag, on all their events, does not
    # make the accounts they work with look remote.
    assert (d.items[5].affinity, d.items[6].affinity) == (0.2, 0.1)


def test_an_entity_quiet_in_several_roles_is_one_item_keyed_by_its_quiet_spell() -> None:
    as_actor = quiet("acct-1", 2)
    as_target = dataclasses.replace(
        as_actor, alert_id="other", fired_at=as_actor.fired_at - H, score=0.5,
        last_event_at=as_actor.last_event_at - H,
    )  # fmt: skip
    engagement = {"account:acct-1": 3}
    d = build(DigestInputs(quiet=[as_target, as_actor], engagement=engagement))
    (item,) = d.items
    assert item.score == 0.9 and item.key == f"quiet:account:acct-1:{as_target.last_event_at}"
    # Tomorrow only the other role's alert is open: the same spell, nothing new.
    tomorrow = build(DigestInputs(quiet=[as_target], engagement=engagement))
    assert not has_new(tomorrow, d.keys())


def test_the_cap_keeps_the_highest_ranks() -> None:
    # Silences of accounts the person is closer to the higher i, fired longer ago the higher
    # i: rank .9 x (10+i)/21 x 0.5^((1+i) h / 72 h), from 0.42 (a-0) up; the owed heads-up
    # ranks 0.6 (its score; affinity and recency 1).
    inputs = DigestInputs(
        owed=[owed(1, 3, score=0.6)],
        quiet=[quiet(f"a-{i}", 1 + i) for i in range(12)],
        engagement={f"account:a-{i}": 10 + i for i in range(12)},
    )
    d = build(inputs, cap=10)
    everything = {"contact:c-1", *(f"account:a-{i}" for i in range(12))}
    assert {i.entity for i in d.items} == everything - {"account:a-0", "account:a-1", "account:a-2"}
    assert d.items[0].entity == "contact:c-1"  # shown first all the same: it is owed
    assert [i.entity for i in build(inputs, cap=3).items] == [
        "account:a-11", "account:a-10", "account:a-9",
    ]  # fmt: skip


def test_movers_need_a_real_move_and_the_persons_engagement() -> None:
    inputs = DigestInputs(
        moves=[move("account", "weak", 1.5), move("account", "stranger", 9.0),
               move("account", "mine", 1.0, 7.0), move("account", "mine", 3.0),
               move("account", "hushed", -5.0)],
        quiet=[quiet("hushed", 3)],
        engagement={"account:weak": 5, "account:mine": 5, "account:hushed": 5},
    )  # fmt: skip
    d = build(inputs)
    # Gone quiet is "down" as well: told once, as quiet.
    assert [(i.kind, i.entity) for i in d.items] == [
        ("quiet", "account:hushed"), ("mover", "account:mine"),
    ]  # fmt: skip
    assert "amount 900 in the last day, usually 300 (z +7.0)" in d.items[1].why


def test_nothing_new_is_nothing_outside_the_last_digest() -> None:
    inputs = DigestInputs(owed=[owed(1, 5)], quiet=[quiet("a", 2)], engagement={"account:a": 3})
    d = build(inputs)
    assert has_new(d, set())
    assert not has_new(d, d.keys())
    assert not has_new(d, d.keys() | {"owed:older"})  # fewer items is nothing new either
    more = build(DigestInputs(owed=[owed(1, 5), owed(2, 1)], quiet=inputs.quiet,
                              engagement=inputs.engagement))  # fmt: skip
    assert has_new(more, d.keys())
    assert not has_new(build(DigestInputs()), set())  # an empty digest is never sent


def test_a_digest_survives_its_ledger_record() -> None:
    d = build(DigestInputs(owed=[owed(1, 5)]))
    item = d.items[0]
    linked = dataclasses.replace(
        d, items=(dataclasses.replace(item, links=(("done", "https://x/y"),)),)
    )
    for digest in (d, linked):
        assert Digest.from_dict(digest.as_dict()) == digest
    assert d.as_dict()["alert_id"] == "digest:acme:user:u-42:2026-12-08"


def test_user_data_is_escaped_in_html_and_slack() -> None:
    evil = "<script>alert('x')</script>"
    inputs = DigestInputs(quiet=[quiet(f"{evil}&co", 2)], engagement={f"account:{evil}&co": 3})
    d = build(inputs, name=f"Ann {evil}")
    page = digest_html(d)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;co" in page
    assert page.count('class="item ') == 1
    slack = digest_slack_payload("<@U1>", d).decode()
    assert "<script>" not in slack and "&lt;script&gt;" in slack
    assert f"Good morning Ann {evil}," in digest_text(d)  # plain text stays as said


def test_an_empty_digest_says_so() -> None:
    d = build(DigestInputs())
    assert "Nothing needs you today." in digest_html(d)
    assert "Nothing needs you today." in digest_text(d)


# -- when: the start of the person's working day, by the notifier's clock ---------------------


def wt(
    zone: str, hours: tuple[int, int] = (9, 17), days: tuple[int, ...] = (0, 1, 2, 3, 4)
) -> WorkingTime:
    return WorkingTime(ZoneInfo(zone), hours, frozenset(days))


def test_the_digest_is_due_from_the_day_start_until_the_day_ends() -> None:
    berlin = wt("Europe/Berlin")
    # Tuesday 8 Dec 2026; Berlin is UTC+1.
    assert digest_due(ms("2026-12-08T07:59:59+00:00"), berlin) is None
    start = ms("2026-12-08T08:00:00+00:00")
    assert digest_due(start, berlin) == ("2026-12-08", start)
    assert digest_due(ms("2026-12-08T12:30:00+00:00"), berlin) == ("2026-12-08", start)
    assert digest_due(ms("2026-12-08T16:00:00+00:00"), berlin) is None  # 17:00 there
    assert digest_due(ms("2026-12-12T10:00:00+00:00"), berlin) is None  # Saturday
    # The same instant is another day for someone in Tokyo (UTC+9): Wednesday 9:30.
    tokyo = wt("Asia/Tokyo")
    assert digest_due(ms("2026-12-09T00:30:00+00:00"), tokyo) == (
        "2026-12-09",
        ms("2026-12-09T00:00:00+00:00"),
    )
    # The day DST starts in Berlin (Sunday 29 March 2026; Monday 30 March is UTC+2).
    assert digest_due(ms("2026-03-30T07:00:00+00:00"), berlin) == (
        "2026-03-30",
        ms("2026-03-30T07:00:00+00:00"),
    )


# -- the notifier: once per person and day, nothing new skipped --------------------------------


class FakeStore:
    def __init__(self) -> None:
        self.inputs: dict[str, DigestInputs] = {}
        self.asked: list[tuple[str, int]] = []

    def __call__(self, tenant: str, person: str, now_ms: int) -> DigestInputs:
        self.asked.append((person, now_ms))
        return self.inputs.get(person, DigestInputs())


def notifier(tmp_path: Path, store: FakeStore, clock: list[int]) -> Notifier:
    settings = NotifierSettings(
        data_dir=tmp_path, webhook_url="http://127.0.0.1:9/hook", webhook_secret="s",
        metrics_port=0, kafka={"bootstrap_servers": "127.0.0.1:9"},
    )  # fmt: skip
    n = Notifier(settings, digest_inputs=store, clock=lambda: clock[0])
    people: dict[str, Any] = {
        "user:ann": make_person("acme", ("user", "ann"), {
            "name": "Ann", "email": "ann@example.com", "timezone": "Europe/Berlin",
            "working_hours": [9, 17]}, updated_at=1),
        "user:tak": make_person("acme", ("user", "tak"), {"timezone": "Asia/Tokyo"},
                                updated_at=1),
        "contact:c-1": make_person("acme", ("contact", "c-1"), {"name": "Outside"},
                                   updated_at=1),
        "user:partner": make_person("acme", ("user", "partner"), {"internal": False},
                                    updated_at=1),
    }  # fmt: skip
    n.directory.people["acme"] = people
    return n


def close(n: Notifier) -> None:
    n.ledger.close()
    n.consumer.close()
    n.directory.close()


def test_each_person_gets_one_digest_per_day_from_their_day_start(tmp_path: Path) -> None:
    store = FakeStore()
    store.inputs["user:ann"] = DigestInputs(owed=[owed(1, 5)])
    store.inputs["user:tak"] = DigestInputs(owed=[owed(2, 5)])
    clock = [ms("2026-12-08T07:30:00+00:00")]  # 8:30 in Berlin, 16:30 in Tokyo
    n = notifier(tmp_path, store, clock)
    try:
        assert n.plan_digests(clock[0]) == 1  # Tokyo's day is on; Berlin's not yet
        assert [p for p, _ in store.asked] == ["user:tak"]
        clock[0] = ms("2026-12-08T08:00:00+00:00")  # 9:00 in Berlin
        assert n.plan_digests(clock[0]) == 1
        assert n.plan_digests(clock[0] + 3 * H) == 0  # once a day, whatever the checks
        assert [p for p, _ in store.asked] == ["user:tak", "user:ann"]
        keys = {d.recipient: (d.kind, d.channel, d.reason, d.due_at) for d in n.ledger.all()}
        assert keys == {
            "user:tak": ("digest", "webhook", "digest", ms("2026-12-08T07:30:00+00:00")),
            "user:ann": ("digest", "webhook", "digest", ms("2026-12-08T08:00:00+00:00")),
        }
        # Someone with nothing at all is asked again at every check (the store may be
        # catching up), never recorded as done for the day.
        people = n.directory.people["acme"]
        people["user:new"] = make_person("acme", ("user", "new"), {"timezone": "UTC"}, 1)
        asked = len(store.asked)
        assert n.plan_digests(clock[0] + H) == 0 and n.plan_digests(clock[0] + 2 * H) == 0
        assert [p for p, _ in store.asked[asked:]] == ["user:new", "user:new"]
        del people["user:new"]
        # Digests do not count against the heads-up cap of the day.
        assert n.ledger.count_for_day("user:ann", "2026-12-08") == 0
    finally:
        close(n)
    # A restart (a new notifier on the same ledger) does not plan the day again.
    again = notifier(tmp_path, store, clock)
    try:
        assert again.plan_digests(clock[0] + 4 * H) == 0
        # Next day: the same open heads-up only: nothing new, recorded and not sent.
        next_day = ms("2026-12-09T08:10:00+00:00")
        assert again.plan_digests(next_day) == 0
        skipped = again.metrics.digests.labels("skipped_nothing_new")
        assert skipped._value.get() == 2  # Ann's and Tak's: the same heads-ups as yesterday
        assert len(again.ledger.all()) == 2
        # The day after, a new one is owed: a digest with both.
        store.inputs["user:ann"] = DigestInputs(owed=[owed(1, 5), owed(3, 1)])
        assert again.plan_digests(ms("2026-12-10T08:10:00+00:00")) == 1
        last = again.ledger.last_digest("acme", "user:ann")
        assert last is not None and last["day"] == "2026-12-10"
        assert [i["key"] for i in last["items"]] == ["owed:owed-1", "owed:owed-3"]
    finally:
        close(again)


def test_a_digest_ledger_entry_is_not_an_alert_for_the_cap(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    d = build(DigestInputs(owed=[owed(1, 5)]))
    delivery = NewDelivery("k1", "user:u-42", "email", "a@b.cd", "digest", "pending", NOW, d.day)
    assert ledger.intake(d.as_dict(), [delivery], ["user:u-42"], NOW)
    assert not ledger.intake(d.as_dict(), [delivery], ["user:u-42"], NOW)  # once per day
    assert ledger.count_for_day("user:u-42", d.day) == 0
    last = ledger.last_digest("acme", "user:u-42")
    assert last is not None and Digest.from_dict(last) == d
    ledger.dead("k1", NOW, "refused")
    assert ledger.last_digest("acme", "user:u-42") is None  # never arrived: not "sent"
    ledger.close()


def test_the_webhook_carries_the_digest_as_data_and_text() -> None:
    import json

    from rhythm.notifier.digest_render import digest_webhook_payload

    d = build(DigestInputs(owed=[owed(1, 5)]))
    body = json.loads(digest_webhook_payload("k-1", d, {"ref": "user:u-42"}))
    assert body["type"] == "rhythm.digest" and body["idempotency_key"] == "k-1"
    assert Digest.from_dict(body["digest"]) == d
    assert body["text"] == digest_text(d) and "contact c-1 has waited 5.0 h" in body["text"]

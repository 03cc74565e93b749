"""The feedback loops on the real broker, with the real notifier (`rhythm notifier`), its
links' API and a real signature-verifying webhook receiver on 127.0.0.1. Feedback is given
the way a recipient gives it: the links in the heads-up they received (GET shows a page,
POST acts), and `rhythm feedback` on the command line.

- not useful: after a recipient says a kind of entity's heads-ups are not useful, fewer of
  that kind's later alerts reach them (the others' still do: another recipient, another kind);
- done: a heads-up that would have come again (snoozed; held for a colleague's working day)
  does not, and the thread gets the `rhythm.done` event that closes its wait in the
  processors (tests/unit/test_conversation_done.py: on the rule itself);
- snooze: the heads-up comes back once when the snooze ends, with a new idempotency key;
- the sink stores the feedback in rhythm.feedback.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rhythm.schemas import decode_event
from rhythm.schemas.feedback import DONE_VERB
from rhythm.schemas.topics import TopicSpec
from rhythm.stack.kafka import LocalKafka
from rhythm.stack.ports import free_ports

from .conftest import payload, read_topic
from .test_notifier import (
    SECRET,
    NotifierProcess,
    NotifyTopics,
    WebhookReceiver,
    heads_up,
    identify,
    notify_topics,
    publish,
)
from .test_processors import Pipeline, _stop
from .test_sink_support import RHYTHM, make_topics, poll, running_sink
from .workload import iso

pytestmark = pytest.mark.integration


@dataclass
class Loop:
    bootstrap: str
    topics: NotifyTopics
    feedback: str
    events: str
    receiver: WebhookReceiver
    notifier: NotifierProcess

    def told(self, alert_id: str, recipient: str) -> list[dict[str, Any]]:
        """The heads-ups of an alert that reached a recipient (webhook bodies)."""
        return [
            r.body
            for r in self.receiver.got
            if r.body["alert"]["alert_id"] == alert_id and r.body["recipient"]["ref"] == recipient
        ]

    def settled(self, expected_deliveries: int) -> bool:
        states = self.notifier.states()
        active = {"pending", "sending", "retry"}
        return len(states) >= expected_deliveries and not active & set(states.values())


def click(url: str, **form: str) -> tuple[int, dict[str, Any]]:
    """What a recipient's browser does: GET the link (the confirmation page), then POST its
    form (the token, and for snooze its fields)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200 and b"<form method='post'" in page.read()
    except urllib.error.HTTPError as exc:  # the page says why (used, expired...)
        return exc.code, {"page": exc.read().decode()}
    parts = urllib.parse.urlsplit(url)
    fields = {**urllib.parse.parse_qs(parts.query), **{k: [v] for k, v in form.items()}}
    request = urllib.request.Request(
        urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
        data=urllib.parse.urlencode({k: v[-1] for k, v in fields.items()}).encode(),
        headers={"Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def start_loop(kafka_broker: LocalKafka, tmp_path: Path, **settings: Any) -> Loop:
    bootstrap = kafka_broker.bootstrap
    topics = notify_topics(kafka_broker)
    suffix = uuid.uuid4().hex[:8]
    feedback, events = f"fb.{suffix}", f"ev.fb.{suffix}"
    kafka_broker.create_topics([TopicSpec(feedback, 2, {}), TopicSpec(events, 2, {})])
    web_port, api_port = free_ports(2)
    receiver = WebhookReceiver(web_port).start()
    notifier = NotifierProcess(
        bootstrap, topics, tmp_path,
        webhook_url=f"http://127.0.0.1:{web_port}/hook", webhook_secret=SECRET,
        feedback_topic=feedback, events_topic=events, feedback_port=api_port,
        **settings,
    )  # fmt: skip
    notifier.start()
    return Loop(bootstrap, topics, feedback, events, receiver, notifier)


def stop_loop(loop: Loop) -> None:
    loop.notifier.close()
    loop.receiver.stop()


def scored(i: int, owners: list[str], score: float, entity_type: str = "contact") -> Any:
    a = heads_up(i, owners[0])
    return a.model_copy(
        update={"owners": owners, "score": score, "entity_type": entity_type,
                "entity_id": f"{entity_type}-{i}"}
    )  # fmt: skip


def test_not_useful_lowers_that_kinds_future_heads_ups_for_that_recipient(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    loop = start_loop(kafka_broker, tmp_path)
    try:
        owners = ["user:u-1", "user:u-2"]
        scores = [round(0.1 * (n + 1), 2) for n in range(10)]  # 0.1 .. 1.0
        first = [scored(n, owners, s) for n, s in enumerate(scores)]
        publish(loop.bootstrap, loop.topics.alerts, first, key=b"acme")
        poll(lambda: loop.settled(2 * len(first)), 60, "the first heads-ups")
        # Before any feedback every alert reaches both.
        for a in first:
            assert len(loop.told(a.alert_id, "user:u-1")) == 1
            assert len(loop.told(a.alert_id, "user:u-2")) == 1
        # u-1 finds two of them not useful: one through the link, one on the command line.
        body = loop.told(first[0].alert_id, "user:u-1")[0]
        assert set(body["links"]) == {"done", "snooze", "not_useful"}
        status, answer = click(body["links"]["not_useful"])
        assert status == 200, answer
        cli = subprocess.run(
            [*RHYTHM, "feedback", "not-useful", "--alert", first[1].alert_id,
             "--recipient", "user:u-1", "--bootstrap", loop.bootstrap,
             "--data-dir", str(tmp_path / "notifier")],
            capture_output=True, text=True, timeout=60,
            env={**loop.notifier.env, "RHYTHM_NOTIFIER_FEEDBACK_TOPIC": loop.feedback},
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["entity_type"] == "contact"
        poll(
            lambda: loop.notifier.metric('rhythm_notifier_feedback_total{kind="not_useful"}') == 2,
            30, "the feedback applied",
        )  # fmt: skip
        # The same kind of entity again, the same scores; and an account's, for contrast.
        later = [scored(20 + n, owners, s) for n, s in enumerate(scores)]
        other = [scored(40 + n, ["user:u-1"], s, "account") for n, s in enumerate(scores[:3])]
        publish(loop.bootstrap, loop.topics.alerts, [*later, *other], key=b"acme")
        expected = 2 * len(first) + 2 * len(later) + len(other)
        poll(lambda: loop.settled(expected), 60, "the later heads-ups")
        to_u1 = [a for a in later if loop.told(a.alert_id, "user:u-1")]
        to_u2 = [a for a in later if loop.told(a.alert_id, "user:u-2")]
        assert len(to_u2) == len(later)  # nothing changed for the colleague
        # Two net "not useful": threshold 1 - 0.8^2 = 0.36: scores 0.4 .. 1.0 still come.
        assert [a.score for a in to_u1] == [s for s in scores if s >= 0.36]
        assert len(to_u1) < len(first)
        assert all(loop.told(a.alert_id, "user:u-1") for a in other)  # another kind: all
        assert loop.notifier.metric('rhythm_notifier_suppressed_total{reason="not_useful"}') == 3
        poll(
            lambda: loop.notifier.metric('rhythm_notifier_not_useful_rate{alert_kind="unanswered"}')
            > 0,
            30, "the not-useful rate (refreshed every 15 s)",
        )  # fmt: skip
    finally:
        stop_loop(loop)

    # The sink stores the feedback.
    sink_topics = make_topics(kafka_broker, "feedback")
    (tmp_path / "sink").mkdir()
    with running_sink(
        kafka_broker, sink_topics, tmp_path / "sink", feedback_topic=loop.feedback
    ) as sink:
        poll(
            lambda: sink.scalar(
                "SELECT count() FROM rhythm.feedback FINAL WHERE kind = 'not_useful' "
                "AND recipient = 'user:u-1' AND entity_type = 'contact'"
            ) == 2,
            60, "the feedback in the store",
        )  # fmt: skip


def test_snoozed_heads_up_comes_back_once_when_the_snooze_ends(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    loop = start_loop(kafka_broker, tmp_path)
    try:
        a = scored(1, ["user:u-1"], 0.9)
        publish(loop.bootstrap, loop.topics.alerts, [a])
        poll(lambda: loop.told(a.alert_id, "user:u-1"), 60, "the heads-up")
        first = loop.told(a.alert_id, "user:u-1")[0]
        until_ms = int(time.time() * 1000) + 3000
        status, answer = click(first["links"]["snooze"], until=str(until_ms))
        assert status == 200 and answer["recorded"]["snooze_until"] == until_ms
        # Used twice: refused, and nothing more is scheduled.
        assert click(first["links"]["snooze"], until=str(until_ms + 5000))[0] == 409
        poll(lambda: len(loop.told(a.alert_id, "user:u-1")) >= 2, 60, "the heads-up again")
        assert int(time.time() * 1000) >= until_ms
        poll(lambda: loop.settled(2), 30, "the ledger")
        again = [r for r in loop.receiver.got if r.body["alert"]["alert_id"] == a.alert_id]
        assert len(again) == 2 and again[0].key != again[1].key  # a new delivery
        assert sorted(loop.notifier.states().values()) == ["sent", "sent"]  # once
        assert again[1].body["links"]["done"] != first["links"]["done"]  # fresh links
        assert loop.notifier.metric('rhythm_notifier_feedback_total{kind="snooze"}') == 1
    finally:
        stop_loop(loop)


def test_done_stops_the_heads_up_coming_again_and_closes_the_wait_in_its_thread(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    hour = datetime.now(UTC).hour
    off = (hour + 12) % 23  # u-2 works one hour half a day away: their copy is held
    loop = start_loop(
        kafka_broker, tmp_path, quiet_hours="true", default_working_hours="[0, 24]",
        default_working_days="[0, 1, 2, 3, 4, 5, 6]",
    )  # fmt: skip
    try:
        identify(
            loop.bootstrap, loop.topics.people,
            {"user:u-1": {"timezone": "UTC"},
             "user:u-2": {"timezone": "UTC", "working_hours": [off, off + 1]}},
        )  # fmt: skip
        loop.notifier.stop()  # read the directory afresh
        loop.notifier.start()
        a = scored(1, ["user:u-1", "user:u-2"], 0.9)
        publish(loop.bootstrap, loop.topics.alerts, [a])
        poll(lambda: loop.told(a.alert_id, "user:u-1"), 60, "the heads-up")
        body = loop.told(a.alert_id, "user:u-1")[0]
        # u-1 first snoozes it a minute: it would come again then, and to u-2 in their hour.
        assert click(body["links"]["snooze"], for_s="60")[0] == 200
        poll(lambda: "snoozed" in loop.notifier.states().values(), 30, "the snooze")
        assert sorted(loop.notifier.states().values()) == ["held", "sent", "snoozed"]
        status, answer = click(body["links"]["done"])
        assert status == 200, answer
        poll(
            lambda: sorted(loop.notifier.states().values()) == ["cancelled", "cancelled", "sent"],
            30, "done applied",
        )  # fmt: skip
        assert len(loop.told(a.alert_id, "user:u-1")) == 1
        assert loop.told(a.alert_id, "user:u-2") == []
        # The thread gets the event that closes the wait: by u-1, about the waiting contact.
        (message,) = read_topic(loop.bootstrap, loop.events, 1, timeout=30)
        event = decode_event(message.value() or b"")
        assert event["verb"] == DONE_VERB and event["context_id"] == a.context_id
        assert (event["actor_type"], event["actor_id"]) == ("user", "u-1")
        assert (event["target_type"], event["target_id"]) == (a.entity_type, a.entity_id)
        assert event["properties"]["alert_id"] == a.alert_id
        assert loop.notifier.metric('rhythm_notifier_feedback_total{kind="done"}') == 1
        # A restarted notifier reads the feedback again from its committed offset: applied once,
        # the event not published twice.
        loop.notifier.stop()
        loop.notifier.start()
        assert len(read_topic(loop.bootstrap, loop.events, 1, timeout=5)) == 1
    finally:
        stop_loop(loop)


# -- done, through the real processors --------------------------------------------------------


@dataclass
class FastReplies(Pipeline):
    """Processors whose threads learn norms of seconds: replies come 5-20 s after a message,
    so an unanswered one alerts about half a minute later; the watermark follows the clock
    2 s behind once input stops, with 2 s of lateness."""

    def env(self) -> dict[str, str]:
        return super().env() | {
            "RHYTHM_PROCESSOR_LATENESS_S": "2",
            "RHYTHM_PROCESSOR_IDLE_AFTER_S": "2",
            "RHYTHM_PROCESSOR_REPLY_MIN_REPLIES": "5",
            "RHYTHM_PROCESSOR_REPLY_MIN_KIND_REPLIES": "5",
        }


def _message(ts: int, context: str, actor: tuple[str, str]) -> dict[str, Any]:
    verb = "wrote" if actor[0] == "customer" else "replied"
    return {"tenant": "acme", "occurred_at": iso(ts), "actor": {"type": actor[0], "id": actor[1]},
            "verb": verb, "channel": "chat", "context_id": context}  # fmt: skip


def test_done_closes_the_wait_in_the_processors(kafka_broker: LocalKafka, tmp_path: Path) -> None:
    """Two threads alike, both unanswered and told; done on one. When both customers write
    again, only the thread marked done has a new wait (and its own alert when that one is
    not answered either): in the other the first wait is still open and swallows it."""
    pipeline = FastReplies(kafka_broker.bootstrap, f"fb-{uuid.uuid4().hex[:8]}", tmp_path)
    pipeline.create_topics()
    now = int(time.time() * 1000)
    rng = random.Random(11)
    history: list[dict[str, Any]] = []
    for i in range(30):  # answered threads: a request, a reply, a follow-up, a reply
        t = now - 50 * 60_000 + i * 60_000
        customer, agent = ("customer", f"h-{i}"), ("agent", "a-1")
        history += [
            _message(t, f"hist-{i}", customer),
            _message(t + rng.randrange(5_000, 20_000), f"hist-{i}", agent),
            _message(t + 30_000, f"hist-{i}", customer),
            _message(t + 30_000 + rng.randrange(5_000, 20_000), f"hist-{i}", agent),
        ]
    first = now - 5 * 60_000
    history += [_message(first, "done-me", ("customer", "c-d")),
                _message(first, "control", ("customer", "c-c"))]  # fmt: skip
    people, notifications = f"people.{pipeline.name}", f"notif.{pipeline.name}"
    kafka_broker.create_topics(
        [TopicSpec(people, 1, {"cleanup.policy": "compact"}), TopicSpec(notifications, 1, {}),
         TopicSpec(f"fb.{pipeline.name}", 1, {})]
    )  # fmt: skip
    topics = NotifyTopics(pipeline.topics["alerts"], people, notifications)
    web_port, api_port = free_ports(2)
    receiver = WebhookReceiver(web_port).start()
    notifier = NotifierProcess(
        kafka_broker.bootstrap, topics, tmp_path,
        webhook_url=f"http://127.0.0.1:{web_port}/hook", webhook_secret=SECRET,
        feedback_topic=f"fb.{pipeline.name}", events_topic=pipeline.topics["events"],
        feedback_port=api_port,
    )  # fmt: skip
    proc = pipeline.start()
    try:
        notifier.start()
        pipeline.send(history)

        def told(context: str) -> list[dict[str, Any]]:
            return [r.body for r in receiver.got if r.body["alert"]["context_id"] == context]

        poll(lambda: told("done-me") and told("control"), 180, "both threads told")
        alert = told("done-me")[0]
        assert alert["alert"]["kind"] == "unanswered"
        assert alert["alert"]["last_event_at"] == first
        status, answer = click(alert["links"]["done"])
        assert status == 200, answer
        poll(
            lambda: any(
                decode_event(payload(m))["verb"] == DONE_VERB
                for m in read_topic(kafka_broker.bootstrap, pipeline.topics["events"], 0, 2)
            ),
            30, "the done event in the thread",
        )  # fmt: skip
        again = int(time.time() * 1000) + 1
        pipeline.send([_message(again, "done-me", ("customer", "c-d")),
                       _message(again, "control", ("customer", "c-c"))])  # fmt: skip

        def alerts_of(context: str) -> list[dict[str, Any]]:
            messages = read_topic(kafka_broker.bootstrap, pipeline.topics["alerts"], 0, 2)
            return [a for a in map(lambda m: json.loads(payload(m)), messages)
                    if a["context_id"] == context]  # fmt: skip

        poll(lambda: len(alerts_of("done-me")) >= 2, 180, "the new wait's own alert")
        second = [a for a in alerts_of("done-me") if a["last_event_at"] == again]
        assert len(second) == 1, alerts_of("done-me")
        # The control thread judged at the same instants, in the same partition: its first
        # wait never closed, so the customer's second message made no new wait.
        assert [a["last_event_at"] for a in alerts_of("control")] == [first]
    except AssertionError:
        print(pipeline.diagnosis())
        raise
    finally:
        _stop(proc)
        notifier.close()
        receiver.stop()

"""The notifier on the real broker with real receivers on 127.0.0.1: an HTTP server that
verifies every webhook's signature (rhythm.notifier.signing.verify) and a local SMTP server
(aiosmtpd) that captures mail. Each heads-up reaches exactly its recipient once through a
notifier SIGKILLed mid-run; a receiver that is down gets everything afterwards, in order,
once; caps and quiet hours hold; the sink stores the directory and the deliveries."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message as EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from confluent_kafka import Producer

from rhythm.notifier.routing import idempotency_key
from rhythm.notifier.signing import SignatureError, verify
from rhythm.producers import Client, ClientSettings, KafkaSettings
from rhythm.schemas.outputs import Alert
from rhythm.schemas.people import DeliveryRecord
from rhythm.schemas.topics import TopicSpec
from rhythm.stack.kafka import LocalKafka
from rhythm.stack.ports import free_ports

from .conftest import read_topic
from .test_sink_support import RHYTHM, _pump, make_topics, poll, publisher, running_sink

pytestmark = pytest.mark.integration

SECRET = "integration-secret"
#: "A receiver down for a minute", shortened (RHYTHM_TEST_RECEIVER_DOWN_S=60 for the minute).
DOWN_S = float(os.environ.get("RHYTHM_TEST_RECEIVER_DOWN_S", "8"))


# -- receivers -------------------------------------------------------------------------------


@dataclass
class Received:
    key: str
    path: str
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """A webhook endpoint as a customer would write one: verifies the signature and the
    timestamp, refuses anything else with 401."""

    port: int
    delay_s: float = 0.0
    got: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/hook":
                    try:
                        verify(SECRET.encode(), dict(self.headers.items()), body, time.time())
                    except SignatureError as exc:
                        receiver.rejected.append(str(exc))
                        self._answer(401)
                        return
                time.sleep(receiver.delay_s)
                key = self.headers.get("X-Rhythm-Idempotency-Key", "")
                receiver.got.append(Received(key, self.path, json.loads(body)))
                self._answer(200)

            def _answer(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def keys(self, path: str) -> list[str]:
        return [r.key for r in self.got if r.path == path]


class Mailbox:
    """aiosmtpd on 127.0.0.1, keeping every message it is given."""

    def __init__(self, port: int) -> None:
        self.messages: list[EmailMessage] = []
        mailbox = self

        class Handler:
            async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
                self, server: Any, session: Any, envelope: Any
            ) -> str:
                mailbox.messages.append(message_from_bytes(envelope.original_content))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)

    def keys(self) -> list[str]:
        return [str(m["X-Rhythm-Idempotency-Key"]) for m in self.messages]


@contextlib.contextmanager
def mailbox(port: int) -> Iterator[Mailbox]:
    box = Mailbox(port)
    box.controller.start()
    try:
        yield box
    finally:
        box.controller.stop()


# -- the notifier as a user runs it ----------------------------------------------------------


@dataclass(frozen=True)
class NotifyTopics:
    alerts: str
    people: str
    notifications: str


def notify_topics(broker: LocalKafka) -> NotifyTopics:
    suffix = uuid.uuid4().hex[:8]
    topics = NotifyTopics(f"al.n.{suffix}", f"people.{suffix}", f"notif.{suffix}")
    broker.create_topics(
        [
            TopicSpec(topics.alerts, 2, {}),
            TopicSpec(topics.people, 2, {"cleanup.policy": "compact"}),
            TopicSpec(topics.notifications, 2, {"cleanup.policy": "compact"}),
        ]
    )
    return topics


class NotifierProcess:
    def __init__(self, bootstrap: str, topics: NotifyTopics, workdir: Path, **settings: Any):
        self.workdir = workdir
        self.metrics_port, feedback_port = free_ports(2)
        values: dict[str, Any] = {
            "data_dir": workdir / "notifier",
            "group_id": f"notifier-{uuid.uuid4().hex[:8]}",
            # A restarted (or SIGKILLed and restarted) notifier gets its partitions back at once.
            "group_instance_id": "notifier-1",
            "session_timeout_ms": 6000,
            "alerts_topic": topics.alerts,
            "people_topic": topics.people,
            "notifications_topic": topics.notifications,
            "metrics_port": self.metrics_port,
            "feedback_port": feedback_port,  # the links' API: never the default 9468 in tests
            "quiet_hours": "false",
            "daily_cap": 0,
            "engaged_top": 0,
            "digest": "false",  # test_digest.py sends digests
            "tick_s": 0.05,
            "request_timeout_s": 2,
        } | settings
        self.env = os.environ.copy()
        self.env.update({f"RHYTHM_NOTIFIER_{k.upper()}": str(v) for k, v in values.items()})
        self.env["RHYTHM_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ledger(self) -> Path:
        return self.workdir / "notifier" / "state.db"

    def log(self) -> str:
        path = self.workdir / "notifier.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 60.0) -> NotifierProcess:
        with (self.workdir / "notifier.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [*RHYTHM, "notifier"], env=self.env, stdout=subprocess.PIPE, stderr=log
            )
        lines: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        assert self.proc.stdout is not None
        threading.Thread(target=_pump, args=(self.proc.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                if lines.get(timeout=0.2).startswith(b"{"):
                    return self
            if self.proc.poll() is not None:
                break
        raise AssertionError(f"the notifier did not start:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def states(self) -> dict[str, str]:
        with contextlib.closing(sqlite3.connect(self.ledger)) as db:
            return dict(db.execute("SELECT key, state FROM deliveries").fetchall())


@contextlib.contextmanager
def running_notifier(
    bootstrap: str, topics: NotifyTopics, workdir: Path, **settings: Any
) -> Iterator[NotifierProcess]:
    notifier = NotifierProcess(bootstrap, topics, workdir, **settings)
    try:
        yield notifier.start()
    finally:
        notifier.close()


# -- inputs ----------------------------------------------------------------------------------

NOW_MS = int(time.time() * 1000)


def heads_up(i: int, owner: str, kind: str = "unanswered") -> Alert:
    return Alert(
        alert_id=f"alert-{i:03d}-{uuid.uuid4().hex[:6]}",
        kind=kind,
        tenant="acme",
        role="actor",
        entity_type="contact",
        entity_id=f"c-{i}",
        context_id=f"thread-{i}",
        fired_at=NOW_MS - 60_000,
        last_event_at=NOW_MS - 4 * 3_600_000,
        expected_within_s=7200.0,
        score=0.8,
        owners=[owner] if owner else [],
        details={"channel": "email"},
    )


def publish(bootstrap: str, topic: str, alerts: list[Alert], key: bytes | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for a in alerts:
        producer.produce(topic, a.model_dump_json().encode(), key=key or a.entity_id.encode())
    assert producer.flush(30) == 0


def identify(bootstrap: str, topic: str, people: dict[str, dict[str, Any]]) -> None:
    client = Client(
        ClientSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap), people_topic=topic)
    )
    for ref, traits in people.items():
        kind, _, ident = ref.partition(":")
        client.identify("acme", (kind, ident), traits)
    assert client.flush(30) == 0
    client.close()


def latest_records(bootstrap: str, topic: str, expected: int) -> dict[str, DeliveryRecord]:
    latest: dict[str, DeliveryRecord] = {}
    for m in read_topic(bootstrap, topic, expected, timeout=30):
        record = DeliveryRecord.model_validate_json(m.value() or b"")
        if record.key not in latest or latest[record.key].version < record.version:
            latest[record.key] = record
    return latest


# -- the tests -------------------------------------------------------------------------------


def test_each_heads_up_reaches_its_recipient_once_through_sigkills(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    topics = notify_topics(kafka_broker)
    people = {
        f"user:u-{n}": {"name": f"Person {n}", "email": f"p{n}@example.com", "internal": True}
        for n in range(5)
    }
    identify(bootstrap, topics.people, people)
    alerts = [heads_up(i, f"user:u-{i % 5}") for i in range(30)]
    publish(bootstrap, topics.alerts, [*alerts, *alerts[:10]])  # ten re-sent (duplicates)
    expected = {
        idempotency_key(a.alert_id, a.owners[0], channel): (a, channel)
        for a in alerts
        for channel in ("webhook", "email")
    }
    web_port, smtp_port = free_ports(2)
    receiver = WebhookReceiver(web_port, delay_s=0.05).start()
    try:
        with mailbox(smtp_port) as box:
            notifier = NotifierProcess(
                bootstrap, topics, tmp_path,
                webhook_url=f"http://127.0.0.1:{web_port}/hook", webhook_secret=SECRET,
                smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_security="none",
                retry_base_s=0.2, retry_max_s=1,
            )  # fmt: skip
            try:
                kills = 0
                for mark in (12, 36):
                    notifier.start()

                    def reached(m: int = mark) -> bool:
                        return len(receiver.got) + len(box.messages) >= m

                    poll(reached, 60, f"{mark} deliveries")
                    notifier.kill()  # mid-run: deliveries are still waiting
                    kills += 1
                notifier.start()

                def all_in() -> bool:
                    return set(receiver.keys("/hook")) | set(box.keys()) >= set(expected)

                poll(all_in, 90, "every heads-up")
                time.sleep(1.0)  # anything sent twice would show now
                assert notifier.stop() == 0
            finally:
                notifier.close()
            webhook_keys, mail_keys = receiver.keys("/hook"), box.keys()
            assert not receiver.rejected  # every request verified
            assert set(webhook_keys) == {k for k, (_, c) in expected.items() if c == "webhook"}
            assert set(mail_keys) == {k for k, (_, c) in expected.items() if c == "email"}
            # Exactly its recipient: the webhook names the owner, the mail goes to them.
            for r in receiver.got:
                a, _ = expected[r.key]
                assert r.body["recipient"]["ref"] == a.owners[0]
                assert r.body["alert"]["alert_id"] == a.alert_id
            for m in box.messages:
                a, _ = expected[str(m["X-Rhythm-Idempotency-Key"])]
                person = people[a.owners[0]]
                assert m["To"] == f"{person['name']} <{person['email']}>"
                assert m.is_multipart()
                types = {part.get_content_type() for part in m.walk()}
                assert {"text/plain", "text/html"} <= types
            # Once: a copy is possible only if a kill fell between a receiver taking a request
            # and the ledger recording it (ms wide); the idempotency key identifies it.
            duplicates = len(webhook_keys) + len(mail_keys) - len(expected)
            print(f"deliveries {len(expected)}, kills {kills}, copies received {duplicates}")
            assert 0 <= duplicates <= kills, (duplicates, kills)
            states = notifier.states()
            assert set(states) == set(expected) and set(states.values()) == {"sent"}
    finally:
        receiver.stop()

    # The deliveries' records reached rhythm.notifications, and the sink stores them, with the
    # directory, in ClickHouse.
    latest = latest_records(bootstrap, topics.notifications, len(expected))
    assert {k: r.state for k, r in latest.items()} == dict.fromkeys(expected, "sent")
    sink_topics = make_topics(kafka_broker, "notifier")
    (tmp_path / "sink").mkdir()
    with running_sink(
        kafka_broker, sink_topics, tmp_path / "sink",
        people_topic=topics.people, notifications_topic=topics.notifications,
    ) as sink:  # fmt: skip
        poll(
            lambda: sink.scalar("SELECT count() FROM rhythm.notifications FINAL "
                                "WHERE state = 'sent'") == len(expected),
            60, "the deliveries in the store",
        )  # fmt: skip
        rows = (
            sink.client()
            .query("SELECT actor_id, email, internal FROM rhythm.people FINAL ORDER BY actor_id")
            .result_rows
        )
        assert rows == [(f"u-{n}", f"p{n}@example.com", True) for n in range(5)]


def test_a_receiver_down_for_a_while_gets_everything_afterwards_in_order_once(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    topics = notify_topics(kafka_broker)
    alerts = [heads_up(i, "user:u-1") for i in range(8)]
    publish(bootstrap, topics.alerts, alerts, key=b"acme")  # one partition: one order
    (web_port,) = free_ports(1)
    receiver = WebhookReceiver(web_port)  # not started: down
    with running_notifier(
        bootstrap, topics, tmp_path,
        webhook_url=f"http://127.0.0.1:{web_port}/hook", webhook_secret=SECRET,
        retry_base_s=0.25, retry_max_s=2, max_attempts=1000,
    ) as notifier:  # fmt: skip
        time.sleep(DOWN_S)
        assert notifier.metric("rhythm_notifier_retried_total") >= 3
        assert notifier.metric("rhythm_notifier_sent_total") == 0
        receiver.start()
        try:
            poll(lambda: len(receiver.got) >= len(alerts), 60, "the backlog")
            time.sleep(1.0)
            got = [r.body["alert"]["alert_id"] for r in receiver.got]
            assert got == [a.alert_id for a in alerts]  # in order, each once
            assert not receiver.rejected
            assert notifier.metric("rhythm_notifier_sent_total") == len(alerts)
        finally:
            receiver.stop()


def test_caps_and_quiet_hours_hold_and_a_refusing_receiver_is_dead_lettered(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    topics = notify_topics(kafka_broker)
    hour = datetime.now(UTC).hour
    off = (hour + 12) % 23  # a one-hour working day half a day away: now is quiet
    identify(
        bootstrap,
        topics.people,
        {
            "user:busy": {"timezone": "UTC"},
            "user:asleep": {"timezone": "UTC", "working_hours": [off, off + 1]},
        },
    )
    busy = [heads_up(i, "user:busy") for i in range(5)]
    asleep = [heads_up(10 + i, "user:asleep") for i in range(2)]
    publish(bootstrap, topics.alerts, [*busy, *asleep], key=b"acme")
    dead_topic = f"dl.n.{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topics([TopicSpec(dead_topic, 1, {})])
    web_port, slack_port = free_ports(2)
    receiver = WebhookReceiver(web_port).start()
    slack = WebhookReceiver(slack_port)  # answers 401 to anything on /hook: see below
    try:
        with running_notifier(
            bootstrap, topics, tmp_path,
            webhook_url=f"http://127.0.0.1:{web_port}/hook", webhook_secret=SECRET,
            # A Slack URL that refuses (401: e.g. a revoked webhook): dead at once, no retry.
            slack_webhook_url=f"http://127.0.0.1:{slack_port}/hook",
            dead_letters_topic=dead_topic,
            quiet_hours="true", daily_cap=2, default_working_hours="[0, 24]",
            default_working_days="[0, 1, 2, 3, 4, 5, 6]",
        ) as notifier:  # fmt: skip
            slack.start()
            poll(lambda: len(receiver.got) >= 2, 60, "the capped deliveries")
            poll(lambda: len(notifier.states()) == 2 * len(busy + asleep), 30, "the routing")
            poll(lambda: notifier.metric("rhythm_notifier_failed_total") >= 2, 30, "dead letters")
            time.sleep(1.5)
            states = notifier.states()
            assert notifier.metric("rhythm_notifier_suppressed_total") == 3 * 2 + 2 * 2
        by_alert: dict[str, dict[str, str]] = {}
        for a in busy + asleep:
            for channel in ("webhook", "slack"):
                key = idempotency_key(a.alert_id, a.owners[0], channel)
                by_alert.setdefault(a.alert_id, {})[channel] = states[key]
        assert [by_alert[a.alert_id]["webhook"] for a in busy] == ["sent"] * 2 + ["suppressed"] * 3
        assert [by_alert[a.alert_id]["slack"] for a in busy] == ["dead"] * 2 + ["suppressed"] * 3
        assert [by_alert[a.alert_id]["webhook"] for a in asleep] == ["held", "held"]
        assert [r.body["alert"]["alert_id"] for r in receiver.got] == [a.alert_id for a in busy[:2]]
        assert len(slack.rejected) == 2  # each refused once, never retried
        dead = read_topic(bootstrap, dead_topic, 2, timeout=30)
        assert {json.loads(m.value() or b"")["alert_id"] for m in dead} == {
            a.alert_id for a in busy[:2]
        }
        reasons = {dict(m.headers() or [])["rhythm.reason"] for m in dead}
        assert reasons == {b"notification_failed"}
    finally:
        receiver.stop()
        slack.stop()


def test_a_silent_account_goes_to_the_people_most_engaged_with_it_in_the_store(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    """Routing asks the sink's endpoint (the real embedded store) who acted on the account
    most; the directory keeps out someone who is not one of ours."""
    bootstrap = kafka_broker.bootstrap
    topics = notify_topics(kafka_broker)
    sink_topics = make_topics(kafka_broker, "engaged")
    now = datetime.now(UTC)
    client = publisher(bootstrap, sink_topics.events)
    counts = {"user:u-1": 2, "user:u-2": 5, "user:u-3": 3, "contact:c-1": 9}
    n = 0
    for ref, times in counts.items():
        kind, _, ident = ref.partition(":")
        for _ in range(times):
            n += 1
            client.track(
                "acme", (kind, ident), "emailed", target=("account", "acct-7"), channel="email",
                occurred_at=datetime.fromtimestamp(now.timestamp() - 86_400 + n, UTC),
            )  # fmt: skip
    assert client.flush(30) == 0
    client.close()
    # u-2 acted most, but the directory says u-2 is not one of ours (a partner's account).
    identify(bootstrap, topics.people, {"user:u-2": {"internal": False}})
    silence = heads_up(1, "", kind="silence").model_copy(
        update={"entity_type": "account", "entity_id": "acct-7", "context_id": None}
    )
    publish(bootstrap, topics.alerts, [silence])
    (web_port,) = free_ports(1)
    receiver = WebhookReceiver(web_port).start()
    (tmp_path / "sink").mkdir()
    try:
        with running_sink(kafka_broker, sink_topics, tmp_path / "sink") as sink:
            assert sink.sync(60), sink.log()[-2000:]
            with running_notifier(
                bootstrap, topics, tmp_path,
                webhook_url=f"http://127.0.0.1:{web_port}/hook", webhook_secret=SECRET,
                clickhouse_url=f"http://127.0.0.1:{sink.http_port}", engaged_top=2,
            ):  # fmt: skip
                poll(lambda: len(receiver.got) >= 2, 60, "the engaged people's heads-ups")
                time.sleep(1.0)
        got = [(r.body["recipient"]["ref"], r.body["recipient"]["reason"]) for r in receiver.got]
        assert got == [("user:u-3", "engaged"), ("user:u-1", "engaged")]
        assert not receiver.rejected
    finally:
        receiver.stop()

"""The mail connector against a real Dovecot (started here on 127.0.0.1) and a real Kafka:
threads, replies and sides come out as events; a re-sync adds nothing; mail arriving while
`rhythm connect imap` runs is an event soon after; a connector SIGKILLed mid-sync resumes
without loss or doubles; and a generated company mailbox imported with `rhythm import mbox`
gives, through the real processors, exactly the planted `unanswered` heads-ups."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from tests.mailbox.generate import DOMAIN, generate, write

from rhythm.connectors.mail.checkpoints import Checkpoints
from rhythm.connectors.mail.imap import ImapSync
from rhythm.connectors.mail.mapping import message_ref
from rhythm.connectors.mail.pipeline import MailPipeline
from rhythm.connectors.mail.publish import NotDeliveredError, Publisher
from rhythm.connectors.mail.settings import MailSettings
from rhythm.connectors.mail.store import Store
from rhythm.producers import ClientSettings, KafkaSettings
from rhythm.schemas import decode_event
from rhythm.schemas.topics import PEOPLE_TOPIC
from rhythm.stack.kafka import LocalKafka
from rhythm.stack.ports import free_port

from .conftest import payload, read_topic
from .dovecot import PASSWORD, Dovecot
from .test_processors import Pipeline, _stop

pytestmark = pytest.mark.integration

USERS = ["ann@acme.test", "live@acme.test", "kill@acme.test"]
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    # Not under pytest's temporary directory: that is private to root (0700), and Dovecot's
    # unprivileged processes must reach the passwd-file and the Maildirs.
    home = Path(tempfile.mkdtemp(prefix="rhythm-dovecot-"))
    home.chmod(0o755)
    server = Dovecot(home, users=USERS)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def settings(
    kafka: LocalKafka, topic: str, state: Path, server: Dovecot, user: str, **more: Any
) -> MailSettings:
    client = ClientSettings(kafka=KafkaSettings(bootstrap_servers=kafka.bootstrap), topic=topic)
    return MailSettings(
        client=client,
        tenant="acme",
        state_dir=state,
        internal_domains=["acme.test"],
        imap_host="127.0.0.1",
        imap_user=user,
        imap_password=PASSWORD,
        **more,
    )


def env(kafka: LocalKafka, topic: str, state: Path, server: Dovecot, user: str) -> dict[str, str]:
    return dict(
        os.environ,
        RHYTHM_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap,
        RHYTHM_CLIENT_TOPIC=topic,
        RHYTHM_MAIL_TENANT="acme",
        RHYTHM_MAIL_STATE_DIR=str(state),
        RHYTHM_MAIL_INTERNAL_DOMAINS='["acme.test"]',
        RHYTHM_MAIL_IMAP_HOST="127.0.0.1",
        RHYTHM_MAIL_IMAP_PORT=str(server.port),
        RHYTHM_MAIL_IMAP_SECURITY="starttls",
        RHYTHM_MAIL_IMAP_CA_FILE=str(server.cert),
        RHYTHM_MAIL_IMAP_USER=user,
        RHYTHM_MAIL_IMAP_PASSWORD=PASSWORD,
        RHYTHM_MAIL_MAILBOXES='["INBOX"]',
        RHYTHM_MAIL_POLL_S="30",
        RHYTHM_MAIL_METRICS_PORT="0",
    )


def mail(
    mid: str | None,
    frm: str,
    to: str,
    subject: str,
    when: datetime,
    extra: str = "",
) -> bytes:
    lines = [f"From: {frm}", f"To: {to}", f"Subject: {subject}"]
    lines.append(f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}")
    if mid:
        lines.append(f"Message-ID: <{mid}>")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\nThe body, which is never read.\r\n").encode()


def events(kafka: LocalKafka, topic: str, expected: int, timeout: float = 60) -> list[Any]:
    return [decode_event(payload(m)) for m in read_topic(kafka.bootstrap, topic, expected, timeout)]


def topic_size(kafka: LocalKafka, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "mail-test-size"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in parts)
    finally:
        consumer.close()


def one_pass(s: MailSettings) -> int:
    """One IMAP pass of a fresh connector process's objects over the same state."""
    pipeline = MailPipeline(s)
    sync = ImapSync(s, pipeline)
    client = sync.connect()
    try:
        return sync.sync(client)
    finally:
        client.logout()
        pipeline.close()


def test_imap_threads_replies_sides_and_a_resync_adds_nothing(
    kafka_broker: LocalKafka, topic: str, dovecot: Dovecot, tmp_path: Path
) -> None:
    user = "ann@acme.test"
    put = dovecot.append
    recv = f"Received: from mx by imap.acme.test; {T0.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
    put(
        user,
        "INBOX",
        mail(
            "m1@client.test",
            "Carl <carl@client.test>",
            "ann@acme.test",
            "=?utf-8?q?Pr=C3=BCfung?= of invoice",
            T0,
            "Cc: bob@acme.test\r\n" + recv,
        ),
    )
    reply = mail("m2@acme.test", "ann@acme.test", "carl@client.test", "Re: Prüfung",
                 T0 + timedelta(hours=1),
                 "Cc: bob@acme.test\r\nIn-Reply-To: <m1@client.test>\r\n"
                 "References: <m1@client.test>\r\n")  # fmt: skip
    put(user, "Sent", reply)
    put(user, "Archive", reply)  # the same message in two folders: one set of events
    put(user, "INBOX", mail("m3@client.test", "carl@client.test", "ann@acme.test", "Re: x",
                            T0 + timedelta(hours=2),
                            "References: <m1@client.test> <m2@acme.test>\r\n"))  # fmt: skip
    put(user, "INBOX", mail("m4@lists.test", "dev@client.test", "team@acme.test", "[dev] news",
                            T0, "List-Id: Dev <dev.lists.test>\r\n"))  # fmt: skip
    put(user, "INBOX", mail("m5@client.test", "carl@client.test", "ann@acme.test", "Away",
                            T0, "Auto-Submitted: auto-replied\r\n"))  # fmt: skip
    put(user, "INBOX", mail(None, "dora@other.test", "ann@acme.test", "Question", T0))
    put(user, "Sent", mail("m7@acme.test", "ann@acme.test", "dora@other.test", "RE: Question",
                           T0 + timedelta(minutes=30)))  # fmt: skip
    put(user, "INBOX", mail("m8@mx.acme.test", "MAILER-DAEMON@mx.acme.test", "ann@acme.test",
                            "Undelivered", T0, "Return-Path: <>\r\n"))  # fmt: skip
    old = datetime.now(UTC) - timedelta(days=60)  # before the first sync's cut-off (30 days)
    dovecot.append(user, "INBOX", mail("old@client.test", "carl@client.test", user, "old", old),
                   when=old)  # fmt: skip
    # over IMAPS, trusting the test's own CA
    s = settings(kafka_broker, topic, tmp_path / "state", dovecot, user,
                 imap_port=dovecot.tls_port, imap_security="tls", imap_ca_file=dovecot.cert,
                 mailboxes=["INBOX", "Sent", "Archive"])  # fmt: skip
    assert one_pass(s) == 10
    got = events(kafka_broker, topic, 10)
    assert len(got) == 10 and len({e["event_id"] for e in got}) == 10
    by_object: dict[str, list[Any]] = {}
    for e in got:
        by_object.setdefault(e["object_id"], []).append(e)
    m1, m2, m3 = (by_object[message_ref(m)] for m in ("m1@client.test", "m2@acme.test",
                                                       "m3@client.test"))  # fmt: skip
    assert {e["target_id"] for e in m1} == {"ann@acme.test", "bob@acme.test"}
    assert {(e["actor_type"], e["verb"]) for e in m1} == {("contact", "emailed")}
    assert {e["target_type"] for e in m1} == {"user"}
    assert {(e["actor_type"], e["verb"], e["target_id"]) for e in m2} == {
        ("user", "replied", "carl@client.test"), ("user", "replied", "bob@acme.test"),
    }  # fmt: skip
    assert m3[0]["verb"] == "replied" and m3[0]["in_reply_to"] == message_ref("m2@acme.test")
    thread = {e["context_id"] for e in m1 + m2 + m3}
    assert thread == {message_ref("m1@client.test")}
    assert {e["tags"][0] for e in m2} in ({"sent"}, {"archive"})
    verbs = Counter(e["verb"] for e in got)
    assert verbs["posted_to_list"] == verbs["auto_replied"] == verbs["bounced"] == 1
    # the message without a Message-ID and the reply that only says "RE:" share a thread
    dora = [e for e in got if "dora@other.test" in (e["actor_id"], e["target_id"])]
    assert len(dora) == 2 and len({e["context_id"] for e in dora}) == 1
    assert all(e["channel"] == "email" and "subject" not in e["properties"] for e in got)
    first = next(e for e in m1 if e["target_id"] == "ann@acme.test")
    assert first["occurred_at"] == int(T0.timestamp() * 1000)
    # headers only, peeked: nothing was marked read
    with dovecot.client(user) as c:
        c.select_folder("INBOX", readonly=True)
        flags = c.get_flags(c.search("ALL"))
        assert all(b"\\Seen" not in f for f in flags.values())

    # a re-sync from scratch (the checkpoints gone, the index kept) publishes nothing
    (tmp_path / "state" / "checkpoints.json").unlink()
    assert one_pass(s) == 0
    m9 = mail("m9@client.test", "carl@client.test", "ann@acme.test", "Re: again",
              T0 + timedelta(hours=3), "In-Reply-To: <m3@client.test>\r\n")  # fmt: skip
    put(user, "INBOX", m9)
    assert one_pass(s) == 1  # only the new one
    got = events(kafka_broker, topic, 11)
    assert len(got) == 11
    new = next(e for e in got if e["object_id"] == message_ref("m9@client.test"))
    assert new["context_id"] == message_ref("m1@client.test")
    assert message_ref("old@client.test") not in {e["object_id"] for e in got}
    cps = Checkpoints(tmp_path / "state" / "checkpoints.json")
    inbox, archive = cps.get(s.account(), "INBOX"), cps.get(s.account(), "Archive")
    assert inbox is not None and inbox.last_uid == 8 and inbox.since is not None
    assert archive is not None

    # the server renumbers a mailbox (a new UIDVALIDITY): read again, nothing published twice
    with dovecot.client(user) as c:
        c.delete_folder("Archive")
    put(user, "Archive", reply)
    assert one_pass(s) == 0
    renumbered = Checkpoints(tmp_path / "state" / "checkpoints.json").get(s.account(), "Archive")
    assert renumbered is not None and renumbered.uidvalidity != archive.uidvalidity
    assert topic_size(kafka_broker, topic) == 11


def test_mail_arriving_while_the_connector_runs_is_an_event_soon(
    kafka_broker: LocalKafka, topic: str, dovecot: Dovecot, tmp_path: Path
) -> None:
    user = "live@acme.test"
    dovecot.append(user, "INBOX", mail("old@client.test", "carl@client.test", user, "old", T0))
    log = (tmp_path / "connector.log").open("ab")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rhythm.stack.cli", "connect", "imap"],
        env=env(kafka_broker, topic, tmp_path / "state", dovecot, user)
        | {"RHYTHM_MAIL_METRICS_PORT": str(port), "RHYTHM_MAIL_IDENTIFY": "true"},
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline() or b"{}")  # after its first pass
        assert ready.get("ready"), (tmp_path / "connector.log").read_text()
        assert len(events(kafka_broker, topic, 1)) == 1
        dovecot.append(user, "INBOX", mail("new@client.test", "carl@client.test", user, "new",
                                           datetime.now(UTC)))  # fmt: skip
        start = time.monotonic()
        deadline = start + 60  # IDLE wakes it; a bound for a failure, not a timing check
        while topic_size(kafka_broker, topic) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        took = time.monotonic() - start
        got = events(kafka_broker, topic, 2, timeout=5)
        assert {e["object_id"] for e in got} == {message_ref("old@client.test"),
                                                 message_ref("new@client.test")}  # fmt: skip
        print(f"new mail became an event in {took:.1f} s")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert json.loads(r.read())["live"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert "rhythm_mail_events_published_total 2.0" in metrics
        assert 'rhythm_mail_messages_total{verb="emailed"} 2.0' in metrics
        assert "rhythm_client_events_delivered_total" in metrics  # the client's, beside it
        assert PASSWORD not in metrics and "client.test" not in metrics and user not in metrics
        # our person, in the people directory, so the notifier can reach them
        people = read_topic(kafka_broker.bootstrap, PEOPLE_TOPIC, 0, timeout=5)
        ours = [json.loads(payload(m)) for m in people if m.key() == f"acme:user:{user}".encode()]
        traits = {k: v for k, v in ours[-1]["traits"].items() if v is not None} if ours else {}
        assert traits == {"email": user, "internal": True}
        assert not [m for m in people if b"carl@client.test" in (m.key() or b"")]  # not theirs
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    log.close()
    text = (tmp_path / "connector.log").read_text()
    assert PASSWORD not in text and "carl@client.test" not in text


def test_a_connector_killed_mid_sync_resumes_without_loss_or_doubles(
    kafka_broker: LocalKafka, topic: str, dovecot: Dovecot, tmp_path: Path
) -> None:
    user, total = "kill@acme.test", 1200
    with dovecot.client(user) as c:  # Dovecot makes the Maildir at the first login
        c.select_folder("INBOX")
    maildir = dovecot.home / "mail" / user / "Maildir" / "new"
    owner = maildir.stat()
    for i in range(total):  # delivered as files, as a local delivery agent would
        path = maildir / f"{1_700_000_000 + i}.M{i}P1.test"
        path.write_bytes(mail(f"k{i}@client.test", f"c{i % 40}@client.test", user, f"n{i}",
                              T0 + timedelta(minutes=i)))  # fmt: skip
        os.chown(path, owner.st_uid, owner.st_gid)
    e = dict(env(kafka_broker, topic, tmp_path / "state", dovecot, user), RHYTHM_MAIL_BATCH="10")
    log = (tmp_path / "connector.log").open("ab")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "rhythm.stack.cli", "connect", "imap"],
            env=e, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
        )  # fmt: skip

    proc = start()
    deadline = time.monotonic() + 120
    while topic_size(kafka_broker, topic) < total // 4 and time.monotonic() < deadline:
        time.sleep(0.02)  # then SIGKILL, wherever in a batch it is
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    at_kill = topic_size(kafka_broker, topic)
    assert 0 < at_kill < total, f"not killed mid-sync ({at_kill} of {total})"
    print(f"killed with {at_kill} of {total} events on the topic")
    proc = start()
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline() or b"{}")
        assert ready.get("ready"), (tmp_path / "connector.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    got = events(kafka_broker, topic, total)
    ids = Counter(e["event_id"] for e in got)
    assert len(got) == total and len(ids) == total, f"{len(got)} raw, {len(ids)} distinct"
    assert {e["object_id"] for e in got} == {message_ref(f"k{i}@client.test") for i in range(total)}


def test_a_batch_acknowledged_but_not_noted_is_not_sent_again(
    kafka_broker: LocalKafka, topic: str, tmp_path: Path
) -> None:
    """The narrowest crash window: Kafka has the batch, the connector died before noting it.
    The next process reads the topic back from the offsets noted before the batch."""
    client = ClientSettings(kafka=KafkaSettings(bootstrap_servers=kafka_broker.bootstrap),
                            topic=topic)  # fmt: skip
    batch = [
        {"event_id": f"00000000-0000-5000-8000-{i:012d}", "tenant": "acme",
         "occurred_at": T0, "actor": {"type": "contact", "id": f"c{i}"}, "verb": "emailed",
         "channel": "email"}
        for i in range(50)
    ]  # fmt: skip
    store = Store(tmp_path / "index.db")
    publisher = Publisher(store, client, tmp_path / "lock")

    def crash(_ids: object) -> None:
        raise KeyboardInterrupt("killed")

    store.settle = crash  # type: ignore[method-assign,assignment]
    with pytest.raises(KeyboardInterrupt):
        publisher.publish(batch)
    publisher.close()
    store.close()
    assert topic_size(kafka_broker, topic) == 50

    store = Store(tmp_path / "index.db")
    publisher = Publisher(store, client, tmp_path / "lock")
    try:
        assert publisher.publish([*batch, dict(batch[0], event_id=_id(99))]) == 1
    finally:
        publisher.close()
    assert store.published_count() == 51 and store.pending() == (set(), {})
    assert topic_size(kafka_broker, topic) == 51


def _id(i: int) -> str:
    return f"00000000-0000-5000-8000-{i:012d}"


# -- a company's mailboxes, through the real processors -----------------------------------------


def test_a_companys_mailbox_gives_exactly_the_planted_unanswered_heads_ups(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    """tests/mailbox generates six weeks of a small company's mail (customer threads answered
    or ended by either side, planted unanswered ones, outreach, their auto-replies and
    bounces, a mailing list, a newsletter, internal mail) as mbox files and a Maildir;
    `rhythm import mbox` publishes it; `rhythm processors` learns the reply norms from it and
    must raise exactly the planted `unanswered` heads-ups, each naming our recipient."""
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    company = generate(seed=1, end=end)
    mailboxes = write(company, tmp_path / "mail")
    pipeline = Pipeline(
        kafka_broker.bootstrap,
        f"mail-{uuid.uuid4().hex[:8]}",
        tmp_path,
        extra_env={
            "RHYTHM_PROCESSOR_TENANTS": json.dumps({"northwind": {"internal_domains": [DOMAIN]}}),
            "RHYTHM_PROCESSOR_REPLY_HORIZON_S": str(14 * 86400),  # the default
        },
    )
    pipeline.create_topics()
    importer = dict(
        pipeline.env(),
        RHYTHM_CLIENT_TOPIC=pipeline.topics["events"],
        RHYTHM_MAIL_TENANT="northwind",
        RHYTHM_MAIL_STATE_DIR=str(tmp_path / "connector"),
    )

    def import_mbox(path: Path) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "rhythm.stack.cli", "import", "mbox", str(path)],
            env=importer, capture_output=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    first = import_mbox(mailboxes)
    # every copy read (Sent, INBOX of each recipient, the Maildir), each message's events once
    assert first["messages"] == sum(len(m) for b in company.boxes.values() for m in b.values())
    assert first["mailboxes"] == sum(len(boxes) for boxes in company.boxes.values())
    assert first["skipped"] == 0
    assert topic_size(kafka_broker, pipeline.topics["events"]) == first["events"]
    again = import_mbox(mailboxes / "ann")  # overlapping: a person's mail, imported again
    assert again["messages"] > 0 and again["events"] == 0
    assert topic_size(kafka_broker, pipeline.topics["events"]) == first["events"]

    want = {(message_ref(p.message_id), p.sender): p for p in company.planted}
    assert len(want) >= 10
    proc = pipeline.start()
    got: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            alerts = [a for a in pipeline_alerts(pipeline) if a["kind"] == "unanswered"]
            got = {(a["context_id"], a["entity_id"]): a for a in alerts}
            if set(got) >= set(want):
                break
        alerts = [a for a in pipeline_alerts(pipeline) if a["kind"] == "unanswered"]
    finally:
        _stop(proc)
    assert set(got) == set(want) and len(alerts) == len(want), (
        f"missing {len(set(want) - set(got))}, extra {sorted(set(got) - set(want))[:3]}\n"
        + pipeline.diagnosis()
    )
    for key, alert in got.items():
        planted = want[key]
        assert alert["entity_type"] == "contact"
        assert alert["owners"][0] == f"user:{planted.owners[0]}"  # whom it was sent to
        assert {f"user:{o}" for o in planted.owners} <= set(alert["owners"])
        # its Date (or, where the sender's clock was a year off, our server's Received stamp)
        sent_ms = int(planted.sent_at.timestamp() * 1000)
        assert sent_ms <= alert["last_event_at"] <= sent_ms + 60_000


def pipeline_alerts(pipeline: Pipeline) -> list[dict[str, Any]]:
    messages = read_topic(pipeline.bootstrap, pipeline.topics["alerts"], 0, timeout=5)
    return [json.loads(payload(m)) for m in messages]


def test_kafka_away_is_a_retryable_error_and_nothing_is_marked(tmp_path: Path) -> None:
    client = ClientSettings(
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"),
        delivery_timeout_ms=2000,
    )
    store = Store(tmp_path / "index.db")
    publisher = Publisher(store, client, tmp_path / "lock", flush_s=5, kafka_timeout_s=2)
    event = {"event_id": _id(1), "tenant": "acme", "occurred_at": T0,
             "actor": {"type": "contact", "id": "c"}, "verb": "emailed"}  # fmt: skip
    try:
        with pytest.raises(NotDeliveredError):
            publisher.publish([event])
    finally:
        publisher.close()
    assert store.published_count() == 0 and store.unpublished([_id(1)]) == {_id(1)}

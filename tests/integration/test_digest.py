"""The daily digest for real: its HTML page in headless Chromium, and the notifier sending it
through a real SMTP server (aiosmtpd) from what a real sink stored, once per person and day,
at their day's start, not again after a restart; `rhythm digest` previews the same."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from rhythm.notifier.digest import Digest, DigestInputs, Move, OpenAlert, build_digest, digest_id
from rhythm.notifier.digest_render import digest_html
from rhythm.notifier.routing import idempotency_key
from rhythm.schemas.outputs import Alert
from rhythm.stack.kafka import LocalKafka
from rhythm.stack.ports import free_ports

from .test_notifier import identify, mailbox, notify_topics, publish, running_notifier
from .test_report_render import CHROMIUM, chromium, colored_pixels
from .test_sink_support import RHYTHM, make_topics, poll, publisher, running_sink

pytestmark = pytest.mark.integration

NOW = int(datetime(2026, 12, 8, 9, 5, tzinfo=UTC).timestamp() * 1000)
H = 3_600_000
EVIL = "<script>document.body.innerHTML=''</script>"


def sample_digest(items: bool = True) -> Digest:
    def alert(i: int, kind: str, etype: str, eid: str, hours: int) -> OpenAlert:
        return OpenAlert(
            f"a-{i}", kind, etype, eid, f"t-{i}" if kind == "unanswered" else None,
            NOW - hours * H + H, NOW - hours * H, 7200.0 if kind == "unanswered" else 50_000.0,
            0.85, {"channel": "email"},
        )  # fmt: skip

    def move(etype: str, eid: str, z: float) -> Move:
        return Move(etype, eid, NOW - 33 * H, 86_400, 120, 40.0, 900.0, 800.0, z, 0.3)

    inputs = DigestInputs(
        owed=[alert(1, "unanswered", "contact", f"c-{EVIL}", 30), alert(2, "unanswered",
              "contact", "c-2", 6)],
        quiet=[alert(3, "silence", "account", "acct-7", 20), alert(4, "silence", "account",
               "acct-9", 50)],
        moves=[move("account", "acct-1", 6.2), move("tag", "analytics", -4.0)],
        engagement={"account:acct-7": 30, "account:acct-9": 5, "account:acct-1": 12,
                    "tag:analytics": 20},
    ) if items else DigestInputs()  # fmt: skip
    return build_digest(
        tenant="acme", person="user:ann", name=f"Ann {EVIL}", zone=ZoneInfo("Europe/Berlin"),
        day="2026-12-08", now_ms=NOW, inputs=inputs,
    )  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: apt-get install -y chromium")
def test_the_digest_page_renders_its_items_and_runs_nothing_it_was_given(tmp_path: Path) -> None:
    digest = sample_digest()
    assert len(digest.items) == 6
    page = tmp_path / "digest.html"
    page.write_text(digest_html(digest), encoding="utf-8")
    empty = tmp_path / "empty.html"
    empty.write_text(digest_html(sample_digest(items=False)), encoding="utf-8")

    dom = chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('class="item ') == 6
    assert "<script" not in dom.stdout.lower()  # the name's script is text, not an element
    assert "Good morning Ann &lt;script&gt;" in dom.stdout
    assert dom.stdout.count("<h2>") == 4  # owed, quiet, movers, communities
    assert "acct-7 has gone quiet" in dom.stdout

    shots = {}
    for name, html in (("digest", page), ("empty", empty)):
        png = tmp_path / f"{name}.png"
        done = chromium(html, tmp_path, f"--screenshot={png}")
        assert done.returncode == 0 and png.exists(), done.stderr[-2000:]
        shots[name] = colored_pixels(png)
    assert shots["empty"] < 200, shots  # text and greys only
    assert shots["digest"] > 1_500, shots  # each item's coloured edge (6 px), six of them


# -- the notifier sends it -------------------------------------------------------------------


def _zone_at_ten(now: datetime) -> str:
    """A fixed-offset zone where it is now 10:xx (so a working day from 10 to 12 has just
    started and lasts the test)."""
    offset = (10 - now.hour) % 24
    if offset > 14:  # Etc zones go from UTC-12 to UTC+14
        offset -= 24
    name = "Etc/UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"
    return name


def test_one_digest_per_person_per_day_at_their_day_start_not_resent_after_a_restart(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    topics = notify_topics(kafka_broker)
    sink_topics = make_topics(kafka_broker, "digest")
    now = datetime.now(UTC)
    zone = _zone_at_ten(now)
    every_day = list(range(7))
    people = {
        # Ann's working day started this hour; Bob's starts later today; Cy's has ended.
        "user:ann": {"name": "Ann", "email": "ann@example.com", "timezone": zone,
                     "working_hours": [10, 12], "working_days": every_day},
        "user:bob": {"name": "Bob", "email": "bob@example.com", "timezone": zone,
                     "working_hours": [14, 18], "working_days": every_day},
        "user:cy": {"name": "Cy", "email": "cy@example.com", "timezone": zone,
                    "working_hours": [6, 9], "working_days": every_day},
    }  # fmt: skip
    identify(bootstrap, topics.people, people)
    # What the store will know: Ann and Bob worked with acct-7 and c-9; acct-7 went silent, and
    # c-9's message waits for Ann's reply.
    client = publisher(bootstrap, sink_topics.events)
    for n in range(12):
        actor = ("user", "ann" if n < 9 else "bob")
        target = ("account", "acct-7") if n % 3 else ("contact", "c-9")
        client.track("acme", actor, "emailed", target=target, channel="email",
                     occurred_at=now - timedelta(days=3, minutes=n))  # fmt: skip
    assert client.flush(30) == 0
    client.close()
    fired = int(now.timestamp() * 1000) - H

    def alert(kind: str, etype: str, eid: str, owners: list[str]) -> Alert:
        return Alert(
            alert_id=f"{kind}-{uuid.uuid4().hex[:8]}", kind=kind, tenant="acme", role="actor",
            entity_type=etype, entity_id=eid,
            context_id="thread-9" if kind == "unanswered" else None, fired_at=fired,
            last_event_at=fired - 20 * H, expected_within_s=7200.0, score=0.9, owners=owners,
            details={"channel": "email"},
        )  # fmt: skip

    silence = alert("silence", "account", "acct-7", [])
    waiting = alert("unanswered", "contact", "c-9", ["user:ann"])
    # The history lane's alert (rhythm backfill): what happened then, never in a digest.
    past = alert("unanswered", "contact", "c-10", ["user:ann"]).model_copy(
        update={"historical": True}
    )
    publish(bootstrap, sink_topics.alerts, [silence, waiting, past])
    (smtp_port,) = free_ports(1)
    (tmp_path / "sink").mkdir()
    with (
        running_sink(kafka_broker, sink_topics, tmp_path / "sink", people_topic=topics.people,
                     notifications_topic=topics.notifications) as sink,
        mailbox(smtp_port) as box,
    ):  # fmt: skip
        assert sink.sync(60), sink.log()[-2000:]
        poll(lambda: sink.scalar("SELECT count() FROM rhythm.people FINAL") == 3, 60,
             "the directory in the store")  # fmt: skip
        settings = {
            "digest": "true", "digest_check_s": 0.5, "smtp_host": "127.0.0.1",
            "smtp_port": smtp_port, "smtp_security": "none",
            "clickhouse_url": f"http://127.0.0.1:{sink.http_port}",
        }  # fmt: skip
        with running_notifier(bootstrap, topics, tmp_path, **settings) as notifier:
            poll(lambda: len(box.messages) >= 1, 60, "Ann's digest")
            # Every check since has looked at everyone again (Bob, Cy, Ann's day done).
            checks = notifier.metric("rhythm_notifier_digest_checks_total")
            poll(lambda: notifier.metric("rhythm_notifier_digest_checks_total") >= checks + 3,
                 30, "three more digest checks")  # fmt: skip
            assert notifier.metric('rhythm_notifier_digests_total{outcome="planned"}') == 1
            assert notifier.metric('rhythm_notifier_digests_total{outcome="sent"}') == 1
            states = notifier.states()
            notifier.kill()  # and the restart below must not send it again
        local_now = now.astimezone(ZoneInfo(zone))
        day = local_now.date().isoformat()
        key = idempotency_key(digest_id("acme", "user:ann", day), "user:ann", "email")
        assert states == {key: "sent"}
        (mail,) = box.messages
        assert mail["To"] == "Ann <ann@example.com>"
        assert mail["X-Rhythm-Idempotency-Key"] == key
        assert str(mail["Subject"]).startswith(f"Your Rhythm digest for {day}: 1 you owe")
        plain, page = _parts(mail)
        assert "contact c-9 has waited" in plain and "account acct-7 has gone quiet" in plain
        assert "c-10" not in plain
        assert "you had 6 events with it in 30 days" in plain  # Ann's, not Bob's
        assert page.count('class="item ') == 2
        # Sent in Ann's working day, after it started (10:00 at her offset).
        started = local_now.replace(hour=10, minute=0, second=0, microsecond=0)
        sent = _sent_at(tmp_path, key)
        assert started.timestamp() * 1000 <= sent <= time.time() * 1000

        with running_notifier(bootstrap, topics, tmp_path, **settings) as again:
            poll(lambda: again.metric("rhythm_notifier_digest_checks_total") >= 3, 30,
                 "three digest checks after the restart")  # fmt: skip
            assert again.metric("rhythm_notifier_digests_total") == 0
        assert len(box.messages) == 1

        # The preview from the same store says the same, as text and as a page.
        html = tmp_path / "preview.html"
        dsn = f"http://127.0.0.1:{sink.http_port}"
        done = _rhythm("digest", "--for", "user:ann", "--dsn", dsn, "--html", str(html))
        assert done.returncode == 0, done.stderr
        assert "contact c-9 has waited" in done.stdout and "acct-7 has gone quiet" in done.stdout
        assert html.read_text().count('class="item ') == 2
        missing = _rhythm("digest", "--for", "user:nobody", "--dsn", dsn)
        assert missing.returncode == 1 and "no person user:nobody" in missing.stderr
        bad = _rhythm("digest", "--for", "ann", "--dsn", dsn)
        assert bad.returncode == 1 and "type:id" in bad.stderr


def _parts(mail: Message) -> tuple[str, str]:
    plain = html = ""
    for part in mail.walk():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            text = payload.decode(part.get_content_charset() or "utf-8")
            if part.get_content_type() == "text/plain":
                plain = text
            elif part.get_content_type() == "text/html":
                html = text
    return plain, html


def _sent_at(workdir: Path, key: str) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(workdir / "notifier" / "state.db")) as db:
        (sent,) = db.execute("SELECT sent_at FROM deliveries WHERE key = ?", (key,)).fetchone()
    return int(sent)


def _rhythm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RHYTHM, *args], capture_output=True, text=True, timeout=120)

"""The mail connector's pure parts: headers, threads, the mapping, ids, pseudonyms."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rhythm.connectors.mail.checkpoints import Checkpoint, Checkpoints
from rhythm.connectors.mail.headers import normalise_subject, parse_headers, subject_prefix
from rhythm.connectors.mail.mapping import Mapper, Source, classify, event_id, message_ref, tag
from rhythm.connectors.mail.mbox import read_maildir, read_mbox, sources
from rhythm.connectors.mail.settings import MailSettings, Sides, tenant_sides
from rhythm.connectors.mail.store import Store
from rhythm.connectors.mail.threads import Threader, link
from rhythm.schemas.event import validate_record

SIDES = Sides(("acme.test",), "employee", "contact")
T0 = datetime(2026, 9, 7, 9, 0, tzinfo=UTC)


def mail(
    mid: str | None = "m1@x.test",
    frm: str = "Carl Client <carl@client.test>",
    to: str = "ann@acme.test",
    date: datetime | None = T0,
    extra: str = "",
    subject: str = "Invoice",
) -> bytes:
    lines = [f"From: {frm}", f"To: {to}", f"Subject: {subject}"]
    if mid is not None:
        lines.append(f"Message-ID: <{mid}>")
    if date is not None:
        lines.append(f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}")
    text = "\r\n".join(lines) + "\r\n" + extra + "\r\nbody text that is never read\r\n"
    return text.encode()


def mapper(**settings: object) -> Mapper:
    s = MailSettings(tenant="acme", **settings)  # type: ignore[arg-type]
    return Mapper(s, SIDES, s.key())


# -- headers ------------------------------------------------------------------------------


def test_headers_are_read_and_the_body_never_is() -> None:
    h = parse_headers(
        mail(
            extra="Cc: Bob <BOB@acme.test>, carl@client.test\r\nIn-Reply-To: junk <p1@x.test>\r\n"
            "References: <r0@x.test>\r\n\t<p1@x.test>\r\n"
        )
    )
    assert h.message_id == "m1@x.test" and not h.derived_id
    assert h.sender == "carl@client.test"
    assert h.to == ["ann@acme.test"] and h.cc == ["bob@acme.test", "carl@client.test"]
    assert h.recipients == [("ann@acme.test", "to"), ("bob@acme.test", "cc")]  # not the sender
    assert h.parents == ["r0@x.test", "p1@x.test"]
    assert h.date == T0


def test_encoded_words_and_raw_8bit_bytes_are_decoded_or_replaced() -> None:
    raw = (
        b"From: =?utf-8?q?J=C3=B6rg?= <jorg@client.test>\r\nTo: ann@acme.test\r\n"
        b"Subject: =?iso-8859-1?q?R=E9union?= \xff\xfe raw\r\nMessage-ID: <e@x>\r\n\r\n"
    )
    h = parse_headers(raw)
    assert h.sender == "jorg@client.test"
    assert h.subject.startswith("Réunion")
    h.subject.encode("utf-8")  # valid text whatever came in


def test_malformed_headers_never_raise() -> None:
    raw = (
        b"From: not an address\r\nTo: ,,,@, <>\r\nDate: yesterday-ish\r\n"
        b"Message-ID: no brackets no at\r\nIn-Reply-To: <<<\r\nReferences: <a> <b\r\n"
        b'Content-Type: multipart/report; report-type="delivery-status\r\n\r\n'
    )
    h = parse_headers(raw)
    assert h.sender is None and h.to == [] and h.date is None
    assert h.derived_id and h.message_id.startswith("derived-") and h.defects >= 2
    assert h.references == ["a"]


def test_a_missing_message_id_is_derived_from_headers_every_copy_keeps() -> None:
    inbox = parse_headers(
        mail(mid=None, extra="Received: from a by b; Mon, 7 Sep 2026 09:01:00 +0000\r\n")
    )
    sent = parse_headers(mail(mid=None))
    other = parse_headers(mail(mid=None, to="bob@acme.test"))
    assert inbox.derived_id and inbox.message_id == sent.message_id != other.message_id


def test_subjects_lose_reply_prefixes_and_list_tags() -> None:
    assert normalise_subject("Re: AW: [dev] Fwd:  The   Plan") == "the plan"
    assert normalise_subject("RE[2]: the plan") == "the plan"
    assert subject_prefix("Re: x") == "reply" and subject_prefix("WG: x") == "forward"
    assert subject_prefix("Reply needed") == ""


# -- classification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "frm", "to", "verb"),
    [
        ("", "carl@client.test", "ann@acme.test", "emailed"),
        ("In-Reply-To: <p@x>\r\n", "ann@acme.test", "carl@client.test", "replied"),
        ("Auto-Submitted: auto-replied\r\n", "ann@acme.test", "carl@client.test", "auto_replied"),
        ("X-Autoreply: yes\r\n", "carl@client.test", "ann@acme.test", "auto_replied"),
        ("Auto-Submitted: auto-generated\r\n", "x@client.test", "ann@acme.test", "auto_sent"),
        ("Precedence: bulk\r\n", "news@client.test", "ann@acme.test", "auto_sent"),
        ("Auto-Submitted: no\r\n", "carl@client.test", "ann@acme.test", "emailed"),
        ("Return-Path: <>\r\n", "carl@client.test", "ann@acme.test", "bounced"),
        ("", "MAILER-DAEMON@client.test", "ann@acme.test", "bounced"),
        (
            "List-Id: Dev <dev.lists.test>\r\n",
            "carl@client.test",
            "ann@acme.test",
            "posted_to_list",
        ),
        ("", "ann@acme.test", "bob@acme.test", "noted"),  # among our people only
        ("", "ann@acme.test", "carl@client.test, bob@acme.test", "emailed"),
    ],
)
def test_verbs(extra: str, frm: str, to: str, verb: str) -> None:
    h = parse_headers(mail(frm=frm, to=to, extra=extra))
    recipients = [SIDES.internal(a) for a, _ in h.recipients]
    assert classify(h, SIDES.internal(h.sender or ""), all(recipients)) == verb


def test_a_forward_to_a_customer_is_forwarded_one_to_a_colleague_is_noted() -> None:
    out = parse_headers(mail(frm="ann@acme.test", to="carl@client.test", subject="Fwd: x"))
    inside = parse_headers(mail(frm="ann@acme.test", to="bob@acme.test", subject="Fwd: x"))
    assert classify(out, True, False) == "forwarded"
    assert classify(inside, True, True) == "noted"


# -- mapping ----------------------------------------------------------------------------------


def test_one_event_per_recipient_valid_and_with_stable_ids() -> None:
    h = parse_headers(mail(to="ann@acme.test, bob@acme.test", extra="Cc: dora@other.test\r\n"))
    events = mapper().events(h, "root@x.test", Source("INBOX"))
    assert len(events) == 3
    for e in events:
        validate_record(e)  # the contract
        assert e["actor"] == {"type": "contact", "id": "carl@client.test"}
        assert e["channel"] == "email" and e["verb"] == "emailed"
        assert e["context_id"] == message_ref("root@x.test") and e["tags"] == ["inbox"]
        assert e["object"] == {"type": "email", "id": message_ref("m1@x.test")}
        assert e["properties"]["direction"] == "inbound" and e["properties"]["recipients"] == 3
        assert "subject" not in e["properties"]  # privacy by default
    assert [e["target"] for e in events] == [
        {"type": "employee", "id": "ann@acme.test"},
        {"type": "employee", "id": "bob@acme.test"},
        {"type": "contact", "id": "dora@other.test"},
    ]
    assert [e["properties"]["recipient_role"] for e in events] == ["to", "to", "cc"]
    assert len({e["event_id"] for e in events}) == 3
    again = mapper().events(h, "root@x.test", Source("Archive/2026"))
    assert [e["event_id"] for e in again] == [e["event_id"] for e in events]
    assert events[0]["event_id"] == event_id("acme", "m1@x.test", "ann@acme.test")
    assert uuid.UUID(events[0]["event_id"]).version == 5


def test_weights_subjects_and_recipient_caps_are_settings() -> None:
    h = parse_headers(mail(to="a@acme.test, b@acme.test, c@acme.test, d@acme.test"))
    assert {e["weight"] for e in mapper(weight="recipients").events(h, "r", Source("x"))} == {4.0}
    split = mapper(weight="split", max_recipients=2).events(h, "r", Source("x"))
    assert len(split) == 2 and {e["weight"] for e in split} == {0.5}
    assert split[0]["properties"]["recipients_cut"] == 2
    subject = mapper(subjects=True).events(h, "r", Source("x"))
    assert subject[0]["properties"]["subject"] == "Invoice"


def test_addresses_are_pseudonymised_with_a_keyed_hash() -> None:
    h = parse_headers(mail())
    (one,) = mapper(pseudonymise=True, hmac_key="k1").events(h, "r", Source("x"))
    (two,) = mapper(pseudonymise=True, hmac_key="k2").events(h, "r", Source("x"))
    assert one["actor"]["id"].startswith("p-") and "carl" not in json.dumps(one, default=str)
    assert one["actor"]["id"] != two["actor"]["id"]
    assert one["actor"]["type"] == "contact" and one["target"]["type"] == "employee"
    assert one["event_id"] == two["event_id"]  # ids do not depend on the key
    with pytest.raises(ValueError, match="HMAC_KEY"):
        MailSettings(pseudonymise=True).key()


def test_a_mail_without_recipients_is_one_event_without_target() -> None:
    h = parse_headers(mail(to="undisclosed-recipients:;"))
    (e,) = mapper().events(h, "r", Source("Sent"))
    assert "target" not in e and e["properties"]["recipients"] == 0
    validate_record(e)


def test_the_date_is_checked_against_the_delivery_time() -> None:
    received = "Received: from a by mx.acme.test; Mon, 7 Sep 2026 09:02:00 +0000\r\n"
    h = parse_headers(mail(extra=received))
    (e,) = mapper().events(h, "r", Source("INBOX"))
    assert e["occurred_at"] == T0 and e["properties"]["date_source"] == "date"
    # a sender's clock a year behind, or an hour ahead: the delivery time
    for wrong in (T0 - timedelta(days=365), T0 + timedelta(hours=1)):
        h = parse_headers(mail(date=wrong, extra=received))
        (e,) = mapper().events(h, "r", Source("INBOX"))
        assert e["occurred_at"] == T0 + timedelta(minutes=2)
        assert e["properties"]["date_source"] == "received" and "date_skew_s" in e["properties"]
    # no Received (the Sent folder): the server's INTERNALDATE
    h = parse_headers(mail(date=T0 - timedelta(days=30)))
    (e,) = mapper().events(h, "r", Source("Sent", delivered=T0))
    assert e["occurred_at"] == T0 and e["properties"]["date_source"] == "delivered"
    h = parse_headers(mail(date=None))
    (e,) = mapper().events(h, "r", Source("Sent", delivered=T0))
    assert e["occurred_at"] == T0
    assert mapper().events(parse_headers(mail(date=None)), "r", Source("x")) == []


def test_tags_follow_the_tag_rule() -> None:
    assert tag("INBOX") == "inbox" and tag("[Gmail]/Sent Mail") == "gmail-sent-mail"
    assert tag(".Archive.2026") == "archive-2026" and tag("___") == ""


# -- threads ----------------------------------------------------------------------------------


def test_jwz_links_ancestors_and_refuses_loops() -> None:
    paths = link(
        [
            ("c", ["a", "b"]),
            ("d", ["c"]),  # only In-Reply-To: still under a
            ("a", ["d"]),  # a loop: a would be its own ancestor; its link is refused
            ("x", []),
        ]
    )
    assert paths["d"] == ["a", "b", "c", "d"] and paths["a"] == ["a"] and paths["x"] == ["x"]


def test_threads_keep_one_root_across_batches_and_orders(tmp_path: Path) -> None:
    store = Store(tmp_path / "index.db")
    threader = Threader(store, "acme")
    reply = parse_headers(mail(mid="m2", extra="In-Reply-To: <m1>\r\n"))  # no References
    first = parse_headers(mail(mid="m1", extra="References: <m0>\r\n"))
    # the reply arrives first (another folder), its parent later
    assert threader.roots([(reply, 2)]) == {"m2": "m1"}
    assert threader.roots([(first, 1)]) == {"m1": "m1"}
    root = parse_headers(mail(mid="m0"))
    assert threader.roots([(root, 0)]) == {"m0": "m1"}  # met as a reference: same thread
    # in one batch, JWZ finds the top-most ancestor
    other = Threader(Store(tmp_path / "other.db"), "acme")
    assert other.roots([(reply, 2), (first, 1)]) == {"m1": "m0", "m2": "m0"}


def test_subject_fallback_only_for_replies_without_threading_headers(tmp_path: Path) -> None:
    threader = Threader(Store(tmp_path / "index.db"), "acme")
    day = 86_400_000
    opener = parse_headers(mail(mid="s1", subject="Contract renewal"))
    threader.roots([(opener, 0)])
    reply = parse_headers(mail(mid="s2", subject="RE: Contract renewal", frm="ann@acme.test",
                               to="carl@client.test"))  # fmt: skip
    assert threader.roots([(reply, day)]) == {"s2": "s1"}
    stranger = parse_headers(mail(mid="s3", subject="Re: contract renewal", frm="eve@e.test",
                                  to="zed@z.test"))  # fmt: skip
    assert threader.roots([(stranger, day)]) == {"s3": "s3"}  # nobody in common
    late = parse_headers(mail(mid="s4", subject="Re: Contract renewal"))
    assert threader.roots([(late, 90 * day)]) == {"s4": "s4"}  # long after
    fresh = parse_headers(mail(mid="s5", subject="Contract renewal"))  # not a reply
    assert threader.roots([(fresh, 2 * day)]) == {"s5": "s5"}


def test_a_huge_thread_is_linked_without_recursion(tmp_path: Path) -> None:
    chain = [(f"h{i}", [f"h{j}" for j in range(max(0, i - 50), i)]) for i in range(5000)]
    paths = link(chain)
    assert paths["h4999"][0] == "h0" and len(paths["h4999"]) == 5000


# -- settings, checkpoints, mailboxes ------------------------------------------------------------


def test_sides_come_from_the_processors_tenant_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "RHYTHM_PROCESSOR_TENANTS",
        json.dumps({"acme": {"internal_domains": ["acme.test"], "internal_types": ["employee"]}}),
    )
    sides = tenant_sides(MailSettings(tenant="acme"))
    assert sides == Sides(("acme.test",), "employee", "contact")
    assert sides.internal("ann@eu.acme.test") and not sides.internal("ann@notacme.test")
    with pytest.raises(ValueError, match="no mail domains"):
        tenant_sides(MailSettings(tenant="globex"))
    with pytest.raises(ValueError, match="actor types"):
        tenant_sides(MailSettings(tenant="acme", internal_type="user"))


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RHYTHM_MAIL_IMAP_PASSWORD", "hunter2")
    s = MailSettings()
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    assert s.password() == "hunter2"
    (tmp_path / "pw").write_text("from-file\n")
    assert MailSettings(imap_password_file=tmp_path / "pw").password() == "from-file"
    assert "hunter2" not in s.account()


def test_checkpoints_survive_a_reload_and_are_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    cps = Checkpoints(path)
    cps.put("acct", "INBOX", Checkpoint(7, 42))
    cps.put("acct", "Sent", Checkpoint(9, 3))
    assert Checkpoints(path).get("acct", "INBOX") == Checkpoint(7, 42)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_mbox_and_maildir_are_read_headers_only(tmp_path: Path) -> None:
    box = tmp_path / "Sent.mbox"
    box.write_bytes(
        b"From ann@acme.test Mon Sep  7 09:00:00 2026\n"
        + mail(mid="a1").replace(b"\r\n", b"\n")
        + b"From the body: not a separator inside a header\n\n"
        + b"From carl@client.test Mon Sep  7 10:00:00 2026\n"
        + mail(mid="a2").replace(b"\r\n", b"\n")
    )
    maildir = tmp_path / "md"
    for sub in ("cur", "new", "tmp", ".Archive/cur", ".Archive/new", ".Archive/tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.host").write_bytes(mail(mid="b1"))
    (maildir / ".Archive" / "cur" / "2.host:2,S").write_bytes(mail(mid="b2"))
    found = sorted((name, kind) for name, _, kind in sources(tmp_path))
    assert found == [("Archive", "maildir"), ("INBOX", "maildir"), ("Sent", "mbox")]
    msgs = list(read_mbox(box, "Sent"))
    assert [parse_headers(m.header).message_id for m in msgs] == ["a1", "a2"]
    assert msgs[0].source.delivered == datetime(2026, 9, 7, 9, 0, tzinfo=UTC)
    assert all(b"never read" not in m.header for m in msgs)
    (m,) = list(read_maildir(maildir, "INBOX"))
    assert parse_headers(m.header).message_id == "b1" and b"never read" not in m.header


def test_rhythm_up_starts_the_connector_when_an_imap_account_is_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rhythm.stack.supervisor.control import Stack, StackSettings

    stack = Stack(StackSettings(home=tmp_path))
    monkeypatch.delenv("RHYTHM_MAIL_IMAP_HOST", raising=False)
    assert "mail" not in {p.name for p in stack._parts("127.0.0.1:9092")}
    monkeypatch.setenv("RHYTHM_MAIL_IMAP_HOST", "imap.example.test")
    (part,) = [p for p in stack._parts("127.0.0.1:9092") if p.name == "mail"]
    assert part.argv[-2:] == ["connect", "imap"]
    assert part.health_url == "http://127.0.0.1:9470/healthz" and part.ready_port == 9470
    assert part.env["RHYTHM_MAIL_STATE_DIR"] == str(tmp_path.resolve() / "mail-connector")
    assert part.env["RHYTHM_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9092"


def test_the_header_block_ends_at_its_first_blank_line_whatever_the_line_ends() -> None:
    raw = b"From: a@b.test\nTo: c@d.test\nMessage-ID: <x@y>\n\nSubject: not a header\r\n\r\n"
    h = parse_headers(raw)
    assert h.message_id == "x@y" and h.subject == ""


def test_every_part_rhythm_up_may_start_listens_on_its_own_default_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two parts on one default port: the second never starts (the mail connector and the
    history lane once both took 9469)."""
    for key in list(os.environ):
        if key.startswith("RHYTHM_"):
            monkeypatch.delenv(key)
    from rhythm.connectors.mail.settings import MailSettings
    from rhythm.notifier.settings import NotifierSettings
    from rhythm.stack.supervisor.control import StackSettings

    stack = StackSettings()
    ports = {
        "store": stack.sink_http_port,
        "processors": stack.processor_metrics_port,
        "history": stack.history_metrics_port,
        "sink": stack.sink_metrics_port,
        "notifier": stack.notifier_metrics_port,
        "feedback": NotifierSettings().feedback_port,
        "collector": stack.collector_port,
        "prometheus": stack.prometheus_port,
        "supervisor": stack.supervisor_metrics_port,
        "mail": MailSettings().metrics_port,
    }
    assert len(set(ports.values())) == len(ports), ports

"""One message to its contract events (docs/mail.md has the table, field by field).

One event per recipient (To, then Cc; the sender left out), or one without a target when
nobody is named: actor = the sender, target = the recipient, each typed internal or
external by the tenant's domains (settings.Sides). Event ids are UUIDv5 of (tenant,
Message-ID, recipient): the same message read again, from another folder or another import,
gives the same ids, which the published index (store.py) then skips.

Mail that is nobody's message to answer gets a verb the `unanswered` rule takes as no
message (its `not_replies`): bounces (`bounced`), auto-replies (`auto_replied`), other
automatic mail (`auto_sent`: Auto-Submitted, Precedence bulk/junk), mailing-list traffic
(`posted_to_list`), and mail among our own people only (`noted`: forwarding a customer's
mail to a colleague is not answering the customer).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rhythm.connectors.mail.headers import MailHeaders, subject_prefix
from rhythm.connectors.mail.settings import MailSettings, Sides
from rhythm.schemas.rules import MAX_PROPERTY_STRING_LEN, MAX_TAGS

NAMESPACE = uuid.UUID("6f1c1f2e-5b0a-4c55-9a43-0d7e1c2b9a11")  # Rhythm's mail event ids
CHANNEL = "email"
#: Verbs of mail that answers no one and that no one waits on (conversation.py skips them).
NOT_MESSAGES = frozenset({"bounced", "auto_replied", "auto_sent", "posted_to_list", "noted"})
_DAEMONS = ("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon")
_TAG_BAD = re.compile(r"[^a-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message was read: its mailbox (a tag), the server's delivery time
    (INTERNALDATE, a Maildir file's mtime, an mbox From_ line) and any labels."""

    mailbox: str
    delivered: datetime | None = None
    labels: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Mapper:
    settings: MailSettings
    sides: Sides
    key: bytes | None  # the pseudonyms' key, None: addresses as they are

    def entity_id(self, address: str) -> str:
        if self.key is None:
            return address[:256]
        return "p-" + hmac.new(self.key, address.encode(), hashlib.sha256).hexdigest()[:32]

    def events(self, h: MailHeaders, root: str, source: Source) -> list[dict[str, Any]]:
        """The message's events, or [] when it has no sender or no time at all."""
        if h.sender is None:
            return []
        when = occurred_at(h, source.delivered, self.settings)
        if when is None:
            return []
        occurred, date_source, skew_s = when
        s = self.settings
        recipients = h.recipients
        cut = recipients[: s.max_recipients]
        sender_internal = self.sides.internal(h.sender)
        internal = [self.sides.internal(a) for a, _ in recipients]
        verb = classify(h, sender_internal, bool(recipients) and all(internal))
        direction = _direction(sender_internal, internal)
        n = len(recipients)
        weight = {"one": 1.0, "recipients": float(max(n, 1)), "split": 1.0 / max(len(cut), 1)}
        properties: dict[str, str | int | float | bool] = {
            "direction": direction,
            "recipients": n,
            "date_source": date_source,
        }
        if skew_s is not None:
            properties["date_skew_s"] = skew_s
        if h.derived_id:
            properties["derived_id"] = True
        if h.list_id and verb == "posted_to_list":
            properties["list_id"] = h.list_id[:MAX_PROPERTY_STRING_LEN]
        if subject_prefix(h.subject) == "forward":
            properties["forward"] = True
        if s.subjects and h.subject:
            properties["subject"] = h.subject[:MAX_PROPERTY_STRING_LEN]
        if n > len(cut):
            properties["recipients_cut"] = n - len(cut)
        base: dict[str, Any] = {
            "tenant": s.tenant,
            "occurred_at": occurred,
            "actor": {"type": self.sides.actor_type(h.sender), "id": self.entity_id(h.sender)},
            "verb": verb,
            "object": {"type": "email", "id": message_ref(h.message_id)},
            "channel": CHANNEL,
            "context_id": message_ref(root),
            "tags": tags(source),
            "weight": weight[s.weight],
        }
        parents = h.parents
        if parents:
            base["in_reply_to"] = message_ref(parents[-1])
        out = []
        for address, role in cut or [("", "")]:
            event = dict(base)
            event["event_id"] = event_id(s.tenant, h.message_id, address)
            event["properties"] = dict(properties)
            if address:
                event["target"] = {
                    "type": self.sides.actor_type(address),
                    "id": self.entity_id(address),
                }
                event["properties"]["recipient_role"] = role
            out.append(event)
        return out


def classify(h: MailHeaders, sender_internal: bool, internal_only: bool) -> str:
    local = (h.sender or "").partition("@")[0]
    if (
        h.return_path == ""
        or (h.content_type == "multipart/report" and h.report_type == "delivery-status")
        or h.failed_recipients
        or local in _DAEMONS
    ):
        return "bounced"
    auto = h.auto_submitted not in (None, "no")
    if h.autoreply or h.auto_submitted == "auto-replied" or h.precedence == "auto_reply":
        return "auto_replied"
    if auto or h.precedence in ("bulk", "junk"):
        return "auto_sent"
    if h.list_id or h.precedence == "list":
        return "posted_to_list"
    if sender_internal and internal_only:
        return "noted"
    prefix = subject_prefix(h.subject)
    if prefix == "forward":
        return "forwarded"
    if h.parents or prefix == "reply":
        return "replied"
    return "emailed"


def occurred_at(
    h: MailHeaders, delivered: datetime | None, settings: MailSettings
) -> tuple[datetime, str, int | None] | None:
    """(when, where from, skew in s when the Date was not believed). The Date header is the
    sender's clock; the delivery time (the newest Received stamp, else the server's
    INTERNALDATE or the file's time) is ours. A Date more than `max_skew_s` before delivery
    or `max_future_s` after it is a wrong clock: delivery time is used instead."""
    reference, ref_name = None, ""
    if h.received:
        reference, ref_name = h.received[0], "received"
    elif delivered is not None:
        reference, ref_name = _utc(delivered), "delivered"
    date = h.date
    if date is not None and not (datetime(1971, 1, 1, tzinfo=UTC) <= date):
        date = None
    if date is None:
        return (reference, ref_name, None) if reference is not None else None
    if reference is None:
        now = datetime.now(UTC)
        if date > now + timedelta(seconds=settings.max_future_s):
            return now, "now", int((date - now).total_seconds())
        return date, "date", None
    skew = (date - reference).total_seconds()
    if skew > settings.max_future_s or -skew > settings.max_skew_s:
        return reference, ref_name, int(skew)
    return date, "date", None


def message_ref(message_id: str) -> str:
    """A message's (or thread root's) id in events: a hash, so no host name or local part
    of a Message-ID leaves, and any length fits the contract's 256."""
    return "mail-" + hashlib.sha256(message_id.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def event_id(tenant: str, message_id: str, recipient: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{tenant}\n{message_id}\n{recipient}"))


def tag(name: str) -> str:
    t = _TAG_BAD.sub("-", name.strip().lower().replace(".", "-"))
    t = re.sub("-{2,}", "-", t)
    t = t.lstrip("-_")[:64].rstrip("-")
    return t


def tags(source: Source) -> list[str]:
    out: list[str] = []
    for name in (source.mailbox, *source.labels):
        t = tag(name)
        if t and t not in out:
            out.append(t)
    return out[:MAX_TAGS]


def _direction(sender_internal: bool, internal: list[bool]) -> str:
    if sender_internal:
        return "internal" if internal and all(internal) else "outbound"
    return "inbound" if any(internal) else "external"


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)

"""A message's header block (bytes) to `MailHeaders`: what the mapping needs, nothing more.

Real mail is malformed in every way a parser can meet: missing or bracket-less Message-IDs,
junk in In-Reply-To, addresses without a domain, dates in any zone or none, raw 8-bit bytes,
RFC 2047 encoded words. The standard library's `email` package parses the block with the
`compat32` policy (it never raises on a bad header; the `default` policy raises on access to
some malformed ones), and each field is then read defensively here: what cannot be read is
left out, counted in `defects`, and never fails the message.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parsedate_to_datetime

_PARSER = BytesHeaderParser(policy=policy.compat32)
_MSGID = re.compile(r"<([^<>\s]+)>")
_BARE_ID = re.compile(r"^[^<>\s@]+@[^<>\s@]+$")
# Reply and forward prefixes of common clients, in several languages, with counters
# ("Re[2]:") and list tags ("[dev] Re:").
_PREFIX = re.compile(
    r"^\s*(?:\[[^\]]{1,40}\]\s*)*(re|aw|sv|antw|vs|ref|fw|fwd|wg|tr|rv|enc)(?:\[\d+\]|\(\d+\))?"
    r"\s*[:：]\s*",
    re.IGNORECASE,
)
_LIST_TAG = re.compile(r"^\s*\[[^\]]{1,40}\]\s*")
_FORWARD = {"fw", "fwd", "wg", "tr", "rv", "enc"}


@dataclass(slots=True)
class MailHeaders:
    message_id: str  # without brackets; derived from other headers when the message has none
    derived_id: bool  # True: the message had no usable Message-ID
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    sender: str | None = None  # the From address (else Sender, else Return-Path), lowercased
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    date: datetime | None = None
    received: list[datetime] = field(default_factory=list)  # newest (top) first
    subject: str = ""  # decoded (RFC 2047)
    list_id: str | None = None
    auto_submitted: str | None = None
    precedence: str | None = None
    autoreply: bool = False  # X-Autoreply, X-Autorespond, X-Auto-Response (vendors' markers)
    return_path: str | None = None  # "" for the null sender <>
    content_type: str = ""
    report_type: str = ""
    failed_recipients: bool = False
    defects: int = 0

    @property
    def parents(self) -> list[str]:
        """Ancestors, oldest first: References, then In-Reply-To's last id if not in it."""
        chain = [r for r in self.references if r != self.message_id]
        for ref in reversed(self.in_reply_to):
            if ref != self.message_id:
                if ref not in chain:
                    chain.append(ref)
                break
        return chain

    @property
    def recipients(self) -> list[tuple[str, str]]:
        """(address, "to"|"cc"), each address once (To first), the sender left out."""
        seen: set[str] = set()
        out: list[tuple[str, str]] = []
        for role, addresses in (("to", self.to), ("cc", self.cc)):
            for a in addresses:
                if a not in seen and a != self.sender:
                    seen.add(a)
                    out.append((a, role))
        return out


def parse_headers(raw: bytes | str) -> MailHeaders:
    """Parse a header block (or a whole message: the body is not looked at)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    if ends:
        raw = raw[: min(ends) + 2]  # headers only: a body never reaches the parser
    msg = _PARSER.parsebytes(raw)
    return from_message(msg)


def from_message(msg: Message) -> MailHeaders:
    defects = len(msg.defects)
    subject = _decoded(msg, "subject")
    raw_id = _text(msg, "message-id")
    ids = _MSGID.findall(raw_id)
    message_id = ids[0] if ids else raw_id.strip() if _BARE_ID.match(raw_id.strip()) else ""
    derived = not message_id
    if derived:
        defects += 1
        message_id = derive_id(msg)
    sender = _first_address(msg, "from") or _first_address(msg, "sender")
    return_path = None
    if msg.get("return-path") is not None:
        rp = _text(msg, "return-path").strip()
        return_path = "" if rp in ("<>", "") else (_addresses([rp]) or [""])[0]
    if sender is None and return_path:
        sender = return_path
    date = _date(_text(msg, "date")) if msg.get("date") is not None else None
    if msg.get("date") is not None and date is None:
        defects += 1
    received = []
    for value in msg.get_all("received") or []:
        when = _date(str(value).rpartition(";")[2])
        if when is not None:
            received.append(when)
    list_id = _text(msg, "list-id").strip() or None
    if list_id:
        inner = _MSGID.findall(list_id)
        list_id = (inner[0] if inner else list_id)[:200]
    ctype = _text(msg, "content-type").lower()
    report = re.search(r"report-type\s*=\s*\"?([\w-]+)", ctype)
    return MailHeaders(
        message_id=message_id[:998],
        derived_id=derived,
        in_reply_to=_MSGID.findall(_text(msg, "in-reply-to")),
        references=_MSGID.findall(" ".join(_texts(msg, "references"))),
        sender=sender,
        to=_addresses(_texts(msg, "to")),
        cc=_addresses(_texts(msg, "cc")),
        date=date,
        received=received,
        subject=subject,
        list_id=list_id or (_text(msg, "list-post").strip()[:200] or None),
        auto_submitted=_text(msg, "auto-submitted").strip().lower() or None,
        precedence=_text(msg, "precedence").strip().lower() or None,
        autoreply=any(
            msg.get(h) is not None for h in ("x-autoreply", "x-autorespond", "x-auto-response")
        ),
        return_path=return_path,
        content_type=ctype.split(";", 1)[0].strip(),
        report_type=report.group(1) if report else "",
        failed_recipients=msg.get("x-failed-recipients") is not None,
        defects=defects,
    )


def derive_id(msg: Message) -> str:
    """A stable id for a message without a Message-ID: a hash of the headers every copy of
    it keeps (From, Date, To, Cc, Subject as sent), so the Sent and Inbox copies agree."""
    parts = [_text(msg, h).strip() for h in ("from", "date", "to", "cc", "subject")]
    digest = hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()
    return f"derived-{digest[:32]}@rhythm.invalid"


def normalise_subject(subject: str) -> str:
    """The subject without reply/forward prefixes and list tags, whitespace folded,
    case-folded: what a thread's messages share."""
    s = subject
    while True:
        stripped = _PREFIX.sub("", s, count=1)
        stripped = _LIST_TAG.sub("", stripped, count=1) if stripped == s else stripped
        if stripped == s:
            break
        s = stripped
    return " ".join(s.split()).casefold()


def subject_prefix(subject: str) -> str:
    """ "reply", "forward" or "" by the subject's first prefix."""
    m = _PREFIX.match(subject)
    if not m:
        return ""
    return "forward" if m.group(1).lower() in _FORWARD else "reply"


# -- reading one header defensively -------------------------------------------------------


def _texts(msg: Message, name: str) -> list[str]:
    out = []
    for value in msg.get_all(name) or []:
        out.append(str(value) if not isinstance(value, str) else value)
    return out


def _text(msg: Message, name: str) -> str:
    values = _texts(msg, name)
    return values[0] if values else ""


def _decoded(msg: Message, name: str) -> str:
    raw = msg.get(name)
    if raw is None:
        return ""
    try:
        text = str(make_header(decode_header(str(raw) if not isinstance(raw, str) else raw)))
    except (LookupError, UnicodeError, ValueError, TypeError):
        text = str(raw)
    # surrogates from raw 8-bit bytes: replaced, so the text is always valid UTF-8
    return " ".join(text.encode("utf-8", "replace").decode("utf-8", "replace").split())


def _addresses(values: list[str]) -> list[str]:
    out: list[str] = []
    try:
        pairs = getaddresses(values)
    except (ValueError, TypeError, IndexError):
        pairs = []
    for _name, address in pairs:
        a = address.strip().strip("<>").lower()
        local, at, domain = a.rpartition("@")
        if at and local and "." in domain and " " not in a and a not in out:
            out.append(a.encode("ascii", "replace").decode())
    return out


def _first_address(msg: Message, name: str) -> str | None:
    found = _addresses(_texts(msg, name))
    return found[0] if found else None


def _date(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322's reading
        when = when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC)
    except (OverflowError, ValueError):
        return None

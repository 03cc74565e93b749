"""What one message of a request becomes, whichever API it came through: an event in the
canonical JSON shape, a person to identify, or an error for that message alone. Plus the
rules both APIs share: the tenant from the key, deterministic event ids, clock-skew
correction. Pure."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = [
    "RHYTHM_ID_NAMESPACE",
    "Item",
    "content_event_id",
    "corrected_time",
    "message_event_id",
    "parse_time",
]

#: The namespace of the collector's derived event ids (UUIDv5): fixed forever, so a retried
#: message maps to the same event_id next week too.
RHYTHM_ID_NAMESPACE = uuid.UUID("6f1f3a52-7d0e-5b8c-9a4e-2c1d0b9e8f70")


@dataclass
class Item:
    """One message: exactly one of `event`, `person` or `error` is set."""

    index: int
    event: dict[str, Any] | None = None
    person: tuple[str, tuple[str, str], dict[str, Any]] | None = None  # tenant, actor, traits
    error: str | None = None
    reason: str = ""  # a fixed word when `error` is set (the rejects metric's label)
    ref: dict[str, str] = field(default_factory=dict)  # messageId / event_id, for errors

    def fail(self, reason: str, error: str) -> Item:
        self.event = self.person = None
        self.reason, self.error = reason, error
        return self


_NAMESPACE_BYTES = RHYTHM_ID_NAMESPACE.bytes


def uuid5_text(name: bytes) -> str:
    """`str(uuid.uuid5(RHYTHM_ID_NAMESPACE, name))`, without building UUID objects (this
    runs once per event)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def message_event_id(tenant: str, message_id: str) -> str:
    """Segment's `messageId` → event_id: the same message (a retry) is the same event."""
    return uuid5_text(f"{tenant}\n{message_id}".encode())


def content_event_id(tenant: str, event: dict[str, Any]) -> str:
    """An event sent without an id gets one from its content, so that a client re-sending
    it after a timeout or a 503 makes a duplicate the pipeline drops, not a second event."""
    body = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    return uuid5_text(tenant.encode() + b"\n" + body)


def parse_time(value: Any, name: str) -> datetime:
    """An ISO 8601 timestamp with a zone (Segment's form). ValueError names the field."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be an ISO 8601 string (got {type(value).__name__})")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}: not an ISO 8601 timestamp ({value[:40]!r})") from None
    if moment.tzinfo is None:
        raise ValueError(f"{name}: needs a time zone, e.g. Z ({value[:40]!r})")
    return moment


def corrected_time(
    timestamp: datetime | None, sent_at: datetime | None, received_at: datetime
) -> datetime:
    """When it happened, on the collector's clock. A device's clock may be off: the
    difference between when it says it sent the request (`sentAt`) and when the request
    arrived is its skew (network time is small next to wrong clocks), taken off its
    timestamp, as Segment does: `received_at - (sent_at - timestamp)`. Without `sentAt`
    the timestamp is trusted; without a timestamp it is the receive time."""
    if timestamp is None:
        return received_at
    if sent_at is None:
        return timestamp
    return received_at - (sent_at - timestamp)


def iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"

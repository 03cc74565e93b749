"""Who is told of an alert, and where. Pure: the directory and the engaged people are given.

- The alert's `owners` (the processors put there the person who owes the reply, or the
  tenant's queue when nobody of ours is in the thread) are told first.
- An alert without owners (a silent account, a person gone quiet) goes to the internal
  people most engaged with the entity over the days before it fired (from `entity_events`:
  whoever acted on it most), skipping anyone the directory says is not internal.
- Nobody found: the tenant's default queue.

Each recipient gets every configured channel it has an address for: the generic webhook and
Slack always (a queue is addressed by name; a person with a chat handle is mentioned), email
when the directory has the person's address.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from rhythm.schemas.outputs import Alert
from rhythm.schemas.people import Channel, Person

__all__ = [
    "Destination",
    "Recipient",
    "destinations",
    "idempotency_key",
    "is_internal",
    "needs_engaged",
    "route",
]

Reason = Literal["owner", "engaged", "queue", "digest"]


@dataclass(frozen=True)
class Recipient:
    ref: str  # type:id
    reason: Reason


@dataclass(frozen=True)
class Destination:
    recipient: Recipient
    channel: Channel
    address: str


def needs_engaged(alert: Alert) -> bool:
    """Whether routing this alert asks the store who is engaged with its entity."""
    return not alert.owners


def route(
    alert: Alert,
    engaged: Sequence[str],
    queue: str,
    directory: Mapping[str, Person],
    internal_types: Iterable[str],
    top: int,
) -> list[Recipient]:
    """The alert's recipients, in order, each once. `directory` is the tenant's people by
    type:id; `engaged` the entity's most engaged actors (type:id), most engaged first."""
    out: list[Recipient] = []
    seen: set[str] = set()

    def add(ref: str, reason: Reason) -> None:
        if ref not in seen:
            seen.add(ref)
            out.append(Recipient(ref, reason))

    for owner in alert.owners:
        add(owner, "queue" if owner.startswith("queue:") or owner == queue else "owner")
    if not out and top > 0:
        entity = f"{alert.entity_type}:{alert.entity_id}"
        chosen = 0
        for ref in engaged:
            if chosen >= top:
                break
            if ref == entity:
                continue
            if not is_internal(ref, directory.get(ref), internal_types):
                continue
            add(ref, "engaged")
            chosen += 1
    if not out:
        add(queue, "queue")
    return out


def is_internal(ref: str, person: Person | None, internal_types: Iterable[str]) -> bool:
    """One of ours: the directory says so, or says nothing and the type is an internal one."""
    said = person.traits.internal if person is not None else None
    return said is True or (said is None and ref.partition(":")[0] in set(internal_types))


def destinations(
    recipients: Sequence[Recipient],
    directory: Mapping[str, Person],
    channels: Sequence[Channel],
    webhook_url: str | None,
) -> list[Destination]:
    out: list[Destination] = []
    for r in recipients:
        person = directory.get(r.ref)
        for channel in channels:
            if channel == "webhook" and webhook_url:
                out.append(Destination(r, channel, webhook_url))
            elif channel == "slack":
                handle = person.traits.chat_handle if person is not None else None
                out.append(Destination(r, channel, f"<@{handle}>" if handle else r.ref))
            elif channel == "email" and person is not None and person.traits.email:
                out.append(Destination(r, channel, person.traits.email))
    return out


def idempotency_key(alert_id: str, recipient: str, channel: str) -> str:
    """One per (alert, recipient, channel): every attempt of a delivery carries it."""
    text = "\x1f".join((alert_id, recipient, channel)).encode()
    return hashlib.blake2b(text, digest_size=16).hexdigest()

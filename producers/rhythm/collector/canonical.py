"""`POST /v1/events`: Rhythm's canonical JSON (schemas/README.md), one event, a list, or
`{"events": [...]}`. The tenant is the write key's: an event naming another is refused; one
naming none gets the key's. An event without `event_id` gets one derived from its content
(a re-send dedupes). `sent_at`, when given, corrects `occurred_at` for the sender's clock
skew and is then replaced by the receive time. Pure: validation against the contract
happens when the event is published (`rhythm.producers.prepare_event`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rhythm.collector.body import json_size
from rhythm.collector.items import Item, content_event_id, corrected_time, iso, parse_time

__all__ = ["BatchShapeError", "canonical_items", "split_batch"]


class BatchShapeError(ValueError):
    """The body is JSON but not a batch of this API's shape (400)."""


def split_batch(body: Any, key: str) -> list[Any]:
    """A body's messages: a list, `{key: [...]}`, or one object."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        inner = body.get(key)
        if inner is None:
            return [body]
        if isinstance(inner, list):
            return inner
        raise BatchShapeError(f"{key}: must be a list of objects")
    raise BatchShapeError(f"the body must be a JSON object or a list (got {type(body).__name__})")


def canonical_items(
    body: Any, tenant: str, received_at: datetime, max_event_bytes: int
) -> list[Item]:
    return [
        canonical_item(i, message, tenant, received_at, max_event_bytes)
        for i, message in enumerate(split_batch(body, "events"))
    ]


def canonical_item(
    index: int, message: Any, tenant: str, received_at: datetime, max_event_bytes: int
) -> Item:
    item = Item(index)
    if not isinstance(message, dict):
        return item.fail("bad_shape", f"event {index}: must be a JSON object")
    if isinstance(message.get("event_id"), str):
        item.ref["event_id"] = message["event_id"][:64]
    size = json_size(message)
    if size > max_event_bytes:
        return item.fail("event_too_large", f"{size} bytes: an event is {max_event_bytes} at most")
    given = message.get("tenant")
    if given is not None and given != tenant:
        return item.fail(
            "tenant_mismatch", "tenant: comes from the write key (leave it out or use the key's)"
        )
    event = dict(message)
    event["tenant"] = tenant
    if event.get("event_id") is None:  # from what was sent: a re-send gets the same id
        event["event_id"] = content_event_id(tenant, event)
        item.ref["event_id"] = event["event_id"]
    sent = event.pop("sent_at", None)
    if sent is not None and isinstance(event.get("occurred_at"), str):
        try:
            occurred = corrected_time(
                parse_time(event["occurred_at"], "occurred_at"),
                parse_time(sent, "sent_at"),
                received_at,
            )
        except ValueError as exc:
            return item.fail("invalid_event", str(exc))
        event["occurred_at"] = iso(occurred)
    item.event = event
    return item

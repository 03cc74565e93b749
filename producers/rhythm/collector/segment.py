"""Segment's HTTP Tracking API (`/v1/track`, `/v1/identify`, `/v1/batch`) mapped to the
contract. Field by field (docs/collector.md has the table):

- `userId` → actor `("user", userId)`; without one, `anonymousId` → `("anonymous", id)`.
- `event` → verb, normalised: lower case, runs of anything outside `[a-z0-9_.-]` become
  `_` ("Order Completed" → `order_completed`); it must then start with a letter.
- `properties` → properties: nested objects flattened to dotted keys (`{"a": {"b": 1}}` →
  `a.b`), lists as their JSON text, nulls left out; then the contract's rules (64 at most,
  strings of 1,024 characters at most, int64, finite floats).
- `context` → a few properties, while the 64 allow: `context.page.path`, `.page.url`,
  `.page.referrer`, `.library.name`, `.library.version`, `.locale`, `.timezone`,
  `.app.name`, `.app.version`, `.os.name`, `.device.type`, `.campaign.source`;
  `context.groupId` → target `("group", groupId)`; `context.rhythm` (Rhythm's extension:
  `object`, `target`, `channel`, `context_id`, `in_reply_to`, `tags`, `weight`) → those
  fields as they are. Other context keys (the IP, the user agent, traits) are not kept.
- `channel` (Segment's: browser, mobile, server) → channel `web` / `mobile` unless
  `context.rhythm.channel` says otherwise; server → none.
- `messageId` → event_id, a UUIDv5 of (tenant, messageId): a retried message is the same
  event, which the pipeline keeps once. Without one, the id comes from the content.
- `timestamp` (or `originalTimestamp`) and `sentAt` (the message's or the batch's) →
  occurred_at = receive time − (sentAt − timestamp): the device's clock skew taken off.
- `type` in a batch: `track`, `identify`, `page` (verb `page_viewed`, object `("page",
  name or path)`) and `screen` (verb `screen_viewed`, object `("screen", name)`); `group`
  and `alias` are refused per message.
- identify: `traits` → the people directory's fields (`name`, or `firstName` +
  `lastName`; `email`, `chat_handle`, `timezone` (or `context.timezone`), `working_hours`,
  `working_days`, `team`, `internal`); other traits are not kept.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any

import orjson

from rhythm.collector.body import json_size
from rhythm.collector.items import (
    Item,
    content_event_id,
    corrected_time,
    message_event_id,
    parse_time,
)

__all__ = ["CONTEXT_PROPERTIES", "normalise_verb", "segment_items"]

CONTEXT_PROPERTIES = (
    ("page", "path"),
    ("page", "url"),
    ("page", "referrer"),
    ("library", "name"),
    ("library", "version"),
    ("locale",),
    ("timezone",),
    ("app", "name"),
    ("app", "version"),
    ("os", "name"),
    ("device", "type"),
    ("campaign", "source"),
)
# the same, by the context's top-level key: only the keys a message has are looked at
_CONTEXT_SECTIONS: dict[str, list[tuple[str, ...]]] = {}
for _path in CONTEXT_PROPERTIES:
    _CONTEXT_SECTIONS.setdefault(_path[0], []).append(_path)
_RHYTHM_FIELDS = ("object", "target", "channel", "context_id", "in_reply_to", "tags", "weight")
_CHANNELS = {"browser": "web", "mobile": "mobile"}
_TRAITS = (
    "name", "email", "chat_handle", "timezone", "working_hours", "working_days", "team",
    "internal",
)  # fmt: skip
_NOT_VERB = re.compile(r"[^a-z0-9_.-]+")
_MAX_PROPERTIES = 64
_SUPPORTED = ("track", "identify", "page", "screen")


@functools.lru_cache(maxsize=4096)  # event names repeat: "Order Completed" again and again
def normalise_verb(name: str) -> str:
    return _NOT_VERB.sub("_", name.strip().lower()).strip("_")[:64]


def segment_items(
    body: Any,
    route: str,
    tenant: str,
    received_at: datetime,
    max_event_bytes: int,
) -> list[Item]:
    """The messages of a Segment request. `route`: track, identify or batch. Raises
    BatchShapeError (from canonical) for a body that is not an object or batch."""
    from rhythm.collector.canonical import BatchShapeError

    if not isinstance(body, dict):
        raise BatchShapeError("the body must be a JSON object")
    if route == "batch":
        messages = body.get("batch")
        if not isinstance(messages, list):
            raise BatchShapeError("batch: must be a list of messages")
        given = body.get("context")
        shared_context: dict[str, Any] = given if isinstance(given, dict) else {}
        batch_sent = body.get("sentAt")
    else:
        messages, shared_context, batch_sent = [{"type": route, **body}], {}, None
    items = []
    for i, message in enumerate(messages):
        item = Item(i)
        if not isinstance(message, dict):
            items.append(item.fail("bad_shape", f"message {i}: must be a JSON object"))
            continue
        if isinstance(message.get("messageId"), str):
            item.ref["messageId"] = message["messageId"][:100]
        size = json_size(message)
        if size > max_event_bytes:
            items.append(
                item.fail(
                    "event_too_large", f"{size} bytes: a message is {max_event_bytes} at most"
                )
            )
            continue
        try:
            _map(item, message, shared_context, batch_sent, tenant, received_at)
        except ValueError as exc:
            item.fail(getattr(exc, "reason", "invalid_event"), str(exc))
        items.append(item)
    return items


class _RefusedError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _map(
    item: Item,
    message: dict[str, Any],
    shared_context: dict[str, Any],
    batch_sent: Any,
    tenant: str,
    received_at: datetime,
) -> None:
    kind = message.get("type", "track")
    if kind not in _SUPPORTED:
        raise _RefusedError(
            "unsupported_type", f"type: {str(kind)[:20]!r} is not collected ({_SUPPORTED})"
        )
    context = message.get("context") or {}
    if not isinstance(context, dict):
        raise ValueError("context: must be an object")
    if shared_context:
        context = {**shared_context, **context}
    actor = _actor(message)
    if kind == "identify":
        traits = message.get("traits") or {}
        if not isinstance(traits, dict):
            raise ValueError("traits: must be an object")
        item.person = (tenant, actor, _traits(traits, context))
        return
    event: dict[str, Any] = {"tenant": tenant, "actor": {"type": actor[0], "id": actor[1]}}
    if kind == "track":
        name = message.get("event")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("event: required (a non-empty string)")
        verb = normalise_verb(name)
        if not verb or not verb[0].isalpha():
            raise ValueError(
                f"event: {name[:40]!r} does not make a verb (it must start with a letter)"
            )
        event["verb"] = verb
    else:  # page, screen
        event["verb"] = f"{kind}_viewed"
        props = message.get("properties") if isinstance(message.get("properties"), dict) else {}
        page = message.get("name") or (props or {}).get("path") or (props or {}).get("url")
        if isinstance(page, str) and page:
            event["object"] = {"type": kind, "id": page[:256]}
    raw_props = message.get("properties") or {}
    if not isinstance(raw_props, dict):
        raise ValueError("properties: must be an object")
    properties = flatten(raw_props)
    for section, paths in _CONTEXT_SECTIONS.items():
        if section not in context:
            continue
        for path in paths:
            value = _dig(context, path)
            kept = isinstance(value, str | int | float | bool) and value != ""
            if kept and len(properties) < _MAX_PROPERTIES:
                properties["context." + ".".join(path)] = value
    event["properties"] = properties
    group = context.get("groupId")
    if isinstance(group, str | int) and not isinstance(group, bool) and str(group):
        event["target"] = {"type": "group", "id": str(group)}
    channel = _CHANNELS.get(str(message.get("channel", "")).lower())
    if channel:
        event["channel"] = channel
    extension = context.get("rhythm")
    if extension is not None:
        if not isinstance(extension, dict):
            raise ValueError("context.rhythm: must be an object")
        unknown = set(extension) - set(_RHYTHM_FIELDS)
        if unknown:
            raise ValueError(
                f"context.rhythm: unknown field(s) {sorted(unknown)} ({_RHYTHM_FIELDS})"
            )
        event.update(extension)
    # the id from what was sent, before the receive time enters occurred_at
    message_id = message.get("messageId")
    if isinstance(message_id, str) and message_id:
        event["event_id"] = message_event_id(tenant, message_id)
    else:
        event["event_id"] = content_event_id(tenant, message)
    item.ref["event_id"] = event["event_id"]
    stamp = message.get("timestamp", message.get("originalTimestamp"))
    sent = message.get("sentAt", batch_sent)
    occurred = corrected_time(
        None if stamp is None else parse_time(stamp, "timestamp"),
        None if sent is None else parse_time(sent, "sentAt"),
        received_at,
    )
    event["occurred_at"] = occurred  # an aware datetime: the contract takes it as it is
    item.event = event


def _actor(message: dict[str, Any]) -> tuple[str, str]:
    for field, kind in (("userId", "user"), ("anonymousId", "anonymous")):
        value = message.get(field)
        if isinstance(value, bool):
            raise ValueError(f"{field}: must be a string or a number")
        if isinstance(value, int | float):
            value = str(value)
        if isinstance(value, str) and value:
            return kind, value
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{field}: must be a string or a number")
    raise ValueError("userId or anonymousId: one is required")


def flatten(properties: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in properties.items():
        name = f"{prefix}{key}"
        if value is None:
            continue
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, list):
            out[name] = orjson.dumps(value).decode()
        else:
            out[name] = value
    return out


def _dig(context: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = context
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _traits(traits: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    out = {k: traits[k] for k in _TRAITS if traits.get(k) is not None}
    if "name" not in out:
        parts = [traits.get("firstName"), traits.get("lastName")]
        name = " ".join(p for p in parts if isinstance(p, str) and p)
        if name:
            out["name"] = name
    if "timezone" not in out and isinstance(context.get("timezone"), str):
        out["timezone"] = context["timezone"]
    return out

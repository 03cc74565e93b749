"""Message to row, per topic. Pure: no Kafka, no ClickHouse, no clock.

Each function takes a `Message` and returns either a row (a tuple in the column order of its
table in `schema.py`) or a `DeadLetter` naming why it cannot be written. A row only ever holds
values its columns accept (valid UUID, times in range, ...), so ClickHouse never refuses a
batch over one bad message: such a message becomes a dead letter here, and the batch goes on.
Rows depend only on the message (its position and timestamp included), so a batch rebuilt
after a crash holds exactly the same rows.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from rhythm.schemas import WireError, decode_event
from rhythm.schemas.feedback import Feedback
from rhythm.schemas.outputs import Alert, Signal
from rhythm.schemas.people import DeliveryRecord, Person
from rhythm.schemas.wire_check import record_problem
from rhythm.sinks.schema import ALERTS, EVENTS, FEEDBACK, NOTIFICATIONS, PEOPLE, SIGNALS, Table

__all__ = [
    "DEAD_LETTER_REASONS",
    "TRANSFORMS",
    "DeadLetter",
    "Kind",
    "Message",
    "Row",
    "dead_letter_row",
    "transform_alert",
    "transform_event",
    "transform_feedback",
    "transform_notification",
    "transform_person",
    "transform_signal",
]

Row = tuple[Any, ...]
Kind = Literal["events", "signals", "alerts", "people", "notifications", "feedback"]

#: Every reason a message can be dead-lettered for (a bounded metric label).
DEAD_LETTER_REASONS = (
    "empty", "too_short", "bad_magic", "unknown_schema_id", "bad_avro",  # WireError.reason
    "invalid_event", "invalid_json", "invalid_signal", "invalid_alert", "invalid_person",
    "invalid_notification", "invalid_feedback",
)  # fmt: skip

# What the contract allows (schemas/README.md), which DateTime64(3) holds.
_MIN_MS = 0
_MAX_MS = 7_258_118_400_000  # 2200-01-01T00:00:00Z, exclusive


@dataclass(frozen=True, slots=True)
class Message:
    """What the sink needs of a Kafka message."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None

    @property
    def size(self) -> int:
        return len(self.value or b"") + len(self.key or b"")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: Message
    reason: str
    detail: str


Outcome = Row | DeadLetter


class _InvalidError(ValueError):
    pass


def _time(name: str, value: Any) -> int:
    if not isinstance(value, int) or not _MIN_MS <= value < _MAX_MS:
        raise _InvalidError(f"{name}: not a time from 1970 to 2200 (got {value!r})")
    return value


def _text(value: str | int | float | bool) -> str:
    # Map(String, String): bools as true/false (never 1/0), numbers in their shortest form.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def transform_event(message: Message) -> Outcome:
    try:
        record: dict[str, Any] = dict(decode_event(message.value or b""))
    except WireError as exc:
        return DeadLetter(message, exc.reason, str(exc))
    problem = record_problem(record)  # another producer may break the contract
    if problem is not None:
        return DeadLetter(message, "invalid_event", problem)
    try:
        event_id = str(uuid.UUID(record["event_id"]))
        if not record["tenant"] or not record["actor_type"] or not record["actor_id"]:
            raise _InvalidError("tenant, actor_type and actor_id must not be empty")
        weight = record["weight"]
        if not math.isfinite(weight):
            raise _InvalidError(f"weight: not finite (got {weight!r})")
        sent_at = record["sent_at"]
        return (
            event_id,
            record["tenant"],
            _time("occurred_at", record["occurred_at"]),
            None if sent_at is None else _time("sent_at", sent_at),
            record["actor_type"],
            record["actor_id"],
            record["verb"],
            record["object_type"],
            record["object_id"],
            record["target_type"],
            record["target_id"],
            record["channel"],
            record["context_id"],
            record["in_reply_to"],
            record["tags"],
            weight,
            {k: _text(v) for k, v in record["properties"].items()},
            message.timestamp_ms,
            message.partition,
            message.offset,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return DeadLetter(message, "invalid_event", f"{type(exc).__name__}: {exc}")


def _validation_reason(exc: ValidationError, invalid: str) -> str:
    if any(e["type"] in ("json_invalid", "json_type") for e in exc.errors()):
        return "invalid_json"
    return invalid


def _detail(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '(value)'}: {e['msg']}" for e in exc.errors()[:10]
    )


def transform_signal(message: Message) -> Outcome:
    if not message.value:
        return DeadLetter(message, "empty", "no value (a tombstone?)")
    try:
        s = Signal.model_validate_json(message.value)
        for name in ("window_start", "first_event_at", "last_event_at"):
            _time(name, getattr(s, name))
    except ValidationError as exc:
        return DeadLetter(message, _validation_reason(exc, "invalid_signal"), _detail(exc))
    except _InvalidError as exc:
        return DeadLetter(message, "invalid_signal", str(exc))
    return (
        s.tenant, s.role, s.entity_type, s.entity_id, s.window_start, s.window_seconds,
        s.event_count, s.weight_sum, s.weight_max, s.gap_count, s.gap_min_s, s.gap_max_s,
        s.gap_mean_s, s.first_event_at, s.last_event_at, s.silence_before_s, s.late_count,
        s.version, message.timestamp_ms, message.partition, message.offset,
    )  # fmt: skip


def transform_alert(message: Message) -> Outcome:
    if not message.value:
        return DeadLetter(message, "empty", "no value (a tombstone?)")
    try:
        a = Alert.model_validate_json(message.value)
        for name in ("fired_at", "last_event_at"):
            _time(name, getattr(a, name))
        # Sorted keys: the same alert always gives the same text (and the same row).
        details = json.dumps(a.details, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValidationError as exc:
        return DeadLetter(message, _validation_reason(exc, "invalid_alert"), _detail(exc))
    except (_InvalidError, ValueError, TypeError) as exc:
        return DeadLetter(message, "invalid_alert", str(exc))
    return (
        a.alert_id, a.kind, a.tenant, a.role, a.entity_type, a.entity_id, a.context_id,
        a.fired_at, a.last_event_at, a.expected_within_s, a.score, a.owners, details,
        message.timestamp_ms, message.partition, message.offset,
    )  # fmt: skip


def transform_person(message: Message) -> Outcome:
    if not message.value:
        return DeadLetter(message, "empty", "no value (a tombstone?)")
    try:
        p = Person.model_validate_json(message.value)
        _time("updated_at", p.updated_at)
    except ValidationError as exc:
        return DeadLetter(message, _validation_reason(exc, "invalid_person"), _detail(exc))
    except _InvalidError as exc:
        return DeadLetter(message, "invalid_person", str(exc))
    t = p.traits
    return (
        p.tenant, p.actor_type, p.actor_id, t.name, t.email, t.chat_handle, t.timezone,
        list(t.working_hours or ()), list(t.working_days or ()), t.team, t.internal,
        p.updated_at, message.timestamp_ms, message.partition, message.offset,
    )  # fmt: skip


def transform_notification(message: Message) -> Outcome:
    if not message.value:
        return DeadLetter(message, "empty", "no value (a tombstone?)")
    try:
        n = DeliveryRecord.model_validate_json(message.value)
        for name in ("created_at", "due_at", "updated_at"):
            _time(name, getattr(n, name))
        if n.sent_at is not None:
            _time("sent_at", n.sent_at)
    except ValidationError as exc:
        return DeadLetter(message, _validation_reason(exc, "invalid_notification"), _detail(exc))
    except _InvalidError as exc:
        return DeadLetter(message, "invalid_notification", str(exc))
    return (
        n.alert_id, n.tenant, n.kind, n.recipient, n.channel, n.address, n.reason, n.state,
        min(n.attempts, 65535), n.created_at, n.due_at, n.updated_at, n.sent_at, n.last_error,
        n.key, n.version, message.timestamp_ms, message.partition, message.offset,
    )  # fmt: skip


def transform_feedback(message: Message) -> Outcome:
    if not message.value:
        return DeadLetter(message, "empty", "no value (a tombstone?)")
    try:
        f = Feedback.model_validate_json(message.value)
        _time("at", f.at)
        if f.snooze_until is not None:
            _time("snooze_until", f.snooze_until)
    except ValidationError as exc:
        return DeadLetter(message, _validation_reason(exc, "invalid_feedback"), _detail(exc))
    except _InvalidError as exc:
        return DeadLetter(message, "invalid_feedback", str(exc))
    return (
        f.feedback_id, f.alert_id, f.tenant, f.recipient, f.kind, f.snooze_until, f.at,
        f.source, f.alert_kind, f.role, f.entity_type, f.entity_id, f.context_id, f.score,
        message.timestamp_ms, message.partition, message.offset,
    )  # fmt: skip


def dead_letter_row(dead: DeadLetter, max_bytes: int) -> Row:
    """The `dead_letters` row: the raw value as base64, cut to `max_bytes`."""
    m = dead.message
    value = m.value or b""
    return (
        m.topic,
        m.partition,
        m.offset,
        m.timestamp_ms,
        dead.reason,
        dead.detail[:2000],
        base64.b64encode(m.key or b"").decode(),
        base64.b64encode(value[:max_bytes]).decode(),
        len(value),
    )


TRANSFORMS: dict[Kind, tuple[Table, Callable[[Message], Outcome]]] = {
    "events": (EVENTS, transform_event),
    "signals": (SIGNALS, transform_signal),
    "alerts": (ALERTS, transform_alert),
    "people": (PEOPLE, transform_person),
    "notifications": (NOTIFICATIONS, transform_notification),
    "feedback": (FEEDBACK, transform_feedback),
}

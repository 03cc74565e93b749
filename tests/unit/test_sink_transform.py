"""The sink's pure transform: each topic's message becomes a row in its table's column order,
or a dead letter with a reason."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from rhythm.schemas import CURRENT_SCHEMA_ID, encode_event
from rhythm.schemas.outputs import Alert, Signal
from rhythm.sinks.tables import ALERTS, DEAD_LETTER_REASONS, DEAD_LETTERS, EVENTS, SIGNALS
from rhythm.sinks.tables.alerts import process as transform_alert
from rhythm.sinks.tables.dead_letters import row as dead_letter_row
from rhythm.sinks.tables.events import process as transform_event
from rhythm.sinks.tables.rows import DeadLetter, Message
from rhythm.sinks.tables.signals import process as transform_signal


def wire_record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "0190A8B2-7C3D-7E4F-8A1B-2C3D4E5F6A7B",
        "tenant": "acme",
        "occurred_at": 1_790_856_000_123,
        "sent_at": 1_790_856_001_000,
        "actor_type": "user",
        "actor_id": "u-42",
        "verb": "replied",
        "object_type": "message",
        "object_id": "m-1",
        "target_type": None,
        "target_id": None,
        "channel": "email",
        "context_id": "thread-55",
        "in_reply_to": None,
        "tags": ["launch-q4", "bikes"],
        "weight": 1.5,
        "properties": {"plan": "pro", "seats": 12, "ratio": 0.5, "trial": False},
    }
    return base | changes


def message(value: bytes | None, topic: str = "t", offset: int = 7) -> Message:
    return Message(topic, 2, offset, 1_790_856_002_000, b"acme:user:u-42", value)


def signal(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tenant": "acme", "role": "actor", "entity_type": "user", "entity_id": "u-42",
        "window_start": 1_790_852_400_000, "window_seconds": 3600, "event_count": 5,
        "weight_sum": 7.5, "weight_max": 2.0, "gap_count": 4, "gap_min_s": 1.0,
        "gap_max_s": 600.0, "gap_mean_s": 150.0, "first_event_at": 1_790_852_401_000,
        "last_event_at": 1_790_855_000_000, "silence_before_s": None, "late_count": 0,
        "version": 1,
    }  # fmt: skip
    return base | changes


def alert(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "alert_id": "a" * 32, "kind": "unanswered", "tenant": "acme", "role": "actor",
        "entity_type": "customer", "entity_id": "c-1", "context_id": "thread-55",
        "fired_at": 1_790_856_000_000, "last_event_at": 1_790_850_000_000,
        "expected_within_s": 3600.0, "details": {"z": 1, "a": [1, 2], "channel": "email"},
    }  # fmt: skip
    return base | changes


# -- events ---------------------------------------------------------------------------------


def test_an_event_becomes_a_row_in_column_order() -> None:
    row = transform_event(message(encode_event(wire_record())))
    assert isinstance(row, tuple)
    assert len(row) == len(EVENTS.column_names)
    got = dict(zip(EVENTS.column_names, row, strict=True))
    assert got["event_id"] == "0190a8b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b"  # canonical lowercase
    assert got["occurred_at"] == 1_790_856_000_123
    assert got["sent_at"] == 1_790_856_001_000
    assert got["target_type"] is None and got["target_id"] is None
    assert got["tags"] == ["launch-q4", "bikes"]
    # typed values as text: bools true/false, numbers in their shortest form
    assert got["properties"] == {"plan": "pro", "seats": "12", "ratio": "0.5", "trial": "false"}
    assert got["received_at"] == 1_790_856_002_000
    assert (got["kafka_partition"], got["kafka_offset"]) == (2, 7)


def test_the_same_message_always_gives_the_same_row() -> None:
    data = encode_event(wire_record())
    assert transform_event(message(data)) == transform_event(message(data))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"\x00\x00", "too_short"),
        (b'{"tenant": "acme"}', "bad_magic"),
        (b"\x00" + struct.pack(">I", 999_999) + b"\x02", "unknown_schema_id"),
        (b"\x00" + struct.pack(">I", CURRENT_SCHEMA_ID) + b"\xff\xff\xff", "bad_avro"),
    ],
)
def test_undecodable_events_are_dead_letters_with_the_wire_reason(
    value: bytes | None, reason: str
) -> None:
    dead = transform_event(message(value))
    assert isinstance(dead, DeadLetter)
    assert dead.reason == reason
    assert dead.reason in DEAD_LETTER_REASONS
    assert dead.detail


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"event_id": "not-a-uuid"}, "UUID"),
        ({"occurred_at": -5}, "occurred_at"),
        ({"occurred_at": 7_258_118_400_000}, "occurred_at"),
        ({"sent_at": 10**15}, "sent_at"),
        ({"weight": float("nan")}, "weight"),
        ({"tenant": ""}, "tenant"),
    ],
)
def test_records_the_columns_cannot_hold_are_invalid_events(
    changes: dict[str, Any], field: str
) -> None:
    dead = transform_event(message(encode_event(wire_record(**changes))))
    assert isinstance(dead, DeadLetter)
    assert dead.reason == "invalid_event"
    assert field in dead.detail


# -- signals and alerts ---------------------------------------------------------------------


def test_a_signal_becomes_a_row_as_emitted() -> None:
    data = signal(gap_min_s=None, gap_max_s=None, gap_mean_s=None, silence_before_s=12.5)
    value = Signal.model_validate(data).model_dump_json().encode()
    row = transform_signal(message(value))
    assert isinstance(row, tuple)
    got = dict(zip(SIGNALS.column_names, row, strict=True))
    for key, expected in data.items():
        assert got[key] == expected, key
    assert (got["kafka_partition"], got["kafka_offset"]) == (2, 7)


def test_an_alert_becomes_a_row_with_its_details_as_stable_json() -> None:
    row = transform_alert(message(Alert.model_validate(alert()).model_dump_json().encode()))
    assert isinstance(row, tuple)
    got = dict(zip(ALERTS.column_names, row, strict=True))
    assert got["kind"] == "unanswered"
    assert got["context_id"] == "thread-55"
    assert got["details"] == '{"a":[1,2],"channel":"email","z":1}'
    reordered = json.dumps(alert(details={"channel": "email", "a": [1, 2], "z": 1})).encode()
    assert transform_alert(message(reordered)) == row


@pytest.mark.parametrize(
    ("transform", "value", "reason"),
    [
        (transform_signal, b"{not json", "invalid_json"),
        (transform_signal, b"\x00\x01garbage", "invalid_json"),
        (transform_signal, json.dumps(signal(version=0)).encode(), "invalid_signal"),
        (transform_signal, json.dumps(signal(extra=1)).encode(), "invalid_signal"),
        (transform_signal, json.dumps(signal(role="boss")).encode(), "invalid_signal"),
        (transform_signal, json.dumps(signal(window_start=-1)).encode(), "invalid_signal"),
        (transform_signal, None, "empty"),
        (transform_alert, b"[1, 2", "invalid_json"),
        (transform_alert, json.dumps(alert(kind="panic")).encode(), "invalid_alert"),
        (transform_alert, json.dumps({"alert_id": "x"}).encode(), "invalid_alert"),
        (transform_alert, b"", "empty"),
    ],
)
def test_invalid_signals_and_alerts_are_dead_letters(
    transform: Any, value: bytes | None, reason: str
) -> None:
    dead = transform(message(value))
    assert isinstance(dead, DeadLetter)
    assert dead.reason == reason
    assert dead.reason in DEAD_LETTER_REASONS
    assert dead.detail


# -- dead letters -------------------------------------------------------------------------------


def test_a_dead_letter_row_keeps_where_why_and_the_first_bytes() -> None:
    raw = bytes(range(256)) * 4
    dead = DeadLetter(message(raw, topic="rhythm.events", offset=41), "bad_magic", "why")
    row = dead_letter_row(dead, max_bytes=100)
    assert len(row) == len(DEAD_LETTERS.column_names)
    got = dict(zip(DEAD_LETTERS.column_names, row, strict=True))
    assert (got["topic"], got["kafka_partition"], got["kafka_offset"]) == ("rhythm.events", 2, 41)
    assert got["reason"] == "bad_magic" and got["detail"] == "why"
    assert base64.b64decode(got["value_b64"]) == raw[:100]
    assert got["value_size"] == len(raw)
    assert base64.b64decode(got["key_b64"]) == b"acme:user:u-42"

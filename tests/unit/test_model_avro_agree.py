"""The model, the fast path, the JSON path and the Avro schema describe the same event."""

from __future__ import annotations

import json
import math
import typing
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from rhythm.schemas import (
    ContractError,
    Entity,
    Event,
    EventDict,
    WireRecord,
    avro_writer,
    decode_event,
    encode_event,
    event_from_json_line,
    format_validation_error,
    validate_record,
)
from rhythm.schemas.catalogue import strip_logical_types
from rhythm.schemas.wire import WIRE

AVRO_FIELDS: list[dict[str, Any]] = WIRE.current.schema["fields"]
AVRO_BY_NAME = {f["name"]: f for f in AVRO_FIELDS}


def _is_entity(annotation: Any) -> bool:
    return annotation is Entity or Entity in typing.get_args(annotation)


ENTITY_FIELDS = [name for name, f in Event.model_fields.items() if _is_entity(f.annotation)]


def wire_names(model_field: str) -> list[str]:
    """The wire record fields a model field becomes."""
    if model_field in ENTITY_FIELDS:
        return [f"{model_field}_type", f"{model_field}_id"]
    return [model_field]


# -- the shapes ----------------------------------------------------------------------------------
def test_entity_fields_are_found() -> None:
    assert ENTITY_FIELDS == ["actor", "object", "target"]


def test_every_model_field_has_avro_fields_and_back() -> None:
    from_model = [name for field in Event.model_fields for name in wire_names(field)]
    assert sorted(from_model) == sorted(AVRO_BY_NAME)


def test_wire_record_type_and_fast_encoder_follow_the_schema_order() -> None:
    names = [f["name"] for f in AVRO_FIELDS]
    assert list(typing.get_type_hints(WireRecord)) == names
    assert [name for name, _ in avro_writer.LAYOUT] == names
    record = Event.model_validate(valid_events()[0]).to_record()
    assert list(record) == names


def test_event_dict_has_the_model_fields_and_requiredness() -> None:
    assert list(typing.get_type_hints(EventDict)) == list(Event.model_fields)
    required = {name for name, f in Event.model_fields.items() if f.is_required()}
    assert set(EventDict.__required_keys__) == required


def test_requiredness_matches_avro() -> None:
    """A required model field has no Avro default; an optional one has one (or is nullable)."""
    for name, field in Event.model_fields.items():
        for wire_name in wire_names(name):
            avro = AVRO_BY_NAME[wire_name]
            if name == "event_id":  # optional on input: the client assigns it before the wire
                assert "default" not in avro
                continue
            assert ("default" in avro) is (not field.is_required()), wire_name


def test_avro_defaults_equal_model_defaults() -> None:
    for name, field in Event.model_fields.items():
        if field.is_required() or name == "event_id":
            continue
        default = field.get_default(call_default_factory=True)
        for wire_name in wire_names(name):
            assert AVRO_BY_NAME[wire_name]["default"] == default, wire_name


def test_nullable_model_fields_are_nullable_in_avro() -> None:
    for name, field in Event.model_fields.items():
        model_nullable = type(None) in typing.get_args(field.annotation)
        for wire_name in wire_names(name):
            avro_type = strip_logical_types(AVRO_BY_NAME[wire_name]["type"])
            avro_nullable = isinstance(avro_type, list) and avro_type[0] == "null"
            if name == "event_id":
                assert model_nullable and not avro_nullable
            else:
                assert model_nullable is avro_nullable, wire_name


def test_timestamps_are_timestamp_millis() -> None:
    assert AVRO_BY_NAME["occurred_at"]["type"] == {
        "type": "long",
        "logicalType": "timestamp-millis",
    }
    assert AVRO_BY_NAME["sent_at"]["type"][1]["logicalType"] == "timestamp-millis"


# -- the same events through every path ----------------------------------------------------------
def valid_events() -> list[dict[str, Any]]:
    ids = iter(str(uuid.UUID(int=i + 1)) for i in range(100))
    base = {
        "tenant": "acme",
        "occurred_at": "2026-10-01T12:00:00.123Z",
        "actor": {"type": "user", "id": "u-42"},
        "verb": "replied",
    }
    ist = timezone(timedelta(hours=5, minutes=30))
    variants: list[dict[str, Any]] = [
        {
            "object": {"type": "message", "id": "m-1"},
            "target": {"type": "account", "id": "acct-7"},
            "channel": "email",
            "context_id": "thread-55",
            "in_reply_to": "0190a8b2-0000-7e4f-8a1b-2c3d4e5f6a7b",
            "sent_at": "2026-10-01T12:00:01Z",
            "tags": ["launch-q4", "bikes"],
            "weight": 2.5,
            "properties": {"plan": "pro", "seats": 12, "ratio": 0.25, "trial": True},
        },
        {},
        {"occurred_at": "2026-10-01T17:30:00.123999+05:30", "weight": -3},
        {"occurred_at": datetime(2026, 10, 1, 17, 30, 0, 999_999, tzinfo=ist)},
        {"occurred_at": "1970-01-01T00:00:00Z", "sent_at": "2199-12-31T23:59:59.999Z"},
        {"actor": {"type": "usuário", "id": "Zoë 🚲"}, "context_id": "スレッド"},
        {"properties": {"big": 2**63 - 1, "small": -(2**63), "tiny": 5e-324, "no": False}},
        {"tags": [f"t{i}" for i in range(32)], "object": None, "channel": None},
        {"weight": 1e12, "properties": {"k" * 128: "v" * 1024}},
    ]
    return [base | {"event_id": next(ids)} | v for v in variants]


@pytest.mark.parametrize("data", valid_events())
def test_model_and_fast_path_give_the_same_record(data: dict[str, Any]) -> None:
    assert validate_record(data) == Event.model_validate(data).to_record()


@pytest.mark.parametrize("data", valid_events())
def test_round_trip_model_record_bytes_record_model(data: dict[str, Any]) -> None:
    event = Event.model_validate(data)
    record = event.to_record()
    decoded = decode_event(encode_event(record))
    assert decoded == record
    assert Event.from_record(decoded) == event
    for name in ("occurred_at", "sent_at"):
        assert decoded[name] is None or type(decoded[name]) is int


@pytest.mark.parametrize("data", valid_events())
def test_json_path_gives_the_same_event(data: dict[str, Any]) -> None:
    event = Event.model_validate(data)
    assert event_from_json_line(json.dumps(data, default=_iso)) == event
    assert event_from_json_line(json.dumps(event.to_json_dict())) == event


def _iso(value: Any) -> str:
    assert isinstance(value, datetime)
    return value.isoformat()


def test_fast_path_leaves_event_id_to_the_caller() -> None:
    data = valid_events()[0]
    del data["event_id"]
    assert validate_record(data)["event_id"] is None


def test_millisecond_arithmetic_is_exact() -> None:
    # Every millisecond of a second, at both ends of the allowed range: no float rounding.
    for start in ("1970-01-01T00:00:00", "2199-12-31T23:59:59"):
        for ms in range(1000):
            data = valid_events()[1] | {"occurred_at": f"{start}.{ms:03d}999Z"}
            record = validate_record(data)
            seconds = datetime.fromisoformat(start).replace(tzinfo=UTC) - datetime(
                1970, 1, 1, tzinfo=UTC
            )
            assert record["occurred_at"] == int(seconds.total_seconds()) * 1000 + ms
            assert Event.from_record(record).occurred_at.microsecond == ms * 1000


# -- the same rejections through every path -------------------------------------------------------
BAD_VALUES: dict[str, list[Any]] = {
    "event_id": ["x", 5, ""],
    "tenant": ["ACME", None, 5, ""],
    "occurred_at": ["2026-10-01", "1700000000", 1_700_000_000, "1969-01-01T00:00:00Z", None],
    "sent_at": ["soon", "2300-01-01T00:00:00Z"],
    "actor": [
        None,
        "u",
        {"type": "user"},
        {"type": "", "id": "x"},
        {"type": "u", "id": "x", "z": 1},
    ],
    "verb": ["Replied", None, "x" * 65],
    "object": ["m", {"id": "m"}],
    "target": [{"type": "t", "id": "x" * 257}],
    "channel": ["Email", "", 1],
    "context_id": ["", "c" * 257],
    "in_reply_to": ["", 7],
    "tags": ["bikes", ["Bikes"], [f"t{i}" for i in range(33)], [None]],
    "weight": [math.inf, "1", True, 1e13, None],
    "properties": [
        [],
        {"": 1},
        {"a": [1]},
        {"a": {"b": 1}},
        {"a": 2**63},
        {"a": None},
        {"a": "x" * 1025},
        {f"k{i}": 1 for i in range(65)},
    ],
    "surprise": [1],
}
INVALID = [(name, value) for name, values in BAD_VALUES.items() for value in values]


def _model_message(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        Event.model_validate(data)
    return format_validation_error(caught.value)


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_every_path_rejects_the_same_way(name: str, value: Any) -> None:
    data = valid_events()[0] | {name: value}
    expected = _model_message(data)
    assert expected.startswith(name), expected
    with pytest.raises(ContractError) as fast:
        validate_record(data)
    assert str(fast.value) == expected
    try:
        line = json.dumps(data, allow_nan=True)
    except ValueError:
        return
    with pytest.raises(ContractError) as from_json:
        event_from_json_line(line)
    assert str(from_json.value) == expected

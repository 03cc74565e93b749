"""The canonical JSON event: every rule rejects what it should, with a message naming it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import pytest
from pydantic import ValidationError

from rhythm.schemas import (
    ContractError,
    Entity,
    Event,
    event_from_json_line,
    format_validation_error,
    validate_record,
)

EVENT_ID = "0190a8b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b"


def event(**changes: Any) -> dict[str, Any]:
    """A valid event with every field set; `field=DROP` removes a field."""
    data: dict[str, Any] = {
        "event_id": EVENT_ID,
        "tenant": "acme",
        "occurred_at": "2026-10-01T12:00:00.123Z",
        "sent_at": "2026-10-01T12:00:01.000Z",
        "actor": {"type": "user", "id": "u-42"},
        "verb": "replied",
        "object": {"type": "message", "id": "m-1"},
        "target": {"type": "account", "id": "acct-7"},
        "channel": "email",
        "context_id": "thread-55",
        "in_reply_to": "0190a8b2-0000-7e4f-8a1b-2c3d4e5f6a7b",
        "tags": ["launch-q4", "bikes"],
        "weight": 1.0,
        "properties": {"plan": "pro", "seats": 12},
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not DROP}


DROP = object()


def errors_of(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        Event.model_validate(data)
    return format_validation_error(caught.value)


# -- invalid: (field changes, the field named, the rule named) ----------------------------------
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("tenant missing", {"tenant": DROP}, "tenant", "required"),
    ("tenant upper", {"tenant": "ACME"}, "tenant", "must match [a-z0-9][a-z0-9_-]{0,63}"),
    ("tenant empty", {"tenant": ""}, "tenant", "must match"),
    ("tenant too long", {"tenant": "a" * 65}, "tenant", "must match"),
    ("tenant leading dash", {"tenant": "-acme"}, "tenant", "must match"),
    ("tenant newline", {"tenant": "acme\n"}, "tenant", "must match"),
    ("tenant int", {"tenant": 7}, "tenant", "must be a string"),
    ("tenant bytes", {"tenant": b"acme"}, "tenant", "must be a string"),
    ("occurred_at missing", {"occurred_at": DROP}, "occurred_at", "required"),
    ("occurred_at naive str", {"occurred_at": "2026-10-01T12:00:00"}, "occurred_at", "RFC 3339"),
    ("occurred_at date", {"occurred_at": "2026-10-01"}, "occurred_at", "RFC 3339"),
    ("occurred_at epoch str", {"occurred_at": "1700000000"}, "occurred_at", "RFC 3339"),
    ("occurred_at epoch int", {"occurred_at": 1_700_000_000_000}, "occurred_at", "RFC 3339"),
    ("occurred_at epoch float", {"occurred_at": 1.7e12}, "occurred_at", "RFC 3339"),
    ("occurred_at garbage", {"occurred_at": "yesterday"}, "occurred_at", "RFC 3339"),
    ("occurred_at no such day", {"occurred_at": "2026-02-30T12:00:00Z"}, "occurred_at", "RFC 3339"),
    (
        "occurred_at naive datetime",
        {"occurred_at": datetime(2026, 10, 1, 12)},
        "occurred_at",
        "must have a timezone",
    ),
    (
        "occurred_at before 1970",
        {"occurred_at": "1969-12-31T23:59:59.999Z"},
        "occurred_at",
        "must be between 1970-01-01T00:00:00Z (inclusive) and 2200-01-01T00:00:00Z (exclusive)",
    ),
    ("occurred_at 2200", {"occurred_at": "2200-01-01T00:00:00Z"}, "occurred_at", "between 1970"),
    (
        "occurred_at datetime 1969",
        {"occurred_at": datetime(1969, 1, 1, tzinfo=UTC)},
        "occurred_at",
        "between 1970",
    ),
    ("sent_at bad", {"sent_at": "now"}, "sent_at", "RFC 3339"),
    ("sent_at before 1970", {"sent_at": "1900-01-01T00:00:00Z"}, "sent_at", "between 1970"),
    ("actor missing", {"actor": DROP}, "actor", "required"),
    ("actor string", {"actor": "u-42"}, "actor", "must be an object"),
    ("actor type missing", {"actor": {"id": "u-42"}}, "actor.type", "required"),
    ("actor id empty", {"actor": {"type": "user", "id": ""}}, "actor.id", "must not be empty"),
    (
        "actor id too long",
        {"actor": {"type": "user", "id": "x" * 257}},
        "actor.id",
        "at most 256 characters",
    ),
    ("actor id int", {"actor": {"type": "user", "id": 42}}, "actor.id", "must be a string"),
    (
        "actor extra key",
        {"actor": {"type": "user", "id": "u", "name": "Ann"}},
        "actor.name",
        "unknown field",
    ),
    ("object type empty", {"object": {"type": "", "id": "m"}}, "object.type", "must not be empty"),
    ("target id missing", {"target": {"type": "account"}}, "target.id", "required"),
    ("verb missing", {"verb": DROP}, "verb", "required"),
    ("verb upper", {"verb": "Replied"}, "verb", "must match [a-z][a-z0-9_.-]{0,63}"),
    ("verb digit first", {"verb": "1x"}, "verb", "must match"),
    ("verb too long", {"verb": "a" * 65}, "verb", "must match"),
    ("channel upper", {"channel": "Email"}, "channel", "must match [a-z][a-z0-9_-]{0,31}"),
    ("channel too long", {"channel": "e" * 33}, "channel", "must match"),
    ("channel dot", {"channel": "e.mail"}, "channel", "must match"),
    ("context_id empty", {"context_id": ""}, "context_id", "must not be empty"),
    ("context_id too long", {"context_id": "c" * 257}, "context_id", "at most 256 characters"),
    ("in_reply_to too long", {"in_reply_to": "r" * 257}, "in_reply_to", "at most 256 characters"),
    ("in_reply_to int", {"in_reply_to": 5}, "in_reply_to", "must be a string"),
    ("event_id not uuid", {"event_id": "nope"}, "event_id", "must be a UUID"),
    ("event_id short", {"event_id": EVENT_ID[:-1]}, "event_id", "must be a UUID"),
    ("event_id int", {"event_id": 5}, "event_id", "must be a UUID"),
    ("tags string", {"tags": "bikes"}, "tags", "must be a list"),
    ("tags too many", {"tags": [f"t{i}" for i in range(33)]}, "tags", "at most 32 items (got 33)"),
    ("tag upper", {"tags": ["ok", "Bikes"]}, "tags[1]", "must match [a-z0-9][a-z0-9_-]{0,63}"),
    ("tag empty", {"tags": [""]}, "tags[0]", "must match"),
    ("tag int", {"tags": [1]}, "tags[0]", "must be a string"),
    ("weight nan", {"weight": float("nan")}, "weight", "must be finite"),
    ("weight inf", {"weight": float("inf")}, "weight", "must be finite"),
    ("weight too big", {"weight": 1e12 + 1}, "weight", "must be <= 1e+12"),
    ("weight too small", {"weight": -2e12}, "weight", "must be >= -1e+12"),
    ("weight bool", {"weight": True}, "weight", "must be a number"),
    ("weight str", {"weight": "1.0"}, "weight", "must be a number"),
    ("properties list", {"properties": [1]}, "properties", "must be an object"),
    (
        "properties too many",
        {"properties": {f"k{i}": i for i in range(65)}},
        "properties",
        "at most 64 items (got 65)",
    ),
    ("property key empty", {"properties": {"": 1}}, "properties", "key must not be empty"),
    (
        "property key too long",
        {"properties": {"k" * 129: 1}},
        "properties",
        "key must have at most 128 characters",
    ),
    ("property nested", {"properties": {"a": {"b": 1}}}, "properties.a", "must be a string"),
    ("property list", {"properties": {"a": [1]}}, "properties.a", "a bool, an integer"),
    ("property null", {"properties": {"a": None}}, "properties.a", "a finite float"),
    ("property long str", {"properties": {"a": "x" * 1025}}, "properties.a", "at most 1024"),
    ("property int64+", {"properties": {"a": 2**63}}, "properties.a", "integer within int64"),
    ("property int64-", {"properties": {"a": -(2**63) - 1}}, "properties.a", "within int64"),
    ("property nan", {"properties": {"a": float("nan")}}, "properties.a", "finite float"),
    ("extra top-level", {"foo": 1}, "foo", "unknown field"),
    ("camelCase field", {"occurredAt": "2026-10-01T12:00:00Z"}, "occurredAt", "unknown field"),
]


@pytest.mark.parametrize(
    ("changes", "field", "rule"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_field_names_field_and_rule(changes: dict[str, Any], field: str, rule: str) -> None:
    message = errors_of(event(**changes))
    assert message.startswith(f"{field}: "), message
    assert rule in message, message
    assert ";" not in message, f"one problem expected, got: {message}"


@pytest.mark.parametrize(
    ("changes", "field", "rule"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_validate_record_rejects_the_same(changes: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(ContractError) as caught:
        validate_record(event(**changes))
    assert str(caught.value).startswith(f"{field}: ")
    assert rule in str(caught.value)
    assert caught.value.errors, "the structured errors are kept"


def test_message_example_from_the_contract() -> None:
    assert errors_of(event(tenant="ACME")) == (
        "tenant: must match [a-z0-9][a-z0-9_-]{0,63} (got 'ACME')"
    )


def test_every_problem_is_reported_on_its_own_line() -> None:
    message = errors_of(event(tenant="ACME", verb=DROP, weight="x"))
    assert message.split("; ") == [
        "tenant: must match [a-z0-9][a-z0-9_-]{0,63} (got 'ACME')",
        "verb: required",
        "weight: must be a number (not a string or bool) (got 'x')",
    ]


def test_long_inputs_are_shortened_in_messages() -> None:
    message = errors_of(event(context_id="c" * 1000))
    assert len(message) < 150


def test_not_an_object() -> None:
    with pytest.raises(ValidationError) as caught:
        Event.model_validate(["not", "an", "event"])
    assert format_validation_error(caught.value).startswith("event: must be an object")


# -- valid edge cases ----------------------------------------------------------------------------
def test_minimal_event_gets_defaults() -> None:
    e = Event.model_validate(
        {
            "tenant": "a",
            "occurred_at": "2026-10-01T12:00:00Z",
            "actor": {"type": "u", "id": "1"},
            "verb": "v",
        }
    )
    assert e.event_id is None
    assert (e.sent_at, e.object, e.target, e.channel, e.context_id, e.in_reply_to) == (None,) * 6
    assert e.tags == []
    assert e.weight == 1.0
    assert e.properties == {}


def test_nulls_mean_absent() -> None:
    names = ["event_id", "sent_at", "object", "target", "channel", "context_id", "in_reply_to"]
    e = Event.model_validate(event(**dict.fromkeys(names)))
    assert all(getattr(e, name) is None for name in names)


def test_offset_is_converted_to_utc() -> None:
    e = Event.model_validate(event(occurred_at="2026-10-01T17:30:00.250+05:30"))
    assert e.occurred_at == datetime(2026, 10, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    assert e.occurred_at.tzinfo is UTC
    e = Event.model_validate(event(occurred_at="2026-10-01T00:00:00-08:00"))
    assert e.occurred_at == datetime(2026, 10, 1, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected_us"),
    [
        ("2026-10-01T12:00:00.123456Z", 123_000),
        ("2026-10-01T12:00:00.999999999Z", 999_000),
        ("2026-10-01T12:00:00.1Z", 100_000),
        ("2026-10-01T12:00:00Z", 0),
    ],
)
def test_milliseconds_are_truncated(text: str, expected_us: int) -> None:
    assert Event.model_validate(event(occurred_at=text)).occurred_at.microsecond == expected_us


@pytest.mark.parametrize(
    "text", ["2026-10-01t12:00:00z", "2026-10-01 12:00:00Z", "2026-10-01T12:00:00-00:00"]
)
def test_rfc3339_variants(text: str) -> None:
    assert Event.model_validate(event(occurred_at=text)).occurred_at == datetime(
        2026, 10, 1, 12, tzinfo=UTC
    )


def test_aware_datetimes_are_accepted_and_truncated() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    given = datetime(2026, 10, 1, 17, 30, 0, 123_456, tzinfo=ist)
    e = Event.model_validate(event(occurred_at=given, sent_at=given))
    assert e.occurred_at == e.sent_at == datetime(2026, 10, 1, 12, 0, 0, 123_000, tzinfo=UTC)


def test_range_edges() -> None:
    assert Event.model_validate(event(occurred_at="1970-01-01T00:00:00Z")).occurred_at == (
        datetime(1970, 1, 1, tzinfo=UTC)
    )
    late = Event.model_validate(event(occurred_at="2199-12-31T23:59:59.999Z")).occurred_at
    assert late == datetime(2199, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)


@pytest.mark.parametrize(
    "given",
    [
        EVENT_ID.upper(),
        "{" + EVENT_ID + "}",
        "urn:uuid:" + EVENT_ID,
        EVENT_ID.replace("-", ""),
        uuid.UUID(EVENT_ID),
    ],
)
def test_event_id_is_normalised(given: Any) -> None:
    assert Event.model_validate(event(event_id=given)).event_id == EVENT_ID
    assert validate_record(event(event_id=given))["event_id"] == EVENT_ID


def test_any_uuid_version() -> None:
    for u in (uuid.uuid1(), uuid.uuid4(), uuid.UUID(int=0)):
        assert Event.model_validate(event(event_id=str(u))).event_id == str(u)


def test_unicode_ids_and_values() -> None:
    e = Event.model_validate(
        event(
            actor={"type": "usuário", "id": "Zoë 🚲 " + "ü" * 240},
            context_id="スレッド-55",
            properties={"città": "Zürich", "emoji": "🚲" * 1024},
        )
    )
    assert e.actor.id.startswith("Zoë 🚲")
    assert e.properties["emoji"] == "🚲" * 1024  # limits count characters, not bytes


def test_property_types_are_kept() -> None:
    props = {"s": "x", "i": 12, "f": 12.0, "t": True, "b": False, "neg": -(2**63), "max": 2**63 - 1}
    e = Event.model_validate(event(properties=props))
    assert e.properties == props
    assert [type(v) for v in e.properties.values()] == [str, int, float, bool, bool, int, int]


def test_bool_is_not_a_number() -> None:
    e = Event.model_validate(event(properties={"flag": True, "one": 1}))
    assert e.properties["flag"] is True
    assert type(e.properties["one"]) is int
    assert "weight: must be a number" in errors_of(event(weight=False))


def test_int_weight_becomes_float() -> None:
    e = Event.model_validate(event(weight=3))
    assert e.weight == 3.0
    assert type(e.weight) is float
    assert Event.model_validate(event(weight=-1e12)).weight == -1e12


def test_tags_accept_any_sequence_and_keep_order() -> None:
    assert Event.model_validate(event(tags=("b", "a", "b"))).tags == ["b", "a", "b"]
    assert Event.model_validate(event(tags=[f"t{i}" for i in range(32)])).tags[-1] == "t31"


def test_limits_are_inclusive() -> None:
    Event.model_validate(
        event(
            tenant="a" * 64,
            verb="v" * 64,
            channel="c" * 32,
            actor={"type": "t" * 256, "id": "i" * 256},
            context_id="c" * 256,
            in_reply_to="r" * 256,
            properties={"k" * 128: "v" * 1024, **{f"k{i}": i for i in range(63)}},
        )
    )


def test_entities_may_be_models() -> None:
    e = Event.model_validate(event(actor=Entity(type="user", id="u-42")))
    assert e.actor == Entity(type="user", id="u-42")


def test_str_enums_become_plain_strings() -> None:
    class Verb(StrEnum):
        REPLIED = "replied"

    # A str subclass is a string: accepted, and kept as a plain str.
    assert type(Event.model_validate(event(verb=Verb.REPLIED)).verb) is str
    assert type(validate_record(event(verb=Verb.REPLIED))["verb"]) is str


# -- conversions ---------------------------------------------------------------------------------
def test_to_json_dict_is_canonical() -> None:
    e = Event.model_validate(event(occurred_at="2026-10-01T17:30:00.123456+05:30"))
    out = e.to_json_dict()
    assert out["occurred_at"] == "2026-10-01T12:00:00.123Z"
    assert out["sent_at"] == "2026-10-01T12:00:01.000Z"
    assert out["actor"] == {"type": "user", "id": "u-42"}
    assert Event.model_validate(out) == e
    assert json.loads(json.dumps(out)) == out


def test_to_json_dict_leaves_out_nones() -> None:
    e = Event.model_validate(event(object=DROP, channel=None, event_id=DROP, sent_at=DROP))
    out = e.to_json_dict()
    assert "object" not in out
    assert "channel" not in out
    assert "event_id" not in out
    assert "sent_at" not in out


def test_to_record_needs_an_event_id() -> None:
    with pytest.raises(ContractError, match="event_id: required on the wire"):
        Event.model_validate(event(event_id=DROP)).to_record()


def test_from_record_validates() -> None:
    record = Event.model_validate(event()).to_record()
    with pytest.raises(ContractError, match="tenant: must match"):
        Event.from_record({**record, "tenant": "ACME"})
    with pytest.raises(ContractError, match="occurred_at"):
        Event.from_record({**record, "occurred_at": -1})
    with pytest.raises(ContractError, match=r"object\.type: must be a string"):
        Event.from_record({**record, "object_type": None})


# -- JSON lines ----------------------------------------------------------------------------------
def test_json_line_round_trip() -> None:
    e = Event.model_validate(event())
    assert event_from_json_line(json.dumps(e.to_json_dict())) == e
    assert event_from_json_line(json.dumps(event()).encode()) == e


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", "event: invalid JSON"),
        ("{not json", "event: invalid JSON"),
        ("[1, 2]", "event: must be an object"),
        ('{"tenant": "ACME"}', "tenant: must match"),
        ('{"tenant": 5}', "tenant: must be a string"),
    ],
)
def test_bad_json_lines(line: str, expected: str) -> None:
    with pytest.raises(ContractError) as caught:
        event_from_json_line(line)
    assert str(caught.value).startswith(expected), str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("1700000000", "RFC 3339"),
        ("2026-10-01", "RFC 3339"),
        (1700000000, "RFC 3339"),
        ("2026-10-01T12:00:00", "RFC 3339"),
    ],
)
def test_json_timestamps_follow_the_same_rule(value: Any, rule: str) -> None:
    with pytest.raises(ContractError, match=rule):
        event_from_json_line(json.dumps(event(occurred_at=value)))


def test_json_properties_keep_types() -> None:
    line = '{"tenant":"a","occurred_at":"2026-10-01T12:00:00Z","actor":{"type":"u","id":"1"},'
    line += '"verb":"v","properties":{"i":12,"f":12.0,"t":true,"s":"x"}}'
    props = event_from_json_line(line).properties
    assert props == {"i": 12, "f": 12.0, "t": True, "s": "x"}
    assert [type(v) for v in props.values()] == [int, float, bool, str]


def test_json_big_int_property_is_rejected_not_made_float() -> None:
    line = json.dumps(event(properties={"n": 2**64}))
    with pytest.raises(ContractError, match=r"properties\.n: .*integer within int64"):
        event_from_json_line(line)


def test_json_schema_can_be_generated() -> None:
    schema = Event.model_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"tenant", "occurred_at", "actor", "verb"}
    assert schema["properties"]["tenant"]["pattern"] == "^[a-z0-9][a-z0-9_-]{0,63}$"

"""The client's encoder (`encode_validated`: a validated EventDict straight to wire bytes)
writes exactly what fastavro writes for the same record, on random valid events at the
contract's edges: unicode, maximal lengths and counts, absent and null optionals, every
property type, timestamps across the varint sizes."""

from __future__ import annotations

import io
import random
import string
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer

from rhythm.schemas import SchemaCatalogue, avro_writer, decode_event, rules
from rhythm.schemas.event import record_of, validate_event_dict
from rhythm.schemas.wire import WIRE, WireFormat, encode_validated

from .test_wire import LOCALE, _write_schema

ASCII_ID = string.ascii_letters + string.digits + "-_.:@/ "
UNICODE = "éüß中文🚲\u0000\n\u00ff\u0100\u07ff\u0800\uffff"
PATTERN_CHARS = string.ascii_lowercase + string.digits + "_-"


def _text(rng: random.Random, longest: int, unicode: bool) -> str:
    size = rng.choice([1, 2, 31, 32, 63, 64, 65, 127, 128, longest, rng.randint(1, longest)])
    size = min(size, longest)
    alphabet = ASCII_ID + (UNICODE if unicode else "")
    return "".join(rng.choice(alphabet) for _ in range(size))


def _name(rng: random.Random, first: str, longest: int) -> str:
    """A string of the tenant/verb/channel/tag patterns, up to `longest` characters."""
    size = rng.choice([1, 2, longest - 1, longest, rng.randint(1, longest)])
    return rng.choice(first) + "".join(rng.choice(PATTERN_CHARS) for _ in range(size - 1))


def _instant(rng: random.Random) -> datetime:
    ms = rng.choice(
        [
            0,
            1,
            31,
            32,
            2**33 - 1,
            2**33,  # 2**34 on the wire: where the straight-line varint starts
            2**40,
            2**41 - 1,
            2**41,  # 2**42 on the wire: seven varint bytes from here
            1_790_856_000_123,
            7_258_118_399_999,  # the last millisecond before 2200
            rng.randrange(0, 7_258_118_400_000),
        ]
    )
    return rules.EPOCH + timedelta(milliseconds=ms, microseconds=rng.choice([0, 999]))


def _timestamp(rng: random.Random) -> Any:
    instant = _instant(rng)
    form = rng.randrange(3)
    if form == 0:
        return instant
    if form == 1:
        offset = timezone(timedelta(hours=rng.choice([-12, 0, 5, 14]), minutes=rng.choice([0, 30])))
        return instant.astimezone(offset)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _property(rng: random.Random, unicode: bool) -> Any:
    return rng.choice(
        [
            _text(rng, rules.MAX_PROPERTY_STRING_LEN, unicode),
            "",
            True,
            False,
            0,
            63,
            -64,
            64,
            -65,
            rng.randint(-1000, 1000),
            rules.INT64_MAX,
            rules.INT64_MIN,
            rng.randint(rules.INT64_MIN, rules.INT64_MAX),
            0.0,
            -0.0,
            1e-300,
            0.5,
            rng.uniform(-1e300, 1e300),
        ]
    )


def random_event(rng: random.Random) -> dict[str, Any]:
    """A canonical JSON event that passes validation; each optional part may be absent or
    null, and each string may be non-ASCII, long, or at its maximum."""
    unicode = rng.random() < 0.3

    def entity() -> dict[str, str]:
        return {
            "type": _text(rng, rules.MAX_ENTITY_LEN, unicode),
            "id": _text(rng, rules.MAX_ENTITY_LEN, unicode),
        }

    event: dict[str, Any] = {
        "tenant": _name(rng, string.ascii_lowercase + string.digits, 64),
        "occurred_at": _timestamp(rng),
        "actor": entity(),
        "verb": _name(rng, string.ascii_lowercase, 64),
    }
    optional: dict[str, Any] = {
        "event_id": "%08x-%04x-%04x-%04x-%012x"  # noqa: UP031
        % tuple(rng.getrandbits(bits) for bits in (32, 16, 16, 16, 48)),
        "sent_at": _timestamp(rng),
        "object": entity(),
        "target": entity(),
        "channel": _name(rng, string.ascii_lowercase, 32),
        "context_id": _text(rng, rules.MAX_REF_LEN, unicode),
        "in_reply_to": _text(rng, rules.MAX_REF_LEN, unicode),
        "tags": [
            _name(rng, string.ascii_lowercase + string.digits, 64)
            for _ in range(rng.choice([0, 1, 2, rules.MAX_TAGS]))
        ],
        "weight": rng.choice(
            [1.0, 0.0, -0.0, 2, rules.MAX_ABS_WEIGHT, -rules.MAX_ABS_WEIGHT, rng.random() * 100]
        ),
        "properties": {
            _text(rng, rules.MAX_PROPERTY_KEY_LEN - 2, unicode) + str(i): _property(rng, unicode)
            for i in range(rng.choice([0, 1, 2, 5, 63, rules.MAX_PROPERTIES]))
        },
    }
    for name, value in optional.items():
        choice = rng.random()
        if choice < 0.6:
            event[name] = value
        elif choice < 0.8 and name not in ("tags", "weight", "properties"):
            event[name] = None  # null is absent
    return event


def fastavro_bytes(record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, WIRE.current.plain, record)
    return b"\x00\x00\x00\x00\x01" + buffer.getvalue()


def _expected_record(valid: Any, event_id: str, sent_at: int) -> dict[str, Any]:
    record = record_of(valid)
    record["event_id"] = event_id
    record["sent_at"] = sent_at
    return record


def test_matches_fastavro_byte_for_byte_on_random_valid_events() -> None:
    rng = random.Random(20261206)
    runs = fallbacks = 0
    for _ in range(3000):
        valid = validate_event_dict(random_event(rng))
        event_id = valid.get("event_id") or "0190a8b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b"
        sent_at = rules.epoch_millis(_instant(rng))
        got = encode_validated(valid, event_id, sent_at)
        record = _expected_record(valid, event_id, sent_at)
        assert got == fastavro_bytes(record), valid
        assert decode_event(got) == record
        strings = [record[name] or "" for name in ("actor_type", "actor_id", "context_id")]
        if all(s.isascii() and len(s) < 64 for s in strings):
            runs += 1
        else:
            fallbacks += 1
    # the random events went both ways: str runs, and field by field
    assert runs > 300 and fallbacks > 300


def test_typical_event() -> None:
    event = {
        "tenant": "acme",
        "occurred_at": "2026-10-01T12:00:00.123Z",
        "actor": {"type": "user", "id": "u-42"},
        "verb": "replied",
        "object": {"type": "message", "id": "m-1"},
        "target": {"type": "account", "id": "acct-7"},
        "channel": "email",
        "context_id": "thread-55",
        "tags": ["launch-q4", "bikes"],
        "weight": 2.5,
        "properties": {"plan": "pro", "seats": 12, "ratio": 0.5, "trial": False, "n": 10**12},
    }
    valid = validate_event_dict(event)
    event_id = "0190a8b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b"
    got = encode_validated(valid, event_id, 1_790_856_001_000)
    assert got == fastavro_bytes(_expected_record(valid, event_id, 1_790_856_001_000))


@pytest.mark.parametrize(
    "changes",
    [
        {"actor": {"type": "user", "id": "Zoë"}},  # non-ASCII: its length in bytes differs
        {"actor": {"type": "user", "id": "u" * 64}},  # a two-byte length
        {"context_id": "中" * 256},
        {"tags": [f"t{i}" for i in range(32)]},
        {"properties": {"k": "é"}},
        {"properties": {"k" * 128: "v" * 1024}},
        {"properties": {f"k{i}": i for i in range(64)}},  # 64 entries: a two-byte count
        {"properties": {"é": 1.5, "x": 2**40}},
        {"properties": {"a": 1.5, "b": "é"}},  # the last run is the non-ASCII one
        {"properties": {"a": -64, "b": 63, "c": -65, "d": 64, "e": True}},
        {"object": None, "target": None, "channel": None, "tags": [], "properties": {}},
        {"occurred_at": "1970-01-01T00:00:00Z"},
        {"occurred_at": "2199-12-31T23:59:59.999Z"},
    ],
)
def test_edges(changes: dict[str, Any]) -> None:
    event = {
        "tenant": "acme",
        "occurred_at": "2026-10-01T12:00:00.123Z",
        "actor": {"type": "user", "id": "u-42"},
        "verb": "replied",
        "object": {"type": "message", "id": "m-1"},
        "tags": ["a"],
        "properties": {"plan": "pro"},
    } | changes
    valid = validate_event_dict(event)
    event_id = "0190a8b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b"
    got = encode_validated(valid, event_id, 1_790_856_001_000)
    assert got == fastavro_bytes(_expected_record(valid, event_id, 1_790_856_001_000))


def test_long_varints_match_the_general_loop() -> None:
    rng = random.Random(11)
    values = [0, 1, -1, 63, 64, -65, 2**34 - 1, 2**34, 2**41, 2**42 - 1, 2**42, 2**48 - 1]
    values += [2**48, 2**63 - 1, -(2**63)]
    values += [rng.randrange(2**33, 2**49) for _ in range(20000)]
    for value in values:
        assert avro_writer._long(value) == avro_writer._zigzag_varint(value), value


def test_string_runs_cover_every_validated_length() -> None:
    longest = max(
        rules.MAX_ENTITY_LEN,
        rules.MAX_REF_LEN,
        rules.MAX_PROPERTY_KEY_LEN,
        rules.MAX_PROPERTY_STRING_LEN,
        rules.MAX_TAGS,
        rules.MAX_PROPERTIES,
    )
    assert len(avro_writer._LEN) > longest


def test_another_schema_falls_back_to_the_record(tmp_path: Path) -> None:
    _write_schema(tmp_path, 1, 1, [])
    _write_schema(tmp_path, 2, 2, [LOCALE])
    evolved = WireFormat(SchemaCatalogue.load(tmp_path))
    assert not evolved.fast_encoder
    valid = validate_event_dict(
        {
            "tenant": "acme",
            "occurred_at": "2026-10-01T12:00:00.123Z",
            "actor": {"type": "user", "id": "u-42"},
            "verb": "replied",
        }
    )
    event_id = "0190a8b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b"
    data = evolved.encode_validated(valid, event_id, 5)
    assert data == evolved.encode(_expected_record(valid, event_id, 5))
    assert data[:5] == b"\x00\x00\x00\x00\x02"


def test_aware_datetimes_in_any_offset_give_the_same_bytes() -> None:
    base = datetime(2026, 10, 1, 12, 0, 0, 123456, tzinfo=UTC)
    event = {"tenant": "acme", "actor": {"type": "u", "id": "1"}, "verb": "v"}
    outputs = {
        encode_validated(validate_event_dict(event | {"occurred_at": when}), "x" * 36, 7)
        for when in (
            base,
            base.astimezone(timezone(timedelta(hours=5, minutes=30))),
            "2026-10-01T12:00:00.123456Z",
            "2026-10-01T07:00:00.1239-05:00",
        )
    }
    assert len(outputs) == 1


def test_the_send_time_memo_follows_the_value() -> None:
    valid = validate_event_dict(
        {
            "tenant": "acme",
            "occurred_at": "2026-10-01T12:00:00.123Z",
            "actor": {"type": "user", "id": "u-42"},
            "verb": "replied",
        }
    )
    event_id = "0190a8b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b"
    for sent_at in [1_790_856_001_000, 1_790_856_001_000, 1_790_856_001_001, 5, 5, 2**48, 0]:
        got = encode_validated(valid, event_id, sent_at)
        assert got == fastavro_bytes(_expected_record(valid, event_id, sent_at))
        assert decode_event(got)["sent_at"] == sent_at


def test_occurred_at_in_any_zone_in_any_order() -> None:
    """The epoch is kept in the last fixed-offset zone seen; a zone with daylight saving
    time (whose same-zone differences are wall time) is never kept."""
    try:
        from zoneinfo import ZoneInfo

        berlin: Any = ZoneInfo("Europe/Berlin")
    except Exception:  # no time zone database on this machine
        berlin = None
    winter = datetime(2026, 1, 15, 12, 0, 0, 1000, tzinfo=UTC)
    summer = datetime(2026, 7, 15, 12, 0, 0, 999_999, tzinfo=UTC)
    zones: list[Any] = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)), berlin]
    times: list[Any] = [
        instant.astimezone(zone)
        for zone in zones
        if zone is not None
        for instant in (winter, summer)
    ]
    times += ["2026-01-15T12:00:00.001Z", "2026-07-15T14:00:00.999999+02:00"]
    rng = random.Random(3)
    event = {"tenant": "acme", "actor": {"type": "u", "id": "1"}, "verb": "v"}
    for when in rng.choices(times, k=400):
        valid = validate_event_dict(event | {"occurred_at": when})
        got = encode_validated(valid, "x" * 36, 7)
        assert got == fastavro_bytes(_expected_record(valid, "x" * 36, 7))
        assert decode_event(got)["occurred_at"] in (
            rules.epoch_millis(winter),
            rules.epoch_millis(summer),
        )

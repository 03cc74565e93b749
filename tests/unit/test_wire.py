"""The wire format: header, encode/decode, errors, the schema catalogue and its evolution."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import random
import struct
from pathlib import Path
from typing import Any, cast, get_args

import pytest
from fastavro import schemaless_reader, schemaless_writer

from rhythm.schemas import (
    CURRENT_SCHEMA_ID,
    CatalogueError,
    ContractError,
    Event,
    SchemaCatalogue,
    SchemaVersion,
    WireError,
    WireReason,
    avro_reader,
    avro_writer,
    decode_event,
    encode_event,
    schema_json,
)
from rhythm.schemas.catalogue import strip_logical_types
from rhythm.schemas.wire import WIRE, WireFormat

AVRO_DIR = Path(__file__).resolve().parents[2] / "schemas" / "rhythm" / "schemas" / "avro"


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "0190a8b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b",
        "tenant": "acme",
        "occurred_at": 1_790_856_000_123,
        "sent_at": 1_790_856_001_000,
        "actor_type": "user",
        "actor_id": "u-42",
        "verb": "replied",
        "object_type": "message",
        "object_id": "m-1",
        "target_type": "account",
        "target_id": "acct-7",
        "channel": "email",
        "context_id": "thread-55",
        "in_reply_to": None,
        "tags": ["launch-q4", "bikes"],
        "weight": 1.0,
        "properties": {"plan": "pro", "seats": 12, "ratio": 0.5, "trial": False},
    }
    return base | changes


def fastavro_body(rec: dict[str, Any], version: SchemaVersion | None = None) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, (version or WIRE.current).plain, rec)
    return buffer.getvalue()


# -- encode and decode ---------------------------------------------------------------------------
def test_header_is_magic_and_schema_id() -> None:
    data = encode_event(record())
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == CURRENT_SCHEMA_ID == 1


def test_round_trip() -> None:
    rec = record()
    assert decode_event(encode_event(rec)) == rec


def test_decode_returns_int_milliseconds() -> None:
    out = decode_event(encode_event(record()))
    assert type(out["occurred_at"]) is int
    assert type(out["sent_at"]) is int
    assert out["occurred_at"] == 1_790_856_000_123
    assert decode_event(encode_event(record(sent_at=None)))["sent_at"] is None


def test_decode_accepts_any_bytes_like() -> None:
    data = encode_event(record())
    assert decode_event(bytearray(data)) == decode_event(memoryview(data)) == record()


def test_missing_optional_fields_take_their_defaults() -> None:
    rec = record()
    optional = ["sent_at", "object_type", "object_id", "channel", "tags", "weight", "properties"]
    for name in optional:
        del rec[name]
    out = decode_event(encode_event(rec))
    assert out["sent_at"] is None
    assert (out["tags"], out["weight"], out["properties"]) == ([], 1.0, {})


def test_property_types_survive_the_wire() -> None:
    props = {"s": "x", "i": 1, "f": 1.0, "t": True, "n": -(2**63), "big": 2**63 - 1}
    out = decode_event(encode_event(record(properties=props)))["properties"]
    assert out == props
    assert [type(v) for v in out.values()] == [str, int, float, bool, int, int]


def test_event_round_trip_through_bytes() -> None:
    e = Event.model_validate(
        {
            "event_id": "0190a8b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b",
            "tenant": "acme",
            "occurred_at": "2026-10-01T17:30:00.123+05:30",
            "actor": {"type": "user", "id": "Zoë"},
            "verb": "replied",
        }
    )
    assert Event.from_record(decode_event(encode_event(e.to_record()))) == e


# -- the hand-written encoder ---------------------------------------------------------------------
def test_fast_encoder_covers_the_current_schema() -> None:
    assert WIRE.fast_encoder, (
        "avro_writer.LAYOUT no longer matches the current schema: events are encoded by the "
        "slower fastavro path. Teach avro_writer.py the new layout."
    )


def _random_string(rng: random.Random) -> str:
    alphabet = "abcXYZ09-_ éüß中文🚲\u0000\n"
    return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 63, 64, 200])))


def _random_long(rng: random.Random) -> int:
    edges = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, 1_790_856_000_123, 2**63 - 1, -(2**63)]
    return rng.choice([*edges, rng.randint(-(2**63), 2**63 - 1)])


def _random_record(rng: random.Random) -> dict[str, Any]:
    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.3 else value

    values: list[Any] = [
        _random_string(rng),
        _random_long(rng),
        rng.uniform(-1e12, 1e12),
        rng.random() < 0.5,
    ]
    rec: dict[str, Any] = {
        "event_id": _random_string(rng),
        "tenant": _random_string(rng),
        "occurred_at": _random_long(rng),
        "sent_at": maybe(_random_long(rng)),
        "actor_type": _random_string(rng),
        "actor_id": _random_string(rng),
        "verb": _random_string(rng),
        "tags": [_random_string(rng) for _ in range(rng.choice([0, 1, 2, 63, 64, 70]))],
        "weight": rng.choice([1.0, -0.0, 1e-300, rng.uniform(-1e12, 1e12), float("nan")]),
        "properties": {
            _random_string(rng) + str(i): rng.choice(values)
            for i in range(rng.choice([0, 1, 4, 64, 65]))
        },
    }
    for name in ["object_type", "object_id", "target_type", "target_id", "channel"]:
        rec[name] = maybe(_random_string(rng))
    for name in ["context_id", "in_reply_to"]:
        if rng.random() < 0.5:
            rec[name] = maybe(_random_string(rng))  # sometimes absent altogether
    return rec


def test_fast_encoder_matches_fastavro_byte_for_byte() -> None:
    rng = random.Random(20261001)
    for _ in range(500):
        rec = _random_record(rng)
        assert avro_writer.encode_body(rec) == fastavro_body(rec), rec


def fastavro_decode(body: bytes) -> tuple[dict[str, Any], int]:
    buffer = io.BytesIO(body)
    rec = schemaless_reader(buffer, WIRE.current.plain, None)
    return cast(dict[str, Any], rec), buffer.tell()


def fast_decode(body: bytes) -> tuple[dict[str, Any], int] | None:
    try:
        return avro_reader.decode_body(body, 0)
    except Exception:
        return None  # refused: wire.py then asks fastavro


def test_fast_decoder_matches_fastavro() -> None:
    assert WIRE.fast_decoder  # the current schema is read by avro_reader
    rng = random.Random(20261122)
    for _ in range(500):
        body = fastavro_body(_random_record(rng))
        got = avro_reader.decode_body(body, 0)
        want = fastavro_decode(body)
        # NaN != NaN: compare the records' bytes when written again
        assert fastavro_body(got[0]) == fastavro_body(want[0]) and got[1] == want[1] == len(body)
        assert list(got[0]) == list(want[0])


def test_fast_decoder_refuses_or_agrees_on_corrupt_bytes() -> None:
    # It may refuse anything (fastavro then decides), but what it accepts must be exactly
    # what fastavro reads from the same bytes.
    rng = random.Random(3)
    bodies = [fastavro_body(record()), fastavro_body(record(sent_at=None, tags=[], weight=2.5))]
    bodies += [b for b in (fastavro_body(_random_record(rng)) for _ in range(50)) if len(b) < 600]
    accepted = 0
    for body in bodies:
        for i in range(len(body)):
            for value in (0x00, 0x01, 0x02, 0x03, 0x06, 0x7F, 0x80, 0xFF):
                corrupt = body[:i] + bytes([value]) + body[i + 1 :]
                got = fast_decode(corrupt)
                if got is None:
                    continue
                accepted += 1
                want = fastavro_decode(corrupt)
                assert fastavro_body(got[0]) == fastavro_body(want[0]) and got[1] == want[1]
        for end in range(len(body)):
            assert fast_decode(body[:end]) is None or fastavro_decode(body[:end])
    assert accepted > 0


def test_fast_encoder_handles_subclasses_like_fastavro() -> None:
    class Flag(int):
        pass

    rec = record(properties={"n": Flag(3), "f": True}, tags=("a", "b"), weight=2)
    assert avro_writer.encode_body(rec) == fastavro_body(rec)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"event_id": None}, "event_id"),
        ({"tenant": 5}, "tenant"),
        ({"occurred_at": "2026-10-01T12:00:00Z"}, "occurred_at"),
        ({"occurred_at": 2**63}, "occurred_at"),
        ({"weight": "heavy"}, "weight"),
        ({"tags": [1]}, "tags"),
        ({"properties": {"a": [1]}}, "properties"),
        ({"properties": {"a": None}}, "properties"),
    ],
)
def test_unencodable_records_raise_contract_error(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(ContractError) as caught:
        encode_event(record(**changes))
    assert "schema id 1" in str(caught.value)
    assert named in str(caught.value)


def test_missing_required_field_raises_contract_error() -> None:
    rec = record()
    del rec["verb"]
    with pytest.raises(ContractError, match="verb"):
        encode_event(rec)


# -- wire errors ---------------------------------------------------------------------------------
GOOD = encode_event(record())


@pytest.mark.parametrize(
    ("data", "reason", "says"),
    [
        (b"", "empty", "no bytes"),
        (b"\x00\x00\x00", "too_short", "3 byte(s)"),
        (b'{"tenant": "acme"}', "bad_magic", "0x7b"),
        (b"\xff" + GOOD[1:], "bad_magic", "0xff"),
        (b"\x00\x00\x00\x00\x63" + GOOD[5:], "unknown_schema_id", "schema id 99"),
        (b"\x00\xff\xff\xff\xff" + GOOD[5:], "unknown_schema_id", "4294967295"),
        (GOOD[:5], "bad_avro", "offset"),
        (GOOD[:-1], "bad_avro", "offset"),
        (GOOD + b"\x00", "bad_avro", "1 trailing byte(s)"),
        (GOOD[:6] + b"\xff" * 36 + GOOD[42:], "bad_avro", "UnicodeDecodeError"),
        (GOOD[:5] + b"\x01" + GOOD[6:], "bad_avro", "schema id 1"),
    ],
    ids=[
        "empty",
        "too_short",
        "json",
        "bad_magic",
        "unknown_id",
        "max_id",
        "header_only",
        "truncated",
        "trailing",
        "bad_utf8",
        "negative_length",
    ],
)
def test_wire_errors(data: bytes, reason: str, says: str) -> None:
    with pytest.raises(WireError) as caught:
        decode_event(data)
    assert caught.value.reason == reason
    assert says in str(caught.value)
    assert str(caught.value).startswith(f"{reason}: ")


def test_reasons_are_the_documented_set() -> None:
    assert set(get_args(WireReason)) == {
        "empty",
        "too_short",
        "bad_magic",
        "unknown_schema_id",
        "bad_avro",
    }


def test_every_truncation_is_a_wire_error() -> None:
    for end in range(len(GOOD)):
        with pytest.raises(WireError) as caught:
            decode_event(GOOD[:end])
        assert caught.value.reason in ("empty", "too_short", "bad_avro")


def test_garbage_bodies_raise_only_wire_errors() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        try:
            decode_event(GOOD[:5] + body)
        except WireError as exc:
            assert exc.reason == "bad_avro"


def test_corrupting_any_byte_never_escapes_as_another_error() -> None:
    for i in range(5, len(GOOD)):
        for value in (0x00, 0x7F, 0x80, 0xFF):
            data = GOOD[:i] + bytes([value]) + GOOD[i + 1 :]
            with contextlib.suppress(WireError):
                decode_event(data)


# -- the catalogue --------------------------------------------------------------------------------
def test_schema_json_is_the_file() -> None:
    text = schema_json(CURRENT_SCHEMA_ID)
    assert json.loads(text) == json.loads((AVRO_DIR / "event-v1.avsc").read_text())
    assert json.loads(text)["rhythm.schema_id"] == 1
    with pytest.raises(KeyError, match="no schema with id 42"):
        schema_json(42)


def test_catalogue_loads_the_package_files() -> None:
    files = sorted(AVRO_DIR.glob("event-v*.avsc"))
    assert len(WIRE.catalogue.by_id) == len(files) >= 1
    assert WIRE.current.version == max(v.version for v in WIRE.catalogue.by_id.values())


def test_strip_logical_types() -> None:
    schema: dict[str, Any] = {"type": "record", "name": "R", "fields": [
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "u", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
        {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4}},
    ]}  # fmt: skip
    fields = strip_logical_types(schema)["fields"]
    assert [f["type"] for f in fields] == [
        "long",
        ["null", "long"],
        {"type": "bytes", "precision": 4},
    ]
    assert "logicalType" in schema["fields"][0]["type"], "the input is not modified"


def _write_schema(folder: Path, version: int, schema_id: int, extra_fields: list[Any]) -> None:
    schema = json.loads((AVRO_DIR / "event-v1.avsc").read_text())
    schema["rhythm.schema_id"] = schema_id
    schema["fields"] += extra_fields
    (folder / f"event-v{version}.avsc").write_text(json.dumps(schema))


LOCALE = {"name": "locale", "type": ["null", "string"], "default": None}


def test_duplicate_schema_ids_are_refused(tmp_path: Path) -> None:
    _write_schema(tmp_path, 1, 1, [])
    _write_schema(tmp_path, 2, 1, [LOCALE])
    with pytest.raises(CatalogueError, match=r"share rhythm\.schema_id 1"):
        SchemaCatalogue.load(tmp_path)


@pytest.mark.parametrize("bad_id", [None, 0, "2", 1.0])
def test_schema_id_must_be_a_positive_int(tmp_path: Path, bad_id: Any) -> None:
    _write_schema(tmp_path, 1, 1, [])
    schema = json.loads((tmp_path / "event-v1.avsc").read_text())
    schema["rhythm.schema_id"] = bad_id
    (tmp_path / "event-v1.avsc").write_text(json.dumps(schema))
    with pytest.raises(CatalogueError, match="must be a positive int"):
        SchemaCatalogue.load(tmp_path)


def test_empty_catalogue_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a schema")
    with pytest.raises(CatalogueError, match="no event-v"):
        SchemaCatalogue.load(tmp_path)


# -- evolution -------------------------------------------------------------------------------------
def _sample(avro_type: Any, full: bool) -> Any:
    """A value of `avro_type` (logical types stripped): `full` fills every optional part."""
    primitives = {
        "null": None,
        "boolean": True,
        "int": -7,
        "long": 1_790_856_000_123,
        "float": 0.5,
        "double": -2.25,
        "bytes": b"\x00\xff",
        "string": "Zoë",
    }
    if isinstance(avro_type, str):
        return primitives[avro_type]
    if isinstance(avro_type, list):  # a union: null when allowed and not full
        branches = [b for b in avro_type if b != "null"] if full else avro_type
        return _sample(branches[0], full)
    kind = avro_type["type"]
    if kind == "array":
        return [_sample(avro_type["items"], full)] * 2 if full else []
    if kind == "map":
        values = avro_type["values"]
        branches = values if isinstance(values, list) else [values]
        return {f"k{i}": _sample(b, full) for i, b in enumerate(branches)} if full else {}
    if kind == "record":
        return {f["name"]: _sample(f["type"], full) for f in avro_type["fields"]}
    return _sample(kind, full)


def assert_backward_compatible(old: SchemaVersion, new: SchemaVersion) -> None:
    """Data written with `old` reads with `new`: same values, new fields at their defaults."""
    schema = strip_logical_types(old.schema)
    new_fields = strip_logical_types(new.schema)["fields"]
    for full in (True, False):
        written = _sample(schema, full)
        buffer = io.BytesIO(fastavro_body(written, old))
        read = cast(dict[str, Any], schemaless_reader(buffer, old.plain, new.plain))
        assert buffer.tell() == len(buffer.getvalue())
        for field in new_fields:
            name = field["name"]
            expected = written[name] if name in written else field["default"]
            assert read[name] == expected, (old.version, new.version, name)


def test_each_schema_reads_with_its_successor_and_the_current() -> None:
    versions = WIRE.catalogue.in_version_order()
    for old, new in itertools.pairwise(versions):
        assert_backward_compatible(old, new)
    for old in versions:
        assert_backward_compatible(old, WIRE.current)


def test_evolved_schema_reads_old_data_with_defaults(tmp_path: Path) -> None:
    _write_schema(tmp_path, 1, 1, [])
    _write_schema(tmp_path, 2, 2, [LOCALE])
    evolved = WireFormat(SchemaCatalogue.load(tmp_path))
    assert evolved.current.version == 2
    assert not evolved.fast_encoder  # falls back to fastavro, still correct
    assert_backward_compatible(evolved.catalogue.by_id[1], evolved.current)

    old = encode_event(record())  # written by today's v1 writer
    assert evolved.decode(old) == record(locale=None)
    new = evolved.encode(record(locale="pt-BR"))
    assert new[:5] == b"\x00\x00\x00\x00\x02"
    assert evolved.decode(new) == record(locale="pt-BR")


@pytest.mark.parametrize(
    "breaking",
    [
        [{"name": "locale", "type": "string"}],  # new field without a default
    ],
)
def test_breaking_change_is_caught(tmp_path: Path, breaking: list[Any]) -> None:
    _write_schema(tmp_path, 1, 1, [])
    _write_schema(tmp_path, 2, 2, breaking)
    catalogue = SchemaCatalogue.load(tmp_path)
    with pytest.raises(Exception, match="locale"):
        assert_backward_compatible(catalogue.by_id[1], catalogue.current)
    with pytest.raises(WireError) as caught:
        WireFormat(catalogue).decode(encode_event(record()))
    assert caught.value.reason == "bad_avro"


def test_retyped_field_is_caught(tmp_path: Path) -> None:
    _write_schema(tmp_path, 1, 1, [])
    schema = json.loads((tmp_path / "event-v1.avsc").read_text())
    schema["rhythm.schema_id"] = 2
    weight = next(f for f in schema["fields"] if f["name"] == "weight")
    weight["type"], weight["default"] = "string", "1"
    (tmp_path / "event-v2.avsc").write_text(json.dumps(schema))
    catalogue = SchemaCatalogue.load(tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - fastavro's resolution error
        assert_backward_compatible(catalogue.by_id[1], catalogue.current)

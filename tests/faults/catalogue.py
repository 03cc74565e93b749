"""The bad-input catalogue (no tests here): what each of the three doors is offered.

- the client: a canonical event dict that breaks one rule, and the field its ContractError
  must name;
- `rhythm ingest`: JSON Lines, some of them not even JSON;
- raw bytes on the events topic (written with kcat, no client in between): broken framing,
  and well-framed Avro whose record breaks the contract, which only the consumers can catch.
"""

from __future__ import annotations

import io
import json
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastavro import schemaless_writer

from rhythm.schemas import CURRENT_SCHEMA_ID, encode_event, validate_record
from rhythm.schemas.wire import WIRE

DAY_MS = 86_400_000


def good(i: int, now_ms: int, **changes: Any) -> dict[str, Any]:
    """A valid canonical event, one hour old."""
    occurred = now_ms - 3_600_000 + i
    event: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=(7 << 96) + i)),
        "tenant": "acme",
        "occurred_at": f"{_iso(occurred)}",
        "actor": {"type": "user", "id": f"u-{i % 7}"},
        "verb": "viewed",
        "object": {"type": "doc", "id": f"d-{i % 3}"},
        "weight": 1.0 + i % 3,
        "properties": {"n": i},
    }
    event.update(changes)
    return event


def _iso(ms: int) -> str:
    import datetime as dt

    stamp = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# -- the client ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientCase:
    name: str
    change: Callable[[dict[str, Any]], None]
    field: str  # what the ContractError must name


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = event
        for p in parents:
            target = target[p]
        target[last] = value

    return change


def _drop(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda event: event.pop(name)


CLIENT_CASES = [
    ClientCase("missing tenant", _drop("tenant"), "tenant"),
    ClientCase("missing actor", _drop("actor"), "actor"),
    ClientCase("weight as a string", _set("weight", "1.5"), "weight"),
    ClientCase("weight as a bool", _set("weight", True), "weight"),
    ClientCase("tenant as a number", _set("tenant", 7), "tenant"),
    ClientCase("NaN weight", _set("weight", float("nan")), "weight"),
    ClientCase("+inf weight", _set("weight", float("inf")), "weight"),
    ClientCase("-inf weight", _set("weight", float("-inf")), "weight"),
    ClientCase("huge weight 1e300", _set("weight", 1e300), "weight"),
    ClientCase("timestamp year 3000", _set("occurred_at", "3000-01-01T00:00:00Z"), "occurred_at"),
    ClientCase("timestamp before 1970", _set("occurred_at", "1969-12-31T23:59:59Z"), "occurred_at"),
    ClientCase("naive timestamp", _set("occurred_at", "2026-10-01T12:00:00"), "occurred_at"),
    ClientCase("unix time as timestamp", _set("occurred_at", "1700000000"), "occurred_at"),
    ClientCase("65 properties", _set("properties", {f"k{i}": i for i in range(65)}), "properties"),
    ClientCase("property of 1025 chars", _set("properties", {"a": "x" * 1025}), "properties"),
    ClientCase("property int beyond int64", _set("properties", {"a": 2**63}), "properties"),
    ClientCase("nested property", _set("properties", {"a": {"b": 1}}), "properties"),
    ClientCase("actor id of 257 chars", _set("actor.id", "x" * 257), "actor.id"),
    ClientCase("actor id of 1 MB", _set("actor.id", "x" * 1_000_000), "actor.id"),
    ClientCase("empty actor id", _set("actor.id", ""), "actor.id"),
    ClientCase("event_id not a UUID", _set("event_id", "not-a-uuid"), "event_id"),
    ClientCase("tenant in capitals", _set("tenant", "ACME"), "tenant"),
    ClientCase("tenant with a space", _set("tenant", "acme corp"), "tenant"),
    ClientCase("empty tenant", _set("tenant", ""), "tenant"),
    ClientCase("tenant with a newline", _set("tenant", "acme\n"), "tenant"),
    ClientCase("tenant of 65 chars", _set("tenant", "a" * 65), "tenant"),
    ClientCase("verb with RTL override", _set("verb", "viewed\u202e"), "verb"),
    ClientCase("33 tags", _set("tags", [f"t{i}" for i in range(33)]), "tags"),
    ClientCase("unknown field", _set("colour", "red"), "colour"),
    ClientCase("lone surrogate in actor id", _set("actor.id", "u-\ud800"), "actor.id"),
]

# Unusual but valid: these must be accepted and stored exactly as sent.
UNICODE_IDS = {
    "nul": "u-\x00-nul",
    "rtl": "u-\u202eevil\u202c",
    "emoji": "u-\U0001f600\U0001f469\u200d\U0001f4bb",
    "combining": "u-e\u0301\u0327\u0308",
    "cjk": "u-\u65e5\u672c",
}


# -- rhythm ingest ---------------------------------------------------------------------------


def ingest_lines(now_ms: int) -> tuple[list[bytes], list[tuple[str, bool]]]:
    """JSON Lines for `rhythm ingest`: (lines, [(case, valid)]) with one case per line."""
    lines: list[bytes] = []
    cases: list[tuple[str, bool]] = []

    def add(case: str, raw: bytes, valid: bool) -> None:
        lines.append(raw)
        cases.append((case, valid))

    def dump(event: dict[str, Any]) -> bytes:
        return json.dumps(event).encode()

    base = 1000
    add("valid", dump(good(base, now_ms)), True)
    add("not JSON", b"{this is not json", False)
    add("a JSON array", b"[1, 2, 3]", False)
    add("a JSON string", b'"hello"', False)
    add("invalid UTF-8", b'{"tenant": "\xff\xfe"}', False)
    add(
        "NaN literal weight",
        dump(good(base + 1, now_ms, weight=123.5)).replace(b"123.5", b"NaN"),
        False,
    )
    add(
        "1e400 weight (inf)",
        dump(good(base + 2, now_ms, weight=123.5)).replace(b"123.5", b"1e400"),
        False,
    )
    add("weight 1e30 as int", dump(good(base + 3, now_ms, weight=10**30)), False)
    add(
        "lone surrogate escape",
        dump(good(base + 4, now_ms, actor={"type": "user", "id": "SUR"})).replace(
            b"SUR", b"\\ud800"
        ),
        False,
    )
    add(
        "valid with unicode",
        dump(good(base + 5, now_ms, actor={"type": "user", "id": "u-\u05d0\U0001f600"})),
        True,
    )
    add(
        "missing verb",
        dump({k: v for k, v in good(base + 6, now_ms).items() if k != "verb"}),
        False,
    )
    add(
        "huge line (2 MB property)",
        dump(good(base + 7, now_ms, properties={"a": "x" * 2_000_000})),
        False,
    )
    add(
        "timestamp year 2300",
        dump(good(base + 8, now_ms, occurred_at="2300-01-01T00:00:00Z")),
        False,
    )
    add("valid", dump(good(base + 9, now_ms)), True)
    return lines, cases


# -- raw bytes on the topic -----------------------------------------------------------------


@dataclass(frozen=True)
class RawCase:
    name: str
    value: bytes | None  # None: a NULL value (tombstone)
    sink: str  # what the sink does: "stored" or a dead-letter reason
    processors: str  # what the processors do: "taken" or a dead-letter reason
    key: bytes | None = b"k"


def _record(i: int, now_ms: int, **changes: Any) -> dict[str, Any]:
    record = validate_record(good(i, now_ms))
    record["sent_at"] = now_ms
    record.update(changes)
    return record


def _unchecked(record: dict[str, Any], schema_id: int = CURRENT_SCHEMA_ID) -> bytes:
    """Confluent framing around the Avro body, with no contract check (another producer)."""
    buffer = io.BytesIO()
    schemaless_writer(buffer, WIRE.current.plain, record)
    return struct.pack(">BI", 0, schema_id) + buffer.getvalue()


def raw_cases(now_ms: int) -> list[RawCase]:
    base = 2000
    valid = encode_event(_record(base, now_ms))
    # An Avro string whose bytes are not UTF-8: write "AAAA" then patch the bytes.
    bad_utf8 = _unchecked(_record(base + 1, now_ms, actor_id="AAAA")).replace(
        b"AAAA", b"\xed\xa0\x80A"
    )
    far_future = now_ms + 365 * DAY_MS
    return [
        RawCase("garbage bytes", b"garbage \xff\xfe\x00", "bad_magic", "bad_magic"),
        RawCase(
            "JSON instead of Avro",
            json.dumps(good(base, now_ms)).encode(),
            "bad_magic",
            "bad_magic",
        ),
        RawCase("wrong magic byte 0x01", b"\x01" + valid[1:], "bad_magic", "bad_magic"),
        RawCase(
            "unknown schema id 999",
            valid[:1] + struct.pack(">I", 999) + valid[5:],
            "unknown_schema_id",
            "unknown_schema_id",
        ),
        RawCase("header only", valid[:5], "bad_avro", "bad_avro"),
        RawCase("3 bytes", b"\x00\x00\x00", "too_short", "too_short"),
        RawCase("truncated Avro", valid[: len(valid) // 2], "bad_avro", "bad_avro"),
        RawCase("trailing bytes", valid + b"\x00\x01", "bad_avro", "bad_avro"),
        RawCase("empty value", b"", "empty", "empty"),
        RawCase("NULL value (tombstone)", None, "empty", "empty"),
        RawCase(
            "null key, valid value",
            encode_event(_record(base + 2, now_ms)),
            "stored",
            "taken",
            key=None,
        ),
        RawCase("invalid UTF-8 in a string", bad_utf8, "bad_avro", "bad_avro"),
        RawCase(
            "900 kB of garbage",
            b"\x00" + b"\xff" * 900_000,
            "unknown_schema_id",
            "unknown_schema_id",
        ),
        RawCase(
            "NaN weight",
            _unchecked(_record(base + 3, now_ms, weight=float("nan"))),
            "invalid_event",
            "invalid_event",
        ),
        RawCase(
            "inf weight",
            _unchecked(_record(base + 4, now_ms, weight=float("inf"))),
            "invalid_event",
            "invalid_event",
        ),
        RawCase(
            "weight 1e300",
            _unchecked(_record(base + 5, now_ms, weight=1e300)),
            "invalid_event",
            "invalid_event",
        ),
        RawCase(
            "occurred_at a year ahead",
            _unchecked(_record(base + 6, now_ms, occurred_at=far_future)),
            "stored",
            "future_timestamp",
        ),
        RawCase(
            "occurred_at before 1970",
            _unchecked(_record(base + 7, now_ms, occurred_at=-5)),
            "invalid_event",
            "invalid_event",
        ),
        RawCase(
            "occurred_at 2**62 ms",
            _unchecked(_record(base + 8, now_ms, occurred_at=2**62)),
            "invalid_event",
            "invalid_event",
        ),
        RawCase(
            "empty tenant",
            _unchecked(_record(base + 9, now_ms, tenant="")),
            "invalid_event",
            "invalid_event",
        ),
        RawCase(
            "tenant in capitals",
            _unchecked(_record(base + 10, now_ms, tenant="ACME")),
            "invalid_event",
            "invalid_event",
        ),
        RawCase(
            "event_id not a UUID",
            _unchecked(_record(base + 11, now_ms, event_id="nope")),
            "invalid_event",
            "invalid_event",
        ),
        RawCase(
            "actor id of 100 kB",
            _unchecked(_record(base + 12, now_ms, actor_id="x" * 100_000)),
            "invalid_event",
            "invalid_event",
        ),
        RawCase(
            "200 properties",
            _unchecked(_record(base + 13, now_ms, properties={f"k{i}": i for i in range(200)})),
            "invalid_event",
            "invalid_event",
        ),
    ]

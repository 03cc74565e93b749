"""A straight-line Avro binary encoder for the event-v1 record layout.

Why not fastavro here: `schemaless_writer` costs ~7 us for our record (per call it re-derives
the record's field set and tries each union branch through its validator), and the client's
whole budget per event is ~15 us. This function writes the same bytes in ~3 us.
tests/unit/test_wire.py checks it byte-for-byte against fastavro, and `wire.py` uses it only
while the current schema's fields are exactly LAYOUT; for any other schema it falls back to
fastavro, so a new event-vN.avsc can never be written wrongly, only more slowly until this
file learns it.

Like fastavro, missing nullable fields write null and missing defaulted fields their default.

`encode_validated` is the client's variant: the same bytes from the EventDict that validation
returns, without a record in between (~2.5 us for a typical event, header included);
tests/unit/test_validated_encoder.py checks it against fastavro on random valid events.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from datetime import datetime, timezone, tzinfo
from typing import Any

from pydantic_core import TzInfo

from rhythm.schemas import rules

# (name, Avro type with logical types removed), in field order.
LAYOUT: tuple[tuple[str, Any], ...] = (
    ("event_id", "string"),
    ("tenant", "string"),
    ("occurred_at", "long"),
    ("sent_at", ["null", "long"]),
    ("actor_type", "string"),
    ("actor_id", "string"),
    ("verb", "string"),
    ("object_type", ["null", "string"]),
    ("object_id", ["null", "string"]),
    ("target_type", ["null", "string"]),
    ("target_id", ["null", "string"]),
    ("channel", ["null", "string"]),
    ("context_id", ["null", "string"]),
    ("in_reply_to", ["null", "string"]),
    ("tags", {"type": "array", "items": "string"}),
    ("weight", "double"),
    ("properties", {"type": "map", "values": ["string", "long", "double", "boolean"]}),
)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_pack_double = struct.Struct("<d").pack


def _zigzag_varint(n: int) -> bytes:
    if not _INT64_MIN <= n <= _INT64_MAX:
        raise OverflowError(f"{n} does not fit an Avro long")
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


# Lengths and small counts are nearly always below 64: one precomputed byte.
_SMALL = tuple(_zigzag_varint(n) for n in range(64))
_NULL = b"\x00"  # union branch 0 (null); also an array/map end block
_SOME = b"\x02"  # union branch 1
_VALUE_TAGS = (b"\x00", b"\x02", b"\x04", b"\x06")  # string, long, double, boolean
_TRUE, _FALSE = b"\x06\x01", b"\x06\x00"


def _long(n: int) -> bytes:
    if 0 <= n < 64:
        return _SMALL[n]
    if 1 << 34 <= n < 1 << 48:
        return _timestamp(n)
    return _zigzag_varint(n)


def _timestamp(n: int) -> bytes:
    """`_zigzag_varint(n)` for 2**34 <= n < 2**48: epoch milliseconds from mid-1970 on.

    Straight-line arithmetic on the two 28-bit halves of 2n (ints below 2**30 are the cheap
    single-digit kind): about half the time of the general loop, and timestamps are two of
    every event's fields."""
    z = n << 1
    lo, hi = z & 0xFFFFFFF, z >> 28
    if hi < 1 << 14:
        return bytes(
            (
                lo & 0x7F | 0x80,
                lo >> 7 & 0x7F | 0x80,
                lo >> 14 & 0x7F | 0x80,
                lo >> 21 | 0x80,
                hi & 0x7F | 0x80,
                hi >> 7,
            )
        )
    return bytes(
        (
            lo & 0x7F | 0x80,
            lo >> 7 & 0x7F | 0x80,
            lo >> 14 & 0x7F | 0x80,
            lo >> 21 | 0x80,
            hi & 0x7F | 0x80,
            hi >> 7 & 0x7F | 0x80,
            hi >> 14,
        )
    )


def _string(s: str) -> bytes:
    b = s.encode()
    n = len(b)
    return (_SMALL[n] if n < 64 else _zigzag_varint(n)) + b


def _opt_string(s: str | None) -> bytes:
    return _NULL if s is None else _SOME + _string(s)


def _property_value(v: Any) -> bytes:
    kind = type(v)
    if kind is str:
        return _VALUE_TAGS[0] + _string(v)
    if kind is bool:
        return _TRUE if v else _FALSE
    if kind is int:
        return _VALUE_TAGS[1] + _long(v)
    if kind is float:
        return _VALUE_TAGS[2] + _pack_double(v)
    # Subclasses (IntEnum, numpy.float64, ...): as their base type; bool before int.
    for base in (str, bool, int, float):
        if isinstance(v, base):
            return _property_value(base(v))
    raise TypeError(f"property value {v!r} is not a string, long, double or boolean")


def encode_body(r: Mapping[str, Any]) -> bytes:
    """The Avro binary encoding of a wire record in LAYOUT (no header)."""
    sent_at = r.get("sent_at")
    out = [
        _string(r["event_id"]),
        _string(r["tenant"]),
        _long(r["occurred_at"]),
        _NULL if sent_at is None else _SOME + _long(sent_at),
        _string(r["actor_type"]),
        _string(r["actor_id"]),
        _string(r["verb"]),
        _opt_string(r.get("object_type")),
        _opt_string(r.get("object_id")),
        _opt_string(r.get("target_type")),
        _opt_string(r.get("target_id")),
        _opt_string(r.get("channel")),
        _opt_string(r.get("context_id")),
        _opt_string(r.get("in_reply_to")),
    ]
    tags = r.get("tags")
    if tags:  # one block holding every item, then the end block (as fastavro writes it)
        tags = list(tags)
        out.append(_long(len(tags)))
        out.extend(map(_string, tags))
    out.append(_NULL)
    out.append(_pack_double(r.get("weight", 1.0)))
    properties = r.get("properties")
    out.append(_properties_by_entry(properties) if properties else _NULL)
    return b"".join(out)


# -- the client's path: a validated EventDict straight to bytes ------------------------------------
# Most events are short ASCII strings. A length below 64 is one varint byte, 2n, which is ASCII
# too, so a run of string fields can be laid out as one str and UTF-8 encoded at once: one
# `str.encode()` per run instead of a call and an encode per field, and no record dict. From 64
# on a length takes two bytes, the first >= 0x80: "\x80" stands in for it, which makes the
# run's UTF-8 longer than the str, the same check that catches a non-ASCII character. Such a
# run is then written field by field, as `encode_body` does.
_LONGEST = max(  # what the contract lets through: validated strings and counts
    rules.MAX_ENTITY_LEN,
    rules.MAX_REF_LEN,
    rules.MAX_TAGS,
    rules.MAX_PROPERTIES,
    rules.MAX_PROPERTY_KEY_LEN,
    rules.MAX_PROPERTY_STRING_LEN,
    64,  # tenants, verbs, tags
)
_LEN: tuple[str, ...] = tuple(chr(2 * n) for n in range(64)) + ("\x80",) * (_LONGEST + 1 - 64)
# An int property in -64..63: union branch 1 (long), then one zigzag varint byte; by v + 64.
_SMALL_INT: tuple[str, ...] = tuple("\x02" + chr((v << 1) ^ (v >> 63)) for v in range(-64, 64))
_NULL_STR, _SOME_STR = "\x00", "\x02"
_TRUE_STR, _FALSE_STR = "\x06\x01", "\x06\x00"
_NO_ENTITY = "\x00\x00"  # an absent object or target: both of its optional strings null
_EPOCH, _ONE_MS = rules.EPOCH, rules.ONE_MS
# Subtracting datetimes of two zones asks each for its UTC offset, through pydantic's TzInfo
# (Rust) for parsed strings: most of a microsecond. Two datetimes of the same tzinfo object
# subtract by their fields alone, which is the true difference when the zone's offset is fixed:
# so the epoch is kept in the zone of the last event (they nearly all share one). Not for
# zones with daylight saving time (zoneinfo), whose same-object difference is wall time.
_FIXED_OFFSET = (timezone, TzInfo)
_epoch_in_zone: tuple[tzinfo | None, datetime] = (_EPOCH.tzinfo, _EPOCH)
# sent_at is the send time in milliseconds: a busy client stamps the same value on many
# events in a row, so the last one's bytes are kept (a tuple, replaced whole: thread-safe).
_last_sent_at: tuple[int, bytes] = (-1, b"")


def encode_validated(header: bytes, e: Mapping[str, Any], event_id: str, sent_at: int) -> bytes:
    """`header` + `encode_body(record)` for the record `validate_record(e)` makes with
    `event_id` and `sent_at` set, without making it.

    `e` must come out of EventDict validation: its strings are exact `str`s (a subclass could
    format itself differently) within the contract's lengths, its numbers exact ints, floats
    and bools, and `occurred_at` an aware datetime.
    """
    get = e.get
    tenant = e["tenant"]
    head = f"{_LEN[len(event_id)]}{event_id}{_LEN[len(tenant)]}{tenant}"
    actor = e["actor"]
    actor_type, actor_id, verb = actor["type"], actor["id"], e["verb"]
    obj, target, tags = get("object"), get("target"), get("tags")
    channel, context_id, in_reply_to = get("channel"), get("context_id"), get("in_reply_to")
    if obj is None:
        objects = _NO_ENTITY
    else:
        t, i = obj["type"], obj["id"]
        objects = f"\x02{_LEN[len(t)]}{t}\x02{_LEN[len(i)]}{i}"
    if target is None:
        targets = _NO_ENTITY
    else:
        t, i = target["type"], target["id"]
        targets = f"\x02{_LEN[len(t)]}{t}\x02{_LEN[len(i)]}{i}"
    middle = (
        f"{_LEN[len(actor_type)]}{actor_type}{_LEN[len(actor_id)]}{actor_id}"
        f"{_LEN[len(verb)]}{verb}{objects}{targets}"
        f"{_NULL_STR if channel is None else _SOME_STR + _LEN[len(channel)] + channel}"
        f"{_NULL_STR if context_id is None else _SOME_STR + _LEN[len(context_id)] + context_id}"
        f"{_NULL_STR if in_reply_to is None else _SOME_STR + _LEN[len(in_reply_to)] + in_reply_to}"
    )
    if tags:  # a plain loop: a comprehension is a function call of its own in 3.11
        middle = f"{middle}{_LEN[len(tags)]}"
        for tag in tags:
            middle = f"{middle}{_LEN[len(tag)]}{tag}"
    middle += "\x00"
    head_utf8, middle_utf8 = head.encode(), middle.encode()
    if len(head_utf8) != len(head):
        head_utf8 = _string(event_id) + _string(tenant)
    if len(middle_utf8) != len(middle):
        middle_utf8 = b"".join(
            (
                _string(actor_type),
                _string(actor_id),
                _string(verb),
                _entity(obj),
                _entity(target),
                _opt_string(channel),
                _opt_string(context_id),
                _opt_string(in_reply_to),
                _long(len(tags)) + b"".join(map(_string, tags)) if tags else b"",
                _NULL,
            )
        )
    global _last_sent_at  # noqa: PLW0603 - a one-entry memo, replaced whole
    last = _last_sent_at
    if sent_at == last[0]:
        sent = last[1]
    else:
        sent = _SOME + (_timestamp(sent_at) if 1 << 34 <= sent_at < 1 << 48 else _long(sent_at))
        _last_sent_at = (sent_at, sent)
    when = e["occurred_at"]
    zone = _epoch_in_zone
    same_zone = when.tzinfo is zone[0]
    occurred_at = (when - zone[1]) // _ONE_MS if same_zone else _epoch_millis(when)
    properties = get("properties")
    return b"".join(
        (
            header,
            head_utf8,
            _timestamp(occurred_at) if 1 << 34 <= occurred_at < 1 << 48 else _long(occurred_at),
            sent,
            middle_utf8,
            _pack_double(get("weight", 1.0)),
            _properties(properties) if properties else _NULL,
        )
    )


def _epoch_millis(when: datetime) -> int:
    global _epoch_in_zone  # noqa: PLW0603 - a one-entry memo, replaced whole
    zone = when.tzinfo
    if type(zone) in _FIXED_OFFSET:
        _epoch_in_zone = (zone, _EPOCH.astimezone(zone))
    return (when - _EPOCH) // _ONE_MS


def _entity(entity: Mapping[str, str] | None) -> bytes:
    if entity is None:
        return _NULL + _NULL
    return _SOME + _string(entity["type"]) + _SOME + _string(entity["id"])


def _properties(properties: Mapping[str, Any]) -> bytes:
    """A non-empty, validated properties map: keys and values go into str runs like the
    string fields; a float, or an int beyond one varint byte, is written between runs."""
    runs: list[bytes] = []
    text = _LEN[len(properties)]
    for key, value in properties.items():
        kind = type(value)
        if kind is str:
            text = f"{text}{_LEN[len(key)]}{key}\x00{_LEN[len(value)]}{value}"
        elif kind is bool:
            text = f"{text}{_LEN[len(key)]}{key}{_TRUE_STR if value else _FALSE_STR}"
        elif kind is int and -64 <= value < 64:
            text = f"{text}{_LEN[len(key)]}{key}{_SMALL_INT[value + 64]}"
        else:
            text = f"{text}{_LEN[len(key)]}{key}"
            utf8 = text.encode()
            if len(utf8) != len(text):
                return _properties_by_entry(properties)
            runs.append(utf8)
            runs.append(
                _VALUE_TAGS[2] + _pack_double(value)
                if kind is float
                else _VALUE_TAGS[1] + _long(value)
            )
            text = ""
    text += "\x00"
    utf8 = text.encode()
    if len(utf8) != len(text):
        return _properties_by_entry(properties)
    if not runs:
        return utf8
    runs.append(utf8)
    return b"".join(runs)


def _properties_by_entry(properties: Mapping[str, Any]) -> bytes:
    out = [_long(len(properties))]
    for key, value in properties.items():
        out.append(_string(key))
        out.append(_property_value(value))
    out.append(_NULL)
    return b"".join(out)

"""The contract's rules on decoded wire records: what another producer can get past Avro is
caught by `record_problem`, and stage 1 and the sink dead-letter it (reason invalid_event)
instead of counting or storing it, then go on with the next message."""

from __future__ import annotations

import io
import struct
from typing import Any

import pytest
from fastavro import schemaless_writer

from rhythm.processors.stage1 import Stage1Config, Stage1Partition
from rhythm.schemas import CURRENT_SCHEMA_ID, decode_event
from rhythm.schemas.wire import WIRE
from rhythm.schemas.wire_check import record_problem
from rhythm.sinks.tables.events import process as transform_event
from rhythm.sinks.tables.rows import DeadLetter, Message

NOW = 1_800_000_000_000


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "0190a8b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b", "tenant": "acme",
        "occurred_at": NOW - 60_000, "sent_at": NOW, "actor_type": "user", "actor_id": "u-1",
        "verb": "viewed", "object_type": None, "object_id": None, "target_type": None,
        "target_id": None, "channel": None, "context_id": None, "in_reply_to": None,
        "tags": ["a"], "weight": 1.5, "properties": {"n": 1, "s": "x", "b": True, "f": 0.5},
    }  # fmt: skip
    return base | changes


def unchecked(rec: dict[str, Any]) -> bytes:
    """The wire bytes of a record as a producer without the client would write them."""
    buffer = io.BytesIO()
    schemaless_writer(buffer, WIRE.current.plain, rec)
    return struct.pack(">BI", 0, CURRENT_SCHEMA_ID) + buffer.getvalue()


BROKEN: list[tuple[dict[str, Any], str]] = [
    ({"weight": float("nan")}, "weight"),
    ({"weight": float("inf")}, "weight"),
    ({"weight": 1e300}, "weight"),
    ({"tenant": "ACME"}, "tenant"),
    ({"tenant": ""}, "tenant"),
    ({"event_id": "nope"}, "event_id"),
    ({"event_id": "{0190a8b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b}"}, "event_id"),
    ({"occurred_at": -5}, "occurred_at"),
    ({"occurred_at": 2**62}, "occurred_at"),
    ({"sent_at": -1}, "sent_at"),
    ({"actor_id": ""}, "actor_id"),
    ({"actor_id": "x" * 100_000}, "actor_id"),
    ({"verb": "Viewed"}, "verb"),
    ({"channel": "E mail"}, "channel"),
    ({"tags": ["Bad Tag"]}, "tags"),
    ({"tags": [f"t{i}" for i in range(33)]}, "tags"),
    ({"properties": {f"k{i}": i for i in range(65)}}, "properties"),
    ({"properties": {"k": "x" * 1025}}, "properties"),
    ({"properties": {"k": float("nan")}}, "properties"),
    ({"context_id": "c" * 257}, "context_id"),
]


def test_a_record_the_client_would_write_has_no_problem() -> None:
    assert record_problem(record()) is None
    assert record_problem(decode_event(unchecked(record()))) is None
    assert record_problem(record(occurred_at=0, sent_at=None, weight=-1e12)) is None


@pytest.mark.parametrize(("changes", "field"), BROKEN)
def test_a_record_breaking_a_rule_names_the_field(changes: dict[str, Any], field: str) -> None:
    problem = record_problem(decode_event(unchecked(record(**changes))))
    assert problem is not None and problem.startswith(f"{field}"), problem


@pytest.mark.parametrize(("changes", "field"), BROKEN)
def test_the_sink_dead_letters_it(changes: dict[str, Any], field: str) -> None:
    message = Message("t", 0, 3, NOW, b"k", unchecked(record(**changes)))
    dead = transform_event(message)
    assert isinstance(dead, DeadLetter)
    assert dead.reason == "invalid_event" and field in dead.detail


def test_stage1_dead_letters_it_and_takes_the_next_message() -> None:
    source = Stage1Partition(0, Stage1Config(updates_partitions=2, dedup_horizon_ms=3_600_000))
    good = unchecked(record(event_id="0190a8b2-7c3d-7e4f-8a1b-2c3d4e5f6a7c"))
    messages: list[tuple[int, bytes | None]] = [
        (offset, unchecked(record(**changes))) for offset, (changes, _f) in enumerate(BROKEN)
    ]
    messages.append((len(BROKEN), good))
    out = source.process(messages, NOW, NOW / 1000)
    assert [d.reason for d in out.dead_letters] == ["invalid_event"] * len(BROKEN)
    assert [d.offset for d in out.dead_letters] == list(range(len(BROKEN)))
    assert all(d.detail for d in out.dead_letters)
    assert out.events == 1  # the good one after them
    assert source.next_offset == len(BROKEN) + 1
    # No NaN reaches stage 2: the only update carries the good event's weight.
    updates = [u for m in out.messages.values() for u in m.get("u", [])]
    assert updates and all("nan" not in repr(u).lower() for u in updates)


def test_a_lone_surrogate_is_named_as_such() -> None:
    from rhythm.schemas import ContractError, validate_record

    event = {"tenant": "acme", "occurred_at": "2026-10-01T12:00:00Z", "verb": "viewed",
             "actor": {"type": "user", "id": "u-\ud800"}}  # fmt: skip
    with pytest.raises(ContractError, match=r"actor\.id: must be valid Unicode"):
        validate_record(event)

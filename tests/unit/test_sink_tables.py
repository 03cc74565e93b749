"""The sink's tables against the contracts they store: the events table and its processor
against the event's Avro schema (so a field added to the .avsc without the sink fails here),
the registry against the settings, the alerts' kind column against the alert kinds, and the
applied migrations' checksums, which must never change."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from rhythm.schemas import SchemaCatalogue, encode_event
from rhythm.schemas.outputs import ALERT_KINDS
from rhythm.sinks.migrations import MIGRATIONS
from rhythm.sinks.settings import SinkSettings
from rhythm.sinks.tables import ALERTS, DATA_TABLES, DEAD_LETTER_REASONS, EVENTS, TABLES
from rhythm.sinks.tables.columns import INGEST, TS
from rhythm.sinks.tables.events import CONTRACT_FIELDS_NOT_STORED
from rhythm.sinks.tables.events import process as process_event
from rhythm.sinks.tables.rows import DeadLetter, Message

CONTRACT = SchemaCatalogue.load().current
FIELDS: list[dict[str, Any]] = CONTRACT.schema["fields"]
INGEST_NAMES = [c.name for c in INGEST]
#: the one column whose type differs from what the contract's type maps to: process()
#: stores the event_id, a string on the wire, as a UUID
STORED_AS = {"event_id": "UUID"}


def clickhouse_type(avro: Any) -> str:
    """The column type an Avro type is stored as (LowCardinality and codecs aside)."""
    if isinstance(avro, list):  # a union: null and one other type
        (other,) = [branch for branch in avro if branch != "null"]
        inner = clickhouse_type(other)
        return f"Nullable({inner})" if "null" in avro else inner
    if isinstance(avro, dict):
        if avro.get("logicalType") == "timestamp-millis":
            return TS
        if avro["type"] == "array":
            return f"Array({clickhouse_type(avro['items'])})"
        if avro["type"] == "map":
            return "Map(String, String)"  # values as text, whatever their type
        return clickhouse_type(avro["type"])
    return {"string": "String", "long": "Int64", "double": "Float64", "boolean": "Bool"}[avro]


def without_low_cardinality(type_name: str) -> str:
    """`Array(LowCardinality(Nullable(String)))` -> `Array(Nullable(String))`."""
    return re.sub(r"LowCardinality\(((?:[^()]|\([^()]*\))*)\)", r"\1", type_name)


def sample(name: str, avro: Any, n: int) -> Any:
    """A value of the field's type that passes the contract's rules and that `process`
    stores as it is, different for every field (`n`)."""
    if isinstance(avro, list):
        (other,) = [branch for branch in avro if branch != "null"]
        return sample(name, other, n)
    if isinstance(avro, dict):
        if avro.get("logicalType") == "timestamp-millis":
            return 1_790_000_000_000 + n
        if avro["type"] == "array":
            return [sample(name, avro["items"], n)]
        if avro["type"] == "map":
            return {f"k{n}": f"v{n}"}
        return sample(name, avro["type"], n)
    if name == "event_id":
        return str(uuid.UUID(int=n))
    return {"string": f"{name.replace('_', '-')}-{n}", "long": n, "double": n + 0.5}[avro]


def test_every_field_of_the_event_contract_has_its_column() -> None:
    contract = {f["name"] for f in FIELDS}
    stored = [name for name in EVENTS.column_names if name not in INGEST_NAMES]
    missing = contract - set(stored) - CONTRACT_FIELDS_NOT_STORED
    assert not missing, (
        f"event-v{CONTRACT.version}.avsc has {sorted(missing)} but the events table has no "
        "column for them: add the columns (tables/events.py, a migration) and fill them in "
        "process(), or name them in CONTRACT_FIELDS_NOT_STORED"
    )
    assert not CONTRACT_FIELDS_NOT_STORED - contract, "left out, but not in the contract"
    assert not set(stored) - contract, "columns of events that are neither contract nor ingest"
    assert EVENTS.column_names[-len(INGEST_NAMES) :] == INGEST_NAMES


def test_each_event_column_has_the_type_of_its_contract_field() -> None:
    types = dict(zip(EVENTS.column_names, EVENTS.column_types, strict=True))
    for field in FIELDS:
        if field["name"] in CONTRACT_FIELDS_NOT_STORED:
            continue
        expected = STORED_AS.get(field["name"]) or clickhouse_type(field["type"])
        assert without_low_cardinality(types[field["name"]]) == expected, field["name"]


def test_process_fills_every_contract_field_into_its_column() -> None:
    record = {f["name"]: sample(f["name"], f["type"], n) for n, f in enumerate(FIELDS, 1)}
    row = process_event(
        Message("rhythm.events", 3, 42, 1_790_000_009_999, None, encode_event(record))
    )
    assert isinstance(row, tuple), row
    assert len(row) == len(EVENTS.column_names)
    got = dict(zip(EVENTS.column_names, row, strict=True))
    for name, value in record.items():
        if name not in CONTRACT_FIELDS_NOT_STORED:
            assert got[name] == value, f"{name} is not in its column"
    assert [got[name] for name in INGEST_NAMES] == [1_790_000_009_999, 3, 42]


def test_a_null_optional_field_stays_null() -> None:
    nullable = [f["name"] for f in FIELDS if isinstance(f["type"], list) and "null" in f["type"]]
    record = {f["name"]: sample(f["name"], f["type"], n) for n, f in enumerate(FIELDS, 1)}
    record |= dict.fromkeys(nullable)
    row = process_event(Message("rhythm.events", 0, 0, 0, None, encode_event(record)))
    assert isinstance(row, tuple), row
    got = dict(zip(EVENTS.column_names, row, strict=True))
    assert nullable and all(got[name] is None for name in nullable)


# -- the registry ---------------------------------------------------------------------------


def test_every_kind_has_a_topic_and_a_data_table() -> None:
    assert set(SinkSettings().kind_topics) == set(TABLES)
    assert {t.table.name for t in TABLES.values()} <= {t.name for t in DATA_TABLES}


def test_the_dead_letter_reasons_are_the_processors_reasons() -> None:
    assert DEAD_LETTER_REASONS == (
        "empty", "too_short", "bad_magic", "unknown_schema_id", "bad_avro", "invalid_event",
        "invalid_json", "invalid_signal", "invalid_alert", "invalid_person",
        "invalid_notification", "invalid_feedback",
    )  # fmt: skip


@pytest.mark.parametrize("kind", sorted(TABLES))
def test_a_tombstone_is_a_dead_letter_with_a_known_reason(kind: str) -> None:
    entry = TABLES[kind]  # type: ignore[index]
    dead = entry.process(Message("t", 0, 0, 0, None, None))
    assert isinstance(dead, DeadLetter)
    assert dead.reason == "empty" and dead.reason in entry.reasons


def test_the_alerts_kind_column_takes_every_alert_kind() -> None:
    kind_type = dict(zip(ALERTS.column_names, ALERTS.column_types, strict=True))["kind"]
    assert set(re.findall(r"'([a-z_]+)' = \d+", kind_type)) == set(ALERT_KINDS)


def test_applied_migrations_never_change() -> None:
    # A store records each migration's checksum; a changed one is refused there. (The single
    # node's are pinned in test_sink_cluster_ddl.py too.)
    assert [(m.checksum(), m.checksum(cluster=True)) for m in MIGRATIONS] == [
        ("2220951b7435bf1f", "2aa01838c6c12422"),
        ("611d54e93ecfcddd", "7f4f5651a5b5fd6a"),
        ("e5e20c6239860bf9", "c8056a7e3c876512"),
        ("a54b65d32fb15d9f", "7f02a55818471971"),
        ("338468358ca208bd", "b23f65b4cdc0ecb4"),
        ("b9b0598d868fbeb4", "fb3f32a0cc74238e"),
        ("7d024ca111980eab", "f871c6df8ac53c92"),
    ]


def test_every_topic_the_sink_reads_is_created_by_default() -> None:
    """A new table's topic must be in DEFAULT_TOPICS, or a fresh stack never creates it."""
    from rhythm.schemas.topics import DEFAULT_TOPICS

    created = {spec.name for spec in DEFAULT_TOPICS}
    settings = SinkSettings()
    missing = {*settings.kind_topics.values(), settings.dead_letter_topic} - created
    assert not missing, missing

"""`events` (topic `rhythm.events`, Avro) and `entity_events`, which a materialized view fills
from it.

events
    Every field of the contract (`schemas/rhythm/schemas/avro/event-v1.avsc`, in its order;
    `tests/unit/test_sink_tables.py` checks the columns and `process` against it) plus where
    and when it came in. ReplacingMergeTree whose sorting key ends in `event_id`: re-sent
    copies of an event collapse on merge and under `FINAL`. The key is (tenant, day,
    event_id) rather than (tenant, event_id): an event is immutable, so its copies share
    `occurred_at` (the key finds exactly the copies that `event_id` alone would), and the day
    lets "this tenant, last week" read only those days. Per-entity queries go to
    `entity_events`, sorted for them. The bloom filter on event_id serves point lookups and
    in_reply_to joins, which do not know the day. On a cluster the shard is the actor's,
    which every copy of an event_id shares (events are immutable).
entity_events
    One row per (event, entity it touches): the actor, object, target and each tag (as the
    processors count them), filled by `ENTITY_EVENTS_MV` on insert into events. Sorted by
    (tenant, entity_type, entity_id, occurred_at): an entity's timeline or feed, whatever role
    it played, is one contiguous range. No shard key: the materialized view fills it on the
    shard that holds the event.
"""

from __future__ import annotations

import uuid
from typing import Any, get_args

from rhythm.schemas import WireError, WireReason, decode_event
from rhythm.schemas.topics import HISTORY_KIND_HEADER
from rhythm.schemas.wire_check import record_problem
from rhythm.sinks.tables.columns import DEDUP, DELTA, INGEST, LC, LCN, TS, ZSTD
from rhythm.sinks.tables.definition import Column, Engine, Index, Table, View
from rhythm.sinks.tables.rows import DeadLetter, Message, Outcome, Skipped, ingest, text

__all__ = [
    "CONTRACT_FIELDS_NOT_STORED",
    "ENTITY_EVENTS",
    "ENTITY_EVENTS_MV",
    "EVENTS",
    "REASONS",
    "process",
]

#: Fields of the event contract the events table deliberately has no column for (none: all
#: are stored). A field added to the .avsc must get a column or be named here.
CONTRACT_FIELDS_NOT_STORED: frozenset[str] = frozenset()

#: why an event becomes a dead letter: the wire's reasons, or a record breaking the contract
REASONS: tuple[str, ...] = (*get_args(WireReason), "invalid_event")

EVENTS = Table(
    name="events",
    columns=(
        Column("event_id", "UUID"),
        Column("tenant", LC),
        Column("occurred_at", TS, DELTA),
        Column("sent_at", f"Nullable({TS})", ZSTD),
        Column("actor_type", LC),
        Column("actor_id", "String", ZSTD),
        Column("verb", LC),
        Column("object_type", LCN),
        Column("object_id", "Nullable(String)", ZSTD),
        Column("target_type", LCN),
        Column("target_id", "Nullable(String)", ZSTD),
        Column("channel", LCN),
        Column("context_id", "Nullable(String)", ZSTD),
        Column("in_reply_to", "Nullable(String)", ZSTD),
        Column("tags", f"Array({LC})"),
        Column("weight", "Float64", ZSTD),
        Column(
            "properties",
            f"Map({LC}, String)",
            ZSTD,
            comment="values as text: strings as sent, numbers in decimal, bools true/false",
        ),
        *INGEST,
    ),
    engine=Engine("ReplacingMergeTree"),
    order_by=("tenant", "toDate(occurred_at)", "event_id"),
    partition_by="toYYYYMM(occurred_at)",
    ttl_column="occurred_at",
    indexes=(Index("event_id_bf", "event_id", "bloom_filter(0.01)", 4),),
    settings=DEDUP,
    comment="Raw events, one row per event_id (use FINAL, or it converges on merge).",
    shard_by=("tenant", "actor_type", "actor_id"),
)

# The columns of events that entity_events repeats (ENTITY_EVENTS_MV copies them).
_COPIED_FROM_EVENTS = (
    "occurred_at", "event_id", "verb", "actor_type", "actor_id", "object_type", "object_id",
    "target_type", "target_id", "channel", "context_id", "weight", "tags",
)  # fmt: skip

ENTITY_EVENTS = Table(
    name="entity_events",
    columns=(
        Column("tenant", LC),
        Column("entity_type", LC),
        Column("entity_id", "String", ZSTD),
        Column("role", LC, comment="actor, object, target or tag"),
        *EVENTS.pick(*_COPIED_FROM_EVENTS),
    ),
    engine=Engine("ReplacingMergeTree"),
    order_by=("tenant", "entity_type", "entity_id", "occurred_at", "event_id", "role"),
    partition_by="toYYYYMM(occurred_at)",
    ttl_column="occurred_at",
    settings=DEDUP,
    comment="Events by entity (filled by entity_events_mv): timelines and feeds.",
)

# Every entity an event touches, as the processors count them (explode.py): the actor, the
# object and the target when present, and each distinct tag as an entity of type `tag`.
ENTITY_EVENTS_MV = View(
    name="entity_events_mv",
    to_table="entity_events",
    select="""
SELECT
    tenant, e.2 AS entity_type, e.3 AS entity_id, e.1 AS role,
    occurred_at, event_id, verb, actor_type, actor_id, object_type, object_id,
    target_type, target_id, channel, context_id, weight, tags
FROM $source
ARRAY JOIN CAST(arrayConcat(
    [('actor', toString(actor_type), actor_id)],
    if(object_type IS NULL OR object_id IS NULL, [],
       [('object', toString(assumeNotNull(object_type)), assumeNotNull(object_id))]),
    if(target_type IS NULL OR target_id IS NULL, [],
       [('target', toString(assumeNotNull(target_type)), assumeNotNull(target_id))]),
    arrayMap(t -> ('tag', 'tag', toString(t)), arrayDistinct(tags))
), 'Array(Tuple(String, String, String))') AS e
""",
    comment="Fills entity_events on every insert into events.",
    source="events",
)


def process(message: Message) -> Outcome:
    """An Avro event as its `events` row: the contract's fields in the table's order (each as
    decoded, the event_id in canonical lowercase, property values as text), then ingest.
    A message of `rhythm.history` with a kind (rhythm.schemas.topics, HISTORY_KIND_HEADER)
    is skipped: a routed event, a copy and a note are events stored already (from
    `rhythm.events` or an earlier import); only imported history is new."""
    kind = message.header(HISTORY_KIND_HEADER)
    if kind is not None:
        return Skipped(message, kind.decode(errors="replace"))
    try:
        record: dict[str, Any] = dict(decode_event(message.value or b""))
    except WireError as exc:
        return DeadLetter(message, exc.reason, str(exc))
    # Another producer may break the contract: record_problem checks every field's rules
    # (a UUID, times from 1970 to 2200, non-empty entities, a finite weight, ...), so what
    # passes fits its column.
    problem = record_problem(record)
    if problem is not None:
        return DeadLetter(message, "invalid_event", problem)
    r = record
    return (
        str(uuid.UUID(r["event_id"])), r["tenant"], r["occurred_at"], r["sent_at"],
        r["actor_type"], r["actor_id"], r["verb"], r["object_type"], r["object_id"],
        r["target_type"], r["target_id"], r["channel"], r["context_id"], r["in_reply_to"],
        r["tags"], r["weight"], {k: text(v) for k, v in r["properties"].items()},
        *ingest(message),
    )  # fmt: skip

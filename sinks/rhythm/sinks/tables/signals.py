"""`signals` (topic `rhythm.signals`, JSON `rhythm.schemas.outputs.Signal`): one row per
entity window.

ReplacingMergeTree(version): a window re-emitted after a late event replaces the older
version; `FINAL` gives one row per window. On a cluster the shard is the entity's (a prefix
of the sorting key).
"""

from __future__ import annotations

from rhythm.schemas.outputs import Signal
from rhythm.sinks.tables.columns import DEDUP, DELTA, ENTITY, INGEST, TS, ZSTD
from rhythm.sinks.tables.definition import Column, Engine, Table
from rhythm.sinks.tables.rows import JSON_REASONS, DeadLetter, Message, Outcome, ingest, parse_json

__all__ = ["REASONS", "SIGNALS", "process"]

REASONS = (*JSON_REASONS, "invalid_signal")

SIGNALS = Table(
    name="signals",
    columns=(
        *ENTITY,
        Column("window_start", TS, DELTA),
        Column("window_seconds", "UInt32"),
        Column("event_count", "UInt64"),
        Column("weight_sum", "Float64"),
        Column("weight_max", "Float64"),
        Column("gap_count", "UInt64"),
        Column("gap_min_s", "Nullable(Float64)"),
        Column("gap_max_s", "Nullable(Float64)"),
        Column("gap_mean_s", "Nullable(Float64)"),
        Column("first_event_at", TS, ZSTD),
        Column("last_event_at", TS, ZSTD),
        Column("silence_before_s", "Nullable(Float64)"),
        Column("late_count", "UInt64"),
        Column("version", "UInt64"),
        *INGEST,
    ),
    engine=Engine("ReplacingMergeTree", version="version"),
    order_by=("tenant", "role", "entity_type", "entity_id", "window_seconds", "window_start"),
    partition_by="toYYYYMM(window_start)",
    ttl_column="window_start",
    settings=DEDUP,
    comment="One row per entity window; FINAL keeps the highest version.",
    shard_by=("tenant", "role", "entity_type", "entity_id"),
)


def process(message: Message) -> Outcome:
    s = parse_json(
        message, Signal, "invalid_signal", times=("window_start", "first_event_at", "last_event_at")
    )
    if isinstance(s, DeadLetter):
        return s
    return (
        s.tenant, s.role, s.entity_type, s.entity_id, s.window_start, s.window_seconds,
        s.event_count, s.weight_sum, s.weight_max, s.gap_count, s.gap_min_s, s.gap_max_s,
        s.gap_mean_s, s.first_event_at, s.last_event_at, s.silence_before_s, s.late_count,
        s.version, *ingest(message),
    )  # fmt: skip

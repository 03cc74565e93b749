"""`dead_letters`: what could not be written, from any topic, with the reason, the source
position and the raw bytes (base64, truncated).

ReplacingMergeTree deduplicated on the source position (topic, partition, offset), which is
also the shard key on a cluster. Its rows are built from the `DeadLetter`s the other tables'
processors return (`row`), not from a topic of its own.
"""

from __future__ import annotations

import base64

from rhythm.sinks.tables.columns import DEDUP, LC, TS, ZSTD
from rhythm.sinks.tables.definition import Column, Engine, Table
from rhythm.sinks.tables.rows import DeadLetter, Row

__all__ = ["DEAD_LETTERS", "row"]

DEAD_LETTERS = Table(
    name="dead_letters",
    columns=(
        Column("topic", LC),
        Column("kafka_partition", "UInt16"),
        Column("kafka_offset", "UInt64"),
        Column("received_at", TS, ZSTD, comment="Kafka message timestamp"),
        Column("reason", LC),
        Column("detail", "String", ZSTD),
        Column("key_b64", "String", ZSTD),
        Column("value_b64", "String", ZSTD, comment="base64 of the first bytes of the value"),
        Column("value_size", "UInt32"),
        Column("dead_at", TS, default="now64(3, 'UTC')"),
    ),
    engine=Engine("ReplacingMergeTree"),
    order_by=("topic", "kafka_partition", "kafka_offset"),
    partition_by="toYYYYMM(received_at)",
    ttl_column="received_at",
    settings=DEDUP,
    comment="Messages the sink could not write, and why.",
    shard_by=("topic", "kafka_partition", "kafka_offset"),
)


def row(dead: DeadLetter, max_bytes: int) -> Row:
    """The `dead_letters` row: the raw value as base64, cut to `max_bytes`."""
    m = dead.message
    value = m.value or b""
    return (
        m.topic,
        m.partition,
        m.offset,
        m.timestamp_ms,
        dead.reason,
        dead.detail[:2000],
        base64.b64encode(m.key or b"").decode(),
        base64.b64encode(value[:max_bytes]).decode(),
        len(value),
    )

"""The column types and columns the tables share, and their deduplication settings.

All data tables keep `non_replicated_deduplication_window` (`DEDUP`) so the embedded engine
(and a single server) honours `insert_deduplication_token`: a retried batch is dropped, not
doubled. (The cluster form sets `replicated_deduplication_window` to the same value instead.)
"""

from __future__ import annotations

from collections.abc import Mapping

from rhythm.sinks.tables.definition import Column

__all__ = ["DEDUP", "DEDUP_WINDOW", "DELTA", "ENTITY", "INGEST", "LC", "LCN", "TS", "ZSTD"]

#: How many recent insert blocks a table remembers for deduplication. A retry comes right
#: after its failed attempt (the writer is sequential), so a few hundred would do.
DEDUP_WINDOW = 1000
#: the settings of every data table
DEDUP: Mapping[str, str] = {"non_replicated_deduplication_window": str(DEDUP_WINDOW)}

TS = "DateTime64(3, 'UTC')"
LC = "LowCardinality(String)"
LCN = "LowCardinality(Nullable(String))"
ZSTD = "ZSTD(1)"
#: the codec of columns that grow steadily (times, offsets): their deltas compress well
DELTA = "Delta, ZSTD(1)"

#: Ingest metadata, the same at the end of every table written from a topic (the processors
#: fill it with `rows.ingest`).
INGEST = (
    Column("received_at", TS, DELTA, comment="Kafka message timestamp"),
    Column("kafka_partition", "UInt16"),
    Column("kafka_offset", "UInt64", DELTA),
)

#: The entity a signal or an alert is about, and the role it played.
ENTITY = (
    Column("tenant", LC),
    Column("role", LC),
    Column("entity_type", LC),
    Column("entity_id", "String", ZSTD),
)

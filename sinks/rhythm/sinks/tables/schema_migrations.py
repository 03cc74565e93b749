"""`schema_migrations`: which migrations ran (`rhythm migrate`, `migrations.py`), one row per
version with the checksum of its statements."""

from __future__ import annotations

from rhythm.sinks.tables.columns import TS
from rhythm.sinks.tables.definition import Column, Engine, Table

__all__ = ["SCHEMA_MIGRATIONS"]

SCHEMA_MIGRATIONS = Table(
    name="schema_migrations",
    columns=(
        Column("version", "UInt32"),
        Column("name", "String"),
        Column("checksum", "String"),
        Column("applied_at", TS, default="now64(3, 'UTC')"),
    ),
    engine=Engine("ReplacingMergeTree", version="applied_at"),
    order_by=("version",),
    comment="Which migrations ran (rhythm migrate).",
)

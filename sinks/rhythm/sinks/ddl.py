"""Single-node DDL rendered from the definitions in `schema.py` and `views.py`.

Pure functions of (definition, database, retention): the same objects can be rendered for a
cluster later (ON CLUSTER, Replicated engines, Distributed tables) by another renderer.
"""

from __future__ import annotations

from string import Template

from rhythm.sinks.schema import Column, Engine, Table
from rhythm.sinks.views import View

__all__ = [
    "create_database",
    "create_table",
    "create_view",
    "quote",
    "ttl_expression",
]


def quote(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def create_database(database: str) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {database}"


def _column(column: Column) -> str:
    parts = [column.name, column.type]
    if column.default is not None:
        parts.append(f"DEFAULT {column.default}")
    if column.codec:
        parts.append(f"CODEC({column.codec})")
    if column.comment:
        parts.append(f"COMMENT {quote(column.comment)}")
    return " ".join(parts)


def _engine(engine: Engine) -> str:
    return f"{engine.kind}({engine.version or ''})"


def ttl_expression(table: Table, retention_days: int) -> str | None:
    """The TTL expression for a retention, or None when the table keeps everything."""
    if table.ttl_column is None or retention_days <= 0:
        return None
    return f"{table.ttl_column} + INTERVAL {retention_days} DAY"


def create_table(table: Table, database: str, retention_days: int = 0) -> str:
    lines = [_column(c) for c in table.columns]
    lines += [
        f"INDEX {i.name} {i.expr} TYPE {i.type} GRANULARITY {i.granularity}" for i in table.indexes
    ]
    body = ",\n    ".join(lines)
    sql = [f"CREATE TABLE IF NOT EXISTS {database}.{table.name}\n(\n    {body}\n)"]
    sql.append(f"ENGINE = {_engine(table.engine)}")
    if table.partition_by:
        sql.append(f"PARTITION BY {table.partition_by}")
    sql.append(f"ORDER BY ({', '.join(table.order_by)})")
    ttl = ttl_expression(table, retention_days)
    if ttl:
        sql.append(f"TTL {ttl}")
    if table.settings:
        sql.append("SETTINGS " + ", ".join(f"{k} = {v}" for k, v in table.settings.items()))
    if table.comment:
        sql.append(f"COMMENT {quote(table.comment)}")
    return "\n".join(sql)


def create_view(view: View, database: str) -> str:
    select = Template(view.select.strip()).substitute(db=database)
    if view.to_table is not None:
        # IF NOT EXISTS: replacing a materialized view drops what it would write meanwhile;
        # a change to one is a new migration that drops and recreates it on purpose.
        head = (
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{view.name} "
            f"TO {database}.{view.to_table}"
        )
    else:
        head = f"CREATE OR REPLACE VIEW {database}.{view.name}"
    comment = f"\nCOMMENT {quote(view.comment)}" if view.comment else ""
    return f"{head}\nAS\n{select}{comment}"

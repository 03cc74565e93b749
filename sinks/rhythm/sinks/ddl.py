"""Single-node DDL rendered from the definitions in `tables/`.

Pure functions of (definition, database, retention). `ddl_cluster.py` renders the same
objects for a cluster (ON CLUSTER, Replicated engines, Distributed tables) through the
keyword arguments of `create_table` and `create_view`, so both forms share every column,
key and clause that the definition gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from string import Template

from rhythm.sinks.tables.definition import Column, Engine, Table, View

__all__ = [
    "create_database",
    "create_table",
    "create_view",
    "on_cluster",
    "quote",
    "ttl_expression",
]


def quote(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def on_cluster(cluster: str | None) -> str:
    """The ` ON CLUSTER name` clause, or nothing on a single node."""
    return f" ON CLUSTER {cluster}" if cluster else ""


def create_database(database: str, *, cluster: str | None = None) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {database}{on_cluster(cluster)}"


def column_sql(column: Column) -> str:
    """A column's definition, as CREATE TABLE and ALTER TABLE ... ADD COLUMN write it."""
    return _column(column)


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


def create_table(
    table: Table,
    database: str,
    retention_days: int = 0,
    *,
    name: str | None = None,
    cluster: str | None = None,
    engine: str | None = None,
    settings: Mapping[str, str] | None = None,
) -> str:
    """CREATE TABLE for the definition. The keywords are the cluster form's: another `name`
    (the local table), ON CLUSTER, another `engine` clause and `settings`."""
    lines = [_column(c) for c in table.columns]
    lines += [
        f"INDEX {i.name} {i.expr} TYPE {i.type} GRANULARITY {i.granularity}" for i in table.indexes
    ]
    body = ",\n    ".join(lines)
    target = f"{database}.{name or table.name}{on_cluster(cluster)}"
    sql = [f"CREATE TABLE IF NOT EXISTS {target}\n(\n    {body}\n)"]
    sql.append(f"ENGINE = {engine or _engine(table.engine)}")
    if table.partition_by:
        sql.append(f"PARTITION BY {table.partition_by}")
    sql.append(f"ORDER BY ({', '.join(table.order_by)})")
    ttl = ttl_expression(table, retention_days)
    if ttl:
        sql.append(f"TTL {ttl}")
    settings = table.settings if settings is None else settings
    if settings:
        sql.append("SETTINGS " + ", ".join(f"{k} = {v}" for k, v in settings.items()))
    if table.comment:
        sql.append(f"COMMENT {quote(table.comment)}")
    return "\n".join(sql)


def create_view(
    view: View,
    database: str,
    *,
    cluster: str | None = None,
    tables: Mapping[str, str] | None = None,
) -> str:
    """CREATE VIEW for the definition. On a cluster (`cluster`), `tables` maps a table's name
    to the one a materialized view reads and writes (the local tables), and the joins and IN
    marked `${global}` become GLOBAL."""
    names = tables or {}
    source = names.get(view.source or "", view.source or "")
    select = Template(view.select.strip()).substitute(
        db=database, source=f"{database}.{source}", **{"global": "GLOBAL " if cluster else ""}
    )
    if view.to_table is not None:
        # IF NOT EXISTS: replacing a materialized view drops what it would write meanwhile;
        # a change to one is a new migration that drops and recreates it on purpose.
        head = (
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{view.name}{on_cluster(cluster)} "
            f"TO {database}.{names.get(view.to_table, view.to_table)}"
        )
    else:
        head = f"CREATE OR REPLACE VIEW {database}.{view.name}{on_cluster(cluster)}"
    comment = f"\nCOMMENT {quote(view.comment)}" if view.comment else ""
    return f"{head}\nAS\n{select}{comment}"

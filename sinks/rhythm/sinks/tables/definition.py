"""How a table and a view are defined as data (`columns.py` has the columns they share).

`ddl.py` renders these definitions for a single node, `ddl_cluster.py` for a ClickHouse
cluster (ON CLUSTER, Replicated*MergeTree, Distributed) from the same objects. Each table's
own choices (columns, engine, keys) are explained in its module (`events.py`, ...).

On a cluster, `shard_by` names the columns whose cityHash64 picks a row's shard. Rows that
replace each other (the same sorting key) must land on the same shard, because merges and
`FINAL` only collapse rows within one shard: so the shard key is made of columns the sorting
key determines (each table's module says which).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Column", "Engine", "Index", "Table", "View"]


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    codec: str | None = None
    default: str | None = None
    comment: str = ""


@dataclass(frozen=True)
class Index:
    name: str
    expr: str
    type: str
    granularity: int = 1


@dataclass(frozen=True)
class Engine:
    kind: Literal["MergeTree", "ReplacingMergeTree"]
    version: str | None = None


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    engine: Engine
    order_by: tuple[str, ...]
    partition_by: str | None = None
    #: retention applies to this time column (`<col> + INTERVAL n DAY`), if any
    ttl_column: str | None = None
    indexes: tuple[Index, ...] = ()
    settings: Mapping[str, str] = field(default_factory=dict)
    comment: str = ""
    #: on a cluster, cityHash64 of these columns picks the shard (empty: not inserted through
    #: the Distributed table; see the module docstring)
    shard_by: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        """The columns a row fills, in order (those with a default are left to it)."""
        return [c.name for c in self.columns if c.default is None]

    @property
    def column_types(self) -> list[str]:
        return [c.type for c in self.columns if c.default is None]

    def pick(self, *names: str) -> tuple[Column, ...]:
        """These columns of this table, in the order given (for a table that copies them)."""
        by_name = {c.name: c for c in self.columns}
        return tuple(by_name[name] for name in names)

    def changed(self, *, after: str, add: tuple[Column, ...], retype: Mapping[str, str]) -> Table:
        """This table as a migration leaves it: `add` inserted after the column `after`, the
        columns in `retype` given their new type."""
        columns: list[Column] = []
        for column in self.columns:
            new_type = retype.get(column.name)
            columns.append(
                column if new_type is None else dataclasses.replace(column, type=new_type)
            )
            if column.name == after:
                columns += add
        return dataclasses.replace(self, columns=tuple(columns))


@dataclass(frozen=True)
class View:
    """A view, its SELECT written with placeholders `ddl.create_view` fills in.

    `$db` stands for the database; `$source` for the table a materialized view is triggered
    by (the local table on a cluster); `${global}` is empty on a single node and `GLOBAL ` on
    a cluster, before a JOIN or IN whose right side reads a Distributed table (so it is
    computed once and shipped to the shards, not once per shard, which ClickHouse refuses by
    default with `distributed_product_mode = 'deny'`). `{name:Type}` are ClickHouse query
    parameters, which make a view parameterized: `SELECT * FROM rhythm.entity_timeline(
    tenant='acme', entity_type='user', entity_id='u-42')`.
    """

    name: str
    select: str
    #: a materialized view writes into this table (in the same database)
    to_table: str | None = None
    comment: str = ""
    #: a materialized view is triggered by inserts into this table (`$source`)
    source: str | None = None

"""The cluster form of the DDL, rendered from the same definitions as `ddl.py`.

Layout (`rhythm migrate --cluster NAME`, the sink with `RHYTHM_SINK_CLUSTER=NAME`):

- every data table `T` becomes `T_local` on every node, `ON CLUSTER`, with the Replicated
  variant of its engine (`ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/
  {database}/{table}', '{replica}'[, version])`, the `{shard}`/`{replica}` macros from each
  server's config) and the same columns, keys, partitioning, TTL and comment;
- `T` itself is a Distributed table over `T_local`, sharded by `cityHash64(<shard_by>)` (the
  entity, see `tables/`): the names the sink inserts into and analysts query stay the same
  as on a single node;
- the materialized view `entity_events_mv` reads `events_local` and writes
  `entity_events_local` on each node: an insert reaching a shard fans out there, in the same
  block, so a retried insert is deduplicated in the view's target as on a single node
  (`deduplicate_blocks_in_dependent_materialized_views`). `entity_events` is a Distributed
  table without sharding key, for reading only: its rows sit on their event's shard, and a
  sharding key that did not describe that placement would mislead shard pruning;
- the analysts' views are created on every node and read the Distributed tables, with
  GLOBAL JOIN / GLOBAL IN where a subquery reads a Distributed table too;
- `schema_migrations` is one replicated table spanning every node of every shard (a ZooKeeper
  path without `{shard}`, replica `{shard}-{replica}`): whichever node `rhythm migrate`
  reaches, it reads the whole history, and one INSERT records a version for the cluster.

The engine parameters stay those of the single-node form; the deduplication window moves
from `non_replicated_deduplication_window` to `replicated_deduplication_window`.
"""

from __future__ import annotations

from rhythm.sinks.ddl import create_database, create_table, create_view, on_cluster, quote
from rhythm.sinks.tables import SCHEMA_MIGRATIONS
from rhythm.sinks.tables.definition import Engine, Table, View

__all__ = [
    "BOOKKEEPING_PATH",
    "LOCAL_SUFFIX",
    "REPLICA",
    "TABLE_PATH",
    "cluster_bookkeeping_table",
    "cluster_database",
    "cluster_tables",
    "cluster_view",
    "local_name",
    "replicated_engine",
    "sharding_key",
]

#: Where a shard's replicas of a table meet in Keeper; the macros come from the server config
#: (`{shard}`, `{replica}`) and from the table (`{database}`, `{table}`).
TABLE_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
REPLICA = "{replica}"
#: The migration bookkeeping: one replica set over all nodes, so no `{shard}` in the path and
#: the shard in the replica name (replica macros often repeat across shards).
BOOKKEEPING_PATH = "/clickhouse/tables/all/{database}/{table}"
BOOKKEEPING_REPLICA = "{shard}-{replica}"
LOCAL_SUFFIX = "_local"

_DEDUP_SETTINGS = {"non_replicated_deduplication_window": "replicated_deduplication_window"}


def local_name(table: Table | str) -> str:
    name = table if isinstance(table, str) else table.name
    return name + LOCAL_SUFFIX


def replicated_engine(engine: Engine, path: str = TABLE_PATH, replica: str = REPLICA) -> str:
    """`Replicated<kind>(path, replica[, the single-node parameters])`."""
    params = [quote(path), quote(replica)]
    if engine.version:
        params.append(engine.version)
    return f"Replicated{engine.kind}({', '.join(params)})"


def _replicated_settings(table: Table) -> dict[str, str]:
    return {_DEDUP_SETTINGS.get(k, k): v for k, v in table.settings.items()}


def sharding_key(table: Table) -> str | None:
    if not table.shard_by:
        return None
    return f"cityHash64({', '.join(table.shard_by)})"


def cluster_database(database: str, cluster: str) -> str:
    return create_database(database, cluster=cluster)


def cluster_tables(table: Table, database: str, cluster: str, retention_days: int = 0) -> list[str]:
    """The replicated local table and the Distributed table in front of it."""
    local = create_table(
        table,
        database,
        retention_days,
        name=local_name(table),
        cluster=cluster,
        engine=replicated_engine(table.engine),
        settings=_replicated_settings(table),
    )
    params = [quote(cluster), quote(database), quote(local_name(table))]
    key = sharding_key(table)
    if key is not None:
        params.append(key)
    distributed = (
        f"CREATE TABLE IF NOT EXISTS {database}.{table.name}{on_cluster(cluster)}\n"
        f"AS {database}.{local_name(table)}\n"
        f"ENGINE = Distributed({', '.join(params)})"
    )
    if table.comment:
        distributed += f"\nCOMMENT {quote(table.comment)}"
    return [local, distributed]


def cluster_view(view: View, database: str, cluster: str) -> str:
    """A materialized view between local tables; any other view over the Distributed ones."""
    tables: dict[str, str] = {}
    if view.to_table is not None:
        for name in (view.source, view.to_table):
            if name is not None:
                tables[name] = local_name(name)
    return create_view(view, database, cluster=cluster, tables=tables)


def cluster_bookkeeping_table(database: str, cluster: str) -> str:
    return create_table(
        SCHEMA_MIGRATIONS,
        database,
        cluster=cluster,
        engine=replicated_engine(SCHEMA_MIGRATIONS.engine, BOOKKEEPING_PATH, BOOKKEEPING_REPLICA),
        settings=_replicated_settings(SCHEMA_MIGRATIONS),
    )

"""The cluster form of the DDL (`rhythm migrate --cluster`): every statement of both forms
through ClickHouse's own parser (`formatQuery` in the embedded engine; no cluster runs here),
and both forms rendered from one definition (the same columns, keys and clauses)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from typer.testing import CliRunner

from rhythm.sinks.ddl import create_table, create_view, quote
from rhythm.sinks.ddl_cluster import (
    BOOKKEEPING_PATH,
    TABLE_PATH,
    cluster_bookkeeping_table,
    cluster_tables,
    cluster_view,
    local_name,
    sharding_key,
)
from rhythm.sinks.migrations import MIGRATIONS, Target, migrate, script
from rhythm.sinks.schema import (
    DATA_TABLES,
    DEAD_LETTERS,
    ENTITY_EVENTS,
    EVENTS,
    SCHEMA_MIGRATIONS,
    SIGNALS,
    Table,
)
from rhythm.sinks.settings import SinkSettings
from rhythm.sinks.store import insert_settings
from rhythm.sinks.views import ENTITY_EVENTS_MV, VIEWS
from rhythm.stack.cli import app

CLUSTER = "rhythm_cluster"
DB = "analytics"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    # One engine path per process at a time; this module's tests share one and close it.
    path = tmp_path_factory.mktemp("parser") / "clickhouse"
    client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    try:
        yield client
    finally:
        client.close()


def parsed(engine: Client, sql: str) -> str:
    """ClickHouse's canonical formatting of `sql`; raises if its parser rejects it."""
    return str(engine.query(f"SELECT formatQuery({quote(sql)})").result_rows[0][0])


def every_statement(cluster: str | None) -> list[str]:
    target = Target(DB, cluster)
    retention = [target.alter_table(t) + " MODIFY TTL " + f"{t.ttl_column} + INTERVAL 7 DAY"
                 for t in DATA_TABLES if t.ttl_column]  # fmt: skip
    retention += [target.alter_table(t) + " REMOVE TTL" for t in DATA_TABLES if t.ttl_column]
    return [*script(DB, 30, cluster), *retention]


# -- ClickHouse's parser --------------------------------------------------------------------


def test_the_parser_check_can_fail(engine: Client) -> None:
    with pytest.raises(Exception, match=r"SYNTAX_ERROR|Syntax error"):
        parsed(engine, "CREATE TABLE t ON CLUSTER (a UInt8) ENGINE = Distributed(")


@pytest.mark.parametrize("cluster", [None, CLUSTER], ids=["single-node", "cluster"])
def test_every_statement_passes_clickhouses_parser(engine: Client, cluster: str | None) -> None:
    statements = every_statement(cluster)
    assert len(statements) > 20
    for sql in statements:
        formatted = parsed(engine, sql)
        assert formatted.split()[0] == sql.split()[0]  # CREATE / INSERT / ALTER, unchanged
        assert (f"ON CLUSTER {CLUSTER}" in formatted) == (
            cluster is not None and not sql.startswith("INSERT")
        ), sql


# -- one definition, two forms ---------------------------------------------------------------

_CLAUSES = ("PARTITION BY", "ORDER BY", "TTL", "COMMENT", "SETTINGS")


def _shape(formatted: str) -> dict[str, str]:
    """The columns block and each clause of a formatted CREATE TABLE."""
    columns = formatted[formatted.index("(") : formatted.index("\nENGINE")]
    shape = {"columns": columns}
    for line in formatted.splitlines():
        for clause in _CLAUSES:
            if line.startswith(clause + " "):
                shape[clause] = line
        if line.startswith("ENGINE = "):
            shape["ENGINE"] = line
    return shape


def _engine(line: str) -> tuple[str, list[str]]:
    match = re.fullmatch(r"ENGINE = (\w+)(?:\((.*)\))?", line)
    assert match is not None, line
    return match.group(1), [a.strip() for a in (match.group(2) or "").split(",") if a.strip()]


@pytest.mark.parametrize("table", DATA_TABLES, ids=[t.name for t in DATA_TABLES])
def test_the_local_table_is_the_single_node_table_replicated(engine: Client, table: Table) -> None:
    t = table
    single = _shape(parsed(engine, create_table(t, DB, 30)))
    local_sql, distributed_sql = cluster_tables(t, DB, CLUSTER, 30)
    local = _shape(parsed(engine, local_sql))
    for key in ("columns", "PARTITION BY", "ORDER BY", "TTL", "COMMENT"):
        assert local[key] == single[key], key
    # Same engine parameters, Replicated with the shard/replica path in front.
    single_kind, single_args = _engine(single["ENGINE"])
    local_kind, local_args = _engine(local["ENGINE"])
    assert single_kind == t.engine.kind and local_kind == "Replicated" + t.engine.kind
    assert local_args == [quote(TABLE_PATH), quote("{replica}"), *single_args]
    assert single_args == ([t.engine.version] if t.engine.version else [])
    # The deduplication window carries over under its replicated name.
    assert single["SETTINGS"] == "SETTINGS non_replicated_deduplication_window = 1000"
    assert local["SETTINGS"] == "SETTINGS replicated_deduplication_window = 1000"

    distributed = parsed(engine, distributed_sql)
    assert f"CREATE TABLE IF NOT EXISTS {DB}.{t.name} ON CLUSTER {CLUSTER}" in distributed
    assert f"AS {DB}.{local_name(t)}" in distributed
    shard = sharding_key(t)
    engine_args = [quote(CLUSTER), quote(DB), quote(local_name(t)), *([shard] if shard else [])]
    assert f"ENGINE = Distributed({', '.join(engine_args)})" in distributed


def test_shard_keys_keep_rows_that_replace_each_other_on_one_shard() -> None:
    names = {t.name: {c.name for c in t.columns} for t in DATA_TABLES}
    for table in DATA_TABLES:
        assert set(table.shard_by) <= names[table.name], table.name
    # The sorting key itself holds the shard key (versions of a window, a source position).
    for table in (SIGNALS, DEAD_LETTERS):
        assert set(table.shard_by) <= set(table.order_by), table.name
    # events: the actor, the same in every copy of an event_id; alerts: the entity, which the
    # alert id hashes. entity_events follows its event (filled on the event's shard).
    assert EVENTS.shard_by == ("tenant", "actor_type", "actor_id")
    assert ENTITY_EVENTS.shard_by == ()
    assert sharding_key(SIGNALS) == "cityHash64(tenant, role, entity_type, entity_id)"


def test_views_on_a_cluster(engine: Client) -> None:
    mv = parsed(engine, cluster_view(ENTITY_EVENTS_MV, DB, CLUSTER))
    assert f"TO {DB}.entity_events_local" in mv
    assert f"FROM {DB}.events_local" in mv
    single_mv = create_view(ENTITY_EVENTS_MV, DB)
    assert f"TO {DB}.entity_events\n" in single_mv and f"FROM {DB}.events\n" in single_mv
    for view in VIEWS:
        if view.to_table is not None:
            continue
        text = cluster_view(view, DB, CLUSTER)
        assert "_local" not in text  # analysts' views read the Distributed tables
        assert "GLOBAL" not in create_view(view, DB)
        # Without the markers, the cluster form is the single-node text plus ON CLUSTER.
        assert text.replace("GLOBAL ", "") == create_view(view, DB).replace(
            f"VIEW {DB}.{view.name}", f"VIEW {DB}.{view.name} ON CLUSTER {CLUSTER}"
        )
    top = cluster_view(next(v for v in VIEWS if v.name == "top_movers"), DB, CLUSTER)
    assert "GLOBAL INNER JOIN current" in top
    alerts = cluster_view(next(v for v in VIEWS if v.name == "open_alerts"), DB, CLUSTER)
    assert "(tenant, context_id) GLOBAL IN (SELECT" in alerts


def test_the_bookkeeping_table_spans_the_cluster(engine: Client) -> None:
    sql = parsed(engine, cluster_bookkeeping_table(DB, CLUSTER))
    assert BOOKKEEPING_PATH.count("{shard}") == 0
    assert (
        f"ENGINE = ReplicatedReplacingMergeTree({quote(BOOKKEEPING_PATH)}, "
        f"'{{shard}}-{{replica}}', applied_at)" in sql
    )
    assert (
        _shape(sql)["columns"]
        == _shape(parsed(engine, create_table(SCHEMA_MIGRATIONS, DB)))["columns"]
    )


def test_single_node_checksums_are_unchanged_by_the_cluster_form() -> None:
    # A store migrated before the cluster form existed must still be accepted as it is.
    assert [m.checksum() for m in MIGRATIONS] == ["2220951b7435bf1f", "611d54e93ecfcddd"]
    assert all(m.checksum(cluster=True) != m.checksum() for m in MIGRATIONS)
    assert MIGRATIONS[0].statements(DB, 0, CLUSTER) != MIGRATIONS[0].statements(DB, 0)


def test_the_single_node_script_is_what_migrate_applies(engine: Client) -> None:
    for sql in script("scripted", 30):
        engine.command(sql)
    report = migrate(engine, "scripted", retention_days=30)
    assert report.applied == [] and report.already == [m.version for m in MIGRATIONS]
    assert report.retention_changed == []


# -- the sink's side and the CLI -----------------------------------------------------------


def test_a_clustered_sink_inserts_synchronously_through_the_distributed_tables() -> None:
    assert insert_settings("t", distributed=True)["distributed_foreground_insert"] == 1
    assert "distributed_foreground_insert" not in insert_settings("t")
    settings = SinkSettings(dsn="http://ch:8123", cluster=CLUSTER)
    assert settings.cluster == CLUSTER
    with pytest.raises(ValueError, match="cluster needs a ClickHouse server DSN"):
        SinkSettings(dsn="chdb://:memory:", cluster=CLUSTER)
    with pytest.raises(ValueError, match="pattern"):
        SinkSettings(dsn="http://ch:8123", cluster="a; DROP")


def test_rhythm_migrate_print_emits_the_cluster_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHYTHM_SINK_DATABASE", DB)
    result = CliRunner().invoke(
        app, ["migrate", "--cluster", CLUSTER, "--print", "--retention-days", "30"]
    )
    assert result.exit_code == 0, result.output
    statements = [s.strip() for s in result.output.split(";\n\n")]
    assert statements[-1].endswith(";")
    statements[-1] = statements[-1][:-1]
    assert statements == script(DB, 30, CLUSTER)
    assert len(re.findall(r"ENGINE = Distributed\(", result.output)) == len(DATA_TABLES)
    single = CliRunner().invoke(app, ["migrate", "--print"])
    assert single.exit_code == 0 and "ON CLUSTER" not in single.output

"""The cluster form of the DDL (`rhythm migrate --cluster`): every statement of both forms
through ClickHouse's own parser (`formatQuery` in the embedded engine; no cluster runs here),
both forms rendered from one definition (the same columns, keys and clauses), and the
cluster form run for real on a one-shard cluster inside the embedded engine (a config with
`remote_servers`, macros and ClickHouse's in-process test Keeper): replicated tables,
Distributed inserts with deduplication, and every view giving what the single-node form gives.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from rhythm.sinks.settings import SinkSettings
from rhythm.sinks.store import Store, insert_settings
from rhythm.sinks.tables import (
    DATA_TABLES,
    DEAD_LETTERS,
    ENTITY_EVENTS,
    EVENTS,
    SCHEMA_MIGRATIONS,
    SIGNALS,
)
from rhythm.sinks.tables.definition import Table
from rhythm.sinks.tables.views import ENTITY_EVENTS_MV, VIEWS
from rhythm.stack.cli.main import app

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
        assert local.get(key) == single.get(key), key  # people has no PARTITION BY / TTL
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
    assert [m.checksum() for m in MIGRATIONS] == [
        "2220951b7435bf1f",
        "611d54e93ecfcddd",
        "e5e20c6239860bf9",
        "a54b65d32fb15d9f",
        "338468358ca208bd",
        "b9b0598d868fbeb4",
        "7d024ca111980eab",
    ]
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


# -- the cluster form, run on a one-shard cluster in the embedded engine --------------------

ONE_SHARD = """<clickhouse>
    <tcp_port>9000</tcp_port>
    <remote_servers>
        <{cluster}>
            <shard><replica><host>localhost</host><port>9000</port></replica></shard>
        </{cluster}>
    </remote_servers>
    <zookeeper><implementation>testkeeper</implementation></zookeeper>
    <macros><shard>1</shard><replica>r1</replica></macros>
</clickhouse>
"""


#: Closing the engine (also by garbage collection) with replicated tables on the test Keeper
#: hangs in chdb: the process running `run_on_one_shard` keeps it open and exits with os._exit.
_KEPT_OPEN: list[Client] = []


class OnTheOneNode:
    """The embedded engine has no distributed-DDL worker, so it refuses ON CLUSTER; on a
    one-node cluster ON CLUSTER runs the statement on that node, which is what this does.
    With `writable`, the Replicated engines also become their plain selves (and the
    deduplication window its non-replicated name): the embedded engine creates replicated
    tables on its test Keeper but never activates them for writing (they stay read-only).
    Everything else in the statements runs as written."""

    def __init__(self, client: Client, writable: bool = False) -> None:
        self.client = client
        self.writable = writable
        self.sent: list[str] = []

    def command(self, cmd: str) -> object:
        self.sent.append(cmd)
        sql = cmd.replace(f" ON CLUSTER {CLUSTER}", "")
        if self.writable:
            sql = re.sub(r"Replicated(\w+)\('[^']*', '[^']*'(?:, )?", r"\1(", sql)
            sql = sql.replace(
                "replicated_deduplication_window", "non_replicated_deduplication_window"
            )
        return self.client.command(sql)


def run_on_one_shard(work: Path) -> dict[str, Any]:
    """In a process of its own (the engine's config is per process): the cluster form's
    statements as written; then its data path beside a single-node database, with the same
    rows written to both and every view compared."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_sink_store import (  # type: ignore[import-not-found]
        HOUR_MS,
        T0,
        alert_row,
        event_row,
        signal_row,
    )

    from rhythm.sinks.tables import ALERTS

    config = work / "config.xml"
    config.write_text(ONE_SHARD.format(cluster=CLUSTER))
    client = clickhouse_connect.get_client(
        dsn=f"chdb://{work / 'clickhouse'}", chdb_options={"config-file": str(config)}
    )
    _KEPT_OPEN.append(client)  # never closed: see __main__
    out: dict[str, Any] = {}
    # 1. Every CREATE as written: Replicated tables on the test Keeper, macros expanded.
    as_written = OnTheOneNode(client)
    for sql in script(DB, 30, CLUSTER):
        # bookkeeping rows and ALTERs of the replicated tables need a writable replica
        # (step 2 runs them); the Distributed tables in front of them take theirs here
        if not sql.startswith("INSERT") and not re.match(rf"ALTER TABLE {DB}\.\w+_local", sql):
            as_written.command(sql)
    out["engines"] = {
        name: engine
        for name, engine in client.query(
            f"SELECT name, engine FROM system.tables WHERE database = '{DB}'"
        ).result_rows
    }
    out["replicas"] = {
        name: [path, replica]
        for name, path, replica in client.query(
            "SELECT table, zookeeper_path, replica_name FROM system.replicas "
            f"WHERE database = '{DB}'"
        ).result_rows
    }

    # 2. The data path: migrate() itself, inserts through the Distributed tables.
    node = OnTheOneNode(client, writable=True)
    report = migrate(node, "clustered", 30, cluster=CLUSTER)
    assert report.applied == [1, 2, 3, 4, 5, 6, 7], report.summary()
    # --print shows exactly the DDL and bookkeeping that migrate sent, in order.
    sent = iter(node.sent)
    assert all(any(sql == s for s in sent) for sql in script("clustered", 30, CLUSTER))
    assert migrate(node, "clustered", 30, cluster=CLUSTER).already == [1, 2, 3, 4, 5, 6, 7]
    out["retention_changed"] = migrate(node, "clustered", 7, cluster=CLUSTER).retention_changed
    # Back to keeping everything: the rows below are weeks old, and an expired row may be
    # dropped at any merge, which is not what is compared here.
    out["retention_removed"] = migrate(node, "clustered", 0, cluster=CLUSTER).retention_changed
    out["distributed"] = {
        name: engine
        for name, engine in client.query(
            "SELECT name, engine_full FROM system.tables WHERE database = 'clustered' "
            "AND engine = 'Distributed'"
        ).result_rows
    }
    migrate(client, "single", 0)

    t = T0 + 10 * HOUR_MS
    events = [
        event_row(0, actor_id="u-1", target_id="a-1"),
        event_row(1, actor_id="u-2", target_id="a-1", occurred_at=T0 + 61_000),
        event_row(2, actor_id="u-1", target_id="a-2", occurred_at=T0 + 90_000),
        event_row(3, actor_id="u-1", target_type=None, target_id=None, object_type="user",
                  object_id="u-1", occurred_at=T0 + 150_000),
        event_row(4, actor_type="agent", actor_id="x", context_id="thread-1", occurred_at=t),
        event_row(5, actor_type="customer", actor_id="c-2", context_id="thread-2",
                  occurred_at=t),
    ]  # fmt: skip
    signals = [signal_row(e, h, 10 if e != "surging" or h < 5 else 60)
               for h in range(6) for e in ("steady", "surging")]  # fmt: skip
    signals.append(signal_row("surging", 5, 61, version=2))
    alerts = [
        alert_row("s1", "silence", ("user", "back"), t),
        alert_row("r1", "resumed", ("user", "back"), t + 1000),
        alert_row("s2", "silence", ("user", "quiet"), t),
        alert_row("u1", "unanswered", ("customer", "c-1"), t, "thread-1"),
        alert_row("u2", "unanswered", ("customer", "c-2"), t, "thread-2"),
    ]
    for database, distributed in (("clustered", True), ("single", False)):
        store = Store(client, database, distributed=distributed)
        store.insert(EVENTS, events, "e1")
        store.insert(EVENTS, events, "e1")  # a retry: dropped by the token
        store.insert(EVENTS, events[:2], "e2")  # a re-sent copy: folded by FINAL
        store.insert(SIGNALS, signals, "s1")
        store.insert(ALERTS, alerts, "a1")
    views = {
        "timeline": "SELECT event_id, arraySort(roles), gap_s FROM {db}.entity_timeline("
        "tenant='acme', entity_type='user', entity_id='u-1')",
        "feed": "SELECT line, role FROM {db}.activity_feed(tenant='acme', "
        "entity_type='account', entity_id='a-1')",
        "movers": "SELECT entity_id, current_count, baseline_count, round(pace_z, 6) "
        "FROM {db}.top_movers(window_seconds=3600, baseline_windows=5)",
        "open_alerts": "SELECT alert_id, kind FROM {db}.open_alerts ORDER BY alert_id",
        "counts": "SELECT (SELECT count() FROM {db}.events), "
        "(SELECT count() FROM {db}.events FINAL), (SELECT count() FROM {db}.entity_events), "
        "(SELECT count() FROM {db}.signals FINAL)",
    }
    for name, sql in views.items():
        cluster_rows = client.query(sql.format(db="clustered")).result_rows
        single_rows = client.query(sql.format(db="single")).result_rows
        assert cluster_rows == single_rows, (name, cluster_rows, single_rows)
        out[name] = [[str(v) for v in row] for row in cluster_rows]
    return out


def test_the_cluster_form_runs_on_a_one_shard_cluster(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.splitlines()[-1])
    tables = sorted(t.name for t in DATA_TABLES if t.ttl_column)  # people, feedback: kept for good
    assert sorted(out["retention_changed"]) == tables == sorted(out["retention_removed"])
    for table in DATA_TABLES:
        # As written: the Replicated engine with the macros expanded, the Distributed table.
        assert out["engines"][local_name(table)] == "Replicated" + table.engine.kind
        assert out["engines"][table.name] == "Distributed"
        assert out["replicas"][local_name(table)] == [
            f"/clickhouse/tables/1/{DB}/{local_name(table)}",
            "r1",
        ]
        shard = sharding_key(table)
        assert out["distributed"][table.name] == (
            f"Distributed('{CLUSTER}', 'clustered', '{local_name(table)}'"
            + (f", {shard})" if shard else ")")
        )
    assert out["engines"]["entity_events_mv"] == "MaterializedView"
    assert out["replicas"]["schema_migrations"] == [
        f"/clickhouse/tables/all/{DB}/schema_migrations",
        "1-r1",
    ]
    # Through the Distributed tables: 6 events + 2 re-sent (the retry with the same token was
    # dropped), FINAL folds the copies, one signal per window; the same as on a single node
    # (compared in the child, view by view), and not empty.
    (counts,) = out["counts"]
    assert counts[:2] == ["8", "6"] and counts[3] == "12"
    assert [r[0] for r in out["movers"]] == ["surging", "steady"]
    assert out["open_alerts"] == [["s2", "silence"], ["u2", "unanswered"]]
    assert len(out["timeline"]) == 3 and len(out["feed"]) == 4


if __name__ == "__main__":
    try:
        print(json.dumps(run_on_one_shard(Path(sys.argv[1]))), flush=True)
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)

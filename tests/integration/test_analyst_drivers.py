"""The analysts' own tools against the sink's endpoint, each running the same catalogue:
connect, version, databases, tables, columns, an analyst view, a parameterised query, a time
series, a large result (streamed), an error, and a write refused (analysts are read-only).

Real drivers only: ClickHouse's JDBC driver (`com.clickhouse:jdbc-v2`, Maven Central),
clickhouse-go v2 over HTTP (a Go program), clickhouse-connect with its SQLAlchemy dialect
and pandas, and curl. tests/drivers/Makefile fetches and builds them once into the cache; a
missing `java`, `mvn`, `go` or `curl` fails the test (CI installs them: .ci/run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
import sqlalchemy
from pydantic import SecretStr

from rhythm.sinks.endpoint.engine import EmbeddedEngine
from rhythm.sinks.endpoint.policy import Credentials
from rhythm.sinks.endpoint.server import QueryEndpoint
from rhythm.sinks.migrations import migrate
from rhythm.sinks.service import engine_connection_string
from rhythm.sinks.store import Store
from rhythm.sinks.tables import EVENTS

from ..unit.test_sink_store import event_row

DRIVERS = Path(__file__).resolve().parents[1] / "drivers"
EVENTS_WRITTEN = 500
CALLS = [
    "connect", "version", "databases", "tables", "columns", "view", "parameterised",
    "time_series", "large_result", "error", "write_refused",
]  # fmt: skip
ADMIN = ("rhythm_admin", "catalogue-admin")
#: what each client's calls returned, for the table in docs/analysts.md
RESULTS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueryEndpoint]:
    path = str(tmp_path_factory.mktemp("analysts") / "clickhouse")
    writer = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    migrate(writer, "rhythm")
    Store(writer, "rhythm").insert(
        EVENTS, [event_row(i) for i in range(EVENTS_WRITTEN)], "catalogue"
    )
    engine = EmbeddedEngine(engine_connection_string(path))
    served = QueryEndpoint(
        engine, "127.0.0.1", 0, credentials=Credentials(ADMIN[0], SecretStr(ADMIN[1]))
    )
    served.start()
    try:
        yield served
    finally:
        served.stop()
        engine.close()
        writer.close()


def build(target: str, *tools: str) -> str:
    for tool in tools:
        assert shutil.which(tool), f"{tool} is not installed (.ci/run installs it)"
    result = subprocess.run(
        ["make", "-s", "-C", str(DRIVERS), target], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def run_catalogue(argv: list[str], client: str) -> dict[str, Any]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    calls = {}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            calls[row["call"]] = row
    RESULTS[client] = calls
    failed = {name: calls.get(name) for name in CALLS if not calls.get(name, {}).get("ok")}
    assert not failed, f"{client}: {failed}\nstderr: {result.stderr[-3000:]}"
    return calls


def check_details(calls: dict[str, Any]) -> None:
    """The same answers whatever the client."""
    assert "rhythm" in str(calls["databases"]["detail"])
    for table in ("events", "signals", "alerts", "open_alerts", "top_movers"):
        assert table in str(calls["tables"]["detail"])
    assert "occurred_at" in str(calls["columns"]["detail"])
    assert str(EVENTS_WRITTEN) in str(calls["parameterised"]["detail"])
    assert str(EVENTS_WRITTEN) in str(calls["time_series"]["detail"])
    assert "1000000" in str(calls["large_result"]["detail"])
    assert "READONLY" in str(calls["write_refused"]["detail"]) or "164" in str(
        calls["write_refused"]["detail"]
    )


def test_clickhouse_go_over_http(endpoint: QueryEndpoint) -> None:
    """Grafana's ClickHouse data source (clickhouse-go v2, protocol HTTP)."""
    binary = build("go", "go")
    calls = run_catalogue([binary, f"127.0.0.1:{endpoint.port}", "grafana", ""], "clickhouse-go")
    check_details(calls)


def test_jdbc_v2(endpoint: QueryEndpoint) -> None:
    """DBeaver, DataGrip, Metabase, Tableau (com.clickhouse:jdbc-v2)."""
    lib = build("jdbc", "java", "mvn")
    url = f"jdbc:clickhouse://127.0.0.1:{endpoint.port}/default"
    argv = ["java", "-cp", f"{lib}/*", str(DRIVERS / "jdbc" / "JdbcCatalogue.java"), url]
    calls = run_catalogue([*argv, "dbeaver", ""], "jdbc-v2")
    check_details(calls)


def _call(calls: dict[str, Any], name: str, body: Any) -> None:
    try:
        calls[name] = {"call": name, "ok": True, "detail": body()}
    except Exception as exc:
        calls[name] = {"call": name, "ok": False, "detail": f"{type(exc).__name__}: {exc}"}


def _refused(run: Any) -> str:
    try:
        run()
    except Exception as exc:
        return str(exc)
    raise AssertionError("no error")


def test_clickhouse_connect_sqlalchemy_and_pandas(endpoint: QueryEndpoint) -> None:
    """Superset (clickhouse-connect's SQLAlchemy dialect), pandas `query_df`, Python."""
    port = endpoint.port
    client = clickhouse_connect.get_client(host="127.0.0.1", port=port, username="pandas")
    engine = sqlalchemy.create_engine(f"clickhousedb://superset:@127.0.0.1:{port}/default")
    calls: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            inspector = sqlalchemy.inspect(conn)
            _call(calls, "connect", lambda: conn.execute(sqlalchemy.text("SELECT 1")).scalar())
            _call(calls, "version", lambda: client.server_version)
            _call(calls, "databases", inspector.get_schema_names)
            _call(calls, "tables", lambda: inspector.get_table_names(schema="rhythm")
                  + inspector.get_view_names(schema="rhythm"))  # fmt: skip
            _call(calls, "columns", lambda: [c["name"] for c in
                  inspector.get_columns("events", schema="rhythm")])  # fmt: skip
            view = "SELECT * FROM rhythm.top_movers(window_seconds=3600, baseline_windows=24)"
            _call(calls, "view", lambda: len(client.query_df(view)))
            sql = "SELECT count() FROM rhythm.events FINAL WHERE tenant = {tenant:String}"
            _call(calls, "parameterised",
                  lambda: client.command(sql, parameters={"tenant": "acme"}))  # fmt: skip
            series = (
                "SELECT toStartOfHour(occurred_at) AS h, count() AS n FROM rhythm.events FINAL "
                "GROUP BY h ORDER BY h"
            )
            _call(calls, "time_series", lambda: int(client.query_df(series)["n"].sum()))

            def large() -> int:
                sql = "SELECT number, toString(number) FROM system.numbers LIMIT 1000000"
                with client.query_rows_stream(sql) as stream:
                    return sum(1 for _ in stream)

            _call(calls, "large_result", large)
            _call(
                calls,
                "error",
                lambda: _refused(lambda: client.query("SELECT * FROM rhythm.no_such_table")),
            )
            _call(
                calls,
                "write_refused",
                lambda: _refused(lambda: client.command("DROP TABLE rhythm.events")),
            )
            _call(calls, "show_create",  # the first report
                  lambda: client.command("SHOW CREATE TABLE rhythm.signals"))  # fmt: skip
    finally:
        engine.dispose()
        client.close()
    RESULTS["clickhouse-connect"] = calls
    failed = {k: v for k, v in calls.items() if not v["ok"]}
    assert not failed and set(CALLS) <= set(calls), failed
    check_details(calls)
    assert "ReplacingMergeTree" in str(calls["show_create"]["detail"])


def test_curl(endpoint: QueryEndpoint) -> None:
    """curl as the ClickHouse docs show it: GET with ?query=, POST bodies, no extra settings."""
    assert shutil.which("curl"), "curl is not installed (.ci/run installs it)"
    base = f"http://127.0.0.1:{endpoint.port}/"

    def curl(*args: str) -> str:
        result = subprocess.run(
            ["curl", "-sS", "--fail-with-body", *args], capture_output=True, text=True, timeout=60
        )
        if result.returncode:
            raise RuntimeError(result.stdout + result.stderr)
        return result.stdout

    def count(text: str) -> int:
        return len(text.splitlines())

    calls: dict[str, Any] = {}
    _call(calls, "connect", lambda: curl(base + "ping"))
    _call(calls, "version", lambda: curl(base, "--data-binary", "SELECT version()"))
    _call(calls, "databases", lambda: curl(base + "?query=SHOW+DATABASES"))
    _call(calls, "tables", lambda: curl(base + "?query=SHOW+TABLES+FROM+rhythm"))
    _call(calls, "columns", lambda: curl(base, "--data-binary", "DESCRIBE TABLE rhythm.events"))
    _call(calls, "exists", lambda: curl(base + "?query=EXISTS+TABLE+rhythm.events"))
    _call(calls, "view", lambda: curl(base, "--data-binary",
                                      "SELECT * FROM rhythm.open_alerts FORMAT JSON"))  # fmt: skip
    _call(calls, "parameterised", lambda: curl(
        base + "?param_tenant=acme", "--data-binary",
        "SELECT count() FROM rhythm.events FINAL WHERE tenant = {tenant:String}"))  # fmt: skip
    _call(calls, "time_series", lambda: curl(
        base + "?default_format=CSVWithNames", "--data-binary",
        "SELECT toStartOfHour(occurred_at) AS h, count() AS n FROM rhythm.events FINAL "
        "GROUP BY h ORDER BY h"))  # fmt: skip
    _call(calls, "large_result", lambda: count(curl(
        base, "--data-binary", "SELECT number FROM system.numbers LIMIT 1000000")))  # fmt: skip
    _call(calls, "error", lambda: _refused(lambda: curl(base + "?query=SELECT+*+FROM+rhythm.x")))
    _call(calls, "write_refused", lambda: _refused(
        lambda: curl(base, "--data-binary", "DROP TABLE rhythm.events")))  # fmt: skip
    _call(calls, "show_create",
          lambda: curl(base + "?query=SHOW+CREATE+TABLE+rhythm.signals"))  # fmt: skip
    RESULTS["curl"] = calls
    failed = {k: v for k, v in calls.items() if not v["ok"]}
    assert not failed, failed
    check_details(calls)
    assert "1" in calls["exists"]["detail"]
    time_series = calls["time_series"]["detail"].splitlines()
    assert time_series[0] == '"h","n"'
    assert sum(int(line.split(",")[1]) for line in time_series[1:]) == EVENTS_WRITTEN

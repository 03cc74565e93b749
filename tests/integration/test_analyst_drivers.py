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
from clickhouse_connect.driver.exceptions import DatabaseError
from pydantic import SecretStr

from rhythm.sinks.endpoint import QueryEndpoint
from rhythm.sinks.endpoint_engine import EmbeddedEngine
from rhythm.sinks.endpoint_policy import Credentials
from rhythm.sinks.migrations import migrate
from rhythm.sinks.schema import EVENTS
from rhythm.sinks.service import engine_connection_string
from rhythm.sinks.store import Store

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

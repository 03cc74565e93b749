"""The endpoint is safe to leave running: each attack of issue #15 refused or limited with a
clear ClickHouse error, while the sink's writer (its own handle on the engine, as in
`rhythm sink`) keeps inserting; nothing it wrote is lost."""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from pydantic import SecretStr

from rhythm.sinks.endpoint.engine import EmbeddedEngine
from rhythm.sinks.endpoint.policy import Credentials, Limits
from rhythm.sinks.endpoint.server import QueryEndpoint
from rhythm.sinks.migrations import migrate
from rhythm.sinks.service import endpoint_credentials, engine_connection_string
from rhythm.sinks.settings import SinkSettings
from rhythm.sinks.store import Store
from rhythm.sinks.tables import EVENTS

from ..unit.test_sink_store import event_row

ADMIN = {"X-ClickHouse-User": "rhythm_admin", "X-ClickHouse-Key": "sec-admin-password"}
ANALYST_PASSWORD = "analyst-pw-not-in-logs"
ANALYST = {"X-ClickHouse-User": "alice", "X-ClickHouse-Key": ANALYST_PASSWORD}
MAX_CONNECTIONS = 32


class Served:
    def __init__(self, endpoint: QueryEndpoint, store: Store) -> None:
        self.endpoint = endpoint
        self.store = store
        self.written = 0
        self.errors: list[BaseException] = []

    def write(self, batches: int, start: int) -> None:
        """The sink's writer path: columnar inserts with tokens on its own handle."""
        try:
            for b in range(batches):
                rows = [event_row(start + b * 100 + i) for i in range(100)]
                self.written += self.store.insert(EVENTS, rows, f"sec-{start}-{b}")
        except BaseException as exc:
            self.errors.append(exc)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    path = str(tmp_path_factory.mktemp("security") / "clickhouse")
    writer = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    migrate(writer, "rhythm")
    engine = EmbeddedEngine(engine_connection_string(path))
    endpoint = QueryEndpoint(
        engine,
        "127.0.0.1",
        0,
        credentials=Credentials(
            "rhythm_admin", SecretStr(ADMIN["X-ClickHouse-Key"]), SecretStr(ANALYST_PASSWORD)
        ),
        limits=Limits(max_execution_time=2, max_result_bytes=64 * 1024**2),
        max_connections=MAX_CONNECTIONS,
        max_body_bytes=64 * 1024**2,
        allowed_hosts=("rhythm.internal",),
    )
    endpoint.start()
    try:
        yield Served(endpoint, Store(writer, "rhythm"))
    finally:
        endpoint.stop()
        engine.close()
        writer.close()


def http(
    served: Served, query: str | None = None, body: bytes | None = None, method: str = "POST",
    headers: dict[str, str] | None = None, **params: str,
) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    if query is not None:
        params["query"] = query
    url = f"http://127.0.0.1:{served.endpoint.port}/?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers or ANALYST)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def refused(result: tuple[int, dict[str, str], bytes], code: int, status: int) -> str:
    got, headers, body = result
    assert (got, headers.get("X-ClickHouse-Exception-Code")) == (status, str(code)), body
    return body.decode()


def test_drop_through_a_get_changes_nothing(served: Served) -> None:
    for who in (ANALYST, ADMIN):  # as ClickHouse: a GET is read-only whoever sends it
        text = refused(
            http(served, "DROP TABLE rhythm.alerts", method="GET", headers=who), 164, 403
        )
        assert "readonly" in text.lower()
    assert http(served, "EXISTS TABLE rhythm.alerts", method="GET")[2] == b"1\n"


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE rhythm.alerts",
        "CREATE TABLE rhythm.x (a UInt8) ENGINE = Memory",
        "ALTER TABLE rhythm.alerts DELETE WHERE 1",
        "INSERT INTO rhythm.dead_letters (topic) VALUES ('x')",
        "TRUNCATE TABLE rhythm.events",
        "SET max_execution_time = 0",
        "SELECT count() FROM system.numbers SETTINGS max_execution_time = 0",
    ],
)
def test_analysts_are_read_only(served: Served, sql: str) -> None:
    refused(http(served, body=sql.encode()), 164, 403)


def test_the_admin_writes_and_runs_ddl(served: Served) -> None:
    assert http(served, body=b"CREATE TABLE default.adm (a UInt8) ENGINE = Memory",
                headers=ADMIN)[0] == 200  # fmt: skip
    assert http(served, body=b"DROP TABLE default.adm", headers=ADMIN)[0] == 200


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT file('/proc/self/environ')",
        "SELECT * FROM url('http://127.0.0.1:1/x', 'CSV', 'a String')",
        "SELECT * FROM remote('127.0.0.1:9000', system.one)",
        "SELECT * FROM s3('http://127.0.0.1:1/b/k', 'CSV', 'a String')",
        "SELECT * FROM view(SELECT FILE('/etc/hostname'))",
        "CREATE TABLE default.f (a String) ENGINE = File(CSV, '/tmp/rhythm-f.csv')",
        "CREATE TABLE default.e (a String) ENGINE = Executable('x.sh', CSV)",
        "INSERT INTO FUNCTION file('/tmp/rhythm-i.csv', 'CSV', 'a String') VALUES ('x')",
        "SYSTEM SHUTDOWN",
        "BACKUP TABLE rhythm.events TO File('/tmp/rhythm-backup')",
        "SELECT 1; SELECT file('/etc/hostname')",
    ],
)
def test_nothing_reaches_files_processes_or_the_network(served: Served, sql: str) -> None:
    for who in (ANALYST, ADMIN):
        status, headers, body = http(served, body=sql.encode(), headers=who)
        assert status >= 400, body
        code = headers["X-ClickHouse-Exception-Code"]
        assert code in ("497", "164", "62"), body  # refused, readonly, or one statement only


def test_into_outfile_writes_no_file(served: Served, tmp_path: Path) -> None:
    target = tmp_path / "out.tsv"
    for who in (ANALYST, ADMIN):
        sql = f"SELECT 1 INTO OUTFILE '{target}'"
        assert "INTO OUTFILE" in refused(http(served, body=sql.encode(), headers=who), 497, 403)
    assert not target.exists()


def test_browsers_cannot_send_queries(served: Served) -> None:
    page = {**ANALYST, "Origin": "https://evil.example"}
    assert "Origin" in refused(http(served, "SELECT 1", headers=page), 497, 403)
    cross = {**ANALYST, "Sec-Fetch-Site": "cross-site"}
    refused(http(served, "SELECT 1", headers=cross), 497, 403)
    # DNS rebinding: the page's name now resolves to 127.0.0.1, the Host header still says it
    rebound = {**ANALYST, "Host": f"evil.example:{served.endpoint.port}"}
    assert "Host" in refused(http(served, "SELECT 1", headers=rebound), 497, 403)
    named = {**ANALYST, "Host": f"rhythm.internal:{served.endpoint.port}"}
    assert http(served, "SELECT 1", headers=named)[2] == b"1\n"


def test_a_zip_bomb_is_cut_off_after_decompression(served: Served) -> None:
    bomb = gzip.compress(b" " * (256 * 1024**2), 9)  # 256 MiB of blanks in ~250 KB
    assert len(bomb) < 1024**2
    for who in (ANALYST, ADMIN):  # analysts: 1 MiB of SQL; the admin: max_body_bytes
        headers = {**who, "Content-Encoding": "gzip"}
        assert "larger than" in refused(http(served, body=bomb, headers=headers), 307, 413)
    assert http(served, "SELECT 1")[2] == b"1\n"


def test_a_10_gb_result_is_refused(served: Served) -> None:
    sql = b"SELECT randomString(1000) FROM system.numbers LIMIT 10000000"
    text = refused(http(served, body=sql, wait_end_of_query="1"), 396, 500)
    assert "TOO_MANY_ROWS_OR_BYTES" in text
    # streamed: the response breaks off with the error after at most about the limit
    with socket.create_connection(("127.0.0.1", served.endpoint.port), timeout=60) as sock:
        request = (
            f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-ClickHouse-User: alice\r\n"
            f"X-ClickHouse-Key: {ANALYST_PASSWORD}\r\nContent-Length: {len(sql)}\r\n\r\n"
        )
        sock.sendall(request.encode() + sql)
        received = bytearray()
        while chunk := sock.recv(1 << 20):
            received += chunk
    assert b"TOO_MANY_ROWS_OR_BYTES" in received[-4096:]
    assert len(received) < 3 * 64 * 1024**2


def test_a_query_that_runs_forever_is_stopped(served: Served) -> None:
    text = refused(http(served, body=b"SELECT count() FROM system.numbers"), 159, 500)
    assert "TIMEOUT_EXCEEDED" in text
    # an analyst cannot raise the limit, only lower it
    slow = http(served, body=b"SELECT count() FROM system.numbers", max_execution_time="3600")
    assert "maximum: 2" in refused(slow, 159, 500)


def test_500_parallel_connections_while_the_sink_writes(served: Served) -> None:
    writer = threading.Thread(target=served.write, args=(40, 1_000_000))
    writer.start()
    outcomes: list[Any] = []
    lock = threading.Lock()
    start = threading.Barrier(500)

    sql = b"SELECT sum(number) FROM numbers(100000)"
    request = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-ClickHouse-User: alice\r\n"
        f"X-ClickHouse-Key: {ANALYST_PASSWORD}\r\nConnection: close\r\n"
        f"Content-Length: {len(sql)}\r\n\r\n"
    ).encode() + sql

    def client() -> None:
        """All 500 connect first, then all send (a raw socket each: really parallel)."""
        outcome: Any
        try:
            with socket.create_connection(("127.0.0.1", served.endpoint.port), 60) as sock:
                start.wait()
                with contextlib.suppress(OSError):
                    sock.sendall(request)
                reply = bytearray()
                while chunk := sock.recv(65536):
                    reply += chunk
            outcome = (int(reply.split(b" ", 2)[1]),) if reply else "closed"
        except threading.BrokenBarrierError:
            outcome = "barrier"
        except OSError as exc:  # a refused connection is an outcome too
            outcome = type(exc).__name__
            with contextlib.suppress(threading.BrokenBarrierError):
                start.wait()
        with lock:
            outcomes.append(outcome)

    threads_before = threading.active_count()
    clients = [threading.Thread(target=client) for _ in range(500)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(120)
    writer.join(120)
    assert len(outcomes) == 500
    kinds = {str(o) for o in outcomes}
    assert kinds <= {"(200,)", "(503,)", "ConnectionResetError", "closed"}, kinds
    assert outcomes.count((200,)) >= 1  # served, up to alice's 4 at a time
    assert served.endpoint.refused > 0  # the flood hit the connection bound
    assert threading.active_count() <= threads_before + 2
    assert served.errors == [] and served.written == 4000
    count = http(served, "SELECT count() FROM rhythm.events WHERE event_id IN "
                 "(SELECT event_id FROM rhythm.events)")[2]  # fmt: skip
    assert int(count) >= 4000
    assert http(served, "SELECT 1")[2] == b"1\n"  # and it answers as before


def test_per_user_concurrency(served: Served) -> None:
    results: list[int] = []
    start = threading.Barrier(8)

    def client() -> None:
        start.wait()
        status = http(served, body=b"SELECT sleepEachRow(0.5) FROM numbers(2) FORMAT Null")[0]
        results.append(status)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results.count(200) >= 1 and results.count(503) >= 1, results  # 202 -> 503


def test_passwords_are_never_logged(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="rhythm.sinks"):
        http(served, "SELECT 1", headers={}, user="alice", password=ANALYST_PASSWORD)
        refused(http(served, "SELECT 1", headers={}, user="alice", password="wrong"), 516, 401)
    assert caplog.records  # the request lines were logged, with the password masked
    assert ANALYST_PASSWORD not in caplog.text and "wrong" not in caplog.text


def test_the_admin_password_file_is_private(tmp_path: Path) -> None:
    settings = SinkSettings(data_dir=tmp_path)
    first = endpoint_credentials(settings)
    path = settings.admin_password_file()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == first.admin_password.get_secret_value()
    assert endpoint_credentials(settings).admin_password == first.admin_password  # kept
    with pytest.raises(ValueError, match="loopback"):
        SinkSettings(data_dir=tmp_path, http_host="0.0.0.0")  # no analyst password: refused

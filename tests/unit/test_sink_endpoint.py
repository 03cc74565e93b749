"""The ClickHouse HTTP endpoint over the embedded store: clickhouse-connect and plain HTTP
(what curl sends) against it, on a temporary chdb path; and the pure parts under it."""

from __future__ import annotations

import gzip
import json
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
import urllib3
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from pydantic import SecretStr

from rhythm.sinks.endpoint.codecs import (
    SUPPORTED,
    choose_encoding,
    compressor,
    decompress_stream,
)
from rhythm.sinks.endpoint.engine import EmbeddedEngine
from rhythm.sinks.endpoint.policy import Credentials
from rhythm.sinks.endpoint.server import QueryEndpoint
from rhythm.sinks.endpoint.sql import output_format, produces_result, split_insert
from rhythm.sinks.migrations import migrate
from rhythm.sinks.service import _open_and_migrate, engine_connection_string
from rhythm.sinks.settings import SinkSettings
from rhythm.sinks.store import Store
from rhythm.sinks.tables import EVENTS
from rhythm.stack.ports import free_port

from .test_sink_store import event_row

ADMIN_USER, ADMIN_PASSWORD = "rhythm_admin", "admin-secret"
CREDENTIALS = Credentials(ADMIN_USER, SecretStr(ADMIN_PASSWORD))
#: the admin's headers for plain HTTP
AS_ADMIN = {"X-ClickHouse-User": ADMIN_USER, "X-ClickHouse-Key": ADMIN_PASSWORD}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Client, QueryEndpoint]]:
    """The store opened as the sink opens it (a clickhouse-connect chdb client: the writer)
    and the endpoint beside it, on a free port."""
    path = str(tmp_path / "clickhouse")
    writer = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    engine = EmbeddedEngine(engine_connection_string(path))
    endpoint = QueryEndpoint(
        engine, "127.0.0.1", 0, credentials=CREDENTIALS, status=lambda: {"held_messages": 3}
    )
    endpoint.start()
    try:
        migrate(writer, "rhythm")
        yield writer, endpoint
    finally:
        endpoint.stop()
        engine.close()
        writer.close()


@pytest.fixture
def analyst(served: tuple[Client, QueryEndpoint]) -> Iterator[Client]:
    client = clickhouse_connect.get_client(host="127.0.0.1", port=served[1].port)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def admin(served: tuple[Client, QueryEndpoint]) -> Iterator[Client]:
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=served[1].port, username=ADMIN_USER, password=ADMIN_PASSWORD
    )
    try:
        yield client
    finally:
        client.close()


def http(endpoint: QueryEndpoint, path: str, body: bytes | None = None, **headers: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{endpoint.port}{path}", data=body, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# -- clickhouse-connect ---------------------------------------------------------------------


def test_clickhouse_connect_connects_queries_and_commands(analyst: Client) -> None:
    assert str(analyst.server_version).count(".") >= 2
    result = analyst.query(
        "SELECT 1 AS one, 'a' AS s, toLowCardinality('lc') AS lc, "
        "toDateTime64('2026-10-01 12:00:00.123', 3, 'UTC') AS t, [1, 2] AS arr"
    )
    assert result.column_names == ("one", "s", "lc", "t", "arr")
    assert result.result_rows == [
        # naive UTC: what clickhouse-connect returns from a UTC server too
        (1, "a", "lc", datetime(2026, 10, 1, 12, 0, 0, 123000), [1, 2])
    ]
    assert analyst.command("SELECT version()") == analyst.server_version
    assert analyst.query("SELECT {x:UInt32} + 1", parameters={"x": 41}).result_rows == [(42,)]
    assert analyst.query_df("SELECT number FROM numbers(5)").shape == (5, 1)
    assert analyst.query_arrow("SELECT number FROM numbers(7)").num_rows == 7
    with analyst.query_rows_stream("SELECT number FROM numbers(300000)") as stream:
        assert sum(1 for _ in stream) == 300_000


def test_an_empty_result_still_names_its_columns(analyst: Client) -> None:
    result = analyst.query("SELECT event_id, tenant FROM rhythm.events")
    assert result.column_names == ("event_id", "tenant")
    assert result.result_rows == []


def test_inserts_are_compressed_chunked_and_deduplicated_by_token(
    served: tuple[Client, QueryEndpoint], admin: Client
) -> None:
    analyst = admin
    analyst.command(
        "CREATE TABLE default.t (a UInt64, s String, d DateTime64(3, 'UTC')) ENGINE = "
        "MergeTree ORDER BY a SETTINGS non_replicated_deduplication_window = 100"
    )
    data: list[list[Any]] = [
        list(range(5000)),
        [f"s{i}" for i in range(5000)],
        [datetime.now(UTC)] * 5000,
    ]
    for _ in range(2):  # lz4 by default, several frames
        summary = analyst.insert(
            "default.t", data, column_names=["a", "s", "d"], column_oriented=True,
            settings={"insert_deduplication_token": "same"},
        )  # fmt: skip
        assert summary.written_rows == 5000
    assert analyst.command("SELECT count() FROM default.t") == 5000
    port = served[1].port
    for n, compression in enumerate(("gzip", "zstd", False), start=1):
        other = clickhouse_connect.get_client(
            host="127.0.0.1", port=port, compress=compression,
            username=ADMIN_USER, password=ADMIN_PASSWORD,
        )  # fmt: skip
        try:
            other.insert("default.t", [[n], ["x"], [datetime.now(UTC)]],
                         column_names=["a", "s", "d"], column_oriented=True)  # fmt: skip
            assert other.command("SELECT count() FROM default.t") == 5000 + n
        finally:
            other.close()


def test_settings_apply_to_one_request_and_sessions_keep_their_own(
    served: tuple[Client, QueryEndpoint], admin: Client
) -> None:
    analyst = admin

    def max_threads(**settings: Any) -> str:
        sql = "SELECT value FROM system.settings WHERE name = 'max_threads'"
        return str(analyst.query(sql, settings=settings).result_rows[0][0])

    default = max_threads()
    assert max_threads(max_threads=1) == "1"
    assert max_threads() == default  # put back after the request
    analyst.command("SET max_threads = 1")  # session state, as on a server
    assert max_threads() == "1"
    other = clickhouse_connect.get_client(
        host="127.0.0.1", port=served[1].port, username=ADMIN_USER, password=ADMIN_PASSWORD
    )
    try:  # another client is another session
        sql = "SELECT value FROM system.settings WHERE name = 'max_threads'"
        assert other.query(sql).result_rows[0][0] == default
    finally:
        other.close()


def test_errors_come_back_as_clickhouse_errors(analyst: Client) -> None:
    with pytest.raises(DatabaseError) as raised:
        analyst.query("SELECT * FROM rhythm.nope")
    assert raised.value.code == 60
    with pytest.raises(DatabaseError, match="UNKNOWN_SETTING"):
        analyst.query("SELECT 1", settings={"no_such_setting_at_all": 1})
    assert analyst.query("SELECT 2").result_rows == [(2,)]  # the session goes on


def test_form_encoded_parameters(served: tuple[Client, QueryEndpoint]) -> None:
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=served[1].port, form_encode_query_params=True
    )
    try:
        rows = client.query("SELECT {s:String} AS s", parameters={"s": "x" * 10}).result_rows
        assert rows == [("x" * 10,)]
    finally:
        client.close()


# -- plain HTTP (curl) ----------------------------------------------------------------------


def test_plain_http_like_curl(served: tuple[Client, QueryEndpoint]) -> None:
    _, endpoint = served
    status, headers, body = http(endpoint, "/?query=SELECT%201%2C%20%27x%27")
    assert (status, body) == (200, b"1\tx\n")
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    assert headers["X-ClickHouse-Timezone"]
    assert headers["X-ClickHouse-Query-Id"]
    status, _, body = http(endpoint, "/", b"SELECT number FROM numbers(3) FORMAT JSONEachRow")
    assert [json.loads(x) for x in body.splitlines()] == [{"number": n} for n in range(3)]
    status, _, body = http(endpoint, "/?default_format=CSV", b"SELECT 'a', 2")
    assert body == b'"a",2\n'
    csv = b"INSERT INTO rhythm.dead_letters (topic, kafka_partition, kafka_offset, received_at, "
    csv += b"reason, detail, key_b64, value_b64, value_size) FORMAT CSV\n"
    csv += b"t,0,1,2026-10-01 00:00:00,bad_magic,d,,,0\nt,0,2,2026-10-01 00:00:00,bad_magic,d,,,0\n"
    status, headers, body = http(endpoint, "/", csv, **AS_ADMIN)
    assert status == 200 and body == b""
    assert json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    query = "INSERT%20INTO%20rhythm.dead_letters%20(topic,kafka_partition,kafka_offset,"
    query += "received_at,reason,detail,key_b64,value_b64,value_size)%20FORMAT%20TSV"
    row = b"t\t0\t3\t2026-10-01 00:00:00\tx\t\t\t\t0\n"
    status, _, _ = http(endpoint, f"/?query={query}", row, **AS_ADMIN)
    assert status == 200
    _, _, body = http(endpoint, "/?query=SELECT%20count()%20FROM%20rhythm.dead_letters")
    assert body == b"3\n"
    status, headers, body = http(endpoint, "/?query=SELEC%20nope%20FROM")
    assert status >= 400 and headers["X-ClickHouse-Exception-Code"] and b"Code: " in body
    assert http(endpoint, "/ping")[2] == b"Ok.\n"
    assert json.loads(http(endpoint, "/rhythm/status")[2]) == {"held_messages": 3}
    assert http(endpoint, "/nowhere")[0] == 404


def test_compressed_responses_and_request_bodies(served: tuple[Client, QueryEndpoint]) -> None:
    _, endpoint = served
    sql = b"SELECT number FROM numbers(1000) FORMAT CSV"
    expected = "".join(f"{n}\n" for n in range(1000)).encode()
    _, headers, body = http(endpoint, "/", sql, **{"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(body) == expected
    _, headers, body = http(endpoint, "/", gzip.compress(sql), **{"Content-Encoding": "gzip"})
    assert body == expected
    _, _, body = http(endpoint, "/", zlib.compress(sql), **{"Content-Encoding": "deflate"})
    assert body == expected
    _, headers, body = http(endpoint, "/?enable_http_compression=0", sql,
                            **{"Accept-Encoding": "gzip"})  # fmt: skip
    assert "Content-Encoding" not in headers and body == expected


def test_chunked_request_bodies(served: tuple[Client, QueryEndpoint]) -> None:
    _, endpoint = served
    parts = [b"SELECT ", b"sum(number) ", b"FROM numbers(10)"]
    response = urllib3.PoolManager().request(
        "POST", f"http://127.0.0.1:{endpoint.port}/", body=iter(parts), chunked=True
    )
    assert (response.status, response.data) == (200, b"45\n")


def test_password_when_configured(tmp_path: Path) -> None:
    engine = EmbeddedEngine(engine_connection_string(str(tmp_path / "ch")))
    credentials = Credentials(ADMIN_USER, SecretStr(ADMIN_PASSWORD), SecretStr("s3cret"))
    endpoint = QueryEndpoint(engine, "127.0.0.1", 0, credentials=credentials)
    endpoint.start()
    try:
        assert http(endpoint, "/?query=SELECT%201")[0] == 401
        assert http(endpoint, "/?query=SELECT%201&password=s3cret")[2] == b"1\n"
        wrong_admin = {"X-ClickHouse-User": ADMIN_USER, "X-ClickHouse-Key": "s3cret"}
        assert http(endpoint, "/?query=SELECT%201", None, **wrong_admin)[0] == 401
        good = clickhouse_connect.get_client(
            host="127.0.0.1", port=endpoint.port, username="anyone", password="s3cret"
        )
        assert good.command("SELECT 1") == 1
        good.close()
    finally:
        endpoint.stop()
        engine.close()


def test_a_server_dsn_store_is_migrated_and_written_over_http(
    served: tuple[Client, QueryEndpoint], tmp_path: Path
) -> None:
    """The writer's path for `http://` stores, against the endpoint standing in for a
    server: connect (retrying until it answers), migrate, insert with tokens."""
    writer, endpoint = served
    writer.command("DROP DATABASE rhythm SYNC")
    settings = SinkSettings(
        data_dir=tmp_path,
        dsn=f"http://127.0.0.1:{endpoint.port}",
        retention_days=3650,
        clickhouse_user=ADMIN_USER,
        clickhouse_password=ADMIN_PASSWORD,
    )
    client = _open_and_migrate(settings, threading.Event())
    assert client is not None
    try:
        rows = [event_row(i) for i in range(20)]
        store = Store(client, "rhythm")
        store.insert(EVENTS, rows, "http-token")
        store.insert(EVENTS, rows, "http-token")
        assert writer.command("SELECT count() FROM rhythm.events") == 20
        assert writer.command("SELECT count() FROM rhythm.entity_events") == 100
    finally:
        client.close()
    stopped = threading.Event()
    stopped.set()
    closed = SinkSettings(data_dir=tmp_path, dsn=f"http://127.0.0.1:{free_port()}")
    assert _open_and_migrate(closed, stopped) is None  # gives up only when stopped


# -- one engine, many threads ---------------------------------------------------------------


def test_the_writer_and_the_endpoint_share_the_engine_concurrently(
    served: tuple[Client, QueryEndpoint],
) -> None:
    """The sink's writer (its own chdb handle) inserts while analysts query through the
    endpoint from several threads: no global lock, no errors, every insert counted."""
    writer, endpoint = served
    writer.command("CREATE TABLE default.c (a UInt64) ENGINE = MergeTree ORDER BY a")
    errors: list[BaseException] = []
    done = threading.Event()

    def analyst() -> None:
        client = clickhouse_connect.get_client(host="127.0.0.1", port=endpoint.port)
        try:
            while not done.is_set():
                client.query("SELECT count(), sum(a) FROM default.c")
                client.query("SELECT sum(number) FROM numbers(200000)")
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=analyst) for _ in range(3)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    for i in range(60):
        writer.insert("default.c", [list(range(i * 100, i * 100 + 100))], column_names=["a"],
                      column_oriented=True)  # fmt: skip
    elapsed = time.monotonic() - started
    done.set()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert writer.command("SELECT count() FROM default.c") == 6000
    assert elapsed < 30


# -- the pure parts -------------------------------------------------------------------------


def test_split_insert_follows_clickhouses_data_start_rule() -> None:
    head = split_insert(b"INSERT INTO db.t (a, b) FORMAT Native\n\x00\x01\n")
    assert head is not None
    assert (head.target, head.fmt, head.data_start) == ("db.t (a, b)", "Native", 38)
    one_line = split_insert(b"insert into t format CSV 1,2\n")
    assert one_line is not None and one_line.fmt == "CSV"
    assert b"insert into t format CSV 1,2\n"[one_line.data_start :] == b"1,2\n"
    commented = split_insert(b"-- hi\n/* x */ INSERT INTO t SETTINGS a='1' FORMAT TSV\r\n1\n")
    assert commented is not None and commented.target == "t SETTINGS a='1'"
    assert split_insert(b"INSERT INTO t VALUES ('FORMAT CSV')") is None
    assert split_insert(b"INSERT INTO t SELECT * FROM s FORMAT Native") is None
    assert split_insert(b"SELECT 1 FORMAT CSV") is None


def test_output_format_and_statements_with_results() -> None:
    assert output_format("SELECT 1\n FORMAT Native", "TSV") == "Native"
    assert output_format("SELECT 1 format JSON;", "TSV") == "JSON"
    assert output_format("SELECT 'FORMAT CSV' AS x", "TabSeparated") == "TabSeparated"
    for sql in ("SELECT 1", " with x as (select 1) select * from x", "(SELECT 1)",
                "SHOW TABLES", "DESCRIBE t", "EXISTS t", "-- c\nEXPLAIN SELECT 1"):  # fmt: skip
        assert produces_result(sql), sql
    for sql in ("CREATE TABLE t (a int) ENGINE=Memory", "INSERT INTO t VALUES (1)",
                "DETACH TABLE t", "SET a = 1", "", "   "):  # fmt: skip
        assert not produces_result(sql), sql


@pytest.mark.parametrize("encoding", SUPPORTED)
def test_compression_round_trips_in_several_frames(encoding: str) -> None:
    data = [bytes(range(256)) * 50, b"tail" * 1000]
    frames = []
    for part in data:  # clickhouse-connect compresses each block as its own frame
        codec = compressor(encoding)
        frames.append(codec.compress(part) + codec.flush())
    stream = [b"".join(frames)[i : i + 777] for i in range(0, len(b"".join(frames)), 777)]
    assert b"".join(decompress_stream(iter(stream), encoding)) == b"".join(data)
    assert choose_encoding(f"identity, {encoding};q=0.5") == encoding

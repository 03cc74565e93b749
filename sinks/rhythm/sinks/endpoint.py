"""A ClickHouse HTTP interface over the embedded store, served by the running sink.

The embedded engine can be opened by one process only, so while the sink runs, analysts and
tools reach the store through this endpoint, exactly as they would a server:
`clickhouse_connect.get_client(host='127.0.0.1', port=8123)` or
`curl 'http://127.0.0.1:8123/?query=SELECT+1'`.

What it implements of ClickHouse's protocol (enough for clickhouse-connect's connect
sequence, query(), command(), insert(), raw_query/raw_stream, and curl):
- the query from the `query` parameter, the body, or both; `INSERT ... FORMAT f` followed by
  its data, streamed into the engine; multipart form fields;
- `param_<name>` query parameters, `database`, `default_format`, `session_id`/`session_timeout`
  (a session keeps its own handle, SET and USE state), `query_id`; any other parameter is a
  setting for that request;
- request bodies in chunked transfer and lz4/zstd/gzip/deflate/br Content-Encoding;
  responses compressed per Accept-Encoding (unless `enable_http_compression=0`);
- X-ClickHouse-Query-Id, -Format, -Timezone, -Summary, -Server-Display-Name headers; errors
  as the server sends them (status, X-ClickHouse-Exception-Code, `Code: N. DB::Exception`);
- results materialized when `wait_end_of_query=1` (what clickhouse-connect's query() asks) or
  the format has a global header, else streamed block by block (chunked);
- the output format from the statement's FORMAT, `default_format` or the
  `X-ClickHouse-Format` request header; `Native` for the client's `client_protocol_version`
  (clickhouse-go: BlockInfo and custom-serialization bytes, `native.py`); statements chdb
  cannot stream (SHOW, DESCRIBE, EXISTS...) materialized whatever `wait_end_of_query` says;
- `/ping`, `/replicas_status`, and `/rhythm/status` (the sink's state as JSON).
Not implemented: external data tables, `/play`; `X-ClickHouse-Progress` is one header with
the totals (results are produced before the headers go, or streamed without progress).

Who may do what (analysts read-only with per-query limits, the admin credential for writes
and DDL, nothing reaching files, processes or the network, no browser-borne requests) is
`endpoint_policy.py`. Connections are served by at most `max_connections` threads (beyond
that: 503 at once), queries run in bounded slots (analysts' and the admin's apart, so
analysts cannot hold up a sink writing through the endpoint), and each analyst user runs at
most `max_queries_per_user` at once.
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import json
import logging
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from rhythm.sinks.endpoint_engine import EmbeddedEngine, EngineError, Session, Stats
from rhythm.sinks.endpoint_policy import (
    ADMIN,
    ANALYST,
    Credentials,
    Limits,
    PolicyError,
    Principal,
    analyst_settings,
    check_ast,
    check_browser,
    denied,
    has_outfile,
    tsv_escape,
)
from rhythm.sinks.endpoint_sql import (
    MAX_INSERT_HEAD,
    InsertHead,
    output_format,
    produces_result,
    split_insert,
    strip_leading_comments,
)
from rhythm.sinks.http_codec import (
    BodyTooLargeError,
    Compressor,
    NativeBlocks,
    UnsupportedEncodingError,
    bounded,
    choose_encoding,
    compressor,
    decompress_stream,
    read_chunked,
    read_exact,
)
from rhythm.sinks.native import NativeRevisionWriter, UnsupportedNativeTypeError

__all__ = ["QueryEndpoint"]

log = logging.getLogger(__name__)

#: URL parameters that are the protocol's own, not settings for the engine.
TRANSPORT_PARAMS = frozenset(
    {
        "query", "database", "default_format", "session_id", "session_timeout",
        "session_check", "query_id", "user", "password", "quota_key", "compress",
        "decompress", "buffer_size", "wait_end_of_query", "client_protocol_version", "role",
        "stacktrace", "enable_http_compression", "send_progress_in_http_headers",
        "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
        "http_zlib_compression_level", "http_response_buffer_size", "add_http_cors_header",
    }
)  # fmt: skip
#: formats whose blocks can be sent one after another as they come
STREAMABLE = frozenset(
    {"Native", "TabSeparated", "TSV", "TabSeparatedRaw", "TSVRaw", "CSV", "RowBinary",
     "JSONEachRow", "JSONCompactEachRow", "Values", "LineAsString"}
)  # fmt: skip
_CONTENT_TYPES = {
    "Native": "application/octet-stream",
    "RowBinary": "application/octet-stream",
    "RowBinaryWithNamesAndTypes": "application/octet-stream",
    "Arrow": "application/octet-stream",
    "ArrowStream": "application/octet-stream",
    "Parquet": "application/octet-stream",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
}
_STATUS = {
    516: 401, 62: 400, 115: 400, 60: 404, 81: 404, 164: 403, 202: 503, 48: 501, 497: 403,
    307: 413, 203: 503,
}  # fmt: skip
MAX_SQL_BYTES = 64 * 1024 * 1024
#: what an analyst's request body (SQL only: analysts do not insert) may decompress to
MAX_ANALYST_BODY = 1024 * 1024
_NATIVE_BLOCKS = "clickhouse-native-blocks"  # compress=1: not an HTTP Content-Encoding
_STREAM_WORDS = ("SELECT", "WITH", "(")
_FIRST = re.compile(r"[A-Za-z]+|\(")
_SECRET_PARAM = re.compile(r"(password|key)=[^&\s]*", re.IGNORECASE)
_TRAILING_FORMAT = re.compile(r"\s+FORMAT\s+[A-Za-z][A-Za-z0-9_]*\s*;?\s*\Z", re.IGNORECASE)
_HOSTNAME = socket.gethostname()

StatusProvider = Callable[[], dict[str, Any]]


def _content_type(fmt: str) -> str:
    if fmt in _CONTENT_TYPES:
        return _CONTENT_TYPES[fmt]
    if fmt.startswith(("TabSeparated", "TSV")):
        return "text/tab-separated-values; charset=UTF-8"
    return "text/plain; charset=UTF-8"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _native_header(meta: list[dict[str, str]]) -> bytes:
    """A Native block with the columns and no rows: what a server sends for an empty result
    (chdb sends nothing, and a client then would not know the column names)."""
    out = bytearray(_varint(len(meta)) + _varint(0))
    for column in meta:
        for text in (column["name"], column["type"]):
            raw = text.encode()
            out += _varint(len(raw)) + raw
    return bytes(out)


class _Request:
    """A parsed request: parameters, and the body as a stream of decoded chunks."""

    def __init__(self, params: dict[str, str], body: Iterator[bytes]) -> None:
        self.params = params
        self.body = body

    def settings(self) -> dict[str, str]:
        return {
            k: v
            for k, v in self.params.items()
            if k not in TRANSPORT_PARAMS and not k.startswith("param_")
        }

    def bind(self) -> dict[str, str]:
        return {k[6:]: v for k, v in self.params.items() if k.startswith("param_")}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rhythm-sink"
    timeout = 10  # idle keep-alive connections are closed after this (ClickHouse: 10 s)
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        text = _SECRET_PARAM.sub(r"\1=***", format % args)  # never a password in a log
        log.debug("endpoint %s: %s", self.client_address[0], text)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    # -- routing ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        query_id = ""
        endpoint = self.server.endpoint
        try:
            browser = {
                name: value
                for name in ("Host", "Origin", "Sec-Fetch-Site")
                if (value := self.headers.get(name)) is not None
            }
            check_browser(browser, endpoint.allowed_hosts, endpoint.allowed_origins)
            if url.path in ("/ping", "/replicas_status"):
                self._drain_body()
                self._send_plain(200, b"Ok.\n")
                return
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            principal = self._authenticate(params)
            if url.path == "/rhythm/status":
                self._drain_body()
                status = endpoint.status() if endpoint.status else {}
                self._send_plain(200, json.dumps(status).encode(), "application/json")
                return
            if url.path not in ("", "/"):
                self._drain_body()
                text = f"There is no handle {url.path}. Use / or /ping.\n"
                self._send_plain(404, text.encode())
                return
            request = self._request(params, principal)
            query_id = request.params.get("query_id") or str(uuid.uuid4())
            with endpoint.slot(principal):
                self._run(request, principal, query_id)
        except EngineError as exc:
            self._send_error(exc, query_id)
        except UnsupportedEncodingError as exc:
            self._send_error(EngineError(1001, f"Code: 1001. {exc}"), query_id)
        except BodyTooLargeError as exc:
            message = f"Code: 307. DB::Exception: {exc}. (TOO_MANY_BYTES)"
            self._send_error(EngineError(307, message), query_id)
        except UnsupportedNativeTypeError as exc:
            self._send_error(EngineError(50, f"Code: 50. DB::Exception: {exc}"), query_id)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # a bug here must not take the sink down
            log.exception("endpoint request failed")
            self._send_error(
                EngineError(1001, f"Code: 1001. {type(exc).__name__}: {exc}"), query_id
            )

    # -- request parsing ----------------------------------------------------------------

    def _raw_body(self) -> Iterator[bytes]:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return read_chunked(self.rfile)
        return read_exact(self.rfile, int(self.headers.get("Content-Length") or 0))

    def _drain_body(self) -> None:
        for _ in bounded(self._raw_body(), MAX_ANALYST_BODY):
            pass

    def _request(self, params: dict[str, str], principal: Principal) -> _Request:
        limit = self.server.endpoint.max_body_bytes
        if principal.role == ANALYST:
            limit = min(limit, MAX_ANALYST_BODY)
        raw = bounded(self._raw_body(), limit)  # bounded before and after decompression
        body = bounded(decompress_stream(raw, self.headers.get("Content-Encoding")), limit)
        for header, name in (("X-ClickHouse-Format", "default_format"),
                             ("X-ClickHouse-Database", "database")):  # fmt: skip
            value = self.headers.get(header)
            if value and name not in params:
                params[name] = value
        # Only multipart is special (clickhouse-connect's form encoding); any other body,
        # whatever its Content-Type (curl --data says urlencoded), is the query or its data.
        content_type = (self.headers.get("Content-Type") or "").lower()
        if content_type.startswith("multipart/form-data"):
            params.update(self._form_fields(b"".join(body)))
            return _Request(params, iter(()))
        return _Request(params, body)

    def _form_fields(self, body: bytes) -> dict[str, str]:
        head = f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        fields: dict[str, str] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                raise EngineError(
                    48, "Code: 48. External data is not supported by the embedded endpoint."
                )
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = payload.decode()
        return fields

    def _authenticate(self, params: dict[str, str]) -> Principal:
        """Basic auth, X-ClickHouse-User/Key, or user/password parameters (as ClickHouse)."""
        user = params.get("user") or self.headers.get("X-ClickHouse-User") or ""
        given = params.get("password") or self.headers.get("X-ClickHouse-Key") or ""
        auth = self.headers.get("Authorization") or ""
        if auth[:6].lower() == "basic ":
            with contextlib.suppress(ValueError, OSError, UnicodeDecodeError):
                user, _, given = base64.b64decode(auth[6:]).decode().partition(":")
        return self.server.endpoint.credentials.authenticate(user, given)

    # -- execution ----------------------------------------------------------------------

    def _run(self, request: _Request, principal: Principal, query_id: str) -> None:
        params = request.params
        query_param = params.get("query")
        head: InsertHead | None
        text = b""
        if query_param is not None:
            text = query_param.encode()
            head = split_insert(text)
            data: Iterator[bytes] = request.body
            if head is not None:
                data = _prepend(text[head.data_start :], request.body)
            else:
                rest = _read_all(request.body)
                text = text + b"\n" + rest if rest else text
        else:
            prefix, data = _read_prefix(request.body, MAX_INSERT_HEAD)
            head = split_insert(prefix)
            if head is not None:
                data = _prepend(prefix[head.data_start :], data)
            else:
                text = prefix + _read_all(data)
        endpoint = self.server.endpoint
        engine = endpoint.engine
        if head is not None and (principal.role != ADMIN or self.command == "GET"):
            raise _readonly(principal, self.command)
        settings = request.settings()
        if _protocol_version(params):
            # Native for a protocol revision is re-encoded here; LowCardinality as plain.
            settings["low_cardinality_allow_in_native_format"] = "0"
        if principal.role == ADMIN and self.command != "GET":
            session_id = params.get("session_id") or None
            timeout = float(params.get("session_timeout") or 0) or None
            with engine.session(session_id and f"admin/{session_id}", timeout) as session:
                session.prepare(params.get("database"), settings)
                if head is not None:
                    self._guard(session, f"INSERT INTO {head.target} FORMAT {head.fmt}", {})
                    stats = session.insert(head.target, head.fmt, data)
                    self._send_result(query_id, None, b"", stats, params)
                    return
                self._statement(session, text.decode("utf-8", "replace"), request, query_id)
            return
        # Analysts, and any GET: a fresh handle made read-only after the request's settings
        # (readonly = 1 refuses SET, SETTINGS clauses, table functions, writes and DDL).
        key = f"{principal.user}/{params.get('session_id') or ''}"
        database = params.get("database") or endpoint.analyst_database(key)
        readonly = "1"
        if principal.role == ANALYST:
            settings = analyst_settings(settings, endpoint.limits)
        else:
            readonly = "2"  # ClickHouse: a GET may change settings, never data
        with engine.session(None) as session:
            session.prepare(database, settings)
            session.run(f"SET readonly = {readonly}")
            sql = text.decode("utf-8", "replace")
            used = self._statement(session, sql, request, query_id)
            if used is not None and params.get("session_id"):
                endpoint.remember_database(key, used)

    def _guard(self, session: Session, sql: str, bind: dict[str, str]) -> str:
        """One statement that stays inside the store, as the engine's parser reads it;
        returns its AST."""
        formatted, _ = session.query(
            "SELECT formatQuerySingleLine({q:String})", "RawBLOB", {"q": tsv_escape(sql)}
        )
        if has_outfile(formatted.decode("utf-8", "replace")):
            raise denied("INTO OUTFILE")
        ast, _ = session.query(f"EXPLAIN AST {sql}", "TabSeparatedRaw", bind)
        text = ast.decode("utf-8", "replace")
        check_ast(text, self.server.endpoint.engine.table_functions)
        return text

    def _statement(
        self, session: Session, sql: str, request: _Request, query_id: str
    ) -> str | None:
        """Runs the statement; returns the database a USE switched to (None otherwise)."""
        params = request.params
        ast = self._guard(session, sql, request.bind())
        fmt = output_format(sql, params.get("default_format") or "TabSeparated")
        has_result = produces_result(sql)
        wait = params.get("wait_end_of_query") == "1"
        revision = _protocol_version(params) if fmt == "Native" else 0
        first = _FIRST.match(strip_leading_comments(sql.encode()).decode("utf-8", "replace"))
        streams = first is not None and first.group(0).upper() in _STREAM_WORDS
        if has_result and streams and not wait and fmt in STREAMABLE:
            try:
                self._stream(session, sql, fmt, request, query_id, revision)
                return None
            except EngineError as exc:
                if exc.code != 36:  # "Streaming query is not supported": materialize it
                    raise
        data, stats = session.query(sql, fmt, request.bind())
        if has_result and not data and fmt == "Native":
            data = self._empty_native(session, sql, request)
        if revision:
            writer = NativeRevisionWriter(revision)
            data = writer.feed(data) + writer.finish()
        self._send_result(query_id, fmt if has_result else None, data, stats, params)
        head = ast.lstrip().split("\n", 1)[0].split()
        return head[1] if len(head) >= 2 and head[0] == "UseQuery" else None

    def _empty_native(self, session: Session, sql: str, request: _Request) -> bytes:
        inner = _TRAILING_FORMAT.sub("", sql).rstrip().rstrip(";")
        try:
            probe, _ = session.query(
                f"SELECT * FROM ({inner}) LIMIT 0 FORMAT JSON", "JSON", request.bind()
            )
            return _native_header(json.loads(probe)["meta"])
        except (EngineError, ValueError, KeyError):
            return b""

    # -- responses ----------------------------------------------------------------------

    def _headers(self, query_id: str, fmt: str | None, stats: Stats | None) -> None:
        self.send_header("X-ClickHouse-Server-Display-Name", _HOSTNAME)
        self.send_header("X-ClickHouse-Query-Id", query_id)
        self.send_header("X-ClickHouse-Timezone", self.server.endpoint.engine.timezone)
        if fmt is not None:
            self.send_header("X-ClickHouse-Format", fmt)
        self.send_header("Content-Type", _content_type(fmt or "TabSeparated"))
        if stats is not None:
            summary = json.dumps(stats.summary())
            if self._progress:
                self.send_header("X-ClickHouse-Progress", summary)
            self.send_header("X-ClickHouse-Summary", summary)
        self.send_header("Keep-Alive", f"timeout={self.timeout}")

    _progress = False

    def _encoding(self, params: dict[str, str]) -> str | None:
        if params.get("compress") == "1":
            return _NATIVE_BLOCKS
        if params.get("enable_http_compression") == "0":
            return None
        return choose_encoding(self.headers.get("Accept-Encoding"))

    def _codec(self, encoding: str) -> Compressor:
        return NativeBlocks() if encoding == _NATIVE_BLOCKS else compressor(encoding)

    def _content_encoding(self, encoding: str) -> None:
        if encoding != _NATIVE_BLOCKS:
            self.send_header("Content-Encoding", encoding)

    def _send_result(
        self, query_id: str, fmt: str | None, data: bytes, stats: Stats, params: dict[str, str]
    ) -> None:
        encoding = self._encoding(params) if data else None
        if encoding is not None:
            codec = self._codec(encoding)
            data = codec.compress(data) + codec.flush()
        stats.result_bytes = stats.result_bytes or len(data)
        self._progress = params.get("send_progress_in_http_headers") == "1"
        self.send_response(200)
        self._headers(query_id, fmt, stats)
        if encoding is not None:
            self._content_encoding(encoding)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(
        self, session: Session, sql: str, fmt: str, request: _Request, qid: str, revision: int
    ) -> None:
        chunks = session.stream(sql, fmt, request.bind())
        first = next(chunks, b"")  # errors in planning surface here, before any header
        if revision:
            chunks = _revised(_prepend(first, chunks), NativeRevisionWriter(revision))
            first = next(chunks, b"")
        encoding = self._encoding(request.params)
        codec = self._codec(encoding) if encoding else None
        self.send_response(200)
        self._headers(qid, fmt, None)
        if encoding is not None:
            self._content_encoding(encoding)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in _prepend(first, chunks):
                self._write_chunk(codec.compress(chunk) if codec else chunk)
            if codec is not None:
                self._write_chunk(codec.flush())
        except (EngineError, UnsupportedNativeTypeError) as exc:
            if not isinstance(exc, EngineError):
                exc = EngineError(50, f"Code: 50. DB::Exception: {exc}")
            # Headers are gone: say what happened in the body and break the response, so the
            # client sees an incomplete transfer rather than a short, valid-looking result.
            log.warning("endpoint: query %s failed while streaming: %s", qid, exc.message)
            with contextlib.suppress(ValueError, OSError):
                self._write_chunk(f"\n{exc.message}\n".encode())
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")

    def _write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _send_plain(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, exc: EngineError, query_id: str) -> None:
        message = exc.message
        if "(version " not in message:
            message += f" (version {self.server.endpoint.engine.version})"
        body = (message.rstrip() + "\n").encode()
        self.close_connection = True  # the request body may not have been read to its end
        try:
            self.send_response(_STATUS.get(exc.code, 500))
            self.send_header("X-ClickHouse-Exception-Code", str(exc.code))
            self.send_header("X-ClickHouse-Server-Display-Name", _HOSTNAME)
            if query_id:
                self.send_header("X-ClickHouse-Query-Id", query_id)
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _revised(chunks: Iterator[bytes], writer: NativeRevisionWriter) -> Iterator[bytes]:
    for chunk in chunks:
        out = writer.feed(chunk)
        if out:
            yield out
    writer.finish()


def _protocol_version(params: dict[str, str]) -> int:
    try:
        return max(0, int(params.get("client_protocol_version") or 0))
    except ValueError:
        return 0


def _readonly(principal: Principal, method: str) -> EngineError:
    why = "a GET request" if method == "GET" else f"user {principal.user} is read-only"
    return EngineError(
        164, f"Code: 164. DB::Exception: Cannot execute query in readonly mode ({why}). (READONLY)"
    )


def _read_all(chunks: Iterator[bytes]) -> bytes:
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) > MAX_SQL_BYTES:
            raise EngineError(
                62, f"Code: 62. DB::Exception: the query is longer than {MAX_SQL_BYTES} bytes"
            )
    return bytes(out)


def _read_prefix(chunks: Iterator[bytes], size: int) -> tuple[bytes, Iterator[bytes]]:
    """At least `size` bytes from the start of the body (or all of it), and the rest."""
    prefix = bytearray()
    for chunk in chunks:
        prefix += chunk
        if len(prefix) >= size:
            break
    return bytes(prefix), chunks


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` of them: beyond that a
    connection gets a 503 at once and is closed (a flood never grows the thread count)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    endpoint: QueryEndpoint
    connections: threading.BoundedSemaphore

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.acquire(blocking=False):
            self.endpoint.refused += 1
            with contextlib.suppress(OSError):
                request.settimeout(1)
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()


_BUSY_TEXT = (
    b"Code: 203. DB::Exception: Too many connections to the endpoint, try again later. "
    b"(NO_FREE_CONNECTION)\n"
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nX-ClickHouse-Exception-Code: 203\r\n"
    b"Content-Type: text/plain; charset=UTF-8\r\nConnection: close\r\n"
    + f"Content-Length: {len(_BUSY_TEXT)}\r\n\r\n".encode()
    + _BUSY_TEXT
)


class QueryEndpoint:
    """Serves `engine` over ClickHouse's HTTP interface on host:port (port 0 = any free)."""

    def __init__(
        self,
        engine: EmbeddedEngine,
        host: str = "127.0.0.1",
        port: int = 8123,
        *,
        credentials: Credentials,
        limits: Limits | None = None,
        max_concurrent_queries: int = 8,
        max_queries_per_user: int = 4,
        max_connections: int = 64,
        max_body_bytes: int = 1024**3,
        allowed_hosts: tuple[str, ...] = (),
        allowed_origins: tuple[str, ...] = (),
        status: StatusProvider | None = None,
    ) -> None:
        self.engine = engine
        self.credentials = credentials
        self.limits = limits or Limits()
        self.max_body_bytes = max_body_bytes
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = allowed_origins
        self.status = status
        self.max_queries_per_user = max_queries_per_user
        #: connections refused because all `max_connections` were taken
        self.refused = 0
        self._slots = {
            ANALYST: threading.BoundedSemaphore(max_concurrent_queries),
            ADMIN: threading.BoundedSemaphore(max_concurrent_queries),
        }
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        self._databases: dict[str, str] = {}
        self._server = _Server((host, port), _Handler, bind_and_activate=False)
        self._server.endpoint = self
        self._server.connections = threading.BoundedSemaphore(max_connections)
        try:
            self._server.server_bind()
            self._server.server_activate()
        except BaseException:
            self._server.server_close()
            raise
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @contextlib.contextmanager
    def slot(self, principal: Principal) -> Iterator[None]:
        """A query slot for the principal's role (waited for a while, then refused as a
        server does) and, for analysts, one of the user's `max_queries_per_user`."""
        per_user = principal.role == ANALYST
        if per_user:
            with self._lock:
                running = self._running.get(principal.user, 0)
                if running >= self.max_queries_per_user:
                    raise PolicyError(
                        202,
                        "Code: 202. DB::Exception: Too many simultaneous queries for user "
                        f"(max {self.max_queries_per_user}). (TOO_MANY_SIMULTANEOUS_QUERIES)",
                    )
                self._running[principal.user] = running + 1
        try:
            semaphore = self._slots[principal.role]
            if not semaphore.acquire(timeout=30):
                raise EngineError(
                    202,
                    "Code: 202. DB::Exception: Too many simultaneous queries. "
                    "(TOO_MANY_SIMULTANEOUS_QUERIES)",
                )
            try:
                yield
            finally:
                semaphore.release()
        finally:
            if per_user:
                with self._lock:
                    self._running[principal.user] -= 1
                    if not self._running[principal.user]:
                        del self._running[principal.user]

    def analyst_database(self, key: str) -> str | None:
        with self._lock:
            return self._databases.get(key)

    def remember_database(self, key: str, database: str) -> None:
        """An analyst's session keeps only its current database (readonly: no SET)."""
        with self._lock:
            if len(self._databases) >= 10_000:
                self._databases.clear()
            self._databases[key] = database

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how long stop() waits for the loop to notice
            name="rhythm-sink-endpoint",
            daemon=True,
        )
        self._thread.start()
        log.info("ClickHouse HTTP endpoint on http://%s:%d", self.host, self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

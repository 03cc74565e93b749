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
- `/ping`, `/replicas_status`, and `/rhythm/status` (the sink's state as JSON).
Not implemented: external data tables, progress headers, `/play`.
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import hmac
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

from pydantic import SecretStr

from rhythm.sinks.endpoint_engine import EmbeddedEngine, EngineError, Session, Stats
from rhythm.sinks.endpoint_sql import (
    MAX_INSERT_HEAD,
    InsertHead,
    output_format,
    produces_result,
    split_insert,
)
from rhythm.sinks.http_codec import (
    UnsupportedEncodingError,
    choose_encoding,
    compressor,
    decompress_stream,
    read_chunked,
    read_exact,
)

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
_STATUS = {516: 401, 62: 400, 115: 400, 60: 404, 81: 404, 164: 403, 202: 503, 48: 501}
MAX_SQL_BYTES = 64 * 1024 * 1024
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
    timeout = 120  # idle keep-alive connections are closed after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("endpoint %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    # -- routing ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        query_id = ""
        try:
            if url.path in ("/ping", "/replicas_status"):
                self._drain_body()
                self._send_plain(200, b"Ok.\n")
                return
            if url.path == "/rhythm/status":
                self._drain_body()
                status = self.server.endpoint.status() if self.server.endpoint.status else {}
                self._send_plain(200, json.dumps(status).encode(), "application/json")
                return
            if url.path not in ("", "/"):
                self._drain_body()
                text = f"There is no handle {url.path}. Use / or /ping.\n"
                self._send_plain(404, text.encode())
                return
            request = self._request(url.query)
            query_id = request.params.get("query_id") or str(uuid.uuid4())
            self._authorize(request.params)
            with self.server.endpoint.slot():
                self._run(request, query_id)
        except EngineError as exc:
            self._send_error(exc, query_id)
        except UnsupportedEncodingError as exc:
            self._send_error(EngineError(1001, f"Code: 1001. {exc}"), query_id)
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
        for _ in self._raw_body():
            pass

    def _request(self, query_string: str) -> _Request:
        params = dict(parse_qsl(query_string, keep_blank_values=True))
        body = decompress_stream(self._raw_body(), self.headers.get("Content-Encoding"))
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

    def _authorize(self, params: dict[str, str]) -> None:
        expected = self.server.endpoint.password
        if expected is None:
            return
        given = params.get("password") or self.headers.get("X-ClickHouse-Key") or ""
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Basic "):
            with contextlib.suppress(ValueError, OSError):
                given = base64.b64decode(auth[6:]).decode().partition(":")[2]
        if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
            raise EngineError(
                516,
                "Code: 516. DB::Exception: Authentication failed: password is incorrect. "
                "(AUTHENTICATION_FAILED)",
            )

    # -- execution ----------------------------------------------------------------------

    def _run(self, request: _Request, query_id: str) -> None:
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
        engine = self.server.endpoint.engine
        session_id = params.get("session_id") or None
        timeout = float(params.get("session_timeout") or 0) or None
        with engine.session(session_id, timeout) as session:
            session.prepare(params.get("database"), request.settings())
            if head is not None:
                stats = session.insert(head.target, head.fmt, data)
                self._send_result(query_id, None, b"", stats, params)
                return
            self._statement(session, text.decode("utf-8", "replace"), request, query_id)

    def _statement(self, session: Session, sql: str, request: _Request, query_id: str) -> None:
        params = request.params
        fmt = output_format(sql, params.get("default_format") or "TabSeparated")
        has_result = produces_result(sql)
        wait = params.get("wait_end_of_query") == "1"
        if has_result and not wait and fmt in STREAMABLE:
            self._stream(session, sql, fmt, request, query_id)
            return
        data, stats = session.query(sql, fmt, request.bind())
        if has_result and not data and fmt == "Native":
            data = self._empty_native(session, sql, request)
        self._send_result(query_id, fmt if has_result else None, data, stats, params)

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
            self.send_header("X-ClickHouse-Summary", json.dumps(stats.summary()))
        self.send_header("Keep-Alive", f"timeout={self.timeout}")

    def _encoding(self, params: dict[str, str]) -> str | None:
        if params.get("enable_http_compression") == "0":
            return None
        return choose_encoding(self.headers.get("Accept-Encoding"))

    def _send_result(
        self, query_id: str, fmt: str | None, data: bytes, stats: Stats, params: dict[str, str]
    ) -> None:
        encoding = self._encoding(params) if data else None
        if encoding is not None:
            codec = compressor(encoding)
            data = codec.compress(data) + codec.flush()
        stats.result_bytes = stats.result_bytes or len(data)
        self.send_response(200)
        self._headers(query_id, fmt, stats)
        if encoding is not None:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, session: Session, sql: str, fmt: str, request: _Request, qid: str) -> None:
        chunks = session.stream(sql, fmt, request.bind())
        first = next(chunks, b"")  # errors in planning surface here, before any header
        encoding = self._encoding(request.params)
        codec = compressor(encoding) if encoding else None
        self.send_response(200)
        self._headers(qid, fmt, None)
        if encoding is not None:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in _prepend(first, chunks):
                self._write_chunk(codec.compress(chunk) if codec else chunk)
            if codec is not None:
                self._write_chunk(codec.flush())
        except EngineError as exc:
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
    daemon_threads = True
    allow_reuse_address = True
    endpoint: QueryEndpoint


class QueryEndpoint:
    """Serves `engine` over ClickHouse's HTTP interface on host:port (port 0 = any free)."""

    def __init__(
        self,
        engine: EmbeddedEngine,
        host: str = "127.0.0.1",
        port: int = 8123,
        *,
        password: SecretStr | None = None,
        max_concurrent_queries: int = 8,
        status: StatusProvider | None = None,
    ) -> None:
        self.engine = engine
        self.password = password
        self.status = status
        self._slots = threading.BoundedSemaphore(max_concurrent_queries)
        self._server = _Server((host, port), _Handler)
        self._server.endpoint = self
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def slot(self) -> _Slot:
        return _Slot(self._slots)

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


class _Slot:
    """One of the concurrent-query slots, waited for a while, then refused as a server does."""

    def __init__(self, semaphore: threading.BoundedSemaphore) -> None:
        self._semaphore = semaphore

    def __enter__(self) -> None:
        if not self._semaphore.acquire(timeout=30):
            raise EngineError(
                202,
                "Code: 202. DB::Exception: Too many simultaneous queries. "
                "(TOO_MANY_SIMULTANEOUS_QUERIES)",
            )

    def __exit__(self, *exc: object) -> None:
        self._semaphore.release()

"""One request to the endpoint: route it, authenticate the caller, read its parameters and
body, and run its statement (an INSERT's data streamed in) under the policy: the admin on a
session's handle, analysts and any GET on a fresh read-only one."""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from rhythm.sinks.endpoint.codecs import (
    BodyTooLargeError,
    UnsupportedEncodingError,
    bounded,
    decompress_stream,
    read_chunked,
    read_exact,
)
from rhythm.sinks.endpoint.engine import EngineError, Session
from rhythm.sinks.endpoint.native import (
    NativeRevisionWriter,
    UnsupportedNativeTypeError,
    empty_block,
)
from rhythm.sinks.endpoint.policy import (
    ADMIN,
    ANALYST,
    Principal,
    analyst_settings,
    check_ast,
    check_browser,
    denied,
    has_outfile,
    tsv_escape,
)
from rhythm.sinks.endpoint.protocol import STREAMABLE, Request, protocol_version
from rhythm.sinks.endpoint.responses import ResponseWriter, prepend
from rhythm.sinks.endpoint.sql import (
    MAX_INSERT_HEAD,
    InsertHead,
    output_format,
    produces_result,
    split_insert,
    streams,
    without_format,
)

__all__ = ["RequestHandler"]

log = logging.getLogger(__name__)

MAX_SQL_BYTES = 64 * 1024 * 1024
#: what an analyst's request body (SQL only: analysts do not insert) may decompress to
MAX_ANALYST_BODY = 1024 * 1024
_SECRET_PARAM = re.compile(r"(password|key)=[^&\s]*", re.IGNORECASE)


class RequestHandler(ResponseWriter):
    """Serves one connection's requests (`ResponseWriter` writes the answers)."""

    def log_message(self, format: str, *args: Any) -> None:
        text = _SECRET_PARAM.sub(r"\1=***", format % args)  # never a password in a log
        log.debug("endpoint %s: %s", self.client_address[0], text)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
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

    def _request(self, params: dict[str, str], principal: Principal) -> Request:
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
            return Request(params, iter(()))
        return Request(params, body)

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

    def _run(self, request: Request, principal: Principal, query_id: str) -> None:
        params = request.params
        query_param = params.get("query")
        head: InsertHead | None
        text = b""
        if query_param is not None:
            text = query_param.encode()
            head = split_insert(text)
            data: Iterator[bytes] = request.body
            if head is not None:
                data = prepend(text[head.data_start :], request.body)
            else:
                rest = _read_all(request.body)
                text = text + b"\n" + rest if rest else text
        else:
            prefix, data = _read_prefix(request.body, MAX_INSERT_HEAD)
            head = split_insert(prefix)
            if head is not None:
                data = prepend(prefix[head.data_start :], data)
            else:
                text = prefix + _read_all(data)
        endpoint = self.server.endpoint
        engine = endpoint.engine
        if head is not None and (principal.role != ADMIN or self.command == "GET"):
            raise _readonly(principal, self.command)
        settings = request.settings()
        if protocol_version(params):
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

    def _statement(self, session: Session, sql: str, request: Request, query_id: str) -> str | None:
        """Runs the statement; returns the database a USE switched to (None otherwise)."""
        params = request.params
        ast = self._guard(session, sql, request.bind())
        fmt = output_format(sql, params.get("default_format") or "TabSeparated")
        has_result = produces_result(sql)
        wait = params.get("wait_end_of_query") == "1"
        revision = protocol_version(params) if fmt == "Native" else 0
        if has_result and streams(sql) and not wait and fmt in STREAMABLE:
            try:
                chunks = session.stream(sql, fmt, request.bind())
                self._send_stream(query_id, fmt, chunks, revision, params)
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

    def _empty_native(self, session: Session, sql: str, request: Request) -> bytes:
        inner = without_format(sql).rstrip().rstrip(";")
        try:
            probe, _ = session.query(
                f"SELECT * FROM ({inner}) LIMIT 0 FORMAT JSON", "JSON", request.bind()
            )
            return empty_block(json.loads(probe)["meta"])
        except (EngineError, ValueError, KeyError):
            return b""


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

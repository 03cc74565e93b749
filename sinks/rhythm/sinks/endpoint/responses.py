"""Writing a response as a ClickHouse server does: its headers, a result whole or streamed
block by block (compressed as the client asked), a plain answer, or an error."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING

from rhythm.sinks.endpoint.codecs import Compressor, NativeBlocks, choose_encoding, compressor
from rhythm.sinks.endpoint.engine import EngineError, Stats
from rhythm.sinks.endpoint.native import NativeRevisionWriter, UnsupportedNativeTypeError
from rhythm.sinks.endpoint.protocol import content_type, http_status

if TYPE_CHECKING:
    from rhythm.sinks.endpoint.server import EndpointServer

__all__ = ["ResponseWriter", "prepend"]

log = logging.getLogger(__name__)

_NATIVE_BLOCKS = "clickhouse-native-blocks"  # compress=1: not an HTTP Content-Encoding
_HOSTNAME = socket.gethostname()


class ResponseWriter(BaseHTTPRequestHandler):
    """The response half of the request handler (`handler.RequestHandler`)."""

    protocol_version = "HTTP/1.1"
    server_version = "rhythm-sink"
    timeout = 10  # idle keep-alive connections are closed after this (ClickHouse: 10 s)
    server: EndpointServer
    _progress = False

    def _headers(self, query_id: str, fmt: str | None, stats: Stats | None) -> None:
        self.send_header("X-ClickHouse-Server-Display-Name", _HOSTNAME)
        self.send_header("X-ClickHouse-Query-Id", query_id)
        self.send_header("X-ClickHouse-Timezone", self.server.endpoint.engine.timezone)
        if fmt is not None:
            self.send_header("X-ClickHouse-Format", fmt)
        self.send_header("Content-Type", content_type(fmt or "TabSeparated"))
        if stats is not None:
            summary = json.dumps(stats.summary())
            if self._progress:
                self.send_header("X-ClickHouse-Progress", summary)
            self.send_header("X-ClickHouse-Summary", summary)
        self.send_header("Keep-Alive", f"timeout={self.timeout}")

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

    def _send_stream(
        self,
        query_id: str,
        fmt: str,
        chunks: Iterator[bytes],
        revision: int,
        params: dict[str, str],
    ) -> None:
        """A result as the engine produces it, in chunked transfer. The engine's errors in
        planning come with the first chunk, before any header (the caller may still answer
        otherwise); later ones break the response."""
        first = next(chunks, b"")
        if revision:
            chunks = _revised(prepend(first, chunks), NativeRevisionWriter(revision))
            first = next(chunks, b"")
        encoding = self._encoding(params)
        codec = self._codec(encoding) if encoding else None
        self.send_response(200)
        self._headers(query_id, fmt, None)
        if encoding is not None:
            self._content_encoding(encoding)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in prepend(first, chunks):
                self._write_chunk(codec.compress(chunk) if codec else chunk)
            if codec is not None:
                self._write_chunk(codec.flush())
        except (EngineError, UnsupportedNativeTypeError) as exc:
            if not isinstance(exc, EngineError):
                exc = EngineError(50, f"Code: 50. DB::Exception: {exc}")
            # Headers are gone: say what happened in the body and break the response, so the
            # client sees an incomplete transfer rather than a short, valid-looking result.
            log.warning("endpoint: query %s failed while streaming: %s", query_id, exc.message)
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
            self.send_response(http_status(exc.code))
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


def prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    """`first` (unless empty), then the rest."""
    if first:
        yield first
    yield from rest


def _revised(chunks: Iterator[bytes], writer: NativeRevisionWriter) -> Iterator[bytes]:
    for chunk in chunks:
        out = writer.feed(chunk)
        if out:
            yield out
    writer.finish()

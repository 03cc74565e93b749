"""HTTP body codings the ClickHouse interface uses: chunked transfer, and the compressions
clickhouse-connect sends (Content-Encoding) and accepts (Accept-Encoding): lz4 (frame), zstd,
gzip, deflate, br when the libraries are there. Streaming both ways, so a large insert or
result never has to sit in memory whole."""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

__all__ = [
    "Compressor",
    "UnsupportedEncodingError",
    "choose_encoding",
    "compressor",
    "decompress_stream",
    "read_chunked",
    "read_exact",
]

CHUNK = 1024 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def readline(self, size: int = -1, /) -> bytes: ...


class UnsupportedEncodingError(ValueError):
    pass


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


_lz4 = _optional("lz4.frame")
_zstd = _optional("backports.zstd") or _optional("compression.zstd")
_brotli = _optional("brotli")

#: in order of preference when a client accepts several (fast ones first)
SUPPORTED = [
    name
    for name, module in (("lz4", _lz4), ("zstd", _zstd), ("gzip", zlib), ("deflate", zlib))
    if module is not None
] + (["br"] if _brotli is not None else [])


def read_exact(stream: Readable, length: int) -> Iterator[bytes]:
    left = length
    while left > 0:
        data = stream.read(min(CHUNK, left))
        if not data:
            raise ConnectionError("the client closed the connection in the middle of the body")
        left -= len(data)
        yield data


def read_chunked(stream: Readable) -> Iterator[bytes]:
    """The body of a `Transfer-Encoding: chunked` request (urllib3 sends generator bodies so)."""
    while True:
        line = stream.readline(65537)
        if not line:
            raise ConnectionError("the client closed the connection in the middle of the body")
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while stream.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return
        yield from read_exact(stream, size)
        stream.readline(3)  # the CRLF after each chunk


def _frames(chunks: Iterator[bytes], make: Callable[[], Any]) -> Iterator[bytes]:
    """Decode a stream of concatenated frames (clickhouse-connect compresses each insert
    block as its own lz4/zstd frame or gzip member)."""
    decoder = make()
    for chunk in chunks:
        data = chunk
        while data:
            out = decoder.decompress(data)
            if out:
                yield bytes(out)
            if decoder.eof:
                data = decoder.unused_data
                decoder = make()
            else:
                data = b""


def decompress_stream(chunks: Iterator[bytes], encoding: str | None) -> Iterator[bytes]:
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return chunks
    if encoding in ("gzip", "deflate", "x-gzip"):
        # 32 + 15: a zlib or a gzip header, detected
        return _frames(chunks, lambda: zlib.decompressobj(47))
    if encoding == "lz4" and _lz4 is not None:
        return _frames(chunks, _lz4.LZ4FrameDecompressor)
    if encoding == "zstd" and _zstd is not None:
        return _frames(chunks, _zstd.ZstdDecompressor)
    if encoding == "br" and _brotli is not None:
        return iter([_brotli.decompress(b"".join(chunks))])
    raise UnsupportedEncodingError(f"Unknown Content-Encoding {encoding!r}")


def choose_encoding(accept: str | None) -> str | None:
    if not accept:
        return None
    offered = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    for name in SUPPORTED:
        if name in offered:
            return name
    return None


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class _Lz4:
    def __init__(self) -> None:
        self._c = _lz4.LZ4FrameCompressor()
        self._head = self._c.begin()

    def compress(self, data: bytes) -> bytes:
        head, self._head = self._head, b""
        return bytes(head + self._c.compress(data))

    def flush(self) -> bytes:
        head, self._head = self._head, b""
        return bytes(head + self._c.flush())


class _Zstd:
    def __init__(self) -> None:
        self._c = _zstd.ZstdCompressor()

    def compress(self, data: bytes) -> bytes:
        return bytes(self._c.compress(data))

    def flush(self) -> bytes:
        return bytes(self._c.flush())


class _Brotli:
    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def compress(self, data: bytes) -> bytes:
        self._parts.append(data)
        return b""

    def flush(self) -> bytes:
        return bytes(_brotli.compress(b"".join(self._parts)))


def compressor(encoding: str) -> Compressor:
    if encoding == "gzip":
        return zlib.compressobj(1, zlib.DEFLATED, 31)
    if encoding == "deflate":
        return zlib.compressobj(1)
    if encoding == "lz4":
        return _Lz4()
    if encoding == "zstd":
        return _Zstd()
    if encoding == "br":
        return _Brotli()
    raise UnsupportedEncodingError(encoding)

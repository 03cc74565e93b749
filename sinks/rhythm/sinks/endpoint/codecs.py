"""HTTP body codings the ClickHouse interface uses: chunked transfer, and the compressions
clickhouse-connect sends (Content-Encoding) and accepts (Accept-Encoding): lz4 (frame), zstd,
gzip, deflate when the libraries are there. Streaming both ways, so a large insert or
result never has to sit in memory whole."""

from __future__ import annotations

import importlib
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

__all__ = [
    "BodyTooLargeError",
    "Compressor",
    "NativeBlocks",
    "UnsupportedEncodingError",
    "bounded",
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

#: in order of preference when a client accepts several (fast ones first)
SUPPORTED = [
    name
    for name, module in (("lz4", _lz4), ("zstd", _zstd), ("gzip", zlib), ("deflate", zlib))
    if module is not None
]


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
    block as its own lz4/zstd frame or gzip member), at most CHUNK bytes of output per step:
    a small compressed chunk that expands a thousandfold (a zip bomb) never sits in memory
    whole; the caller bounds the total (`bounded`)."""
    decoder = make()
    for chunk in chunks:
        data = chunk
        while True:
            out = decoder.decompress(data, CHUNK)
            data = b""
            if out:
                yield bytes(out)
            if decoder.eof:
                data = decoder.unused_data
                if not data:
                    break
                decoder = make()
            elif decoder.needs_input:
                break


class BodyTooLargeError(ValueError):
    """A request body that decompresses to more than its bound."""


def bounded(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """The chunks, failing once more than `limit` bytes have come."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise BodyTooLargeError(f"the request body is larger than {limit} bytes")
        yield chunk


def decompress_stream(chunks: Iterator[bytes], encoding: str | None) -> Iterator[bytes]:
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return chunks
    if encoding in ("gzip", "deflate", "x-gzip"):
        # 32 + 15: a zlib or a gzip header, detected
        return _frames(chunks, lambda: _Zlib(zlib.decompressobj(47)))
    if encoding == "lz4" and _lz4 is not None:
        return _frames(chunks, _lz4.LZ4FrameDecompressor)
    if encoding == "zstd" and _zstd is not None:
        return _frames(chunks, _zstd.ZstdDecompressor)
    raise UnsupportedEncodingError(f"Unknown Content-Encoding {encoding!r}")


class _Zlib:
    """zlib's decompressobj with the max_length API of lz4/zstd's decompressors."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out: bytes = self._inner.decompress(self._inner.unconsumed_tail + data, max_length)
        return out

    @property
    def eof(self) -> bool:
        return bool(self._inner.eof)

    @property
    def unused_data(self) -> bytes:
        return bytes(self._inner.unused_data)

    @property
    def needs_input(self) -> bool:
        return not self._inner.unconsumed_tail


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


class NativeBlocks:
    """ClickHouse's own compressed blocks, what a server sends for `compress=1` (the JDBC
    driver asks for it): each block is a CityHash128 (v1.0.2) checksum of the rest, method
    0x82 (LZ4), compressed size with the 9-byte header, uncompressed size, the LZ4 block."""

    def compress(self, data: bytes) -> bytes:
        import lz4.block
        from clickhouse_cityhash.cityhash import CityHash128

        out = bytearray()
        for start in range(0, len(data), CHUNK):
            part = data[start : start + CHUNK]
            packed = lz4.block.compress(part, store_size=False)
            body = struct.pack("<BII", 0x82, len(packed) + 9, len(part)) + packed
            checksum = CityHash128(body)
            out += struct.pack("<QQ", checksum >> 64, checksum & (2**64 - 1)) + body
        return bytes(out)

    def flush(self) -> bytes:
        return b""


def compressor(encoding: str) -> Compressor:
    if encoding == "gzip":
        return zlib.compressobj(1, zlib.DEFLATED, 31)
    if encoding == "deflate":
        return zlib.compressobj(1)
    if encoding == "lz4":
        return _Lz4()
    if encoding == "zstd":
        return _Zstd()
    raise UnsupportedEncodingError(encoding)

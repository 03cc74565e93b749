"""`Native` output for a client protocol revision, and the empty block of a result. Pure.

Over HTTP a ClickHouse server writes `Native` for the revision the client names in
`client_protocol_version` (clickhouse-go always sends it and decodes with the server's
`revision()`): from revision 1 each block starts with its BlockInfo, and from 54454 each
column's name and type are followed by a `has_custom` byte (custom serialization, e.g.
sparse). The embedded engine only writes revision 0, so the endpoint adds those: it walks
each block column by column (knowing how long a column's data is from its type and the row
count), copying the data through unchanged. LowCardinality columns are asked of the engine
as plain columns (`low_cardinality_allow_in_native_format = 0`, as a server does for clients
that cannot read them; chdb 26.9 ignores that), so LowCardinality is walked too: its version
prefix, its keys and its indexes.
"""

from __future__ import annotations

import struct

__all__ = [
    "CUSTOM_SERIALIZATION_REVISION",
    "NativeRevisionWriter",
    "UnsupportedNativeTypeError",
    "empty_block",
]

CUSTOM_SERIALIZATION_REVISION = 54454
#: BlockInfo as a server writes it: field 1 is_overflows = 0, field 2 bucket_num = -1, end
_BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"

_FIXED = {
    "UInt8": 1, "Int8": 1, "Bool": 1, "Enum8": 1, "UInt16": 2, "Int16": 2, "Date": 2,
    "Enum16": 2, "BFloat16": 2, "UInt32": 4, "Int32": 4, "Float32": 4, "Date32": 4,
    "DateTime": 4, "IPv4": 4, "Decimal32": 4, "UInt64": 8, "Int64": 8, "Float64": 8,
    "DateTime64": 8, "Decimal64": 8, "Time": 4, "Time64": 8, "UInt128": 16, "Int128": 16,
    "UUID": 16, "IPv6": 16, "Decimal128": 16, "UInt256": 32, "Int256": 32, "Decimal256": 32,
    "Nothing": 1, "Point": 16,
}  # fmt: skip


class UnsupportedNativeTypeError(ValueError):
    pass


class _NeedMoreError(Exception):
    """The buffer ends inside a block."""


def _split_type(text: str) -> tuple[str, list[str]]:
    """`Array(Tuple(a UInt8, b String))` -> ("Array", ["Tuple(a UInt8, b String)"])."""
    text = text.strip()
    paren = text.find("(")
    if paren < 0 or not text.endswith(")"):
        return text, []
    name, inner = text[:paren], text[paren + 1 : -1]
    args, depth, start, quoted = [], 0, 0, False
    for i, ch in enumerate(inner):
        if quoted:
            quoted = ch != "'" or inner[i - 1] == "\\"
        elif ch == "'":
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(inner[start:i].strip())
            start = i + 1
    args.append(inner[start:].strip())
    return name, args


def _element_type(arg: str) -> str:
    """A Tuple element may be named: `name Type`."""
    first = arg.split(" ", 1)
    if len(first) == 2 and "(" not in first[0] and first[0] not in _FIXED:
        return first[1]
    return arg


def _decimal_width(args: list[str]) -> int:
    precision = int(args[0])
    return 4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def empty_block(meta: list[dict[str, str]]) -> bytes:
    """A Native block with the columns (`name`, `type` each) and no rows: what a server sends
    for an empty result (chdb sends nothing, and a client then would not know the columns)."""
    out = bytearray(_varint(len(meta)) + _varint(0))
    for column in meta:
        for text in (column["name"], column["type"]):
            raw = text.encode()
            out += _varint(len(raw)) + raw
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise _NeedMoreError
        self.pos += n

    def varint(self) -> int:
        shift = result = 0
        while True:
            if self.pos >= len(self.data):
                raise _NeedMoreError
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    def string(self) -> str:
        n = self.varint()
        start = self.pos
        self.take(n)
        return bytes(self.data[start : self.pos]).decode()

    def column(self, type_name: str, rows: int) -> None:
        """A whole column: the serialization state prefixes (LowCardinality's version,
        depth first), then the data. No rows: no bytes at all."""
        if rows:
            self.prefix(type_name)
            self.skip(type_name, rows)

    def prefix(self, type_name: str) -> None:
        name, args = _split_type(type_name)
        if name == "LowCardinality":
            self.take(8)
        elif name in ("Array", "Nullable", "SimpleAggregateFunction"):
            self.prefix(args[-1])
        elif name == "Map":
            self.prefix(f"Tuple({', '.join(args)})")
        elif name == "Tuple":
            for arg in args:
                self.prefix(_element_type(arg))

    def skip(self, type_name: str, rows: int) -> None:
        name, args = _split_type(type_name)
        if name == "LowCardinality":
            if rows == 0:
                return
            (flags,) = struct.unpack_from("<Q", self.data, self._at(8))
            if flags & (1 << 9):  # additional keys: the block's own dictionary
                (keys,) = struct.unpack_from("<Q", self.data, self._at(8))
                inner_name, inner_args = _split_type(args[0])
                self.skip(inner_args[0] if inner_name == "Nullable" else args[0], keys)
            (count,) = struct.unpack_from("<Q", self.data, self._at(8))
            self.take(count * (1 << (flags & 0xFF)))
        elif name in _FIXED:
            self.take(_FIXED[name] * rows)
        elif name == "Decimal":
            self.take(_decimal_width(args) * rows)
        elif name == "String":
            for _ in range(rows):
                self.take(self.varint())
        elif name == "FixedString":
            self.take(int(args[0]) * rows)
        elif name == "Nullable":
            self.take(rows)
            self.skip(args[0], rows)
        elif name in ("Array", "Map", "Ring", "Polygon", "MultiPolygon", "LineString"):
            if rows == 0:
                return
            self.take(8 * (rows - 1))
            (total,) = struct.unpack_from("<Q", self.data, self._at(8))
            inner = {
                "Array": args[0] if args else "",
                "Map": f"Tuple({', '.join(args)})",
                "Ring": "Point",
                "LineString": "Point",
                "Polygon": "Ring",
                "MultiPolygon": "Polygon",
            }[name]
            self.skip(inner, total)
        elif name == "Tuple":
            for arg in args:
                self.skip(_element_type(arg), rows)
        elif name == "SimpleAggregateFunction":
            self.skip(args[-1], rows)
        elif name == "Interval" or name.startswith("Interval"):
            self.take(8 * rows)
        else:
            raise UnsupportedNativeTypeError(
                f"the endpoint cannot write {type_name} in Native for client_protocol_version"
                " > 0; cast it (e.g. toString) or use RowBinaryWithNamesAndTypes"
            )

    def _at(self, n: int) -> int:
        start = self.pos
        self.take(n)
        return start


class NativeRevisionWriter:
    """Feed revision-0 Native bytes (any chunking); get them back for `revision`."""

    def __init__(self, revision: int) -> None:
        self.revision = revision
        self._buffer = bytearray()

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        while self._buffer:
            try:
                end, block = self._block(self._buffer)
            except _NeedMoreError:
                break
            out += block
            del self._buffer[:end]
        return bytes(out)

    def finish(self) -> bytes:
        if self._buffer:
            raise UnsupportedNativeTypeError("Native output ended inside a block")
        return b""

    def _block(self, data: bytearray) -> tuple[int, bytes]:
        reader = _Reader(data)
        columns = reader.varint()
        rows = reader.varint()
        out = bytearray(_BLOCK_INFO if self.revision > 0 else b"")
        out += data[: reader.pos]
        for _ in range(columns):
            start = reader.pos
            reader.string()
            type_name = reader.string()
            out += data[start : reader.pos]
            if self.revision >= CUSTOM_SERIALIZATION_REVISION:
                out += b"\x00"
            start = reader.pos
            reader.column(type_name, rows)
            out += data[start : reader.pos]
        return reader.pos, bytes(out)

"""A request body to JSON, within the limits: compressed and decompressed size, gzip bombs,
the content type (`text/plain` too: `navigator.sendBeacon` cannot send JSON's), and JSON
itself. Pure; `BodyError` carries the status and a fixed reason for the metric."""

from __future__ import annotations

import zlib
from typing import Any

import orjson

__all__ = ["BodyError", "decode_body", "json_size"]


class BodyError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


_JSON_TYPES = ("application/json", "text/plain", "")


def decompress(raw: bytes, encoding: str, max_bytes: int) -> bytes:
    """gzip or deflate within `max_bytes` decompressed (a bomb stops at the cap, never
    inflating more than that); identity passes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise BodyError(415, "bad_encoding", f"Content-Encoding {encoding!r}: use gzip or none")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise BodyError(400, "bad_gzip", f"the body is not valid {encoding}: {exc}") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise BodyError(413, "too_large", f"the body is over {max_bytes} bytes once decompressed")
    if not inflater.eof:
        raise BodyError(400, "bad_gzip", f"the {encoding} body is truncated")
    return out


def decode_body(raw: bytes, content_type: str, encoding: str, max_bytes: int) -> Any:
    """The parsed JSON of a request body. Raises BodyError."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in _JSON_TYPES:
        raise BodyError(415, "bad_content_type", f"Content-Type {media!r}: send application/json")
    data = decompress(raw, encoding, max_bytes)
    if not data.strip():
        raise BodyError(400, "empty_body", "the body is empty")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, "malformed_json", f"the body is not JSON: {exc}") from None


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON: what the per-event limit measures."""
    return len(orjson.dumps(value))

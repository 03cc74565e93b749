"""Signed webhooks: how the notifier signs a request and how a receiver verifies it.

The notifier sends, with each webhook POST:

    X-Rhythm-Timestamp: 1767012345          (Unix seconds when it was signed)
    X-Rhythm-Signature: v1=<hex>            (HMAC-SHA256 with the shared secret over
                                             "<timestamp>.<raw body bytes>")
    X-Rhythm-Idempotency-Key: <key>         (the same for every attempt of one delivery)

A receiver:
1. takes the raw body bytes as received (before any JSON parsing),
2. computes HMAC-SHA256(secret, f"{timestamp}.".encode() + body) and compares it with each
   `v1=` value of the signature header in constant time (several may be sent while a
   secret is rotated),
3. refuses a timestamp further than the tolerance (5 minutes) from its own clock: a
   captured request cannot be replayed later (replay protection), and
4. keeps the idempotency keys it processed for at least that long: a retry of a delivery
   that did arrive (its answer lost) is then recognised and acknowledged without acting twice.

`verify()` below is that check, used by the tests' receiver; it is what a Python receiver
can import (`from rhythm.notifier.signing import verify`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TOLERANCE_S",
    "SignatureError",
    "sign",
    "signature",
    "verify",
]

TIMESTAMP_HEADER = "X-Rhythm-Timestamp"
SIGNATURE_HEADER = "X-Rhythm-Signature"
IDEMPOTENCY_HEADER = "X-Rhythm-Idempotency-Key"
TOLERANCE_S = 300


class SignatureError(ValueError):
    """The request is not from the notifier, was changed, or is stale (a replay)."""


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return mac.hexdigest()


def sign(secret: bytes, body: bytes, now: float) -> dict[str, str]:
    """The headers that sign `body` at `now` (Unix seconds)."""
    timestamp = int(now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: f"v1={signature(secret, timestamp, body)}",
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def verify(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance_s: float = TOLERANCE_S,
) -> int:
    """Check a received request; return its timestamp. Raises SignatureError."""
    raw_ts = _header(headers, TIMESTAMP_HEADER)
    raw_sig = _header(headers, SIGNATURE_HEADER)
    if raw_ts is None or raw_sig is None:
        raise SignatureError("missing timestamp or signature header")
    try:
        timestamp = int(raw_ts)
    except ValueError as exc:
        raise SignatureError(f"timestamp is not an integer: {raw_ts!r}") from exc
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"stale timestamp ({now - timestamp:.0f}s off): a replay?")
    expected = signature(secret, timestamp, body)
    given = [part.strip()[3:] for part in raw_sig.split(",") if part.strip().startswith("v1=")]
    if not any(hmac.compare_digest(expected, g) for g in given):
        raise SignatureError("signature does not match")
    return timestamp

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

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TOLERANCE_S",
    "Claims",
    "SignatureError",
    "TokenError",
    "make_token",
    "read_token",
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


# -- feedback links ---------------------------------------------------------------------------
#
# Each heads-up carries three links (done, snooze, not useful), each with a token that says
# which alert, which recipient, which action and until when, signed with the same HMAC-SHA256
# as the webhooks (`signature()` over "<expiry>.<payload>") under the notifier's feedback key:
#
#     <base64url(JSON payload)>.<hex signature>
#
# A token cannot be changed (another alert, recipient or action: the signature no longer
# matches), used for another action than its own, or used after its expiry. Using one twice
# gives the same feedback id (the API answers 409 and the notifier applies an id once).


class TokenError(ValueError):
    """A feedback token that is not to be acted on; `status` is the HTTP answer."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Claims:
    tenant: str
    alert_id: str
    recipient: str
    action: str
    expires_at: int  # Unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: bytes, claims: Claims) -> str:
    payload = json.dumps(
        [claims.tenant, claims.alert_id, claims.recipient, claims.action, claims.expires_at],
        separators=(",", ":"),
    ).encode()
    body = _b64(payload)
    return f"{body}.{signature(secret, claims.expires_at, body.encode())}"


def read_token(secret: bytes, token: str, action: str, now: float) -> Claims:
    """The token's claims if it is ours, unchanged, for `action` and not expired; else
    TokenError (400 malformed, 403 forged or for another action, 410 expired)."""
    body, dot, mac = token.partition(".")
    if not dot or not body or len(mac) != 64:
        raise TokenError("malformed token", 400)
    try:
        tenant, alert_id, recipient, claimed, expires_at = json.loads(_unb64(body))
        if not all(isinstance(v, str) for v in (tenant, alert_id, recipient, claimed)):
            raise ValueError("not text")
        if type(expires_at) is not int:
            raise ValueError("no expiry")
    except (ValueError, TypeError, binascii.Error):
        raise TokenError("malformed token", 400) from None
    if not hmac.compare_digest(signature(secret, expires_at, body.encode()), mac):
        raise TokenError("token signature does not match", 403)
    if claimed != action:
        raise TokenError(f"this link is for {claimed}, not {action}", 403)
    if now > expires_at:
        raise TokenError("this link has expired", 410)
    return Claims(tenant, alert_id, recipient, claimed, expires_at)

"""Write keys: one tenant each, stored hashed, read per request.

A key is `rk_` + 32 random bytes (URL-safe base64), shown once by `rhythm keys create`. The
file (`<home>/collector-keys.json`, mode 0600, replaced atomically) keeps only its SHA-256:
a key of 256 random bits needs no slow hash, and lookups stay one dictionary access. Each
key also has a public id (`key_...`) for `list` and `revoke`, and a name.

The collector looks at the file's `stat()` at most every `RECHECK_S` (a second), so a
revoked key stops working within a second, without a restart; a key it does not know makes
it look again sooner (at most every `MISS_RECHECK_S`), so a new key works within 0.1 s.
Keys never appear in logs or metric labels: the key id does.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rhythm.schemas import rules

__all__ = ["AuthError", "KeyRecord", "KeyStore", "credential_from_headers", "hash_key"]

KEY_PREFIX = "rk_"
RECHECK_S = 1.0
MISS_RECHECK_S = 0.1
_TENANT = rules.TENANT_PATTERN


class AuthError(Exception):
    """No usable credential: 401 (absent, malformed, unknown, revoked)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # a fixed word, for the metric label


@dataclass(frozen=True)
class KeyRecord:
    id: str
    tenant: str
    name: str
    hash: str
    created_at: str
    revoked_at: str | None = None

    def public(self) -> dict[str, Any]:
        """What `rhythm keys list` shows: never the hash."""
        out = asdict(self)
        out.pop("hash")
        return out


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def credential_from_headers(authorization: str | None) -> str:
    """The write key from `Authorization`: Basic with the key as the user name (Segment's
    way; the password is ignored) or Bearer. Raises AuthError."""
    if not authorization:
        raise AuthError("missing", "no credentials: send the write key as Basic auth or Bearer")
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError(
                "malformed", "Basic credentials are not base64 of user:password"
            ) from None
        user, _, _password = decoded.partition(":")
        if user:
            return user
    raise AuthError("malformed", "unsupported Authorization: use Basic (key as user) or Bearer")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class KeyStore:
    """The keys file: create, list, revoke (the CLI), and `tenant_of` (the collector)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None  # (mtime_ns, size, inode)
        self._by_hash: dict[str, KeyRecord] = {}
        self._checked_at = -1e18

    # -- the collector's side -------------------------------------------------------------

    def tenant_of(self, key: str) -> tuple[str, str]:
        """(tenant, key id) of a live key; AuthError for an unknown or revoked one."""
        self._refresh(RECHECK_S)
        hashed = hash_key(key)
        record = self._by_hash.get(hashed)
        if record is None:
            self._refresh(MISS_RECHECK_S)  # perhaps created since
            record = self._by_hash.get(hashed)
        if record is None:
            raise AuthError("unknown_key", "unknown write key")
        if record.revoked_at is not None:
            raise AuthError("revoked_key", "this write key was revoked")
        return record.tenant, record.id

    def _refresh(self, every: float) -> None:
        now = time.monotonic()
        if now - self._checked_at < every:
            return
        self._checked_at = now
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._by_hash = None, {}
            return
        seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        if seen == self._seen:
            return
        with self._lock:
            records = self._read()
            self._by_hash = {r.hash: r for r in records}
            self._seen = seen

    # -- management ---------------------------------------------------------------------------

    def records(self) -> list[KeyRecord]:
        return self._read()

    def create(self, tenant: str, name: str = "") -> tuple[str, KeyRecord]:
        """A new key for `tenant`: returns (the key, shown once; its record)."""
        import re

        if not re.match(_TENANT, tenant):
            raise ValueError(f"tenant must match {_TENANT.strip('^$')} (got {tenant!r})")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(
            id="key_" + secrets.token_hex(6),
            tenant=tenant,
            name=name,
            hash=hash_key(key),
            created_at=_now(),
        )
        with self._lock:
            self._write([*self._read(), record])
        return key, record

    def revoke(self, key_id: str) -> KeyRecord:
        """Mark a key revoked (kept in the file, so `list` shows when). KeyError if unknown."""
        with self._lock:
            records = self._read()
            for i, record in enumerate(records):
                if record.id == key_id:
                    if record.revoked_at is not None:
                        return record
                    revoked = KeyRecord(**{**asdict(record), "revoked_at": _now()})
                    records[i] = revoked
                    self._write(records)
                    return revoked
        raise KeyError(key_id)

    def _read(self) -> list[KeyRecord]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        return [KeyRecord(**entry) for entry in data.get("keys", [])]

    def _write(self, records: list[KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"keys": [asdict(r) for r in records]}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".collector-keys.", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)  # before any byte is written
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

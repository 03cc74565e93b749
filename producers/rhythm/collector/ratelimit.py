"""Token buckets, per write key and per tenant: a request of n events takes n tokens from
both, or from neither (a refused request costs nothing), and a refusal says when to retry.

Pure: the clock is a parameter, so the rules are unit-tested without waiting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["RateLimiter", "TokenBucket"]


class TokenBucket:
    """`rate` tokens per second up to `burst`; starts full."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def _fill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now

    def wait_for(self, n: float, now: float) -> float:
        """Seconds until `n` tokens are there (0: now). More than `burst` counts as `burst`:
        a batch larger than the bucket passes when the bucket is full."""
        self._fill(now)
        n = min(n, self.burst)
        return 0.0 if self._tokens >= n else (n - self._tokens) / self.rate

    def take(self, n: float) -> None:
        self._tokens -= min(n, self.burst)


class RateLimiter:
    """Per-key and per-tenant buckets (created on first use)."""

    def __init__(
        self,
        key_rate: float,
        key_burst: float,
        tenant_rate: float,
        tenant_burst: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = (key_rate, key_burst)
        self._tenant = (tenant_rate, tenant_burst)
        self._clock = clock
        self._keys: dict[str, TokenBucket] = {}
        self._tenants: dict[str, TokenBucket] = {}
        #: each key's last batch size: what a look before reading its next body expects
        self._sizes: dict[str, int] = {}

    def look(self, key_id: str, tenant: str) -> tuple[str, int] | None:
        """`admit` without taking, for as many events as the key's last batch had: asked
        before a body is read, so that a flood is refused before its body is parsed. With one
        event instead, a refill of a single token let nearly every request of a key over its
        rate be read and mapped before its refusal, and a flood cost as much as its events."""
        return self.admit(key_id, tenant, self._sizes.get(key_id, 1), take=False)

    def admit(
        self, key_id: str, tenant: str, events: int, *, take: bool = True
    ) -> tuple[str, int] | None:
        """None when admitted (tokens taken, unless `take` is false: a look before reading a
        body, so that a flood's requests are refused cheaply); else (`key` or `tenant`,
        Retry-After seconds)."""
        if take:
            self._sizes[key_id] = events
        now = self._clock()
        key = self._keys.get(key_id)
        if key is None:
            key = self._keys[key_id] = TokenBucket(*self._key, now)
        bucket = self._tenants.get(tenant)
        if bucket is None:
            bucket = self._tenants[tenant] = TokenBucket(*self._tenant, now)
        key_wait = key.wait_for(events, now)
        tenant_wait = bucket.wait_for(events, now)
        if key_wait > 0 or tenant_wait > 0:
            which = "key" if key_wait >= tenant_wait else "tenant"
            return which, max(1, math.ceil(max(key_wait, tenant_wait)))
        if take:
            key.take(events)
            bucket.take(events)
        return None

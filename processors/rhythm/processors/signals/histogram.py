"""A log-scale histogram of durations: compact, mergeable, deterministic quantiles.

Used to learn what is normal for an entity (its gaps) and for a kind of sender (reply delays).
Bucket i holds durations in [BASE * R**i, BASE * R**(i+1)); with R = 2**0.5 a quantile is
known to within a factor of about 1.41, which is what a "nearly always within" rule needs, and
the whole history of an entity fits in a few dozen integers.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import accumulate

BASE_MS = 1_000  # durations under a second share bucket 0
RATIO = math.sqrt(2.0)
BUCKETS = 64  # 1 s * sqrt(2)**63 ≈ 69 years: enough for any gap


def bucket_of(duration_ms: int) -> int:
    if duration_ms < BASE_MS:
        return 0
    i = int(math.log(duration_ms / BASE_MS, RATIO))
    return min(max(i, 0), BUCKETS - 1)


def bucket_upper_ms(index: int) -> int:
    """Upper bound of a bucket: quantiles answer with it, so a threshold is never too low."""
    return _UPPER_MS[index]


_UPPER_MS = tuple(round(BASE_MS * RATIO ** (i + 1)) for i in range(BUCKETS))


@dataclass(slots=True)
class LogHistogram:
    counts: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    total: int = 0

    def add(self, duration_ms: int) -> None:
        self.counts[bucket_of(duration_ms)] += 1
        self.total += 1

    def quantile_ms(self, q: float) -> int | None:
        """The upper bound of the bucket holding the q-quantile; None with no data."""
        if self.total == 0:
            return None
        rank = max(1, math.ceil(q * self.total))
        # The first bucket whose running total reaches the rank (asked once per finalized
        # event, so the scan runs in C: accumulate + bisect rather than a Python loop).
        i = bisect_left(list(accumulate(self.counts)), rank)
        return _UPPER_MS[min(i, BUCKETS - 1)]

    def to_sparse(self) -> list[list[int]]:
        return [[i, c] for i, c in enumerate(self.counts) if c]

    @classmethod
    def from_sparse(cls, pairs: list[list[int]]) -> LogHistogram:
        h = cls()
        for i, c in pairs:
            h.counts[i] = c
            h.total += c
        return h

"""A log-scale histogram of durations: compact and deterministic.

Used to keep a kind of message's reply delays (survival.py reads quantiles off its
Kaplan–Meier curve, bucket by bucket). Bucket i holds durations in [BASE * R**i,
BASE * R**(i+1)); with R = 2**0.5 a quantile is known to within a factor of about 1.41, which
is what a "nearly always within" rule needs, and a kind's whole history fits in a few dozen
integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

BASE_MS = 1_000  # durations under a second share bucket 0
RATIO = math.sqrt(2.0)
BUCKETS = 64  # 1 s * sqrt(2)**63 ≈ 69 years: enough for any delay


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

    def remove(self, duration_ms: int) -> None:
        i = bucket_of(duration_ms)
        if self.counts[i] > 0:
            self.counts[i] -= 1
            self.total -= 1

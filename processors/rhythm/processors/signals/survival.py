"""Reply norms as survival data: how long a kind of message waits for a reply, censoring and all.

Every wait is an observation of "time to reply": finished (replied after d), or censored
(still open at its current age, or given up at the horizon). Counting an open wait as "not
replied" only once it is old, or ignoring it, biases a kind's reply share upward for as long
as the horizon (right-censoring). The Kaplan–Meier estimator uses every wait and is right
from the first day; here in life-table form over the log-histogram's buckets (√2 apart),
with waits censored inside a bucket counted at risk for half of it.

Some waits never get a reply (the thread simply ended), so the curve levels off: S(∞), read
as the survival after the last observed reply. The *reply share* is p = 1 - S(∞); among the
waits that do get a reply, the share replied by age t is F(t) = (1 - S(t)) / p (a mixture
cure model read off the same curve). Pure functions over plain data.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field

from rhythm.processors.signals.histogram import BUCKETS, LogHistogram, bucket_of, bucket_upper_ms


@dataclass(slots=True)
class ClockStats:
    """What a kind of message has taught so far, measured on one clock."""

    replied: LogHistogram = field(default_factory=LogHistogram)  # delays of replied waits
    censored: LogHistogram = field(default_factory=LogHistogram)  # ages at the horizon
    open: list[int] = field(default_factory=list)  # start times of open waits, sorted


@dataclass(slots=True)
class KindStats:
    """The same waits on two clocks: the wall clock, and the tenant's working time (a reply
    due Friday evening that comes Monday morning took minutes of working time). The rule
    judges a kind by the clock its replies keep more tightly."""

    wall: ClockStats = field(default_factory=ClockStats)
    work: ClockStats = field(default_factory=ClockStats)


@dataclass(frozen=True, slots=True)
class Curve:
    """S(t) at each bucket's upper bound, and what it says."""

    survival: tuple[float, ...]
    replied: int
    observations: int

    @property
    def cured(self) -> float:
        """S(∞): the share of waits that never get a reply."""
        return self.survival[-1] if self.survival else 1.0

    @property
    def reply_share(self) -> float:
        return 1.0 - self.cured

    def survival_at(self, age_ms: int) -> float:
        """S at the lower bound of the bucket `age_ms` is in (never later than `age_ms`)."""
        i = bucket_of(age_ms)
        return 1.0 if i == 0 else self.survival[i - 1]

    def replied_by(self, age_ms: int) -> float:
        """F(age): of the waits that get a reply, the share that had it by this age."""
        p = self.reply_share
        return 0.0 if p <= 0 else min(1.0, (1.0 - self.survival_at(age_ms)) / p)

    def spread(self, q: float) -> float:
        """How far the q-quantile of the delays is from their median (a ratio, >= 1)."""
        high, median = self.quantile_ms(q), self.quantile_ms(0.5)
        return math.inf if high is None or not median else high / median

    def quantile_ms(self, q: float) -> int | None:
        """The smallest bucket bound by which a share q of the replies had come."""
        p = self.reply_share
        if p <= 0:
            return None
        for i, s in enumerate(self.survival):
            if (1.0 - s) / p >= q - 1e-12:
                return bucket_upper_ms(i)
        return None


def curve(stats: ClockStats, now_ms: int) -> Curve:
    """The Kaplan–Meier curve of a kind as of `now_ms` (open waits censored at their age)."""
    d = stats.replied.counts
    c = stats.censored.counts
    opened = stats.open
    # open[i]: open waits whose age is in bucket i (ages grow as start times fall).
    open_counts = [0] * BUCKETS
    below = len(opened)  # open waits younger than the current bucket's upper bound
    previous = 0
    for i in range(BUCKETS):
        older = bisect_right(opened, now_ms - bucket_upper_ms(i))  # age >= upper bound
        younger = below - older
        open_counts[i] = younger - previous
        previous = younger
        if not older:
            break  # every wait is younger than this bound: the later buckets hold none
    at_risk = stats.replied.total + stats.censored.total + len(opened)
    s = 1.0
    survival: list[float] = []
    for replied, censored, still_open in zip(d, c, open_counts, strict=True):
        leaving = censored + still_open
        effective = at_risk - leaving / 2.0
        if replied and effective > 0:
            s *= max(0.0, 1.0 - replied / effective)
        survival.append(s)
        at_risk -= replied + leaving
        if not at_risk:  # every wait counted: S stays as it is in the later buckets
            survival.extend([s] * (BUCKETS - len(survival)))
            break
    return Curve(tuple(survival), stats.replied.total, stats.replied.total + len(opened)
                 + stats.censored.total)  # fmt: skip


def open_wait(stats: ClockStats, since_ms: int) -> None:
    opened = stats.open
    opened.insert(bisect_right(opened, since_ms), since_ms)


def close_wait(stats: ClockStats, since_ms: int, delay_ms: int | None, horizon_ms: int) -> None:
    """A wait ended: replied after `delay_ms`, or (None) censored at the horizon."""
    opened = stats.open
    i = bisect_right(opened, since_ms) - 1
    if 0 <= i < len(opened) and opened[i] == since_ms:
        del opened[i]
    if delay_ms is None:
        stats.censored.add(horizon_ms)
    else:
        stats.replied.add(delay_ms)


def unlearn(stats: ClockStats, delay_ms: int | None, horizon_ms: int) -> None:
    """Take a closed wait back out (a thread forgotten, or a wait beyond its cap)."""
    if delay_ms is None:
        stats.censored.remove(horizon_ms)
    else:
        stats.replied.remove(delay_ms)

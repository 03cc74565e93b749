"""The entity signals' fast paths give exactly what the straightforward ones gave."""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from datetime import UTC, date, datetime

import pytest

from rhythm.processors.codec import encode_entity
from rhythm.processors.signals import survival
from rhythm.processors.signals.calendar import DAY_MS, HOUR_MS, BusinessCalendar
from rhythm.processors.signals.entity import (
    ROUTED_QUIET,
    AdvanceResult,
    EntityState,
    SignalConfig,
    _finalize,
    _finalize_all,
)
from rhythm.processors.signals.histogram import BUCKETS, bucket_upper_ms
from rhythm.processors.signals.rhythm import SilenceConfig, SilenceRule
from rhythm.processors.signals.survival import ClockStats

MONDAY = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1000)
BERLIN = BusinessCalendar(tz="Europe/Berlin", working_days=frozenset(range(5)))
SIG = SignalConfig(window_sizes_ms=(HOUR_MS, DAY_MS), lateness_ms=0)


def bursty_times(rng: random.Random, days: int) -> list[int]:
    """Busy stretches and long pauses: quiets that become silences, and short gaps."""
    out: list[int] = []
    t = MONDAY
    while t < MONDAY + days * DAY_MS:
        t += int(rng.expovariate(1 / (20 * 60_000))) + 1
        if rng.random() < 0.002:
            t += rng.randrange(3, 10) * DAY_MS  # a pause of days
        out.append(t)
    return out


# Many false alarms allowed: thresholds near their floor (FAR expected events). And knobs
# the settings refuse (a NaN budget), where judge gives no floor: judged at every gap.
CONFIGS = [
    SilenceConfig(min_span_ms=2 * DAY_MS, false_alarms_per_quarter=1e6, min_quiet_ms=0),
    SilenceConfig(min_span_ms=2 * DAY_MS, false_alarms_per_quarter=math.nan),
]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cfg", CONFIGS)
def test_a_run_judged_once_gives_the_alerts_and_state_of_judging_every_gap(
    seed: int, cfg: SilenceConfig
) -> None:
    """_finalize_all leaves the silence model unjudged between gaps (rhythm.learn_gap) and
    judges when a gap may be a silence, a resumed alert reads it, or the run ends: the same
    alerts and saved bytes as judging after every gap."""
    rng = random.Random(seed)
    rule = SilenceRule(BERLIN, cfg)
    times = bursty_times(rng, 90)
    eager, lazy = EntityState(), EntityState()
    eager_out, lazy_out = AdvanceResult(), AdvanceResult()
    i = 0
    while i < len(times):
        run = times[i : i + rng.choice((1, 2, 5, 40, 300))]  # events finalized together
        i += len(run)
        for ts in run:
            _finalize(eager, ts, SIG, rule, eager_out)
        _finalize_all(lazy, run, SIG, rule, lazy_out)
        assert repr(lazy_out.alerts) == repr(eager_out.alerts)  # (NaN details compare unequal)
        assert encode_entity(lazy, {}) == encode_entity(eager, {})
        if rng.random() < 0.05:  # a routed event's quiet (note_routed)
            eager.silent_since_ms = lazy.silent_since_ms = ROUTED_QUIET
    kinds = {a.kind for a in eager_out.alerts}
    assert kinds == {"silence", "resumed"}, kinds  # the checks above saw both kinds


def by_upto(cal: BusinessCalendar, start: int, end: int) -> tuple[int, int, int]:
    """split() the long way, for a calendar without holidays: the difference of _upto."""
    if end <= start:
        return (0, 0, 0)
    a, b = cal._upto(cal.local(start)), cal._upto(cal.local(end))
    return (b[0] - a[0], b[1] - a[1], b[2] - a[2])


@pytest.mark.parametrize("holidays", [False, True])
def test_a_calendar_answers_the_same_whatever_it_was_asked_before(holidays: bool) -> None:
    """The calendar remembers its last `_upto` (an entity's consecutive gaps share an end)
    and splits a span within one day without it: chained and scattered questions get the
    answers of a calendar asked nothing before, and of the long way."""

    def calendar() -> BusinessCalendar:
        days_off = {date(2026, 3, 4), date(2026, 3, 7), date(2026, 3, 9)} if holidays else set()
        return BusinessCalendar(
            tz="America/New_York",
            working_days=frozenset({0, 1, 2, 3, 5}),
            start_hour=8.5,
            end_hour=17.25,
            holidays=frozenset(days_off),
        )

    rng = random.Random(3)
    cal = calendar()
    t = MONDAY
    for _ in range(3000):
        step = rng.choice((0, 1, 60_000, HOUR_MS, 7 * HOUR_MS, DAY_MS, 3 * DAY_MS))
        a = t if rng.random() < 0.7 else MONDAY + rng.randrange(30 * DAY_MS)  # chained or not
        t = a + int(step * rng.random())
        assert cal.split(a, t) == calendar().split(a, t), (a, t)
        if not holidays:
            assert cal.split(a, t) == by_upto(calendar(), a, t), (a, t)
        assert cal.category(t) == calendar().category(t), t
        assert cal.work_clock(t) == calendar().work_clock(t), t


def curve_by_every_bucket(stats: ClockStats, now_ms: int) -> tuple[float, ...]:
    """survival.curve's S(t) the long way: every bucket visited, no early stop."""
    d, c, opened = stats.replied.counts, stats.censored.counts, stats.open
    open_counts = [0] * BUCKETS
    previous = 0
    for i in range(BUCKETS):
        younger = len(opened) - bisect_right(opened, now_ms - bucket_upper_ms(i))
        open_counts[i] = younger - previous
        previous = younger
    at_risk = stats.replied.total + stats.censored.total + len(opened)
    s, out = 1.0, []
    for i in range(BUCKETS):
        leaving = c[i] + open_counts[i]
        effective = at_risk - leaving / 2.0
        if d[i] and effective > 0:
            s *= max(0.0, 1.0 - d[i] / effective)
        out.append(s)
        at_risk -= d[i] + leaving
    return tuple(out)


def test_a_curve_stops_early_only_where_nothing_is_left() -> None:
    """survival.curve stops counting open waits past the oldest, and walking the buckets
    once every wait is counted: the same curve as visiting every bucket."""
    rng = random.Random(4)
    now = MONDAY + 30 * DAY_MS
    for _ in range(500):
        stats = ClockStats()
        for _ in range(rng.choice((0, 1, 5, 80))):
            stats.replied.add(int(rng.expovariate(1 / rng.choice((60_000, DAY_MS)))))
        for _ in range(rng.choice((0, 1, 10))):
            stats.censored.add(rng.choice((14 * DAY_MS, rng.randrange(1, DAY_MS))))
        for _ in range(rng.choice((0, 1, 3, 100))):
            survival.open_wait(stats, now - rng.randrange(-1000, 20 * DAY_MS))
        got = survival.curve(stats, now)
        assert got.survival == curve_by_every_bucket(stats, now)
        assert len(got.survival) == BUCKETS

"""The business calendar and the silence rule's rhythm model, on plain data."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from rhythm.processors.signals import rhythm
from rhythm.processors.signals.calendar import (
    DAY_MS,
    EVENING,
    HOUR_MS,
    OFF,
    WORK,
    BusinessCalendar,
    CalendarError,
)
from rhythm.processors.signals.entity import (
    AdvanceResult,
    EntityAlert,
    EntityState,
    SignalConfig,
    add_event,
    advance,
)
from rhythm.processors.signals.rhythm import SilenceConfig, SilenceRule

MIN = 60_000
BERLIN = BusinessCalendar(tz="Europe/Berlin", working_days=frozenset(range(5)))
MONDAY = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1000)  # a Monday, UTC
SIG = SignalConfig(window_sizes_ms=(DAY_MS,), lateness_ms=0, late_retention_ms=0)


def category_by_hand(cal: BusinessCalendar, ts: int) -> int:
    local = datetime.fromtimestamp(ts / 1000, ZoneInfo(cal.tz))
    if local.weekday() not in cal.working_days:
        return OFF
    hour = local.hour + local.minute / 60
    return WORK if cal.start_hour <= hour < cal.end_hour else EVENING


def test_the_category_of_an_instant_agrees_with_the_zone_database() -> None:
    rng = random.Random(5)
    for _ in range(2000):  # across a year, both sides of the daylight-saving changes
        ts = MONDAY + rng.randrange(0, 365 * DAY_MS)
        ts -= ts % MIN
        if ts % HOUR_MS == 0:
            continue  # the hour's offset is cached at its start; skip the boundary itself
        assert BERLIN.category(ts) == category_by_hand(BERLIN, ts), ts


def test_a_split_adds_up_and_agrees_with_counting_minutes() -> None:
    rng = random.Random(6)
    for _ in range(200):
        start = MONDAY + rng.randrange(0, 60 * DAY_MS)
        end = start + rng.randrange(0, 9 * DAY_MS)
        split = BERLIN.split(start, end)
        # spans are measured in local time: one crossing a daylight-saving change is an
        # hour longer or shorter
        assert abs(sum(split) - (end - start)) in (0, HOUR_MS)
        counted = [0, 0, 0]
        for t in range(start, end, 10 * MIN):
            counted[category_by_hand(BERLIN, t)] += min(10 * MIN, end - t)
        dst = abs(sum(split) - (end - start)) == HOUR_MS
        for got, want in zip(split, counted, strict=True):
            assert abs(got - want) <= (HOUR_MS if dst else 0) + 20 * MIN


def test_a_week_has_the_working_hours_it_says() -> None:
    assert BERLIN.week == (5 * 9 * HOUR_MS, 5 * 15 * HOUR_MS, 2 * DAY_MS)


@pytest.mark.parametrize("cal", [BERLIN, BusinessCalendar(tz="Asia/Tokyo")])
def test_solve_finds_where_the_expected_count_reaches_the_target(cal: BusinessCalendar) -> None:
    rng = random.Random(7)
    for _ in range(300):
        start = MONDAY + rng.randrange(0, 30 * DAY_MS)  # March: Berlin changes its clocks
        rates = (rng.uniform(1, 50) / HOUR_MS, rng.uniform(0, 2) / HOUR_MS, 0.01 / HOUR_MS)
        target = rng.uniform(0.5, 40)
        t = cal.solve(start, rates, target)
        split = cal.split(start, t)
        size = sum(r * x for r, x in zip(rates, split, strict=True))
        dst = abs(sum(split) - (t - start)) == HOUR_MS  # an hour at most, at any rate
        assert size == pytest.approx(target, abs=max(rates) * (1.01 * HOUR_MS if dst else 2))
        if not dst:
            before = cal.split(start, t - 1)
            assert sum(r * x for r, x in zip(rates, before, strict=True)) < target


def test_holidays_are_days_off() -> None:
    easter_monday = date(2026, 4, 6)
    cal = BusinessCalendar(
        tz="Europe/Berlin", working_days=frozenset(range(5)), holidays=frozenset({easter_monday})
    )
    day = int(datetime(2026, 4, 6, tzinfo=ZoneInfo("Europe/Berlin")).timestamp() * 1000)
    assert cal.category(day + 12 * HOUR_MS) == OFF
    assert BERLIN.category(day + 12 * HOUR_MS) == WORK
    assert cal.split(day, day + DAY_MS) == (0, 0, DAY_MS)
    week = cal.split(day - 3 * DAY_MS, day + 4 * DAY_MS)  # Friday to Friday
    assert week == (BERLIN.week[0] - 9 * HOUR_MS, BERLIN.week[1] - 15 * HOUR_MS, 3 * DAY_MS)
    rng = random.Random(12)
    for _ in range(200):  # solve and split agree across the holiday
        start = day - rng.randrange(0, 40 * DAY_MS)
        rates = (rng.uniform(1, 9) / HOUR_MS, rng.uniform(0, 1) / HOUR_MS, 0.01 / HOUR_MS)
        target = rng.uniform(1, 400)
        t = cal.solve(start, rates, target)
        split = cal.split(start, t)
        if sum(split) == t - start:  # no daylight-saving change inside
            size = sum(r * x for r, x in zip(rates, split, strict=True))
            assert size == pytest.approx(target, abs=max(rates) * 2)


def test_bad_calendars_are_clear_errors() -> None:
    with pytest.raises(CalendarError, match="working day"):
        BusinessCalendar(working_days=frozenset())
    with pytest.raises(CalendarError, match="hours"):
        BusinessCalendar(start_hour=18, end_hour=9)
    with pytest.raises(CalendarError, match="zone"):
        BusinessCalendar(tz="Mars/Olympus")


# -- the rule over long synthetic histories ----------------------------------------------------


def poisson(
    rng: random.Random, cal: BusinessCalendar, per_hour: tuple[float, float, float], days: int
) -> list[int]:
    """A Poisson process whose rate depends on the calendar's category (thinning)."""
    top = max(per_hour) / HOUR_MS
    out: list[int] = []
    t, end = MONDAY, MONDAY + days * DAY_MS
    while True:
        t += int(rng.expovariate(top)) + 1
        if t >= end:
            return out
        if rng.random() < per_hour[cal.category(t)] / HOUR_MS / top:
            out.append(t)


def silences(times: list[int], rule: SilenceRule, until: int) -> list[EntityAlert]:
    state, out = EntityState(), AdvanceResult()
    for ts in times:
        add_event(state, ts, 1.0, ts, SIG, out, rule)
        out.alerts.extend(advance(state, ts, SIG, rule).alerts)
    out.alerts.extend(advance(state, until, SIG, rule).alerts)
    return [a for a in out.alerts if a.kind == "silence"]


RULE = SilenceRule(BERLIN, SilenceConfig())


def test_steady_entities_of_any_pace_rarely_look_silent() -> None:
    # 20 entities, a year each, paces from 3 a day to 40 an hour: at most 1 false alarm per
    # entity per quarter is the goal; 0.25 is the setting, estimation error adds some.
    rng = random.Random(8)
    days = 364
    alarms = 0
    for i in range(20):
        pace = 10 ** rng.uniform(-0.9, 1.6)  # per working hour
        times = poisson(rng, BERLIN, (pace, pace * 0.05, pace * 0.01), days)
        alarms += len(silences(times, RULE, times[-1] + 1))
        assert times, i
    per_entity_quarter = alarms / 20 / (days / 91)
    assert per_entity_quarter <= 0.5, alarms


def test_nights_and_weekends_are_not_silences_for_a_weekday_worker() -> None:
    rng = random.Random(9)
    times = poisson(rng, BERLIN, (12.0, 0.0, 0.0), 120)  # only in working hours
    assert silences(times, RULE, times[-1] + 1) == []


def test_a_stop_is_found_within_a_few_usual_gaps_of_working_time() -> None:
    rng = random.Random(10)
    times = poisson(rng, BERLIN, (6.0, 0.2, 0.0), 60)
    found = silences(times, RULE, times[-1] + 30 * DAY_MS)
    assert len(found) == 1
    alert = found[0]
    assert alert.last_event_at_ms == times[-1]
    # measured in the entity's own time: expected events missed, a handful to a dozen
    assert 3 <= float(alert.details["expected_events"]) <= 20
    work, _, _ = BERLIN.split(times[-1], alert.fired_at_ms)
    assert work <= 4 * HOUR_MS  # 6 an hour: alerted within a few working hours


def test_the_rates_follow_the_calendar() -> None:
    rng = random.Random(11)
    times = poisson(rng, BERLIN, (10.0, 1.0, 0.0), 90)
    model = rhythm.start(times[0], RULE)
    for a, b in itertools.pairwise(times):
        rhythm.observe_gap(model, a, b, RULE, BERLIN.split(a, b))
    work, evening, off = (r * HOUR_MS for r in rhythm.rates(model))
    assert 8 < work < 12 and 0.6 < evening < 1.5 and off < 0.05


def test_the_work_clock_counts_working_time_holidays_included() -> None:
    cal = BusinessCalendar(
        tz="Europe/Berlin", working_days=frozenset(range(5)), holidays=frozenset({date(2026, 4, 6)})
    )
    rng = random.Random(13)
    for _ in range(300):
        a = MONDAY + rng.randrange(0, 60 * DAY_MS)
        b = a + rng.randrange(0, 20 * DAY_MS)
        assert cal.work_clock(b) - cal.work_clock(a) == cal.split(a, b)[0]
        work = rng.randrange(0, 40 * HOUR_MS)
        t = cal.after_work(a, work)
        assert cal.work_clock(t) - cal.work_clock(a) in (work, work + 1)
        assert cal.work_clock(t - 1) - cal.work_clock(a) < work or work == 0

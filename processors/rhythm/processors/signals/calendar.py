"""A tenant's business calendar: which instants are working time, in O(1) per question.

The silence rule measures quiet in an entity's *own* time: an hour of Saturday costs a
weekday-only entity almost nothing. To do that it splits any span of time into three parts
(`WORK`: working hours of working days, `EVENING`: the rest of working days, `OFF`: days off)
and weighs each by the entity's own rate in it (rhythm.py).

Everything works in the tenant's local wall-clock time, so 09:00-18:00 stays 09:00-18:00
across daylight-saving changes. The local time of an instant uses the zone's offset at the
start of its hour (cached per hour), and spans are measured in local time: a span that
crosses a daylight-saving change is off by that hour at most, which no threshold here
notices.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
WORK, EVENING, OFF = 0, 1, 2
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


class CalendarError(ValueError):
    """A calendar that cannot work (no working day, hours out of range, unknown zone)."""


Split = tuple[int, int, int]  # milliseconds of (WORK, EVENING, OFF)


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    tz: str = "UTC"
    working_days: frozenset[int] = frozenset(range(5))  # Monday = 0
    start_hour: float = 9.0
    end_hour: float = 18.0
    holidays: frozenset[date] = frozenset()  # local dates off, whatever their weekday
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _cum: tuple[Split, ...] = field(init=False, repr=False, compare=False)
    _offsets: dict[int, int] = field(init=False, repr=False, compare=False)
    _days_off: tuple[int, ...] = field(init=False, repr=False, compare=False)
    # Per question answered in the hot path (each final gap of an entity with a silence
    # rule): the hours in ms, whether day k of the epoch's week (k = days since the epoch
    # mod 7) is a working day, and the last `_upto` asked for, (local, split), as an entity's
    # consecutive gaps ask for their shared end twice.
    _start: int = field(init=False, repr=False, compare=False)
    _end: int = field(init=False, repr=False, compare=False)
    _works: tuple[bool, ...] = field(init=False, repr=False, compare=False)
    _last_upto: list[tuple[int, Split]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.working_days:
            raise CalendarError("a calendar needs at least one working day")
        if not all(0 <= d <= 6 for d in self.working_days):
            raise CalendarError(f"working days are 0 (Monday) to 6: {sorted(self.working_days)}")
        if not 0 <= self.start_hour < self.end_hour <= 24:
            raise CalendarError(
                f"working hours must satisfy 0 <= start < end <= 24: "
                f"{self.start_hour}-{self.end_hour}"
            )
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise CalendarError(f"unknown time zone {self.tz!r}") from exc
        object.__setattr__(self, "_zone", zone)
        object.__setattr__(self, "_offsets", {})
        object.__setattr__(self, "_start", int(self.start_hour * HOUR_MS))
        object.__setattr__(self, "_end", int(self.end_hour * HOUR_MS))
        works = tuple((EPOCH_WEEKDAY + k) % 7 in self.working_days for k in range(7))
        object.__setattr__(self, "_works", works)
        object.__setattr__(self, "_last_upto", [(0, (0, 0, 0))])
        # _cum[k]: the split of local days 0..k-1 counted from the epoch's weekday.
        cum: list[Split] = [(0, 0, 0)]
        for k in range(7):
            day = self._day_split((EPOCH_WEEKDAY + k) % 7, DAY_MS)
            last = cum[-1]
            cum.append((last[0] + day[0], last[1] + day[1], last[2] + day[2]))
        object.__setattr__(self, "_cum", tuple(cum))
        epoch = date(1970, 1, 1)
        days_off = sorted(
            (d - epoch).days for d in self.holidays if d.weekday() in self.working_days
        )
        object.__setattr__(self, "_days_off", tuple(days_off))

    # -- questions -----------------------------------------------------------------------

    @property
    def week(self) -> Split:
        return self._cum[7]

    def category(self, ts: int) -> int:
        days, in_day = divmod(self.local(ts), DAY_MS)
        if not self._works[days % 7] or (self._days_off and self._is_day_off(days)):
            return OFF
        return WORK if self._start <= in_day < self._end else EVENING

    def split(self, start: int, end: int) -> Split:
        """How much of [start, end) is working time, evening of a working day, day off."""
        if end <= start:
            return (0, 0, 0)
        ls, le = self.local(start), self.local(end)
        day = ls // DAY_MS
        if day == le // DAY_MS and not self._days_off:
            # Within one local day (most gaps of a busy entity): _upto's whole weeks and
            # days cancel, what is left is the difference of the two parts of that day.
            if not self._works[day % 7]:
                return (0, 0, le - ls)
            s_in, e_in = ls - day * DAY_MS, le - day * DAY_MS
            s_work = max(0, min(s_in, self._end) - self._start)
            e_work = max(0, min(e_in, self._end) - self._start)
            return (e_work - s_work, (e_in - e_work) - (s_in - s_work), 0)
        a, b = self._upto(ls), self._upto(le)
        held_work, held_evening = self._holiday_time(ls, le)  # their working days were off
        return (
            b[0] - a[0] - held_work,
            b[1] - a[1] - held_evening,
            b[2] - a[2] + held_work + held_evening,
        )

    def work_clock(self, ts: int) -> int:
        """Working time from the epoch to `ts`: differences are working time between."""
        local = self.local(ts)
        work = self._upto(local)[0]
        days_off = self._days_off
        if days_off:
            day = local // DAY_MS
            held = bisect_left(days_off, day) * (self._end_ms - self._start_ms)
            if self._is_day_off(day):
                in_day = local - day * DAY_MS
                held += max(0, min(in_day, self._end_ms) - self._start_ms)
            work -= held
        return work

    def after_work(self, start: int, work_ms: int) -> int:
        """The instant by which `work_ms` of working time has passed since `start`."""
        return self.solve(start, (1.0, 0.0, 0.0), work_ms)

    def solve(self, start: int, rates: tuple[float, float, float], target: float) -> int:
        """The first instant t >= start at which sum(rate[c] * time in c over [start, t))
        reaches `target` (rates per ms; at least one positive)."""
        if target <= 0:
            return start
        if rates[0] == rates[1] == rates[2]:
            return start + _ceil(target / rates[0])
        local = self.local(start)
        week = self.week
        per_week = rates[0] * week[0] + rates[1] * week[1] + rates[2] * week[2]
        acc = 0.0
        t = local
        # Whole weeks first (a rare entity may need months), then segment by segment.
        weeks = int(target // per_week) - 1 if per_week > 0 else 0
        if weeks > 0:
            acc = weeks * per_week
            held_work, held_evening = self._holiday_time(t, t + weeks * WEEK_MS)
            acc -= (rates[0] - rates[2]) * held_work + (rates[1] - rates[2]) * held_evening
            t += weeks * WEEK_MS
        for _ in range(512):  # about two weeks are left: at most 3 stretches a day
            seg_end, category = self._segment(t)
            gain = rates[category] * (seg_end - t)
            if acc + gain >= target:
                t += _ceil((target - acc) / rates[category])
                return self._to_utc(t, start + (t - local))
            acc += gain
            t = seg_end
        return self._to_utc(t, start + (t - local))  # unreachable for a positive weekly rate

    # -- internals -----------------------------------------------------------------------

    @property
    def _start_ms(self) -> int:
        return self._start

    @property
    def _end_ms(self) -> int:
        return self._end

    def local(self, ts: int) -> int:
        hour = ts // HOUR_MS
        offset = self._offsets.get(hour)
        if offset is None:
            when = datetime.fromtimestamp(hour * 3600, UTC)
            delta = self._zone.utcoffset(when)
            offset = int(delta.total_seconds() * 1000) if delta is not None else 0
            if len(self._offsets) > 100_000:
                self._offsets.clear()
            self._offsets[hour] = offset
        return ts + offset

    def _to_utc(self, local: int, guess: int) -> int:
        """The instant whose local time is `local` (the offset may differ from the start's)."""
        return local - (self.local(guess) - guess)

    def _is_day_off(self, day: int) -> bool:
        days_off = self._days_off
        i = bisect_left(days_off, day)
        return i < len(days_off) and days_off[i] == day

    def _holiday_time(self, local_start: int, local_end: int) -> tuple[int, int]:
        """The working and evening time that holidays took out of [local_start, local_end)."""
        days_off = self._days_off
        if not days_off:
            return 0, 0
        first = bisect_left(days_off, local_start // DAY_MS)
        last = bisect_left(days_off, -(-local_end // DAY_MS))
        work = evening = 0
        for day in days_off[first:last]:
            lo = max(local_start, day * DAY_MS) - day * DAY_MS
            hi = min(local_end, (day + 1) * DAY_MS) - day * DAY_MS
            w = max(0, min(hi, self._end_ms) - max(lo, self._start_ms))
            work, evening = work + w, evening + (hi - lo) - w
        return work, evening

    def _day_split(self, weekday: int, upto: int) -> Split:
        if weekday not in self.working_days:
            return (0, 0, upto)
        work = max(0, min(upto, self._end_ms) - self._start_ms)
        return (work, upto - work, 0)

    def _upto(self, local: int) -> Split:
        """The split of local time from the epoch to `local` (may be negative: shifted)."""
        memo = self._last_upto
        if memo[0][0] == local:
            return memo[0][1]
        days, in_day = divmod(local, DAY_MS)
        weeks, day = divmod(days, 7)
        week, cum = self._cum[7], self._cum[day]
        if self._works[day]:  # _day_split, inline
            work = max(0, min(in_day, self._end) - self._start)
            evening, off = in_day - work, 0
        else:
            work, evening, off = 0, 0, in_day
        split = (
            weeks * week[0] + cum[0] + work,
            weeks * week[1] + cum[1] + evening,
            weeks * week[2] + cum[2] + off,
        )
        memo[0] = (local, split)
        return split

    def _segment(self, local: int) -> tuple[int, int]:
        """The end of the constant-category stretch that `local` is in, and its category."""
        day_start = local - local % DAY_MS
        weekday = (local // DAY_MS + EPOCH_WEEKDAY) % 7
        if weekday not in self.working_days or self._is_day_off(local // DAY_MS):
            return day_start + DAY_MS, OFF
        in_day = local - day_start
        if in_day < self._start_ms:
            return day_start + self._start_ms, EVENING
        if in_day < self._end_ms:
            return day_start + self._end_ms, WORK
        return day_start + DAY_MS, EVENING


def _ceil(x: float) -> int:
    n = int(x)
    return n if n >= x else n + 1

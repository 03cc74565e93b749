"""When a heads-up may go out: quiet hours in the recipient's own time, daily caps, retry
backoff. Pure: times are epoch milliseconds and every function takes `now`.

- Quiet hours: outside the recipient's working hours (their zone, hours and days from the
  directory, else the notifier's defaults) a heads-up is *held* until their next working
  day starts, then sent.
- Caps: at most `daily_cap` heads-ups per recipient per local day (the day it is due, so
  what quiet hours hold counts on the morning it goes out); the rest are *suppressed*,
  recorded, and left for the daily digest.
- Retries: `base * 2**(attempt-1)`, capped, until `max_attempts`; then a dead letter.
- Digests: one per person per working day, due from the start of their working hours (in
  their zone) until the end of them: a notifier that was down at 9:00 sends it at 9:20, one
  down all day sends none for that day (never in the evening). Which clock: the notifier's
  wall clock (`now`), as for quiet hours: a digest is for a person reading it now; event time
  decides only what the digest says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from rhythm.schemas.people import Person

__all__ = [
    "WorkingTime",
    "backoff_s",
    "digest_due",
    "local_day",
    "next_send_at",
    "working_time",
]


@dataclass(frozen=True)
class WorkingTime:
    zone: ZoneInfo
    hours: tuple[int, int]  # [start, end) local hours
    days: frozenset[int]  # 0 = Monday


def working_time(
    person: Person | None,
    default_zone: str,
    default_hours: tuple[int, int],
    default_days: tuple[int, ...],
) -> WorkingTime:
    traits = person.traits if person is not None else None
    zone = (traits.timezone if traits else None) or default_zone
    hours = (traits.working_hours if traits else None) or default_hours
    days = (traits.working_days if traits else None) or default_days
    return WorkingTime(ZoneInfo(zone), (hours[0], hours[1]), frozenset(days))


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def next_send_at(now_ms: int, wt: WorkingTime) -> int:
    """`now_ms` inside the recipient's working hours, else the start of their next ones."""
    local = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(wt.zone)
    start_h, end_h = wt.hours
    if local.weekday() in wt.days and start_h <= local.hour < end_h:
        return now_ms
    day = local.date()
    if local.weekday() in wt.days and local.hour < start_h:
        candidate = day
    else:
        candidate = day + timedelta(days=1)
    for _ in range(8):
        if candidate.weekday() in wt.days:
            start = datetime(
                candidate.year, candidate.month, candidate.day, start_h, tzinfo=wt.zone
            )
            # A start hour skipped by a DST change resolves forward: still a valid instant.
            return max(now_ms, _ms(start))
        candidate += timedelta(days=1)
    return now_ms  # unreachable with at least one working day


def digest_due(now_ms: int, wt: WorkingTime) -> tuple[str, int] | None:
    """(the local day, when its working hours started, epoch ms) while `now_ms` is inside
    the recipient's working hours; else None (no digest is due now)."""
    if next_send_at(now_ms, wt) != now_ms:
        return None
    local = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(wt.zone)
    start = datetime(local.year, local.month, local.day, wt.hours[0], tzinfo=wt.zone)
    return local.date().isoformat(), min(now_ms, _ms(start))


def local_day(ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).date().isoformat()


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Delay after failed attempt number `attempt` (1-based)."""
    return float(min(max_s, base_s * 2 ** max(0, attempt - 1)))

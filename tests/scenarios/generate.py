"""A labelled, seedable generator of enterprise activity for scoring Rhythm's heads-up alerts.

Designed independently of Rhythm's alert rules (it never reads them): the processes below are
what product services of a few made-up companies would emit, and the labels say what truly
happened (an entity stopped, a customer's message was never answered, ...). README.md in this
folder documents every behaviour, parameter and label.

    scenario = generate(seed=1, size="small")          # ~12 days, ~30k events
    scenario = generate(seed=1, size="large")          # 91 days, ~700k events
    write_jsonl(scenario, "events.jsonl"); json.dump(labels_json(scenario), ...)

CLI: `python -m tests.scenarios.generate --size large --seed 1 --out DIR`.
"""

from __future__ import annotations

import argparse
import bisect
import copy
import itertools
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MIN_MS = 60_000
SEC_MS = 1_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
DEFAULT_START_MS = 1_788_739_200_000  # 2026-09-07T00:00:00Z, a Monday
COLD_START_MS = 2 * DAY_MS  # a message in the first 2 days is `cold_start`...
COLD_START_HISTORY = 20  # ...and so is one sent before 20 replies of its kind were seen
# The silence after a planted stop, to the end of the data, is at least this many times the
# longest silence of the entity before the stop (and 3 times its usual episode gap), measured
# on the entity's active clock (weekends and observed holidays cut out for weekday-only ones).
STOP_CLEARANCE: dict[str, float] = {"small": 1.25, "large": 2.0}
# ...and the entity's last event before it comes at least this many days into the data.
MIN_HISTORY_DAYS: dict[str, float] = {"small": 5.0, "large": 21.0}
MAX_DISORDER_MS = 59_000  # events arrive at most this late after their occurred_at
INTERNAL_TYPES = ["user", "employee", "agent"]
EXTERNAL_TYPES = ["contact", "customer"]

Size = Literal["small", "large"]
Entity = tuple[str, str]
Event = dict[str, Any]


# -- small helpers ---------------------------------------------------------------------------


_ISO_PREFIX: dict[int, str] = {}


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC text with milliseconds and a `Z`."""
    sec, milli = divmod(ms, 1000)
    minute, s = divmod(sec, 60)
    prefix = _ISO_PREFIX.get(minute)
    if prefix is None:
        prefix = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))
        _ISO_PREFIX[minute] = prefix
    return f"{prefix}{s:02d}.{milli:03d}Z"


def parse_ms(text: str) -> int:
    """RFC 3339 text (as written by `iso_ms`) back to epoch milliseconds."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(dt.timestamp() * 1000)


def _uuid7(ms: int, rng: random.Random) -> str:
    """A UUIDv7 (what the client library assigns): 48-bit ms timestamp, 74 random bits."""
    rnd = rng.getrandbits(74)
    x = (ms << 80) | (0x7 << 76) | ((rnd >> 62) << 64) | (0b10 << 62) | (rnd & ((1 << 62) - 1))
    h = f"{x:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _loguniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 40:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _geom1(rng: random.Random, mean: float) -> int:
    """1, 2, 3, ... geometric with the given mean (>= 1)."""
    if mean <= 1.0:
        return 1
    u = 1.0 - rng.random()
    return 1 + int(math.log(u) / math.log(1.0 - 1.0 / mean))


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _rng(*parts: object) -> random.Random:
    """An independent, deterministic stream per component (str seeds hash with SHA-512)."""
    return random.Random(":".join(str(p) for p in parts))


# -- public holidays (tables by region; weekends never matter) --------------------------------

_FIXED_HOLIDAYS: dict[str, list[tuple[int, int]]] = {
    "US": [(1, 1), (6, 19), (7, 4), (11, 11), (12, 25)],
    "DE": [(1, 1), (5, 1), (10, 3), (12, 25), (12, 26)],
    "JP": [
        (1, 1),
        (2, 11),
        (2, 23),
        (4, 29),
        (5, 3),
        (5, 4),
        (5, 5),
        (8, 11),
        (9, 23),
        (11, 3),
        (11, 23),
    ],
    "IL": [],
    "UK": [(1, 1), (12, 25), (12, 26)],
    "IN": [(1, 26), (8, 15), (10, 2)],
    "AU": [(1, 1), (1, 26), (4, 25), (12, 25), (12, 26)],
}
# (month, weekday Monday=0, n): the n-th such weekday of the month, n = -1 for the last.
_NTH_HOLIDAYS: dict[str, list[tuple[int, int, int]]] = {
    "US": [(1, 0, 3), (2, 0, 3), (5, 0, -1), (9, 0, 1), (10, 0, 2), (11, 3, 4)],
    "DE": [],
    "JP": [(1, 0, 2), (7, 0, 3), (9, 0, 3), (10, 0, 2)],
    "IL": [],
    "UK": [(5, 0, 1), (5, 0, -1), (8, 0, -1)],
    "IN": [],
    "AU": [(6, 0, 2), (10, 0, 1)],
}


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    last = nxt - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def public_holidays(region: str, years: Sequence[int]) -> set[date]:
    out: set[date] = set()
    for y in years:
        out.update(date(y, m, d) for m, d in _FIXED_HOLIDAYS[region])
        out.update(_nth_weekday(y, m, wd, n) for m, wd, n in _NTH_HOLIDAYS[region])
    return out


# -- tenants and their conversation kinds ------------------------------------------------------


@dataclass(frozen=True)
class TenantSpec:
    name: str
    tz: str
    working_days: tuple[int, ...]
    working_hours: tuple[int, int]
    region: str  # public holiday table
    profile: str  # which conversation kinds it runs: helpdesk, chat_support, tickets, tiny_email
    scale: float  # population multiplier (1.0: the big tenant)
    person_type: str  # the internal actor type its HR/product directory uses for people
    id_style: str  # "num", "email" or "hex"
    domain: str
    pace: float  # multiplies every activity rate
    visitor_events_per_day: float  # unlabelled web visitors' page views etc. per day
    always_weight: bool  # its producer always sends "weight": 1.0


@dataclass(frozen=True)
class KindSpec:
    """A kind of conversation and its reply norm (what is normal for our side to take)."""

    name: str
    style: Literal["email", "ticket", "chat", "internal"]
    channel: str
    starter: Literal["outside", "ours"]
    outside_type: str  # contact or customer
    staff: str  # staff pool name
    clock: Literal["business", "wall"]  # replies counted in working time or wall-clock time
    reply_median_min: float
    reply_sigma: float
    cust_median_min: float
    cust_sigma: float
    per_day: float  # threads started per working day
    in_reply_to_p: float
    turns: tuple[float, float, float, float]  # weights of 1..4 exchanges
    closing: tuple[tuple[str, float], ...]
    p_missed: float
    opener_verb: str
    followup_verb: str
    ours_verb: str
    msg_type: str
    question_prop: bool = False  # messages carry the NLP flag properties.question
    outreach_answer_p: float = 0.0
    tags: tuple[str, ...] = ()

    @property
    def reply_p80_min(self) -> float:
        return self.reply_median_min * math.exp(0.8416 * self.reply_sigma)

    @property
    def reply_cap_min(self) -> float:
        """Replies are drawn from the norm truncated at its 99th percentile."""
        return self.reply_median_min * math.exp(2.3263 * self.reply_sigma)


_TICKET_CLOSING = (
    ("resolved_silent", 0.22),
    ("resolved_closed", 0.30),
    ("resolved_rated", 0.20),
    ("resolved_autoclosed", 0.20),
    ("ambiguous", 0.08),
)


def _kinds(profile: str, variant: str) -> list[KindSpec]:
    b = variant == "b"
    if profile == "helpdesk":
        reply_verb = "sent" if b else "replied"  # b's mail integration logs replies as `sent`
        return [
            KindSpec(
                name="support_email",
                style="email",
                channel="email",
                starter="outside",
                outside_type="contact",
                staff="support",
                clock="business",
                reply_median_min=110 if b else 75,
                reply_sigma=0.8,
                cust_median_min=180,
                cust_sigma=1.1,
                per_day=7 if b else 9,
                in_reply_to_p=0.95,
                turns=(0.45, 0.3, 0.15, 0.1),
                closing=(("silent", 0.52), ("thanked", 0.40), ("ambiguous", 0.08)),
                p_missed=0.03,
                opener_verb="sent",
                followup_verb=reply_verb,
                ours_verb=reply_verb,
                msg_type="email",
                tags=("support",),
            ),
            KindSpec(
                name="ticket",
                style="ticket",
                channel="ticket",
                starter="outside",
                outside_type="contact",
                staff="tickets",
                clock="business",
                reply_median_min=200 if b else 150,
                reply_sigma=0.6,
                cust_median_min=300,
                cust_sigma=1.0,
                per_day=6 if b else 7,
                in_reply_to_p=0.15,
                turns=(0.35, 0.35, 0.2, 0.1),
                closing=_TICKET_CLOSING,
                p_missed=0.03,
                opener_verb="opened",
                followup_verb="commented",
                ours_verb="commented",
                msg_type="comment",
                tags=("support", "helpdesk"),
            ),
            KindSpec(
                name="sales_inbound",
                style="email",
                channel="email",
                starter="outside",
                outside_type="customer",
                staff="sales",
                clock="business",
                reply_median_min=240 if b else 180,
                reply_sigma=0.9,
                cust_median_min=240,
                cust_sigma=1.2,
                per_day=3,
                in_reply_to_p=0.9,
                turns=(0.4, 0.35, 0.15, 0.1),
                closing=(("silent", 0.6), ("thanked", 0.3), ("ambiguous", 0.1)),
                p_missed=0.04,
                opener_verb="sent",
                followup_verb=reply_verb,
                ours_verb=reply_verb,
                msg_type="email",
                tags=("sales",),
            ),
            KindSpec(
                name="sales_outreach",
                style="email",
                channel="email",
                starter="ours",
                outside_type="customer",
                staff="sales",
                clock="business",
                reply_median_min=240 if b else 180,
                reply_sigma=0.9,
                cust_median_min=600,
                cust_sigma=1.2,
                per_day=5 if b else 4,
                in_reply_to_p=0.9,
                turns=(0.5, 0.3, 0.15, 0.05),
                closing=(("silent", 0.6), ("thanked", 0.3), ("ambiguous", 0.1)),
                p_missed=0.04,
                opener_verb="sent",
                followup_verb=reply_verb,
                ours_verb=reply_verb,
                msg_type="email",
                outreach_answer_p=0.35,
                tags=("sales", "outbound"),
            ),
        ]
    if profile == "chat_support":
        return [
            KindSpec(
                name="chat",
                style="chat",
                channel="chat",
                starter="outside",
                outside_type="contact",
                staff="chat",
                clock="wall",
                reply_median_min=4.0 if b else 2.5,
                reply_sigma=0.7,
                cust_median_min=1.5,
                cust_sigma=0.8,
                per_day=18 if b else 14,
                in_reply_to_p=0.85,
                turns=(0.2, 0.3, 0.3, 0.2),
                closing=(
                    ("closed", 0.40 if not b else 0.3),
                    ("rated", 0.25 if not b else 0.35),
                    ("agent_closed", 0.20),
                    ("silent", 0.10),
                    ("ambiguous", 0.05),
                ),
                p_missed=0.03,
                opener_verb="sent",
                followup_verb="sent",
                ours_verb="sent",
                msg_type="chat_message",
                tags=("support", "live-chat"),
            ),
            KindSpec(
                name="support_email",
                style="email",
                channel="email",
                starter="outside",
                outside_type="contact",
                staff="support",
                clock="business",
                reply_median_min=180 if b else 240,
                reply_sigma=0.7,
                cust_median_min=240,
                cust_sigma=1.0,
                per_day=4 if b else 3,
                in_reply_to_p=0.95,
                turns=(0.45, 0.3, 0.15, 0.1),
                closing=(("intent_closing", 0.45), ("silent", 0.45), ("ambiguous", 0.10)),
                p_missed=0.04,
                opener_verb="received",
                followup_verb="received",
                ours_verb="replied",
                msg_type="email",
                question_prop=True,
                tags=("support",),
            ),
            KindSpec(
                name="internal_chat",
                style="internal",
                channel="chat",
                starter="ours",
                outside_type="user",
                staff="internal",
                clock="business",
                reply_median_min=30,
                reply_sigma=1.0,
                cust_median_min=30,
                cust_sigma=1.0,
                per_day=5,
                in_reply_to_p=0.8,
                turns=(0.5, 0.3, 0.15, 0.05),
                closing=(("silent", 1.0),),
                p_missed=0.0,
                opener_verb="posted",
                followup_verb="posted",
                ours_verb="posted",
                msg_type="chat_message",
            ),
        ]
    if profile == "tickets":
        return [
            KindSpec(
                name="ticket",
                style="ticket",
                channel="ticket",
                starter="outside",
                outside_type="contact",
                staff="tickets",
                clock="business",
                reply_median_min=180 if b else 240,
                reply_sigma=0.5,
                cust_median_min=360,
                cust_sigma=1.0,
                per_day=5,
                in_reply_to_p=0.1,
                turns=(0.4, 0.35, 0.15, 0.1),
                closing=_TICKET_CLOSING,
                p_missed=0.04,
                opener_verb="opened",
                followup_verb="commented",
                ours_verb="commented",
                msg_type="comment",
                tags=("helpdesk",),
            ),
        ]
    # tiny_email
    return [
        KindSpec(
            name="email",
            style="email",
            channel="email",
            starter="outside",
            outside_type="contact",
            staff="support",
            clock="business",
            reply_median_min=240 if b else 300,
            reply_sigma=0.9,
            cust_median_min=240,
            cust_sigma=1.1,
            per_day=2.5,
            in_reply_to_p=0.9,
            turns=(0.5, 0.3, 0.15, 0.05),
            closing=(("thanked", 0.3), ("silent", 0.6), ("ambiguous", 0.1)),
            p_missed=0.05,
            opener_verb="sent",
            followup_verb="replied",
            ours_verb="replied",
            msg_type="email",
        ),
    ]


_STAFF: dict[str, dict[str, tuple[int, str]]] = {
    # profile -> staff pool -> (head count, internal actor type)
    "helpdesk": {"support": (10, "employee"), "tickets": (8, "agent"), "sales": (6, "employee")},
    "chat_support": {"chat": (8, "agent"), "support": (4, "user"), "internal": (12, "user")},
    "tickets": {"tickets": (5, "agent")},
    "tiny_email": {"support": (2, "employee")},
}


def tenant_specs(variant: str) -> list[TenantSpec]:
    mon_fri = (0, 1, 2, 3, 4)
    if variant == "a":
        return [
            TenantSpec("acme", "America/New_York", mon_fri, (9, 17), "US", "helpdesk", 1.0,
                       "employee", "num", "acme.com", 1.0, 900.0, True),
            TenantSpec("globex", "Europe/Berlin", mon_fri, (8, 17), "DE", "chat_support", 0.5,
                       "user", "email", "globex.de", 1.0, 300.0, False),
            TenantSpec("initech", "Asia/Tokyo", mon_fri, (9, 18), "JP", "tickets", 0.25,
                       "user", "hex", "initech.jp", 1.0, 120.0, False),
            TenantSpec("umbrella", "Asia/Jerusalem", (6, 0, 1, 2, 3), (9, 18), "IL",
                       "tiny_email", 0.12, "employee", "email", "umbrella.co.il", 1.0, 20.0,
                       False),
        ]  # fmt: skip
    if variant == "b":
        return [
            TenantSpec("northwind", "Europe/London", mon_fri, (9, 17), "UK", "chat_support",
                       1.0, "user", "hex", "northwind.co.uk", 1.25, 700.0, False),
            TenantSpec("contoso", "America/Chicago", mon_fri, (8, 16), "US", "helpdesk", 0.45,
                       "employee", "email", "contoso.com", 0.8, 400.0, True),
            TenantSpec("tailspin", "Asia/Kolkata", (0, 1, 2, 3, 4, 5), (10, 19), "IN",
                       "tickets", 0.3, "user", "num", "tailspin.in", 1.1, 150.0, False),
            TenantSpec("fabrikam", "Australia/Sydney", mon_fri, (8, 17), "AU", "tiny_email",
                       0.1, "employee", "email", "fabrikam.com.au", 0.7, 15.0, False),
        ]  # fmt: skip
    raise ValueError(f"unknown variant {variant!r} (a or b)")


# -- calendar: a tenant's local days, working intervals, business-time arithmetic -------------


class Calendar:
    """Local days of one tenant's time zone around the scenario span (plus 25 days of slack)."""

    def __init__(self, spec: TenantSpec, start_ms: int, days: int, company: set[date]) -> None:
        self.spec = spec
        self.tz = ZoneInfo(spec.tz)
        first = datetime.fromtimestamp(start_ms / 1000, self.tz).date() - timedelta(days=1)
        self.dates = [first + timedelta(days=i) for i in range(days + 27)]
        self.midnights: list[int] = []
        for d in self.dates:
            offset = datetime(d.year, d.month, d.day, 12, tzinfo=self.tz).utcoffset()
            assert offset is not None
            off_ms = int(offset.total_seconds() * 1000)
            self.midnights.append((d.toordinal() - _EPOCH_ORDINAL) * DAY_MS - off_ms)
        years = sorted({d.year for d in self.dates})
        self.public = {d for d in public_holidays(spec.region, years) if self._weekday_ok(d)}
        self.company = set(company)
        self.weekday_ok = [self._weekday_ok(d) for d in self.dates]
        self.working = [
            ok and d not in self.public and d not in self.company
            for ok, d in zip(self.weekday_ok, self.dates, strict=True)
        ]
        h0, h1 = spec.working_hours
        self.w_starts: list[int] = []
        self.w_ends: list[int] = []
        for i, ok in enumerate(self.working):
            if ok:
                self.w_starts.append(self.midnights[i] + h0 * HOUR_MS)
                self.w_ends.append(self.midnights[i] + h1 * HOUR_MS)
        ranks = {wd: r for r, wd in enumerate(self.week())}
        n = len(spec.working_days)
        self.dow_factor = [
            (1.05 if ranks[d.weekday()] < 2 else 0.85 if ranks[d.weekday()] == n - 1 else 1.0)
            if d.weekday() in ranks
            else 0.0
            for d in self.dates
        ]

    def _weekday_ok(self, d: date) -> bool:
        return d.weekday() in self.spec.working_days

    def week(self) -> list[int]:
        """The working weekdays in the tenant's own order (a Sunday-Thursday week starts on
        Sunday): the first is the one whose eve is not a working day."""
        wds = self.spec.working_days
        first = next((wd for wd in sorted(wds) if (wd - 1) % 7 not in wds), min(wds))
        return sorted(wds, key=lambda wd: (wd - first) % 7)

    def day_of(self, ms: int) -> int:
        return bisect.bisect_right(self.midnights, ms) - 1

    def local_hour(self, ms: int) -> float:
        return (ms - self.midnights[self.day_of(ms)]) / HOUR_MS

    def local_date(self, ms: int) -> date:
        return datetime.fromtimestamp(ms / 1000, self.tz).date()

    def in_hours(self, ms: int) -> bool:
        i = bisect.bisect_right(self.w_starts, ms) - 1
        return i >= 0 and ms < self.w_ends[i]

    def business_add(self, ms: int, dur_ms: float) -> int:
        """The instant when `dur_ms` of working time has passed after `ms`."""
        i = bisect.bisect_right(self.w_ends, ms)
        cur = max(ms, self.w_starts[i])
        left = dur_ms
        while True:
            avail = self.w_ends[i] - cur
            if left <= avail:
                return int(cur + left)
            left -= avail
            i += 1
            cur = self.w_starts[i]

    def business_between(self, a: int, b: int) -> int:
        """Working time between two instants."""
        total = 0
        i = bisect.bisect_right(self.w_ends, a)
        while i < len(self.w_starts) and self.w_starts[i] < b:
            total += max(0, min(b, self.w_ends[i]) - max(a, self.w_starts[i]))
            i += 1
        return total

    def next_daytime(self, ms: int, rng: random.Random, lo: float = 7.5, hi: float = 10.0) -> int:
        """The next local morning between lo and hi o'clock after `ms`."""
        i = self.day_of(ms)
        if self.local_hour(ms) >= lo:
            i += 1
        return self.midnights[i] + int(rng.uniform(lo, hi) * HOUR_MS)


# -- labels and the scenario ------------------------------------------------------------------


@dataclass
class SilenceLabel:
    """One entity to score for `silence`. Gap statistics are computed from the emitted events
    of its normal period (everything before `stop_at_ms` inclusive, or all its events)."""

    tenant: str
    role: str  # "actor" or "target": the event field the entity appears in
    entity_type: str
    entity_id: str
    pattern: str
    stationary: bool
    weekday_only: bool
    observes_holidays: str  # "all" (public + company days), "public" or "none"
    stop_at_ms: int | None
    stop_kind: str | None  # "stop" (permanent), "pause" (resumes) or None
    resumes_at_ms: int | None
    usual_gap_ms: int | None  # median gap, active clock (see _active_times)
    usual_episode_gap_ms: int | None  # the same between episodes (events < 15 min apart merged)
    p90_gap_ms: int | None  # wall-clock gaps from here on
    max_gap_ms: int | None
    max_active_gap_ms: int | None  # the longest gap on the active clock
    n_events: int
    first_at_ms: int | None
    last_at_ms: int | None
    nominal_rate_per_day: float | None = None
    nominal_period_ms: int | None = None
    burst_gap_ms: int | None = None
    pace_change_at_ms: int | None = None
    pace_factor: float | None = None
    usual_gap_after_change_ms: int | None = None
    taper_from_ms: int | None = None
    days_off: list[str] = field(default_factory=list)
    tz: str = ""


@dataclass
class WaitLabel:
    """One message (or workflow event) of a conversation, keyed by its event_id."""

    event_id: str
    tenant: str
    context_id: str
    kind: str
    channel: str
    side: str  # "outside" or "ours"
    label: str  # missed, replied_normal, replied_slow, ends_thread, ours
    sent_at_ms: int
    replied_at_ms: int | None
    reply_event_id: str | None
    due_at_ms: int | None  # outside messages: when the kind's norm (its p99) has elapsed
    slow_after_ms: int | None  # the kind's p80 (working or wall time): beyond it `replied_slow`
    cold_start: bool
    history_replies: int
    ambiguous: bool
    message_role: str  # opener, follow_up, bump, chase, closing, reply, workflow
    is_message: bool  # False for workflow events (assigned, resolved, closed by staff or bot)
    closing_signal: str | None
    actor_type: str
    actor_id: str
    verb: str


@dataclass
class Scenario:
    seed: int
    size: str
    variant: str
    days: int
    start_ms: int
    end_ms: int
    events: list[Event]
    tenants: dict[str, dict[str, Any]]
    kinds: dict[str, dict[str, dict[str, Any]]]
    silence_labels: list[SilenceLabel]
    wait_labels: list[WaitLabel]
    duplicates: list[str]  # event_ids that were re-sent (each appears twice in `events`)


# -- the event sink -----------------------------------------------------------------------------


class _Sink:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.items: list[tuple[int, Event]] = []

    def new_id(self, ms: int) -> str:
        return _uuid7(ms, self.rng)

    def emit(
        self,
        ms: int,
        tenant: TenantSpec,
        actor: Entity,
        verb: str,
        obj: Entity | None = None,
        target: Entity | None = None,
        channel: str | None = None,
        context: str | None = None,
        reply_to: str | None = None,
        tags: list[str] | None = None,
        props: dict[str, Any] | None = None,
        weight: float | None = None,
        event_id: str | None = None,
    ) -> str:
        eid = event_id or _uuid7(ms, self.rng)
        ev: Event = {
            "event_id": eid,
            "tenant": tenant.name,
            "occurred_at": iso_ms(ms),
            "actor": {"type": actor[0], "id": actor[1]},
            "verb": verb,
        }
        if obj is not None:
            ev["object"] = {"type": obj[0], "id": obj[1]}
        if target is not None:
            ev["target"] = {"type": target[0], "id": target[1]}
        if channel is not None:
            ev["channel"] = channel
        if context is not None:
            ev["context_id"] = context
        if reply_to is not None:
            ev["in_reply_to"] = reply_to
        if tags:
            ev["tags"] = tags
        if weight is not None:
            ev["weight"] = float(weight)
        elif tenant.always_weight:
            ev["weight"] = 1.0
        if props:
            ev["properties"] = props
        self.items.append((ms, ev))
        return eid


# -- names and ids ------------------------------------------------------------------------------

_FIRST = [
    "anna", "ben", "carla", "dmitri", "elena", "farid", "grace", "hiro", "ines", "jon",
    "kenji", "lena", "marco", "nadia", "omar", "priya", "quinn", "rosa", "sven", "tara",
    "umar", "vera", "wei", "ximena", "yusuf", "zoe", "aiko", "bruno", "chloe", "diego", "emma",
    "felix", "gita", "hana", "ivan", "julia", "karim", "lucia", "mateo", "noor", "olga",
    "paul", "rin", "sara", "tomas", "uma", "viktor", "wen", "yara",
]  # fmt: skip
_LAST = [
    "smith", "mueller", "tanaka", "cohen", "garcia", "novak", "rossi", "kim", "nguyen",
    "schmidt", "sato", "levi", "martin", "kowalski", "silva", "jensen", "brown", "weber",
    "suzuki", "mizrahi", "lopez", "fischer", "ito", "katz", "dubois", "berg", "costa", "meyer",
    "yamamoto", "peretz", "okafor", "haddad", "lindqvist", "moreau", "patel",
]  # fmt: skip
_SYL = [
    "nor", "ka", "tel", "vex", "lum", "ari", "bri", "zen", "pol", "mar", "sol", "dyn", "qua",
    "tri", "fer", "hal", "ost", "vin", "cor", "pex",
]  # fmt: skip
_TLD = ["com", "io", "de", "co.jp", "net", "co.uk", "fr", "com.au"]


class _Ids:
    """Unique ids per tenant, in the tenant's own style."""

    def __init__(self, spec: TenantSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self.used: set[str] = set()

    def unique(self, make: Callable[[], str]) -> str:
        for _ in range(1000):
            candidate = make()
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate
        raise RuntimeError("id space exhausted")

    def person(self) -> str:
        r, style = self.rng, self.spec.id_style
        if style == "num":
            return self.unique(lambda: f"emp-{r.randrange(10000, 99999)}")
        if style == "hex":
            return self.unique(lambda: f"u-{_hex(r, 6)}")

        def make() -> str:
            digit = r.choice(["", "", "", str(r.randrange(2, 9))])
            return f"{r.choice(_FIRST)}.{r.choice(_LAST)}{digit}@{self.spec.domain}"

        return self.unique(make)

    def staff(self, pool: str) -> str:
        r = self.rng
        if self.spec.id_style == "email":
            return self.person()
        return self.unique(lambda: f"{pool[:3]}-{r.randrange(100, 999)}")

    def account(self) -> str:
        r = self.rng
        return self.unique(lambda: f"acct-{r.randrange(1000, 999999)}")

    def company_domain(self) -> str:
        r = self.rng

        def make() -> str:
            suffix = r.choice(["", "-labs", "-group", "ware"])
            return f"{r.choice(_SYL)}{r.choice(_SYL)}{suffix}.{r.choice(_TLD)}"

        return self.unique(make)

    def contact(self, domain: str) -> str:
        r = self.rng
        if r.random() < 0.3:
            return self.unique(lambda: f"c-{r.randrange(100000, 9999999)}")
        return self.unique(lambda: f"{r.choice(_FIRST)}.{r.choice(_LAST)}@{domain}")

    def thing(self, prefix: str, n: int = 8) -> str:
        r = self.rng
        return self.unique(lambda: f"{prefix}-{_hex(r, n)}")


# -- activity vocabularies --------------------------------------------------------------------

Action = tuple[str, str, str, float]  # verb, object type, channel, weight

_PERSONAS: dict[str, list[Action]] = {
    "engineer": [
        ("edited", "document", "web", 3), ("commented", "pull_request", "web", 3),
        ("merged", "pull_request", "web", 1), ("viewed", "dashboard", "web", 2),
        ("posted", "chat_message", "chat", 4), ("joined", "meeting", "meeting", 1),
        ("created", "task", "web", 1),
    ],
    "sales": [
        ("updated", "deal", "web", 3), ("logged", "call", "phone", 2),
        ("viewed", "account_record", "web", 3), ("sent", "quote", "email", 1),
        ("joined", "meeting", "meeting", 1.5), ("posted", "chat_message", "chat", 2),
    ],
    "support": [
        ("viewed", "ticket", "web", 4), ("updated", "ticket", "web", 2),
        ("searched", "kb_article", "web", 2), ("posted", "chat_message", "chat", 2),
        ("edited", "kb_article", "web", 0.5),
    ],
    "finance": [
        ("approved", "invoice", "web", 2), ("exported", "report", "web", 1),
        ("viewed", "spreadsheet", "desktop", 3), ("edited", "spreadsheet", "desktop", 3),
        ("joined", "meeting", "meeting", 0.5),
    ],
    "manager": [
        ("viewed", "dashboard", "web", 2), ("approved", "request", "mobile", 1.5),
        ("joined", "meeting", "meeting", 3), ("commented", "document", "web", 2),
        ("posted", "chat_message", "chat", 2),
    ],
}  # fmt: skip
_BOT_JOBS: list[Action] = [
    ("synced", "dataset", "api", 1), ("indexed", "repository", "api", 1),
    ("scanned", "mailbox", "api", 1), ("exported", "report", "api", 1),
    ("backed_up", "database", "api", 1), ("checked", "endpoint", "api", 1),
]  # fmt: skip
_ACCOUNT_USE: list[Action] = [
    ("viewed", "dashboard", "web", 4), ("logged_in", "session", "web", 2),
    ("logged_in", "session", "mobile", 1.5), ("downloaded", "report", "web", 1),
    ("searched", "catalog", "web", 1.5), ("called", "api_endpoint", "api", 2),
]  # fmt: skip
_CONTACT_USE: list[Action] = [
    ("logged_in", "session", "mobile", 2), ("viewed", "dashboard", "web", 3),
    ("commented", "community_post", "web", 1), ("downloaded", "file", "web", 1),
]  # fmt: skip
_VISITOR_USE: list[Action] = [
    ("viewed", "page", "web", 6), ("searched", "site", "web", 1),
    ("clicked", "link", "web", 2), ("viewed", "product", "mobile", 2),
]  # fmt: skip
_BURST_USE: list[Action] = [
    ("edited", "proposal", "web", 3), ("commented", "design", "web", 2),
    ("uploaded", "file", "web", 1), ("viewed", "proposal", "web", 3),
]  # fmt: skip
# Variant b: other product vocabularies for the same activity (a rule should not care).
_B_SYNONYMS = {
    "edited": "modified", "posted": "messaged", "viewed": "accessed", "logged_in": "signed_in",
    "synced": "imported", "joined": "attended", "searched": "queried", "commented": "annotated",
}  # fmt: skip
_OBJECT_POOL = {  # ids are drawn from pools this big (1: a single object)
    "document": 400, "dashboard": 40, "spreadsheet": 120, "deal": 300, "account_record": 300,
    "kb_article": 200, "report": 60, "request": 10**6, "pull_request": 5000, "task": 5000,
    "ticket": 20000, "invoice": 10**6, "meeting": 10**6, "call": 10**6, "quote": 10**6,
    "chat_message": 10**9, "session": 10**9, "page": 2000, "site": 1, "link": 3000, "product":
    500, "catalog": 1, "api_endpoint": 80, "file": 3000, "community_post": 2000, "proposal":
    50, "design": 50, "dataset": 20, "repository": 30, "mailbox": 50, "database": 5,
    "endpoint": 30,
}  # fmt: skip


def _actions(
    base: list[Action], variant: str, rng: random.Random
) -> tuple[list[Action], list[float]]:
    """The entity's own mix: weights jittered; b renames verbs and reshuffles the mix more."""
    out: list[Action] = []
    for verb, obj, ch, w in base:
        if variant == "b":
            out.append((_B_SYNONYMS.get(verb, verb), obj, ch, w * rng.uniform(0.3, 3.0)))
        else:
            out.append((verb, obj, ch, w * rng.uniform(0.7, 1.4)))
    cum = list(itertools.accumulate(a[3] for a in out))
    return out, cum


def _object_id(rng: random.Random, obj_type: str) -> str:
    n = _OBJECT_POOL.get(obj_type, 1000)
    return f"{obj_type.replace('_', '')[:4]}-{rng.randrange(n)}"


# -- the entity plans -----------------------------------------------------------------------------


@dataclass
class _Plan:
    """What a labelled entity's generator did, to derive its label from the events."""

    tenant: str
    role: str
    entity_type: str
    entity_id: str
    pattern: str
    weekday_only: bool
    observes_holidays: str
    stationary: bool
    stop_at: int | None = None  # no event at or after this (stop), or in [stop_at, resume_at)
    resume_at: int | None = None
    pace_change_at: int | None = None
    pace_factor: float | None = None
    nominal_rate_per_day: float | None = None
    nominal_period_ms: int | None = None
    burst_gap_ms: int | None = None
    taper_from: int | None = None
    days_off: list[str] = field(default_factory=list)
    stop_window: tuple[int, int] | None = None  # a stop to plant once the activity exists


# Population per tenant at scale 1.0: (family, mode, count, minimum count).
_PLAN_LARGE: list[tuple[str, str, int, int]] = [
    ("worker", "stationary", 60, 3), ("worker", "days_off", 12, 1), ("worker", "vacation", 6, 0),
    ("worker", "left", 8, 1), ("worker", "slowdown", 5, 0), ("worker", "speedup", 3, 0),
    ("steady", "stationary", 32, 3), ("steady", "stop", 6, 1), ("steady", "slowdown", 4, 0),
    ("steady", "speedup", 2, 0), ("steady", "taper", 3, 0),
    ("cadence:daily", "stationary", 10, 1), ("cadence:business_daily", "stationary", 8, 1),
    ("cadence:twice_weekly", "stationary", 8, 1), ("cadence:weekly", "stationary", 8, 1),
    ("cadence:biweekly", "stationary", 4, 0),
    ("cadence:daily", "stop", 3, 1), ("cadence:business_daily", "stop", 2, 0),
    ("cadence:twice_weekly", "stop", 3, 0), ("cadence:weekly", "stop", 2, 0),
    ("cadence:daily", "pause", 3, 0), ("cadence:daily", "slowdown", 2, 0),
    ("cadence:twice_weekly", "slowdown", 1, 0),
    ("bursty", "stationary", 10, 1), ("bursty", "stop", 4, 0),
]  # fmt: skip
_PLAN_SMALL: list[tuple[str, str, int, int]] = [
    ("worker", "stationary", 9, 2), ("worker", "days_off", 2, 0), ("worker", "left", 2, 1),
    ("worker", "slowdown", 1, 0),
    ("steady", "stationary", 6, 1), ("steady", "stop", 2, 1), ("steady", "slowdown", 1, 0),
    ("cadence:daily", "stationary", 2, 1), ("cadence:business_daily", "stationary", 2, 0),
    ("cadence:twice_weekly", "stationary", 2, 0), ("cadence:weekly", "stationary", 1, 0),
    ("cadence:daily", "stop", 2, 0),
    ("bursty", "stationary", 2, 0), ("bursty", "stop", 1, 0),
]  # fmt: skip


class _Gen:
    """Everything one `generate` call shares."""

    def __init__(self, seed: int, size: Size, variant: str, days: int, start_ms: int) -> None:
        self.seed, self.size, self.variant = seed, size, variant
        self.days, self.start, self.end = days, start_ms, start_ms + days * DAY_MS
        self.sink = _Sink(_rng(seed, variant, size, "event-ids"))
        self.specs = tenant_specs(variant)
        self.cals: dict[str, Calendar] = {}
        self.ids: dict[str, _Ids] = {}
        self.plans: list[_Plan] = []
        self.dropped: set[int] = set()  # sink indices of events after a planted stop
        self.wait_labels: list[WaitLabel] = []
        self.kinds: dict[str, dict[str, KindSpec]] = {}
        for spec in self.specs:
            r = _rng(seed, variant, size, spec.name, "calendar")
            self.cals[spec.name] = Calendar(spec, start_ms, days, self._company_days(spec, r))
            self.ids[spec.name] = _Ids(spec, _rng(seed, variant, size, spec.name, "ids"))
            self.kinds[spec.name] = {k.name: k for k in _kinds(spec.profile, variant)}

    @property
    def large(self) -> bool:
        return self.size == "large"

    def _company_days(self, spec: TenantSpec, rng: random.Random) -> set[date]:
        """Company-wide days off (a 'wellness day'): 1 in small, 2 in large."""
        tz = ZoneInfo(spec.tz)
        lo, hi = 3, self.days - 2
        out: set[date] = set()
        for _ in range(2 if self.large else 1):
            for _attempt in range(50):
                d = datetime.fromtimestamp(
                    (self.start + rng.randrange(lo, max(lo + 1, hi)) * DAY_MS + DAY_MS // 2) / 1000,
                    tz,
                ).date()
                if d.weekday() in spec.working_days:
                    out.add(d)
                    break
        return out

    def window(self, hist_days: float, margin_days: float) -> tuple[int, int]:
        """Where a planted stop may fall: after `hist_days` of history, `margin_days` before
        the end (shrunk proportionally when the span is too short)."""
        lo, hi = hist_days, self.days - margin_days
        if hi <= lo:
            lo, hi = self.days * 0.45, self.days * 0.6
        return self.start + int(lo * DAY_MS), self.start + int(hi * DAY_MS)

    def day_range(self, cal: Calendar) -> range:
        return range(max(0, cal.day_of(self.start)), cal.day_of(self.end - 1) + 1)

    # -- populations ----------------------------------------------------------------------------

    def populate(self, spec: TenantSpec) -> None:
        plan = _PLAN_LARGE if self.large else _PLAN_SMALL
        shift = self.specs.index(spec)  # which entity types get the 1-2 slots of small tenants
        for family, mode, count, minimum in plan:
            n = max(minimum, int(count * spec.scale + 0.5))
            for k in range(n):
                rng = _rng(self.seed, self.variant, self.size, spec.name, family, mode, k)
                if family == "worker":
                    self.worker(spec, rng, mode)
                elif family == "steady":
                    self.steady(spec, rng, mode, ("bot", "account", "contact")[(k + shift) % 3])
                elif family == "bursty":
                    self.bursty(spec, rng, mode, ("account", "contact")[(k + shift) % 2])
                else:
                    self.cadence(spec, rng, family.split(":")[1], mode)

    def _pace_change(
        self, rng: random.Random, mode: str, slow: float = 0.5
    ) -> tuple[int | None, float | None]:
        """A lasting change of pace somewhere in the middle third of the span."""
        if mode in ("slowdown", "speedup"):
            at = self.start + int(self.days * rng.uniform(0.35, 0.65) * DAY_MS)
            return at, slow if mode == "slowdown" else 2.0
        return None, None

    def worker(self, spec: TenantSpec, rng: random.Random, mode: str) -> None:
        """A person working the tenant's working days, in sessions shaped by the day."""
        first = len(self.sink.items)
        cal, ids = self.cals[spec.name], self.ids[spec.name]
        pid = ids.person()
        persona = rng.choice(list(_PERSONAS))
        actions, cum = _actions(_PERSONAS[persona], self.variant, rng)
        lo, hi = (3.0, 90.0) if self.variant == "b" else (4.0, 120.0)
        if mode == "left":  # so that the stop is clear after a few days of history
            lo = 8.0 if self.large else 15.0
        rate = _loguniform(rng, lo, hi) * spec.pace
        shift = max(-1.25, min(1.5, rng.gauss(0.0, 0.5)))
        evening = rng.choice([0.0, 0.3, 0.6, 1.0, 1.0, 2.0])
        sess_mean = rng.uniform(1.3, 4.5)
        gap_ms = _loguniform(rng, 20, 240) * SEC_MS
        h0, h1 = spec.working_hours
        cum_w = list(itertools.accumulate(_worker_weights(h0, h1, shift, evening)))
        total_w = cum_w[-1]
        team = rng.randrange(12)
        project: Entity = ("project", f"prj-{spec.name[:3]}-{team}")
        tags = [f"team-{team}"] if spec.profile == "chat_support" else None
        change_at, factor = self._pace_change(rng, mode)
        plan = _Plan(
            spec.name,
            "actor",
            spec.person_type,
            pid,
            f"office_worker_{mode}",
            weekday_only=True,
            observes_holidays="all",
            stationary=mode == "stationary",
            pace_change_at=change_at,
            pace_factor=factor,
            nominal_rate_per_day=round(rate, 2),
        )
        days = list(self.day_range(cal))
        off: set[int] = set()
        if mode == "days_off":
            candidates = [
                i
                for i in days
                if cal.working[i]
                and self.start + 2 * DAY_MS < cal.midnights[i] < self.end - 2 * DAY_MS
            ]
            off = set(
                rng.sample(candidates, min(len(candidates), rng.randint(1, 3 if self.large else 2)))
            )
            plan.days_off = sorted(cal.dates[i].isoformat() for i in off)
        elif mode == "vacation":
            lo_ms, hi_ms = self.window(24, 21)
            starts = [
                i
                for i in days[1:]
                if cal.weekday_ok[i]
                and not cal.weekday_ok[i - 1]
                and lo_ms <= cal.midnights[i] <= hi_ms
            ]
            if starts:  # a whole working week off, both weekends around it too
                i = rng.choice(starts)
                plan.stop_at, plan.resume_at = cal.midnights[i], cal.midnights[i + 7]
            else:  # the span is too short for one: an ordinary worker
                plan.stationary, plan.pattern = True, "office_worker_stationary"
        elif mode == "left":
            plan.stop_window = self.window(21, 14) if self.large else self.window(7.6, 3.4)
        times: list[tuple[int, int]] = []
        for i in days:
            if not cal.working[i] or i in off:
                continue
            mid = cal.midnights[i]
            lam = rate * cal.dow_factor[i] * rng.lognormvariate(-0.045, 0.3)
            if change_at is not None and factor is not None and mid + 12 * HOUR_MS >= change_at:
                lam *= factor
            limit = mid + 23 * HOUR_MS
            for _ in range(_poisson(rng, lam / sess_mean)):
                q = bisect.bisect_right(cum_w, rng.random() * total_w)
                t = mid + q * 15 * MIN_MS + int(rng.random() * 15 * MIN_MS)
                for _ in range(_geom1(rng, sess_mean)):
                    if t >= limit:
                        break
                    a = bisect.bisect_right(cum, rng.random() * cum[-1])
                    times.append((t, a))
                    t += int(rng.expovariate(1.0 / gap_ms)) + SEC_MS
        for t0, a in times:
            verb, obj_type, channel, _w = actions[min(a, len(actions) - 1)]
            t = t0
            if obj_type == "meeting":  # meetings start on the hour or half hour
                t = (t0 // (30 * MIN_MS)) * 30 * MIN_MS + rng.randrange(0, 150 * SEC_MS)
            if not self._keep(plan, t):
                continue
            if not cal.in_hours(t) and rng.random() < 0.6:
                channel = "mobile"
            self.sink.emit(
                t,
                spec,
                (spec.person_type, pid),
                verb,
                (obj_type, _object_id(rng, obj_type)),
                project if rng.random() < 0.6 else None,
                channel,
                tags=tags,
            )
        self._finish(plan, first, rng)

    def _finish(self, plan: _Plan, first: int, rng: random.Random) -> None:
        """Plant the stop of a `stop` entity now that all its activity exists. The stop comes
        right after one of its events in the stop window, drawn among those after which the
        silence left (to the end of the data) is at least STOP_CLEARANCE times the longest
        silence the entity had before, and 3 times its usual episode gap, both on its active
        clock (`_active_times`), with MIN_HISTORY_DAYS of data before it. The entity's later
        events are dropped. If no event qualifies the entity stays as it was: stationary."""
        self.plans.append(plan)
        if plan.stop_window is None:
            return
        lo, hi = plan.stop_window
        items = self.sink.items
        times = sorted(items[k][0] for k in range(first, len(items)))
        active = _active_times([*times, self.end], self.cals[plan.tenant], plan)
        end = active.pop()
        need = STOP_CLEARANCE[self.size]
        history = self.start + int(min(MIN_HISTORY_DAYS[self.size], 0.4 * self.days) * DAY_MS)
        n_lo = bisect.bisect_left(times, lo)
        episode = _median(_gaps(active[: max(n_lo, 2)], episodes=True)) or 0
        longest = [0] * len(times)  # the longest active gap up to each event
        for k in range(1, len(times)):
            longest[k] = max(longest[k - 1], active[k] - active[k - 1])
        ok = [
            k
            for k in range(max(4, n_lo), bisect.bisect_left(times, hi))
            if times[k] >= history
            and end - active[k] >= need * longest[k]
            and end - active[k] >= 3 * episode
        ]
        if not ok:
            plan.stop_window = None
            plan.stationary = True
            plan.pattern = plan.pattern.rsplit("_", 1)[0] + "_stationary"
            return
        plan.stop_at = times[rng.choice(ok)] + 1
        self.dropped.update(k for k in range(first, len(items)) if items[k][0] >= plan.stop_at)

    def _keep(self, plan: _Plan, t: int) -> bool:
        if t < self.start or t >= self.end:
            return False
        if plan.stop_at is not None and t >= plan.stop_at:
            return plan.resume_at is not None and t >= plan.resume_at
        return True

    def steady(self, spec: TenantSpec, rng: random.Random, mode: str, what: str) -> None:
        """A 24/7 homogeneous Poisson process (a bot, an account's usage, a contact)."""
        first = len(self.sink.items)
        ids = self.ids[spec.name]
        lo, hi = (2 / 7, 150.0) if self.variant == "b" else (3 / 7, 100.0)
        if mode == "stop":
            lo = 3.0 if not self.large else 0.7
        elif mode == "taper":  # still a few events a day at the end of the decline
            lo = 5.0
        rate = _loguniform(rng, lo, hi) * spec.pace  # per day
        change_at, factor = self._pace_change(rng, mode, rng.choice([0.5, 0.33]))
        contacts: list[Entity] = []
        own_account: Entity | None = None
        if what == "bot":
            job = rng.choice(_BOT_JOBS)
            entity: Entity = ("agent", ids.thing(f"svc-{job[0]}", 4))
            role, base = "actor", [job]
        elif what == "account":
            entity, role, base = ("account", ids.account()), "target", _ACCOUNT_USE
            domain = ids.company_domain()
            contacts = [("contact", ids.contact(domain)) for _ in range(rng.randint(1, 6))]
            contacts.append(("integration", f"int-{entity[1]}"))
        else:
            entity = ("contact", ids.contact(ids.company_domain()))
            role, base, own_account = "actor", _CONTACT_USE, ("account", ids.account())
        actions, cum = _actions(base, self.variant, rng)
        plan = _Plan(
            spec.name,
            role,
            entity[0],
            entity[1],
            f"steady_{what}_{mode}",
            weekday_only=False,
            observes_holidays="none",
            stationary=mode == "stationary",
            pace_change_at=change_at,
            pace_factor=factor,
            nominal_rate_per_day=round(rate, 3),
        )
        margin = max(10.0, 8.0 / rate) if self.large else max(3.5, 8.0 / rate)
        if mode == "stop":
            plan.stop_window = self.window(21 if self.large else 5.5, margin)
        elif mode == "taper":
            lo_ms, hi_ms = self.window(35, 20)
            plan.stop_at = rng.randrange(lo_ms, hi_ms)
            plan.taper_from = plan.stop_at - 14 * DAY_MS
        peak = rate * (2.0 if mode == "speedup" else 1.0) / DAY_MS
        t = self.start + rng.expovariate(peak)
        while t < self.end:
            ti = int(t)
            keep = 1.0
            if change_at is not None and factor is not None:
                if mode == "speedup":
                    keep = 0.5 if ti < change_at else 1.0
                elif ti >= change_at:
                    keep = factor
            if plan.taper_from is not None and plan.stop_at is not None and ti >= plan.taper_from:
                keep = 1.0 - 0.85 * (ti - plan.taper_from) / (plan.stop_at - plan.taper_from)
            if (keep >= 1.0 or rng.random() < keep) and self._keep(plan, ti):
                a = bisect.bisect_right(cum, rng.random() * cum[-1])
                verb, obj_type, channel, _w = actions[min(a, len(actions) - 1)]
                obj = (obj_type, _object_id(rng, obj_type))
                if what == "account":
                    actor = contacts[-1] if channel == "api" else rng.choice(contacts[:-1])
                    self.sink.emit(ti, spec, actor, verb, obj, entity, channel)
                else:
                    self.sink.emit(ti, spec, entity, verb, obj, own_account, channel)
            t += rng.expovariate(peak)
        self._finish(plan, first, rng)

    def cadence(self, spec: TenantSpec, rng: random.Random, period: str, mode: str) -> None:
        """An account with a regular rhythm: nightly sync, daily report, orders twice a
        week, weekly upload, fortnightly payment."""
        first = len(self.sink.items)
        cal, ids = self.cals[spec.name], self.ids[spec.name]
        acct: Entity = ("account", ids.account())
        domain = ids.company_domain()
        buyers: list[Entity] = [("contact", ids.contact(domain)) for _ in range(rng.randint(1, 3))]
        connector: Entity = ("integration", f"conn-{_hex(rng, 6)}")
        wdays = cal.week()
        jitter_scale = 1.6 if self.variant == "b" else 1.0
        if period == "daily":
            hour, jitter = rng.uniform(0.5, 5.0), _loguniform(rng, 2, 30) * jitter_scale
            batch, nominal = rng.uniform(1.0, 4.0), DAY_MS
        elif period == "business_daily":
            hour, jitter = rng.uniform(8.0, 11.0), _loguniform(rng, 10, 45) * jitter_scale
            batch, nominal = rng.uniform(1.0, 2.5), DAY_MS
        elif period == "twice_weekly":
            hour, jitter = rng.uniform(9.0, 16.0), _loguniform(rng, 30, 120) * jitter_scale
            batch, nominal = rng.uniform(1.5, 4.0), int(3.5 * DAY_MS)
        elif period == "weekly":
            hour, jitter = rng.uniform(8.0, 17.0), _loguniform(rng, 20, 90) * jitter_scale
            batch, nominal = rng.uniform(1.0, 3.0), 7 * DAY_MS
        else:  # biweekly
            hour, jitter = rng.uniform(9.0, 16.0), _loguniform(rng, 20, 90) * jitter_scale
            batch, nominal = rng.uniform(1.0, 2.0), 14 * DAY_MS
        pair = rng.choice([(0, 3), (1, 4), (0, 2), (1, 3)])
        my_days = (
            {wdays[pair[0]], wdays[pair[1]]}
            if period == "twice_weekly"
            else {rng.choice(wdays[:4])}
        )
        skip_p = rng.uniform(0.0, 0.06)
        change_at, factor = self._pace_change(rng, mode)
        plan = _Plan(
            spec.name,
            "target",
            "account",
            acct[1],
            f"cadence_{period}_{mode}",
            weekday_only=period != "daily",
            observes_holidays="public" if period == "business_daily" else "none",
            stationary=mode == "stationary",
            pace_change_at=change_at,
            pace_factor=factor,
            nominal_period_ms=nominal,
        )
        if mode == "stop":
            margin = {"daily": 10, "business_daily": 10, "twice_weekly": 14, "weekly": 28}[period]
            if not self.large:
                margin = 4
            plan.stop_window = self.window(21 if self.large else 5.5, margin)
        elif mode == "pause":
            lo_ms, hi_ms = self.window(21, 35)
            plan.stop_at = rng.randrange(lo_ms, hi_ms)
            plan.resume_at = plan.stop_at + int(rng.uniform(10, 20) * DAY_MS)
        occurrence = 0
        for i in self.day_range(cal):
            d = cal.dates[i]
            wd = d.weekday()
            if period == "daily":
                due = True
            elif period == "business_daily":
                due = cal.weekday_ok[i] and d not in cal.public
            elif period == "biweekly":
                due = wd in my_days and (d.toordinal() // 7) % 2 == 0
            else:
                due = wd in my_days
            day = i
            if period == "weekly" and due and rng.random() < 0.1:  # moved by a day
                j = i + rng.choice([-1, 1])
                if 0 <= j < len(cal.dates) and cal.weekday_ok[j]:
                    day = j
            if not due or rng.random() < skip_p:
                continue
            occurrence += 1
            mid = cal.midnights[day]
            if change_at is not None and mid >= change_at and occurrence % 2 == 0:
                continue  # half the occurrences after a slowdown
            t = mid + int(hour * HOUR_MS + rng.gauss(0.0, jitter) * MIN_MS)
            t = max(mid + 20 * MIN_MS, min(mid + 23 * HOUR_MS + 30 * MIN_MS, t))
            n = _geom1(rng, batch)
            buyer = rng.choice(buyers)
            for j in range(n):
                if not self._keep(plan, t):
                    break
                if period == "daily":
                    self.sink.emit(
                        t,
                        spec,
                        connector,
                        "synced" if j == 0 else "imported",
                        ("record_batch", f"batch-{_hex(rng, 10)}"),
                        acct,
                        "api",
                        props={"records": rng.randrange(10, 5000)},
                    )
                elif period == "business_daily":
                    verb = "submitted" if j == 0 else "viewed"
                    self.sink.emit(
                        t, spec, buyer, verb, ("report", f"rpt-{_hex(rng, 8)}"), acct, "web"
                    )
                elif period == "twice_weekly":
                    last = j == n - 1
                    amount = round(rng.lognormvariate(6.0, 0.8), 2)
                    self.sink.emit(
                        t,
                        spec,
                        buyer,
                        "ordered" if last else "viewed",
                        ("order", f"ord-{_hex(rng, 8)}") if last else ("catalog", "main"),
                        acct,
                        "web",
                        props={"amount": amount, "currency": "USD"} if last else None,
                        weight=float(rng.randint(1, 20)) if last else None,
                    )
                elif period == "weekly":
                    self.sink.emit(
                        t,
                        spec,
                        buyer,
                        "uploaded",
                        ("payroll_file", f"pf-{_hex(rng, 8)}"),
                        acct,
                        rng.choice(["web", "api"]),
                    )
                else:
                    self.sink.emit(
                        t,
                        spec,
                        buyer,
                        "paid",
                        ("invoice", f"inv-{_hex(rng, 8)}"),
                        acct,
                        "web",
                        props={"amount": round(rng.lognormvariate(8, 0.5), 2)},
                    )
                t += int(rng.uniform(5, 240) * SEC_MS)
        self._finish(plan, first, rng)

    def bursty(self, spec: TenantSpec, rng: random.Random, mode: str, what: str) -> None:
        """Work in bursts (a customer team reviewing a proposal): long quiet gaps between."""
        first = len(self.sink.items)
        cal, ids = self.cals[spec.name], self.ids[spec.name]
        domain = ids.company_domain()
        acct: Entity = ("account", ids.account())
        people: list[Entity] = [("contact", ids.contact(domain)) for _ in range(rng.randint(1, 4))]
        if self.large:
            gap_days = _loguniform(rng, 1.0, 3.5) if mode == "stop" else _loguniform(rng, 1.0, 6.0)
        else:
            gap_days = _loguniform(rng, 0.3, 0.8) if mode == "stop" else _loguniform(rng, 0.3, 1.5)
        if self.variant == "b":
            gap_days *= 1.3
        size_mean = _loguniform(rng, 5, 40)
        intra_ms = _loguniform(rng, 15, 180) * SEC_MS
        actions, cum = _actions(_BURST_USE, self.variant, rng)
        entity: Entity = acct if what == "account" else people[0]
        plan = _Plan(
            spec.name,
            "target" if what == "account" else "actor",
            entity[0],
            entity[1],
            f"bursty_{what}_{mode}",
            weekday_only=False,
            observes_holidays="none",
            stationary=mode == "stationary",
            burst_gap_ms=int(gap_days * DAY_MS),
        )
        if mode == "stop":
            margin = max(14.0, 4 * gap_days) if self.large else max(3.5, 4 * gap_days)
            plan.stop_window = self.window(21 if self.large else 5.5, margin)
        t = self.start + int(rng.uniform(0, gap_days) * DAY_MS)
        while t < self.end:
            h = cal.local_hour(t)
            if (h < 8 or h >= 20) and rng.random() < 0.85:
                t = cal.next_daytime(t, rng, 8.0, 11.0)
            u = t
            for _ in range(_geom1(rng, size_mean)):
                if self._keep(plan, u):
                    a = bisect.bisect_right(cum, rng.random() * cum[-1])
                    verb, obj_type, channel, _w = actions[min(a, len(actions) - 1)]
                    actor = entity if what == "contact" else rng.choice(people)
                    self.sink.emit(
                        u, spec, actor, verb, (obj_type, _object_id(rng, obj_type)), acct, channel
                    )
                u += int(rng.expovariate(1.0 / intra_ms)) + SEC_MS
            t = u + int(gap_days * DAY_MS * rng.lognormvariate(0.0, 0.6))
        self._finish(plan, first, rng)

    def visitors(self, spec: TenantSpec) -> None:
        """Unlabelled background: web visitors' sessions, with a daytime peak."""
        rng = _rng(self.seed, self.variant, self.size, spec.name, "visitors")
        cal = self.cals[spec.name]
        pool = [f"v-{_hex(rng, 10)}" for _ in range(int(spec.visitor_events_per_day) + 10)]
        actions, cum = _actions(_VISITOR_USE, self.variant, rng)
        daily = spec.visitor_events_per_day * spec.pace / 4.0  # sessions average 4 events
        hourly = [0.3 + math.exp(-(((h - 14.0) / 4.5) ** 2)) for h in range(24)]
        cum_h = list(itertools.accumulate(hourly))
        for i in self.day_range(cal):
            mid = cal.midnights[i]
            f = 1.0 if cal.weekday_ok[i] else 0.55
            for _ in range(_poisson(rng, daily * f)):
                h = bisect.bisect_right(cum_h, rng.random() * cum_h[-1])
                t = mid + h * HOUR_MS + rng.randrange(HOUR_MS)
                who: Entity = ("contact", pool[int(len(pool) * rng.random() ** 1.5)])
                for _ in range(_geom1(rng, 4.0)):
                    if self.start <= t < self.end:
                        a = bisect.bisect_right(cum, rng.random() * cum[-1])
                        verb, obj_type, channel, _w = actions[min(a, len(actions) - 1)]
                        self.sink.emit(
                            t,
                            spec,
                            who,
                            verb,
                            (obj_type, _object_id(rng, obj_type)),
                            None,
                            channel,
                            props={"ref": rng.choice(["search", "direct", "ad", "email"])},
                        )
                    t += rng.randrange(3 * SEC_MS, 90 * SEC_MS)


def _worker_weights(h0: int, h1: int, shift: float, evening: float) -> list[float]:
    """Relative activity per local quarter hour: a ramp into the working day, a mid-morning
    peak, a lunch dip at 12-13 and a post-lunch slump, a ramp out, some evening work."""
    out: list[float] = []
    for q in range(96):
        h = (q + 0.5) / 4.0
        x = h - shift
        if x < h0 - 1.5:
            v = 0.0
        elif x < h0:
            v = 0.8 * (x - (h0 - 1.5)) / 1.5
        elif x < h1:
            v = 1.15 if 10.0 <= x < 11.5 else 1.0
            if 12.0 <= h < 13.0:
                v *= 0.45
            elif 13.0 <= h < 14.0:
                v *= 0.85
        elif x < h1 + 1.0:
            v = 1.0 - 0.6 * (x - h1)
        elif h < 23.0:
            v = 0.12 * evening * (1.4 if 20.0 <= h < 22.0 else 1.0)
        else:
            v = 0.0
        out.append(v)
    return out


# -- conversations --------------------------------------------------------------------------------


@dataclass
class _Msg:
    eid: str
    ms: int
    side: str
    actor: Entity
    verb: str
    obj: Entity
    reply_to: str | None
    props: dict[str, Any] | None
    role: str
    is_message: bool = True
    label: str = ""
    ambiguous: bool = False
    signal: str | None = None
    replied_at: int | None = None
    reply_eid: str | None = None
    due_at: int | None = None


class _Thread:
    def __init__(
        self, g: _Gen, spec: TenantSpec, kind: KindSpec, context: str, account: Entity
    ) -> None:
        self.g, self.spec, self.kind, self.context = g, spec, kind, context
        self.account = account  # the target of every event of the thread
        self.msgs: list[_Msg] = []

    def add(
        self,
        ms: int,
        side: str,
        actor: Entity,
        verb: str,
        obj: Entity,
        role: str,
        reply_to: _Msg | None = None,
        props: dict[str, Any] | None = None,
        is_message: bool = True,
    ) -> _Msg:
        m = _Msg(
            self.g.sink.new_id(ms),
            ms,
            side,
            actor,
            verb,
            obj,
            reply_to.eid if reply_to is not None else None,
            props,
            role,
            is_message,
        )
        self.msgs.append(m)
        return m


class _Conversations:
    """Support, sales and internal threads for one tenant."""

    def __init__(self, g: _Gen, spec: TenantSpec) -> None:
        self.g, self.spec = g, spec
        self.cal = g.cals[spec.name]
        self.ids = g.ids[spec.name]
        self.rng = _rng(g.seed, g.variant, g.size, spec.name, "conversations")
        r = self.rng
        self.staff: dict[str, list[Entity]] = {}
        for pool, (n, typ) in _STAFF[spec.profile].items():
            self.staff[pool] = [(typ, self.ids.staff(pool)) for _ in range(n)]
        self.bot: Entity = ("agent", "helpdesk-automation")
        n_acc = int(60 + 160 * spec.scale) if g.large else int(25 + 50 * spec.scale)
        self.accounts: list[tuple[Entity, list[Entity], list[Entity]]] = []
        for _ in range(n_acc):
            domain = self.ids.company_domain()
            contacts = [("contact", self.ids.contact(domain)) for _ in range(r.randint(1, 4))]
            buyers = [("customer", self.ids.contact(domain)) for _ in range(r.randint(1, 2))]
            self.accounts.append((("account", self.ids.account()), contacts, buyers))

    # -- timing ------------------------------------------------------------------------------

    def _delay_min(self, kind: KindSpec) -> float:
        return min(
            self.rng.lognormvariate(math.log(kind.reply_median_min), kind.reply_sigma),
            kind.reply_cap_min,
        )

    def reply_time(self, kind: KindSpec, sent: int) -> int:
        d_ms = self._delay_min(kind) * MIN_MS
        if kind.clock == "wall":
            return sent + max(SEC_MS, int(d_ms))
        if not self.cal.in_hours(sent) and self.rng.random() < 0.08 and d_ms < 4 * HOUR_MS:
            return sent + max(SEC_MS, int(d_ms))  # someone answers from home in the evening
        return max(sent + SEC_MS, self.cal.business_add(sent, d_ms))

    def clock_between(self, kind: KindSpec, a: int, b: int) -> int:
        return b - a if kind.clock == "wall" else self.cal.business_between(a, b)

    def clock_add(self, kind: KindSpec, a: int, dur_ms: float) -> int:
        return a + int(dur_ms) if kind.clock == "wall" else self.cal.business_add(a, dur_ms)

    def customer_time(self, kind: KindSpec, after: int, median_scale: float = 1.0) -> int:
        r = self.rng
        d = min(
            r.lognormvariate(math.log(kind.cust_median_min * median_scale), kind.cust_sigma),
            4 * 24 * 60.0,
        )
        t = after + int(d * MIN_MS) + SEC_MS
        if kind.style != "chat":
            h = self.cal.local_hour(t)
            if (h < 7 or h >= 22) and r.random() < 0.85:
                t = self.cal.next_daytime(t, r)
        return t

    # -- threads --------------------------------------------------------------------------------

    def starts(self, kind: KindSpec) -> list[int]:
        """Thread start times: mostly the tenant's working hours, some evenings/weekends."""
        r, cal, g = self.rng, self.cal, self.g
        h0, h1 = self.spec.working_hours
        per_day = kind.per_day * (1.0 if g.variant == "a" else r.uniform(0.8, 1.2))
        out: list[int] = []
        for i in g.day_range(cal):
            mid = cal.midnights[i]
            if cal.working[i]:
                n = _poisson(r, per_day * cal.dow_factor[i])
            elif kind.clock == "wall" or kind.style == "internal":
                n = 0
            else:
                n = _poisson(r, per_day * 0.12)
            for _ in range(n):
                if kind.clock == "wall" or kind.style == "internal":
                    h = r.uniform(h0, h1 - 0.5)
                elif cal.working[i] and r.random() < 0.85:
                    h = min(h1 - 0.01, max(h0, r.triangular(h0, h1, h0 + 1.5)))
                else:
                    h = r.uniform(7.0, 22.5)
                t = mid + int(h * HOUR_MS)
                if g.start <= t < g.end:
                    out.append(t)
        return out

    def run(self) -> None:
        g = self.g
        for kind in g.kinds[self.spec.name].values():
            for t0 in self.starts(kind):
                th = self.thread(kind, t0)
                if th is not None and all(g.start <= m.ms < g.end for m in th.msgs):
                    self.accept(th)

    def _missed(self, kind: KindSpec, ms: int) -> tuple[bool, int]:
        due = self.clock_add(kind, ms, kind.reply_cap_min * MIN_MS)
        cold = ms < self.g.start + COLD_START_MS
        p = 0.12 if cold else kind.p_missed
        return (self.rng.random() < p and due < self.g.end - 2 * HOUR_MS), due

    def _props(self, kind: KindSpec, question: bool | None = None) -> dict[str, Any] | None:
        r = self.rng
        props: dict[str, Any] = {}
        if kind.question_prop:
            props["question"] = question if question is not None else r.random() < 0.9
        if kind.style == "email" and r.random() < 0.5:
            props["lang"] = r.choice(["en", "en", "en", "de", "fr", "ja"])
        return props or None

    def _msg_obj(self, kind: KindSpec) -> Entity:
        r = self.rng
        if kind.msg_type == "email":
            return ("email", f"<{_hex(r, 12)}.{_hex(r, 6)}@mail.{self.spec.domain}>")
        if kind.msg_type == "comment":
            return ("comment", self.ids.unique(lambda: f"cmt-{r.randrange(10**7, 10**8)}"))
        return (kind.msg_type, f"msg-{_hex(r, 12)}")

    def thread(self, kind: KindSpec, t0: int) -> _Thread | None:
        r = self.rng
        if kind.style == "internal":
            return self.internal(kind, t0)
        account, contacts, buyers = r.choice(self.accounts)
        who = r.choice(buyers if kind.outside_type == "customer" else contacts)
        pool = self.staff[kind.staff]
        owner = r.choice(pool)
        prefix = {"email": "thr", "ticket": "TCK", "chat": "conv"}[kind.style]
        if kind.style == "ticket":
            context = self.ids.unique(lambda: f"{prefix}-{r.randrange(10**6, 10**7)}")
        else:
            context = self.ids.unique(lambda: f"{prefix}-{_hex(r, 12)}")
        th = _Thread(self.g, self.spec, kind, context, account)
        irt = kind.in_reply_to_p

        def outside(
            ms: int, role: str, reply_to: _Msg | None, verb: str, can_miss: bool = True
        ) -> _Msg:
            missed, due = self._missed(kind, ms) if can_miss else (False, 0)
            question: bool | None = None
            ambiguous = False
            if missed and kind.question_prop and role == "follow_up" and r.random() < 0.25:
                question, ambiguous = False, True  # looks like a closing, still needed an answer
            obj = (
                ("ticket", context)
                if role == "opener" and kind.style == "ticket"
                else self._msg_obj(kind)
            )
            props = self._props(kind, question)
            if kind.style == "ticket" and role == "opener":
                props = {
                    "priority": r.choice(["low", "normal", "normal", "high"]),
                    "category": r.choice(["billing", "bug", "access", "howto"]),
                }
            m = th.add(
                ms,
                "outside",
                who,
                verb,
                obj,
                role,
                reply_to if (reply_to is not None and r.random() < irt) else None,
                props,
            )
            m.due_at = due if can_miss else self.clock_add(kind, ms, kind.reply_cap_min * MIN_MS)
            m.label = "missed" if missed else ""
            m.ambiguous = ambiguous
            return m

        if kind.starter == "ours":
            first = th.add(t0, "ours", owner, kind.opener_verb, self._msg_obj(kind), "opener")
            if r.random() >= kind.outreach_answer_p:
                return th
            o = outside(self.customer_time(kind, first.ms), "follow_up", first, kind.followup_verb)
        else:
            o = outside(t0, "opener", None, kind.opener_verb)
        weights = kind.turns
        turns = r.choices([1, 2, 3, 4], weights=weights)[0]
        assign = kind.style == "ticket" and r.random() < 0.8
        last_reply: _Msg | None = None
        for turn in range(turns):
            pending = [o]
            if o.label == "missed":
                if assign and turn == 0:
                    a_ms = self.clock_add(kind, o.ms, r.uniform(3, 60) * MIN_MS)
                    th.add(
                        a_ms,
                        "ours",
                        owner,
                        "assigned",
                        ("ticket", context),
                        "workflow",
                        is_message=False,
                    )
                if kind.style != "chat" and r.random() < 0.5:  # the customer chases
                    c_ms = self.customer_time(kind, o.ms, 3.0)
                    due = self.clock_add(kind, c_ms, kind.reply_cap_min * MIN_MS)
                    if due < self.g.end - 2 * HOUR_MS:
                        c = outside(c_ms, "chase", o, kind.followup_verb, can_miss=False)
                        c.label = "missed"
                th.msgs.sort(key=lambda m: m.ms)
                return th
            r_ms = self.reply_time(kind, o.ms)
            if assign and turn == 0:
                a_ms = o.ms + int((r_ms - o.ms) * r.uniform(0.05, 0.5))
                th.add(
                    a_ms,
                    "ours",
                    owner,
                    "assigned",
                    ("ticket", context),
                    "workflow",
                    is_message=False,
                )
            if kind.style != "chat" and r.random() < 0.08:
                b_ms = o.ms + int((r_ms - o.ms) * r.uniform(0.3, 0.85))
                if b_ms < r_ms - 2 * MIN_MS:
                    pending.append(outside(b_ms, "bump", o, kind.followup_verb, can_miss=False))
            replier = owner if r.random() < 0.9 else r.choice(pool)
            last_reply = th.add(
                r_ms,
                "ours",
                replier,
                kind.ours_verb,
                self._msg_obj(kind),
                "reply",
                pending[-1] if r.random() < irt else None,
                self._props(kind, None) if kind.question_prop else None,
            )
            for p in pending:
                p.replied_at, p.reply_eid = r_ms, last_reply.eid
            if turn == turns - 1:
                break
            o = outside(self.customer_time(kind, r_ms), "follow_up", last_reply, kind.followup_verb)
        assert last_reply is not None
        self.ending(th, kind, last_reply, owner, who, outside)
        th.msgs.sort(key=lambda m: m.ms)
        return th

    def ending(
        self, th: _Thread, kind: KindSpec, last: _Msg, owner: Entity, who: Entity, outside: Any
    ) -> None:
        r = self.rng
        how = _pick(r, dict(kind.closing))
        context = th.context
        if how == "silent":
            return
        if how == "ambiguous":  # looks exactly like any other message of theirs
            m = outside(
                self.customer_time(kind, last.ms),
                "closing",
                last,
                kind.followup_verb,
                can_miss=False,
            )
            m.label, m.ambiguous, m.signal = "ends_thread", True, "none"
            return
        if how in ("thanked", "closed", "rated", "intent_closing"):
            t = self.customer_time(kind, last.ms, 0.5)
            if how == "thanked":
                m = th.add(
                    t,
                    "outside",
                    who,
                    "thanked",
                    self._msg_obj(kind),
                    "closing",
                    last if r.random() < kind.in_reply_to_p else None,
                )
            elif how == "closed":
                m = th.add(
                    t,
                    "outside",
                    who,
                    "closed",
                    ("conversation", context),
                    "closing",
                    is_message=False,
                )
            elif how == "rated":
                m = th.add(
                    t,
                    "outside",
                    who,
                    "rated",
                    ("rating", f"rt-{_hex(r, 8)}"),
                    "closing",
                    props={"score": r.choice([3, 4, 5, 5, 5])},
                    is_message=False,
                )
            else:
                m = th.add(
                    t,
                    "outside",
                    who,
                    kind.followup_verb,
                    self._msg_obj(kind),
                    "closing",
                    last if r.random() < kind.in_reply_to_p else None,
                    self._props(kind, False),
                )
            m.label, m.signal = (
                "ends_thread",
                ("property:question=false" if how == "intent_closing" else f"verb:{how}"),
            )
            return
        if how == "agent_closed":
            t = last.ms + int(r.uniform(5, 15) * MIN_MS)
            th.add(
                t, "ours", owner, "closed", ("conversation", context), "workflow", is_message=False
            )
            return
        # tickets: our side resolves, then the customer closes/rates, or a bot auto-closes
        t = last.ms + int(r.uniform(1, 30) * MIN_MS)
        th.add(t, "ours", owner, "resolved", ("ticket", context), "workflow", is_message=False)
        if how == "resolved_closed":
            m = th.add(
                self.customer_time(kind, t, 0.5),
                "outside",
                who,
                "closed",
                ("ticket", context),
                "closing",
                is_message=False,
            )
            m.label, m.signal = "ends_thread", "verb:closed"
        elif how == "resolved_rated":
            m = th.add(
                self.customer_time(kind, t, 0.5),
                "outside",
                who,
                "rated",
                ("satisfaction_survey", f"csat-{_hex(r, 8)}"),
                "closing",
                props={"score": r.choice([2, 4, 4, 5, 5])},
                is_message=False,
            )
            m.label, m.signal = "ends_thread", "verb:rated"
        elif how == "resolved_autoclosed":
            t2 = t + int(r.uniform(72, 120) * HOUR_MS)
            if t2 < self.g.end:
                th.add(
                    t2,
                    "ours",
                    self.bot,
                    "closed",
                    ("ticket", context),
                    "workflow",
                    is_message=False,
                )

    def internal(self, kind: KindSpec, t0: int) -> _Thread:
        r = self.rng
        pool = self.staff[kind.staff]
        a, b = r.sample(pool, 2)
        th = _Thread(
            self.g, self.spec, kind, f"dm-{_hex(r, 12)}", ("workspace", f"ws-{r.randrange(40)}")
        )
        m = th.add(t0, "ours", a, kind.opener_verb, self._msg_obj(kind), "opener")
        speaker = a
        for _ in range(r.choices([0, 1, 2, 3], weights=[0.3, 0.4, 0.2, 0.1])[0]):
            speaker = b if speaker == a else a
            t = self.reply_time(kind, m.ms)
            m = th.add(
                t,
                "ours",
                speaker,
                kind.followup_verb,
                self._msg_obj(kind),
                "reply",
                m if r.random() < kind.in_reply_to_p else None,
            )
        return th

    def accept(self, th: _Thread) -> None:
        g, kind, spec = self.g, th.kind, self.spec
        target = th.account
        tags = list(kind.tags) or None
        msgs = th.msgs
        for idx, m in enumerate(msgs):
            g.sink.emit(
                m.ms,
                spec,
                m.actor,
                m.verb,
                m.obj,
                target,
                kind.channel,
                th.context,
                m.reply_to,
                tags,
                m.props,
                event_id=m.eid,
            )
            if m.side == "ours":
                m.label = "ours"
                nxt = next(
                    (
                        n
                        for n in msgs[idx + 1 :]
                        if n.is_message
                        and n.actor != m.actor
                        and (n.side == "outside" or kind.style == "internal")
                    ),
                    None,
                )
                if m.is_message and nxt is not None:
                    m.replied_at, m.reply_eid = nxt.ms, nxt.eid
            elif not m.label:
                assert m.replied_at is not None, (th.context, m.role)
                slow = self.clock_between(kind, m.ms, m.replied_at) > kind.reply_p80_min * MIN_MS
                m.label = "replied_slow" if slow else "replied_normal"
            g.wait_labels.append(
                WaitLabel(
                    event_id=m.eid,
                    tenant=spec.name,
                    context_id=th.context,
                    kind=kind.name,
                    channel=kind.channel,
                    side=m.side,
                    label=m.label,
                    sent_at_ms=m.ms,
                    replied_at_ms=m.replied_at if m.label != "missed" else None,
                    reply_event_id=m.reply_eid if m.label != "missed" else None,
                    due_at_ms=m.due_at if m.side == "outside" and m.is_message else None,
                    slow_after_ms=int(kind.reply_p80_min * MIN_MS) if m.side == "outside" else None,
                    cold_start=False,
                    history_replies=0,
                    ambiguous=m.ambiguous,
                    message_role=m.role,
                    is_message=m.is_message,
                    closing_signal=m.signal,
                    actor_type=m.actor[0],
                    actor_id=m.actor[1],
                    verb=m.verb,
                )
            )


# -- deriving labels from the events ---------------------------------------------------------------


def _median(xs: list[int]) -> int | None:
    return int(statistics.median(xs)) if xs else None


def _p90(xs: list[int]) -> int | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(0.9 * len(s)))]


EPISODE_MS = 15 * MIN_MS  # events closer than this form one episode (session, batch, burst)


def _active_times(times: list[int], cal: Calendar, p: _Plan) -> list[int]:
    """Times on the entity's own active clock: unchanged for 24/7 entities; for weekday-only
    ones every whole local day the entity does not work (weekends, and the holidays it
    observes) is cut out, so Friday 17:00 -> Monday 9:00 counts as 16 hours."""
    if not p.weekday_only:
        return times
    off = [
        not ok
        or (p.observes_holidays != "none" and d in cal.public)
        or (p.observes_holidays == "all" and d in cal.company)
        for ok, d in zip(cal.weekday_ok, cal.dates, strict=True)
    ]
    skipped = list(itertools.accumulate(off, initial=0))  # off days before day i
    return [t - skipped[cal.day_of(t)] * DAY_MS for t in times]


def _gaps(active: list[int], episodes: bool = False) -> list[int]:
    if episodes:
        starts = [t for k, t in enumerate(active) if k == 0 or t - active[k - 1] > EPISODE_MS]
        return [b - a for a, b in itertools.pairwise(starts)]
    return [b - a for a, b in itertools.pairwise(active)]


def _silence_labels(g: _Gen) -> list[SilenceLabel]:
    """Each labelled entity's events, found by scanning every event emitted (not trusting the
    generator's own bookkeeping), and its label."""
    keys: dict[tuple[str, str, str, str], list[int]] = {}
    for p in g.plans:
        keys[(p.tenant, p.role, p.entity_type, p.entity_id)] = []
    for ms, ev in g.sink.items:
        a = ev["actor"]
        lst = keys.get((ev["tenant"], "actor", a["type"], a["id"]))
        if lst is not None:
            lst.append(ms)
        tg = ev.get("target")
        if tg is not None:
            lst = keys.get((ev["tenant"], "target", tg["type"], tg["id"]))
            if lst is not None:
                lst.append(ms)
    out: list[SilenceLabel] = []
    for p in g.plans:
        times = sorted(keys[(p.tenant, p.role, p.entity_type, p.entity_id)])
        if len(times) < 3:
            continue
        cal = g.cals[p.tenant]
        stop_at = resumes = None
        stop_kind: str | None = None
        normal = times
        if p.stop_at is not None:
            before = [t for t in times if t < p.stop_at]
            if len(before) < 3:
                continue
            stop_at = before[-1]
            normal = before
            if p.resume_at is not None:
                after = [t for t in times if t >= p.resume_at]
                if after:
                    stop_kind, resumes = "pause", after[0]
                else:
                    stop_kind = "stop"
            else:
                stop_kind = "stop"
        gaps = [b - a for a, b in itertools.pairwise(normal)]
        base = normal
        after_gap = None
        if p.pace_change_at is not None:
            base = [t for t in normal if t < p.pace_change_at]
            after = _active_times([t for t in normal if t >= p.pace_change_at], cal, p)
            after_gap = _median(_gaps(after))
        active = _active_times(base, cal, p)
        out.append(
            SilenceLabel(
                tenant=p.tenant,
                role=p.role,
                entity_type=p.entity_type,
                entity_id=p.entity_id,
                pattern=p.pattern,
                stationary=p.stationary,
                weekday_only=p.weekday_only,
                observes_holidays=p.observes_holidays,
                stop_at_ms=stop_at,
                stop_kind=stop_kind,
                resumes_at_ms=resumes,
                usual_gap_ms=_median(_gaps(active)),
                usual_episode_gap_ms=_median(_gaps(active, episodes=True)),
                p90_gap_ms=_p90(gaps),
                max_gap_ms=max(gaps) if gaps else None,
                max_active_gap_ms=max(_gaps(_active_times(normal, cal, p)), default=None),
                n_events=len(times),
                first_at_ms=times[0],
                last_at_ms=times[-1],
                nominal_rate_per_day=p.nominal_rate_per_day,
                nominal_period_ms=p.nominal_period_ms,
                burst_gap_ms=p.burst_gap_ms,
                pace_change_at_ms=p.pace_change_at,
                pace_factor=p.pace_factor,
                usual_gap_after_change_ms=after_gap,
                taper_from_ms=p.taper_from,
                days_off=p.days_off,
                tz=cal.spec.tz,
            )
        )
    return out


def _cold_start(g: _Gen) -> None:
    """cold_start: sent in the first 2 days, or before 20 replies of its (tenant, kind)."""
    replies: dict[tuple[str, str], list[int]] = {}
    for w in g.wait_labels:
        if w.side == "outside" and w.replied_at_ms is not None:
            replies.setdefault((w.tenant, w.kind), []).append(w.replied_at_ms)
    for lst in replies.values():
        lst.sort()
    for w in g.wait_labels:
        n = bisect.bisect_left(replies.get((w.tenant, w.kind), []), w.sent_at_ms)
        w.history_replies = n
        w.cold_start = w.sent_at_ms < g.start + COLD_START_MS or n < COLD_START_HISTORY


def _arrival_order(g: _Gen, rng: random.Random) -> tuple[list[Event], list[str]]:
    """Events as they would arrive: each 0-59 s after it occurred (90 % within 2 s), plus a
    few exact duplicates re-sent by a retrying producer (same event_id, same content)."""
    items = g.sink.items
    arrival: list[tuple[int, int, Event]] = []
    for k, (ms, ev) in enumerate(items):
        u = rng.random()
        if u < 0.9:
            delay = rng.randrange(2_000)
        elif u < 0.99:
            delay = rng.randrange(20_000)
        else:
            delay = rng.randrange(MAX_DISORDER_MS)
        arrival.append((ms + delay, k, ev))
    duplicates: list[str] = []
    n_dup = 300 if g.large else 40
    for k in sorted(rng.sample(range(len(items)), min(n_dup, len(items)))):
        ms, ev = items[k]
        duplicates.append(ev["event_id"])
        arrival.append((ms + rng.randrange(MAX_DISORDER_MS), len(arrival), copy.deepcopy(ev)))
    arrival.sort(key=lambda x: (x[0], x[1]))
    return [ev for _, _, ev in arrival], duplicates


# -- the entry points --------------------------------------------------------------------------


def generate(
    seed: int = 1,
    days: int | None = None,
    start_ms: int | None = None,
    size: Size = "small",
    variant: str = "a",
) -> Scenario:
    """A labelled scenario. Same arguments, same scenario (bit for bit)."""
    if size not in ("small", "large"):
        raise ValueError(f"unknown size {size!r} (small or large)")
    days = days if days is not None else (12 if size == "small" else 91)
    start_ms = DEFAULT_START_MS if start_ms is None else start_ms
    g = _Gen(seed, size, variant, days, start_ms)
    for spec in g.specs:
        g.populate(spec)
        g.visitors(spec)
        _Conversations(g, spec).run()
    g.sink.items = [item for k, item in enumerate(g.sink.items) if k not in g.dropped]
    _cold_start(g)
    silence = _silence_labels(g)
    events, duplicates = _arrival_order(g, _rng(seed, variant, size, "arrival"))
    tenants: dict[str, dict[str, Any]] = {}
    for s in g.specs:
        cal = g.cals[s.name]
        first, last = cal.local_date(g.start), cal.local_date(g.end - 1)
        tenants[s.name] = {
            "tz": s.tz,
            "working_days": list(s.working_days),
            "working_hours": list(s.working_hours),
            "holidays": sorted(
                d.isoformat() for d in cal.public | cal.company if first <= d <= last
            ),
            "internal_types": list(INTERNAL_TYPES),
            "external_types": list(EXTERNAL_TYPES),
        }
    kinds = {
        s.name: {
            k.name: {
                "channel": k.channel,
                "style": k.style,
                "starter": k.starter,
                "clock": k.clock,
                "reply_median_min": round(k.reply_median_min, 2),
                "reply_p80_min": round(k.reply_p80_min, 2),
                "reply_cap_min": round(k.reply_cap_min, 2),
                "threads_per_working_day": k.per_day,
            }
            for k in g.kinds[s.name].values()
        }
        for s in g.specs
    }
    return Scenario(
        seed,
        size,
        variant,
        days,
        start_ms,
        g.end,
        events,
        tenants,
        kinds,
        silence,
        g.wait_labels,
        duplicates,
    )


def write_jsonl(scenario: Scenario, path: str | Path) -> None:
    """The events, one canonical JSON object per line, in arrival order."""
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    with open(path, "w", encoding="utf-8") as f:
        for ev in scenario.events:
            f.write(dumps(ev))
            f.write("\n")


def labels_json(scenario: Scenario) -> dict[str, Any]:
    """Labels, tenants' configuration and kinds' norms as one JSON-serialisable object."""
    waits: dict[str, int] = {}
    for w in scenario.wait_labels:
        waits[w.label] = waits.get(w.label, 0) + 1
    return {
        "meta": {
            "generator": "tests.scenarios.generate",
            "seed": scenario.seed,
            "size": scenario.size,
            "variant": scenario.variant,
            "days": scenario.days,
            "start_ms": scenario.start_ms,
            "end_ms": scenario.end_ms,
            "start": iso_ms(scenario.start_ms),
            "end": iso_ms(scenario.end_ms),
            "n_events": len(scenario.events),
            "n_silence_labels": len(scenario.silence_labels),
            "n_stops": sum(1 for s in scenario.silence_labels if s.stop_kind == "stop"),
            "waits": waits,
            "max_disorder_ms": MAX_DISORDER_MS,
            "cold_start": {"first_ms": COLD_START_MS, "min_history_replies": COLD_START_HISTORY},
        },
        "tenants": scenario.tenants,
        "kinds": scenario.kinds,
        "silence": [asdict(s) for s in scenario.silence_labels],
        "waits": [asdict(w) for w in scenario.wait_labels],
        "duplicates": list(scenario.duplicates),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.scenarios.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--size", choices=["small", "large"], default="small")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--variant", choices=["a", "b"], default="a")
    ap.add_argument("--days", type=int, default=None)
    ap.add_argument(
        "--start", default=None, help="start instant, RFC 3339 (default 2026-09-07T00:00:00Z)"
    )
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    start = parse_ms(args.start) if args.start else None
    t0 = time.perf_counter()
    sc = generate(args.seed, args.days, start, args.size, args.variant)
    gen_s = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(sc, args.out / "events.jsonl")
    labels = labels_json(sc)
    with open(args.out / "labels.json", "w", encoding="utf-8") as f:
        json.dump(labels, f, separators=(",", ":"))
    meta = labels["meta"]
    print(
        f"{meta['n_events']} events, {meta['n_silence_labels']} silence labels "
        f"({meta['n_stops']} stops), waits {meta['waits']}; generated in {gen_s:.1f} s "
        f"-> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

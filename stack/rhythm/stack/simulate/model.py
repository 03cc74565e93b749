"""The simulated enterprise: who exists, and everyone's own steady activity. Pure and seedable.

People and accounts keep a *steady* pace until the end (now): every gap between two of their
events is the person's own pace × uniform(0.5, 1.5) × a mild daily swing (±35 %, slowest in
their night), round the clock. That shape dates from a silence rule that could not tell a
night from a silence; the rule now can (business calendars), but the simulation is kept as
it is for `make run`'s report. How the rules do on people who sleep, take weekends and go on
holiday is measured on tests/scenarios, a generator written apart from the rules.

Planted here (the manifest records them): accounts that go quiet (every event of the account,
its users and its contacts stops days before the end), and movers whose pace or purchase
amounts jump from the start of the newest closed day window on.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR

Entity = tuple[str, str]  # (type, id)
Props = Mapping[str, str | int | float | bool]

TEAMS = ("support", "success", "sales", "engineering")
COMMUNITIES = ("analytics", "admins", "api", "mobile", "security")
FEATURES = (
    "dashboard", "reports", "export", "alerts", "integrations",
    "billing", "search", "sharing", "api-keys", "audit-log",
)  # fmt: skip
PRODUCTS = ("seats", "storage", "analytics-addon", "premium-support")
SEGMENTS = {  # users per account, contacts, metered purchase amount (EUR)
    "enterprise": ((3, 5), (2, 3), 2000.0),
    "mid": ((2, 3), (1, 2), 400.0),
    "smb": ((1, 2), (1, 1), 80.0),
}
REGIONS = {"emea": 2.0, "amer": 8.0, "apac": 18.0}  # UTC hour at the middle of the night
ZONES = {"emea": "Europe/Berlin", "amer": "America/New_York", "apac": "Asia/Singapore"}
FIRST_NAMES = ("Ann", "Bo", "Chiara", "Dev", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas")
LAST_NAMES = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva", "Novak", "Haddad", "Kowalski")
DAILY_SWING = 0.35
PACE_MOVER_SPEEDUP = 3.0
AMOUNT_MOVER_FACTOR = 5.0


@dataclass(slots=True)
class SimEvent:
    """One event as the simulation plans it; `to_json` gives the client's canonical shape."""

    ts: int
    event_id: str
    actor: Entity
    verb: str
    object: Entity | None = None
    target: Entity | None = None
    channel: str | None = None
    context_id: str | None = None
    in_reply_to: str | None = None
    tags: tuple[str, ...] = ()
    weight: float = 1.0
    properties: Props | None = None

    def to_json(self, tenant: str) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event_id": self.event_id,
            "tenant": tenant,
            "occurred_at": iso(self.ts),
            "actor": {"type": self.actor[0], "id": self.actor[1]},
            "verb": self.verb,
            "weight": self.weight,
        }
        if self.object is not None:
            event["object"] = {"type": self.object[0], "id": self.object[1]}
        if self.target is not None:
            event["target"] = {"type": self.target[0], "id": self.target[1]}
        for name in ("channel", "context_id", "in_reply_to"):
            value = getattr(self, name)
            if value is not None:
                event[name] = value
        if self.tags:
            event["tags"] = list(self.tags)
        if self.properties:
            event["properties"] = dict(self.properties)
        return event


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event_id(rng: random.Random, ts: int) -> str:
    """A UUIDv7 (time-ordered, as the client would assign) whose random bits come from the
    seed, so a run is reproducible and re-sent copies can carry the same id."""
    value = (ts & (2**48 - 1)) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64
    value |= 0b10 << 62 | rng.getrandbits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(slots=True)
class Person:
    entity: Entity
    pace_ms: int  # mean gap of the person's own activity
    night_utc_h: float  # the person's activity is slowest at this UTC hour
    team: str | None = None  # employees
    communities: tuple[str, ...] = ()
    features: tuple[str, ...] = ()  # the product areas a user works in
    mobile_share: float = 0.0
    account: str | None = None  # users: whose product seat this is


@dataclass(slots=True)
class Account:
    id: str
    segment: str
    users: list[Person]
    contacts: list[Entity]
    documents: list[str]
    purchase_gap_ms: int
    amount: float
    owner: Entity  # customer success manager
    rep: Entity  # sales representative
    quiet_from: int | None = None  # planted silence: nothing of this account from here on
    pace_mover_from: int | None = None  # planted: its users work 3x faster from here on
    amount_mover_from: int | None = None  # planted: its purchases are 5x larger from here on

    @property
    def entity(self) -> Entity:
        return ("account", self.id)

    def active(self, ts: int) -> bool:
        return self.quiet_from is None or ts < self.quiet_from


@dataclass(slots=True)
class World:
    start: int
    now: int
    accounts: list[Account]
    employees: list[Person]
    articles: list[str] = field(default_factory=list)

    def team(self, name: str) -> list[Person]:
        return [e for e in self.employees if e.team == name]


def scaled(base: float, scale: float, least: int) -> int:
    return max(least, round(base * scale))


def build_world(rng: random.Random, *, scale: float, start: int, now: int) -> World:
    days = (now - start) / DAY
    employees = _employees(rng, scaled(30, scale, 6))
    success, sales = (
        [e for e in employees if e.team == "success"],
        [e for e in employees if e.team == "sales"],
    )
    accounts: list[Account] = []
    user_no = contact_no = doc_no = 0
    for a in range(scaled(40, scale, 8)):
        segment = rng.choices(list(SEGMENTS), weights=(2, 4, 4))[0]
        (u_lo, u_hi), (c_lo, c_hi), amount = SEGMENTS[segment]
        account_id = f"acct-{a + 1:04d}"
        region = rng.choice(list(REGIONS))
        users = []
        for _ in range(rng.randint(u_lo, u_hi)):
            user_no += 1
            users.append(
                Person(
                    entity=("user", f"u-{user_no:04d}"),
                    pace_ms=_pace(rng, 40 * MIN, 15 * MIN, 120 * MIN),
                    night_utc_h=REGIONS[region] + rng.uniform(-1.5, 1.5),
                    communities=tuple(rng.sample(COMMUNITIES, rng.choice((0, 1, 1, 2)))),
                    features=tuple(rng.sample(FEATURES, 4)),
                    mobile_share=rng.choice((0.0, 0.1, 0.3)),
                    account=account_id,
                )
            )
        contacts = []
        for _ in range(rng.randint(c_lo, c_hi)):
            contact_no += 1
            contacts.append(("contact", f"c-{contact_no:04d}"))
        documents = []
        for _ in range(2 + 2 * len(users)):
            doc_no += 1
            documents.append(f"doc-{doc_no:04d}")
        accounts.append(
            Account(
                id=account_id,
                segment=segment,
                users=users,
                contacts=contacts,
                documents=documents,
                purchase_gap_ms=int(rng.uniform(2, 8) * HOUR),
                amount=amount * rng.uniform(0.6, 1.6),
                owner=rng.choice(success).entity,
                rep=rng.choice(sales).entity,
            )
        )
    _plant(rng, accounts, scale=scale, now=now, days=days)
    articles = [f"kb-{i + 1:03d}" for i in range(scaled(40, scale, 10))]
    return World(start=start, now=now, accounts=accounts, employees=employees, articles=articles)


def directory(world: World) -> list[tuple[Entity, dict[str, Any]]]:
    """What `Client.identify()` says of each employee: a name, an address, the zone of the
    region their nights fall in, office hours there, their team; all of them ours."""
    out = []
    for i, e in enumerate(world.employees):
        region = min(REGIONS, key=lambda r: abs(REGIONS[r] - e.night_utc_h))
        first = FIRST_NAMES[i % len(FIRST_NAMES)]
        last = LAST_NAMES[(i // len(FIRST_NAMES) + i) % len(LAST_NAMES)]
        traits = {
            "name": f"{first} {last}", "email": f"{e.entity[1]}@acme.example",
            "timezone": ZONES[region], "working_hours": [9, 17], "team": e.team,
            "internal": True,
        }  # fmt: skip
        out.append((e.entity, traits))
    return out


def _employees(rng: random.Random, count: int) -> list[Person]:
    shares = (0.4, 0.25, 0.2, 0.15)
    # At least one of each team (support needs two: someone must answer every thread).
    teams = ["support", "support", "success", "sales", "engineering"]
    while len(teams) < count:
        teams.append(rng.choices(TEAMS, weights=shares)[0])
    people = []
    for i, team in enumerate(teams):
        people.append(
            Person(
                entity=("employee", f"e-{i + 1:03d}"),
                pace_ms=_pace(rng, 50 * MIN, 20 * MIN, 150 * MIN),
                night_utc_h=rng.choice(list(REGIONS.values())) + rng.uniform(-1, 1),
                team=team,
                communities=tuple(rng.sample(COMMUNITIES, rng.choice((0, 0, 1)))),
            )
        )
    return people


def _pace(rng: random.Random, median: int, low: int, high: int) -> int:
    return int(min(max(median * math.exp(rng.gauss(0, 0.35)), low), high))


def _plant(
    rng: random.Random, accounts: list[Account], *, scale: float, now: int, days: float
) -> None:
    """Choose the silent accounts and the movers (disjoint sets of accounts)."""
    order = list(accounts)
    rng.shuffle(order)
    silent = order[: scaled(4, scale, 2)]
    movers = order[len(silent) : len(silent) + 2 * scaled(2, scale, 1)]
    for account in silent:
        # Quiet for days: far beyond twice the account's p95 gap (at most ~1.4 days for a
        # pace of 8 h), with weeks of steady history before.
        quiet_days = min(rng.uniform(2.5, 6.0), max(2.0, days * 0.3))
        account.quiet_from = now - int(quiet_days * DAY)
    since = mover_start(now)
    for i, account in enumerate(movers):
        if i % 2 == 0:
            account.pace_mover_from = since
        else:
            account.amount_mover_from = since


def mover_start(now: int) -> int:
    """Movers change at the UTC midnight that opens the newest day window the processors
    will have closed (yesterday's; the day before when now is too close to midnight for
    yesterday's window to close before a report), so that window moves in full against a
    baseline of untouched earlier days."""
    today = now - now % DAY
    return today - DAY if now - today >= HOUR else today - 2 * DAY


def steady_times(
    rng: random.Random,
    start: int,
    end: int,
    pace_ms: int,
    night_utc_h: float | None = None,
    *,
    faster_from: int | None = None,
    speedup: float = 1.0,
) -> Iterator[int]:
    """Event times at a steady pace from `start` until `end` (exclusive); see the module doc
    for why the gaps are bounded."""
    t = start + int(rng.uniform(0, pace_ms))
    while t < end:
        yield t
        gap = pace_ms * rng.uniform(0.5, 1.5)
        if night_utc_h is not None:
            hour = (t % DAY) / HOUR
            gap *= 1 + DAILY_SWING * math.cos(2 * math.pi * (hour - night_utc_h) / 24)
        if faster_from is not None and t >= faster_from:
            gap /= speedup
        t += max(int(gap), 1000)


def usage_events(world: World, rng: random.Random) -> list[SimEvent]:
    """Product usage: each user views and edits documents and features of their account."""
    out: list[SimEvent] = []
    for account in world.accounts:
        end = account.quiet_from or world.now
        props = {"plan": account.segment}
        for user in account.users:
            for ts in steady_times(
                rng, world.start, end, user.pace_ms, user.night_utc_h,
                faster_from=account.pace_mover_from, speedup=PACE_MOVER_SPEEDUP,
            ):  # fmt: skip
                r = rng.random()
                verb = (
                    "viewed" if r < 0.7 else "edited" if r < 0.9 else "commented"
                    if r < 0.96 else "exported"
                )  # fmt: skip
                if rng.random() < 0.55:
                    obj: Entity = ("document", rng.choice(account.documents))
                else:
                    obj = ("feature", rng.choice(user.features))
                out.append(
                    SimEvent(
                        ts=ts,
                        event_id=event_id(rng, ts),
                        actor=user.entity,
                        verb=verb,
                        object=obj,
                        target=account.entity,
                        channel="mobile" if rng.random() < user.mobile_share else "web",
                        tags=user.communities,
                        # amplitude: how much was changed (1 for a view)
                        weight=round(math.exp(rng.gauss(2.0, 0.8)), 1) if verb == "edited" else 1.0,
                        properties=props,
                    )
                )
    return out


def employee_events(world: World, rng: random.Random) -> list[SimEvent]:
    """Employees' own work at their own pace: support edits the knowledge base, success and
    sales work on their accounts (and meet them), engineering works on features."""
    out: list[SimEvent] = []
    owned: dict[Entity, list[Account]] = {}
    for account in world.accounts:
        owned.setdefault(account.owner, []).append(account)
        owned.setdefault(account.rep, []).append(account)
    meetings = 0
    for person in world.employees:
        team = person.team or "support"
        tags = (f"team-{team}", *person.communities)
        book = owned.get(person.entity) or world.accounts
        for ts in steady_times(rng, world.start, world.now, person.pace_ms, person.night_utc_h):
            active = [a for a in book if a.active(ts)] or [
                a for a in world.accounts if a.active(ts)
            ]
            account = rng.choice(active)
            if team == "support":
                event = SimEvent(
                    ts, event_id(rng, ts), person.entity, rng.choice(("viewed", "edited")),
                    object=("article", rng.choice(world.articles)), channel="web", tags=tags,
                )  # fmt: skip
            elif team == "engineering":
                event = SimEvent(
                    ts, event_id(rng, ts), person.entity, rng.choice(("viewed", "edited")),
                    object=("feature", rng.choice(FEATURES)), channel="web", tags=tags,
                )  # fmt: skip
            elif rng.random() < (0.15 if team == "success" else 0.25):
                meetings += 1
                event = SimEvent(
                    ts, event_id(rng, ts), person.entity, "met",
                    object=("meeting", f"m-{meetings:05d}"), target=account.entity,
                    channel="meeting", tags=tags,
                    weight=float(rng.choice((30, 30, 45, 60))),  # minutes
                )  # fmt: skip
            else:
                event = SimEvent(
                    ts, event_id(rng, ts), person.entity, rng.choice(("viewed", "updated")),
                    object=("crm-record", f"crm-{account.id}"), target=account.entity,
                    channel="web", tags=tags,
                )  # fmt: skip
            out.append(event)
    return out


def purchase_events(world: World, rng: random.Random) -> list[SimEvent]:
    """Metered purchases (the account as actor, at its own steady pace, weight = amount) and
    the occasional larger order by a contact (irregular, the account as target)."""
    out: list[SimEvent] = []
    props = {"currency": "EUR"}
    for account in world.accounts:
        end = account.quiet_from or world.now
        for ts in steady_times(rng, world.start, end, account.purchase_gap_ms):
            amount = account.amount * math.exp(rng.gauss(0, 0.3))
            if account.amount_mover_from is not None and ts >= account.amount_mover_from:
                amount *= AMOUNT_MOVER_FACTOR
            out.append(
                SimEvent(
                    ts,
                    event_id(rng, ts),
                    account.entity,
                    "purchased",
                    object=("product", "credits"),
                    channel="web",
                    weight=round(amount, 2),
                    properties=props,
                )
            )
        ts = world.start
        while True:
            ts += int(rng.expovariate(1 / (12 * DAY)))
            if ts >= end:
                break
            out.append(
                SimEvent(
                    ts,
                    event_id(rng, ts),
                    rng.choice(account.contacts),
                    "purchased",
                    object=("product", rng.choice(PRODUCTS)),
                    target=account.entity,
                    channel="web",
                    weight=round(account.amount * rng.uniform(3, 15), 2),
                    properties=props,
                )
            )
    return out

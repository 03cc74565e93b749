"""Simulated conversations: support threads on email and tickets, chats, and planted
unanswered messages. Pure and seedable.

A thread is a turn-taking game between a customer contact, an employee and the helpdesk:

    customer writes ─▶ employee replies (log-normal, median 40 min, 5 min–8 h)
        ─▶ the customer follows up (30 %, up to 3 turns) or the helpdesk closes it (4–6 h)

Chats usually just end (5 % get a reply within minutes). Planted: a few customer emails and
tickets of the last days that nobody answers (half of them nudged "any update?" hours later).
Nothing here knows the alert rules: how well they find the planted threads, and what else
they flag, is for the report to say (quality is measured on tests/scenarios, not here).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field

from rhythm.stack.simulate.model import DAY, HOUR, MIN, Entity, SimEvent, World, event_id, scaled

Kind = tuple[str, str]  # (channel, sender type): one tenant
HELPDESK: Entity = ("system", "helpdesk")
TOPICS = ("billing", "login", "integrations", "performance", "data-export", "permissions")
VERBS = {  # channel -> (first customer message, customer follow-up)
    "email": ("wrote", "wrote"),
    "ticket": ("opened", "commented"),
    "chat": ("messaged", "messaged"),
}
FOLLOW_UP_SHARE = 0.3
MAX_TURNS = 3
CHAT_REPLY_SHARE = 0.05
END_GAP_MS = MIN  # nothing is scheduled in the last minute before now
SILENT_CUTOFF_MS = 3 * DAY  # threads of an account that goes quiet end before it does


@dataclass(slots=True)
class Thread:
    context_id: str
    channel: str
    customer: Entity
    account: str
    agent: Entity
    topic: str
    planted: bool = False
    turns: int = 0
    last_id: str | None = None


@dataclass(frozen=True, slots=True)
class PlantedThread:
    context_id: str
    channel: str
    sender: Entity
    account: str
    message_at: int


@dataclass
class ThreadResult:
    events: list[SimEvent] = field(default_factory=list)
    planted: list[PlantedThread] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


class ThreadSim:
    def __init__(self, world: World, rng: random.Random, scale: float) -> None:
        self.world = world
        self.rng = rng
        self.scale = scale
        self.out = ThreadResult()
        self._agenda: list[tuple[int, int, str, Thread]] = []
        self._seq = 0
        self._used: set[int] = set()  # one message per millisecond: no ties in the rule's order
        self._numbers: Counter[str] = Counter()

    # -- setting up -------------------------------------------------------------------------

    def run(self) -> ThreadResult:
        days = (self.world.now - self.world.start) / DAY
        openings: list[tuple[int, str, bool]] = []
        for channel, per_day in (("email", 20), ("ticket", 20), ("chat", 20)):
            for _ in range(round(days * scaled(per_day, self.scale, 2))):
                ts = self.rng.randint(self.world.start + 30 * MIN, self.world.now - 2 * MIN)
                openings.append((ts, channel, False))
        for _ in range(scaled(5, self.scale, 2)):
            ts = self.world.now - int(self.rng.uniform(1, 3) * DAY)
            openings.append((ts, self.rng.choice(("email", "ticket")), True))
        for ts, channel, planted in sorted(openings):  # numbered in time order, as a helpdesk does
            self._open(ts, channel, planted=planted)
        while self._agenda:
            ts, _, who, thread = heapq.heappop(self._agenda)
            self._step(ts, who, thread)
        return self.out

    def _open(self, ts: int, channel: str, *, planted: bool) -> None:
        cutoff = SILENT_CUTOFF_MS if channel != "chat" else HOUR
        accounts = [
            a
            for a in self.world.accounts
            if (a.quiet_from is None or ts < a.quiet_from - cutoff)
            and not (planted and a.quiet_from is not None)
        ]
        if not accounts:
            return
        account = self.rng.choice(accounts)
        support = self.world.team("support")
        agent = (
            account.owner
            if channel == "email" and self.rng.random() < 0.5
            else self.rng.choice(support).entity
        )
        self._numbers[channel] += 1
        thread = Thread(
            context_id=f"{channel}-{self._numbers[channel]:06d}",
            channel=channel,
            customer=self.rng.choice(account.contacts),
            account=account.id,
            agent=agent,
            topic=self.rng.choice(TOPICS),
            planted=planted,
        )
        self._schedule(ts, "customer", thread)

    def _schedule(self, ts: int, who: str, thread: Thread) -> int:
        while ts in self._used:
            ts += 1
        self._used.add(ts)
        self._seq += 1
        heapq.heappush(self._agenda, (ts, self._seq, who, thread))
        return ts

    # -- one message and what answers it ------------------------------------------------------

    def _step(self, ts: int, who: str, thread: Thread) -> None:
        self._emit(ts, who, thread)
        if who == "nudge":
            return  # the same sender again: the wait goes on
        if thread.planted and who == "customer":
            self._plant(ts, thread)
            return
        answer = self._answer(ts, who, thread)
        if answer is not None:
            self._schedule(*answer, thread)

    def _plant(self, ts: int, thread: Thread) -> None:
        self.out.planted.append(
            PlantedThread(thread.context_id, thread.channel, thread.customer, thread.account, ts)
        )
        if self.rng.random() < 0.5:  # "any update?" a few hours later: still the same wait
            nudge = ts + int(self.rng.uniform(2, 10) * HOUR)
            if nudge < self.world.now - 30 * MIN:
                self._schedule(nudge, "nudge", thread)

    def _answer(self, ts: int, who: str, thread: Thread) -> tuple[int, str] | None:
        rng = self.rng
        if who == "customer" and thread.channel == "chat":
            if rng.random() >= CHAT_REPLY_SHARE:
                return None
            return self._before_end(ts + rng.randint(MIN, 10 * MIN), "agent")
        if who == "customer":
            delay = _lognormal(rng, 40 * MIN, 1.0, 5 * MIN, 8 * HOUR)
            return self._before_end(ts + delay, "agent")
        if who == "agent" and thread.channel != "chat":
            if thread.turns < MAX_TURNS and rng.random() < FOLLOW_UP_SHARE:
                delay = _lognormal(rng, 90 * MIN, 0.7, 10 * MIN, 6 * HOUR)
                return self._before_end(ts + delay, "customer")
            return self._before_end(ts + rng.randint(4 * HOUR, 6 * HOUR), "helpdesk")
        return None  # the helpdesk's closing event and chat replies end the thread

    def _before_end(self, at: int, who: str) -> tuple[int, str] | None:
        """Nothing happens after now: an answer due later leaves the wait open."""
        if at < self.world.now - END_GAP_MS:
            return at, who
        self.out.counts["open_at_end"] += 1
        return None

    def _emit(self, ts: int, who: str, thread: Thread) -> None:
        first, again = VERBS[thread.channel]
        tags: tuple[str, ...]
        # No object: the thread is the context, and a conversation entity would only "go
        # silent" once its thread is closed.
        target = ("account", thread.account)
        if who in ("customer", "nudge"):
            verb = first if thread.last_id is None else again
            actor, tags = thread.customer, (thread.topic,)
            if who == "customer" and thread.last_id is not None:
                thread.turns += 1
        elif who == "agent":
            verb, actor = "replied", thread.agent
            tags = (f"team-{self._team_of(thread.agent)}", thread.topic)
        else:
            verb, actor, tags = "closed", HELPDESK, (thread.topic,)
        eid = event_id(self.rng, ts)
        self.out.events.append(
            SimEvent(
                ts=ts,
                event_id=eid,
                actor=actor,
                verb=verb,
                target=target,
                channel=thread.channel,
                context_id=thread.context_id,
                in_reply_to=thread.last_id if who in ("agent", "customer") else None,
                tags=tags,
            )
        )
        self.out.counts[f"{thread.channel}_{who}"] += 1
        thread.last_id = eid

    def _team_of(self, entity: Entity) -> str:
        for person in self.world.employees:
            if person.entity == entity:
                return person.team or "support"
        return "support"


def _lognormal(rng: random.Random, median: int, sigma: float, low: int, high: int) -> int:
    """Log-normal, drawn again outside [low, high] (truncated, not clipped: no pile-up at
    the bounds)."""
    while True:
        value = median * math.exp(rng.gauss(0, sigma))
        if low <= value <= high:
            return int(value)


def simulate_threads(world: World, rng: random.Random, scale: float) -> ThreadResult:
    return ThreadSim(world, rng, scale).run()

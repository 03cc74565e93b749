"""Simulated conversations: support threads on email and tickets, chats, and planted
unanswered messages. Pure and seedable.

A thread is a turn-taking game between a customer contact, an employee and the helpdesk:

    customer writes ─▶ employee replies (log-normal, median 40 min, 5 min–4 h)
        ─▶ the customer follows up (30 %, up to 3 turns) or the helpdesk closes it (4–6 h)

Every message starts a wait of its kind (tenant, channel, sender type), as the processors'
`unanswered` rule sees it. The kinds come out as the rule needs them to stay quiet:
- customer messages on email/ticket are always answered: the rule learns that they nearly
  always get a reply and alerts on the planted ones (1–3 days old, never answered);
- employee replies are always followed by the customer or the helpdesk's closing event,
  within hours; the closing event itself never gets a reply (a kind that just ends);
- chats usually just end (5 % get a reply), so the rule never expects one.

Two details make "exactly the planted threads alert" hold, not just usually:
- `ReplyNorms` follows what the rule will have learned at each moment (it uses the rule's own
  histogram and thresholds) and no reply outside the planted scenarios is ever slower than the
  threshold the rule fixed when the wait began; a draw beyond it is drawn again. Replies in
  the history are therefore "within the norm" by the rule's own measure.
- Until `horizon` (7 days) has passed, the rule counts no unanswered wait (a wait counts as
  unanswered only when it expires), so every finished chat wait of the first week is a
  replied one. Chat replies in that first week are kept below half the rule's minimum sample
  count, or chat would look "always answered" until the first expiries.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rhythm.processors.signals.conversation import ReplyConfig, ReplyStats
from rhythm.stack.simulate_model import DAY, HOUR, MIN, Entity, SimEvent, World, event_id, scaled

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
SAFETY_MS = 1_000  # a reply lands at least this long before the rule's threshold
END_GAP_MS = MIN  # nothing is scheduled in the last minute before now
OPEN_MARGIN_MS = 2 * HOUR  # a wait left open at the end is this far from alerting, at least
SILENT_CUTOFF_MS = 3 * DAY  # threads of an account that goes quiet end before it does


class ReplyNorms:
    """What the `unanswered` rule has learned per kind at a given event time.

    Contributions are learned when they happen in event time (a reply at its own time, an
    unanswered wait when it expires), as the rule does; queries must come in time order."""

    def __init__(self, cfg: ReplyConfig) -> None:
        self.cfg = cfg
        self._stats: dict[Kind, ReplyStats] = {}
        self._pending: list[tuple[int, int, Kind, int | None]] = []
        self._seq = 0

    def learn(self, kind: Kind, at_ms: int, delay_ms: int | None) -> None:
        self._seq += 1
        heapq.heappush(self._pending, (at_ms, self._seq, kind, delay_ms))

    def threshold_at(self, kind: Kind, ts: int) -> int | None:
        """The threshold a wait of `kind` beginning at `ts` gets; None: it can never alert."""
        while self._pending and self._pending[0][0] < ts:
            _, _, k, delay = heapq.heappop(self._pending)
            stats = self._stats.setdefault(k, ReplyStats())
            if delay is None:
                stats.unreplied += 1
            else:
                stats.replied += 1
                stats.delays.add(delay)
        known = self._stats.get(kind)
        return known.threshold_ms(self.cfg) if known is not None else None


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
    expected_within_ms: int  # the rule's threshold when the wait began


@dataclass
class ThreadResult:
    events: list[SimEvent] = field(default_factory=list)
    planted: list[PlantedThread] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


class ThreadSim:
    def __init__(self, world: World, rng: random.Random, cfg: ReplyConfig, scale: float) -> None:
        self.world = world
        self.rng = rng
        self.cfg = cfg
        self.scale = scale
        self.norms = ReplyNorms(cfg)
        self.out = ThreadResult()
        self._agenda: list[tuple[int, int, str, Thread]] = []
        self._seq = 0
        self._used: set[int] = set()  # one message per millisecond: no ties in the rule's order
        self._numbers: Counter[str] = Counter()
        self._chat_early_replies = 0
        self._first_chat: int | None = None

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
            return  # the same sender again: the wait goes on, nothing new to learn
        sender_type = {"customer": thread.customer, "agent": thread.agent}.get(who, HELPDESK)[0]
        kind = (thread.channel, sender_type)
        threshold = self.norms.threshold_at(kind, ts)
        if thread.planted and who == "customer":
            if self._plant(ts, thread, threshold):
                self.norms.learn(kind, ts + self.cfg.horizon_ms, None)
                return
            thread.planted = False  # too early for the rule to know: an ordinary thread
        answer = self._answer(ts, who, thread, threshold)
        if answer is None:
            self.norms.learn(kind, ts + self.cfg.horizon_ms, None)
            return
        at, next_who = answer
        at = self._schedule(at, next_who, thread)
        self.norms.learn(kind, at, at - ts)
        first_chat = self._first_chat
        early = first_chat is not None and at < first_chat + self.cfg.horizon_ms + DAY
        if thread.channel == "chat" and early:
            self._chat_early_replies += 1

    def _plant(self, ts: int, thread: Thread, threshold: int | None) -> bool:
        # Detectable: the rule knows this kind by then, and its deadline is well past before
        # now (allowed lateness and a margin).
        if threshold is None or ts + threshold >= self.world.now - self.cfg.lateness_ms - HOUR:
            return False
        self.out.planted.append(
            PlantedThread(
                thread.context_id, thread.channel, thread.customer, thread.account, ts, threshold
            )
        )
        if self.rng.random() < 0.5:  # "any update?" a few hours later: still the same wait
            nudge = ts + int(self.rng.uniform(2, 10) * HOUR)
            if nudge < self.world.now - 30 * MIN:
                self._schedule(nudge, "nudge", thread)
        return True

    def _answer(
        self, ts: int, who: str, thread: Thread, threshold: int | None
    ) -> tuple[int, str] | None:
        rng = self.rng
        if who == "customer" and thread.channel == "chat":
            if self._first_chat is None:
                self._first_chat = ts
            if threshold is None and not self._chat_reply_allowed(ts):
                return None
            if threshold is None and rng.random() >= CHAT_REPLY_SHARE:
                return None
            if threshold is not None:
                self.out.counts["chat_replies_forced"] += 1  # never expected: see tests
            delay = self._fit(lambda: rng.randint(MIN, 10 * MIN), threshold)
            return self._before_end(ts, delay, threshold, "agent")
        if who == "customer":
            delay = self._fit(lambda: _lognormal(rng, 40 * MIN, 1.0, 5 * MIN, 4 * HOUR), threshold)
            return self._before_end(ts, delay, threshold, "agent")
        if who == "agent" and thread.channel != "chat":
            if thread.turns < MAX_TURNS and rng.random() < FOLLOW_UP_SHARE:
                delay = self._fit(
                    lambda: _lognormal(rng, 90 * MIN, 0.7, 10 * MIN, 6 * HOUR), threshold
                )
                return self._before_end(ts, delay, threshold, "customer")
            delay = self._fit(lambda: rng.randint(4 * HOUR, 6 * HOUR), threshold)
            return self._before_end(ts, delay, threshold, "helpdesk")
        return None  # the helpdesk's closing event and chat replies end the thread

    def _chat_reply_allowed(self, ts: int) -> bool:
        first = self._first_chat if self._first_chat is not None else ts
        if ts >= first + self.cfg.horizon_ms + DAY:
            return True
        return self._chat_early_replies < self.cfg.min_samples // 2

    def _fit(self, draw: Callable[[], int], threshold: int | None) -> int:
        """A delay from `draw`, and below the rule's threshold if the wait has one."""
        delay = draw()
        if threshold is None:
            return delay
        for _ in range(20):
            if delay < threshold - SAFETY_MS:
                return delay
            delay = draw()
        self.out.counts["replies_held_to_norm"] += 1
        return max(int(threshold * self.rng.uniform(0.5, 0.9)), 1)

    def _before_end(
        self, ts: int, delay: int, threshold: int | None, who: str
    ) -> tuple[int, str] | None:
        """Nothing happens after now: an answer due later leaves the wait open if that is
        still within the norm, else it comes earlier (before now, within the threshold)."""
        now = self.world.now
        if ts + delay < now - END_GAP_MS:
            return ts + delay, who
        if threshold is None or now - ts < threshold - OPEN_MARGIN_MS:
            self.out.counts["open_at_end"] += 1
            return None
        room = min(now - END_GAP_MS - ts, threshold - SAFETY_MS)
        if room < 1:
            return None
        return ts + self.rng.randint(max(1, room // 4), room), who

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


def simulate_threads(
    world: World, rng: random.Random, cfg: ReplyConfig, scale: float
) -> ThreadResult:
    return ThreadSim(world, rng, cfg, scale).run()

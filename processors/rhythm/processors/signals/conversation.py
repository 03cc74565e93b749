"""The `unanswered` heads-up: an outside party is waiting on us longer than replies ever take.

Pure logic over plain data, for one partition of contexts (threads). The rule:
- Every actor is on *our* side (an internal type: `user`, `employee`...), on *their* side (an
  external type: `contact`, `customer`...), or neither (ignored here), per tenant. Events
  whose verb is in `not_replies` (assigned, viewed, tagged...) are no message either way.
- In a thread, a message from one side *waits* for the other side: the wait ends with the
  first message from the other side (the reply). More messages from the same side do not
  restart it. A wait of their side on us can become `unanswered`; a wait of ours on them can
  become `follow_up` (off by default).
- Every wait teaches its *kind*: (tenant, channel, sender's type, verb). Reply norms are
  survival data (survival.py): open waits count as censored, so a kind's norms are right
  from the first day, not only after a horizon.
- A wait is judged at its *checks*: when it begins, when its due time comes, and, while its
  kind has too little history, again at growing intervals (a quarter of its age, at least
  `recheck_min_ms`). It alerts once, at the first check where its kind has at least
  `min_replies` replies, a reply share of at least `min_reply_share` (kinds that usually
  end a thread never alert), and the wait is older than `margin` times the `quantile` of
  the kind's reply delays ("half again as long as 99 % of replies took"). A wait that began
  before its kind was known alerts at the first check after it became known (cold start).
- A wait still open after `horizon_ms` is censored there and never alerts.
- An event whose verb is in `closes_waits` (the notifier's `rhythm.done`: a recipient said
  the action is taken) closes the thread's open wait without being a message: the wait is
  censored at its age (Kaplan-Meier's "observed until then, not replied"), so the norms learn
  no reply delay that never happened, and no wait opens on the other side. When it names a
  target, only a wait of that sender is closed (the alert was about that wait).
- The history lane hands each thread's finished waits to the live lane (`take_hand_off`,
  `take_handed`), so norms learned from imported history judge live messages from the start.
  A thread the history lane is given stored messages of as copies (a thread both imported
  and live: copies.py) sees them as messages, but a wait a copy opened was the live lane's
  to judge and to learn from: it never alerts here and is not handed off.
- Everything runs in event time, in time order across the partition's contexts, over final
  events only (W - L): replaying history at any speed gives the same alerts as living it,
  and a lagging pipeline (a watermark that has not moved) never alerts.
All threads of a tenant are in one partition (see explode.partition_for), so the stats are
learned from all of the tenant's threads, whatever the partition or worker count.

Crash safety: the caller saves contexts one key at a time, so after a crash some contexts may
be saved further along than others. Each context therefore keeps its own contributions to
the stats, stamped with their agenda positions (when the wait opened and when it closed);
`restore` re-applies each only when the agenda reaches its position, so every decision after
a restart sees exactly the stats the uninterrupted run saw. Agenda positions are (time,
priority, context key, source partition, source offset): deterministic, unlike arrival order.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Literal, Protocol

from rhythm.processors.signals import survival
from rhythm.processors.signals.calendar import BusinessCalendar
from rhythm.processors.signals.survival import Curve, KindStats
from rhythm.schemas.feedback import DONE_VERB

DAY_MS = 86_400_000
Party = tuple[str, str]  # (entity type, id)
Kind = tuple[str, str, str, str, bool]  # (tenant, channel, sender type, verb, opens)
ShortKind = tuple[str, str, str, bool]  # the same without the tenant
Pool = tuple[str, str, str]  # (tenant, channel, side): a kind's fallback for reply delays
WALL, WORK = "wall", "work"
MIN_WORK_MEDIAN_MS = 1_414  # the first bucket's bound: a median of ~0 working time
Side = Literal["ours", "theirs"]
OURS: Side = "ours"
THEIRS: Side = "theirs"


class Sides(Protocol):
    """Which side an actor type is on in a tenant, and who answers when nobody is named."""

    def side(self, tenant: str, entity_type: str) -> Side | None: ...

    def queue(self, tenant: str) -> str: ...

    def calendar(self, tenant: str) -> BusinessCalendar: ...


@dataclass(frozen=True, slots=True)
class ReplyConfig:
    lateness_ms: int = 300_000
    min_replies: int = 20
    min_kind_replies: int = 5
    min_reply_share: float = 0.8
    quantile: float = 0.99
    margin: float = 1.5
    horizon_ms: int = 14 * DAY_MS
    recheck_min_ms: int = 15 * 60_000
    follow_up: bool = False
    # Bounded state per thread, whatever its traffic (a bot posting into one thread): at
    # most `max_pending` messages not yet final (past that the oldest is taken at once, out
    # of the partition's time order), and the newest `max_finished` waits' contributions
    # (older ones are taken out of the stats again, so restored and live stats agree).
    max_pending: int = 256
    max_finished: int = 64
    # A thread with nothing open is forgotten this long after its last message, and what
    # its waits taught the norms with it: the norms are those of the threads of this period.
    ttl_ms: int = 90 * DAY_MS
    # Events in a thread that are no message to the other side: an agent assigning a ticket
    # has not answered it (as helpdesks count "first reply time": public replies only).
    not_replies: frozenset[str] = frozenset(
        {
            "assigned", "unassigned", "reassigned", "escalated", "transferred", "tagged",
            "labeled", "viewed", "read", "seen", "delivered", "bounced", "snoozed", "watched",
            "subscribed", "starred", "moved", "merged", "linked", "prioritized",
            # mail nobody answers or waits on (rhythm.connectors.mail): auto-replies, other
            # automatic mail, list traffic, mail among our own people only
            "auto_replied", "auto_sent", "posted_to_list", "noted",
        }
    )  # fmt: skip
    # Events that close the open wait without answering it (feedback: "done").
    closes_waits: frozenset[str] = frozenset({DONE_VERB})


Position = tuple[int, int, str, int, int]  # (time, priority, key, source partition, offset)


@dataclass(slots=True)
class ContextMessage:
    ts: int
    sender: Party
    channel: str
    verb: str
    about: str  # the event's target as "type:id", or ""
    src_partition: int
    src_offset: int
    copy: bool = False  # the history lane: a stored message re-sent (copies.py)


@dataclass(slots=True)
class Wait:
    sender: Party
    side: Side
    channel: str
    verb: str
    since_ms: int
    pos: Position  # where it opened
    check_ms: int  # its next check
    cold: bool = False  # a check found its kind not known yet
    alerted: bool = False
    opens: bool = False  # the thread's first wait: nobody had written to the sender before
    copied: bool = False  # opened by a copy: the live lane's to judge (module doc)


@dataclass(slots=True)
class Contribution:
    """One finished wait: what it taught its kind, and where in the agenda it did."""

    opened: Position
    closed: Position
    kind: ShortKind  # (channel, sender type, verb, opens); the tenant is the context's
    delay_ms: int | None  # None: censored at the horizon
    work_delay_ms: int | None  # the same in the tenant's working time
    # True: closed without a reply (done): censored at delay_ms (work_delay_ms on that clock)
    censored: bool = False
    copied: bool = False  # its wait was opened by a copy: never handed off


@dataclass(slots=True)
class ContextState:
    tenant: str
    context_id: str
    pending: list[ContextMessage] = field(default_factory=list)
    waiting: Wait | None = None
    parties: list[Party] = field(default_factory=list)  # the first few, for routing
    about: str = ""  # the first target named in the thread (an account, a ticket...)
    finished: list[Contribution] = field(default_factory=list)
    applied: dict[int, int] = field(default_factory=dict)  # source partition -> last offset
    last_ms: int = 0  # its newest message taken
    # The history lane: where the newest finished wait handed to the live lane closed.
    handed: Position | None = None


@dataclass(slots=True)
class UnansweredAlert:
    kind: str  # "unanswered" | "follow_up"
    tenant: str
    context_id: str
    sender: Party
    channel: str
    verb: str
    fired_at_ms: int
    since_ms: int
    expected_within_ms: int
    score: float
    owners: list[str]
    details: dict[str, object]


MAX_PARTIES = 16
# What the live lane did with a thread's waits handed from the history lane (take_handed).
HANDED_TAKEN, HANDED_OVERLAP, HANDED_EXPIRED = "taken", "overlap", "expired"
# At equal times: a message first (a reply in time prevents the alert), then a check, then
# expiry; a deferred contribution (restore only) sits exactly where it was made.
_EVENT, _DUE, _EXPIRE, _FORGET = 0, 1, 2, 3
_ITEM, _OPENED, _CLOSED = 0, 1, 2
AgendaEntry = tuple[int, int, str, int, int, int]


class Conversations:
    """The contexts of one partition, their learned reply norms, and an event-time agenda."""

    def __init__(self, cfg: ReplyConfig, sides: Sides, hand_off: bool = False) -> None:
        self.cfg = cfg
        self.sides = sides
        # The history lane: threads whose finished waits the live lane has not been given.
        self.hand_off = hand_off
        self._unhanded: set[str] = set()
        self.contexts: dict[str, ContextState] = {}
        self.stats: dict[Kind, KindStats] = {}
        self.pools: dict[Pool, KindStats] = {}
        self._agenda: list[AgendaEntry] = []
        self._deferred: dict[tuple[Position, int], tuple[str, Contribution | Wait]] = {}
        self.dirty: set[str] = set()  # contexts changed since the caller last saved them
        self.evicted: set[str] = set()  # contexts forgotten since the caller last saved
        self.hot: list[str] = []  # contexts whose pending messages hit the cap (for a log)
        self._hot: set[str] = set()  # ...and have not cooled down since
        self.duplicates = 0

    def add(self, key: str, tenant: str, context_id: str, message: ContextMessage) -> bool:
        """Take one event of a context (acted on once final); False if already applied."""
        ctx = self.contexts.get(key)
        if ctx is None:
            ctx = self.contexts[key] = ContextState(tenant, context_id)
            self.evicted.discard(key)
        if message.src_offset <= ctx.applied.get(message.src_partition, -1):
            self.duplicates += 1
            return False
        ctx.applied[message.src_partition] = message.src_offset
        ctx.pending.append(message)
        entry = (message.ts, _EVENT, key, message.src_partition, message.src_offset, _ITEM)
        heapq.heappush(self._agenda, entry)
        self.dirty.add(key)
        if len(ctx.pending) > self.cfg.max_pending:
            oldest = min(ctx.pending, key=lambda m: (m.ts, m.src_partition, m.src_offset))
            if key not in self._hot:
                self._hot.add(key)
                self.hot.append(key)
            self._take_message(key, ctx, (oldest.ts, _EVENT, key, oldest.src_partition,
                                          oldest.src_offset))  # fmt: skip
        return True

    def restore(self, contexts: dict[str, ContextState]) -> None:
        """Put back saved contexts (after a restart): rebuild the agenda and the stats."""
        self.contexts.update(contexts)
        for key, ctx in contexts.items():
            for m in ctx.pending:
                entry = (m.ts, _EVENT, key, m.src_partition, m.src_offset, _ITEM)
                heapq.heappush(self._agenda, entry)
            self._schedule(key, ctx, expiry=True)
            self._schedule_forget(key, ctx)
            # Every wait's effect on its kind's stats is replayed at its place in the agenda,
            # never at once: replayed messages of contexts saved behind the others then see
            # exactly the stats the uninterrupted run saw.
            for c in ctx.finished:
                self._defer(c.opened, _OPENED, key, c)
                self._defer(c.closed, _CLOSED, key, c)
            if ctx.waiting is not None:
                self._defer(ctx.waiting.pos, _OPENED, key, ctx.waiting)
            if self.hand_off and _unhanded(ctx):
                self._unhanded.add(key)

    def advance(self, watermark_ms: int) -> list[UnansweredAlert]:
        final_before = watermark_ms - self.cfg.lateness_ms
        alerts: list[UnansweredAlert] = []
        while self._agenda and self._agenda[0][0] < final_before:
            entry = heapq.heappop(self._agenda)
            time, priority, key, _, _, what = entry
            pos: Position = entry[:5]
            ctx = self.contexts.get(key)
            if ctx is None:
                continue
            if what != _ITEM:
                self._replay(ctx, pos, what)
            elif priority == _EVENT:
                self._take_message(key, ctx, pos)
            elif priority == _DUE:
                alert = self._check(key, ctx, time)
                if alert is not None:
                    alerts.append(alert)
            elif priority == _EXPIRE:
                self._expire(key, ctx, pos)
            else:
                self._forget_context(key, ctx, time)
        return alerts

    # -- steps, each at its agenda position ------------------------------------------------

    def _take_message(self, key: str, ctx: ContextState, pos: Position) -> None:
        ts, _, _, src_partition, src_offset = pos
        index = next(
            (
                i
                for i, m in enumerate(ctx.pending)
                if (m.ts, m.src_partition, m.src_offset) == (ts, src_partition, src_offset)
            ),
            None,
        )
        if index is None:
            return
        message = ctx.pending.pop(index)
        self.dirty.add(key)
        if self._hot and len(ctx.pending) <= self.cfg.max_pending // 4:
            self._hot.discard(key)
        if message.ts > ctx.last_ms:
            ctx.last_ms = message.ts
            self._schedule_forget(key, ctx)
        if message.verb in self.cfg.closes_waits:
            wait = ctx.waiting
            if wait is not None and message.about in ("", f"{wait.sender[0]}:{wait.sender[1]}"):
                self._finish(key, ctx, wait, pos, message.ts - wait.since_ms, censored=True)
            return  # no message either way: it answers no one, and no one waits on it
        if message.sender not in ctx.parties and len(ctx.parties) < MAX_PARTIES:
            ctx.parties.append(message.sender)
        recipient = self._recipient(ctx.tenant, message.about)
        if (
            recipient is not None
            and recipient not in ctx.parties
            and len(ctx.parties) < MAX_PARTIES
        ):
            ctx.parties.append(recipient)
        if not ctx.about and message.about:
            ctx.about = message.about
        side = self.sides.side(ctx.tenant, message.sender[0])
        if side is None or message.verb in self.cfg.not_replies:
            return  # not a message between the sides: no one waits on it, it answers no one
        wait = ctx.waiting
        if wait is not None and wait.side != side:
            self._finish(key, ctx, wait, pos, message.ts - wait.since_ms)
        if ctx.waiting is None:
            opens = not ctx.finished
            ctx.waiting = Wait(
                message.sender, side, message.channel, message.verb, message.ts, pos,
                check_ms=message.ts, opens=opens, copied=message.copy,
            )  # fmt: skip
            self._open(ctx.tenant, self._kind3(ctx.waiting), ctx.waiting.since_ms)
            self._schedule(key, ctx, expiry=True)

    def _recipient(self, tenant: str, about: str) -> Party | None:
        """The event's target when it is a person on a side (an email's recipient): a party
        of the thread, so a message nobody answered names whom it was sent to. Targets on no
        side (accounts, tickets) are not parties."""
        kind, sep, ident = about.partition(":")
        if not sep or self.sides.side(tenant, kind) is None:
            return None
        return (kind, ident)

    def _check(self, key: str, ctx: ContextState, time: int) -> UnansweredAlert | None:
        wait = ctx.waiting
        if wait is None or wait.alerted or wait.check_ms != time:
            return None  # an entry of an earlier wait or check
        if (wait.side == OURS and not self.cfg.follow_up) or wait.copied:
            return None
        self.dirty.add(key)
        cfg = self.cfg
        norm = self._norm(ctx.tenant, wait, time)
        if norm is None:
            wait.cold = True
            age = time - wait.since_ms
            wait.check_ms = time + max(cfg.recheck_min_ms, age // 4)
            self._schedule(key, ctx)
            return None
        clock, threshold, share, curve = norm
        calendar = self.sides.calendar(ctx.tenant)
        if clock == WORK:
            age = calendar.work_clock(time) - calendar.work_clock(wait.since_ms)
            due = calendar.after_work(wait.since_ms, threshold)
        else:
            age, due = time - wait.since_ms, wait.since_ms + threshold
        if age < threshold:
            wait.check_ms = max(due, time + 1)
            self._schedule(key, ctx)
            return None
        wait.alerted = True
        return self._alert(ctx, wait, time, clock, threshold, share, curve, age)

    def _expire(self, key: str, ctx: ContextState, pos: Position) -> None:
        wait = ctx.waiting
        if wait is None or wait.since_ms + self.cfg.horizon_ms != pos[0]:
            return
        self._finish(key, ctx, wait, pos, None)
        self.dirty.add(key)

    def _finish(
        self, key: str, ctx: ContextState, wait: Wait, pos: Position, delay: int | None,
        censored: bool = False,
    ) -> None:  # fmt: skip
        work_delay = None
        if delay is not None:
            calendar = self.sides.calendar(ctx.tenant)
            work_delay = calendar.work_clock(pos[0]) - calendar.work_clock(wait.since_ms)
        contribution = Contribution(
            wait.pos,
            pos,
            self._kind3(wait),
            delay,
            work_delay,
            censored and delay is not None,
            copied=wait.copied,
        )
        ctx.finished.append(contribution)
        self._close(ctx.tenant, contribution)
        ctx.waiting = None
        if self.hand_off:
            self._unhanded.add(key)
        if len(ctx.finished) > self.cfg.max_finished:
            self._unlearn(ctx.tenant, ctx.finished.pop(0))

    def _forget_context(self, key: str, ctx: ContextState, time: int) -> None:
        if ctx.waiting is not None or ctx.pending or ctx.last_ms + self.cfg.ttl_ms != time:
            return  # busy again since this entry was made: a later one stands
        for contribution in ctx.finished:
            self._unlearn(ctx.tenant, contribution)
        del self.contexts[key]
        self.dirty.discard(key)
        self.evicted.add(key)

    # -- the hand-off between lanes (lanes.py) ---------------------------------------------

    def take_hand_off(self) -> list[tuple[str, int, list[Contribution]]]:
        """The history lane: each thread's finished waits the live lane has not been given,
        as (key, its newest message, waits). Open waits stay: their end is the history's; a
        wait a copy opened stays too (the live lane learned it)."""
        out: list[tuple[str, int, list[Contribution]]] = []
        for key in sorted(self._unhanded):
            ctx = self.contexts.get(key)
            if ctx is None:
                continue  # forgotten here, so its waits were past the live lane's norms too
            handed = ctx.handed
            new = [c for c in ctx.finished if handed is None or c.closed > handed]
            if new:
                ours = [c for c in new if not c.copied]
                if ours:
                    out.append((key, ctx.last_ms, ours))
                ctx.handed = max(c.closed for c in new)
                self.dirty.add(key)
        self._unhanded.clear()
        return out

    def take_handed(
        self, key: str, tenant: str, context_id: str, last_ms: int, waits: list[Contribution],
        watermark_ms: int,
    ) -> str:  # fmt: skip
        """The live lane: a thread's finished waits from the history lane join its kinds'
        norms, as if the live lane had seen them finish. They are kept in the thread's state,
        like its own, so a restart re-applies them at their places and the thread's time to
        live forgets them with it. The same waits again (a re-sent hand-off) are left."""
        final_before = watermark_ms - self.cfg.lateness_ms
        if last_ms + self.cfg.ttl_ms <= final_before:
            return HANDED_EXPIRED  # the live lane would have forgotten this thread already
        ctx = self.contexts.get(key)
        if ctx is None:
            ctx = self.contexts[key] = ContextState(tenant, context_id)
            self.evicted.discard(key)
        known = {(c.opened, c.closed) for c in ctx.finished}
        new = [c for c in waits if (c.opened, c.closed) not in known]
        if not new:
            return HANDED_OVERLAP
        for c in new:
            self._open(tenant, c.kind, c.opened[0])
            self._close(tenant, c)
        ctx.finished = sorted(ctx.finished + new, key=lambda c: c.closed)
        while len(ctx.finished) > self.cfg.max_finished:
            self._unlearn(tenant, ctx.finished.pop(0))
        if last_ms > ctx.last_ms:
            ctx.last_ms = last_ms
            self._schedule_forget(key, ctx)
        self.dirty.add(key)
        return HANDED_TAKEN

    # -- the stats -------------------------------------------------------------------------

    def _kind(self, tenant: str, wait: Wait) -> Kind:
        return (tenant, *self._kind3(wait))

    @staticmethod
    def _kind3(wait: Wait) -> ShortKind:
        """A thread's opening message (nothing from the other side before it) is a kind of
        its own: a new request nearly always gets an answer; what they write after ours
        sometimes just ends the conversation."""
        return (wait.channel, wait.sender[0], wait.verb, wait.opens)

    def _stats(self, kind: Kind) -> KindStats:
        stats = self.stats.get(kind)
        if stats is None:
            stats = self.stats[kind] = KindStats()
        return stats

    def _targets(self, tenant: str, kind: ShortKind) -> list[KindStats]:
        """The stats a wait of this kind counts in: its kind's and its channel pool's."""
        targets = [self._stats((tenant, *kind))]
        side = self.sides.side(tenant, kind[1])
        if side is not None:
            pool = (tenant, kind[0], side)
            stats = self.pools.get(pool)
            if stats is None:
                stats = self.pools[pool] = KindStats()
            targets.append(stats)
        return targets

    def _open(self, tenant: str, kind: ShortKind, since: int) -> None:
        work = self.sides.calendar(tenant).work_clock(since)
        for stats in self._targets(tenant, kind):
            survival.open_wait(stats.wall, since)
            survival.open_wait(stats.work, work)

    def _close(self, tenant: str, c: Contribution) -> None:
        calendar = self.sides.calendar(tenant)
        since = c.opened[0]
        work = calendar.work_clock(since)
        work_horizon = calendar.work_clock(since + self.cfg.horizon_ms) - work
        for stats in self._targets(tenant, c.kind):
            if c.censored:  # closed without a reply: censored at its age on each clock
                survival.close_wait(stats.wall, since, None, c.delay_ms or 0)
                survival.close_wait(stats.work, work, None, c.work_delay_ms or 0)
                continue
            survival.close_wait(stats.wall, since, c.delay_ms, self.cfg.horizon_ms)
            survival.close_wait(stats.work, work, c.work_delay_ms, work_horizon)

    def _unlearn(self, tenant: str, c: Contribution) -> None:
        """Take a finished wait back out of the stats (the reverse of `_close`)."""
        calendar = self.sides.calendar(tenant)
        since = c.opened[0]
        work = calendar.work_clock(since)
        work_horizon = calendar.work_clock(since + self.cfg.horizon_ms) - work
        for stats in self._targets(tenant, c.kind):
            if c.censored:
                survival.unlearn(stats.wall, None, c.delay_ms or 0)
                survival.unlearn(stats.work, None, c.work_delay_ms or 0)
                continue
            survival.unlearn(stats.wall, c.delay_ms, self.cfg.horizon_ms)
            survival.unlearn(stats.work, c.work_delay_ms, work_horizon)

    def _norm(self, tenant: str, wait: Wait, time: int) -> tuple[str, int, float, Curve] | None:
        """(clock, threshold on it, reply share, the curve the threshold came from), or None
        while the kind is not known well enough to alert."""
        cfg = self.cfg
        kind = self.stats.get(self._kind(tenant, wait))
        if kind is None:
            return None
        own = survival.curve(kind.wall, time)
        if own.replied < cfg.min_kind_replies or own.reply_share < cfg.min_reply_share:
            return None
        source = kind
        if own.replied < cfg.min_replies:  # few replies of its own: its channel's delays
            source = self.pools.get((tenant, wait.channel, wait.side), kind)
        work_now = self.sides.calendar(tenant).work_clock(time)
        best: tuple[float, str, Curve] | None = None
        for clock, stats, now in ((WALL, source.wall, time), (WORK, source.work, work_now)):
            # the kind's own wall-clock curve is `own`, computed above (a pure function)
            curve = own if stats is kind.wall else survival.curve(stats, now)
            if curve.replied < cfg.min_replies:
                continue
            if clock == WORK and (curve.quantile_ms(0.5) or 0) <= MIN_WORK_MEDIAN_MS:
                continue  # most replies come outside working time: that clock says nothing
            spread = curve.spread(cfg.quantile)
            if best is None or spread < best[0]:
                best = (spread, clock, curve)
        if best is None:
            return None
        _, clock, curve = best
        q = curve.quantile_ms(cfg.quantile)
        if q is None:
            return None
        return clock, int(q * cfg.margin), own.reply_share, curve

    def _alert(
        self,
        ctx: ContextState,
        wait: Wait,
        time: int,
        clock: str,
        threshold: int,
        share: float,
        curve: Curve,
        age: int,
    ) -> UnansweredAlert:
        replied_by = curve.replied_by(age)
        owners = self._owners(ctx, wait)
        median = curve.quantile_ms(0.5)
        details: dict[str, object] = {
            "channel": wait.channel,
            "verb": wait.verb,
            "clock": clock,
            "reply_share": round(share, 4),
            "replied_by_now": round(replied_by, 4),
            "typical_reply_s": None if median is None else median / 1000,
            "threshold_s": threshold / 1000,
            "waited_s": age / 1000,
            "samples": curve.observations,
            "replies": curve.replied,
            "cold_start": wait.cold,
            "about": ctx.about or None,
            "awaiting": owners,
        }
        n = curve.replied
        return UnansweredAlert(
            kind="unanswered" if wait.side == THEIRS else "follow_up",
            tenant=ctx.tenant,
            context_id=ctx.context_id,
            sender=wait.sender,
            channel=wait.channel,
            verb=wait.verb,
            fired_at_ms=time,
            since_ms=wait.since_ms,
            expected_within_ms=time - wait.since_ms if clock == WORK else threshold,
            score=round(share * replied_by * n / (n + 1), 4),
            owners=owners,
            details=details,
        )

    def _owners(self, ctx: ContextState, wait: Wait) -> list[str]:
        """Who is expected to act: the thread's parties on the other side, else the queue."""
        owed_by = [
            f"{t}:{i}"
            for t, i in ctx.parties
            if (t, i) != wait.sender and self._other_side(ctx.tenant, t, wait.side)
        ]
        if owed_by:
            return owed_by
        return [self.sides.queue(ctx.tenant)] if wait.side == THEIRS else [ctx.about or ""]

    def _other_side(self, tenant: str, entity_type: str, side: Side) -> bool:
        other = self.sides.side(tenant, entity_type)
        return other is not None and other != side

    # -- the agenda ------------------------------------------------------------------------

    def _schedule(self, key: str, ctx: ContextState, expiry: bool = False) -> None:
        """Put the wait's next check (and, when it opens or is restored, its expiry) on the
        agenda; entries of earlier checks or waits are recognised as stale and skipped."""
        wait = ctx.waiting
        if wait is None:
            return
        if not wait.alerted and wait.check_ms < wait.since_ms + self.cfg.horizon_ms:
            heapq.heappush(self._agenda, (wait.check_ms, _DUE, key, -1, -1, _ITEM))
        if expiry:
            end = wait.since_ms + self.cfg.horizon_ms
            heapq.heappush(self._agenda, (end, _EXPIRE, key, -1, -1, _ITEM))

    def _schedule_forget(self, key: str, ctx: ContextState) -> None:
        heapq.heappush(self._agenda, (ctx.last_ms + self.cfg.ttl_ms, _FORGET, key, -1, -1, _ITEM))

    def _defer(self, pos: Position, what: int, key: str, item: Contribution | Wait) -> None:
        self._deferred[(pos, what)] = (key, item)
        heapq.heappush(self._agenda, (*pos, what))

    def _replay(self, ctx: ContextState, pos: Position, what: int) -> None:
        found = self._deferred.pop((pos, what), None)
        if found is None:
            return
        item = found[1]
        if what == _OPENED:
            if isinstance(item, Wait):
                self._open(ctx.tenant, self._kind3(item), item.since_ms)
            else:
                self._open(ctx.tenant, item.kind, item.opened[0])
        elif isinstance(item, Contribution):
            self._close(ctx.tenant, item)


def _unhanded(ctx: ContextState) -> bool:
    """Whether the thread finished waits the live lane has not been given (history lane)."""
    return any(ctx.handed is None or c.closed > ctx.handed for c in ctx.finished)

"""The `unanswered` heads-up: a message that, judging by past replies, should have had one.

Pure logic over plain data, for one partition of contexts (threads). The rule:
- In a context, a message from party A *waits* for a reply until an event from any other party
  arrives (the reply). A's further messages do not restart the wait.
- Every wait is learned from, per *kind* of message: (tenant, channel, sender's entity type).
  A reply adds its delay to the kind's delay histogram and counts as replied; a wait that
  reaches `horizon_ms` without a reply counts as not replied (the thread simply ended).
- A wait may alert only if, when it began, its kind had at least `min_samples` finished waits
  and a reply rate of at least `min_reply_rate` ("nearly always got a reply"). It alerts once,
  at `since + threshold`, where threshold is the `delay_quantile` of the kind's past reply
  delays ("longer than nearly all past replies took"). Both are fixed when the wait begins.
- Everything runs in event time, in time order across the partition's contexts, over final
  events only (W - L): replaying history at any speed gives the same alerts as living it,
  and a lagging pipeline (a watermark that has not moved) never alerts.
All threads of a tenant are in one partition (see explode.partition_for), so the stats are
learned from all of the tenant's threads, whatever the partition or worker count.

Crash safety: the caller saves contexts one key at a time, so after a crash some contexts may
be saved further along than others. Each context therefore keeps its own contributions to
the stats, stamped with their agenda position; `restore` re-learns each one only when the
agenda reaches its position, never at once, so every decision after a restart sees exactly
the stats the uninterrupted run saw. Agenda positions are (time, priority, context key, source
partition, source offset): deterministic, unlike arrival order.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from rhythm.processors.signals.histogram import LogHistogram

DAY_MS = 86_400_000
Party = tuple[str, str]  # (entity type, id)
Kind = tuple[str, str, str]  # (tenant, channel, sender type)


@dataclass(frozen=True, slots=True)
class ReplyConfig:
    lateness_ms: int = 300_000
    min_samples: int = 20
    min_reply_rate: float = 0.9
    delay_quantile: float = 0.95
    horizon_ms: int = 7 * DAY_MS


@dataclass(slots=True)
class ReplyStats:
    replied: int = 0
    unreplied: int = 0
    delays: LogHistogram = field(default_factory=LogHistogram)

    def threshold_ms(self, cfg: ReplyConfig) -> int | None:
        finished = self.replied + self.unreplied
        if finished < cfg.min_samples or self.replied / finished < cfg.min_reply_rate:
            return None
        return self.delays.quantile_ms(cfg.delay_quantile)


@dataclass(slots=True)
class Wait:
    sender: Party
    channel: str
    since_ms: int
    threshold_ms: int | None
    alerted: bool = False


@dataclass(slots=True)
class ContextMessage:
    ts: int
    sender: Party
    channel: str
    src_partition: int
    src_offset: int


Position = tuple[int, int, str, int, int]  # (time, priority, key, source partition, offset)


@dataclass(slots=True)
class Contribution:
    """One finished wait: what it taught its kind, and when in the agenda it did."""

    pos: Position
    channel: str
    sender_type: str
    delay_ms: int | None  # None: never replied


@dataclass(slots=True)
class ContextState:
    tenant: str
    context_id: str
    pending: list[ContextMessage] = field(default_factory=list)
    waiting: Wait | None = None
    parties: list[Party] = field(default_factory=list)  # the first few, for the alert's details
    finished: list[Contribution] = field(default_factory=list)
    applied: dict[int, int] = field(default_factory=dict)  # source partition -> last offset


@dataclass(slots=True)
class UnansweredAlert:
    tenant: str
    context_id: str
    sender: Party
    channel: str
    fired_at_ms: int
    last_event_at_ms: int
    expected_within_ms: int
    reply_rate: float
    samples: int
    others: list[Party]


MAX_PARTIES = 16
# At equal times: a message first (a reply in time prevents the alert), then the deadline,
# then expiry; a deferred contribution (restore only) sits exactly where it was made.
_EVENT, _DUE, _EXPIRE = 0, 1, 2
_ITEM, _DEFERRED = 0, 1
AgendaEntry = tuple[int, int, str, int, int, int]


class Conversations:
    """The contexts of one partition, their learned reply stats, and an event-time agenda."""

    def __init__(self, cfg: ReplyConfig) -> None:
        self.cfg = cfg
        self.contexts: dict[str, ContextState] = {}
        self.stats: dict[Kind, ReplyStats] = {}
        self._agenda: list[AgendaEntry] = []
        self._deferred: dict[Position, Contribution] = {}
        self.dirty: set[str] = set()  # contexts changed since the caller last saved them
        self.duplicates = 0

    def add(
        self,
        key: str,
        tenant: str,
        context_id: str,
        ts: int,
        sender: Party,
        channel: str,
        src_partition: int,
        src_offset: int,
    ) -> bool:
        """Take one event of a context (acted on once final); False if already applied."""
        ctx = self.contexts.get(key)
        if ctx is None:
            ctx = self.contexts[key] = ContextState(tenant, context_id)
        if src_offset <= ctx.applied.get(src_partition, -1):
            self.duplicates += 1
            return False
        ctx.applied[src_partition] = src_offset
        ctx.pending.append(ContextMessage(ts, sender, channel, src_partition, src_offset))
        heapq.heappush(self._agenda, (ts, _EVENT, key, src_partition, src_offset, _ITEM))
        self.dirty.add(key)
        return True

    def restore(self, contexts: dict[str, ContextState]) -> None:
        """Put back saved contexts (after a restart): rebuild the agenda and the stats."""
        self.contexts.update(contexts)
        for key, ctx in contexts.items():
            for m in ctx.pending:
                entry = (m.ts, _EVENT, key, m.src_partition, m.src_offset, _ITEM)
                heapq.heappush(self._agenda, entry)
            self._schedule(key, ctx)
        # Every contribution is learned again when the agenda reaches its position, never
        # before: replayed messages of contexts saved behind the others then see exactly the
        # stats the uninterrupted run saw at their place in event time.
        for ctx in contexts.values():
            for c in ctx.finished:
                self._deferred[c.pos] = c
                heapq.heappush(self._agenda, (*c.pos, _DEFERRED))

    def advance(self, watermark_ms: int) -> list[UnansweredAlert]:
        final_before = watermark_ms - self.cfg.lateness_ms
        alerts: list[UnansweredAlert] = []
        while self._agenda and self._agenda[0][0] < final_before:
            entry = heapq.heappop(self._agenda)
            time, priority, key, _, _, what = entry
            ctx = self.contexts.get(key)
            if ctx is None:
                continue
            if what == _DEFERRED:
                contribution = self._deferred.pop(entry[:5], None)
                if contribution is not None:
                    self._learn(ctx.tenant, contribution)
            elif priority == _EVENT:
                self._take_message(key, ctx, entry[:5])
            elif priority == _DUE:
                alert = self._due(ctx, time)
                if alert is not None:
                    alerts.append(alert)
                    self.dirty.add(key)
            else:
                self._expire(key, ctx, entry[:5])
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
        if message.sender not in ctx.parties and len(ctx.parties) < MAX_PARTIES:
            ctx.parties.append(message.sender)
        wait = ctx.waiting
        if wait is not None and wait.sender != message.sender:
            self._finish(ctx, wait, pos, message.ts - wait.since_ms)
        if ctx.waiting is None:
            kind = (ctx.tenant, message.channel, message.sender[0])
            known = self.stats.get(kind)
            threshold = known.threshold_ms(self.cfg) if known is not None else None
            ctx.waiting = Wait(message.sender, message.channel, message.ts, threshold)
            self._schedule(key, ctx)
        self.dirty.add(key)

    def _due(self, ctx: ContextState, time: int) -> UnansweredAlert | None:
        wait = ctx.waiting
        if wait is None or wait.alerted or wait.threshold_ms is None:
            return None
        if wait.since_ms + wait.threshold_ms != time:
            return None  # an entry of an earlier wait
        wait.alerted = True
        stats = self.stats.get((ctx.tenant, wait.channel, wait.sender[0]), ReplyStats())
        finished = stats.replied + stats.unreplied
        return UnansweredAlert(
            tenant=ctx.tenant,
            context_id=ctx.context_id,
            sender=wait.sender,
            channel=wait.channel,
            fired_at_ms=time,
            last_event_at_ms=wait.since_ms,
            expected_within_ms=wait.threshold_ms,
            reply_rate=stats.replied / finished if finished else 0.0,
            samples=finished,
            others=[p for p in ctx.parties if p != wait.sender],
        )

    def _expire(self, key: str, ctx: ContextState, pos: Position) -> None:
        wait = ctx.waiting
        if wait is None or wait.since_ms + self.cfg.horizon_ms != pos[0]:
            return
        self._finish(ctx, wait, pos, None)
        self.dirty.add(key)

    def _finish(self, ctx: ContextState, wait: Wait, pos: Position, delay: int | None) -> None:
        contribution = Contribution(pos, wait.channel, wait.sender[0], delay)
        ctx.finished.append(contribution)
        self._learn(ctx.tenant, contribution)
        ctx.waiting = None

    def _learn(self, tenant: str, c: Contribution) -> None:
        kind = (tenant, c.channel, c.sender_type)
        stats = self.stats.get(kind)
        if stats is None:
            stats = self.stats[kind] = ReplyStats()
        if c.delay_ms is None:
            stats.unreplied += 1
        else:
            stats.replied += 1
            stats.delays.add(c.delay_ms)

    def _schedule(self, key: str, ctx: ContextState) -> None:
        wait = ctx.waiting
        if wait is None:
            return
        if wait.threshold_ms is not None and not wait.alerted:
            heapq.heappush(self._agenda, (wait.since_ms + wait.threshold_ms, _DUE, key, -1, -1, 0))
        heapq.heappush(self._agenda, (wait.since_ms + self.cfg.horizon_ms, _EXPIRE, key, -1, -1, 0))

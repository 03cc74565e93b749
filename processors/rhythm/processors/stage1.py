"""Stage 1, one partition of the events topic: decode, deduplicate, watermark, re-key.

No I/O: the Faust agent hands `process()` the partition's messages in offset order and sends
what comes back. State that must survive a restart is returned as table writes:
- the watermark (newest event time seen) and the next offset to process, one key per
  partition;
- the event ids seen with their offsets, one immutable record per batch
  (`seen/<partition>/<first offset>`), so a batch's ids are written once and never rewritten,
  and dropped once the watermark has moved past the time a duplicate could still change a
  signal (lateness + late retention).
With `tenant_time` (the history lane) each tenant's newest event time is kept and reported
too, and a batch's ids are dropped by their tenants' watermarks (stage 2: tenants.py). A
`rewind` message (rhythm.schemas.topics) starts a tenant's next *epoch*: its time starts
again from what follows, its events are new to it again (the ids are salted with the
epoch), and every message to stage 2 names the tenants' epochs ("te"), so stage 2 forgets
the tenant's state once and ignores updates of an older epoch sent again after a restart.
The caller writes these only after stage 2 has acknowledged the batch's messages. A message
re-read after a crash (the same offset) is therefore forwarded again, never taken for a
duplicate of itself; stage 2 skips what it already applied, by offset.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rhythm.processors.budget import Budget
from rhythm.processors.codec import dumps, loads
from rhythm.processors.copies import read_rewind
from rhythm.processors.explode import entity_keys, explode, explode_context, partition_for
from rhythm.processors.lanes import flush_mark, too_late_before
from rhythm.processors.messages import ROUTED, UpdatesMessage, extend_run, new_run
from rhythm.schemas import WireError, decode_event
from rhythm.schemas.keys import SEP
from rhythm.schemas.topics import KIND_COPY, KIND_NOTE, KIND_REPLAY, KIND_REWIND
from rhythm.schemas.wire_check import record_problem

NO_WATERMARK = -(2**62)
#: A batch's new ids: (key, newest, [(id hash, offset), ...], newest per tenant or None).
Record = tuple[str, int, list[tuple[int, int]], dict[str, int] | None]
#: A message the caller handled itself (the history lane re-published it with its windows'
#: stored events, app.py): only its offset counts as done.
SKIP = "skip"
#: offset -> (kind, entity keys): how the history lane's input marks a message that is not
#: history of its own (rhythm.schemas.topics, HISTORY_KIND_HEADER), or SKIP; for a
#: `rewind`, (KIND_REWIND, (tenant, epoch as text)): it must start its batch
#: (`split_at_rewinds`).
Marks = Mapping[int, tuple[str, tuple[str, ...]]]


@dataclass(frozen=True, slots=True)
class Stage1Config:
    updates_partitions: int
    dedup_horizon_ms: int  # lateness + late retention: older duplicates cannot matter
    max_future_ms: int = 3_600_000  # events further ahead of the wall clock are refused
    idle_after_s: float = 10.0  # a partition this quiet lets its watermark follow the clock
    # A tenant's events per minute of event time in this partition past which the rest of
    # that minute goes in the degraded mode (0: never); see `Budget`.
    tenant_budget: int = 0
    lateness_ms: int = 300_000  # how long a minute's count may still grow
    # The lanes (lanes.py): the live lane routes events stage 2 would drop as too late
    # (`route`), and an idle partition's watermark follows the wall clock (`follow_clock`);
    # the history lane's instead moves to close every window it holds (`lanes.flush_mark`).
    window_sizes_ms: tuple[int, ...] = (3_600_000, 86_400_000)
    late_retention_ms: int = 86_400_000
    route: bool = False
    follow_clock: bool = True
    # The history lane's input holds copies of stored events (rhythm.processors.copies):
    # an event that comes itself after a copy of it counts only for the other keys.
    takes_copies: bool = False
    # The history lane: each tenant's event time is its own (a tenant's import older than
    # another's is not late): batches also carry each tenant's watermark ("tw", tenants.py).
    tenant_time: bool = False


@dataclass
class DeadLetter:
    """A message refused, for `rhythm.dead_letters` (rhythm.schemas.dead_letters)."""

    reason: str
    partition: int
    offset: int  # -1: no offset of its own (a saved state value read back at restore)
    value: bytes
    detail: str
    key: bytes | None = None


@dataclass
class Stage1Output:
    # destination partition -> batch message for stage 2
    messages: dict[int, UpdatesMessage] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    writes: list[tuple[str, bytes | None]] = field(default_factory=list)  # None = delete
    events: int = 0
    duplicates: int = 0
    degraded: int = 0  # events aggregated into runs (their tenant was over its budget)
    over_budget: list[str] = field(default_factory=list)  # tenants that went over, this batch
    # Events too late for this lane, as they came, for the history lane (lanes.py); their
    # entity updates go to stage 2 marked routed (it only notes their times).
    routed: list[bytes] = field(default_factory=list)
    # The history lane's copies of stored events and notes of an entity's previous event
    # (rhythm.schemas.topics): not events of its own, so not in `events`.
    copies: int = 0
    notes: int = 0
    replays: int = 0  # stored events re-sent whole after a rewind
    rewinds: int = 0


def split_at_rewinds(offsets: list[int], marks: Marks | None) -> list[int]:
    """Where a batch is cut so that each `rewind` starts its part: the indexes at which
    parts start (0 first). A part's updates then belong to one epoch per tenant."""
    starts = [0]
    if marks:
        for i, offset in enumerate(offsets):
            mark = marks.get(offset)
            if i > 0 and mark is not None and mark[0] == KIND_REWIND:
                starts.append(i)
    return starts


def rewind_mark(value: bytes) -> tuple[str, tuple[str, ...]]:
    """The mark of a `rewind` message (copies.rewind_message); SKIP if unreadable."""
    read = read_rewind(value)
    return (SKIP, ()) if read is None else (KIND_REWIND, (read[0], str(read[1])))


def watermark_key(partition: int) -> str:
    return f"wm{SEP}{partition}"


def seen_key(partition: int, first_offset: int) -> str:
    return f"seen{SEP}{partition}{SEP}{first_offset:020d}"


def is_state_key(key: str, partition: int) -> bool:
    """Whether `key` of the stage-1 table is `partition`'s (its watermark or a seen block)."""
    return key == watermark_key(partition) or key.startswith(f"seen{SEP}{partition}{SEP}")


def _id_hash(event_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


def _copy_hash(event_id: str, key: str) -> int:
    """A copy's (event, entity key), beside the events' own ids in the seen records."""
    return _id_hash(f"{event_id}{SEP}{key}")


class Stage1Partition:
    def __init__(self, partition: int, cfg: Stage1Config) -> None:
        self.partition = partition
        self.cfg = cfg
        self.watermark = NO_WATERMARK
        self.next_offset = 0  # the offset after the last one processed
        self._seen: dict[int, int] = {}  # id hash -> offset of the first message with it
        # (key, newest, [(h, offset), ...], newest per tenant or None): tuples, not lists (the
        # same JSON when written), which the garbage collector stops tracking: a day of ids
        # is millions of pairs.
        self._records: list[Record] = []
        # `tenant_time`: each tenant's newest event time, and the flush mark last reported.
        self.tenant_marks: dict[str, int] = {}
        self._flushed: dict[str, int] = {}
        # `tenant_time`: each rewound tenant's epoch (0, absent: never rewound).
        self.tenant_epochs: dict[str, int] = {}
        self.last_activity = 0.0  # wall clock seconds of the last message
        # The highest watermark this partition reported to stage 2 (its events' or an idle
        # tick's): the stage-2 watermark its next events meet is never ahead of it.
        self.reported = NO_WATERMARK
        self.budget = Budget(cfg.tenant_budget, cfg.lateness_ms) if cfg.tenant_budget else None

    def restore(self, items: list[tuple[str, bytes]]) -> list[tuple[str, bytes, str]]:
        """Take back the saved keys; returns those that cannot be read (key, value, why):
        a foreign record on the changelog must not stop the partition at every start."""
        bad: list[tuple[str, bytes, str]] = []
        for key, value in sorted(items):
            try:
                if key == watermark_key(self.partition):
                    watermark, next_offset, *rest = loads(value)
                    self.watermark, self.next_offset = int(watermark), int(next_offset)
                    self.reported = max(self.reported, self.watermark)
                    if rest and rest[0] is not None and self.budget is not None:
                        self.budget.restore(rest[0])
                    if len(rest) > 1:
                        self.reported = max(self.reported, int(rest[1]))
                    if len(rest) > 2:
                        self.tenant_marks = {str(t): int(m) for t, m in rest[2].items()}
                    if len(rest) > 3:
                        self.tenant_epochs = {str(t): int(e) for t, e in rest[3].items()}
                else:
                    newest, pairs, *by_tenant = loads(value)
                    seen = [(int(h), int(o)) for h, o in pairs]
                    tenants = (
                        {str(t): int(m) for t, m in by_tenant[0].items()} if by_tenant else None
                    )
                    self._records.append((key, int(newest), seen, tenants))
                    self._seen.update(seen)
            except Exception as exc:
                bad.append((key, value, f"{type(exc).__name__}: {exc}"[:500]))
        return bad

    def process(
        self,
        messages: list[tuple[int, bytes | None]],
        wall_ms: int,
        wall_s: float,
        marks: Marks | None = None,
    ) -> Stage1Output:
        """`messages`: (offset, value) of one partition. Usually in offset order and new, but
        after a rebalance Faust may hand over messages fetched before it (still in its take
        buffer) together with the same offsets read again from the commit: so sort, and never
        let `next_offset` go back (a partition that seemed to have input waiting for ever
        would never let its watermark follow the clock). `marks`: the history lane's copies,
        notes and skipped messages (`Marks`); a message without one is an event."""
        out = Stage1Output()
        if any(messages[i][0] >= messages[i + 1][0] for i in range(len(messages) - 1)):
            messages = sorted(dict(messages).items())
        self.last_activity = wall_s
        new_hashes: list[tuple[int, int]] = []
        newest = NO_WATERMARK
        updates: dict[int, list[Any]] = defaultdict(list)
        contexts: dict[int, list[Any]] = defaultdict(list)
        budget = self.budget
        cfg = self.cfg
        partitions = cfg.updates_partitions
        route_below = (  # events older than this are too late for this lane: routed
            too_late_before(
                self.reported, cfg.window_sizes_ms, cfg.lateness_ms, cfg.late_retention_ms
            )
            if cfg.route and self.reported != NO_WATERMARK
            else NO_WATERMARK
        )
        runs: dict[str, list[Any]] = {}  # entity key -> its open run (degraded mode)
        tenant_time = cfg.tenant_time
        newest_of: dict[str, int] = {}  # `tenant_time`: each tenant's newest in this batch
        epochs = self.tenant_epochs
        for i, (offset, value) in enumerate(messages):
            mark = marks.get(offset) if marks else None
            if mark is not None and mark[0] == SKIP:
                continue
            if mark is not None and mark[0] == KIND_REWIND:
                if i > 0:
                    raise ValueError("a rewind must start its batch (split_at_rewinds)")
                self._rewind(mark[1][0], int(mark[1][1]), out)
                continue
            try:
                record = decode_event(value or b"")
            except WireError as exc:
                out.dead_letters.append(
                    DeadLetter(exc.reason, self.partition, offset, value or b"", str(exc))
                )
                continue
            problem = record_problem(record)  # another producer may break the contract
            if problem is not None:
                out.dead_letters.append(
                    DeadLetter("invalid_event", self.partition, offset, value or b"", problem)
                )
                continue
            ts = int(record["occurred_at"])
            if ts > wall_ms + self.cfg.max_future_ms:
                out.dead_letters.append(
                    DeadLetter(
                        "future_timestamp", self.partition, offset, value or b"",
                        f"occurred_at {ts} is more than {self.cfg.max_future_ms} ms ahead",
                    )
                )  # fmt: skip
                continue
            if mark is not None and mark[0] == KIND_NOTE:
                out.notes += 1
                for key in mark[1]:  # stage 2 notes the time only
                    k = partition_for(key, cfg.updates_partitions)
                    updates[k].append((key, ts, 0.0, self.partition, offset, ROUTED))
                continue
            ident = record["event_id"]
            if epochs:  # a rewound tenant's events are new to its next epoch
                epoch = epochs.get(record["tenant"])
                if epoch:
                    ident = f"{ident}{SEP}#{epoch}"
            h = _id_hash(ident)
            if mark is not None and mark[0] == KIND_COPY:
                first = self._seen.get(h)
                if first is not None and first != offset:
                    out.duplicates += 1  # the lane has the event itself
                    continue
                copied, copied_context = self._copy(
                    record, ident, ts, offset, set(mark[1]), new_hashes
                )
                if not copied and copied_context is None:
                    out.duplicates += 1
                    continue
                out.copies += 1
                newest = max(newest, ts)
                if tenant_time:
                    tenant = record["tenant"]
                    newest_of[tenant] = max(newest_of.get(tenant, ts), ts)
                for update in copied:
                    updates[partition_for(update[0], cfg.updates_partitions)].append(update)
                if copied_context is not None:
                    k = partition_for(copied_context[0], partitions)
                    contexts[k].append(copied_context)
                continue
            first = self._seen.get(h)
            if first is not None and first != offset:
                out.duplicates += 1
                continue
            if first is None:
                self._seen[h] = offset
                new_hashes.append((h, offset))
            if mark is not None and mark[0] == KIND_REPLAY:
                out.replays += 1
            else:
                out.events += 1
            if ts < route_below:
                out.routed.append(value or b"")
                for key in entity_keys(record):  # stage 2 notes the time only
                    k = partition_for(key, cfg.updates_partitions)
                    updates[k].append((key, ts, 0.0, self.partition, offset, ROUTED))
                continue
            newest = max(newest, ts)
            if tenant_time:
                tenant = record["tenant"]
                newest_of[tenant] = max(newest_of.get(tenant, ts), ts)
            if budget is not None and not budget.take(record["tenant"], ts, out.over_budget):
                out.degraded += 1
                self._join_runs(record, ts, offset, runs, updates)
                entity_updates: list[Any] = []
                context_update = explode_context(record, ts, self.partition, offset)
            else:
                entity_updates, context_update = explode(record, ts, self.partition, offset)
                if cfg.takes_copies:  # keys (and its thread) a copy of it already counted it for
                    entity_updates = [
                        u for u in entity_updates if not self._copied(ident, u[0], offset)
                    ]
                    if context_update is not None and self._copied(
                        ident, context_update[0], offset
                    ):
                        context_update = None
            for update in entity_updates:
                if runs:
                    runs.pop(update[0], None)  # its next degraded event starts a new run
                updates[partition_for(update[0], partitions)].append(update)
            if context_update is not None:
                contexts[partition_for(context_update[0], partitions)].append(context_update)
        if new_hashes:
            # Keyed by the first new id's offset: an offset's id is new only once, so a batch
            # re-read from an older offset never overwrites an earlier batch's record.
            key = seen_key(self.partition, new_hashes[0][1])
            by_tenant = dict(newest_of) if tenant_time else None
            self._records.append((key, newest, new_hashes, by_tenant))
            saved_ids: list[Any] = [newest, new_hashes]
            if by_tenant is not None:
                saved_ids.append(by_tenant)
            out.writes.append((key, dumps(saved_ids)))
        self.watermark = max(self.watermark, newest)
        tenant_marks = self.tenant_marks
        for tenant, ts in newest_of.items():
            if ts > tenant_marks.get(tenant, NO_WATERMARK):
                tenant_marks[tenant] = ts
        if messages:
            self.next_offset = max(self.next_offset, messages[-1][0] + 1)
            self.reported = max(self.reported, self.watermark)
            saved: list[Any] = [self.watermark, self.next_offset, None, self.reported]
            if budget is not None:
                budget.expire(self.watermark, tenant_marks if tenant_time else None)
                saved[2] = budget.saved()
            if tenant_time:
                saved += [tenant_marks, epochs]
            out.writes.append((watermark_key(self.partition), dumps(saved)))
        self._expire(out)
        # Every destination hears this partition's watermark, with or without updates for it
        # (and, with `tenant_time`, the watermarks of this batch's tenants).
        heard = {tenant: tenant_marks[tenant] for tenant in newest_of}
        for k in range(self.cfg.updates_partitions):
            message: UpdatesMessage = {"p": self.partition, "wm": self._reported()}
            if heard:
                message["tw"] = heard
            if epochs:
                message["te"] = dict(epochs)
            if updates.get(k):
                message["u"] = updates[k]
            if contexts.get(k):
                message["c"] = contexts[k]
            out.messages[k] = message
        return out

    def _rewind(self, tenant: str, epoch: int, out: Stage1Output) -> None:
        """The tenant's next epoch: its time starts again from what follows (a re-delivered
        rewind, an epoch it has, changes nothing)."""
        if not self.cfg.tenant_time or epoch <= self.tenant_epochs.get(tenant, 0):
            return
        self.tenant_epochs[tenant] = epoch
        self.tenant_marks.pop(tenant, None)
        self._flushed.pop(tenant, None)
        out.rewinds += 1

    def _copy(
        self,
        record: Mapping[str, Any],
        ident: str,
        ts: int,
        offset: int,
        keys: set[str],
        new_hashes: list[tuple[int, int]],
    ) -> tuple[list[Any], Any | None]:
        """A stored event's updates for the `keys` it was copied for (entity keys, and its
        thread's key: then its context update, marked a copy), each (event, key) once: the
        same event may be copied again for other keys (another import, a routed event's
        windows), never counted twice for one."""
        updates, context = explode(record, ts, self.partition, offset)
        kept: list[Any] = []
        for update in updates:
            if update[0] not in keys or self._copied(ident, update[0], offset):
                continue
            self._take_copy(ident, update[0], offset, new_hashes)
            kept.append(update)
        if context is None or context[0] not in keys or self._copied(ident, context[0], offset):
            return kept, None
        self._take_copy(ident, context[0], offset, new_hashes)
        return kept, (*context, 1)

    def _take_copy(
        self, ident: str, key: str, offset: int, new_hashes: list[tuple[int, int]]
    ) -> None:
        h = _copy_hash(ident, key)
        if h not in self._seen:
            self._seen[h] = offset
            new_hashes.append((h, offset))

    def _copied(self, ident: str, key: str, offset: int) -> bool:
        """Whether a message before `offset` already counted this event (`ident`: its id,
        salted with a rewound tenant's epoch) for `key`."""
        first = self._seen.get(_copy_hash(ident, key))
        return first is not None and first != offset

    def _join_runs(
        self,
        record: Mapping[str, Any],
        ts: int,
        offset: int,
        runs: dict[str, list[Any]],
        updates: dict[int, list[Any]],
    ) -> None:
        """Add a degraded event to the open run of each entity it touches, or start one.
        A run stays in its update list at the place of its first event and only grows with
        the entity's next degraded events (any other update of the entity closes it), so
        each entity's updates stay in offset order, which stage 2's per-key offset check
        relies on."""
        weight = float(record.get("weight", 1.0))
        for key in entity_keys(record):
            run = runs.get(key)
            if run is None:
                run = runs[key] = new_run(key, ts, self.partition)
                updates[partition_for(key, self.cfg.updates_partitions)].append(run)
            extend_run(run, ts, weight, offset)

    def tick(self, end_offset: int, wall_ms: int, wall_s: float) -> Stage1Output | None:
        """Called periodically with the partition's end offset. A partition with nothing left
        to read that has been quiet for `idle_after_s` reports a watermark that follows the
        clock, so quiet partitions never hold windows open. One with input waiting (a restart
        with lag) never does: its events decide its watermark."""
        if end_offset > self.next_offset or wall_s - self.last_activity < self.cfg.idle_after_s:
            return None
        out = Stage1Output()
        cfg = self.cfg
        if cfg.follow_clock:
            mark = max(self.watermark, wall_ms - int(cfg.idle_after_s * 1000))
        elif self.watermark == NO_WATERMARK:
            return None  # a history lane that has seen nothing has nothing to close
        else:  # the history lane: close every window holding what it was given
            mark = flush_mark(self.watermark, cfg.window_sizes_ms, cfg.lateness_ms)
        self.reported = max(self.reported, mark)
        flushed: dict[str, int] = {}
        if cfg.tenant_time:  # each tenant's own, once per change
            for tenant, newest in self.tenant_marks.items():
                tenant_mark = flush_mark(newest, cfg.window_sizes_ms, cfg.lateness_ms)
                if tenant_mark > self._flushed.get(tenant, NO_WATERMARK):
                    flushed[tenant] = self._flushed[tenant] = tenant_mark
        for k in range(cfg.updates_partitions):
            message: UpdatesMessage = {"p": self.partition, "wm": mark}
            if flushed:
                message["tw"] = flushed
            if self.tenant_epochs:
                message["te"] = dict(self.tenant_epochs)
            if not cfg.follow_clock:
                message["f"] = 1  # closes windows; says nothing stayed quiet
            out.messages[k] = message
        return out

    def _reported(self) -> int | None:
        return None if self.watermark == NO_WATERMARK else self.watermark

    def _expire(self, out: Stage1Output) -> None:
        """Forget the ids of batches no duplicate can change any more: past the watermark by
        the dedup horizon (with `tenant_time`, past each of their tenants' watermarks)."""
        span = self.cfg.dedup_horizon_ms
        horizon = self.watermark - span
        marks = self.tenant_marks
        keep: list[Record] = []
        for record in self._records:
            key, newest, pairs, by_tenant = record
            if by_tenant is None:
                done = newest < horizon
            else:
                done = all(ts < marks.get(t, NO_WATERMARK) - span for t, ts in by_tenant.items())
            if done:
                for h, _ in pairs:
                    self._seen.pop(h, None)
                out.writes.append((key, None))
            else:
                keep.append(record)
        self._records = keep

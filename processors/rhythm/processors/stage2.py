"""Stage 2, one partition of the updates topic: entity signals, silence and unanswered alerts.

No I/O here: the Faust agent feeds `apply()` one batch message at a time, sends what it
returns, and saves the keys in `take_dirty()`. After a restart, `restore()` takes back the
saved keys; everything else (the due-time heap, the learned reply stats) is rebuilt from them.

Exactly once per key: every entity and context remembers the last source offset it applied
from each source partition, so updates re-sent after a stage 1 restart are skipped, and each
key's state is saved in one write, so a crash between two keys' writes never splits a key.

The watermark of this partition is the minimum over all source partitions of the newest
event time each has reported (stage 1 stamps it on every batch, and on idle ticks).
"""

from __future__ import annotations

import dataclasses
import heapq
import zlib
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from rhythm.processors.codec import (
    decode_context,
    decode_contribution,
    decode_entity,
    decode_rhythm,
    dumps,
    encode_context,
    encode_contribution,
    encode_entity,
    encode_rhythm,
    entity_hint,
    is_context,
    loads,
)
from rhythm.processors.messages import ROUTED, NormsUpdate, RepliesUpdate, UpdatesMessage
from rhythm.processors.signals.conversation import (
    ContextMessage,
    ContextState,
    Conversations,
    ReplyConfig,
    UnansweredAlert,
)
from rhythm.processors.signals.entity import (
    ADDED,
    ADOPTED,
    COMBINED,
    LATE,
    TOO_LATE,
    AdvanceResult,
    EntityAlert,
    EntityState,
    SignalConfig,
    add_event,
    add_runs,
    advance,
    expires_at,
    next_due_ms,
    note_routed,
    take_norms,
)
from rhythm.processors.signals.policy import AlertPolicy
from rhythm.processors.signals.rhythm import SilenceRule
from rhythm.schemas.keys import SEP, EntityKey, is_context_key, split_context_key
from rhythm.schemas.outputs import AlertRecord, SignalRecord

NO_WATERMARK = -(2**62)
RUN = "run"  # the outcome of a run of a degraded tenant's events: counted by add_runs
MAX_ADVANCE = 20_000  # entities advanced per call (see _advance)
MAX_RULE_KINDS = 10_000  # (tenant, role, type) silence rules remembered (see _rule)


@dataclass
class Stage2Output:
    signals: list[SignalRecord] = field(default_factory=list)
    alerts: list[AlertRecord] = field(default_factory=list)
    late: int = 0
    too_late: int = 0
    routed: int = 0  # entity updates of events routed to the history lane (lanes.py)
    beyond_evidence: int = 0  # alerts held back: fired after the sources' evidence
    duplicates: int = 0
    evicted: int = 0  # entities and threads forgotten after their time to live
    early: int = 0  # events of hot entities made final before W - L
    hot: list[str] = field(default_factory=list)  # entity keys that became hot
    hot_threads: list[str] = field(default_factory=list)  # likewise context keys
    norms: list[NormsUpdate] = field(default_factory=list)  # the history lane's hand-off
    norms_taken: dict[str, int] = field(default_factory=dict)  # live: take_norms's outcomes
    replies: list[RepliesUpdate] = field(default_factory=list)  # ...of threads' finished waits
    replies_taken: dict[str, int] = field(default_factory=dict)  # live: take_handed's outcomes


@dataclass(slots=True)
class _Entity:
    """`state` and `applied` are valid only while `frozen` is None: an entity holding
    nothing (no window, no pending event) is kept as its saved bytes, a third of its objects'
    memory, and decoded again when something touches it (most idle entities never are); so
    is every restored entity whose saved head gives its due time, until touched or due."""

    state: EntityState
    applied: dict[int, int]
    rule: SilenceRule | None
    frozen: bytes | None = None


_FROZEN = EntityState()  # the placeholder state of a frozen entity: never read nor changed


def _idle(state: EntityState) -> bool:
    return not state.pending and not state.windows


class Stage2Partition:
    def __init__(
        self,
        partition: int,
        source_partitions: int,
        signal_cfg: SignalConfig,
        reply_cfg: ReplyConfig,
        policy: AlertPolicy | None = None,
        hand_off: bool = False,
        watermarks_key: str | None = None,
    ) -> None:
        self.partition = partition
        self.source_partitions = source_partitions
        self.signal_cfg = signal_cfg
        self.policy = policy if policy is not None else AlertPolicy()
        self.entities: dict[str, _Entity] = {}
        self.conversations = Conversations(reply_cfg, self.policy, hand_off=hand_off)
        self.source_watermarks: dict[int, int] = {}
        # Per source, the newest watermark that was evidence of time passing (its events', or
        # the clock's), as opposed to a history lane's flush (messages.py "f"), which closes
        # windows without saying that anything stayed quiet: alerts fired after the evidence
        # are held back (lanes.py, "Idle history").
        self.source_evidence: dict[int, int] = {}
        self.watermark = NO_WATERMARK
        self._due: list[tuple[int, str]] = []  # (due, key); stale entries are skipped
        self._due_of: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._evicted: set[str] = set()  # keys forgotten since the last take_dirty
        # Kept up to date per change: summing over every entity per batch (for the gauge)
        # cost O(entities) each time, most of the batch with a million entities.
        self.window_count = 0
        self._rules: dict[str, SilenceRule | None] = {}  # _rule's, by tenant, role and type
        # Saved due times are trusted at a restore only under the settings they came from.
        self._fingerprint = fingerprint(signal_cfg, self.policy)
        # Where the watermarks are saved: one record per partition (per tenant and partition
        # in the history lane, tenants.py).
        self._watermarks_key = watermarks_key or f"{WATERMARKS_PREFIX}{partition}"
        # The history lane: entities whose norms changed since they were last handed to the
        # live lane, handed off at the next flush (its input drained: `_hand_off`).
        self.hand_off = hand_off
        self._learned: set[str] = set()

    # -- input -----------------------------------------------------------------------------

    def restore(self, items: Iterable[tuple[str, bytes | None]]) -> list[tuple[str, bytes, str]]:
        """Take back the saved keys; returns those that cannot be read (key, value, why),
        left out: a foreign record on the changelog must not stop the partition at every
        start (the key starts afresh, as a forgotten one would)."""
        contexts: dict[str, ContextState] = {}
        bad: list[tuple[str, bytes, str]] = []
        for key, value in items:
            if value is None:
                continue  # forgotten (a tombstone)
            try:
                if key.startswith(WATERMARKS_PREFIX):
                    marks, evidence = decode_watermarks(value)
                    self.source_watermarks.update(marks)
                    self.source_evidence.update(evidence)
                elif is_context_key(key) and is_context(value):
                    split_context_key(key)
                    contexts[key] = decode_context(value)
                else:
                    rule = self._rule(key)
                    hint = None if self.hand_off else entity_hint(value)
                    if hint is not None and hint[2] == self._fingerprint:
                        # Kept as its bytes until touched or due: decoding a million
                        # entities' windows was most of a restart (bench/NOTES.md).
                        self.entities[key] = _Entity(_FROZEN, {}, rule, value)
                        due, windows, _ = hint
                        self.window_count += windows
                        if due is not None:
                            self._due_of[key] = due
                            heapq.heappush(self._due, (due, key))
                        continue
                    state, applied = decode_entity(value)
                    entity = self.entities[key] = _Entity(state, applied, rule)
                    self.window_count += len(state.windows)
                    self._schedule(key, entity)
                    if hand_off_due(state) and self.hand_off:
                        self._learned.add(key)
                    if _idle(state):
                        self._freeze(entity, value)
            except Exception as exc:
                bad.append((key, value, f"{type(exc).__name__}: {exc}"[:500]))
        self.conversations.restore(contexts)
        self.watermark = self._min_watermark()
        return bad

    def apply(self, message: UpdatesMessage) -> Stage2Output:
        """One batch from stage 1: {"p": source partition, "wm": its watermark,
        "u": entity updates, "c": context updates} (see explode.py for the update shapes)."""
        out = Stage2Output()
        alerts = AdvanceResult()
        cfg = self.signal_cfg
        final_after = cfg.lateness_ms + 1
        due_of = self._due_of
        for update in message.get("u", ()):
            # Most updates are one event's five fields: no starred unpacking (a list) for them.
            if len(update) == 5:
                key, ts, weight, src_partition, src_offset = update
                run: Sequence[Any] = ()
            else:
                key, ts, weight, src_partition, src_offset, *run = update
            overdue = due_of.get(key)
            if overdue is not None and overdue <= self.watermark:
                del due_of[key]  # not yet advanced to the watermark (_advance): first that
                self._advance_one(key, out)
            entity = self.entities.get(key)
            if entity is None:
                entity = self.entities[key] = _Entity(EntityState(), {}, self._rule(key))
                self._evicted.discard(key)
            elif entity.frozen is not None:
                self._thaw(entity)
            applied = entity.applied.get(src_partition, -1)
            if src_offset <= applied:
                out.duplicates += len(run[0]) if run else 1
                continue
            entity.applied[src_partition] = src_offset
            held = len(entity.state.windows)
            if run and run[0] == ROUTED:  # its event went to the history lane
                out.routed += 1
                if note_routed(entity.state, ts, cfg, entity.rule):
                    self._dirty.add(key)
                    self._schedule(key, entity)
                continue
            if run:  # a degraded tenant's events (explode.py)
                offsets, seconds = run
                skip = bisect_right(offsets, applied) if offsets[0] <= applied else 0
                out.duplicates += skip  # re-sent with other bounds: skip what was applied
                late, too_late = add_runs(
                    entity.state, ts, weight[skip:], seconds[skip:],
                    self.watermark, cfg, alerts, entity.rule,
                )  # fmt: skip
                out.late += late
                out.too_late += too_late
                outcome = RUN
            else:
                outcome = add_event(
                    entity.state, ts, weight, self.watermark, cfg, alerts, entity.rule
                )
            self.window_count += len(entity.state.windows) - held
            self._dirty.add(key)
            if self.hand_off:
                self._learned.add(key)
            if alerts.early:
                out.early += alerts.early
                alerts.early = 0
                if alerts.became_hot:
                    out.hot.append(key)
                    alerts.became_hot = False
                self._schedule(key, entity)
            if alerts.alerts:  # a late event, or a hot entity's early final, can end a silence
                out.alerts.extend(_entity_alert(key, a) for a in alerts.alerts)
                alerts.alerts.clear()
            if outcome == ADDED:
                # An on-time event joins `pending` and dirties windows that close no earlier
                # than it becomes final, so next_due_ms becomes min(old, ts + L + 1): no
                # need to rescan the entity's windows (kept a day after closing) per event.
                due = ts + final_after
                old = due_of.get(key)
                if old is None or due < old:
                    due_of[key] = due
                    heapq.heappush(self._due, (due, key))
                continue
            if outcome == LATE:
                out.late += 1
            elif outcome == TOO_LATE:
                out.too_late += 1
            self._schedule(key, entity)
        for update in message.get("c", ()):
            key, ts, actor_type, actor_id, channel, verb, about, partition, offset = update[:9]
            tenant, context_id = split_context_key(key)
            context_message = ContextMessage(
                ts, (actor_type, actor_id), channel, verb, about, partition, offset,
                len(update) > 9,  # a copy of a stored message (messages.py)
            )  # fmt: skip
            if not self.conversations.add(key, tenant, context_id, context_message):
                out.duplicates += 1
        if self.conversations.hot:
            out.hot_threads.extend(self.conversations.hot)
            self.conversations.hot.clear()
        for norms in message.get("n", ()):
            self._take_norms(norms, out)
        for replies in message.get("r", ()):
            self._take_replies(replies, out)
        watermark = message.get("wm")
        if watermark is not None:
            source = int(message["p"])
            if watermark > self.source_watermarks.get(source, NO_WATERMARK):
                self.source_watermarks[source] = int(watermark)
                self._dirty.add(self._watermarks_key)
            if not message.get("f") and watermark > self.source_evidence.get(source, NO_WATERMARK):
                self.source_evidence[source] = int(watermark)
                self._dirty.add(self._watermarks_key)
            self._advance(self._min_watermark(), out)
            if message.get("f") and self.hand_off:
                self._hand_off(out)
        self._hold_back(out)
        return out

    def catch_up(self) -> Stage2Output:
        """Advance entities still overdue at the watermark (`overdue`), with no message: the
        history lane's tenants without news in a batch (tenants.py)."""
        out = Stage2Output()
        self._advance(self.watermark, out)
        self._hold_back(out)
        return out

    def _hold_back(self, out: Stage2Output) -> None:
        if out.alerts:
            evidence = self._evidence()
            kept = [a for a in out.alerts if a["fired_at"] <= evidence]
            out.beyond_evidence += len(out.alerts) - len(kept)
            out.alerts = kept

    def _take_norms(self, norms: NormsUpdate, out: Stage2Output) -> None:
        """The live lane: an entity's norms from the history lane (take_norms's rule)."""
        key, learned_last, model = norms[:3]
        epoch = int(norms[3]) if len(norms) > 3 else 0  # a rewound tenant's (tenants.py)
        entity = self.entities.get(key)
        if entity is None:
            entity = _Entity(EntityState(), {}, self._rule(key))
        elif entity.frozen is not None:
            self._thaw(entity)
        if entity.rule is None:  # no silence rule for it here: nothing to judge by
            outcome = "no_rule"
        else:
            learned = decode_rhythm(model)
            assert learned is not None
            outcome = take_norms(
                entity.state, learned, int(learned_last), self.watermark,
                self.signal_cfg, entity.rule, epoch,
            )  # fmt: skip
        out.norms_taken[outcome] = out.norms_taken.get(outcome, 0) + 1
        if outcome in (ADOPTED, COMBINED):
            if key not in self.entities:
                self.entities[key] = entity
                self._evicted.discard(key)
            self._dirty.add(key)
            self._schedule(key, entity)

    def _take_replies(self, replies: RepliesUpdate, out: Stage2Output) -> None:
        """The live lane: a thread's finished waits from the history lane (reply norms)."""
        key, last, waits = replies
        tenant, context_id = split_context_key(key)
        outcome = self.conversations.take_handed(
            key, tenant, context_id, int(last), [decode_contribution(c) for c in waits],
            self.watermark,
        )  # fmt: skip
        out.replies_taken[outcome] = out.replies_taken.get(outcome, 0) + 1

    def _hand_off(self, out: Stage2Output) -> None:
        """The history lane, at a flush: the norms of the entities that learned since their
        last hand-off and have nothing left to finalize (an entity still overdue, see
        MAX_ADVANCE, goes at a later flush; a flush comes every tick while idle), and the
        threads' finished waits not handed off yet (their kinds' reply norms)."""
        for key, newest, waits in self.conversations.take_hand_off():
            out.replies.append([key, newest, [encode_contribution(c) for c in waits]])
        watermark = self.watermark
        waiting: set[str] = set()
        for key in sorted(self._learned):
            entity = self.entities.get(key)
            if entity is None or entity.rule is None:
                continue  # forgotten, or nothing learned
            due = self._due_of.get(key)
            if due is not None and due <= watermark:
                waiting.add(key)
                continue
            frozen = entity.frozen
            state, applied = (
                decode_entity(frozen) if frozen is not None else (entity.state, entity.applied)
            )
            model, last = state.rhythm, state.last_ms
            if model is None or last is None or state.handed_ms == last:
                continue
            out.norms.append([key, last, encode_rhythm(model)])
            state.handed_ms = last
            if frozen is not None:
                entity.frozen = bytes(memoryview(self._encode(key, state, applied)))
            self._dirty.add(key)
        self._learned = waiting

    def _evidence(self) -> int:
        """Up to when the sources say time passed (their events or the clock): never ahead
        of the watermark; behind it only after a history lane's flush."""
        if len(self.source_evidence) < self.source_partitions:
            return self.watermark
        return min(self.source_evidence.values())

    # -- output ----------------------------------------------------------------------------

    def take_dirty(self) -> list[tuple[str, bytes | None]]:
        """The keys changed since the last call, encoded for the table (None: forgotten, a
        tombstone), the watermarks last: the changelog keeps their order, so a restored
        watermark is never ahead of the keys it was computed with (a replayed update is then
        late only if it was late before)."""
        items: list[tuple[str, bytes | None]] = [(key, None) for key in sorted(self._evicted)]
        items.extend((key, None) for key in sorted(self.conversations.evicted))
        self._evicted.clear()
        self.conversations.evicted.clear()
        for key in self._dirty:
            if key != self._watermarks_key:
                entity = self.entities[key]
                data = entity.frozen
                if data is None:
                    data = self._encode(key, entity.state, entity.applied)
                items.append((key, data))
        for key in self.conversations.dirty:
            items.append((key, encode_context(self.conversations.contexts[key])))
        if self._watermarks_key in self._dirty:
            items.append(
                (
                    self._watermarks_key,
                    encode_watermarks(self.source_watermarks, self.source_evidence),
                )
            )
        self._dirty.clear()
        self.conversations.dirty.clear()
        return items

    def saved_keys(self) -> set[str]:
        """Every key of this partition's state in the table, or about to be (to forget it
        all: tenants.py's rewind)."""
        return {
            *self.entities, *self.conversations.contexts, *self._evicted,
            *self.conversations.evicted, self._watermarks_key,
        }  # fmt: skip

    def mark_watermarks_dirty(self) -> None:
        """Save the watermarks at the next `take_dirty` (restored from another key)."""
        self._dirty.add(self._watermarks_key)

    def overdue(self) -> bool:
        """Entities due by the watermark not yet advanced (`_advance` takes at most
        MAX_ADVANCE per call): the next message with a watermark takes more of them."""
        due = self._due
        while due and self._due_of.get(due[0][1]) != due[0][0]:
            heapq.heappop(due)  # stale entries first
        return bool(due) and due[0][0] <= self.watermark

    def open_windows(self) -> int:
        return self.window_count

    # -- internals -------------------------------------------------------------------------

    def _min_watermark(self) -> int:
        if len(self.source_watermarks) < self.source_partitions:
            return NO_WATERMARK  # a source partition has said nothing yet: hold everything
        return min(self.source_watermarks.values())

    def _advance(self, watermark: int, out: Stage2Output) -> None:
        """Advance the entities due by the watermark, at most `MAX_ADVANCE` per call: when a
        million entities' windows close at once, the rest are taken by the next calls (one
        per message; stage 1 sends one per tick when idle), so no batch holds millions of
        signals. An entity touched while still overdue is advanced first (`apply`)."""
        self.watermark = max(self.watermark, watermark)
        watermark = self.watermark
        ready: list[str] = []
        while self._due and self._due[0][0] <= watermark and len(ready) < MAX_ADVANCE:
            due, key = heapq.heappop(self._due)
            if self._due_of.get(key) == due:
                del self._due_of[key]
                ready.append(key)
        for key in sorted(ready):  # sorted: the same output order on every run
            self._advance_one(key, out)
        forgotten = len(self.conversations.evicted)
        out.alerts.extend(_unanswered(a) for a in self.conversations.advance(watermark))
        out.evicted += len(self.conversations.evicted) - forgotten

    def _advance_one(self, key: str, out: Stage2Output) -> None:
        watermark = self.watermark
        cfg = self.signal_cfg
        entity = self.entities[key]
        if entity.frozen is not None:
            self._thaw(entity)
        held = len(entity.state.windows)
        result = advance(entity.state, watermark, cfg, entity.rule)
        self.window_count += len(entity.state.windows) - held
        expiry = expires_at(entity.state, cfg, entity.rule)
        if expiry is not None and expiry <= watermark:
            del self.entities[key]
            self._dirty.discard(key)
            self._due_of.pop(key, None)
            self._evicted.add(key)
            out.evicted += 1
        else:
            self._dirty.add(key)
            self._schedule(key, entity)
            if _idle(entity.state):
                # A copy: orjson's result keeps its whole output buffer (4 KiB at least)
                # allocated, whatever its length; this one is kept for long.
                data = self._encode(key, entity.state, entity.applied)
                self._freeze(entity, bytes(memoryview(data)))
        if result.signals or result.alerts:
            fields = EntityKey.decode(key).fields()  # once for the entity's signals
            out.signals.extend(_signal(fields, s) for s in result.signals)
            out.alerts.extend(_entity_alert(key, a) for a in result.alerts)

    def entity_state(self, key: str) -> EntityState:
        """An entity's state (decoded if it was kept frozen)."""
        entity = self.entities[key]
        if entity.frozen is not None:
            self._thaw(entity)
        return entity.state

    def _encode(self, key: str, state: EntityState, applied: dict[int, int]) -> bytes:
        """An entity's saved bytes, headed by its scheduled due time (never later than
        `next_due_ms`, see `apply`) and its open windows, for a restore to keep it frozen."""
        due = self._due_of.get(key)
        if due is None:  # nothing scheduled: "nothing due" is written only if it is so
            due = next_due_ms(state, self.signal_cfg, self.entities[key].rule)
        return encode_entity(state, applied, (due, self._fingerprint))

    @staticmethod
    def _freeze(entity: _Entity, data: bytes) -> None:
        entity.frozen = data
        entity.state = _FROZEN
        entity.applied = {}

    @staticmethod
    def _thaw(entity: _Entity) -> None:
        assert entity.frozen is not None
        entity.state, entity.applied = decode_entity(entity.frozen)
        entity.frozen = None

    def _rule(self, key: str) -> SilenceRule | None:
        # By (tenant, role, type): the policy's answer for them never changes, and a restore
        # asks for every entity (a tenant's types are few; the cap bounds a flood of them).
        kind = key[: key.find(SEP, key.find(SEP, key.find(SEP) + 1) + 1)]
        rules = self._rules
        if kind in rules:
            return rules[kind]
        if len(rules) >= MAX_RULE_KINDS:
            rules.clear()
        ek = EntityKey.decode(key)
        rule = rules[kind] = self.policy.silence_rule(ek.tenant, ek.role, ek.entity_type)
        return rule

    def _schedule(self, key: str, entity: _Entity) -> None:
        due = next_due_ms(entity.state, self.signal_cfg, entity.rule)
        if due is None:
            self._due_of.pop(key, None)
        elif self._due_of.get(key) != due:
            self._due_of[key] = due
            heapq.heappush(self._due, (due, key))


def fingerprint(*settings: Any) -> str:
    """Eight hex digits that change with any of the settings (dataclasses, sets and maps
    taken in a canonical order: a set's repr changes with the process's hash seed)."""

    def canonical(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return (
                type(value).__name__,
                [
                    (f.name, canonical(getattr(value, f.name)))
                    for f in dataclasses.fields(value)
                    if not f.name.startswith("_")
                ],
            )
        if isinstance(value, dict):
            return sorted((repr(k), canonical(v)) for k, v in value.items())
        if isinstance(value, (set, frozenset)):
            return sorted(repr(canonical(v)) for v in value)
        if isinstance(value, (list, tuple)):
            return [canonical(v) for v in value]
        return repr(value)

    return f"{zlib.crc32(repr(canonical(settings)).encode()):08x}"


def hand_off_due(state: EntityState) -> bool:
    """Whether the history lane still owes the live lane this entity's norms."""
    return state.rhythm is not None and state.last_ms != state.handed_ms


WATERMARKS_PREFIX = "\x00wm\x1f"  # + partition number: one record per partition


def encode_watermarks(marks: dict[int, int], evidence: dict[int, int] | None = None) -> bytes:
    """[[source, watermark], ...], then [-1 - source, evidence] for each source whose
    evidence is behind its watermark (a history lane's flush): older records read the same."""
    pairs = [[k, v] for k, v in sorted(marks.items())]
    pairs += [[-1 - k, v] for k, v in sorted((evidence or {}).items()) if v < marks.get(k, v)]
    return dumps(pairs)


def decode_watermarks(data: bytes) -> tuple[dict[int, int], dict[int, int]]:
    """(watermarks, evidence) per source; a source's evidence is its watermark unless saved."""
    marks: dict[int, int] = {}
    evidence: dict[int, int] = {}
    for k, v in loads(data):
        if int(k) >= 0:
            marks[int(k)] = int(v)
        else:
            evidence[-1 - int(k)] = int(v)
    return marks, {**marks, **evidence}


def _signal(fields: dict[str, str], measures: dict[str, Any]) -> SignalRecord:
    # `fields`: the entity's (EntityKey.fields). The window's measures are entity.py's; their
    # keys are checked against the Signal model (tests/unit/test_stages.py validates real
    # outputs).
    return cast(SignalRecord, {**fields, **measures})


def _entity_alert(key: str, alert: EntityAlert) -> AlertRecord:
    ek = EntityKey.decode(key)
    return {
        "kind": alert.kind,
        "tenant": ek.tenant,
        "role": ek.role,
        "entity_type": ek.entity_type,
        "entity_id": ek.entity_id,
        "context_id": None,
        "fired_at": alert.fired_at_ms,
        "last_event_at": alert.last_event_at_ms,
        "expected_within_s": alert.expected_within_ms / 1000,
        "score": round(alert.score, 6),
        "owners": [],
        "details": alert.details,
    }


def _unanswered(alert: UnansweredAlert) -> AlertRecord:
    return {
        "kind": alert.kind,
        "tenant": alert.tenant,
        "role": "actor",
        "entity_type": alert.sender[0],
        "entity_id": alert.sender[1],
        "context_id": alert.context_id,
        "fired_at": alert.fired_at_ms,
        "last_event_at": alert.since_ms,
        "expected_within_s": alert.expected_within_ms / 1000,
        "score": alert.score,
        "owners": alert.owners,
        "details": alert.details,
    }

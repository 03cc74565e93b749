"""The history lane's per-tenant event time (processors/tenants.py, stage 1's `tenant_time`):
a tenant's import older than another tenant's is exact, not late; each tenant's windows close
by its own watermark; restarts, split messages, saved ids and overdue entities keep it so."""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections import defaultdict
from typing import Any

import pytest

from rhythm.processors import stage2 as stage2_module
from rhythm.processors.codec import encode_batch, loads
from rhythm.processors.lanes import flush_mark
from rhythm.processors.messages import UpdatesMessage
from rhythm.processors.signals.conversation import ReplyConfig
from rhythm.processors.signals.entity import SignalConfig
from rhythm.processors.stage1 import Marks, Stage1Config, Stage1Partition, is_state_key
from rhythm.processors.stage2 import (
    WATERMARKS_PREFIX,
    Stage2Output,
    Stage2Partition,
    encode_watermarks,
)
from rhythm.processors.tenants import TenantPartitions, tenant_of, watermarks_key
from rhythm.schemas.keys import SEP
from rhythm.schemas.outputs import SignalRecord

from .test_lanes import _policy
from .test_stages import wire

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
NOW = 1_800_000_000_000 - 1_800_000_000_000 % DAY + 10 * HOUR
L = 5 * MIN
SIZES = (HOUR, DAY)
PARTS = 2  # stage-2 partitions
HISTORY = Stage1Config(
    updates_partitions=PARTS, dedup_horizon_ms=DAY + L, lateness_ms=L, window_sizes_ms=SIZES,
    late_retention_ms=DAY, follow_clock=False, tenant_time=True,
)  # fmt: skip
SIGNALS = SignalConfig(window_sizes_ms=SIZES, lateness_ms=L, late_retention_ms=DAY)

Key = tuple[str, str, str, int, int]


def _id(n: int) -> str:
    return str(uuid.UUID(int=n))  # tenant, entity type, id, window seconds, start


def _tenants() -> dict[int, TenantPartitions]:
    return {
        k: TenantPartitions(k, 1, SIGNALS, ReplyConfig(lateness_ms=L), _policy())
        for k in range(PARTS)
    }


def _shared() -> dict[int, Stage2Partition]:
    return {
        k: Stage2Partition(k, 1, SIGNALS, ReplyConfig(lateness_ms=L), _policy())
        for k in range(PARTS)
    }


def _history(tenant: str, start: int, days: int, seed: int) -> list[tuple[int, bytes]]:
    """A few users of `tenant`, a few events an hour each, over `days` from `start`."""
    rng = random.Random(seed)
    events = []
    for user in range(3):
        t = start + rng.randrange(HOUR)
        while t < start + days * DAY:
            events.append((t, wire(t, actor=f"u{user}", tenant=tenant)))
            t += rng.randrange(5 * MIN, 3 * HOUR)
    return sorted(events, key=lambda e: e[0])


def _reference(events: list[tuple[int, bytes]]) -> dict[Key, tuple[int, int | None]]:
    """(event count, smallest gap in ms) per actor window, the plain way: sort, bucket."""
    from rhythm.schemas import decode_event

    per: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for ts, value in events:
        record = decode_event(value)
        per[(record["tenant"], record["actor_type"], record["actor_id"])].append(ts)
    out: dict[Key, tuple[int, int | None]] = {}
    for (tenant, kind, ident), stamps in per.items():
        stamps.sort()
        for size in SIZES:
            windows: dict[int, list[int]] = defaultdict(list)
            for i, ts in enumerate(stamps):
                windows[ts - ts % size].append(ts - stamps[i - 1] if i else -1)
            for start, gaps in windows.items():
                real = [g for g in gaps if g >= 0]
                out[(tenant, kind, ident, size // 1000, start)] = (
                    len(gaps), min(real) if real else None
                )  # fmt: skip
    return out


class Lane:
    """Stage 1 (one partition) and stage 2 (PARTS partitions) of the history lane, fed a batch
    at a time, the way the worker does; restartable from what each stage saved."""

    def __init__(self, per_tenant: bool = True) -> None:
        self.per_tenant = per_tenant
        self.source = Stage1Partition(0, HISTORY)
        self.stage2: dict[int, Any] = _tenants() if per_tenant else _shared()
        self.saved1: dict[str, bytes] = {}
        self.saved2: dict[int, dict[str, bytes]] = {k: {} for k in range(PARTS)}
        self.offset = 0
        self.signals: list[SignalRecord] = []
        self.alerts: list[Any] = []
        self.too_late = 0

    def feed(self, events: list[tuple[int, bytes]], batch: int = 50) -> None:
        for i in range(0, len(events), batch):
            chunk: list[tuple[int, bytes | None]] = [
                (self.offset + j, v) for j, (_, v) in enumerate(events[i : i + batch])
            ]
            self.offset += len(chunk)
            self.process(chunk)

    def process(self, chunk: list[tuple[int, bytes | None]], marks: Marks | None = None) -> None:
        """One batch through stage 1, its messages to stage 2, its writes kept."""
        out = self.source.process(chunk, NOW, 0.0, marks)
        self._deliver(out.messages)
        for key, value in out.writes:
            if value is None:
                self.saved1.pop(key, None)
            else:
                self.saved1[key] = value

    def flush(self) -> None:
        out = self.source.tick(self.offset, NOW, 1e9)
        assert out is not None
        self._deliver(out.messages)

    def _deliver(self, messages: dict[int, UpdatesMessage]) -> None:
        for k, message in messages.items():
            for part in encode_batch(message, max_bytes=2_000):  # split, as big batches are
                result: Stage2Output = self.stage2[k].apply(loads(part))
                self.signals += result.signals
                self.alerts += result.alerts
                self.too_late += result.too_late
            for key, value in self.stage2[k].take_dirty():
                if value is None:
                    self.saved2[k].pop(key, None)
                else:
                    self.saved2[k][key] = value

    def restart(self) -> None:
        self.source = Stage1Partition(0, HISTORY)
        assert not self.source.restore(
            [(k, v) for k, v in self.saved1.items() if is_state_key(k, 0)]
        )
        self.stage2 = _tenants() if self.per_tenant else _shared()
        for k, proc in self.stage2.items():
            assert not proc.restore(sorted(self.saved2[k].items()))

    def final(self) -> dict[Key, tuple[int, int | None]]:
        """The last version of each actor window: (event count, smallest gap in ms)."""
        last: dict[Key, SignalRecord] = {}
        for s in self.signals:
            if s["role"] != "actor":
                continue
            key = (s["tenant"], s["entity_type"], s["entity_id"], s["window_seconds"],
                   s["window_start"])  # fmt: skip
            if key not in last or s["version"] > last[key]["version"]:
                last[key] = s
        return {
            k: (s["event_count"], None if s["gap_min_s"] is None else round(s["gap_min_s"] * 1000))
            for k, s in last.items()
        }


def test_a_tenants_import_older_than_anothers_is_exact_not_late() -> None:
    newer = _history("a", NOW - 20 * DAY, 5, seed=1)
    older = _history("b", NOW - 60 * DAY, 5, seed=2)
    lane = Lane()
    lane.feed(newer)
    lane.flush()
    lane.feed(older)
    lane.flush()
    assert lane.too_late == 0
    assert lane.final() == _reference(newer + older)
    # each tenant's own watermark, in every stage-2 partition
    for proc in lane.stage2.values():
        marks = proc.watermarks()
        assert set(marks) == {"a", "b"} and marks["b"] < NOW - 50 * DAY < marks["a"]
    # With one event time shared by tenants (as before), the older import is lost to signals.
    shared = Lane(per_tenant=False)
    shared.feed(newer)
    shared.flush()
    shared.feed(older)
    shared.flush()
    assert shared.too_late > 0
    assert not any(k[0] == "b" for k in shared.final())


def test_interleaved_tenants_restarts_and_a_later_import_of_the_same_tenant_stay_exact() -> None:
    a1 = _history("a", NOW - 40 * DAY, 3, seed=3)
    b1 = _history("b", NOW - 90 * DAY, 3, seed=4)
    both = sorted(a1 + b1, key=lambda e: e[0])
    a2 = _history("a", NOW - 30 * DAY, 2, seed=5)
    lane = Lane()
    lane.feed(both[: len(both) // 2])
    lane.restart()  # every part restored from what it saved
    lane.feed(both[len(both) // 2 :])
    lane.flush()
    lane.restart()
    lane.feed(a2)
    lane.flush()
    assert lane.too_late == 0
    assert lane.final() == _reference(a1 + b1 + a2)


def test_a_flush_closes_each_tenants_windows_by_its_own_time_and_is_no_evidence() -> None:
    lane = Lane()
    lane.feed([(NOW - 10 * DAY, wire(NOW - 10 * DAY, actor="x", tenant="a"))])
    lane.feed([(NOW - 50 * DAY, wire(NOW - 50 * DAY, actor="y", tenant="b"))])
    assert not lane.signals  # nothing final yet for either
    lane.flush()
    assert {(s["tenant"], s["window_seconds"]) for s in lane.signals if s["role"] == "actor"} == {
        ("a", 3600), ("a", 86400), ("b", 3600), ("b", 86400),
    }  # fmt: skip
    for proc in lane.stage2.values():
        b = proc.tenants["b"]
        assert b.watermark == flush_mark(NOW - 50 * DAY, SIZES, L)
        assert b._evidence() == NOW - 50 * DAY
        assert proc.tenants["a"]._evidence() == NOW - 10 * DAY
    # another flush sends no tenant mark again (nothing moved), and changes nothing
    before = len(lane.signals)
    out = lane.source.tick(lane.offset, NOW, 2e9)
    assert out is not None and "tw" not in out.messages[0] and out.messages[0]["f"] == 1
    lane._deliver(out.messages)
    assert len(lane.signals) == before


def test_a_tenants_ids_are_kept_by_its_own_watermark() -> None:
    """A re-sent event of the older tenant is still a duplicate after the newer tenant's
    time has moved far past it (ids expire by their tenants' watermarks), and after a
    restart from what stage 1 saved."""
    old = wire(NOW - 80 * DAY, actor="y", tenant="b", event_id=_id(2))
    first = [
        wire(NOW - 5 * DAY, actor="x", tenant="a", event_id=_id(1)),
        old,
        wire(NOW - DAY, actor="x", tenant="a", event_id=_id(3)),
    ]
    source = Stage1Partition(0, HISTORY)
    saved: dict[str, bytes] = {}
    for offset, value in enumerate(first):
        for key, data in source.process([(offset, value)], NOW, 0.0).writes:
            if data is None:
                saved.pop(key, None)
            else:
                saved[key] = data
    assert source.process([(3, old)], NOW, 0.0).duplicates == 1
    # a-1's ids went when a-2 moved tenant a a day past them; b-1's stay
    assert len([k for k in saved if k.startswith("seen")]) == 2
    restored = Stage1Partition(0, HISTORY)
    assert not restored.restore(sorted(saved.items()))
    assert restored.tenant_marks == {"a": NOW - DAY, "b": NOW - 80 * DAY}
    assert restored.process([(3, old)], NOW, 0.0).duplicates == 1
    # the newer tenant's ids expire by its own time, the older one's stay
    a3 = wire(NOW + 10 * MIN, actor="x", tenant="a", event_id=_id(4))
    moved = restored.process([(4, a3)], NOW, 0.0)
    assert len([k for k, v in moved.writes if v is None]) == 1  # a-2's
    assert restored.process([(5, old)], NOW, 0.0).duplicates == 1
    shared = Stage1Partition(0, dataclasses.replace(HISTORY, tenant_time=False))
    for offset, value in enumerate([*first, a3]):
        shared.process([(offset, value)], NOW, 0.0)
    assert shared.process([(5, old)], NOW, 0.0).duplicates == 0  # one shared time forgets it


def test_a_split_message_carries_the_tenants_watermarks_on_its_last_part() -> None:
    message: UpdatesMessage = {
        "p": 0, "wm": NOW, "tw": {"a": NOW, "b": NOW - DAY}, "f": 1,
        "u": [[f"a{SEP}actor{SEP}user{SEP}u{i}", NOW, 1.0, 0, i] for i in range(200)],
    }  # fmt: skip
    parts = [loads(p) for p in encode_batch(message, max_bytes=1_000)]
    assert len(parts) > 2
    assert all("tw" not in p and "wm" not in p for p in parts[:-1])
    assert parts[-1]["tw"] == message["tw"] and parts[-1]["f"] == 1


def test_a_tenant_with_more_overdue_entities_than_one_call_takes_catches_up_on_any_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stage2_module, "MAX_ADVANCE", 3)
    proc = TenantPartitions(0, 1, SIGNALS, ReplyConfig(lateness_ms=L), _policy())
    updates = [[f"b{SEP}actor{SEP}user{SEP}u{i}", NOW - 50 * DAY, 1.0, 0, i] for i in range(10)]
    proc.apply({"p": 0, "u": updates, "tw": {"b": NOW - 50 * DAY}})
    out = proc.apply({"p": 0, "tw": {"b": NOW}})
    assert len(out.signals) == 3 * 2 and proc.overdue()  # three entities, two windows each
    total = len(out.signals)
    for i in range(5):  # news of another tenant only
        a = [[f"a{SEP}actor{SEP}user{SEP}x", NOW - 9 * DAY + i, 1.0, 0, 100 + i]]
        total += len(proc.apply({"p": 0, "u": a, "tw": {"a": NOW - 9 * DAY + i}}).signals)
    assert total == 10 * 2 and not proc.tenants["b"].overdue()


def test_a_shared_watermarks_record_saved_before_becomes_each_tenants_own() -> None:
    key = f"{WATERMARKS_PREFIX}0"
    user = f"a{SEP}actor{SEP}user{SEP}u1"
    proc = TenantPartitions(0, 1, SIGNALS, ReplyConfig(lateness_ms=L), _policy())
    proc.apply({"p": 0, "u": [[user, NOW - 3 * DAY, 1.0, 0, 0]], "tw": {"a": NOW - 3 * DAY}})
    items = [(k, v) for k, v in proc.take_dirty() if not k.startswith(WATERMARKS_PREFIX)]
    items.append((key, encode_watermarks({0: NOW - DAY})))
    restored = TenantPartitions(0, 1, SIGNALS, ReplyConfig(lateness_ms=L), _policy())
    assert not restored.restore(items)
    assert restored.watermarks() == {"a": NOW - DAY}
    saved = dict(restored.take_dirty())
    assert saved[key] is None and watermarks_key(0, "a") in saved  # moved to the tenant's key
    assert tenant_of(key, False) is None and tenant_of(watermarks_key(0, "a"), False) == "a"
    assert tenant_of(f"ctx{SEP}b{SEP}thread-1", True) == "b" and tenant_of(user, False) == "a"
    # a foreign key is left out, not fatal
    assert restored.restore([("nonsense", b"[]")])[0][0] == "nonsense"


def test_every_flush_reaches_every_tenant_so_norms_held_back_by_overdue_entities_go_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stage2_module, "MAX_ADVANCE", 3)
    proc = TenantPartitions(0, 1, SIGNALS, ReplyConfig(lateness_ms=L), _policy(), hand_off=True)
    keys = [f"b{SEP}actor{SEP}user{SEP}u{i}" for i in range(10)]
    updates = [[k, NOW - 50 * DAY + j * HOUR, 1.0, 0, 10 * i + j]
               for i, k in enumerate(keys) for j in range(6)]  # fmt: skip
    proc.apply({"p": 0, "u": updates, "tw": {"b": NOW - 50 * DAY + 5 * HOUR}})
    handed = {n[0] for n in proc.apply({"p": 0, "tw": {"b": NOW - 40 * DAY}, "f": 1}).norms}
    assert 0 < len(handed) < len(keys)  # the overdue ones wait for a later flush
    for _ in range(10):  # idle ticks: flushes with no tenant's mark moved
        handed |= {n[0] for n in proc.apply({"p": 0, "wm": NOW, "f": 1}).norms}
    assert handed == set(keys)


@pytest.mark.parametrize("per_tenant", [False, True], ids=["live", "history"])
def test_the_tenant_ctx_keeps_its_entities_and_threads_through_a_restart(per_tenant: bool) -> None:
    """An entity key of the tenant `ctx` starts as a thread key does (`ctx` SEP ...): what
    was saved decides which it is, so its state is read back as itself, not dropped as
    unreadable (and a thread of it stays a thread)."""

    def make() -> Any:
        cls = TenantPartitions if per_tenant else Stage2Partition
        return cls(0, 1, SIGNALS, ReplyConfig(lateness_ms=L), _policy())

    proc = make()
    user = f"ctx{SEP}actor{SEP}user{SEP}u1"
    thread = f"ctx{SEP}ctx{SEP}t-1"
    updates = [[user, NOW - 2 * HOUR, 1.0, 0, 0]]
    contexts = [[thread, NOW - 2 * HOUR, "contact", "c-1", "email", "sent", "", 0, 1]]
    proc.apply({"p": 0, "u": updates, "c": contexts, "tw": {"ctx": NOW - 2 * HOUR}})
    saved = proc.take_dirty()
    assert {k for k, _ in saved} >= {user, thread}
    restored = make()
    assert restored.restore(saved) == []  # nothing unreadable
    assert restored.entity_state(user).pending == [NOW - 2 * HOUR]
    conversations = restored.tenants["ctx"].conversations if per_tenant else restored.conversations
    assert set(conversations.contexts) == {thread}

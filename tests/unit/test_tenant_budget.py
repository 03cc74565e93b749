"""The per-tenant budget (budget.py): a flooding tenant's events are counted exactly but
reach stage 2 joined per entity and second; the other tenants' signals stay exact; the
decisions do not depend on how the input was batched, and survive a restart."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from rhythm.processors.budget import MAX_SAVED, Budget
from rhythm.processors.codec import MAX_MESSAGE_BYTES, encode_batch, loads
from rhythm.processors.signals.conversation import ReplyConfig
from rhythm.processors.signals.entity import SignalConfig
from rhythm.processors.stage1 import Stage1Config, Stage1Partition
from rhythm.processors.stage2 import Stage2Partition
from rhythm.producers import prepare_event
from rhythm.schemas import encode_event
from rhythm.schemas.outputs import SignalRecord

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_800_000_000_000 - 1_800_000_000_000 % HOUR
SIG = SignalConfig(window_sizes_ms=(MIN, HOUR), lateness_ms=5 * MIN, late_retention_ms=HOUR)
BUDGET = 600  # per tenant and minute: the flood below is 3,000 a minute
FAR = T0 + 10 * HOUR


def cfg(budget: int) -> Stage1Config:
    return Stage1Config(
        updates_partitions=2,
        dedup_horizon_ms=2 * HOUR,
        tenant_budget=budget,
        lateness_ms=SIG.lateness_ms,
    )


def wire(i: int, ts: int, tenant: str, actor: str, obj: str, weight: float) -> bytes:
    stamp = datetime.fromtimestamp(ts / 1000, UTC).isoformat().replace("+00:00", "Z")
    record, _ = prepare_event(
        {
            "event_id": f"0191e2b4-0000-7000-8000-{i:012d}",
            "tenant": tenant,
            "occurred_at": stamp,
            "actor": ("service" if tenant == "noisy" else "user", actor),
            "verb": "synced" if tenant == "noisy" else "viewed",
            "object": ("doc", obj),
            "tags": ["t"],
            "weight": weight,
        }
    )
    return encode_event(record)


def workload() -> list[tuple[int, bytes, tuple[str, str, str, int, float]]]:
    """Ten minutes: a bot of tenant `noisy` at 50 events/s over two objects, in time order,
    and two quiet tenants' people at a few a minute, jittered within a minute."""
    rng = random.Random(7)
    events: list[tuple[int, str, str, str, float]] = []
    t = T0 + MIN
    for _ in range(30_000):
        t += rng.choice((0, 10, 20, 30, 40))
        events.append((t, "noisy", "bot", f"o-{rng.randrange(2)}", rng.choice((1.0, 2.5))))
    for tenant in ("acme", "globex"):
        for u in range(5):
            for _ in range(40):
                ts = T0 + MIN + rng.randrange(10 * MIN)
                events.append((ts, tenant, f"u-{u}", f"d-{rng.randrange(3)}", 1.0))
    events.sort(key=lambda e: e[0] + rng.randrange(30_000))  # arrival order: a little late
    return [
        (offset, wire(offset, ts, tenant, actor, obj, w), (tenant, actor, obj, ts, w))
        for offset, (ts, tenant, actor, obj, w) in enumerate(events)
    ]


class Pipeline:
    """One events partition, two updates partitions, messages through the real codec."""

    def __init__(self, budget: int) -> None:
        self.source = Stage1Partition(0, cfg(budget))
        self.stage2 = [Stage2Partition(k, 1, SIG, ReplyConfig()) for k in range(2)]
        self.signals: dict[tuple[str, ...], SignalRecord] = {}
        self.updates_sent = 0
        self.degraded = 0
        self.over: list[str] = []

    def feed(self, batch: list[tuple[int, bytes | None]], wall_ms: int = FAR) -> list[Any]:
        out = self.source.process(batch, wall_ms, 0.0)
        self.degraded += out.degraded
        self.over += out.over_budget
        for k, message in out.messages.items():
            self.updates_sent += len(message.get("u", ()))
            for data in encode_batch(message):
                self.take(self.stage2[k].apply(loads(data)).signals)
        return out.writes

    def close(self) -> None:
        for proc in self.stage2:
            self.take(proc.apply({"p": 0, "wm": FAR}).signals)

    def take(self, signals: list[SignalRecord]) -> None:
        for s in signals:
            key = (s["tenant"], s["role"], s["entity_id"], str(s["window_seconds"]))
            self.signals[(*key, str(s["window_start"]))] = s  # the highest version wins


def run(budget: int, batch: int) -> Pipeline:
    p = Pipeline(budget)
    events: list[tuple[int, bytes | None]] = [(offset, data) for offset, data, _ in workload()]
    for i in range(0, len(events), batch):
        p.feed(events[i : i + batch])
    p.close()
    return p


def reference() -> dict[tuple[str, ...], tuple[int, float, float]]:
    """Count, weight sum and maximum per (tenant, role, entity, window size, start)."""
    acc: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0, 0.0, float("-inf")])
    for _, _, (tenant, actor, obj, ts, w) in workload():
        for role, entity in (("actor", actor), ("object", obj), ("tag", "t")):
            for size in SIG.window_sizes_ms:
                a = acc[(tenant, role, entity, str(size // 1000), str(ts - ts % size))]
                a[0] += 1
                a[1] += w
                a[2] = max(a[2], w)
    return {k: (int(a[0]), a[1], a[2]) for k, a in acc.items()}


def measures(p: Pipeline) -> dict[tuple[str, ...], tuple[int, float, float]]:
    return {k: (s["event_count"], s["weight_sum"], s["weight_max"]) for k, s in p.signals.items()}


def test_a_flooding_tenant_is_counted_exactly_and_the_others_are_untouched() -> None:
    exact = run(budget=0, batch=500)
    budgeted = run(budget=BUDGET, batch=500)
    # every tenant, the flooding one too: counts, sums and maxima of every window
    got, want = measures(budgeted), reference()
    assert set(got) == set(want)
    for key, (count, total, top) in want.items():
        assert got[key][0] == count and got[key][2] == top, key
        assert abs(got[key][1] - total) < 1e-6 * max(1.0, total), key
    # the quiet tenants' signals are exactly those of the run without a budget, gaps included
    quiet = [k for k in exact.signals if k[0] != "noisy"]
    assert quiet and all(budgeted.signals[k] == exact.signals[k] for k in quiet)
    # the flood went over its budget once per minute of the episode, logged once
    assert budgeted.over == ["noisy"]
    assert budgeted.degraded > 20_000
    # and cost stage 2 a fraction of the updates (three entities an event without a budget)
    assert budgeted.updates_sent < exact.updates_sent / 3
    # its gaps are between busy seconds: still ordered, never more than the exact ones count
    noisy = [k for k in exact.signals if k[0] == "noisy"]
    for k in noisy:
        assert budgeted.signals[k]["gap_count"] <= exact.signals[k]["gap_count"]


def test_the_degraded_result_does_not_depend_on_the_batching() -> None:
    """A run of one second split across two stage 1 batches is one point in the gap
    sequence, as when it came in one batch: replaying or re-batching gives the same signals."""
    one = run(budget=BUDGET, batch=10_000)
    many = run(budget=BUDGET, batch=97)
    assert one.signals == many.signals


def test_a_restart_mid_run_neither_loses_nor_counts_twice() -> None:
    """Stage 1 crashes after stage 2 applied a batch but before its own state was saved: the
    partition is read again from the last save with other batch bounds, so re-sent runs
    overlap what stage 2 applied; their offsets let stage 2 take only the rest."""
    events: list[tuple[int, bytes | None]] = [(offset, data) for offset, data, _ in workload()]
    p = Pipeline(BUDGET)
    saved: dict[str, bytes] = {}
    cut = 0
    for i in range(0, 12_000, 400):
        for key, value in p.feed(events[i : i + 400]):
            if value is None:
                saved.pop(key, None)
            else:
                saved[key] = value
        cut = i + 400
    p.feed(events[cut : cut + 1_000])  # applied by stage 2, never saved by stage 1
    p.source = Stage1Partition(0, cfg(BUDGET))
    p.source.restore(sorted(saved.items()))
    for i in range(cut, len(events), 333):
        p.feed(events[i : i + 333])
    p.close()
    assert p.signals == run(budget=BUDGET, batch=400).signals  # gaps of the degraded too


def test_budget_counts_per_minute_and_saves_only_what_can_matter() -> None:
    b = Budget(per_minute=3, lateness_ms=5 * MIN)
    crossed: list[str] = []
    assert [b.take("a", T0 + i, crossed) for i in range(5)] == [True, True, True, False, False]
    assert crossed == ["a"]
    b.take("a", T0 + MIN, crossed)
    assert [b.take("a", T0 + MIN, crossed) for _ in range(3)] == [True, True, False]
    assert crossed == ["a"]  # over the minute before as well: the same episode
    assert b.take("b", T0, crossed) and b.over() == {"a"}
    b.expire(T0 + 20 * MIN)
    assert b.over() == set() and b.saved() == []
    many = Budget(per_minute=8, lateness_ms=5 * MIN)
    for t in range(MAX_SAVED + 50):
        for _ in range(2):
            many.take(f"t{t}", T0, crossed)
    assert len(many.saved()) == MAX_SAVED
    again = Budget(per_minute=8, lateness_ms=5 * MIN)
    again.restore(many.saved())
    assert again.saved() == many.saved()


def test_a_run_of_a_whole_batch_stays_under_the_message_limit() -> None:
    """The biggest run: a batch's maximum of events (10,000) of one entity, all degraded,
    with offsets and weights at their longest, and spread over the lateness in time."""
    source = Stage1Partition(0, cfg(1))
    base = 2**50
    rng = random.Random(1)
    batch: list[tuple[int, bytes | None]] = [
        (base + i, wire(i, T0 + rng.randrange(5 * MIN), "noisy", "bot", "o", rng.random() * 1e6))
        for i in range(10_000)
    ]
    out = source.process(batch, FAR, 0.0)
    assert out.degraded == 10_000 - 5  # one a minute taken exactly
    sizes = [len(data) for m in out.messages.values() for data in encode_batch(m)]
    assert max(sizes) <= MAX_MESSAGE_BYTES, sizes

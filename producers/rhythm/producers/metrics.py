"""Prometheus metrics of the client library.

The hot path bumps plain integers on the client (no lock: delivery reports arrive on one
thread at a time, and `track()` counts under the GIL); a collector turns every live client's
numbers into counter and gauge families when Prometheus scrapes. That keeps the per-event
cost to an integer add instead of a locked `Counter.inc()` per event.
Labels are bounded: `reason` comes from a fixed set, never from an event. The registry is
the caller's (`Client(registry=...)`), by default the application's default registry.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections import Counter as Tally
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


@dataclass
class ClientStats:
    """Counts of one client since it was created."""

    tracked: int = 0
    delivered: int = 0
    failed: Tally[str] = field(default_factory=Tally)
    dropped: Tally[str] = field(default_factory=Tally)
    # Delivery latency as a histogram kept in plain ints (the last slot is +Inf).
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    def observe_latency(self, seconds: float) -> None:
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def absorb(self, other: ClientStats) -> None:
        """Add a closed client's counts to these (counters must not go down)."""
        self.tracked += other.tracked
        self.delivered += other.delivered
        self.failed.update(other.failed)
        self.dropped.update(other.dropped)
        for i, n in enumerate(other.latency_counts):
            self.latency_counts[i] += n
        self.latency_sum += other.latency_sum


class _HasStats(Protocol):
    stats: ClientStats

    def queue_depth(self) -> int: ...


class _RetiredStats:
    """Stands for every client that is gone: its counts stay in the totals."""

    def __init__(self, stats: ClientStats) -> None:
        self.stats = stats

    def queue_depth(self) -> int:
        return 0


class _ClientCollector(Collector):
    def __init__(self) -> None:
        self._clients: weakref.WeakSet[_HasStats] = weakref.WeakSet()
        # The stats object each live client had when last seen, by id(client): when a client
        # is collected its final counts move to `_retired`, so the totals never go down.
        self._stats: dict[int, ClientStats] = {}
        self._retired = _RetiredStats(ClientStats())
        # Re-entrant: a client's finalizer (`_retire`) may run from a garbage collection
        # that starts inside `collect()`'s locked section, on the same thread.
        self._lock = threading.RLock()

    def add(self, client: _HasStats) -> None:
        self._clients.add(client)
        with self._lock:
            self._stats[id(client)] = client.stats
        weakref.finalize(client, self._retire, id(client))

    def _retire(self, client_id: int) -> None:
        with self._lock:
            stats = self._stats.pop(client_id, None)
            if stats is not None:
                self._retired.stats.absorb(stats)

    def collect(self) -> Iterator[Metric]:
        tracked = CounterMetricFamily(
            "rhythm_client_events_tracked", "Events accepted by track()/send()."
        )
        delivered = CounterMetricFamily(
            "rhythm_client_events_delivered", "Events acknowledged by Kafka."
        )
        failed = CounterMetricFamily(
            "rhythm_client_events_failed",
            "Events given up after retries, by reason.",
            labels=["reason"],
        )
        dropped = CounterMetricFamily(
            "rhythm_client_events_dropped",
            "Events not queued (queue full, fork, shutdown), by reason.",
            labels=["reason"],
        )
        depth = GaugeMetricFamily(
            "rhythm_client_queue_depth", "Events waiting in the send queue for delivery."
        )
        live = list(self._clients)
        with self._lock:
            for c in live:  # a client may start over with new stats (after a fork)
                self._stats[id(c)] = c.stats
            retired = _RetiredStats(ClientStats())
            retired.stats.absorb(self._retired.stats)
        clients: list[_HasStats] = [*live, retired]
        tracked.add_metric([], sum(c.stats.tracked for c in clients))
        delivered.add_metric([], sum(c.stats.delivered for c in clients))
        for family, attr in ((failed, "failed"), (dropped, "dropped")):
            totals: Tally[str] = Tally()
            for c in clients:
                totals.update(getattr(c.stats, attr))
            for reason, count in sorted(totals.items()):
                family.add_metric([reason], count)
        depth.add_metric([], sum(c.queue_depth() for c in clients))
        yield from (tracked, delivered, failed, dropped, depth, _latency(clients))


def _latency(clients: list[_HasStats]) -> HistogramMetricFamily:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    total = 0.0
    for c in clients:
        counts = [a + b for a, b in zip(counts, c.stats.latency_counts, strict=True)]
        total += c.stats.latency_sum
    cumulative, buckets = 0, []
    for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], counts, strict=True):
        cumulative += count
        buckets.append((bound, float(cumulative)))
    family = HistogramMetricFamily(
        "rhythm_client_delivery_latency_seconds",
        "Time from produce() to the broker's acknowledgement, as librdkafka measured it.",
    )
    family.add_metric([], buckets, total)
    return family


_COLLECTORS: dict[int, _ClientCollector] = {}  # by id() of the registry
_COLLECTORS_LOCK = threading.Lock()


def collector_for(registry: CollectorRegistry | None = None) -> _ClientCollector:
    """The collector of every client counted in `registry` (the application's default
    registry when None: where a library's metrics are expected), registered with it once."""
    registry = REGISTRY if registry is None else registry
    with _COLLECTORS_LOCK:
        collector = _COLLECTORS.get(id(registry))
        if collector is None:
            collector = _COLLECTORS[id(registry)] = _ClientCollector()
            registry.register(collector)
        return collector

"""The sink's Prometheus metrics, in a registry of its own (one per sink, so tests and
embedding applications can run several). Labels are bounded: tables, the three topics' kinds,
dead-letter reasons (a fixed list), ClickHouse error names, and assigned partitions."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from rhythm.runtime.health import Progress
from rhythm.runtime.metrics import part_registry

__all__ = ["BulkHistogram", "SinkMetrics"]

FRESHNESS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


class BulkHistogram(Collector):
    """A histogram fed a whole batch at once (one observation per row would cost more than
    writing the row). Same exposition as prometheus_client's Histogram."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._doc = documentation
        self._labelnames = list(labelnames)
        self._bounds = list(buckets)
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        registry.register(self)

    def observe_many(self, values: Iterable[float], *labels: str) -> None:
        counts = [0] * (len(self._bounds) + 1)
        total = 0.0
        for value in values:
            counts[bisect.bisect_left(self._bounds, value)] += 1
            total += value
        with self._lock:
            series = self._series.setdefault(tuple(labels), ([0] * len(counts), [0.0]))
            for i, n in enumerate(counts):
                series[0][i] += n
            series[1][0] += total

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)
        with self._lock:
            for labels, (counts, total) in self._series.items():
                cumulative, buckets = 0, []
                for bound, n in zip([*self._bounds, float("inf")], counts, strict=True):
                    cumulative += n
                    buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
                family.add_metric(list(labels), buckets, total[0])
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)


class SinkMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, stall_after_s: float = 60.0
    ) -> None:
        self.registry = registry if registry is not None else part_registry()
        #: what /healthz and /readyz tell (written offsets vs end offsets; health.py)
        self.progress = Progress("sink", stall_after_s)
        r = self.registry
        self.rows_written = Counter(
            "rhythm_sink_rows_written", "Rows acknowledged by ClickHouse.", ["table"], registry=r
        )
        self.batches = Counter(
            "rhythm_sink_batches", "Batches written (committed).", ["topic"], registry=r
        )
        self.batch_rows = Histogram(
            "rhythm_sink_batch_rows",
            "Messages per batch.",
            ["topic"],
            buckets=(1, 10, 100, 1000, 5000, 10_000, 20_000, 50_000, 100_000),
            registry=r,
        )
        self.insert_seconds = Histogram(
            "rhythm_sink_insert_seconds",
            "Time ClickHouse took to acknowledge an insert.",
            ["table"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.retries = Counter(
            "rhythm_sink_retries",
            "Failed attempts that were retried, by target (a table, kafka_commit, "
            "dead_letter_topic) and reason (ClickHouse error name or exception type).",
            ["target", "reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "rhythm_sink_dead_letters",
            "Messages written to dead letters.",
            ["topic", "reason"],
            registry=r,
        )
        self.lag = Gauge(
            "rhythm_sink_consumer_lag",
            "Messages in the partition not yet written (high watermark - committed).",
            ["topic", "partition"],
            registry=r,
        )
        self.freshness = BulkHistogram(
            "rhythm_sink_freshness_seconds",
            "From a row's event time (occurred_at, last_event_at, fired_at) to its insert "
            "being acknowledged.",
            ["table"],
            FRESHNESS_BUCKETS,
            r,
        )
        self.buffered_rows = Gauge(
            "rhythm_sink_buffered_rows", "Messages held (open, waiting, writing).", registry=r
        )
        self.buffered_rows_max = Gauge(
            "rhythm_sink_buffered_rows_max", "Most messages held at once so far.", registry=r
        )
        self.buffered_bytes = Gauge("rhythm_sink_buffered_bytes", "Message bytes held.", registry=r)
        self.paused_partitions = Gauge(
            "rhythm_sink_paused_partitions", "Partitions paused for back-pressure.", registry=r
        )

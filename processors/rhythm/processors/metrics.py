"""Prometheus metrics of the processors. Labels are bounded: partition numbers and fixed
reasons, never an entity, tenant or anything an event carries."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from rhythm.processors.partition import Output, PartitionProcessor
from rhythm.processors.stage1 import Stage1Output

EVENTS_IN = Counter(
    "rhythm_processor_events_total", "Events taken by stage 1 (after deduplication).", ["partition"]
)
DUPLICATES = Counter(
    "rhythm_processor_duplicates_total",
    "Messages skipped as already counted, by stage (1: same event_id, 2: same offset).",
    ["stage"],
)
DEAD_LETTERS = Counter(
    "rhythm_processor_dead_letters_total", "Events refused by stage 1, by reason.", ["reason"]
)
LATE = Counter(
    "rhythm_processor_late_events_total",
    "Entity updates that arrived behind the watermark, by outcome (corrected or too_late).",
    ["outcome"],
)
SIGNALS = Counter("rhythm_processor_signals_total", "Window signals emitted (all versions).")
ALERTS = Counter("rhythm_processor_alerts_total", "Alerts emitted, by kind.", ["kind"])
WATERMARK = Gauge(
    "rhythm_processor_watermark_seconds",
    "Stage 1: newest event time per source partition (epoch seconds).",
    ["partition"],
)
EVENT_TIME_LAG = Gauge(
    "rhythm_processor_event_time_lag_seconds",
    "Wall clock minus the source partition's watermark.",
    ["partition"],
)
STAGE2_WATERMARK = Gauge(
    "rhythm_processor_stage2_watermark_seconds",
    "Stage 2: the watermark windows close on (min over source partitions).",
    ["partition"],
)
OPEN_WINDOWS = Gauge(
    "rhythm_processor_open_windows", "Entity windows held in state.", ["partition"]
)


class ProcessorMetrics:
    def stage1(self, partition: int, out: Stage1Output, watermark: int, now: float) -> None:
        label = str(partition)
        EVENTS_IN.labels(label).inc(out.events)
        if out.duplicates:
            DUPLICATES.labels("1").inc(out.duplicates)
        for dead in out.dead_letters:
            DEAD_LETTERS.labels(dead.reason).inc()
        if watermark > 0:
            WATERMARK.labels(label).set(watermark / 1000)
            EVENT_TIME_LAG.labels(label).set(now - watermark / 1000)

    def stage2(self, partition: int, out: Output) -> None:
        if out.duplicates:
            DUPLICATES.labels("2").inc(out.duplicates)
        if out.late:
            LATE.labels("corrected").inc(out.late)
        if out.too_late:
            LATE.labels("too_late").inc(out.too_late)
        if out.signals:
            SIGNALS.inc(len(out.signals))
        for alert in out.alerts:
            ALERTS.labels(alert["kind"]).inc()

    def partition_state(self, partition: int, proc: PartitionProcessor) -> None:
        if proc.watermark > 0:
            STAGE2_WATERMARK.labels(str(partition)).set(proc.watermark / 1000)
        OPEN_WINDOWS.labels(str(partition)).set(proc.open_windows())

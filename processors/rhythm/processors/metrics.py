"""Prometheus metrics of the processors. Labels are bounded: partition numbers and fixed
reasons, never an entity, tenant or anything an event carries. One registry per worker
(`ProcessorMetrics.registry`), served by its health server."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rhythm.processors import faust_private
from rhythm.processors.ends import EndOffsets
from rhythm.processors.stage1 import Stage1Output
from rhythm.processors.stage2 import Stage2Output, Stage2Partition
from rhythm.processors.tenants import TenantPartitions
from rhythm.runtime.health import Progress
from rhythm.runtime.metrics import part_registry
from rhythm.runtime.offsets import lag
from rhythm.schemas.topics import STAGE1, STAGE2


class ProcessorMetrics:
    """The agents' counters, plus the worker's progress (what /healthz and /readyz tell)."""

    def __init__(
        self,
        stall_after_s: float = 60.0,
        check_ends_s: float = 5.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = r = registry if registry is not None else part_registry()
        self.events_in = Counter(
            "rhythm_processor_events_total",
            "Events taken by stage 1 (after deduplication).",
            ["partition"],
            registry=r,
        )
        self.duplicates = Counter(
            "rhythm_processor_duplicates_total",
            "Messages skipped as already counted, by stage (stage1: same event_id, stage2: same "
            "offset).",
            ["stage"],
            registry=r,
        )
        self.dead_letters = Counter(
            "rhythm_processor_dead_letters_total",
            "Messages refused (events by stage 1, updates stage 2 cannot apply), by reason.",
            ["reason"],
            registry=r,
        )
        self.late = Counter(
            "rhythm_processor_late_events_total",
            "Entity updates that arrived behind the watermark, by outcome (corrected, too_late: "
            "lost to signals, routed: their events went to the history lane).",
            ["outcome"],
            registry=r,
        )
        self.norms = Counter(
            "rhythm_processor_norms_total",
            "Entities' silence norms handed from the history lane to the live lane "
            "(outcome handed: sent by the history lane; adopted, combined: taken by the live "
            "lane; overlap, expired, no_rule: left, see processors/README.md).",
            ["outcome"],
            registry=r,
        )
        self.reply_norms = Counter(
            "rhythm_processor_reply_norms_total",
            "Threads' finished waits (the unanswered rule's reply norms) handed from the "
            "history lane to the live lane, in threads (outcome handed: sent by the history "
            "lane; taken: joined the live lane's norms; overlap, expired: left, see "
            "processors/README.md).",
            ["outcome"],
            registry=r,
        )
        self.routed = Counter(
            "rhythm_processor_routed_events_total",
            "Events the live lane would have dropped as too late, sent to the history lane "
            "(processors/lanes.py) instead.",
            registry=r,
        )
        self.copies = Counter(
            "rhythm_processor_history_copies_total",
            "The history lane's input that is not history of its own (processors/copies.py), "
            "by kind: copies of stored events and notes of an entity's previous event taken "
            "in (stage 1), messages re-published by the expansion of routed events, and "
            "stored next events put on the later topic to import again (next_to_later); "
            "tenants rewound and their stored events re-sent whole (rewind, replay).",
            ["kind"],
            registry=r,
        )
        self.copies_missed = Gauge(
            "rhythm_processor_history_copies_missed",
            "Batches of routed events the history lane used without their windows' stored "
            "events since it started (the sink or the store did not answer in time).",
            registry=r,
        )
        self.unextended = Gauge(
            "rhythm_processor_history_unextended_keys",
            "Entity keys of routed events whose next stored event could not be looked up (the "
            "live lane's watermark unknown), since the worker started: that next window keeps "
            "the live lane's gap (ARCHITECTURE.md, the limits).",
            registry=r,
        )
        self.holes = Counter(
            "rhythm_processor_offset_holes_total",
            "Runs of input offsets the consumer skipped and the worker read again (see holes.py), "
            "by the stage whose input it was.",
            ["stage"],
            registry=r,
        )
        self.hot = Counter(
            "rhythm_processor_hot_keys_total",
            "Keys that became hot: more not-yet-final events than the cap (entity: max_pending; "
            "thread: its messages within the lateness), by kind.",
            ["kind"],
            registry=r,
        )
        self.early = Counter(
            "rhythm_processor_early_final_events_total",
            "Events of hot entities made final before the watermark passed them by the lateness.",
            registry=r,
        )
        self.evicted = Counter(
            "rhythm_processor_evicted_keys_total",
            "Entities and threads forgotten after their time to live (tombstones in the "
            "changelog).",
            registry=r,
        )
        self.degraded = Counter(
            "rhythm_processor_degraded_events_total",
            "Events of tenants over their budget, counted exactly but aggregated per entity and "
            "second (see budget.py).",
            registry=r,
        )
        self.tenants_over_budget = Gauge(
            "rhythm_processor_tenants_over_budget",
            "Tenants over their budget in a minute of event time still counted, per source "
            "partition (names are in the log: tenants are never labels).",
            ["partition"],
            registry=r,
        )
        self.signals = Counter(
            "rhythm_processor_signals_total", "Window signals emitted (all versions).", registry=r
        )
        self.alerts = Counter(
            "rhythm_processor_alerts_total", "Alerts emitted, by kind.", ["kind"], registry=r
        )
        self.watermark = Gauge(
            "rhythm_processor_watermark_seconds",
            "Stage 1: newest event time per source partition (epoch seconds).",
            ["partition"],
            registry=r,
        )
        self.event_time_lag = Gauge(
            "rhythm_processor_event_time_lag_seconds",
            "Wall clock minus the source partition's watermark.",
            ["partition"],
            registry=r,
        )
        self.stage2_watermark = Gauge(
            "rhythm_processor_stage2_watermark_seconds",
            "Stage 2: the watermark windows close on (min over source partitions).",
            ["partition"],
            registry=r,
        )
        self.open_windows = Gauge(
            "rhythm_processor_open_windows",
            "Entity windows held in state.",
            ["partition"],
            registry=r,
        )
        self.windows_closed = Counter(
            "rhythm_processor_windows_closed_total",
            "Windows closed (emitted with version 1).",
            registry=r,
        )
        self.windows_corrected = Counter(
            "rhythm_processor_windows_corrected_total",
            "Closed windows emitted again, corrected by late events (version > 1).",
            registry=r,
        )
        self.committed = Gauge(
            "rhythm_processor_committed_offset",
            "The offset the consumer group committed (next to read), per assigned partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "rhythm_processor_consumer_lag",
            "Messages not yet committed: the partition's end offset minus the committed offset.",
            ["topic", "partition"],
            registry=r,
        )
        self.recovery = Histogram(
            "rhythm_processor_recovery_seconds",
            "From losing readiness (start, rebalance) to tables recovered and agents running.",
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.recovering = Gauge(
            "rhythm_processor_recovery_in_progress_seconds",
            "How long the recovery under way has lasted (0 when none is).",
            registry=r,
        )
        self.progress = Progress("processors", stall_after_s)
        self.check_ends_s = check_ends_s
        self._next_ends = 0.0
        self._labelled: set[tuple[str, int]] = set()
        self._recovery_from: float | None = time.monotonic()  # starting is a recovery

    async def watch(self, app: Any, ready: bool, topics: set[str], ends: EndOffsets) -> None:
        """On a timer in the worker's event loop: readiness, recovery time, committed
        offsets, and (every `check_ends_s`) the end offsets, asked from the broker by `ends`
        (its own client: see ends.py for why not Faust's consumer). Only for the source
        `topics` (not the tables' changelogs), and the consumer is not touched before the
        worker is ready: `app.consumer` built early subscribes before Faust has created the
        changelog topics, ignores them for good, and stage 2 then crashes with
        PartitionsMismatch."""
        now = time.monotonic()
        self.progress.beat()
        self.progress.set_ready(ready)
        if not ready:
            if self._recovery_from is None:
                self._recovery_from = now
            self.recovering.set(now - self._recovery_from)
            return
        if self._recovery_from is not None:
            self.recovery.observe(now - self._recovery_from)
            self._recovery_from = None
            self.recovering.set(0)
        consumer = app.consumer
        assigned = {tp for tp in consumer.assignment() if tp.topic in topics}
        keys = {(tp.topic, tp.partition) for tp in assigned}
        self.progress.assigned(keys)  # revoked partitions are another worker's now
        for topic, partition in self._labelled - keys:
            for gauge in (self.committed, self.consumer_lag):
                with contextlib.suppress(KeyError):
                    gauge.remove(topic, str(partition))
        self._labelled = keys
        committed: dict[tuple[str, int], int] = {}
        for tp, offset in faust_private.committed_offsets(consumer).items():
            if offset is not None and (tp.topic, tp.partition) in keys:
                committed[(tp.topic, tp.partition)] = int(offset)
        for (topic, partition), offset in committed.items():
            self.committed.labels(topic, str(partition)).set(offset)
            self.progress.done(topic, partition, offset)
        if not keys or now < self._next_ends:
            return
        self._next_ends = now + self.check_ends_s
        for (topic, partition), end in (await ends.ask(sorted(keys))).items():
            self.progress.end(topic, partition, end)
            offset = committed.get((topic, partition))
            if offset is not None:
                self.consumer_lag.labels(topic, str(partition)).set(lag(end, offset))

    def stage1(self, partition: int, out: Stage1Output, watermark: int, now: float) -> None:
        label = str(partition)
        self.events_in.labels(label).inc(out.events)
        if out.duplicates:
            self.duplicates.labels(STAGE1).inc(out.duplicates)
        if out.degraded:
            self.degraded.inc(out.degraded)
        if out.routed:
            self.routed.inc(len(out.routed))
        if out.copies:
            self.copies.labels("copy").inc(out.copies)
        if out.notes:
            self.copies.labels("note").inc(out.notes)
        if out.replays:
            self.copies.labels("replay").inc(out.replays)
        if out.rewinds:
            self.copies.labels("rewind").inc(out.rewinds)
        for dead in out.dead_letters:
            self.dead_letters.labels(dead.reason).inc()
        if watermark > 0:
            self.watermark.labels(label).set(watermark / 1000)
            self.event_time_lag.labels(label).set(now - watermark / 1000)

    def expanded(self, routed: int, added: int, missed: int, unextended: int, later: int) -> None:
        self.copies.labels("expanded_routed").inc(routed)
        self.copies.labels("expansion_added").inc(added)
        self.copies.labels("next_to_later").inc(later)
        self.copies_missed.set(missed)
        self.unextended.set(unextended)

    def over_budget(self, partition: int, tenants: int) -> None:
        self.tenants_over_budget.labels(str(partition)).set(tenants)

    def hole(self, stage: str) -> None:
        self.holes.labels(stage).inc()

    def dead_letter(self, reason: str) -> None:
        self.dead_letters.labels(reason).inc()

    def stage2(self, partition: int, out: Stage2Output) -> None:
        if out.duplicates:
            self.duplicates.labels(STAGE2).inc(out.duplicates)
        if out.late:
            self.late.labels("corrected").inc(out.late)
        if out.too_late:
            self.late.labels("too_late").inc(out.too_late)
        if out.routed:
            self.late.labels("routed").inc(out.routed)
        if out.early:
            self.early.inc(out.early)
        if out.hot:
            self.hot.labels("entity").inc(len(out.hot))
        if out.hot_threads:
            self.hot.labels("thread").inc(len(out.hot_threads))
        if out.evicted:
            self.evicted.inc(out.evicted)
        if out.signals:
            self.signals.inc(len(out.signals))
            closed = sum(1 for signal in out.signals if signal.get("version") == 1)
            self.windows_closed.inc(closed)
            self.windows_corrected.inc(len(out.signals) - closed)
        for alert in out.alerts:
            self.alerts.labels(alert["kind"]).inc()
        for outcome, n in out.norms_taken.items():
            self.norms.labels(outcome).inc(n)
        for outcome, n in out.replies_taken.items():
            self.reply_norms.labels(outcome).inc(n)

    def norms_handed(self, entities: int, threads: int) -> None:
        if entities:
            self.norms.labels("handed").inc(entities)
        if threads:
            self.reply_norms.labels("handed").inc(threads)

    def partition_state(self, partition: int, proc: Stage2Partition | TenantPartitions) -> None:
        if proc.watermark > 0:
            self.stage2_watermark.labels(str(partition)).set(proc.watermark / 1000)
        self.open_windows.labels(str(partition)).set(proc.open_windows())

"""The Faust application: two agents, two tables, one timer. All logic lives in the pure
modules (stage1.py, partition.py); this file is the I/O around them.

Per batch, in this order (see ARCHITECTURE.md, "exactly once per key"):
1. run the pure step for each source partition in the batch;
2. send its messages and wait until Kafka acknowledged them;
3. only then write the table keys it changed (each key one write, to the changelog partition
   of the partition it belongs to).
A crash between 2 and 3 re-sends on restart (harmless: same keys, same versions, and stage 2
skips by offset); a crash before 2 loses nothing (nothing was saved as done).
Faust's `on_window_close` is not used: it closes windows on wall-clock time, drops windows
when a worker owns several partitions and never closes windows restored from the changelog.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import faust
from faust.types import TP, EventT

from rhythm.processors import copies, faust_private
from rhythm.processors.codec import dumps, encode_batch, loads
from rhythm.processors.connection import broker_urls, credentials
from rhythm.processors.ends import EndOffsets
from rhythm.processors.expansion import Expansion
from rhythm.processors.explode import partition_for
from rhythm.processors.holes import OffsetGuard
from rhythm.processors.lanes import signal_version
from rhythm.processors.lean_monitor import LeanMonitor
from rhythm.processors.messages import HANDOFF, NormsUpdate, RepliesUpdate, UpdatesMessage
from rhythm.processors.metrics import ProcessorMetrics
from rhythm.processors.outbox import Outbox
from rhythm.processors.partitioner import partition_of
from rhythm.processors.recovery import HoleRecovery
from rhythm.processors.settings import ProcessorSettings
from rhythm.processors.stage1 import (
    SKIP,
    DeadLetter,
    Stage1Config,
    Stage1Output,
    Stage1Partition,
    is_state_key,
    rewind_mark,
    split_at_rewinds,
)
from rhythm.processors.stage2 import WATERMARKS_PREFIX, Stage2Partition
from rhythm.processors.tenants import TenantPartitions
from rhythm.schemas import dead_letters
from rhythm.schemas.keys import SEP, display, signal_key
from rhythm.schemas.outputs import AlertRecord, SignalRecord, alert_id
from rhythm.schemas.topics import (
    HISTORY_KEYS_HEADER,
    HISTORY_KIND_HEADER,
    HISTORY_LANE,
    KIND_COPY,
    KIND_NEXT,
    KIND_NOTE,
    KIND_REPLAY,
    KIND_REWIND,
    KIND_ROUTED,
    STAGE1,
    STAGE2,
    changelog_topic,
)

log = logging.getLogger("rhythm.processors")


class Processors:
    """Builds the Faust app for one worker and holds the per-partition state objects."""

    def __init__(self, settings: ProcessorSettings, events_partitions: int) -> None:
        faust_private.check_version()
        self.settings = settings
        self.events_partitions = events_partitions
        self.metrics = ProcessorMetrics(settings.stall_after_s, settings.health_check_s)
        self._ends = EndOffsets(
            settings.kafka,
            f"{settings.app_id}-health",
            timeout_s=settings.health_check_s,
            app_group=settings.app_id,
        )
        self.stage1_cfg = Stage1Config(
            updates_partitions=settings.updates_partitions,
            dedup_horizon_ms=int((settings.lateness_s + settings.late_retention_s) * 1000),
            max_future_ms=int(settings.max_future_s * 1000),
            idle_after_s=settings.idle_after_s,
            tenant_budget=settings.tenant_budget_per_min,
            lateness_ms=int(settings.lateness_s * 1000),
            window_sizes_ms=tuple(w * 1000 for w in settings.window_seconds),
            late_retention_ms=int(settings.late_retention_s * 1000),
            route=settings.routes,
            follow_clock=settings.lane != HISTORY_LANE,
            takes_copies=settings.lane == HISTORY_LANE,
            tenant_time=settings.lane == HISTORY_LANE,
        )
        self.historical = settings.lane == HISTORY_LANE
        # The history lane brings in the stored events of a routed event's windows first.
        self.expansion = (
            Expansion(settings, self._tenant_finals)
            if self.historical and settings.store_url
            else None
        )
        self.guard: OffsetGuard[TP] = OffsetGuard()
        # Dead letters of saved state left out at restore: (changelog topic, dead letter).
        self._unreadable: list[tuple[str, DeadLetter]] = []
        self.sources: dict[int, Stage1Partition] = {}
        self.partitions: dict[int, Stage2Partition | TenantPartitions] = {}
        # The history lane: each stage-2 partition's tenants' watermarks, replaced whole
        # after each batch (read by the /tenants page's thread: `tenant_watermarks`).
        self._tenant_marks: dict[int, dict[str, int]] = {}
        self._tenant_epochs: dict[int, dict[str, int]] = {}  # likewise, stage 1's rewinds
        app = self.app = faust.App(
            settings.app_id,
            broker=broker_urls(settings.kafka),
            broker_credentials=credentials(settings.kafka),
            store="rocksdb://",
            datadir=str(settings.data_dir),
            topic_replication_factor=settings.replication_factor,
            topic_partitions=settings.updates_partitions,
            consumer_auto_offset_reset="earliest",
            web_enabled=settings.web_port > 0,
            web_port=settings.web_port or 6066,
            web_bind="127.0.0.1",
            producer_acks=-1,
            # Each batch sends its messages, then waits for their acks: a few ms of linger
            # makes them a few large produce requests instead of one socket write per message,
            # and state values (a few KB per entity) fit many to a batch.
            producer_linger=0.005,
            producer_max_batch_size=512 * 1024,
            broker_session_timeout=settings.session_timeout_s,
            consumer_group_instance_id=settings.instance_id,
            broker_commit_interval=settings.commit_interval_s,
            consumer_metadata_max_age_ms=int(settings.metadata_max_age_s * 1000),
            broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
            stream_buffer_maxsize=max(4096, settings.batch_max * 2),
            Monitor=LeanMonitor,  # Faust's per-message statistics feed only its web views
            producer_partitioner=partition_of,  # aiokafka's choice, in fewer Python steps
        )
        # Faust commits, for the two inputs, only what the agents finished without a gap
        # (holes.py, faust_private.py): its own choice steps over offsets it dropped.
        faust_private.guard_commits(
            app, {settings.events_topic, settings.updates_topic}, self.guard.commit_offset
        )
        self.events = app.topic(settings.events_topic, schema=_raw())
        self.updates = app.topic(
            settings.updates_topic,
            partitions=settings.updates_partitions,
            internal=True,
            schema=_raw(),
        )
        self.signals = app.topic(settings.signals_topic, schema=_raw())
        self.alerts = app.topic(settings.alerts_topic, schema=_raw())
        self.dead_letters = app.topic(settings.dead_letters_topic, schema=_raw())
        # The live lane's too-late events, as they came, to the history lane (lanes.py).
        self.history = app.topic(settings.history_topic, schema=_raw()) if settings.routes else None
        # The history lane's stored next events to import again later (expansion.py).
        self.later = (
            app.topic(settings.later_topic, schema=_raw()) if self.expansion is not None else None
        )
        # The history lane's learned norms, to the live lane's stage 2 (messages.py "n").
        self.handoff = (
            app.topic(settings.handoff_topic, schema=_raw()) if settings.hands_off else None
        )
        # Tables take their codecs from key_type/value_type (bytes -> "raw"), not a Schema.
        # One RocksDB database per partition, each with Faust's defaults of 3 x 64 MiB of
        # write buffers and a 2 GiB block cache: a worker building state grew by gigabytes
        # that a restarted one (empty buffers) did not. Bounded here, per database.
        rocksdb = {
            "write_buffer_size": settings.rocksdb_write_buffer_mb * 2**20,
            "max_write_buffer_number": 2,
            "block_cache_size": settings.rocksdb_block_cache_mb * 2**20,
        }
        self.stage1_table = app.Table(
            STAGE1,
            partitions=events_partitions,
            key_type=bytes,
            value_type=bytes,
            options=dict(rocksdb),
        )
        self.stage2_table = app.Table(
            STAGE2,
            partitions=settings.updates_partitions,
            key_type=bytes,
            value_type=bytes,
            options=dict(rocksdb),
        )
        # One agent per stage, of one shape: a batch per partition, up to the first offset
        # Faust never delivered, through the stage's pure step (see `_agent`).
        app.agent(self.events, name=STAGE1, concurrency=1)(
            self._agent(settings.events_topic, self._stage1_group)
        )
        app.agent(self.updates, name=STAGE2, concurrency=1)(
            self._agent(settings.updates_topic, self._stage2_group)
        )
        app.timer(settings.tick_s)(self._tick)
        if settings.metrics_port:  # /healthz, /readyz, lag, recovery (served by worker.py)
            app.timer(settings.health_tick_s)(self._watch)
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.recovery = HoleRecovery(app, settings, self.guard, self._ends, self.metrics)

    # -- stage 1 ---------------------------------------------------------------------------

    async def _batch(
        self,
        topic: str,
        events: Iterable[EventT[bytes]],
        process: Callable[[int, list[EventT[bytes]]], Awaitable[None]],
    ) -> None:
        """One `take_events` batch of an agent: per partition, the messages up to the first
        offset Faust never delivered go to `process` (in offset order); once it returned
        (messages acknowledged, table written) they may be committed. Faust's stream acks
        the whole batch afterwards, even when `process` raised: what is committed is the
        guard's, never Faust's acks (faust_private.guard_commits)."""
        for partition, arrived in _by_partition(events).items():
            if not self._owns(topic, partition) or not self._restored():
                _skipped(topic, partition, arrived)
                continue  # a rebalance took it or is under way: read again from the commit
            group = await self.recovery.deliverable(topic, partition, arrived)
            if not group:
                continue
            await process(partition, group)
            self.guard.done(TP(topic, partition), group[-1].message.offset)

    def _agent(
        self, topic: str, process: Callable[[int, list[EventT[bytes]]], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        """The loop of either stage's agent: batches of up to `batch_max` messages (or what
        came within `batch_within_s`), once the tables are ready, through `_batch`."""
        s = self.settings

        async def agent(stream: Any) -> None:  # faust's stubs lack take_events
            async for events in stream.take_events(s.batch_max, within=s.batch_within_s):
                await self._wait_ready()
                await self._batch(topic, events, process)

        return agent

    async def _stage1_group(self, partition: int, group: list[EventT[bytes]]) -> None:
        s = self.settings
        source = self._source(partition)
        if self._unreadable:
            await self._send_unreadable()
        batch = [(e.message.offset, e.message.value) for e in group]
        marks = await self._marks(group) if self.historical else None
        starts = split_at_rewinds([offset for offset, _ in batch], marks)
        for start, end in zip(starts, [*starts[1:], len(batch)], strict=True):
            now = time.time()
            out = source.process(batch[start:end], int(now * 1000), now, marks)
            await self._emit_stage1(partition, out, group[end - 1])
            self.metrics.stage1(partition, out, source.watermark, now)
        if source.tenant_epochs != self._tenant_epochs.get(partition, {}):
            self._tenant_epochs = {**self._tenant_epochs, partition: dict(source.tenant_epochs)}
        if source.budget is not None:
            self.metrics.over_budget(partition, len(source.budget.over()))
        for tenant in out.over_budget:
            log.warning(
                "tenant %r is over its budget in events partition %d (%d events a minute of "
                "event time): the rest of the minute is aggregated per entity and second",
                tenant, partition, s.tenant_budget_per_min,
            )  # fmt: skip

    async def _marks(self, group: list[EventT[bytes]]) -> dict[int, tuple[str, tuple[str, ...]]]:
        """The history lane's marks (stage1.Marks) from the headers; routed events are first
        re-published with the stored events of their windows (expansion.py) and skipped
        here: they come back expanded, behind their copies."""
        marks: dict[int, tuple[str, tuple[str, ...]]] = {}
        routed: list[EventT[bytes]] = []
        for event in group:
            kind, keys = _history_headers(event.message.headers)
            if kind == KIND_ROUTED and self.expansion is not None:
                routed.append(event)
                marks[event.message.offset] = (SKIP, ())
            elif kind in (KIND_COPY, KIND_NOTE):
                marks[event.message.offset] = (kind, keys)
            elif kind == KIND_REPLAY:
                marks[event.message.offset] = (kind, ())
            elif kind == KIND_REWIND:
                marks[event.message.offset] = rewind_mark(event.message.value or b"")
        if routed:
            assert self.expansion is not None
            expanded = await self.expansion.expand([e.message.value or b"" for e in routed])
            pending = [
                await self._send(self.events, value, partition=0, headers=list(extra))
                for _ts, value, extra in expanded.messages
            ]
            if expanded.following and self.later is not None:
                nexts = copies.headers(KIND_NEXT)
                pending += [
                    await self._send(self.later, value, partition=0, headers=list(nexts))
                    for _ts, value in expanded.following
                ]
            await asyncio.gather(*pending)
            x = self.expansion
            self.metrics.expanded(
                len(routed), len(expanded.messages) - len(routed), x.missed, x.unextended,
                len(expanded.following),
            )  # fmt: skip
        return marks

    async def _emit_stage1(
        self, partition: int, out: Stage1Output, event: EventT[bytes] | None
    ) -> None:
        pending: list[Awaitable[Any]] = []
        for k, message in out.messages.items():
            for data in encode_batch(message):
                pending.append(await self._send(self.updates, data, partition=k))
        for dead in out.dead_letters:
            pending.append(await self._send_dead(self.settings.events_topic, dead))
        if out.routed and self.history is not None:
            # aiokafka takes header values as bytes only
            routed: list[tuple[str, str | bytes | None]] = [
                (HISTORY_KIND_HEADER, KIND_ROUTED.encode())
            ]
            for value in out.routed:
                pending.append(await self._send(self.history, value, headers=routed))
        await asyncio.gather(*pending)
        if out.writes and event is not None:
            await self._save(self.stage1_table, event, out.writes)

    async def _save(
        self, table: Any, event: EventT[bytes], writes: Iterable[tuple[str, bytes | None]]
    ) -> None:
        """Write table keys (None: delete) to the changelog partition of `event`'s partition
        and the local store, and wait until Kafka acknowledged every changelog message.

        Not `table[key] = value`: that hands the changelog message to Faust's producer buffer
        and drops its future, and Faust's commit waits for that buffer only until 0.1 s pass
        without a message sent (`ProducerBuffer.flush_atmost`): under load, input offsets were
        committed whose state writes were still in the buffer, and a worker stopped (SIGTERM)
        or revoked then lost them or wrote them after the partition's next owner had restored
        the table. That owner resumed from the commit without those updates in its state:
        windows never emitted (make test-scale, workers leaving). Here the batch is acked, so
        committable, only once its state is in Kafka. `send_changelog` is Faust's public
        Collection API and is what `table[key] = value` calls; `table.data` is the store it
        then writes."""
        faust_private.set_current_event(event)  # the store's database for this partition
        partition = event.message.partition
        store = table.data
        sent: list[Awaitable[Any]] = []
        for key, value in writes:
            if value is None:
                if key in store:
                    sent.append(table.send_changelog(partition, key, None, value_serializer="raw"))
                    del store[key]
            else:
                sent.append(table.send_changelog(partition, key, value))
                store[key] = value
        await asyncio.gather(*sent)

    async def _send(
        self,
        topic: Any,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> Awaitable[Any]:
        """Hand one message to the producer; the result resolves when Kafka acknowledged it.
        Straight to Faust's producer (what Topic.send ends in): Topic.send first builds a
        FutureMessage, a debug log line, sensor calls and a done-callback per message, which
        cost about as much as computing a signal and which nothing here uses."""
        producer: Any = self.app.producer
        fut: Awaitable[Any] = await producer.send(
            topic.get_topic_name(), key, value, partition, None, headers
        )
        return fut

    def _source(self, partition: int) -> Stage1Partition:
        source = self.sources.get(partition)
        if source is None:
            source = self.sources[partition] = Stage1Partition(partition, self.stage1_cfg)
            with _restoring(STAGE1, partition):
                bad = source.restore(
                    [
                        (k, v)
                        for k, v in faust_private.table_items(self.stage1_table, partition)
                        if is_state_key(k, partition)
                    ]
                )
            self._unreadable_state(STAGE1, partition, bad)
        return source

    def _unreadable_state(
        self, table: str, partition: int, bad: list[tuple[str, bytes, str]]
    ) -> None:
        """Saved values that cannot be read are left out (the key starts afresh) and kept as
        dead letters with reason `invalid_state`, sent by the next batch of the agent."""
        for key, value, why in bad:
            detail = f"{table} key {key[:200]!r}: {why}"
            log.error("partition %d: unreadable saved state left out (%s)", partition, detail)
            self.metrics.dead_letter("invalid_state")
            dead = DeadLetter(
                "invalid_state", partition, -1, value, detail[:500], key.encode("utf-8", "replace")
            )
            self._unreadable.append((changelog_topic(self.settings.app_id, table), dead))

    async def _send_unreadable(self) -> None:
        pending = [await self._send_dead(topic, dead) for topic, dead in self._unreadable]
        self._unreadable.clear()
        await asyncio.gather(*pending)

    async def _send_dead(self, topic: str, dead: DeadLetter) -> Awaitable[Any]:
        """A refused message to the dead letters, as it came, why and where in its headers
        (rhythm.schemas.dead_letters)."""
        value, extra = dead_letters.cut(dead.value)
        return await self._send(
            self.dead_letters,
            value,
            key=dead.key,
            headers=dead_letters.headers(
                dead.reason, dead.detail, topic, dead.partition, dead.offset, extra=extra
            ),
        )

    def _ready(self) -> bool:
        """Tables hold every assigned partition's state: not during the recovery after a
        rebalance (state restored then would be partial, and lost when saved). Not keyed on
        `app.rebalancing`: seen staying set after a rebalance, which stalled the agents.
        The agents wait on this at the top of a batch; per partition they use `_restored`."""
        app: Any = self.app
        return not app.in_recovery and bool(app.tables.recovery.completed.is_set())

    def _restored(self) -> bool:
        """`_ready()`, and no rebalance under way: the state objects of a partition may be
        built from the tables (or used) only then. `recovery.completed` is never cleared once
        set and `in_recovery` is set only when the recovery task gets to it, after the new
        assignment is in place: between the two the idle tick built a newly assigned
        partition's stage-1 state from a table not yet recovered and kept it (no dedup
        records: a re-sent event counted twice, make test-scale). `tables.actives_ready`
        (TableManager's public flag) is cleared as a rebalance starts and set once the
        active tables are recovered. Not waited on at the top of a batch: the revocation
        waits for that batch's acks before the rebalance can go on (a deadlock); its
        messages are skipped un-acked instead."""
        app: Any = self.app
        return self._ready() and bool(getattr(app.tables, "actives_ready", True))

    async def _wait_ready(self) -> None:
        while not self._ready():
            await asyncio.sleep(0.05)

    def _owns(self, topic: str, partition: int) -> bool:
        return TP(topic, partition) in self.app.consumer.assignment()

    async def _tick(self) -> None:
        if not self._restored():
            return
        await self.recovery.reseek_quiet()
        now = time.time()
        mine = [
            tp for tp in self.app.consumer.assignment() if tp.topic == self.settings.events_topic
        ]
        if not mine:
            return
        # The end offsets the fetcher last saw (no broker round trip); where it has seen none
        # yet (just assigned, paused), ask the broker.
        known = {tp: self.app.consumer.highwater(tp) for tp in mine}
        unknown = [(tp.topic, tp.partition) for tp, end in known.items() if end is None]
        if unknown:  # our own client, not Faust's consumer thread (see ends.py)
            for (topic, partition), asked in (await self._ends.ask(unknown)).items():
                known[TP(topic, partition)] = asked
        for tp in mine:
            end = known.get(tp)
            if end is None:
                continue
            if not self._restored() or tp not in self.app.consumer.assignment():
                return  # a rebalance started during the awaits: no state from stale tables
            source = self._source(tp.partition)
            out = source.tick(end, int(now * 1000), now)
            if out is not None:
                pending = [
                    await self._send(self.updates, dumps(m), partition=k)
                    for k, m in out.messages.items()
                ]
                await asyncio.gather(*pending)

    async def _watch(self) -> None:
        topics = {self.settings.events_topic, self.settings.updates_topic}
        await self.metrics.watch(self.app, self._ready(), topics, self._ends)

    # -- stage 2 ---------------------------------------------------------------------------

    async def _stage2_group(self, partition: int, group: list[EventT[bytes]]) -> None:
        s = self.settings
        proc = self._partition(partition)
        if self._unreadable:
            await self._send_unreadable()
        signals: list[SignalRecord] = []
        alerts: list[AlertRecord] = []
        norms: list[NormsUpdate] = []
        replies: list[RepliesUpdate] = []
        pending: list[Awaitable[Any]] = []
        for event in group:
            value = event.message.value or b""
            try:
                out = proc.apply(loads(value))
            except Exception as exc:  # poison must not stop the partition
                dead = DeadLetter(
                    "invalid_update", partition, event.message.offset, value,
                    f"{type(exc).__name__}: {exc}"[:500],
                )  # fmt: skip
                log.error(
                    "%s[%d]@%d cannot be applied (%s): dead-lettered",
                    s.updates_topic, partition, dead.offset, dead.detail,
                )  # fmt: skip
                self.metrics.dead_letter(dead.reason)
                pending.append(await self._send_dead(s.updates_topic, dead))
                continue
            signals.extend(out.signals)
            alerts.extend(out.alerts)
            norms.extend(out.norms)
            replies.extend(out.replies)
            self.metrics.stage2(partition, out)
            for key in out.hot:
                log.warning(
                    "hot entity %r: over %d events not yet final; its oldest are made final "
                    "early (gaps exact while its events come in order)",
                    display(key), s.max_pending,
                )  # fmt: skip
            for key in out.hot_threads:
                log.warning(
                    "hot thread %r: over %d messages not yet final; its oldest are taken at "
                    "once, out of time order",
                    display(key), s.reply_config().max_pending,
                )  # fmt: skip
        producer = faust_private.kafka_producer(self.app)
        outbox = Outbox(producer, self.signals.get_topic_name())
        for signal in signals:
            if self.historical:
                signal["version"] = signal_version(HISTORY_LANE, signal["version"])
            outbox.add(signal_key(signal).encode(), dumps(signal))
        pending.extend(await outbox.send())
        pending.extend(await self._send_norms(norms, replies))
        outbox = Outbox(producer, self.alerts.get_topic_name())
        for alert in alerts:
            alert["alert_id"] = alert_id(alert)
            if self.historical:  # computed on history: stored, never delivered as a heads-up
                alert["historical"] = True
            outbox.add(alert["alert_id"].encode(), dumps(alert))
        pending.extend(await outbox.send())
        await asyncio.gather(*pending)
        await self._save(self.stage2_table, group[-1], proc.take_dirty())  # None: tombstone
        self.metrics.partition_state(partition, proc)
        if isinstance(proc, TenantPartitions):
            self._tenant_marks = {**self._tenant_marks, partition: proc.watermarks()}

    def tenant_watermarks(self) -> dict[str, Any]:
        """The history lane's `/tenants` page: each tenant's watermark in ms (the lowest over
        this worker's partitions; `rhythm backfill` rewinds a tenant for what is older, less
        the lateness), the partitions it is over, and each rewound tenant's epoch (stage 1's:
        the next rewind takes the one after)."""
        marks = self._tenant_marks
        lowest: dict[str, int] = {}
        for per in marks.values():
            for tenant, mark in per.items():
                lowest[tenant] = min(mark, lowest.get(tenant, mark))
        epochs: dict[str, int] = {}
        for rewound in self._tenant_epochs.values():
            for tenant, epoch in rewound.items():
                epochs[tenant] = max(epoch, epochs.get(tenant, 0))
        return {"partitions": sorted(marks), "watermarks": lowest, "epochs": epochs}

    def _tenant_finals(self) -> dict[str, int]:
        """Each tenant's final time in this lane (its watermark less the lateness)."""
        lateness = int(self.settings.lateness_s * 1000)
        marks: dict[str, int] = self.tenant_watermarks()["watermarks"]
        return {tenant: mark - lateness for tenant, mark in marks.items()}

    async def _send_norms(
        self, norms: list[NormsUpdate], replies: list[RepliesUpdate]
    ) -> list[Awaitable[Any]]:
        """The history lane's hand-off: each entity's norms and each thread's finished waits
        to the live lane's stage-2 partition of that key (the live lane's stage 1 places it
        the same way), split under the message size limit; acknowledged before the state
        that says they were handed off is saved."""
        if self.handoff is None or not (norms or replies):
            return []
        per: dict[int, UpdatesMessage] = defaultdict(lambda: {"p": HANDOFF})
        for item in norms:
            per[partition_for(item[0], self.settings.updates_partitions)].setdefault(
                "n", []
            ).append(item)
        for item in replies:
            per[partition_for(item[0], self.settings.updates_partitions)].setdefault(
                "r", []
            ).append(item)
        pending = []
        for k, message in sorted(per.items()):
            for part in encode_batch(message):
                pending.append(await self._send(self.handoff, part, partition=k))
        self.metrics.norms_handed(len(norms), len(replies))
        return pending

    def _partition(self, partition: int) -> Stage2Partition | TenantPartitions:
        proc = self.partitions.get(partition)
        if proc is None:
            s = self.settings
            kind = TenantPartitions if self.historical else Stage2Partition
            proc = self.partitions[partition] = kind(
                partition,
                self.events_partitions,
                s.signal_config(),
                s.reply_config(),
                s.alert_policy(),
                hand_off=self.handoff is not None,
            )
            with _restoring(STAGE2, partition):
                bad = proc.restore(
                    (k, v)
                    for k, v in faust_private.table_items(self.stage2_table, partition)
                    if _state_partition(k, s.updates_partitions) == partition
                )
            self._unreadable_state(STAGE2, partition, bad)
        return proc

    async def _on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        # Another worker owns these now; if they come back, state is re-read from the table.
        self.guard.forget(revoked)
        for tp in revoked:
            if tp.topic == self.settings.events_topic:
                self.sources.pop(tp.partition, None)
            elif tp.topic == self.settings.updates_topic:
                self.partitions.pop(tp.partition, None)
                if tp.partition in self._tenant_marks:
                    self._tenant_marks = {
                        k: v for k, v in self._tenant_marks.items() if k != tp.partition
                    }


def _history_headers(headers: Any) -> tuple[str | None, tuple[str, ...]]:
    """(kind, entity keys) of a message of the history lane's input (rhythm.schemas.topics):
    no kind for imported history."""
    items = headers.items() if hasattr(headers, "items") else (headers or ())
    kind: str | None = None
    keys: tuple[str, ...] = ()
    for name, value in items:
        if name == HISTORY_KIND_HEADER and value is not None:
            kind = bytes(value).decode() if not isinstance(value, str) else value
        elif name == HISTORY_KEYS_HEADER and value:
            keys = tuple(json.loads(value))
    return kind, keys


def _raw() -> Any:
    """Bytes in, bytes out: the pure modules own every encoding. A new Schema per topic: one
    shared with a Table made the topic decode its keys as JSON (faust-streaming 0.15.3)."""
    return faust.Schema(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def _skipped(topic: str, partition: int, group: list[EventT[bytes]]) -> None:
    """Not processed here: never let Faust record them as acked either, or a commit could
    pass them (if the partition comes back to this worker before Faust forgets its acks);
    whoever owns the partition reads them from the last commit. Logged: it must stay rare."""
    for event in group:
        event.message.acked = True
    log.warning(
        "%s[%d]: %d messages (offsets %d-%d) skipped: a rebalance is under way or took it",
        topic, partition, len(group), group[0].message.offset, group[-1].message.offset,
    )  # fmt: skip


def _by_partition(events: Iterable[EventT[bytes]]) -> dict[int, list[EventT[bytes]]]:
    groups: dict[int, list[EventT[bytes]]] = defaultdict(list)
    for event in events:
        groups[event.message.partition].append(event)
    return groups


@contextmanager
def _restoring(stage: str, partition: int) -> Iterator[None]:
    """A partition's state taken back from its table, with Python's cyclic garbage collector
    paused: the restore makes millions of objects and no garbage, and the collections that
    their number set off (each a pass over every tracked object) took 45 % of it (8 of 18 µs
    per entity, 200,000 entities)."""
    began = time.monotonic()
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()
        log.info("%s[%d]: state restored in %.1f s", stage, partition, time.monotonic() - began)


def _state_partition(key: str, partitions: int) -> int:
    if key.startswith(WATERMARKS_PREFIX):  # + partition, + SEP + tenant in the history lane
        return int(key[len(WATERMARKS_PREFIX) :].split(SEP, 1)[0])
    return partition_for(key, partitions)

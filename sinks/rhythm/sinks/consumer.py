"""The consumer loop: poll, transform, batch, hand sealed batches to the writer, and keep
memory bounded with pause/resume.

One thread owns the Kafka consumer's polling (the writer thread only commits, which
librdkafka allows from any thread). Memory: every message counts from the moment it is
polled until its batch is written ("held"). Each poll asks for at most the room left -
by count, and by bytes assuming messages as large as `max_message_bytes` - so the held
messages never exceed `buffer_max_rows` / `buffer_max_bytes`. With no room, every partition
is paused (librdkafka then drops what it prefetched for them and stops fetching) and the
loop keeps polling, which keeps the group membership alive while the writer retries.

Rebalances: a revoked partition's open batch is dropped and its queued batches are taken
back from the writer; the batch being written gets a few seconds to finish. On assignment,
a partition whose committed offset carries an intent (batcher.py) is told to rebuild exactly
that batch first.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from rhythm.sinks.batcher import Batch, Batcher, intent_metadata, parse_intent
from rhythm.sinks.metrics import SinkMetrics
from rhythm.sinks.settings import SinkSettings
from rhythm.sinks.transform import TRANSFORMS, Kind, Message
from rhythm.sinks.writer import Done, Writer

__all__ = ["ConsumerLoop", "KafkaCommitter", "consumer_config"]

log = logging.getLogger(__name__)

TP = tuple[str, int]


def consumer_config(settings: SinkSettings) -> dict[str, Any]:
    conf: dict[str, Any] = settings.kafka.to_librdkafka()
    conf.update(
        {
            "group.id": settings.group_id,
            # Offsets are committed by the writer, only after ClickHouse has the rows.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 4),
            # librdkafka's prefetch queue is memory too: 16 MiB instead of 64.
            "queued.max.messages.kbytes": 16384,
            "log.connection.close": False,
        }
    )
    if settings.group_instance_id:
        conf["group.instance.id"] = settings.group_instance_id
    conf.update(settings.consumer_extra)
    return conf


class KafkaCommitter:
    """Commits for the writer: the intent before an insert (synchronous: it must be durable
    before anything is written), the offset after it (asynchronous: if it is lost, the
    intent makes the retry a duplicate that ClickHouse drops)."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def commit_intent(self, batch: Batch) -> None:
        tp = TopicPartition(batch.topic, batch.partition, batch.start, intent_metadata(batch.end))
        result = self.consumer.commit(offsets=[tp], asynchronous=False)
        for item in result or []:
            if item.error is not None:
                raise KafkaException(item.error)

    def commit_done(self, batch: Batch) -> None:
        tp = TopicPartition(batch.topic, batch.partition, batch.end + 1, "")
        self.consumer.commit(offsets=[tp], asynchronous=True)


class ConsumerLoop:
    def __init__(
        self,
        settings: SinkSettings,
        consumer: Consumer,
        batcher: Batcher,
        writer_factory: Callable[[Callable[[Done], None]], Writer],
        metrics: SinkMetrics,
        topic_ids: Callable[[list[str]], dict[str, str]] | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.batcher = batcher
        self.metrics = metrics
        self.kinds: dict[str, Kind] = {
            settings.events_topic: "events",
            settings.signals_topic: "signals",
            settings.alerts_topic: "alerts",
        }
        self._topic_ids = topic_ids
        self._done: queue.SimpleQueue[Done] = queue.SimpleQueue()
        self.writer = writer_factory(self._done.put)
        self.held_messages = 0
        self.held_bytes = 0
        self.held_messages_max = 0
        self.assigned: set[TP] = set()
        self.paused: set[TP] = set()
        self.written_offsets: dict[TP, int] = {}  # next offset to write, per partition
        self._intent_open: set[TP] = set()  # a batch was abandoned: its intent must stay
        self._lag: dict[TP, int] = {}
        self._next_lag_check = 0.0
        self._full = False
        self.batches_written = 0
        self.status_snapshot: dict[str, Any] = {}

    # -- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.consumer.subscribe(
            list(self.kinds),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self.writer.start()
        try:
            while not stop.is_set():
                self._step()
        finally:
            self._shutdown()

    def _step(self) -> None:
        s = self.settings
        self._collect_done()
        room_rows = s.buffer_max_rows - self.held_messages
        room_bytes = s.buffer_max_bytes - self.held_bytes
        wanted = min(s.poll_max_messages, room_rows, room_bytes // s.max_message_bytes)
        if (
            self._full
            and room_rows >= s.buffer_max_rows // 4
            and room_bytes >= s.buffer_max_bytes // 4
        ):
            self._full = False  # resume only with room for a good while (pausing drops the
            # prefetched messages, so flapping at the limit would fetch them again and again)
        if wanted <= 0 or self._full:
            self._full = True
            # Write out the biggest open batch if nothing is on its way to the writer (no
            # room would ever free up otherwise), and stop fetching.
            if self.writer.pending() == 0:
                batch = self.batcher.seal_largest()
                if batch is not None:
                    self.writer.submit(batch)
            self._set_paused(set(self.assigned))
            messages = self.consumer.consume(1, 0.1)
        else:
            self._set_paused(set())
            messages = self.consumer.consume(wanted, 0.1)
        now = time.monotonic()
        skip: set[TP] = set()
        for message in messages:
            self._handle(message, now, skip)
        for batch in self.batcher.due(now):
            self.writer.submit(batch)
        if now >= self._next_lag_check:
            self._next_lag_check = now + 2.0
            self._update_lag()
        self._publish_status()

    def _handle(self, km: KafkaMessage, now: float, skip: set[TP]) -> None:
        error = km.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)
            return
        topic, partition, offset = km.topic(), km.partition(), km.offset()
        if topic is None or partition is None or offset is None:
            return
        tp = (topic, partition)
        if tp in skip or tp not in self.assigned:
            return
        value, key = km.value(), km.key()
        size = len(value or b"") + len(key or b"")
        if self.held_messages > 0 and (
            self.held_messages + 1 > self.settings.buffer_max_rows
            or self.held_bytes + size > self.settings.buffer_max_bytes
        ):
            # No room after all (a message larger than max_message_bytes, or one that came
            # in as the partitions were paused): read it again later, from here.
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                log.warning("could not seek %s[%d] back to %d: %s", topic, partition, offset, exc)
            else:
                self._set_paused(self.paused | {tp})
                skip.add(tp)
                return
        kind = self.kinds[topic]
        ts_type, ts = km.timestamp()
        message = Message(
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=ts if ts_type != 0 and ts >= 0 else int(time.time() * 1000),
            key=key,
            value=value,
        )
        outcome = TRANSFORMS[kind][1](message)
        self.held_messages += 1
        self.held_bytes += size
        self.held_messages_max = max(self.held_messages_max, self.held_messages)
        for batch in self.batcher.add(kind, message, outcome, now):
            self.writer.submit(batch)

    def _collect_done(self) -> None:
        while True:
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                return
            batch = done.batch
            self.held_messages -= batch.messages
            self.held_bytes -= batch.nbytes
            if done.written:
                self.batches_written += 1
                self.written_offsets[batch.tp] = batch.end + 1
                self._intent_open.discard(batch.tp)
            elif batch.tp in self.assigned:
                self._intent_open.add(batch.tp)

    def _set_paused(self, wanted: set[TP]) -> None:
        wanted &= self.assigned
        resume = self.paused - wanted
        pause = wanted - self.paused
        if resume:
            self.consumer.resume([TopicPartition(t, p) for t, p in resume])
        if pause:
            self.consumer.pause([TopicPartition(t, p) for t, p in pause])
        self.paused = wanted
        self.metrics.paused_partitions.set(len(wanted))

    # -- rebalancing --------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._topic_ids is not None:
            missing = sorted({p.topic for p in partitions} - set(self.batcher.topic_ids))
            if missing:
                self.batcher.topic_ids.update(self._topic_ids(missing))
        try:
            committed = consumer.committed(partitions, timeout=30)
        except KafkaException as exc:
            log.warning("could not read committed offsets (%s): retried batches may be "
                        "written twice (ReplacingMergeTree folds them)", exc)  # fmt: skip
            committed = []
        for tp in committed:
            end = parse_intent(tp.metadata)
            if tp.offset >= 0:
                self.written_offsets[(tp.topic, tp.partition)] = tp.offset
            if end is not None and tp.offset >= 0:
                log.info(
                    "%s[%d]: rebuilding the batch %d..%d the last run was writing",
                    tp.topic, tp.partition, tp.offset, end,
                )  # fmt: skip
                self.batcher.expect(tp.topic, tp.partition, tp.offset, end)
        self.assigned |= {(p.topic, p.partition) for p in partitions}
        log.info("assigned %s", sorted(f"{p.topic}[{p.partition}]" for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        for topic, partition in tps:
            messages, nbytes = self.batcher.drop(topic, partition)
            self.held_messages -= messages
            self.held_bytes -= nbytes
        self.writer.abandon(tps, wait_s=min(10.0, self.settings.shutdown_timeout_s))
        self._collect_done()
        self.assigned -= tps
        self.paused -= tps
        for topic, partition in tps:
            self.written_offsets.pop((topic, partition), None)
            self._intent_open.discard((topic, partition))
            if self._lag.pop((topic, partition), None) is not None:
                self.metrics.lag.remove(topic, str(partition))
        log.info("revoked %s", sorted(f"{t}[{p}]" for t, p in tps))

    # -- shutdown, lag, status ----------------------------------------------------------

    def _shutdown(self) -> None:
        """Write what is held (for up to shutdown_timeout_s), commit, leave the group."""
        for batch in self.batcher.seal_all():
            self.writer.submit(batch)
        if not self.writer.drain(self.settings.shutdown_timeout_s):
            log.warning(
                "stopping with batches unwritten after %.0f s (%s); their intents are "
                "committed, so the next run rebuilds them",
                self.settings.shutdown_timeout_s,
                self.writer.last_error,
            )
        self.writer.stop()
        self._collect_done()
        final = [
            TopicPartition(t, p, offset, "")
            for (t, p), offset in self.written_offsets.items()
            if (t, p) in self.assigned and (t, p) not in self._intent_open
        ]
        if final:
            try:
                self.consumer.commit(offsets=final, asynchronous=False)
            except KafkaException as exc:
                log.warning("final commit failed: %s", exc)
        self._publish_status()
        self.consumer.close()

    def _update_lag(self) -> None:
        for tp in list(self.assigned):
            topic, partition = tp
            try:
                # Paused partitions are not fetched, so their cached watermark is stale.
                _low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=1, cached=tp not in self.paused
                )
            except KafkaException:
                continue
            written = self.written_offsets.get(tp)
            if high is None or high < 0 or written is None:
                continue
            self._lag[tp] = max(0, high - written)
            self.metrics.lag.labels(topic, str(partition)).set(self._lag[tp])

    def _publish_status(self) -> None:
        m = self.metrics
        m.buffered_rows.set(self.held_messages)
        m.buffered_bytes.set(self.held_bytes)
        m.buffered_rows_max.set(self.held_messages_max)
        # One assignment of a fresh dict: the endpoint's threads read it without a lock.
        self.status_snapshot = {
            "held_messages": self.held_messages,
            "held_bytes": self.held_bytes,
            "held_messages_max": self.held_messages_max,
            "buffer_max_rows": self.settings.buffer_max_rows,
            "buffer_max_bytes": self.settings.buffer_max_bytes,
            "assigned_partitions": len(self.assigned),
            "paused_partitions": len(self.paused),
            "open_batches": self.batcher.open_batches(),
            "writer_pending": self.writer.pending(),
            "batches_written": self.batches_written,
            "retrying": self.writer.retrying,
            "last_error": self.writer.last_error,
            "lag": {f"{t}[{p}]": lag for (t, p), lag in sorted(self._lag.items())},
        }

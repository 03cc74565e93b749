"""The consumer loop: poll, process (tables/), batch, commit intents, hand batches to the writer,
commit what it wrote, and keep memory bounded with pause/resume.

This thread alone calls the Kafka consumer (confluent-kafka blocks a second thread's calls
while one polls). Per partition it keeps the batches sealed but not yet written, in offset
order; a batch goes to the writer only once an intent listing it is committed (batcher.py),
and when the writer reports it written, the committed offset moves past it.

Memory: every message counts from the moment it is polled until its batch is written
("held"). Each poll asks for at most the room left - by count, and by bytes assuming
messages as large as `max_message_bytes` - so what is held never exceeds `buffer_max_rows`
/ `buffer_max_bytes`. With no room, every partition is paused (librdkafka drops what it
prefetched for them and stops fetching) and the loop keeps polling, which keeps the group
membership alive while the writer retries; it resumes once a quarter of the buffer is free.
One exception: a batch rebuilt from an intent is never cut short (its token would change and
ClickHouse would keep both copies), so with the buffer full of those, the one closest to its
end is read on to its end from its partition alone: less than one batch over the limit.

Rebalances: a revoked partition's open and unsubmitted batches are dropped, its queued
batches taken back from the writer, and the batch being written gets a few seconds to
finish. On assignment, a committed intent tells the batcher which batches to rebuild.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from rhythm.runtime.offsets import lag
from rhythm.sinks.batcher import MAX_INTENTS, Batch, Batcher, intent_metadata, parse_intent
from rhythm.sinks.metrics import SinkMetrics
from rhythm.sinks.settings import SinkSettings
from rhythm.sinks.tables import TABLES
from rhythm.sinks.tables.rows import Kind, Message
from rhythm.sinks.writer import Done, Writer, error_reason

__all__ = ["ConsumerLoop", "FatalConsumerError", "consumer_config"]

log = logging.getLogger(__name__)

TP = tuple[str, int]


def consumer_config(settings: SinkSettings) -> dict[str, Any]:
    conf = settings.kafka.manual_commit_consumer(
        settings.group_id, settings.session_timeout_ms, settings.group_instance_id
    )
    # librdkafka's prefetch queue is memory too: 16 MiB instead of 64.
    conf["queued.max.messages.kbytes"] = 16384
    conf.update(settings.consumer_extra)
    return conf


class FatalConsumerError(RuntimeError):
    """librdkafka says the consumer is unusable. The sink exits (non-zero) so that its
    supervisor starts a fresh one, which rebuilds what was in hand from the committed
    intents; staying up would leave every partition unread for good."""


class ConsumerLoop:
    def __init__(
        self,
        settings: SinkSettings,
        consumer: Consumer,
        batcher: Batcher,
        writer_factory: Callable[[Callable[[Done], None]], Writer],
        metrics: SinkMetrics,
        topic_ids: Callable[[list[str]], dict[str, str]] | None = None,
        poll_timeout_s: float = 0.05,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.batcher = batcher
        self.metrics = metrics
        self.poll_timeout_s = poll_timeout_s
        self.kinds: dict[str, Kind] = settings.topic_kinds
        self._topic_ids = topic_ids
        self._done: queue.SimpleQueue[Done] = queue.SimpleQueue()
        self.writer = writer_factory(self._done.put)
        self.held_messages = 0
        self.held_bytes = 0
        self.held_messages_max = 0
        self.assigned: set[TP] = set()
        self.paused: set[TP] = set()
        #: per partition, in offset order: sealed, not yet written (intent committed or not)
        self._unwritten: dict[TP, collections.deque[Batch]] = {}
        #: how many of each partition's unwritten batches the committed intent covers
        self._intended: dict[TP, int] = {}
        self.written_offsets: dict[TP, int] = {}  # the committed offset, per partition
        self._intent_retry_at = 0.0
        self._intent_failures = 0
        #: partitions whose written offset moved since the last commit
        self._moved: set[TP] = set()
        self._lag: dict[TP, int] = {}
        self._next_lag_check = 0.0
        self._full = False
        #: with the buffer full of rebuilt batches: the partition read alone to finish one
        self._finishing: TP | None = None
        self._logged: dict[str, float] = {}
        self.batches_written = 0
        self.status_snapshot: dict[str, Any] = {}
        self._publish_status()

    # -- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.consumer.subscribe(
            list(self.kinds),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self.writer.start()
        self.metrics.progress.set_ready(True)  # store migrated, subscribed: serving
        try:
            while not stop.is_set():
                self._step()
        finally:
            self.metrics.progress.set_ready(False)
            self._shutdown()

    def _step(self) -> None:
        s = self.settings
        self.metrics.progress.beat()
        self._collect_done()
        room_rows = s.buffer_max_rows - self.held_messages
        room_bytes = s.buffer_max_bytes - self.held_bytes
        wanted = min(s.poll_max_messages, room_rows, room_bytes // s.max_message_bytes)
        if self._full and room_rows >= s.buffer_max_rows // 4:
            # Resume only with room for a good while: pausing drops what librdkafka
            # prefetched, so flapping at the limit would fetch it again and again.
            self._full = room_bytes < s.buffer_max_bytes // 4
        if wanted <= 0 or self._full:
            self._full = True
            messages = self._consume_full()
        else:
            self._set_paused(set())
            messages = self.consumer.consume(wanted, self.poll_timeout_s)
        now = time.monotonic()
        skip: set[TP] = set()
        for message in messages:
            self._handle(message, now, skip)
        for batch in self.batcher.due(now):
            self._sealed(batch)
        self._commit_intents(now)
        if now >= self._next_lag_check:
            self._next_lag_check = now + 2.0
            self._update_lag()
            self._close_rebuilt_past_the_log()
        self._publish_status()

    def _consume_full(self) -> list[KafkaMessage]:
        """A poll with the buffer full. With nothing on its way to the writer, room must be
        made: the biggest open batch is written out, or, when every open batch is being
        rebuilt from an intent (which must not be cut), the one closest to its end is read
        to its end, from its partition alone."""
        if not any(self._unwritten.values()) and self._finishing is None:
            batch = self.batcher.seal_largest()
            if batch is not None:
                self._sealed(batch)
            else:
                nearest = self.batcher.nearest_rebuilt()
                self._finishing = nearest[0] if nearest is not None else None
        if self._finishing is None:
            self._set_paused(set(self.assigned))
            return list(self.consumer.consume(1, self.poll_timeout_s))
        tp = self._finishing
        nearest = self.batcher.nearest_rebuilt()
        lacking = nearest[1] if nearest is not None and nearest[0] == tp else 1
        self._set_paused(set(self.assigned) - {tp})
        result: list[KafkaMessage] = self.consumer.consume(max(1, lacking), self.poll_timeout_s)
        return result

    def _close_rebuilt_past_the_log(self) -> None:
        """A rebuilt batch that has read everything its partition holds, although its intent
        ends later, is closed where the log ends: the last run read those offsets, so the
        topic was emptied or created again since, and waiting would stall the partition."""
        for tp in self.batcher.rebuilding():
            try:
                _low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(*tp), timeout=1, cached=False
                )
            except KafkaException:
                continue
            if high is not None and 0 <= high <= self.batcher.open_end(tp) + 1:
                batch = self.batcher.seal_short(*tp)
                if batch is not None:
                    log.warning("%s[%d]: the log ends at %d, before the batch the last run "
                                "was writing: closed there", tp[0], tp[1], high)  # fmt: skip
                    self._sealed(batch)

    def _handle(self, km: KafkaMessage, now: float, skip: set[TP]) -> None:
        error = km.error()
        if error is not None:
            text = str(error)
            if error.fatal():  # e.g. a static member fenced: this consumer can do no more
                raise FatalConsumerError(text)
            # e.g. a topic not created yet: said once a minute, not at every poll
            if error.code() != KafkaError._PARTITION_EOF and now >= self._logged.get(text, 0):
                self._logged[text] = now + 60
                log.warning("consumer: %s", text)
            return
        topic, partition, offset = km.topic(), km.partition(), km.offset()
        if topic is None or partition is None or offset is None:
            return
        tp = (topic, partition)
        if tp in skip or tp not in self.assigned:
            return
        value, key = km.value(), km.key()
        size = len(value or b"") + len(key or b"")
        if (
            tp != self._finishing
            and self.held_messages > 0
            and (
                self.held_messages + 1 > self.settings.buffer_max_rows
                or self.held_bytes + size > self.settings.buffer_max_bytes
            )
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
            headers=_headers(km.headers()),
        )
        outcome = TABLES[kind].process(message)
        self.held_messages += 1
        self.held_bytes += size
        self.held_messages_max = max(self.held_messages_max, self.held_messages)
        for batch in self.batcher.add(kind, message, outcome, now):
            self._sealed(batch)

    # -- intents and commits ------------------------------------------------------------

    def _sealed(self, batch: Batch) -> None:
        self._unwritten.setdefault(batch.tp, collections.deque()).append(batch)
        if batch.tp == self._finishing:
            self._finishing = None  # complete: room comes back as the writer takes it

    def _commit_intents(self, now: float) -> None:
        """One synchronous commit of every changed partition's state: past its written
        batches, naming its unwritten ones (new ones included); then the new ones go to the
        writer, whose batches must be under a durable intent before anything of them is
        written. Every commit is synchronous and carries the whole state of its partitions:
        an asynchronous one retried by the client could land after a later commit and put
        back an older state, taking an intent away from a batch being written (which a
        restart then reads again with other cuts, and ClickHouse keeps twice)."""
        if now < self._intent_retry_at:
            return
        offsets, ready = [], []
        for tp, batches in self._unwritten.items():
            intended = self._intended.get(tp, 0)
            covered = min(len(batches), MAX_INTENTS)
            if covered <= intended and tp not in self._moved:
                continue
            written = self.written_offsets.get(tp, 0)  # used only with nothing under intent
            offsets.append(self._position(tp, written, covered))
            ready.append((tp, intended, covered))
        if not offsets:
            return
        try:
            self._commit(offsets)
        except KafkaException as exc:
            self._intent_failures += 1
            self.metrics.retries.labels("kafka_commit", error_reason(exc)).inc()
            delay = min(
                self.settings.retry_backoff_max_s,
                self.settings.retry_backoff_min_s * 2 ** (self._intent_failures - 1),
            )
            self._intent_retry_at = now + delay
            log.warning("committing intents failed (retrying in %.1f s): %s", delay, exc)
            return
        self._intent_failures = 0
        self._moved.clear()
        for tp, intended, covered in ready:
            if covered <= intended:
                continue
            self._intended[tp] = covered
            for batch in list(self._unwritten[tp])[intended:covered]:
                self.writer.submit(batch)

    def _commit(self, offsets: list[TopicPartition]) -> None:
        result = self.consumer.commit(offsets=offsets, asynchronous=False)
        for item in result or []:
            if item.error is not None:
                raise KafkaException(item.error)

    def _collect_done(self) -> None:
        """Take the writer's reports; a written batch moves its partition's offset past it
        (committed with the next `_commit_intents`; until then, a restart rebuilds it under
        the same token, which ClickHouse drops)."""
        while True:
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                break
            batch = done.batch
            self.held_messages -= batch.messages
            self.held_bytes -= batch.nbytes
            batches = self._unwritten.get(batch.tp)
            if not done.written or not batches or batches[0] is not batch:
                continue  # abandoned (revoked, or shutdown): its intent stays committed
            batches.popleft()
            self._intended[batch.tp] = max(0, self._intended.get(batch.tp, 0) - 1)
            self.batches_written += 1
            self.written_offsets[batch.tp] = batch.end + 1
            self._moved.add(batch.tp)

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
            if tp.offset < 0:
                continue
            self.written_offsets[(tp.topic, tp.partition)] = tp.offset
            ends = parse_intent(tp.metadata)
            if ends:
                log.info("%s[%d]: rebuilding %d batch(es) from %d the last run was writing",
                         tp.topic, tp.partition, len(ends), tp.offset)  # fmt: skip
                self.batcher.expect(tp.topic, tp.partition, tp.offset, ends)
        self.assigned |= {(p.topic, p.partition) for p in partitions}
        log.info("assigned %s", sorted(f"{p.topic}[{p.partition}]" for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        for topic, partition in tps:
            messages, nbytes = self.batcher.drop(topic, partition)
            self.held_messages -= messages
            self.held_bytes -= nbytes
        # Written batches get their commit (the generation is still ours in this callback).
        self.writer.abandon(tps, wait_s=min(10.0, self.settings.shutdown_timeout_s))
        self._collect_done()
        moved = [self._position(tp, self.written_offsets[tp]) for tp in self._moved & tps]
        if moved:
            try:
                self._commit(moved)
            except KafkaException as exc:
                log.warning("commit on revoke failed (the batches are rebuilt): %s", exc)
        self._moved -= tps
        for tp in tps:
            for batch in self._unwritten.pop(tp, ()):
                if self._intended.get(tp, 0) <= 0:  # never reached the writer
                    self.held_messages -= batch.messages
                    self.held_bytes -= batch.nbytes
                self._intended[tp] = self._intended.get(tp, 0) - 1
            self._intended.pop(tp, None)
            self.written_offsets.pop(tp, None)
            if self._lag.pop(tp, None) is not None:
                self.metrics.lag.remove(tp[0], str(tp[1]))
        self.assigned -= tps
        self.paused -= tps
        if self._finishing in tps:
            self._finishing = None
        log.info("revoked %s", sorted(f"{t}[{p}]" for t, p in tps))

    # -- shutdown, lag, status ----------------------------------------------------------

    def _shutdown(self) -> None:
        """Write what is held (for up to shutdown_timeout_s), commit, leave the group."""
        self._set_paused(set(self.assigned))  # polls from here on only serve callbacks
        for batch in self.batcher.seal_all():
            self._sealed(batch)
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        while time.monotonic() < deadline and any(self._unwritten.values()):
            self._commit_intents(time.monotonic())
            self.writer.wait_idle(min(0.2, max(0.0, deadline - time.monotonic())))
            self._collect_done()
            self.consumer.poll(0)
        if any(self._unwritten.values()):
            log.warning(
                "stopping with batches unwritten after %.0f s (%s); their intents are "
                "committed, so the next run rebuilds them",
                self.settings.shutdown_timeout_s,
                self.writer.last_error,
            )
        self.writer.stop()
        self._collect_done()
        final = [
            self._position(tp, offset)
            for tp, offset in self.written_offsets.items()
            if tp in self.assigned
        ]
        if final:
            try:
                self._commit(final)
            except KafkaException as exc:
                log.warning("final commit failed: %s", exc)
        self._publish_status()
        self.consumer.close()

    def _position(self, tp: TP, written: int, covered: int | None = None) -> TopicPartition:
        """What to commit for a partition: with batches under intent (the first `covered`
        unwritten ones, by default those already intended), the first one's start (not
        `written`: offsets may have gaps, and a rebuilt batch must start where the original
        did) and their ends; else the offset after what was written."""
        count = self._intended.get(tp, 0) if covered is None else covered
        intended = list(self._unwritten.get(tp, ()))[:count]
        offset = intended[0].start if intended else written
        return TopicPartition(tp[0], tp[1], offset, intent_metadata([b.end for b in intended]))

    def _update_lag(self) -> None:
        self.metrics.progress.assigned(set(self.assigned))
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
            self._lag[tp] = lag(high, written)
            self.metrics.progress.done(topic, partition, written)
            self.metrics.progress.end(topic, partition, high)
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
            "unwritten_batches": sum(len(b) for b in self._unwritten.values()),
            # of those, how many a committed intent names (a restart rebuilds exactly them)
            "intended_batches": sum(self._intended.values()),
            "batches_written": self.batches_written,
            "retrying": self.writer.retrying,
            "last_error": self.writer.last_error,
            "lag": {f"{t}[{p}]": n for (t, p), n in sorted(self._lag.items())},
        }


def _headers(
    headers: dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None,
) -> tuple[tuple[str, bytes], ...]:
    items = headers.items() if isinstance(headers, dict) else headers or ()
    return tuple(
        (name, value.encode() if isinstance(value, str) else value or b"") for name, value in items
    )

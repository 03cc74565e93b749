"""Batches of mail events through the client library, each event once, across crashes.

The client delivers at least once; a connector killed between Kafka's acknowledgement and
its own note of it would send that batch again. So each batch goes:
1. drop the events already published (store.published);
2. note the batch as pending, with the events topic's end offsets now;
3. produce through `Client.send` and flush until every event is acknowledged;
4. mark them published and clear the pending note (one SQLite transaction).
A process that finds a pending note (its predecessor died in 2-4) reads the events topic
from the noted offsets to its end and marks the batch's events found there as published;
the rest are sent again with the message they belong to. Batches hold an exclusive lock
(`<state_dir>/publish.lock`), so an import and the IMAP connector sharing a state dir take
turns and a live batch's note is never taken for a dead one.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from rhythm.connectors.mail.store import Store
from rhythm.producers import Client, ClientSettings
from rhythm.schemas import decode_event

log = logging.getLogger("rhythm.connectors.mail")


class NotDeliveredError(RuntimeError):
    """Kafka did not acknowledge a batch in time: nothing is marked, it is sent again."""


class Publisher:
    def __init__(
        self,
        store: Store,
        client_settings: ClientSettings,
        lock_path: Path,
        flush_s: float = 120,
        registry: CollectorRegistry | None = None,
        kafka_timeout_s: float = 30,
    ) -> None:
        self.store = store
        self.settings = client_settings
        self.lock_path = lock_path
        self.flush_s = flush_s
        self.registry = registry
        self.kafka_timeout_s = kafka_timeout_s  # metadata and offsets requests
        self.failed: list[tuple[str, str]] = []
        self.client = Client(client_settings, on_error=self._on_error, registry=registry)
        self.sent = 0

    def _on_error(self, event: dict[str, Any], reason: str) -> None:
        self.failed.append((str(event.get("event_id")), reason))

    def close(self) -> None:
        self.client.close(self.flush_s)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def publish(self, events: Sequence[dict[str, Any]]) -> int:
        """Publish what was not published yet; return how many events went out. Raises
        NotDeliveredError when Kafka did not take all of them (nothing is marked)."""
        try:
            return self._publish(events)
        except KafkaException as exc:  # the broker away while noting or reading back
            raise NotDeliveredError(f"Kafka unavailable: {exc}") from exc

    def _publish(self, events: Sequence[dict[str, Any]]) -> int:
        with self._locked():
            self.recover()
            fresh = self.store.unpublished([e["event_id"] for e in events])
            batch: list[dict[str, Any]] = []
            for e in events:  # the same message twice in a batch (Sent and Inbox): once
                if e["event_id"] in fresh:
                    fresh.discard(e["event_id"])
                    batch.append(e)
            if not batch:
                return 0
            ids = [e["event_id"] for e in batch]
            self.store.begin_pending(ids, self._end_offsets())
            self.failed = []
            for event in batch:
                self.client.send(event)
            left = self.client.flush(self.flush_s)
            if left or self.failed:
                reasons = sorted({r for _, r in self.failed}) or ["timed_out"]
                # what is still queued is given up now (purged), not delivered behind the
                # read-back below; then what did arrive counts and the rest goes again later
                self.client.close(0)
                self.client = Client(self.settings, on_error=self._on_error, registry=self.registry)
                self.recover()
                raise NotDeliveredError(
                    f"{left + len(self.failed)} of {len(ids)} events not delivered: "
                    + ", ".join(reasons)
                )
            self.store.settle(ids)
            self.sent += len(ids)
            return len(ids)

    def identify(self, tenant: str, people: Sequence[tuple[str, str]]) -> None:
        """Our people, to the people directory: {"email": address, "internal": true}."""
        todo = self.store.unidentified(tenant, people)
        if not todo:
            return
        for kind, address in todo:
            self.client.identify(tenant, (kind, address), {"email": address, "internal": True})
        if self.client.flush(self.flush_s):
            raise NotDeliveredError("the people directory did not take our people in time")
        self.store.identified(tenant, todo)

    def recover(self) -> int:
        """Settle a batch a dead predecessor left pending; return how many of its events
        were found on the topic."""
        pending, offsets = self.store.pending()
        if not pending and not offsets:
            return 0
        found = self._scan(pending, offsets) if pending else set()
        self.store.settle(found)
        if pending:
            log.info(
                "an interrupted batch: %d of its %d events had reached Kafka",
                len(found),
                len(pending),
            )
        return len(found)

    # -- Kafka -----------------------------------------------------------------------------

    def _consumer(self) -> Consumer:
        conf = self.settings.kafka.to_librdkafka()
        # earliest: a noted offset the topic's retention already dropped reads from the start
        conf.update(
            {
                "group.id": "rhythm-mail-recovery",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        return Consumer(conf)

    def _end_offsets(self) -> dict[int, int]:
        consumer = self._consumer()
        try:
            topic = self.settings.topic
            meta = consumer.list_topics(topic, timeout=self.kafka_timeout_s).topics[topic]
            if meta.error is not None:
                raise NotDeliveredError(f"topic {topic}: {meta.error}")
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), self.kafka_timeout_s)[1]
                for p in meta.partitions
            }
        finally:
            consumer.close()

    def _scan(self, wanted: set[str], since: dict[int, int]) -> set[str]:
        topic = self.settings.topic
        consumer = self._consumer()
        found: set[str] = set()
        try:
            ends = {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), self.kafka_timeout_s)[1]
                for p in since
            }
            todo = {p for p in since if ends[p] > since[p]}
            consumer.assign(
                [TopicPartition(topic, p, since[p] if p in todo else OFFSET_END) for p in since]
            )
            deadline = time.monotonic() + 300
            while todo and time.monotonic() < deadline:
                for m in consumer.consume(1000, 1.0):
                    if m.error() is not None:
                        continue
                    p, offset, value = m.partition(), m.offset(), m.value()
                    if value is not None:
                        try:
                            event_id = str(decode_event(value)["event_id"])
                        except Exception:  # another producer's bad record is not ours
                            event_id = ""
                        if event_id in wanted:
                            found.add(event_id)
                    if p is not None and offset is not None and offset >= ends[p] - 1:
                        todo.discard(p)
            if todo:
                raise NotDeliveredError("could not read the events topic back to settle a batch")
        finally:
            consumer.close()
        return found

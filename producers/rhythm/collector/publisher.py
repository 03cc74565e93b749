"""From validated messages to Kafka's acknowledgement, for an asyncio server.

The producer is the client library's (`rhythm.producers.Client`: the same validation,
encoding, keys, idempotent acks=all producer, metrics and exit flush), extended with what a
server needs and a library caller does not: a per-request outcome. `publish()` validates
each message (the contract: `prepare_event`, `make_person`), reserves room in a bounded
buffer for the whole request or none of it (so a full buffer refuses a request before any of
it is sent), enqueues, and returns a `Delivery` whose future resolves, on the event loop,
when Kafka has acknowledged or given up every message. The buffer counts what is sent and
not yet reported by librdkafka, so a request that timed out keeps its room until Kafka
answers for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from prometheus_client import CollectorRegistry

from rhythm.collector.items import Item
from rhythm.producers import Client, ClientSettings
from rhythm.producers.client import _REASONS
from rhythm.producers.prepare import make_person, prepare_event
from rhythm.schemas import ContractError, encode_event

__all__ = ["BufferFullError", "Delivery", "Publisher"]

log = logging.getLogger("rhythm.collector")


class BufferFullError(Exception):
    """No room for the request: answer 503 with Retry-After (nothing of it was sent)."""


@dataclass
class Delivery:
    """The outcome of one request's messages: `failed` holds a reason for each message Kafka
    did not take. `done` resolves on the loop once every message has its report."""

    done: asyncio.Future[None]
    pending: int
    failed: list[str] = field(default_factory=list)
    #: perf_counter() when the last report was served (on librdkafka's poll thread)
    reported_at: float = 0.0
    #: perf_counter() just before the first produce() (the request's produce calls take a
    #: fraction of a millisecond together)
    produced_at: float = 0.0
    #: the longest produce()-to-acknowledgement time librdkafka measured for a message (s):
    #: linger, the broker and the network. `produced_at + acked_s` is when the last
    #: acknowledgement reached librdkafka; from then to `reported_at` the report waited to
    #: be served
    acked_s: float = 0.0


class _Request:
    """Counts one request's delivery reports (on librdkafka's poll thread). One bound method
    per request serves all its messages: no closure per event."""

    __slots__ = ("_lock", "client", "delivery", "loop", "publisher", "sent")

    def __init__(self, publisher: Publisher, loop: asyncio.AbstractEventLoop, sent: int) -> None:
        self.publisher = publisher
        self.client = publisher.client
        self.loop = loop
        self.sent = sent
        self._lock = threading.Lock()
        self.delivery = Delivery(loop.create_future(), sent)

    def on_event(self, err: KafkaError | None, msg: Message) -> None:
        self.client._on_delivery(err, msg)  # the client's counts and on_error
        self._acked(msg)
        self.report(None if err is None else _REASONS.get(err.code(), "kafka_error"))

    def on_person(self, err: KafkaError | None, msg: Message) -> None:
        self.client._on_identify_delivery(err, msg)
        self._acked(msg)
        self.report(None if err is None else _REASONS.get(err.code(), "kafka_error"))

    def _acked(self, msg: Message) -> None:
        latency = msg.latency()
        if latency is not None and latency > self.delivery.acked_s:
            self.delivery.acked_s = latency

    def report(self, reason: str | None) -> None:
        with self._lock:
            if reason is not None:
                self.delivery.failed.append(reason)
            self.delivery.pending -= 1
            last = self.delivery.pending == 0
        if last:
            self.delivery.reported_at = time.perf_counter()
            self.publisher.release(self.sent)
            self.loop.call_soon_threadsafe(_resolve, self.delivery.done)


def _log_stats(raw: str) -> None:
    """One line per statistics interval: the p50/p99/max (ms) of librdkafka's windows, worst
    broker that carried traffic (`int_latency` + `outbuf_latency` as `queue`; `rtt`)."""
    stats = json.loads(raw)
    out: dict[str, float] = {}
    for broker in stats.get("brokers", {}).values():
        rtt = broker.get("rtt", {})
        if not rtt.get("cnt"):
            continue
        for name, window in (
            ("int", broker.get("int_latency", {})),
            ("outbuf", broker.get("outbuf_latency", {})),
            ("rtt", rtt),
        ):
            for q in ("p50", "p99", "max"):
                key = f"{name}_{q}_ms"
                out[key] = max(out.get(key, 0.0), window.get(q, 0) / 1000)
    if out:
        log.info("kafka stats %s", json.dumps(out, sort_keys=True))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _ConfirmingClient(Client):
    """The client, producing with the request's own delivery callback."""

    def log_kafka_stats(self, interval_s: float) -> None:
        """Log librdkafka's own latency percentiles every `interval_s` (before the first
        produce): where the wait for an acknowledgement goes, inside the client (`queue`:
        produce() until sent, linger included) or at the broker (`rtt`: request sent until
        its response)."""
        self._conf["statistics.interval.ms"] = max(1, int(interval_s * 1000))
        self._conf["stats_cb"] = _log_stats

    def produce_event(self, record: dict[str, Any], key: str, on_delivery: Any) -> None:
        payload = encode_event(record)
        # `is not None`, not `or`: a Producer is false while its queue is empty
        producer = self._producer if self._producer is not None else self._open()
        self.stats.tracked += 1
        producer.produce(self._topic, payload, key, on_delivery=on_delivery)

    def produce_person(self, payload: bytes, key: str, on_delivery: Any) -> None:
        producer = self._producer if self._producer is not None else self._open()
        self.stats.tracked += 1
        producer.produce(self.settings.people_topic, payload, key, on_delivery=on_delivery)


class Publisher:
    def __init__(
        self, settings: ClientSettings, buffer_max: int, registry: CollectorRegistry | None = None
    ) -> None:
        # librdkafka's own queue holds at least the buffer, so produce() finds room for
        # whatever the buffer admitted.
        queue = max(settings.queue_max_messages, buffer_max + 1000)
        self.client = _ConfirmingClient(
            settings.model_copy(update={"queue_max_messages": queue}), registry=registry
        )
        self.buffer_max = buffer_max
        self._inflight = 0
        self._lock = threading.Lock()

    @property
    def inflight(self) -> int:
        return self._inflight

    def release(self, n: int) -> None:
        with self._lock:
            self._inflight -= n

    def _reserve(self, n: int) -> bool:
        with self._lock:
            if self._inflight + n > self.buffer_max:
                return False
            self._inflight += n
            return True

    def publish(self, items: Sequence[Item], loop: asyncio.AbstractEventLoop) -> Delivery | None:
        """Validate and send the items without an error (an invalid one gets its `error`);
        None when none was left to send. Raises BufferFullError (nothing sent)."""
        prepared: list[tuple[int, str, dict[str, Any] | bytes, str]] = []
        now_ms = time.time_ns() // 1_000_000
        for item in items:
            if item.error is not None:
                continue
            try:
                if item.event is not None:
                    record, key = prepare_event(item.event)
                    record["sent_at"] = now_ms
                    prepared.append((item.index, "event", record, key))
                elif item.person is not None:
                    tenant, actor, traits = item.person
                    person = make_person(tenant, actor, traits, now_ms)
                    payload = person.model_dump_json().encode()
                    prepared.append((item.index, "person", payload, person.key))
            except ContractError as exc:
                item.fail("invalid_event", str(exc))
        if not prepared:
            return None
        if not self._reserve(len(prepared)):
            raise BufferFullError
        request = _Request(self, loop, len(prepared))
        request.delivery.produced_at = time.perf_counter()
        client = self.client
        for _index, kind, value, key in prepared:
            try:
                if kind == "event":
                    assert isinstance(value, dict)
                    client.produce_event(value, key, request.on_event)
                else:
                    assert isinstance(value, bytes)
                    client.produce_person(value, key, request.on_person)
            except BufferError:
                request.report("buffer_full")
            except KafkaException as exc:
                request.report(_REASONS.get(exc.args[0].code(), "kafka_error"))
        return request.delivery

    def close(self, timeout: float) -> int:
        return self.client.close(timeout)

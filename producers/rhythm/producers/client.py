"""The Rhythm client: `track()` an interaction, and Kafka gets it, or you hear why not.

Design, and why:
- The caller's thread validates and encodes the event (so a bad event raises right there, with
  a message naming the field and rule) and hands the bytes to librdkafka's `produce()`, which
  only enqueues: the caller never waits on the network. librdkafka's send queue *is* the bounded
  queue (`queue_max_messages` / `queue_max_kbytes`); batching, compression, retries and
  idempotent ordering happen in its own threads. A Python queue in front of it would add a
  hand-off per event and a second bound to reason about.
- A daemon thread polls for delivery reports, which count deliveries and failures and call
  `on_error(event, reason)` for every event given up on. When the queue is full the policy
  decides (`block` up to a timeout, or `drop`); either way the event is counted and reported.
- At interpreter exit every client flushes with a deadline, then purges and reports what is
  left (analytics clients that only join their thread at exit lose those events silently).
- librdkafka is not fork-safe: in a forked child the inherited handle has no threads. The child
  abandons it (never touching or destroying it) and opens a fresh producer on first use, so a
  client made before `os.fork()` (gunicorn --preload, multiprocessing) keeps working.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import multiprocessing.util
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import CollectorRegistry

from rhythm.producers.config import ClientSettings
from rhythm.producers.metrics import ClientStats, collector_for
from rhythm.producers.prepare import EntityLike, entity_as_dict, make_person, prepare_payload
from rhythm.schemas import Event, decode_event
from rhythm.schemas.people import Person, Traits

log = logging.getLogger("rhythm.producers")

ErrorCallback = Callable[[dict[str, Any], str], None]

# Failure reasons: a fixed set, used as the `reason` metric label and passed to on_error.
_REASONS = {
    KafkaError._MSG_TIMED_OUT: "timed_out",
    KafkaError._PURGE_QUEUE: "purged",
    KafkaError._PURGE_INFLIGHT: "purged",
    KafkaError.MSG_SIZE_TOO_LARGE: "too_large",
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "unauthorized",
    KafkaError.UNKNOWN_TOPIC_OR_PART: "unknown_topic",
    KafkaError._UNKNOWN_TOPIC: "unknown_topic",
}


_ANY_PARTITION = -1  # RD_KAFKA_PARTITION_UA
_ERROR_LOG_INTERVAL_S = 30
_PURGE_REPORT_TIMEOUT_S = 5.0


class ClientClosedError(RuntimeError):
    """track()/send() after close()."""


class Client:
    """Publishes events to Kafka in the background. Thread-safe; safe across os.fork()."""

    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        on_error: ErrorCallback | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """`registry`: where the client's metrics are counted (default: prometheus_client's
        default registry, which the application's /metrics serves)."""
        self.settings = settings or ClientSettings()
        self.on_error = on_error
        self.stats = ClientStats()
        self._conf = self.settings.to_librdkafka()
        self._conf["logger"] = logging.getLogger("rhythm.producers.librdkafka")
        self._conf["error_cb"] = self._on_client_error
        self._topic = self.settings.topic
        self._lock = threading.Lock()
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._closed = False
        self._failures_logged = 0
        self._errors_logged_at: dict[int, float] = {}
        self._delivery_cb = self._on_delivery
        self._identify_cb = self._on_identify_delivery
        _LIVE.add(self)
        collector_for(registry).add(self)

    # -- the API ---------------------------------------------------------------------------

    def track(
        self,
        tenant: str,
        actor: EntityLike,
        verb: str,
        *,
        object: EntityLike | None = None,
        target: EntityLike | None = None,
        channel: str | None = None,
        context_id: str | None = None,
        in_reply_to: str | None = None,
        tags: Sequence[str] | None = None,
        weight: float = 1.0,
        properties: Mapping[str, str | int | float | bool] | None = None,
        occurred_at: datetime | str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Validate, stamp and enqueue one event; return its event_id.

        Raises `ContractError` (a ValueError) naming the field and rule for invalid input.
        `actor`, `object`, `target` are `{"type": ..., "id": ...}` dicts or `(type, id)` pairs.
        `occurred_at` defaults to now (UTC); `event_id` to a fresh UUIDv7.
        """
        if self._closed:  # before the pairs, whose errors would otherwise come first
            raise ClientClosedError("this client is closed")
        # Pairs become dicts here, where they are known to be entities: send() would first
        # try the event as given (validation refuses a pair), then again converted.
        event: dict[str, Any] = {
            "tenant": tenant,
            "actor": entity_as_dict("actor", actor),
            "verb": verb,
            "occurred_at": occurred_at if occurred_at is not None else datetime.now(UTC),
            "weight": weight,
        }
        # None means absent: only what was given goes in (one test each, no dict of options).
        if object is not None:
            event["object"] = entity_as_dict("object", object)
        if target is not None:
            event["target"] = entity_as_dict("target", target)
        if channel is not None:
            event["channel"] = channel
        if context_id is not None:
            event["context_id"] = context_id
        if in_reply_to is not None:
            event["in_reply_to"] = in_reply_to
        if tags is not None:
            event["tags"] = tags
        if properties is not None:
            event["properties"] = properties
        if event_id is not None:
            event["event_id"] = event_id
        return self.send(event)

    def identify(
        self,
        tenant: str,
        actor: EntityLike,
        traits: Mapping[str, Any] | Traits,
    ) -> str:
        """Say who a person is (Segment's `identify`): their display `name`, `email`,
        `chat_handle`, `timezone`, `working_hours` ([start, end) local hours),
        `working_days`, `team` and whether they are `internal`. Published to the compacted
        people topic keyed by `tenant:type:id` (the latest record wins), validated here:
        raises `ContractError` for bad traits. Returns the key. Delivery is in the
        background like `track()`'s; a failure is counted and passed to `on_error` with the
        record (which has no `event_id`)."""
        if self._closed:
            raise ClientClosedError("this client is closed")
        person = make_person(tenant, actor, traits, time.time_ns() // 1_000_000)
        payload = person.model_dump_json().encode()
        producer = self._producer
        if producer is None:  # not `or`: a Producer's truth is its queue length
            producer = self._open()
        self.stats.tracked += 1
        try:
            producer.produce(
                self.settings.people_topic, payload, person.key, on_delivery=self._identify_cb
            )
        except BufferError:
            producer.flush(self.settings.block_timeout_s)
            try:
                producer.produce(
                    self.settings.people_topic, payload, person.key, on_delivery=self._identify_cb
                )
            except BufferError:
                self.stats.dropped["queue_full"] += 1
                self._report(person.model_dump(), "queue_full")
        except KafkaException as exc:
            reason = _REASONS.get(exc.args[0].code(), "kafka_error")
            self.stats.failed[reason] += 1
            self._report(person.model_dump(), reason)
        return person.key

    def send(self, event: Mapping[str, Any] | Event) -> str:
        """Validate, stamp and enqueue an event in the canonical JSON shape; return its id."""
        if self._closed:
            raise ClientClosedError("this client is closed")
        payload, key, event_id = prepare_payload(event, time.time_ns() // 1_000_000)
        producer = self._producer
        if producer is None:  # not `or`: a Producer's truth is its queue length
            producer = self._open()
        self.stats.tracked += 1
        try:
            # One bound method for every message: a per-message closure would keep a dict per
            # queued event alive, and the cyclic GC rescans all of them over and over. A
            # failed event is rebuilt from its payload instead (failures are rare).
            # Positional (partition -1 is librdkafka's "unassigned": the partitioner picks by
            # key; the fifth is on_delivery): keywords cost produce() a dict parse per call.
            producer.produce(self._topic, payload, key, _ANY_PARTITION, self._delivery_cb)
        except BufferError:
            self._when_full(producer, payload, key)
        except KafkaException as exc:  # refused outright, e.g. a topic known not to exist
            self._give_up(_record(payload), exc.args[0])
        return event_id

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to `timeout` seconds for delivery; return how many events are still queued."""
        producer = self._producer
        if producer is None:
            return 0
        return int(producer.flush(timeout))

    def close(self, timeout: float = 10.0) -> int:
        """Flush with a deadline, give up (and report) whatever is left, stop. Idempotent.

        Returns the number of events given up.
        """
        if self._closed:
            return 0
        self._closed = True
        producer = self._producer
        if producer is None:
            return 0
        remaining = int(producer.flush(timeout))
        if remaining:
            # Purged events get a delivery report with _PURGE_QUEUE: counted and sent to on_error.
            producer.purge()
            # The purged events' delivery reports are queued now; serve them all (on_error).
            producer.flush(_PURGE_REPORT_TIMEOUT_S)
            log.warning("closed with %d undelivered event(s) after %.1fs", remaining, timeout)
        self._stop.set()
        return remaining

    def queue_depth(self) -> int:
        """librdkafka's count of what waits to go out: messages, plus protocol requests
        (a few, e.g. metadata requests while the broker is unreachable)."""
        producer = self._producer
        return len(producer) if producer is not None else 0

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(self.settings.flush_on_exit_timeout_s)

    # -- internals -------------------------------------------------------------------------

    def _when_full(self, producer: Producer, payload: bytes, key: str) -> None:
        """produce() found the queue full: the policy decides; a given-up event is reported."""
        if self.settings.full_queue_policy == "block":
            deadline = time.monotonic() + self.settings.block_timeout_s
            while time.monotonic() < deadline:
                # Serving delivery reports here is what frees room in the queue.
                producer.poll(0.005)
                try:
                    producer.produce(self._topic, payload, key, _ANY_PARTITION, self._delivery_cb)
                    return
                except BufferError:
                    continue
                except KafkaException as exc:
                    self._give_up(_record(payload), exc.args[0])
                    return
        self.stats.dropped["queue_full"] += 1
        self._report(_record(payload), "queue_full")

    def _open(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = Producer(self._conf)
                self._stop = threading.Event()
                threading.Thread(
                    target=_poll_loop,
                    args=(weakref.ref(self), self._producer, self._stop),
                    name="rhythm-client-poll",
                    daemon=True,
                ).start()
            return self._producer

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.stats.delivered += 1
            latency = msg.latency()
            if latency is not None:
                self.stats.observe_latency(latency)
            return
        self._give_up(_record(msg.value() or b""), err)

    def _on_identify_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.stats.delivered += 1
            return
        reason = _REASONS.get(err.code(), "kafka_error")
        self.stats.failed[reason] += 1
        log.warning("identify %s not delivered: %s (%s)", msg.key(), reason, err)
        try:
            record: dict[str, Any] = Person.model_validate_json(msg.value() or b"").model_dump()
        except ValueError:
            record = {"key": msg.key()}
        self._report(record, reason)

    def _give_up(self, record: dict[str, Any], err: KafkaError) -> None:
        """A failed event: counted, logged (the first ten, then every thousandth), reported."""
        reason = _REASONS.get(err.code(), "kafka_error")
        self.stats.failed[reason] += 1
        if self._failures_logged < 10 or self._failures_logged % 1000 == 0:
            log.warning("event %s not delivered: %s (%s)", record.get("event_id"), reason, err)
        self._failures_logged += 1
        self._report(record, reason)

    def _report(self, record: dict[str, Any], reason: str) -> None:
        if self.on_error is None:
            return
        try:
            self.on_error(record, reason)
        except Exception:  # a broken callback must not break delivery
            log.exception("on_error callback raised")

    def _on_client_error(self, err: KafkaError) -> None:
        # Connection trouble is retried by librdkafka; events fail only at delivery timeout.
        # While a broker is down this fires many times a second: say it once per interval.
        now = time.monotonic()
        code = err.code()
        if now - self._errors_logged_at.get(code, -1e9) >= _ERROR_LOG_INTERVAL_S:
            self._errors_logged_at[code] = now
            log.warning("kafka: %s (repeats are muted for %ds)", err, _ERROR_LOG_INTERVAL_S)

    def _abandon_after_fork(self) -> None:
        """In a forked child: forget the parent's producer without touching it."""
        if self._producer is not None:
            # Destroying it would join threads that do not exist in this process and hang, so
            # keep it alive forever: one leaked reference instead of a deadlock at exit.
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._producer))
        self._producer = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # The parent's counts are the parent's: this process starts its own.
        self.stats = ClientStats()


def _record(payload: bytes) -> dict[str, Any]:
    """The wire record of an event the client encoded, for `on_error`."""
    return dict(decode_event(payload))


def _poll_loop(ref: weakref.ref[Client], producer: Producer, stop: threading.Event) -> None:
    interval = 0.1
    while not stop.is_set():
        client = ref()
        if client is None:
            return
        interval = client.settings.poll_interval_s
        del client
        producer.poll(interval)


# -- process-wide hooks: exit and fork -------------------------------------------------------

_LIVE: weakref.WeakSet[Client] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for client in list(_LIVE):
        try:
            client.close(client.settings.flush_on_exit_timeout_s)
        except Exception:
            log.exception("flush at exit failed")


def _after_fork_in_child() -> None:
    for client in list(_LIVE):
        client._abandon_after_fork()


class _ForkHook:
    """multiprocessing's fork children leave through os._exit, which skips atexit; they run
    multiprocessing's own finalizers instead, so the exit flush is registered there too."""

    def install(self) -> None:
        multiprocessing.util.Finalize(None, _close_all_at_exit, exitpriority=100)


_FORK_HOOK = _ForkHook()
atexit.register(_close_all_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
multiprocessing.util.register_after_fork(_FORK_HOOK, _ForkHook.install)

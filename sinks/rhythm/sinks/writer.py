"""The writer: one thread that writes sealed batches in order, each until ClickHouse has it.

Per batch (its intent already committed, see batcher.py): insert the rows with the batch's
token, insert its dead letters with a token of their own and publish them to the
dead-letter topic, then report it done (the consumer thread commits). Any failure is
retried with exponential backoff (jittered) for as long as it takes: the processors (tables/)
only emit rows that fit the columns, so a refusal means the store is unavailable or its schema
drifted - for an operator to fix, not a reason to drop data. Meanwhile the consumer keeps
polling with its partitions paused (the buffer is full), so the group membership holds and
memory stays bounded.

Batches are written one at a time, in the order sealed (so per partition in offset order):
an insert is one round trip for up to `batch_max_rows` rows while the consumer fills the
next batches, and the engine (embedded or server) parallelises the insert itself.
The writer never touches the Kafka consumer: confluent-kafka blocks any call on a consumer
from a second thread while the first one polls.
"""

from __future__ import annotations

import collections
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rhythm.sinks.batcher import Batch, TopicPartition
from rhythm.sinks.dead_letters import DeadLetterTopic
from rhythm.sinks.metrics import SinkMetrics
from rhythm.sinks.store import Store
from rhythm.sinks.tables import DEAD_LETTERS, TABLES
from rhythm.sinks.tables import dead_letters as dead_letter_rows

__all__ = ["Done", "Writer", "error_reason"]

log = logging.getLogger(__name__)

_ERROR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]{2,})\)")


@dataclass(frozen=True)
class Done:
    batch: Batch
    written: bool  # False: abandoned (partition revoked, or shutdown deadline passed)


class _AbandonedError(Exception):
    pass


def error_reason(exc: BaseException) -> str:
    """A bounded label for a failure: ClickHouse's error name, else the exception type."""
    name = getattr(exc, "name", None)
    if isinstance(name, str) and name:
        return name
    match = _ERROR_NAME.search(str(exc))
    return match.group(1) if match else type(exc).__name__


class Writer:
    def __init__(
        self,
        store: Store,
        dead_topic: DeadLetterTopic | None,
        metrics: SinkMetrics,
        on_done: Callable[[Done], None],
        *,
        backoff_min_s: float = 0.1,
        backoff_max_s: float = 10.0,
        dead_letter_max_bytes: int = 65536,
    ) -> None:
        self.store = store
        self.dead_topic = dead_topic
        self.metrics = metrics
        self.on_done = on_done
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self._cond = threading.Condition()
        self._queue: collections.deque[Batch] = collections.deque()
        self._current: Batch | None = None
        self._abandoned: set[TopicPartition] = set()
        self._stopping = False
        self._deadline: float | None = None  # set by stop(): no more retries after it
        self.last_error: str | None = None
        self.retrying = False
        self._thread = threading.Thread(target=self._run, name="rhythm-sink-writer", daemon=True)

    # -- control (consumer thread) ------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, batch: Batch) -> None:
        with self._cond:
            self._abandoned.discard(batch.tp)
            self._queue.append(batch)
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + (self._current is not None)

    def abandon(self, tps: set[TopicPartition], wait_s: float) -> None:
        """Partitions revoked: drop their queued batches; give the one being written up to
        `wait_s` to finish, then abandon it too (its intent is committed, so the new owner
        rebuilds it with the same token, and whichever insert comes second is dropped)."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            dropped = [b for b in self._queue if b.tp in tps]
            self._queue = collections.deque(b for b in self._queue if b.tp not in tps)
            while self._current is not None and self._current.tp in tps:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._abandoned |= tps
            self._cond.notify_all()
        for batch in dropped:
            self.on_done(Done(batch, written=False))

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything submitted is done; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._current is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def stop(self) -> None:
        """Stop retrying: what is queued gets one more attempt each, then the thread ends."""
        with self._cond:
            self._stopping = True
            self._deadline = time.monotonic()
            self._cond.notify_all()
        self._thread.join(timeout=30)

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = self._current = self._queue.popleft()
            written = False
            try:
                self._write(batch)
                written = True
            except _AbandonedError:
                log.info("batch %s abandoned", batch.token())
            except Exception:  # a bug: never lose the thread silently
                log.exception("writing batch %s failed", batch.token())
            with self._cond:
                self._current = None
                self._cond.notify_all()
            self.on_done(Done(batch, written))

    def _write(self, batch: Batch) -> None:
        table = TABLES[batch.kind].table
        if batch.rows:
            self._attempt(batch, table.name, lambda: self._insert(batch))
        if batch.dead:
            rows = [dead_letter_rows.row(d, self.dead_letter_max_bytes) for d in batch.dead]
            self._attempt(
                batch,
                DEAD_LETTERS.name,
                lambda: self.store.insert(DEAD_LETTERS, rows, batch.dead_token()),
            )
            dead_topic = self.dead_topic
            if dead_topic is not None:
                self._attempt(batch, "dead_letter_topic", lambda: dead_topic.publish(batch.dead))
            for dead in batch.dead:
                self.metrics.dead_letters.labels(batch.kind, dead.reason).inc()
        self.metrics.batches.labels(batch.kind).inc()
        self.metrics.batch_rows.labels(batch.kind).observe(batch.messages)

    def _insert(self, batch: Batch) -> None:
        topic_table = TABLES[batch.kind]
        table = topic_table.table
        started = time.monotonic()
        self.store.insert(table, batch.rows, batch.token())
        self.metrics.insert_seconds.labels(table.name).observe(time.monotonic() - started)
        self.metrics.rows_written.labels(table.name).inc(len(batch.rows))
        column = topic_table.event_time_index
        now_ms = time.time() * 1000
        self.metrics.freshness.observe_many(
            (max(0.0, (now_ms - row[column]) / 1000) for row in batch.rows), table.name
        )

    def _attempt(self, batch: Batch, what: str, action: Callable[[], object]) -> None:
        attempt = 0
        while True:
            try:
                action()
            except _AbandonedError:
                raise
            except Exception as exc:
                attempt += 1
                reason = error_reason(exc)
                self.metrics.retries.labels(what, reason).inc()
                self.last_error = f"{what}: {reason}: {str(exc)[:300]}"
                self.retrying = True
                if attempt == 1 or attempt % 10 == 0:
                    log.warning(
                        "%s for batch %s failed (attempt %d), retrying: %s",
                        what, batch.token(), attempt, str(exc)[:500],
                    )  # fmt: skip
                delay = min(self.backoff_max_s, self.backoff_min_s * 2 ** (attempt - 1))
                self._sleep(batch, delay * random.uniform(0.8, 1.2))
                continue
            if attempt:
                log.info("%s for batch %s succeeded after %d retries", what, batch.token(), attempt)
                self.retrying = False
            return

    def _sleep(self, batch: Batch, seconds: float) -> None:
        until = time.monotonic() + seconds
        with self._cond:
            while True:
                if batch.tp in self._abandoned:
                    raise _AbandonedError
                now = time.monotonic()
                if self._deadline is not None and now >= self._deadline:
                    raise _AbandonedError
                if now >= until:
                    return
                self._cond.wait(until - now)

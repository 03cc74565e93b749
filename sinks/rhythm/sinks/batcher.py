"""Batches: contiguous offsets of one topic-partition, cut by rows, bytes or age. Pure.

A batch is written with `insert_deduplication_token` = its topic (and topic id), partition
and offset range. For a retry to be dropped by ClickHouse, the retried batch must be exactly
the same batch - also after a crash, when it is rebuilt from Kafka by a new process whose
time-based cuts would fall elsewhere. So before a batch is inserted, the writer commits its
*intent* to Kafka: the batch's first offset, with `rhythm-sink/1 end=<last offset>` as the
commit metadata (the committed offset does not move past anything unwritten). A sink that
starts and finds such an intent rebuilds that batch exactly - same first and last offset,
whatever the size and time limits say - so its token is the same and ClickHouse drops
whatever part of it was already written. After the insert, the offset after the batch is
committed with empty metadata.

The token carries the topic's id (Kafka's UUID for it) besides its name: a topic deleted and
created again restarts at offset 0, and its first batches must not be taken for duplicates
of the old topic's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rhythm.sinks.transform import DeadLetter, Kind, Message, Outcome, Row

__all__ = ["INTENT_PREFIX", "Batch", "Batcher", "intent_metadata", "parse_intent"]

INTENT_PREFIX = "rhythm-sink/1 end="

TopicPartition = tuple[str, int]


def intent_metadata(end: int) -> str:
    return f"{INTENT_PREFIX}{end}"


def parse_intent(metadata: str | None) -> int | None:
    """The last offset of the batch that was being written, from commit metadata."""
    if not metadata or not metadata.startswith(INTENT_PREFIX):
        return None
    try:
        return int(metadata[len(INTENT_PREFIX) :])
    except ValueError:
        return None


@dataclass
class Batch:
    kind: Kind
    topic: str
    partition: int
    start: int
    end: int
    topic_id: str = ""
    rows: list[Row] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    nbytes: int = 0
    opened_at: float = 0.0
    #: rebuilt from an intent: it must end exactly at `end`
    forced: bool = False

    @property
    def messages(self) -> int:
        return len(self.rows) + len(self.dead)

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)

    def token(self) -> str:
        return f"rhythm:{self.topic}:{self.topic_id}:{self.partition}:{self.start}-{self.end}"

    def dead_token(self) -> str:
        return self.token() + ":dead"


class Batcher:
    """Open batches per topic-partition. `messages` and `nbytes` count what is open here;
    the caller accounts for sealed batches until they are written."""

    def __init__(
        self,
        max_rows: int,
        max_bytes: int,
        max_seconds: float,
        topic_ids: dict[str, str] | None = None,
    ) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.topic_ids = topic_ids if topic_ids is not None else {}
        self._open: dict[TopicPartition, Batch] = {}
        self._pending: dict[TopicPartition, tuple[int, int]] = {}
        self.messages = 0
        self.nbytes = 0

    def expect(self, topic: str, partition: int, start: int, end: int) -> None:
        """The last run was writing [start..end] of this partition: rebuild exactly that."""
        self._pending[(topic, partition)] = (start, end)

    def add(self, kind: Kind, message: Message, outcome: Outcome, now: float) -> list[Batch]:
        """Add one message; returns the batches this completes (usually none)."""
        tp = (message.topic, message.partition)
        sealed: list[Batch] = []
        pending = self._pending.get(tp)
        if pending is not None and message.offset > pending[1]:
            # The rest of the pending batch is gone from the log (retention): close it short.
            del self._pending[tp]
            pending = None
            if tp in self._open:
                sealed.append(self._seal(tp))
        batch = self._open.get(tp)
        if batch is None:
            start = pending[0] if pending is not None else message.offset
            batch = Batch(
                kind=kind,
                topic=message.topic,
                partition=message.partition,
                start=start,
                end=message.offset,
                topic_id=self.topic_ids.get(message.topic, ""),
                opened_at=now,
                forced=pending is not None,
            )
            self._open[tp] = batch
        if isinstance(outcome, DeadLetter):
            batch.dead.append(outcome)
        else:
            batch.rows.append(outcome)
        batch.end = message.offset
        batch.nbytes += message.size
        self.messages += 1
        self.nbytes += message.size
        if pending is not None:
            if message.offset >= pending[1]:
                del self._pending[tp]
                sealed.append(self._seal(tp))
        elif batch.messages >= self.max_rows or batch.nbytes >= self.max_bytes:
            sealed.append(self._seal(tp))
        return sealed

    def due(self, now: float) -> list[Batch]:
        """Batches open for `max_seconds` (a rebuilt batch waits for its last offset)."""
        return [
            self._seal(tp)
            for tp, batch in list(self._open.items())
            if not batch.forced and now - batch.opened_at >= self.max_seconds
        ]

    def seal_largest(self) -> Batch | None:
        """For a full buffer: the biggest open batch, even a rebuilt one (whose token will
        then differ from the first attempt's; ReplacingMergeTree still folds the copies)."""
        if not self._open:
            return None
        tp = max(self._open, key=lambda k: self._open[k].messages)
        self._pending.pop(tp, None)
        return self._seal(tp)

    def seal_all(self) -> list[Batch]:
        return [self._seal(tp) for tp in list(self._open)]

    def drop(self, topic: str, partition: int) -> tuple[int, int]:
        """Forget a partition (revoked): returns the messages and bytes dropped."""
        tp = (topic, partition)
        self._pending.pop(tp, None)
        batch = self._open.pop(tp, None)
        if batch is None:
            return 0, 0
        self.messages -= batch.messages
        self.nbytes -= batch.nbytes
        return batch.messages, batch.nbytes

    def open_batches(self) -> int:
        return len(self._open)

    def _seal(self, tp: TopicPartition) -> Batch:
        batch = self._open.pop(tp)
        self.messages -= batch.messages
        self.nbytes -= batch.nbytes
        return batch

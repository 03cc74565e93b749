"""Batches: contiguous offsets of one topic-partition, cut by rows, bytes or age. Pure.

A batch is written with `insert_deduplication_token` = its topic (and topic id), partition
and offset range. For a retry to be dropped by ClickHouse, the retried batch must be exactly
the same batch - also after a crash, when it is rebuilt from Kafka by a new process whose
time-based cuts would fall elsewhere. So before a batch goes to the writer, its *intent* is
committed to Kafka: the committed offset stays at the first unwritten batch's first offset,
and the commit metadata lists where each unwritten batch of that partition ends
(`rhythm-sink/1 ends=120,245`). A sink that starts and finds such an intent rebuilds those
batches exactly - same first and last offsets, whatever the size and time limits say - so
their tokens are the same and ClickHouse drops whatever part of them was already written.
When a batch is written, the offset moves past it and the list loses its first entry.

The token carries the topic's id (Kafka's UUID for it) besides its name: a topic deleted and
created again restarts at offset 0, and its first batches must not be taken for duplicates
of the old topic's.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field

from rhythm.sinks.tables.rows import DeadLetter, Kind, Message, Outcome, Row, Skipped

__all__ = ["INTENT_PREFIX", "Batch", "Batcher", "intent_metadata", "parse_intent"]

INTENT_PREFIX = "rhythm-sink/1 ends="
#: Kafka keeps at most offset.metadata.max.bytes (4096 by default) of metadata.
MAX_INTENTS = 100

TopicPartition = tuple[str, int]


def intent_metadata(ends: Sequence[int]) -> str:
    """Commit metadata naming the last offset of each unwritten batch ("" if none)."""
    if not ends:
        return ""
    return INTENT_PREFIX + ",".join(map(str, ends))


def parse_intent(metadata: str | None) -> list[int]:
    """The last offsets of the batches that were being written, from commit metadata."""
    if not metadata or not metadata.startswith(INTENT_PREFIX):
        return []
    try:
        ends = [int(x) for x in metadata[len(INTENT_PREFIX) :].split(",")]
    except ValueError:
        return []
    return ends if ends == sorted(set(ends)) else []


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
    skipped: int = 0  # messages that are no row (tables/rows.py, Skipped)
    nbytes: int = 0
    opened_at: float = 0.0
    #: rebuilt from an intent: it must end exactly at `end`
    forced: bool = False

    @property
    def messages(self) -> int:
        return len(self.rows) + len(self.dead) + self.skipped

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
        #: batches to rebuild exactly: (first offset of the next one, where each ends)
        self._pending: dict[TopicPartition, tuple[int, collections.deque[int]]] = {}
        self.messages = 0
        self.nbytes = 0

    def expect(self, topic: str, partition: int, start: int, ends: Sequence[int]) -> None:
        """The last run was writing batches from `start` ending at `ends`: rebuild them."""
        if ends:
            self._pending[(topic, partition)] = (start, collections.deque(ends))

    def add(self, kind: Kind, message: Message, outcome: Outcome, now: float) -> list[Batch]:
        """Add one message; returns the batches this completes (usually none)."""
        tp = (message.topic, message.partition)
        sealed: list[Batch] = []
        pending = self._pending.get(tp)
        while pending is not None and message.offset > pending[1][0]:
            # The end of a batch to rebuild is gone from the log (retention): close it short.
            if tp in self._open:
                sealed.append(self._seal(tp))
            pending = self._advance(tp, pending[1][0])
        batch = self._open.get(tp)
        if batch is None:
            batch = Batch(
                kind=kind,
                topic=message.topic,
                partition=message.partition,
                start=pending[0] if pending is not None else message.offset,
                end=message.offset,
                topic_id=self.topic_ids.get(message.topic, ""),
                opened_at=now,
                forced=pending is not None,
            )
            self._open[tp] = batch
        if isinstance(outcome, DeadLetter):
            batch.dead.append(outcome)
        elif isinstance(outcome, Skipped):
            batch.skipped += 1
        else:
            batch.rows.append(outcome)
        batch.end = message.offset
        batch.nbytes += message.size
        self.messages += 1
        self.nbytes += message.size
        if pending is not None:
            if message.offset == pending[1][0]:
                sealed.append(self._seal(tp))
                self._advance(tp, message.offset)
        elif batch.messages >= self.max_rows or batch.nbytes >= self.max_bytes:
            sealed.append(self._seal(tp))
        return sealed

    def _advance(self, tp: TopicPartition, end: int) -> tuple[int, collections.deque[int]] | None:
        """The rebuilt batch ending at `end` is done: the next one starts after it."""
        _start, ends = self._pending[tp]
        ends.popleft()
        if not ends:
            del self._pending[tp]
            return None
        self._pending[tp] = (end + 1, ends)
        return self._pending[tp]

    def due(self, now: float) -> list[Batch]:
        """Batches open for `max_seconds` (a rebuilt batch waits for its last offset)."""
        return [
            self._seal(tp)
            for tp, batch in list(self._open.items())
            if not batch.forced and now - batch.opened_at >= self.max_seconds
        ]

    def seal_largest(self) -> Batch | None:
        """For a full buffer: the biggest open batch that is not being rebuilt. A rebuilt
        batch is never cut here: cut short, its token would differ from the first attempt's
        and ClickHouse would keep both copies (see `nearest_rebuilt`)."""
        free = [tp for tp, batch in self._open.items() if not batch.forced]
        if not free:
            return None
        return self._seal(max(free, key=lambda k: self._open[k].messages))

    def nearest_rebuilt(self) -> tuple[TopicPartition, int] | None:
        """The open rebuilt batch closest to its end, and how many offsets it still lacks:
        with the buffer full of rebuilt batches, the caller reads on from that partition
        alone until it is complete (overshooting the buffer by less than one batch)."""
        lacking = {tp: self._pending[tp][1][0] - self._open[tp].end for tp in self.rebuilding()}
        if not lacking:
            return None
        tp = min(lacking, key=lambda k: lacking[k])
        return tp, lacking[tp]

    def rebuilding(self) -> list[TopicPartition]:
        """The partitions whose open batch is being rebuilt from an intent."""
        return [tp for tp, batch in self._open.items() if batch.forced and tp in self._pending]

    def seal_short(self, topic: str, partition: int) -> Batch | None:
        """Close a rebuilt batch before its end, whose remaining offsets the log no longer
        has (a topic emptied): the rest of it, if it ever comes, starts a batch of its own."""
        tp = (topic, partition)
        if tp not in self._open:
            return None
        batch = self._seal(tp)
        pending = self._pending.get(tp)
        if pending is not None:
            self._pending[tp] = (batch.end + 1, pending[1])
        return batch

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

    def open_end(self, tp: TopicPartition) -> int:
        """The last offset read into the partition's open batch (-1 if none)."""
        batch = self._open.get(tp)
        return batch.end if batch is not None else -1

    def open_batches(self) -> int:
        return len(self._open)

    def _seal(self, tp: TopicPartition) -> Batch:
        batch = self._open.pop(tp)
        self.messages -= batch.messages
        self.nbytes -= batch.nbytes
        return batch

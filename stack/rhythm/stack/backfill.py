"""`rhythm backfill`: history into the history lane (ARCHITECTURE.md, "the history lane").

History (a JSON Lines file of canonical events, or a topic of wire-format events, e.g. an
archive) is selected (`--tenant`, `--from`, `--to`), sorted by event time and published in
that order to `rhythm.history` (one partition: the lane's watermark is this stream's newest
event time). The history lane's worker (`rhythm up` runs it) computes its windows exactly as
the live lane would have, live and in order, and writes them to the same signals and alerts
topics (alerts marked historical). Then this command follows the lane until it has done
what was published: events processed, event time reached, an ETA.

Windows the live lane also saw (the same tenant and entities, the same period): the import
holds only the history, so before publishing, this command waits until the sink has stored
what the live lane was given, and sends the lane, merged in time order with the import, the
stored events of the windows the import touches as copies, each entity's previous stored
event as a note (rhythm.processors.copies; the sink stores neither again), so the lane
re-emits those windows from every event. The lane may re-emit only windows the live lane
will never change again: history newer than that (`cut`: the live lane's watermark less its
lateness and late retention, to its largest window) waits on the later topic
(`rhythm.history.later`) and is imported the same way once the live lane is done with it
(`take_later`, `commit_later`: `rhythm backfill --later`, which `rhythm up` runs every minute).
An import changes the first gap of each entity's next stored event after it: when that event
is in a window the live lane may still change, it waits on the later topic too (`next_events`,
header `next`) and is imported again, from the store, once the live lane is done with it: the
lane then re-emits its windows with every event and the history's last as its previous one.

History older than what the lane has already made final for its tenant (a second source for
the same period, a part of an export not cut at midnight UTC) *rewinds* the tenant
(`rewinds`, `with_replay`): the lane forgets the tenant's state and computes it again, from
its start, from every event of the tenant the store holds up to the end of what it computes
(sent whole, header `replay`) merged with the import; its new rows win in the store
(processors/tenants.py). The cost is the tenant's whole stored history up to there.

Pure parts (`select`, `cut`, `split_recent`, `touched`, `Tracker`) apart from the I/O
(`read_file`, `read_topic`, `with_copies`, `publish`, `take_later`, `follow`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from rhythm.processors import copies
from rhythm.processors.explode import entity_keys
from rhythm.processors.lanes import too_late
from rhythm.producers.prepare import prepare_event
from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.schemas import WireError, decode_event, encode_event
from rhythm.schemas.topics import (
    HISTORY_KIND_HEADER,
    KIND_COPY,
    KIND_NEXT,
    KIND_NOTE,
    KIND_REPLAY,
)
from rhythm.stack.ingest import parse_line, reject_line

#: (event time in epoch ms, the event in the wire format)
Timed = tuple[int, bytes]


@dataclass
class Selection:
    """Which history goes to the lane: a tenant (None: all) and [from, to) in epoch ms."""

    tenant: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None

    def wants(self, tenant: str, ts: int) -> bool:
        return (
            (self.tenant is None or tenant == self.tenant)
            and (self.from_ms is None or ts >= self.from_ms)
            and (self.to_ms is None or ts < self.to_ms)
        )


@dataclass
class Read:
    events: list[Timed] = field(default_factory=list)
    lines: int = 0
    invalid: int = 0
    left_out: int = 0  # valid, outside the selection


def select(records: Iterable[tuple[str, int, bytes]], selection: Selection, read: Read) -> None:
    """(tenant, event time, wire bytes) into `read.events` when selected."""
    for tenant, ts, value in records:
        if selection.wants(tenant, ts):
            read.events.append((ts, value))
        else:
            read.left_out += 1


def in_order(events: list[Timed]) -> list[Timed]:
    """By event time (stable: a file's order among equal times is kept)."""
    return sorted(events, key=lambda e: e[0])


def unique(events: list[Timed]) -> tuple[list[Timed], int]:
    """The first of each event id (an export re-sent in part): the sink stores each once.
    Returns the events and how many were left out."""
    seen: set[str] = set()
    out: list[Timed] = []
    for ts, value in events:
        event_id = str(decode_event(value)["event_id"])
        if event_id not in seen:
            seen.add(event_id)
            out.append((ts, value))
    return out, len(events) - len(out)


def cut(
    watermark_ms: int, window_sizes_ms: tuple[int, ...], lateness_ms: int, retention_ms: int
) -> int:
    """The start of the oldest window the live lane may still change at `watermark_ms`:
    every event before it is too late there (lanes.too_late), every event at or after it
    is not (the largest window nests the others)."""
    size = max(window_sizes_ms)
    mark = watermark_ms - lateness_ms - retention_ms
    return mark - mark % size


def split_recent(events: list[Timed], before_ms: int) -> tuple[list[Timed], list[Timed]]:
    """(older than `before_ms`, the rest)."""
    return [e for e in events if e[0] < before_ms], [e for e in events if e[0] >= before_ms]


@dataclass
class Own:
    """The import, decoded for the planning: (event time, event id, value, headers), each
    event's (time, entity keys), and its threads' messages ((tenant, context id))."""

    events: list[tuple[int, str, bytes, copies.Headers]] = field(default_factory=list)
    touched: list[tuple[int, list[str]]] = field(default_factory=list)
    contexts: list[dict[str, Any]] = field(default_factory=list)


def touched(events: list[Timed]) -> Own:
    own = Own()
    for ts, value in events:
        record = decode_event(value)
        own.events.append((ts, str(record["event_id"]), value, []))
        own.touched.append((ts, entity_keys(record)))
        if record.get("context_id") is not None:
            own.contexts.append({"tenant": record["tenant"], "context_id": record["context_id"]})
    return own


Rows = Callable[[str], list[dict[str, Any]]]


def with_copies(
    events: list[Timed],
    rows: Rows,
    database: str,
    window_sizes_ms: tuple[int, ...],
    live_final: Callable[[int], bool],
    finals: Mapping[str, int] | None = None,
) -> tuple[copies.Merged, list[Timed]]:
    """The import merged with the stored events of its windows and of its threads from
    each tenant's final time in the lane (`finals`; module doc): `rows(sql)` asks the
    store. Returns the merge and the stored next events whose first gap the import changes
    in windows the live lane may still change (`next_events`)."""
    own = touched(events)
    spans = copies.spans(own.touched, window_sizes_ms)
    following = [r for sql in copies.neighbour_queries(database, spans, False) for r in rows(sql)]
    spans, kept = copies.extend(spans, following, window_sizes_ms, live_final)
    stored = [r for sql in copies.stored_queries(database, spans) for r in rows(sql)]
    previous = [r for sql in copies.neighbour_queries(database, spans, True) for r in rows(sql)]
    threads_of = copies.threads(own.contexts, spans, finals or {})
    in_threads = [r for sql in copies.thread_queries(database, threads_of) for r in rows(sql)]
    merged = copies.merge(
        own.events, stored, previous, spans, stored_wins=True, thread_rows=in_threads
    )
    # An event the store already held (imported again: a `next` one, a re-sent export)
    # changes no gap after it: only the keys of new events.
    held = {str(r["event_id"]) for r in stored}
    new_keys = {
        key
        for (_, event_id, _, _), (_, keys) in zip(own.events, own.touched, strict=True)
        if event_id not in held
        for key in keys
    }
    kept = [r for r in kept if copies.row_key(r) in new_keys]
    return merged, next_events(kept, rows, database)


def next_events(kept: list[Mapping[str, Any]], rows: Rows, database: str) -> list[Timed]:
    """The stored events named by `kept` (next rows: key and time), as wire events, each once,
    in time order: to import again once the live lane is done with their windows."""
    if not kept:
        return []
    return copies.stored_events(r for sql in copies.at_queries(database, kept) for r in rows(sql))


@dataclass(frozen=True)
class Rewind:
    """A tenant the import rewinds: its next epoch, and the end (epoch ms, a day's end) of
    what the lane had made final for it."""

    tenant: str
    epoch: int
    final_ms: int


def finals(page: Mapping[str, Any] | None, lateness_ms: int) -> dict[str, int]:
    """Each tenant's final time in the history lane, from its `/tenants` page (its
    watermark less the lateness; None or empty: nothing final yet)."""
    marks: Mapping[str, int] = (page or {}).get("watermarks") or {}
    return {tenant: int(mark) - lateness_ms for tenant, mark in marks.items()}


def rewinds(
    events: Iterable[Timed], page: Mapping[str, Any] | None, lateness_ms: int
) -> dict[str, Rewind]:
    """The tenants with an event older than what the history lane made final for them
    (its `/tenants` page: watermarks, epochs)."""
    final = finals(page, lateness_ms)
    epochs: Mapping[str, int] = (page or {}).get("epochs") or {}
    out: dict[str, Rewind] = {}
    if not final:
        return out
    for ts, value in events:
        tenant = str(decode_event(value)["tenant"])
        end = final.get(tenant)
        if tenant not in out and end is not None and ts < end:
            out[tenant] = Rewind(tenant, int(epochs.get(tenant, 0)) + 1, end)
    return out


@dataclass
class Replayed:
    messages: list[tuple[int, bytes, copies.Headers]]
    replayed: int = 0  # stored events re-sent whole
    dropped: int = 0  # copies and notes the replay holds already


def with_replay(
    messages: list[tuple[int, bytes, copies.Headers]],
    plan: Mapping[str, Rewind],
    rows: Rows,
    database: str,
    window_sizes_ms: tuple[int, ...],
    before_ms: int,
) -> Replayed:
    """The merged import (`with_copies`'s messages) for rewound tenants (module doc): per
    tenant, a `rewind` first, then, in time order, every stored event of it before `end`
    (the end of the last whole window of what the lane computes for it: its final before,
    or the import's last message, never at or after `before_ms`, what the live lane may
    still change) sent whole instead of the copies and notes before `end`."""
    if not plan:
        return Replayed(list(messages))
    tenant_of = [str(decode_event(value)["tenant"]) for _, value, _ in messages]
    ends: dict[str, int] = {t: r.final_ms for t, r in plan.items()}
    for (ts, _, _), tenant in zip(messages, tenant_of, strict=True):
        if tenant in ends:
            ends[tenant] = max(ends[tenant], copies.span_of(ts, window_sizes_ms)[1])
    ends = {t: min(end, before_ms) for t, end in ends.items()}
    out = Replayed([])
    by_copy = {KIND_COPY.encode(), KIND_NOTE.encode()}
    kept: list[tuple[int, bytes, copies.Headers]] = []
    for (ts, value, headers), tenant in zip(messages, tenant_of, strict=True):
        end = ends.get(tenant)
        kind = dict(headers).get(HISTORY_KIND_HEADER)
        if end is not None and ts < end and kind in by_copy:
            out.dropped += 1
            continue
        kept.append((ts, value, headers))
    replay = copies.headers(KIND_REPLAY)
    for tenant in sorted(plan):
        stored = copies.stored_events(
            r for sql in copies.tenant_queries(database, tenant, ends[tenant]) for r in rows(sql)
        )
        out.replayed += len(stored)
        kept.extend((ts, value, replay) for ts, value in stored)
    kept.sort(key=lambda m: m[0])
    out.messages = [
        (-1, *copies.rewind_message(r.tenant, r.epoch)) for _, r in sorted(plan.items())
    ] + kept
    return out


@dataclass
class Later:
    """What waits on the later topic (`take_later`): the events the live lane is done with
    (a prefix, in the order published), the offset to commit once they are imported, and
    how many are left waiting behind them."""

    events: list[Timed] = field(default_factory=list)
    next: int = 0  # of `events`, stored ones imported again (`next_events`)
    commit_offset: int | None = None
    waiting: int = 0
    next_ms: int | None = None  # the event time of the first one still waiting


def ensure_topic(kafka: KafkaSettings, topic: str, timeout: float = 30.0) -> None:
    """Create a one-partition topic if the broker lacks it (the later topic of a stack set
    up before it existed; a test's own names)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(kafka.to_librdkafka())
    if topic in admin.list_topics(timeout=timeout).topics:
        return
    try:
        admin.create_topics([NewTopic(topic, 1)])[topic].result(timeout)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise


def take_later(
    kafka: KafkaSettings, topic: str, group: str, before_ms: int, timeout: float = 30.0
) -> Later:
    """The later topic's events, from the group's committed offset on, as long as each is
    older than `before_ms` (the live lane's `cut`): the first newer one and everything
    behind it wait, so what is imported and what is committed are one prefix."""
    from confluent_kafka import Consumer, TopicPartition

    conf = kafka.to_librdkafka()
    conf.update({"group.id": group, "enable.auto.commit": False})
    consumer = Consumer(conf)
    later = Later()
    try:
        tp = TopicPartition(topic, 0)
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
        committed = consumer.committed([tp], timeout=timeout)[0].offset
        position = max(committed, low)  # none yet (< 0), or expired: the oldest kept
        if position >= high:
            return later
        consumer.assign([TopicPartition(topic, 0, position)])
        deadline = time.monotonic() + timeout
        while position < high and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            value = msg.value() or b""
            ts = int(decode_event(value)["occurred_at"])  # written by `defer`: valid
            if ts >= before_ms:
                later.next_ms = ts
                break
            later.events.append((ts, value))
            later.next += (HISTORY_KIND_HEADER, KIND_NEXT.encode()) in (msg.headers() or [])
            position = (msg.offset() or 0) + 1
        later.commit_offset = position if later.events else None
        later.waiting = high - position
        return later
    finally:
        consumer.close()


def commit_later(kafka: KafkaSettings, topic: str, group: str, offset: int) -> None:
    """Record that the later topic is imported up to `offset` (after the import was
    delivered to the history lane's input)."""
    from confluent_kafka import Consumer, TopicPartition

    conf = kafka.to_librdkafka()
    conf.update({"group.id": group, "enable.auto.commit": False})
    consumer = Consumer(conf)
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def live_final(
    watermark_ms: int, window_sizes_ms: tuple[int, ...], lateness_ms: int, retention_ms: int
) -> Callable[[int], bool]:
    """Whether the live lane will never change the windows of an event at `ts` again."""
    return lambda ts: too_late(ts, watermark_ms, window_sizes_ms, lateness_ms, retention_ms)


def read_file(
    lines: Iterable[bytes], selection: Selection, rejects: TextIO, now_ms: int | None = None
) -> Read:
    """Canonical JSON lines, validated as the client does (an event without an id gets a
    UUIDv7); invalid lines go to `rejects` with their number and reason."""
    read = Read()
    sent_at = now_ms if now_ms is not None else time.time_ns() // 1_000_000

    def records() -> Iterator[tuple[str, int, bytes]]:
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            read.lines += 1
            try:
                record, _key = prepare_event(parse_line(raw))
            except ValueError as exc:
                read.invalid += 1
                rejects.write(reject_line(number, raw, exc))
                continue
            record["sent_at"] = sent_at
            yield record["tenant"], int(record["occurred_at"]), encode_event(record)

    select(records(), selection, read)
    return read


def read_topic(
    kafka: KafkaSettings, topic: str, selection: Selection, idle_timeout: float = 5.0
) -> Read:
    """Every message of `topic` from its beginning until it has been quiet `idle_timeout`
    seconds; wire-format events (undecodable ones counted invalid)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    read = Read()
    conf = kafka.to_librdkafka()
    conf.update({"group.id": f"rhythm-backfill-{uuid.uuid4()}", "enable.auto.commit": False})
    consumer = Consumer(conf)

    def records() -> Iterator[tuple[str, int, bytes]]:
        info = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if info is None or info.error is not None:
            raise SystemExit(f"topic {topic!r} not found on {kafka.bootstrap_servers}")
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in info.partitions])
        last = time.monotonic()
        while time.monotonic() - last < idle_timeout:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            last = time.monotonic()
            read.lines += 1
            value = msg.value() or b""
            try:
                record = decode_event(value)
            except WireError:
                read.invalid += 1
                continue
            yield record["tenant"], int(record["occurred_at"]), value

    try:
        select(records(), selection, read)
    finally:
        consumer.close()
    return read


def publish(
    kafka: KafkaSettings,
    topic: str,
    events: list[tuple[int, bytes, copies.Headers]],
    timeout: float = 120.0,
) -> int:
    """(event time, value, headers) in the order given, to partition 0 of `topic`
    (idempotent, acks=all: Kafka keeps the order); returns how many were not delivered."""
    from confluent_kafka import KafkaError, Producer

    failed = 0

    def report(err: KafkaError | None, _msg: Any) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    producer = Producer(
        {
            **kafka.to_librdkafka(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "lz4",
        }
    )
    for _ts, value, headers in events:
        extra: list[tuple[str, str | bytes | None]] = list(headers)
        while True:
            try:
                producer.produce(topic, value, partition=0, on_delivery=report, headers=extra)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(timeout)
    return failed + left


@dataclass
class Tracker:
    """The lane's progress through what was published: `update(done, event_time_s, now)`
    with the monotonic clock; the rate over the whole run so far gives the ETA."""

    total: int
    started: float
    done: int = 0
    event_time_s: float | None = None
    at: float = 0.0

    def update(self, done: int, event_time_s: float | None, now: float) -> None:
        self.done = max(self.done, min(done, self.total))
        if event_time_s is not None:
            self.event_time_s = event_time_s
        self.at = now

    @property
    def rate(self) -> float:
        elapsed = self.at - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        """Seconds to go at the rate so far (None: no rate yet); 0 when done."""
        if self.done >= self.total:
            return 0.0
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None

    def line(self) -> str:
        reached = (
            datetime.fromtimestamp(self.event_time_s, UTC).strftime("%Y-%m-%d %H:%M")
            if self.event_time_s is not None
            else "-"
        )
        eta = self.eta_s()
        eta_text = "-" if eta is None else f"{eta:,.0f}s"
        return (
            f"{self.done:,}/{self.total:,} events, event time reached {reached}, "
            f"{self.rate:,.0f}/s, ETA {eta_text}"
        )


def follow(
    tracker: Tracker,
    remaining: Callable[[], int | None],
    event_time_s: Callable[[], float | None],
    show: Callable[[str], None],
    timeout: float,
    poll_s: float = 1.0,
) -> bool:
    """Until the lane has nothing of it left (`remaining()` 0), or `timeout`; shows a line
    per poll. True when done."""
    deadline = tracker.started + timeout
    while True:
        now = time.monotonic()
        left = remaining()
        if left is not None:
            tracker.update(tracker.total - left, event_time_s(), now)
            show(tracker.line())
            if left == 0:
                return True
        if now > deadline:
            return False
        time.sleep(poll_s)

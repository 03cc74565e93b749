"""Every use of a private part of Faust in Rhythm, in one place, for one Faust version.

Faust's public API has no way to say which input offsets may be committed, to read the
offsets it committed, to direct a table write to a partition's changelog outside a
stream's iteration, or to read one partition's RocksDB database. Rhythm needs each of
these (see the functions below), so it uses Faust's private attributes for them, here and
nowhere else. They are read from faust-streaming 0.15.3 (pinned in pyproject.toml):
`check_version()` is called when the processors start and refuses any other version, so an
upgrade has to come through this file and `tests/unit/test_holes_faust.py`, which drives
Faust's own consumer bookkeeping through dropped offsets.

Why Rhythm replaces Faust's fetch loop (`drain_messages`): Faust hands each fetched message
to the streams through `Service.wait_first`, four tasks and an `asyncio.wait` per message,
most of what an empty agent costs (80 µs of CPU per message here; 27 µs with this loop and
`LeanMonitor`). The loop here delivers inline and falls back to Faust's race only when a
delivery has to wait; what is delivered, in which order, and what is dropped at a rebalance
are Faust's.

Why Rhythm chooses the commit offsets itself (`guard_commits`): Faust 0.15.3 commits, per
partition, the end of the first run of consecutive acked offsets (`Consumer._new_offset`),
after adding to the acked offsets every gap its fetch loop saw in the offsets it read
(`Consumer._add_gap`, meant for compacted topics and transaction markers). Rhythm's inputs
have neither, so a gap there is a record Faust's fetcher dropped (see holes.py), and Faust
counts it as done: a hole of any size is committed over as soon as an offset after it is
acked (tests/unit/test_holes_faust.py shows it with Faust's own code). Before a partition's
first commit (`_committed_offset` None, or 0, which Faust stores as None) nothing is
compared with where the partition starts, and an agent that raises in the middle of a
`take_events` batch still has the whole batch acked (the generator's `finally`). So the
offset committed for Rhythm's input topics is the guard's: the end of the run of offsets
the agents finished, without a gap, from where the partition started (holes.py).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping
from typing import Any

import faust
from faust.types import TP, EventT

__all__ = [
    "FAUST_VERSION",
    "check_version",
    "committed_offsets",
    "drain_messages",
    "guard_commits",
    "kafka_producer",
    "partition_items",
    "set_current_event",
    "table_items",
]

FAUST_VERSION = "0.15.3"


def check_version(version: str | None = None) -> None:
    """Refuse to start on a Faust whose private parts were not read for this file."""
    found = faust.__version__ if version is None else version
    if found != FAUST_VERSION:
        raise RuntimeError(
            f"rhythm.processors needs faust-streaming=={FAUST_VERSION} (found {found}): "
            "it relies on private parts of that version's consumer, tables and streams "
            "(processors/rhythm/processors/faust_private.py)"
        )


def committed_offsets(consumer: Any) -> Mapping[TP, int | None]:
    """The offsets Faust committed (or found committed at assignment) per partition.
    `Consumer._committed_offset`: None where nothing was committed yet, and also where the
    committed offset is 0 (Faust's `perform_seek` stores 0 as None)."""
    offsets: Mapping[TP, int | None] = getattr(consumer, "_committed_offset", {})
    return dict(offsets)


def kafka_producer(app: faust.App) -> Any:
    """The started aiokafka producer under Faust's (`Producer._ensure_producer`), for
    aiokafka's public batch API (outbox.py), which Faust's producer does not pass on."""
    producer: Any = app.producer
    return producer._ensure_producer()


def set_current_event(event: EventT[Any]) -> None:
    """Table writes made now go to the changelog partition of `event`'s partition (Faust
    takes it from the context variable its streams set while iterating)."""
    from faust.streams import _current_event

    _current_event.set(weakref.ref(event))


def partition_items(store: Any, partition: int) -> Iterable[tuple[Any, Any]] | None:
    """The items of one partition's database of a RocksDB store, or None for a store
    without per-partition databases (`Store._db_for_partition`, `Store._visible_items`)."""
    per_partition = getattr(store, "_db_for_partition", None)
    visible = getattr(store, "_visible_items", None)
    if per_partition is None or visible is None:
        return None
    items: Iterable[tuple[Any, Any]] = visible(per_partition(partition))
    return items


def guard_commits(app: faust.App, topics: set[str], frontier: Callable[[TP], int | None]) -> None:
    """Make the consumer `app` creates commit, for `topics`, only `frontier(tp)`: the offset
    up to which everything was processed (None: nothing yet), and seek in its own thread.
    Must be called before `app.consumer` is first used (it is created lazily); the
    transport's `Consumer` class is replaced by a subclass for that. For other topics Faust's
    own choice of offset stands."""
    transport: Any = app.transport
    base: type[Any] = transport.Consumer

    class GuardedConsumer(base):  # type: ignore[misc]
        """Faust's aiokafka consumer, with the commit offset of Rhythm's inputs chosen by
        Rhythm (see the module's docstring)."""

        def _new_offset(self, tp: TP) -> int | None:
            if tp.topic not in topics:
                offset: int | None = super()._new_offset(tp)
                return offset
            done = frontier(tp)
            if done is not None:
                # Faust's acks and gaps are not used for these partitions: drop what the
                # frontier has passed, as its own _new_offset would, so they do not pile up.
                acked: list[int] = self._acked[tp]
                if acked:
                    passed = {o for o in acked if o < done}
                    if passed:
                        acked[:] = [o for o in acked if o >= done]
                        self._acked_index[tp].difference_update(passed)
                gap = self._gap.get(tp)
                if gap:
                    gap.chop(0, done)
            return done

        async def _drain_messages(self, fetcher: Any) -> None:
            await drain_messages(self, fetcher)

        async def _seek(self, partition: TP, offset: int) -> None:
            # Faust's ThreadDelegateConsumer._seek calls aiokafka's seek from the app's
            # thread, while the consumer thread's fetcher reads and changes the same
            # structures (its records per partition, the position, futures of its loop): at
            # load 8, a worker building a million entities crashed twice with a KeyError in
            # aiokafka's fetched_records right after such a seek. Run it in the consumer's
            # own thread and loop, as Faust does for seek_to_committed.
            thread = self._thread

            async def seek() -> None:
                thread.seek(partition, offset)

            await thread.call_thread(seek)

    transport.Consumer = GuardedConsumer


def table_items(table: Any, partition: int) -> Iterable[tuple[str, bytes]]:
    """The table's keys written for one partition. The RocksDB store keeps one database per
    partition (a write goes to its event's partition), so read only that one: reading the
    whole table for each partition made restoring P partitions cost P full scans (minutes
    with a million entities). The callers still filter by key, so a store without
    per-partition databases (any other) gives the same result, only slower."""
    items = partition_items(table.data, partition)
    if items is None:
        items = table.items()
    for raw, value in items:
        key = raw
        if isinstance(raw, bytes):
            try:
                key = raw.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:  # not a key of ours: restore reports it unreadable
                key = raw.decode("utf-8", "replace")
        yield key, value


class _Rest:
    """The rest of a coroutine that suspended on `pending`, as an awaitable a task can run:
    each value it is resumed with (or exception thrown in) is passed on to the coroutine, and
    each future the coroutine waits on is passed up to the task."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro, self._pending = coro, pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        try:
            while True:
                try:
                    value = yield pending
                except GeneratorExit:
                    coro.close()
                    raise
                except BaseException as exc:  # the coroutine decides what it means
                    pending = coro.throw(exc)
                else:
                    pending = coro.send(value)
        except StopIteration as stop:
            return stop.value


DRAIN_WAIT_S = 0.05  # the longest `_until_drained` holds the fetch loop


class _Drop:
    """The fetch loop's pressure-drop callback for one stream queue: registered at most once
    at a time, so waits that time out do not pile callbacks up. mode's queue calls one
    pending callback per `get` once it is down to its drop size, in no set order: with a new
    callback left behind by every timed-out wait, Faust's own (`on_pressure_drop`, which lets
    the fetcher read the partition again) could come after dozens of stale ones."""

    __slots__ = ("future", "pending")

    def __init__(self) -> None:
        self.future: asyncio.Future[None] | None = None
        self.pending = False  # in the queue's pending callbacks

    def __call__(self) -> None:
        self.pending = False  # mode took it out of the set before calling it
        if self.future is not None and not self.future.done():
            self.future.set_result(None)


_drops: weakref.WeakKeyDictionary[Any, _Drop] = weakref.WeakKeyDictionary()


async def _until_drained(consumer: Any, tp: TP) -> None:
    """After a delivery that had to wait (the stream's queue full), wait until the queues of
    `tp`'s streams are down to Faust's pressure-drop size (40 %) before delivering on.
    Without it a stream slower than the fetch loop (the usual case under load) kept its
    queue full, and every message after the first waited in its own tasks. Uses the
    conductor's index of channels per partition (`Conductor._tp_index`) and mode's public
    pressure-drop callbacks of the queue (`FlowControlQueue.in_pressure_high_state`)."""
    loop = asyncio.get_running_loop()
    for channel in list(consumer.app.topics._tp_index.get(tp, ())):
        queue = channel.queue
        drop = _drops.get(queue)
        if drop is None:
            drop = _drops[queue] = _Drop()
        if drop.pending or queue.in_pressure_high_state(drop):  # the queue is that full
            drop.pending = True
            drained = drop.future = loop.create_future()
            # Bounded: while it waits, no other partition's records are delivered (the
            # other stage's input starved for seconds behind a producer-bound stage).
            await consumer.wait_first(drained, consumer.suspend_flow.wait(), timeout=DRAIN_WAIT_S)


async def drain_messages(consumer: Any, fetcher: Any) -> None:
    """Faust 0.15.3's fetch loop (`Consumer._drain_messages`), unchanged but for how one
    message reaches the streams. Faust races the conductor's callback against
    `suspend_flow` with `Service.wait_first`, which creates four tasks and an `asyncio.wait`
    per message: the largest part of the ~165 µs of CPU an empty agent spends on each. Here
    the callback runs inline first: it puts the event on the stream's queue and returns
    without suspending unless that queue is full or the flow is suspended (a rebalance); only
    then is its rest raced against `suspend_flow` as Faust does, and the loop then waits for
    the queue to drain (`_until_drained`). Nothing is delivered that Faust's loop would not
    deliver, in the same order."""
    from faust.transport.consumer import CONSUMER_FETCHING

    callback = consumer.callback
    getmany = consumer.getmany
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = consumer._read_offset.__getitem__
    set_read_offset = consumer._read_offset.__setitem__
    set_flag, unset_flag = consumer.diag.set_flag, consumer.diag.unset_flag
    commit_every = consumer._commit_every
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    suspend_flow = consumer.suspend_flow
    yield_every, num_since_yield = 100, 0
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait = getmany(timeout=1.0)
            await consumer.sleep(0)  # getmany may return at once, again and again
            if not consumer.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await asyncio.sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await consumer._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and consumer._n_acked >= commit_every:
                            consumer._n_acked = 0
                            await consumer.commit()
                        delivering = callback(message)
                        try:
                            pending = delivering.send(None)
                        except StopIteration:
                            pass  # on the stream's queue without waiting: the usual case
                        else:
                            done = await consumer.wait_first(
                                _Rest(delivering, pending), suspend_flow.wait()
                            )
                            if not done.stopped and not suspend_flow.is_set():
                                await _until_drained(consumer, tp)
                        set_read_offset(tp, offset)
                unset_flag(CONSUMER_FETCHING)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            return
        raise
    except asyncio.CancelledError:
        if consumer.transport.app.should_stop:
            return
        raise
    except Exception as exc:
        consumer.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)

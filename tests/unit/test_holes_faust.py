"""The offset-hole guard against Faust 0.15.3's own consumer: what is committed never passes
an offset the agents did not process.

Everything between the broker and the agent is Faust's code: the consumer the processors'
app builds (faust.transport.drivers.aiokafka.Consumer, with Rhythm's commit choice from
faust_private.guard_commits), its `getmany` (which drops the rest of a fetched batch when the
consumer generation changes, as in a rebalance: the holes seen in the fault suite), its fetch
loop `_drain_messages` (read offsets, `_add_gap`), `seek`, `ack` through faust Events and
Messages, and `force_commit` (`_filter_committable_offsets`, `_new_offset`,
`_commit_offsets`). The app's side is `Processors._batch`, the agents' per-batch wiring
(guard, seek back, what may be committed). Stood in for: the broker I/O of aiokafka's thread
(`_getmany` returns records from a list, `_seek` moves its position, `_commit` records the
offsets sent to Kafka), the log start the agents ask for, and the pure processing (which
records the offsets it was given, or raises).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
import faust.transport.drivers.aiokafka as faust_aiokafka
import pytest
from aiokafka.structs import ConsumerRecord  # type: ignore[import-untyped]
from faust.events import Event
from faust.types import TP, EventT

from rhythm.processors import faust_private
from rhythm.processors.app import Processors
from rhythm.processors.settings import ProcessorSettings

TOPIC = "ev"
TPX = TP(TOPIC, 2)
LOG_END = 40


class _Stop:
    """What `_drain_messages` takes as its fetcher: only its `_stopped` is read."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()


class _Run:
    """One partition of LOG_END records read by a real Faust consumer."""

    def __init__(
        self,
        app: faust.App,
        committed: int | None,
        *,
        log_start: int = 0,
        fetch_size: int = 5,
        processors: Processors | None = None,
        topic: Any,
    ) -> None:
        self.app = app
        self.processors = processors
        self.consumer: Any = app.consumer
        assert isinstance(self.consumer, faust_aiokafka.Consumer)  # Faust's own class
        self.start = committed if committed is not None else log_start
        self.position = self.start  # aiokafka's fetch position
        self.fetch_size = fetch_size
        self.log_start = log_start
        self.break_after: set[int] = set()  # the generation changes once this is delivered
        self.lose_next_fetch = False  # the partition is paused while the fetch is in flight
        self.delivered: list[Any] = []
        self.processed: list[int] = []
        self.sought: list[int] = []
        self.commits: list[int] = []
        self.fail_at: int | None = None  # processing raises at this offset
        self._fetcher = _Stop()
        c: Any = self.consumer
        c._set_active_tps({TPX})
        c.callback = self._deliver
        c._getmany = self._getmany
        c._seek = self._seek
        c._commit = self._commit
        c.assignment = lambda: {TPX}
        c.highwater = lambda tp: LOG_END
        app.producer.flush = _nothing  # type: ignore[method-assign]
        app.topics.add(topic)  # as when the agent starts: acks are recorded for it
        if committed is not None:  # as Faust's perform_seek leaves it after assignment
            c._committed_offset[TPX] = committed or None
            c._read_offset[TPX] = committed

    # -- aiokafka's side: the broker's records and the position ----------------------------

    async def _getmany(self, active_partitions: Any, timeout: float) -> dict[TP, list[Any]]:
        self._fetcher._stopped.set()  # one fetch per drain() call
        offsets = list(range(self.position, min(self.position + self.fetch_size, LOG_END)))
        self.position += len(offsets)
        if self.lose_next_fetch:  # paused meanwhile: Faust's getmany drops its records
            self.consumer.pause_partitions({TPX})
        return {TPX: [_record(o) for o in offsets]}

    async def _seek(self, tp: TP, offset: int) -> None:
        self.sought.append(offset)
        self.position = offset

    async def _commit(self, offsets: dict[TP, int]) -> bool:
        self.commits.append(offsets[TPX])
        return True

    async def _deliver(self, message: Any) -> None:
        message.incref()  # what the conductor does for the one stream reading it
        self.delivered.append(message)
        if message.offset in self.break_after:
            self.app.consumer_generation_id += 1  # Faust's getmany drops the rest

    # -- Faust's fetch loop, the agent, Faust's commit ---------------------------------------

    async def ready(self) -> None:
        conductor: Any = self.app.topics
        await conductor._update_indices()  # in the loop the consumer then runs in
        assert self.app.topics.acks_enabled_for(TOPIC)

    async def drain(self) -> None:
        self._fetcher._stopped.clear()
        await self.consumer._drain_messages(self._fetcher)
        if self.lose_next_fetch:
            self.lose_next_fetch = False
            self.consumer.resume_partitions({TPX})

    async def agent_batch(self, process: Callable[[list[int]], None] | None = None) -> None:
        """One take_events batch: everything delivered since the last one. Faust's stream
        acks every event of it afterwards, even when the agent raised (its `finally`)."""
        messages, self.delivered = self.delivered, []
        events: list[EventT[bytes]] = [
            Event(self.app, m.key, m.value, m.headers, m) for m in messages
        ]
        try:
            if self.processors is not None:
                await self.processors._batch(TOPIC, events, self._process)
            else:  # a plain Faust app: every delivered message is processed
                self.processed.extend(e.message.offset for e in events)
        finally:
            for event in events:
                event.ack()

    def _process(self, partition: int, group: list[EventT[bytes]]) -> Awaitable[None]:
        async def run() -> None:
            for event in group:
                if event.message.offset == self.fail_at:
                    raise RuntimeError(f"processing failed at {self.fail_at}")
                self.processed.append(event.message.offset)

        return run()

    async def commit(self) -> None:
        await self.consumer.force_commit()

    def committed(self) -> int | None:
        return self.commits[-1] if self.commits else None

    def first_unprocessed(self) -> int:
        """The first offset from where the partition started that no agent processed."""
        done = set(self.processed)
        offset = self.start
        while offset in done:
            offset += 1
        return offset

    async def step(self, drains: int = 1) -> None:
        """Fetch (`drains` times), one agent batch, one commit; then the check."""
        for _ in range(drains):
            await self.drain()
        await self.agent_batch()
        await self.commit()
        committed = self.committed()
        assert committed is None or committed <= self.first_unprocessed(), (
            f"committed {committed}, but offset {self.first_unprocessed()} was never "
            f"processed (processed {sorted(set(self.processed))})"
        )


async def _nothing() -> None:
    return None


def _record(offset: int) -> Any:
    return ConsumerRecord(TOPIC, 2, offset, 0, 0, b"k", b"v", None, 1, 1, [])


class _LogStart:
    """The broker as EndOffsets asks it: the log start, and where the group starts a
    partition (its committed offset, else the log start)."""

    def __init__(self, low: int | None, committed: int | None = None) -> None:
        self.low = low  # None: the broker does not answer
        self.committed = committed

    async def log_start(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {} if self.low is None else {tp: self.low for tp in tps}

    async def starts(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if self.low is None:
            return {}
        start = self.low if self.committed is None else self.committed
        return {tp: start for tp in tps}


def _processors_run(tmp_path: Path, committed: int | None, log_start: int = 0) -> _Run:
    settings = ProcessorSettings(
        data_dir=tmp_path, events_topic=TOPIC, updates_topic="up", metrics_port=0
    )
    processors = Processors(settings, events_partitions=4)
    processors.recovery.ends = _LogStart(log_start, committed)  # type: ignore[assignment]
    # Readiness (tables recovered, no rebalance under way) is not what is tested here.
    processors._restored = lambda: True  # type: ignore[method-assign]
    processors.guard.reseek_after_s = 0.0
    return _Run(
        processors.app,
        committed,
        log_start=log_start,
        processors=processors,
        topic=processors.events,
    )


async def _to_the_end(run: _Run, drains: int = 1, rounds: int = 40) -> None:
    for _ in range(rounds):
        await run.step(drains)
        if run.committed() == LOG_END:
            return


def _sees_everything(run: _Run) -> None:
    assert set(run.processed) >= set(range(run.start, LOG_END))
    assert run.committed() == LOG_END  # and the commit did not stop at the hole for good


# -- what Faust does by itself -------------------------------------------------------------


@pytest.mark.parametrize("committed", [None, 10])
@pytest.mark.parametrize("dropped", [1, 3])
def test_faust_alone_commits_over_offsets_its_fetcher_dropped(
    committed: int | None, dropped: int
) -> None:
    """Why the guard chooses the commit: a plain Faust app (every delivered message
    processed and acked) commits past the offsets Faust's getmany dropped, one or several,
    after a commit or before the first."""

    async def go() -> None:
        app = faust.App("plain", broker="kafka://127.0.0.1:1")
        run = _Run(app, committed, topic=app.topic(TOPIC))
        start = run.start
        run.break_after = {start + 4 - dropped}  # the rest of the first fetch never arrives
        await run.ready()
        await run.drain()
        await run.drain()
        await run.agent_batch()
        await run.commit()
        hole = range(start + 5 - dropped, start + 5)
        assert not set(hole) & set(run.processed)
        committed_now = run.committed()
        assert committed_now is not None and committed_now > hole[-1]  # committed over it

    asyncio.run(go())


def test_the_processors_consumer_is_fausts_with_the_commit_choice_of_rhythm(
    tmp_path: Path,
) -> None:
    run = _processors_run(tmp_path, committed=10)
    consumer: Any = run.consumer
    assert type(consumer).__mro__[1] is faust_aiokafka.Consumer
    assert "_new_offset" in type(consumer).__dict__  # only the choice of offset is Rhythm's
    assert "ack" not in type(consumer).__dict__ and "getmany" not in type(consumer).__dict__


def test_a_seek_runs_in_the_consumer_thread_not_the_apps(tmp_path: Path) -> None:
    """Faust's own `_seek` calls aiokafka's seek from the app's thread while the consumer
    thread's fetcher uses the same structures (a KeyError in aiokafka's fetched_records
    crashed a busy worker). Here Faust's real consumer thread runs (its mode thread and
    method queue); only the aiokafka consumer inside it is stood in, and records the thread
    each seek ran on."""
    seeks: list[tuple[TP, int, int]] = []

    class _Aiokafka:
        def seek(self, tp: TP, offset: int) -> None:
            seeks.append((tp, offset, threading.get_ident()))

        async def stop(self) -> None:
            return None

    async def go() -> Any:
        settings = ProcessorSettings(
            data_dir=tmp_path, events_topic=TOPIC, updates_topic="up", metrics_port=0
        )
        consumer: Any = Processors(settings, events_partitions=4).app.consumer
        thread = consumer._thread
        assert isinstance(thread, faust_aiokafka.AIOKafkaConsumerThread)

        async def on_start() -> None:  # instead of building and connecting aiokafka's consumer
            thread._consumer = _Aiokafka()

        thread.on_start = on_start  # type: ignore[method-assign]
        await thread.start()
        try:
            await consumer.seek(TPX, 7)  # Faust's public seek, which ends in `_seek`
        finally:
            await thread.stop()
        return consumer

    consumer = asyncio.run(go())
    assert [(tp, offset) for tp, offset, _ in seeks] == [(TPX, 7)]
    assert seeks[0][2] != threading.get_ident()
    assert consumer._read_offset[TPX] == 7  # Faust's own bookkeeping of the seek still ran


def test_start_up_refuses_another_faust_version() -> None:
    faust_private.check_version()  # the installed one is the one read
    with pytest.raises(RuntimeError, match=r"faust-streaming==0\.15\.3 \(found 0\.15\.4\)"):
        faust_private.check_version("0.15.4")


# -- the processors: the hole is read again, never committed over --------------------------


@pytest.mark.parametrize("dropped", [1, 3])
def test_a_hole_after_a_commit_is_never_committed_over(tmp_path: Path, dropped: int) -> None:

    async def go() -> None:
        run = _processors_run(tmp_path, committed=10)
        run.break_after = {14 - dropped}  # offsets 15-dropped .. 14 never arrive
        await run.ready()
        await run.step(drains=2)  # the agent's batch spans the hole
        assert run.sought == [15 - dropped]  # read again from the hole
        assert run.committed() == 15 - dropped
        await _to_the_end(run)
        _sees_everything(run)

    asyncio.run(go())


@pytest.mark.parametrize("dropped", [1, 3])
def test_a_hole_before_the_first_commit_is_found_and_never_committed_over(
    tmp_path: Path, dropped: int
) -> None:
    """Nothing committed yet (Faust's committed offset None): the first batch the agent
    sees is checked against the partition's log start."""

    async def go() -> None:
        run = _processors_run(tmp_path, committed=None)
        run.break_after = {4 - dropped}
        await run.ready()
        await run.step(drains=2)
        assert run.sought == [5 - dropped]
        await _to_the_end(run)
        _sees_everything(run)

    asyncio.run(go())


def test_a_first_fetch_lost_whole_before_any_commit_is_read_again(tmp_path: Path) -> None:
    """The partition's first records never reach the agent (it was paused while the fetch
    was in flight): the first offset it sees is 5, and Faust's fetch loop saw no gap."""

    async def go() -> None:
        run = _processors_run(tmp_path, committed=None)
        run.lose_next_fetch = True
        await run.ready()
        await run.step(drains=2)
        assert run.sought == [0]
        assert run.committed() is None
        await _to_the_end(run)
        _sees_everything(run)

    asyncio.run(go())


def test_committed_offset_zero_counts_as_a_start_too(tmp_path: Path) -> None:
    """Faust keeps a committed 0 as None: the log start decides, here 0 as well."""

    async def go() -> None:
        run = _processors_run(tmp_path, committed=0)
        run.break_after = {2}
        await run.ready()
        await run.step(drains=2)
        assert run.sought == [3]
        await _to_the_end(run)
        _sees_everything(run)

    asyncio.run(go())


def test_an_agent_that_raises_mid_batch_is_not_committed_past(tmp_path: Path) -> None:
    """Faust's take_events acks the whole batch even when the agent raised; the offsets it
    never processed are not committed, and are processed after the restart from the commit."""

    async def go() -> None:
        run = _processors_run(tmp_path, committed=10)
        run.fail_at = 17
        await run.ready()
        await run.step()
        await run.drain()
        with pytest.raises(RuntimeError, match="processing failed"):
            await run.agent_batch()  # 15, 16 processed, 17-19 acked by Faust but not done
        await run.commit()
        assert run.first_unprocessed() == 17
        assert run.committed() == 15  # the failed batch is not committed at all

    asyncio.run(go())


def test_before_the_first_commit_nothing_is_processed_while_the_log_start_is_unknown(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        run = _processors_run(tmp_path, committed=None)
        assert run.processors is not None
        ends: Any = run.processors.recovery.ends
        ends.low = None
        await run.ready()
        await run.step()
        assert (run.processed, run.sought, run.committed()) == ([], [0], None)
        ends.low = 0  # the broker answers again
        await _to_the_end(run)
        _sees_everything(run)

    asyncio.run(go())


# -- the fetch loop's delivery (faust_private.drain_messages) ------------------------------


async def _waiting_at(run: _Run, offset: int) -> tuple[asyncio.Event, asyncio.Task[None]]:
    """A fetch loop draining one fetch whose delivery of `offset` waits (the stream's queue
    full, the first time) until the returned event is set."""
    room = asyncio.Event()
    deliver = run._deliver

    async def callback(message: Any) -> None:
        if message.offset == offset and not room.is_set():
            await room.wait()
        await deliver(message)

    run.consumer.callback = callback
    await run.ready()
    draining = asyncio.create_task(run.drain())
    for _ in range(20):
        await asyncio.sleep(0)
    return room, draining


def test_the_fetch_loop_delivers_inline_and_waits_where_faust_waits(tmp_path: Path) -> None:
    """A callback that does not suspend is delivered without a task; one that waits (the
    stream's queue full) holds the loop until it is done, in order, as in Faust's loop."""

    async def go() -> None:
        run = _processors_run(tmp_path, committed=None)
        room, draining = await _waiting_at(run, 2)
        assert [m.offset for m in run.delivered] == [0, 1]  # waiting at 2, nothing after it
        assert not draining.done()
        room.set()
        await draining
        assert [m.offset for m in run.delivered] == [0, 1, 2, 3, 4]
        assert run.consumer._read_offset[TPX] == 4

    asyncio.run(go())


def test_a_delivery_still_waiting_when_the_flow_stops_is_dropped_and_never_committed_over(
    tmp_path: Path,
) -> None:
    """Faust drops a message whose callback waits when a rebalance suspends the flow (its
    `wait_first`); the loop here does the same, and the guard reads it again."""

    async def go() -> None:
        run = _processors_run(tmp_path, committed=None)
        room, draining = await _waiting_at(run, 2)
        run.consumer.suspend_flow.set()  # a rebalance begins
        await draining
        run.consumer.suspend_flow.clear()
        room.set()
        assert [m.offset for m in run.delivered] == [0, 1, 3, 4]  # 2 dropped, as Faust does
        await _to_the_end(run)
        _sees_everything(run)  # read again from the hole

    asyncio.run(go())


def test_waits_for_a_queue_to_drain_never_bury_fausts_resume_of_the_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a delivery that had to wait, the loop waits (bounded) for the stream's queue to
    drop to 40 %. Waits that time out must not each leave a callback in the queue's pending
    set: mode calls one per `get` once the queue is down, in no set order, so Faust's own
    (the conductor's, which lets the fetcher read the partition again) could come after
    every stale one. A wait under way still ends as the queue drops."""

    async def go() -> None:
        run = _processors_run(tmp_path, committed=None)
        assert run.processors is not None
        consumer, topic = run.consumer, run.processors.events
        consumer.app.topics._tp_index[TPX] = {topic}  # as the conductor's assignment sets it
        queue = topic.queue
        resumed: list[int] = []

        def resume() -> None:  # one per partition, as the conductor's `on_pressure_drop`
            resumed.append(1)

        for n in range(queue.maxsize):  # full, Faust's pressure-drop callback registered
            queue.put_nowait_enhanced(n, on_pressure_high=lambda: None, on_pressure_drop=resume)
        monkeypatch.setattr(faust_private, "DRAIN_WAIT_S", 0.001)
        for _ in range(5):  # the stream is busy: every wait times out
            await faust_private._until_drained(consumer, TPX)
        assert len(queue._pending_pressure_drop_callbacks) == 2  # Faust's and one of ours
        monkeypatch.setattr(faust_private, "DRAIN_WAIT_S", 60.0)
        waiting = asyncio.create_task(faust_private._until_drained(consumer, TPX))
        await asyncio.sleep(0)
        assert not waiting.done()
        while queue.qsize() > queue.pressure_drop_size:
            queue.get_nowait()
        assert not resumed and not waiting.done()
        queue.get_nowait()  # at the drop size mode calls one pending callback per get:
        queue.get_nowait()  # with one of ours pending, two gets reach Faust's
        assert resumed == [1]
        await asyncio.wait_for(waiting, 5)  # ended by the drop, not the 60 s bound

    asyncio.run(go())


def test_the_rest_of_a_coroutine_gets_its_values_and_exceptions() -> None:
    async def inner(a: asyncio.Future[int], b: asyncio.Future[int]) -> int:
        x = await a
        try:
            await b
        except KeyError:
            return x * 10
        return -1

    async def go() -> None:
        loop = asyncio.get_running_loop()
        a, b = loop.create_future(), loop.create_future()
        coro = inner(a, b)
        pending = coro.send(None)
        assert pending is a
        rest = asyncio.ensure_future(faust_private._Rest(coro, pending))
        a.set_result(7)
        for _ in range(5):
            await asyncio.sleep(0)
        assert not rest.done()  # now waiting on b
        b.set_exception(KeyError("x"))
        assert await rest == 70

        c = loop.create_future()
        coro2 = inner(c, loop.create_future())
        waiting = asyncio.ensure_future(faust_private._Rest(coro2, coro2.send(None)))
        await asyncio.sleep(0)
        waiting.cancel()  # cancelling the task cancels the coroutine inside
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert inspect.getcoroutinestate(coro2) == inspect.CORO_CLOSED  # not left suspended

    asyncio.run(go())

"""Offsets the consumer never delivered: the pure rule, the guard, and what the agents do."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faust.types import TP

from rhythm.processors import app as app_module
from rhythm.processors.holes import OffsetGuard, deliverable
from rhythm.processors.settings import ProcessorSettings


def test_contiguous_offsets_are_all_deliverable() -> None:
    assert deliverable(10, [10, 11, 12]) == (3, None)
    assert deliverable(None, [40, 41]) == (2, None)  # nothing known: nothing to compare


def test_offsets_read_again_after_a_seek_are_deliverable() -> None:
    assert deliverable(20, [15, 16, 17]) == (3, None)
    assert deliverable(20, [18, 19, 20, 21]) == (4, None)


def test_a_hole_stops_the_run_where_it_starts() -> None:
    assert deliverable(10, [10, 11, 14, 15]) == (2, 12)
    assert deliverable(10, [13, 14]) == (0, 10)
    assert deliverable(10, [10, 12]) == (1, 11)  # a single missing offset is a hole too


def test_the_guard_follows_the_commit_then_what_passed() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    assert guard.expected("p0", 7) == 7
    guard.passed("p0", 9)
    assert guard.expected("p0", 7) == 10
    guard.passed("p0", 4)  # an older offset read again never moves it back
    assert guard.expected("p0", 7) == 10
    guard.forget(["p0"])
    assert guard.expected("p0", 3) == 3


def test_after_a_seek_the_guard_waits_for_the_hole_before_seeking_again() -> None:
    guard: OffsetGuard[str] = OffsetGuard(reseek_after_s=5.0)
    assert guard.is_new("p0")
    assert guard.should_seek("p0", 100, now=0.0) is True
    assert not guard.is_new("p0")
    # copies fetched before the seek still arrive: no second seek for a while
    assert guard.should_seek("p0", 100, now=1.0) is False
    assert guard.should_seek("p0", 100, now=6.0) is True  # the hole never came: seek again
    guard.passed("p0", 100)  # the hole came in
    assert guard.is_new("p0")


def test_quiet_partitions_are_those_nothing_came_for_since_the_clock_started() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    assert guard.quiet(["p0", "p1"], now=100.0, after_s=20) == []  # the clock starts
    guard.passed("p0", 5, now=115.0)
    assert guard.quiet(["p0", "p1"], now=121.0, after_s=20) == ["p1"]
    guard.touch("p1", 121.0)
    assert guard.quiet(["p0", "p1"], now=136.0, after_s=20) == ["p0"]


def test_a_partition_read_again_for_nothing_waits_twice_as_long_each_time() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    guard.quiet(["p0"], now=0.0, after_s=20)
    guard.reread("p0", 20.0)
    assert guard.quiet(["p0"], now=55.0, after_s=20) == []  # 40 s now
    assert guard.quiet(["p0"], now=60.0, after_s=20) == ["p0"]
    for n in range(2, 8):
        guard.reread("p0", 1000.0 * n)
    assert guard.quiet(["p0"], now=7000.0 + 319.0, after_s=20) == []  # at most 16 x 20 s
    assert guard.quiet(["p0"], now=7000.0 + 320.0, after_s=20) == ["p0"]
    guard.passed("p0", 5, now=8000.0)  # it delivered: back to 20 s
    assert guard.quiet(["p0"], now=8020.0, after_s=20) == ["p0"]


@dataclass
class _Message:
    offset: int
    acked: bool = False


@dataclass
class _Event:
    message: _Message


@dataclass
class _Consumer:
    """Stands in for Faust's consumer in a unit test of the agents' rule (no broker)."""

    _committed_offset: dict[TP, int] = field(default_factory=dict)
    sought: list[tuple[TP, int]] = field(default_factory=list)

    def assignment(self) -> set[TP]:
        return set(self._committed_offset)

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))


@dataclass
class _Ends:
    """Stands in for the broker's log start offsets."""

    log_starts: dict[tuple[str, int], int] = field(default_factory=dict)
    ends: dict[tuple[str, int], int] = field(default_factory=dict)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)  # the group's, per broker

    async def ask(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {tp: self.ends[tp] for tp in tps if tp in self.ends}

    async def log_start(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {tp: self.log_starts[tp] for tp in tps if tp in self.log_starts}

    async def starts(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {
            **(await self.log_start(tps)),
            **{t: self.committed[t] for t in tps if t in self.committed},
        }


def _processors(tmp_path: Path, committed: int | None, log_start: int) -> tuple[Any, _Consumer]:
    settings = ProcessorSettings(data_dir=tmp_path, events_topic="ev", updates_topic="up")
    processors = app_module.Processors(settings, events_partitions=4)
    consumer = _Consumer({TP("up", 2): committed})  # type: ignore[dict-item]
    processors.app._consumer = consumer  # type: ignore[assignment]
    processors.recovery.ends = _Ends({("up", 2): log_start})  # type: ignore[assignment]
    return processors, consumer


def _batch(processors: Any, offsets: list[int]) -> tuple[list[int], list[_Event]]:
    events = [_Event(_Message(o)) for o in offsets]
    got = asyncio.run(processors.recovery.deliverable("up", 2, events))
    return [e.message.offset for e in got], events


def test_the_agent_processes_up_to_the_hole_never_acks_the_rest_and_seeks_back(
    tmp_path: Path,
) -> None:
    processors, consumer = _processors(tmp_path, committed=50, log_start=0)
    got, events = _batch(processors, [53, 50, 51, 54])  # 52 never came
    assert got == [50, 51]
    assert consumer.sought == [(TP("up", 2), 52)]
    assert [e.message.offset for e in events if e.message.acked] == [53, 54]
    # what was fetched before the seek still comes first: skipped, no second seek
    got, events = _batch(processors, [55, 56])
    assert got == [] and all(e.message.acked for e in events)
    assert len(consumer.sought) == 1
    # then the copies from the hole on go through
    got, _ = _batch(processors, [52, 53, 54, 55, 56])
    assert got == [52, 53, 54, 55, 56]
    assert len(consumer.sought) == 1


def test_offsets_gone_from_the_broker_are_not_waited_for(tmp_path: Path) -> None:
    processors, consumer = _processors(tmp_path, committed=10, log_start=40)
    got, _ = _batch(processors, [40, 41, 42])
    assert got == [40, 41, 42]
    assert consumer.sought == []


def test_a_partition_owing_offsets_that_stays_quiet_is_read_again(tmp_path: Path) -> None:
    """A hole at the very end has no later message to reveal it."""
    processors, consumer = _processors(tmp_path, committed=50, log_start=0)
    processors.recovery.settings = processors.settings.model_copy(update={"reseek_after_s": 0.0})
    got, _ = _batch(processors, [50, 51])
    assert got == [50, 51]
    processors.recovery.ends.ends = {("up", 2): 60}  # 52-59 were written, nothing more came
    asyncio.run(processors.recovery.reseek_quiet())
    assert consumer.sought == [(TP("up", 2), 52)]
    processors.recovery.ends.ends = {("up", 2): 52}  # nothing owed: no seek
    asyncio.run(processors.recovery.reseek_quiet())
    assert len(consumer.sought) == 1


def test_with_nothing_committed_the_first_batch_must_start_at_the_log_start(
    tmp_path: Path,
) -> None:
    """A new group: Faust's commit has nothing to compare with either, and stepped over the
    records it dropped before the first batch (the head of the updates partitions)."""
    processors, consumer = _processors(tmp_path, committed=None, log_start=0)
    got, events = _batch(processors, [13, 14])  # 0-12 never came
    assert got == [] and all(e.message.acked for e in events)
    assert consumer.sought == [(TP("up", 2), 0)]
    got, _ = _batch(processors, list(range(15)))
    assert got == list(range(15))


def test_with_nothing_committed_a_quiet_partition_is_read_from_the_log_start(
    tmp_path: Path,
) -> None:
    processors, consumer = _processors(tmp_path, committed=None, log_start=5)
    processors.recovery.settings = processors.settings.model_copy(update={"reseek_after_s": 0.0})
    processors.recovery.ends.ends = {("up", 2): 9}  # 5-8 were written, nothing came
    asyncio.run(processors.recovery.reseek_quiet())
    assert consumer.sought == [(TP("up", 2), 5)]


def test_while_a_rebalance_revokes_the_partition_the_broker_says_where_it_starts(
    tmp_path: Path,
) -> None:
    """Faust's record of the committed offset is empty while a rebalance revokes the
    partition: that is not "nothing committed" (taken for it, the partition was sought back
    to 0 and 9,181 events read again)."""
    processors, consumer = _processors(tmp_path, committed=None, log_start=0)
    processors.recovery.ends.committed = {("up", 2): 9181}
    got, _ = _batch(processors, [9181, 9182])
    assert got == [9181, 9182]
    assert consumer.sought == []

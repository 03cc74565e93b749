"""Offsets the consumer never delivered: the pure rule, the guard, and what the agents do."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

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


def test_a_hole_that_comes_back_after_the_seek_is_accepted_once() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    assert guard.seek_or_accept("p0", 100) is True
    assert guard.seek_or_accept("p0", 100) is False  # gone from the broker: go on
    assert guard.seek_or_accept("p0", 100) is True  # a new occurrence is sought again
    guard.passed("p0", 100)  # the hole came in
    assert guard.seek_or_accept("p0", 100) is True


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

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))


def test_the_agent_processes_up_to_the_hole_never_acks_the_rest_and_seeks_back(
    tmp_path: Path,
) -> None:
    settings = ProcessorSettings(data_dir=tmp_path, events_topic="ev", updates_topic="up")
    processors = app_module.Processors(settings, events_partitions=4)
    consumer = _Consumer({TP("up", 2): 50})
    processors.app._consumer = consumer  # type: ignore[assignment]
    events = [_Event(_Message(o)) for o in (53, 50, 51, 54)]  # 52 never came

    got = asyncio.run(processors._deliverable("up", 2, events))  # type: ignore[arg-type]

    assert [e.message.offset for e in got] == [50, 51]
    assert consumer.sought == [(TP("up", 2), 52)]
    assert [e.message.offset for e in events if e.message.acked] == [53, 54]
    # the copies that come after the seek go through
    again = [_Event(_Message(o)) for o in (52, 53, 54)]
    got = asyncio.run(processors._deliverable("up", 2, again))  # type: ignore[arg-type]
    assert [e.message.offset for e in got] == [52, 53, 54]
    assert len(consumer.sought) == 1

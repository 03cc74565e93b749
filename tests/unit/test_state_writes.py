"""The agents' table writes are in Kafka before their batch is acked (app.Processors._save).

Faust's `table[key] = value` leaves the changelog message in its producer buffer, which its
commit does not reliably drain; a batch whose input offsets were committed before its state
reached the changelog was lost to the partition's next owner (make test-scale, workers
leaving). Here: a stand-in table whose changelog messages are acknowledged when the test says.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rhythm.processors import app as app_module
from rhythm.processors.settings import ProcessorSettings


@dataclass
class _Message:
    partition: int


@dataclass
class _Event:
    message: _Message


def _event(partition: int) -> Any:
    return _Event(_Message(partition))


@dataclass
class _Table:
    """Stands in for a Faust table: the store (`data`) and `send_changelog`, whose future
    resolves when Kafka acknowledged the message."""

    data: dict[str, bytes] = field(default_factory=dict)
    sent: list[tuple[int, str, bytes | None, asyncio.Future[None]]] = field(default_factory=list)

    def send_changelog(
        self, partition: int, key: str, value: bytes | None, value_serializer: Any = None
    ) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((partition, key, value, fut))
        return fut


def test_writes_wait_for_every_changelog_acknowledgement(tmp_path: Path) -> None:
    settings = ProcessorSettings(data_dir=tmp_path, events_topic="ev", updates_topic="up")
    processors = app_module.Processors(settings, events_partitions=4)
    table = _Table(data={"old": b"x"})
    writes: list[tuple[str, bytes | None]] = [
        ("a", b"1"),
        ("old", None),
        ("never-written", None),  # nothing to delete: no tombstone
        ("b", b"2"),
    ]

    async def run() -> None:
        save = asyncio.create_task(processors._save(table, _event(3), writes))
        await asyncio.sleep(0.01)
        assert [(p, k, v) for p, k, v, _ in table.sent] == [
            (3, "a", b"1"),
            (3, "old", None),
            (3, "b", b"2"),
        ]
        assert table.data == {"a": b"1", "b": b"2"}
        for _, _, _, fut in table.sent[:2]:
            fut.set_result(None)
        await asyncio.sleep(0.01)
        assert not save.done()  # one message is not acknowledged yet: the batch waits
        table.sent[2][3].set_result(None)
        await asyncio.wait_for(save, 1)

    asyncio.run(run())


def test_a_changelog_message_that_fails_fails_the_batch(tmp_path: Path) -> None:
    """The batch is then never acked: its input is read again, by this worker or the next
    owner, instead of being committed without its state."""
    settings = ProcessorSettings(data_dir=tmp_path, events_topic="ev", updates_topic="up")
    processors = app_module.Processors(settings, events_partitions=4)
    table = _Table()

    async def run() -> None:
        save = asyncio.create_task(processors._save(table, _event(0), [("a", b"1")]))
        await asyncio.sleep(0.01)
        table.sent[0][3].set_exception(RuntimeError("broker gone"))
        try:
            await asyncio.wait_for(save, 1)
        except RuntimeError as exc:
            assert "broker gone" in str(exc)
        else:
            raise AssertionError("the failure was swallowed")

    asyncio.run(run())

"""The agents' side of holes.py: which messages of a batch may be processed (up to the first
offset Faust never delivered), where a partition is expected to go on, and seeking back to
offsets that never came. holes.py is the pure bookkeeping; this is its I/O against the
consumer (seeks) and the broker (`ends.EndOffsets`)."""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from faust.types import TP, EventT

from rhythm.processors import faust_private
from rhythm.processors.ends import EndOffsets
from rhythm.processors.holes import OffsetGuard, deliverable
from rhythm.processors.metrics import ProcessorMetrics
from rhythm.processors.settings import ProcessorSettings
from rhythm.schemas.topics import STAGE1, STAGE2

__all__ = ["HoleRecovery"]

log = logging.getLogger("rhythm.processors")


class HoleRecovery:
    def __init__(
        self,
        app: faust.App,
        settings: ProcessorSettings,
        guard: OffsetGuard[TP],
        ends: EndOffsets,
        metrics: ProcessorMetrics,
    ) -> None:
        self.app = app  # its consumer is created lazily: read it only when used
        self.settings = settings
        self.guard = guard
        self.ends = ends
        self.metrics = metrics

    async def deliverable(
        self, topic: str, partition: int, group: list[EventT[bytes]]
    ) -> list[EventT[bytes]]:
        """The batch's messages of one partition up to the first offset Faust never delivered
        (see holes.py); the rest is never acked (so never committed) and the partition is
        sought back to the hole, which brings them again."""
        group = sorted(group, key=lambda e: e.message.offset)
        tp = TP(topic, partition)
        consumer: Any = self.app.consumer
        offsets = [e.message.offset for e in group]
        expected = await self.expected(tp)
        if expected is None:  # the broker did not say: process nothing yet, read them again
            log.warning(
                "%s[%d]: where the group starts it is unknown; reading again from %d",
                topic, partition, offsets[0],
            )  # fmt: skip
            for event in group:
                event.message.acked = True
            await consumer.seek(tp, offsets[0])
            return []
        n, hole = deliverable(expected, offsets)
        if hole is not None and self.guard.is_new(tp):
            # Gone from the broker (retention moved the log start past it)? Then go on from
            # the log start: no seek can bring those offsets back.
            low = (await self.ends.log_start([(topic, partition)])).get((topic, partition))
            if low is not None and low > hole:
                log.error(
                    "%s[%d]: offsets %d-%d are not on the broker any more (log start %d): "
                    "going on without them", topic, partition, hole, low - 1, low,
                )  # fmt: skip
                self.guard.passed(tp, low - 1, time.monotonic())
                n, hole = deliverable(low, offsets)
        if hole is not None:
            if self.guard.should_seek(tp, hole, time.monotonic()):
                log.warning(
                    "%s[%d]: offsets %d-%d never reached this worker (dropped by Faust's "
                    "fetcher); reading again from %d",
                    topic, partition, hole, offsets[n] - 1, hole,
                )  # fmt: skip
                self.metrics.hole(STAGE1 if topic == self.settings.events_topic else STAGE2)
                await consumer.seek(tp, hole)
            for event in group[n:]:
                event.message.acked = True  # Faust then never records them as acked
            group = group[:n]
        if group:
            self.guard.passed(tp, group[-1].message.offset, time.monotonic())
        return group

    async def expected(self, tp: TP) -> int | None:
        """The next offset `tp` should deliver: what passed in this assignment, else the
        committed offset the consumer was set to (Faust's record of it), else where the group
        starts the partition as the broker says: its committed offset, or with nothing
        committed the log start (`auto_offset_reset` earliest). Without the broker's answer a
        partition's first batch in a new group was taken as it came: records Faust dropped
        before it went unnoticed, and its commit (which has nothing to compare with either)
        stepped over them (make test-scale lost the head of updates partitions). Faust's
        record alone is not enough: it is also empty while a rebalance revokes the partition,
        and taking that for "nothing committed" sought a partition back to 0."""
        committed = faust_private.committed_offsets(self.app.consumer).get(tp)  # Faust's
        expected = self.guard.expected(tp, committed)
        if expected is None:
            key = (tp.topic, tp.partition)
            expected = (await self.ends.starts([key])).get(key)
            if expected is not None:
                log.info("%s[%d]: the group starts it at %d", *key, expected)
                self.guard.begin(tp, expected)
        return expected

    async def reseek_quiet(self) -> None:
        """A partition with input waiting that delivered nothing for `reseek_after_s` is read
        again from the offset it owes: Faust may have dropped what it fetched last (a hole at
        the end, which no later message reveals) or left it unfetched."""
        s = self.settings
        consumer: Any = self.app.consumer
        inputs = [
            tp for tp in consumer.assignment() if tp.topic in (s.events_topic, s.updates_topic)
        ]
        quiet = self.guard.quiet(inputs, time.monotonic(), s.reseek_after_s)
        if not quiet:
            return
        ends = await self.ends.ask([(tp.topic, tp.partition) for tp in quiet])
        for tp in quiet:
            expected = await self.expected(tp)
            end = ends.get((tp.topic, tp.partition))
            self.guard.touch(tp, time.monotonic())
            if expected is None or end is None or expected >= end:
                continue  # nothing owed
            log.warning(
                "%s[%d]: offsets %d-%d wait but nothing came for %.0f s; reading again from %d",
                tp.topic, tp.partition, expected, end - 1, s.reseek_after_s, expected,
            )  # fmt: skip
            self.metrics.hole(STAGE1 if tp.topic == s.events_topic else STAGE2)
            self.guard.reread(tp, time.monotonic())
            await consumer.seek(tp, expected)

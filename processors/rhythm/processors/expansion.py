"""The history lane's I/O for routed events (ARCHITECTURE.md, "the history lane"): before it
uses an event the live lane routed to it, it brings in the stored events of that event's
windows, so that the windows it re-emits hold every event of the entity (copies.py).

Per batch of routed events: the live events topic's end offsets are taken now; the lane
waits until the sink's group has committed past them (everything the live lane had been
given when these arrived is then in the store: events of a window this old that reach the
live lane later are routed too, and come the same way); it asks the store for each touched
entity's stored events in the routed events' largest windows and its last one before; and
returns, in time order, the notes, the copies and the routed events marked expanded, for
the caller to publish to the lane's own input. The routed events themselves are then done
(stage 1 `SKIP`): they come back expanded, behind their copies. An entity's next stored event
after them, in a window the live lane still keeps, is returned too (`Expanded.following`),
for the later topic: `rhythm backfill --later` imports it again once the live lane is done
with it, so its first gap counts the routed event (as after an import). A routed thread
message's thread gets its stored messages from the tenant's time in the lane on, as copies
for the thread (as an import's: copies.threads).

Blocking calls run in a thread (`asyncio.to_thread`), off the worker's event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from rhythm.processors import copies, lanes
from rhythm.processors.explode import entity_keys
from rhythm.processors.settings import ProcessorSettings
from rhythm.runtime.scrape import scrape_min
from rhythm.runtime.sink_sync import wait_for_sink
from rhythm.runtime.store_http import StoreUnavailableError, query_rows
from rhythm.schemas import WireError, decode_event
from rhythm.schemas.topics import KIND_ROUTED_EXPANDED, LIVE_LANE
from rhythm.schemas.wire_check import record_problem

log = logging.getLogger("rhythm.processors")


@dataclass
class Expanded:
    messages: list[tuple[int, bytes, copies.Headers]] = field(default_factory=list)
    following: list[tuple[int, bytes]] = field(default_factory=list)  # for the later topic


class Expansion:
    def __init__(
        self, settings: ProcessorSettings, finals: Callable[[], Mapping[str, int]] = dict
    ) -> None:
        """`finals()`: each tenant's final time in the lane (its threads' copies start there)."""
        self.settings = settings
        self.finals = finals
        self.window_sizes_ms = tuple(w * 1000 for w in settings.window_seconds)
        self.missed = 0  # batches used without their copies (the store did not answer)
        self.unextended = 0  # keys whose next stored event was not looked up (no watermark)
        # The live lane's windows and lateness (this worker's own lateness is the history's).
        self.live = ProcessorSettings(lane=LIVE_LANE)

    async def expand(self, routed: Sequence[bytes]) -> Expanded:
        return await asyncio.to_thread(self._expand, list(routed))

    def _expand(self, routed: list[bytes]) -> Expanded:
        own: list[tuple[int, str, bytes, copies.Headers]] = []
        touched: list[tuple[int, list[str]]] = []
        contexts: list[dict[str, object]] = []
        expanded = copies.headers(KIND_ROUTED_EXPANDED)
        for value in routed:
            try:
                record = decode_event(value)
            except WireError:
                record = None
            if record is None or record_problem(record) is not None:
                own.append((0, "", value, expanded))  # stage 1 dead-letters it as before
                continue
            ts = int(record["occurred_at"])
            own.append((ts, str(record["event_id"]), value, expanded))
            touched.append((ts, entity_keys(record)))
            if record.get("context_id") is not None:
                contexts.append({"tenant": record["tenant"], "context_id": record["context_id"]})
        spans = copies.spans(touched, self.window_sizes_ms)
        s = self.settings
        deadline = time.monotonic() + s.copies_wait_s
        stored: list[dict[str, object]] = []
        previous: list[dict[str, object]] = []
        in_threads: list[dict[str, object]] = []
        following: list[tuple[int, bytes]] = []
        try:
            report = wait_for_sink(
                s.kafka, [s.live_events_topic], s.copies_wait_s, group_id=s.sink_group
            )
            if not report:
                raise TimeoutError(f"the sink ({s.sink_group}) is behind on {s.live_events_topic}")
            spans, following = self._to_next_events(spans, deadline)
            for sql in copies.stored_queries(s.store_database, spans):
                stored += self._rows(sql, deadline)
            for sql in copies.neighbour_queries(s.store_database, spans, before=True):
                previous += self._rows(sql, deadline)
            threads_of = copies.threads(contexts, spans, self.finals())
            for sql in copies.thread_queries(s.store_database, threads_of):
                in_threads += self._rows(sql, deadline)
        except (StoreUnavailableError, TimeoutError) as exc:
            self.missed += 1
            log.warning(
                "%d routed event(s) used without the stored events of their windows (%s): "
                "windows holding live events too are the history lane's own events only",
                len(routed), exc,
            )  # fmt: skip
            return Expanded([(ts, value, extra) for ts, _, value, extra in own])
        merged = copies.merge(
            own, stored, previous, spans, stored_wins=False, thread_rows=in_threads
        )
        return Expanded(merged.messages, following)

    def _to_next_events(
        self, spans: dict[str, copies.Span], deadline: float
    ) -> tuple[dict[str, copies.Span], list[tuple[int, bytes]]]:
        """Each key's span up to the window of its next stored event when the live lane is
        done with that window (as `rhythm backfill` extends an import's): a routed event
        may be the previous event of an event the live lane already counted, whose gap it
        changes. When the live lane still keeps it, that next event is returned, from the
        store, for the later topic. Unknown live watermark: neither (counted)."""
        mark = scrape_min(
            self.settings.live_metrics_port, "rhythm_processor_stage2_watermark_seconds"
        )
        if mark is None or mark <= 0:
            self.unextended += len(spans)
            return spans, []
        live = self.live
        final = functools.partial(
            lanes.too_late, watermark=int(mark * 1000),
            window_sizes_ms=tuple(w * 1000 for w in live.window_seconds),
            lateness_ms=int(live.lateness_s * 1000),
            late_retention_ms=int(live.late_retention_s * 1000),
        )  # fmt: skip
        database = self.settings.store_database
        following = [
            row
            for sql in copies.neighbour_queries(database, spans, before=False)
            for row in self._rows(sql, deadline)
        ]
        extended, kept = copies.extend(spans, following, self.window_sizes_ms, final)
        if not kept:
            return extended, []
        rows = [r for sql in copies.at_queries(database, kept) for r in self._rows(sql, deadline)]
        return extended, copies.stored_events(rows)

    def _rows(self, sql: str, deadline: float) -> list[dict[str, object]]:
        s = self.settings
        password = s.store_password.get_secret_value() if s.store_password else None
        while True:
            try:
                return query_rows(
                    s.store_url, sql, user=s.store_user, password=password, timeout_s=30.0
                )
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

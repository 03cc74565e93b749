"""The Faust peers: a plain Faust agent computing the windows, and an empty agent (the ceiling).

`--mode plain` is what a Faust user writes first, at Faust's own defaults (commit interval,
commit every, stream buffer): decode each message (Rhythm's wire decoder), count each event
once (a table of the event ids seen, before the fan-out, as Rhythm's stage 1 dedups), and for
every entity it touches (Rhythm's entity rule) read-modify-write `[count, weight sum, weight
max]` in one tumbling windowed table per window size (3600 s, 86400 s), relative to the
event's own time. No batching, no local aggregation, no repartition (the tables live on the
events topic's partitions, so with more than one input partition an entity's windows would
be split: the bench uses one). The store is RocksDB, Faust's documented production store (its
default, `memory://`, is for development), as Rhythm and Quix keep their state in RocksDB.

Its output is its tables: every write goes to the table's changelog topic
(`<group>-w<size>-changelog`, key `[entity, [start, end]]`, value `[count, sum, max]`, JSON),
which Faust reads back on recovery and a downstream consumer reads; the last value of each
window key is the window's result. A user would not add a window-close callback here:
Faust expires windows against the wall clock (`Table._del_old_keys` calls
`window.stale(..., time.time())`), so in a replay of a past month every window would expire at
the first clean-up while its events still arrive. The windows are given no expiry (Faust's
default) and the id table none either, so both grow with the run (less work than Rhythm's
bounded state).

`--mode empty` is the ceiling: an agent that takes the events in batches
(`stream.take_events`) and does nothing with them, at Faust's defaults. It times itself from
the first batch to the `--expect`-th event and prints one JSON line (`{"events", "seconds"}`).

    python -m bench.peers.faust_agent --mode plain --bootstrap H:P --topic T --group G --data D
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import faust

from rhythm.processors.explode import entity_keys
from rhythm.schemas import decode_event

WINDOWS_S = (3600, 86400)
#: The prefix of the empty agent's one result line (the harness reads it from the log).
EMPTY_RESULT = "faust empty agent:"
BATCH = 1000


def build(bootstrap: str, topic: str, group: str, data: str, partitions: int = 1) -> faust.App:
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="rocksdb://",
        datadir=data,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        topic_partitions=partitions,  # the tables' changelogs follow the source topic
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    now_s: list[float] = [0.0]  # the current event's time, for the tables' relative_to

    def event_time(_event: Any) -> float:
        return now_s[0]

    seen = app.Table("seen")  # event id -> its time
    tables = [
        app.Table(f"w{size}", default=lambda: None).tumbling(size).relative_to(event_time)  # type: ignore[attr-defined]
        for size in WINDOWS_S
    ]

    async def agent(stream: Any) -> None:
        async for value in stream:
            record = decode_event(value)
            event_id = record["event_id"]
            if event_id in seen:
                continue
            seen[event_id] = record["occurred_at"]
            now_s[0] = record["occurred_at"] / 1000.0
            weight = float(record.get("weight", 1.0))
            for key in entity_keys(record):
                for table in tables:
                    old = table[key].value()
                    if old is None:
                        table[key] = [1, weight, weight]
                    else:
                        table[key] = [old[0] + 1, old[1] + weight, max(old[2], weight)]

    app.agent(source, name="plain")(agent)
    return app


def build_empty(bootstrap: str, topic: str, group: str, data: str, expect: int) -> faust.App:
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        datadir=data,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,  # its port would collide with other runs; no part of the reading
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes, value_serializer="raw")

    async def agent(stream: Any) -> None:
        started = last = 0.0
        first = seen = at_last = 0
        reported = False
        async for events in stream.take_events(BATCH, 1.0):
            now = time.monotonic()
            if not started:
                started, first = now, len(events)
            seen += len(events)
            # The rate ends at the last full batch: a short last batch waits out `within`.
            if len(events) == BATCH:
                last, at_last = now, seen
            if seen >= expect and not reported:
                if at_last <= first:  # too few events for a full batch after the first
                    last, at_last = now, seen
                result = {"events": at_last - first, "seconds": last - started}
                print(f"{EMPTY_RESULT} {json.dumps(result)}", flush=True)
                reported = True

    app.agent(source, name="empty")(agent)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["plain", "empty"], default="plain")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--expect", type=int, default=0, help="empty mode: events to time")
    args = parser.parse_args()
    if args.mode == "plain":
        app = build(args.bootstrap, args.topic, args.group, args.data, args.partitions)
    else:
        app = build_empty(args.bootstrap, args.topic, args.group, args.data, args.expect)
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


if __name__ == "__main__":
    main()

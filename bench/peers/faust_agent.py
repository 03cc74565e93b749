"""The plain Faust peer: one agent that updates Faust's own tumbling windowed tables per event.

What a Faust user writes first: decode each message (Rhythm's wire decoder), and for every
entity it touches (Rhythm's entity rule) read-modify-write `[count, weight sum, weight max]`
in one windowed table per window size (3600 s, 86400 s), relative to the event's own time.
No batching, no local aggregation, no repartition (the tables live on the events topic's
partitions): it does less than Rhythm (no gaps, no dedup, no alerts), which favours it.

    python -m bench.peers.faust_agent --bootstrap H:P --topic T --group G --data DIR
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

import faust

from rhythm.processors.explode import entity_keys
from rhythm.schemas import decode_event

WINDOWS_S = (3600, 86400)


def build(bootstrap: str, topic: str, group: str, data: str, partitions: int = 4) -> faust.App:
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="rocksdb://",
        datadir=data,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        broker_commit_every=2000,
        broker_commit_interval=0.5,
        topic_partitions=partitions,  # the tables' changelogs follow the source topic
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    now_s: list[float] = [0.0]  # the current event's time, for the tables' relative_to

    def event_time(_event: Any) -> float:
        return now_s[0]

    tables = [
        app.Table(f"w{size}", default=lambda: None)
        .tumbling(size, expires=timedelta(days=2))
        .relative_to(event_time)  # type: ignore[attr-defined]
        for size in WINDOWS_S
    ]

    async def agent(stream: Any) -> None:
        async for value in stream:
            record = decode_event(value)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    app = build(args.bootstrap, args.topic, args.group, args.data, args.partitions)
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


if __name__ == "__main__":
    main()

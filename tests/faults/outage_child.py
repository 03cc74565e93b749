"""A product service during a broker outage, for test_client_outage.py (run as a script).

It tracks events with deterministic ids (UUID(int=i)) as fast as the client lets it until
the file STOP exists, then flushes and closes. Every half second it appends its RSS and the
client's counters to SAMPLES (JSON lines); every event given up goes to GIVEN_UP (id, reason)
from `on_error`; at the end SUMMARY gets the totals. Nothing grows in this process but the
client's own queue: the ids are not kept.

usage: outage_child.py BOOTSTRAP TOPIC POLICY QUEUE_MAX BLOCK_TIMEOUT_S WORKDIR
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from rhythm.producers import Client, ClientSettings, KafkaSettings


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> None:
    bootstrap, topic, policy, queue_max, block_timeout, workdir = sys.argv[1:7]
    work = Path(workdir)
    stop = work / "STOP"
    given_up = (work / "GIVEN_UP").open("a", buffering=1)
    samples = (work / "SAMPLES").open("a", buffering=1)

    def on_error(event: Any, reason: str) -> None:
        given_up.write(f"{uuid.UUID(event['event_id']).int} {reason}\n")

    settings = ClientSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topic=topic,
        full_queue_policy=policy,
        queue_max_messages=int(queue_max),
        block_timeout_s=float(block_timeout),
        linger_ms=5,
    )
    client = Client(settings, on_error=on_error)
    offered = 0
    next_sample = 0.0
    started = time.monotonic()
    while not stop.exists():
        for _ in range(200):
            client.track(
                "acme",
                ("user", f"u-{offered % 50}"),
                "clicked",
                properties={"pad": "x" * 200},
                event_id=str(uuid.UUID(int=offered + 1)),
            )
            offered += 1
        now = time.monotonic()
        if now >= next_sample:
            next_sample = now + 0.5
            stats = client.stats
            sample = {
                "t": now - started,
                "rss_kib": rss_kib(),
                "offered": offered,
                "queued": client.queue_depth(),
                "delivered": stats.delivered,
                "dropped": sum(stats.dropped.values()),
            }
            samples.write(json.dumps(sample) + "\n")
    left = client.flush(120)
    client.close(10)
    stats = client.stats
    summary = {
        "offered": offered,
        "left_after_flush": left,
        "delivered": stats.delivered,
        "dropped": dict(stats.dropped),
        "failed": dict(stats.failed),
    }
    (work / "SUMMARY").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()

"""The plain consumer ceiling: a confluent-kafka `consume()` loop that does nothing with the
messages (librdkafka's defaults, a fresh group from the earliest offset, batches of 10,000).

It times itself from the first batch to the `--expect`-th message (the group join and the first
fetch are start-up, as for the others) and prints one JSON line (`{"events", "seconds"}`).

    python -m bench.peers.consume_loop --bootstrap H:P --topic T --group G --expect N
"""

from __future__ import annotations

import argparse
import json
import time

from confluent_kafka import Consumer

BATCH = 10_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args()
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([args.topic])
    deadline = time.monotonic() + args.timeout_s
    started = 0.0
    first = seen = 0
    try:
        while seen < args.expect and time.monotonic() < deadline:
            # Never ask for more than is left: a short last batch would wait out the timeout.
            batch = consumer.consume(min(BATCH, args.expect - seen), 1.0)
            if not batch:
                continue
            if not started:
                started, first = time.monotonic(), len(batch)
            seen += sum(1 for m in batch if m.error() is None)
        elapsed = time.monotonic() - started if started else 0.0
    finally:
        consumer.close()
    if seen < args.expect:
        raise SystemExit(f"consume loop: {seen} of {args.expect} messages before the timeout")
    print(json.dumps({"events": seen - first, "seconds": elapsed}), flush=True)


if __name__ == "__main__":
    main()

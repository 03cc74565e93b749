"""One client-throughput measurement, run in a fresh process so its CPU time is its own.

    python -m bench.client_bench --mode rhythm --events 200000 --bootstrap H:P --topic T

Modes, all on the same events and the same topic:
- rhythm: `Client.track()` (validate, encode Avro, produce through the bounded queue);
- raw:    confluent-kafka `produce()` of bytes serialised before the clock starts (the ceiling);
- naive:  `json.dumps()` + keyed `produce()` per call, flush at the end (what people write first).
Prints one JSON object: caller-thread CPU µs/event, all-threads CPU µs/event, events/s to the
last delivery acknowledgement.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from typing import Any

from confluent_kafka import Producer

from rhythm.producers import Client, ClientSettings, KafkaSettings
from rhythm.producers.prepare import prepare_event
from rhythm.schemas import encode_event

_VERBS = ["viewed", "clicked", "replied", "purchased", "commented"]


def make_events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Typical events: actor, object, target, channel, context, 2 tags, 2 properties."""
    rng = random.Random(seed)
    base = 1_790_000_000_000
    return [
        {
            "tenant": "acme",
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((base + i * 997) / 1000))
            + f".{i % 1000:03d}Z",
            "actor": {"type": "user", "id": f"u-{rng.randrange(5000)}"},
            "verb": rng.choice(_VERBS),
            "object": {"type": "document", "id": f"doc-{rng.randrange(20000)}"},
            "target": {"type": "account", "id": f"acct-{rng.randrange(500)}"},
            "channel": "web",
            "context_id": f"thread-{rng.randrange(10000)}",
            "tags": ["launch-q4", "bikes"],
            "weight": round(rng.random() * 100, 2),
            "properties": {"plan": "pro", "seats": rng.randrange(1, 50)},
        }
        for i in range(n)
    ]


def _producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.codec": "lz4",
            "queue.buffering.max.messages": 1_000_000,
        }
    )


def run(mode: str, events: list[dict[str, Any]], bootstrap: str, topic: str) -> dict[str, Any]:
    n = len(events)
    delivered = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1

    if mode == "raw":
        prepared = [prepare_event(e) for e in events]
        payloads = [(encode_event(rec), key) for rec, key in prepared]
        producer = _producer(bootstrap)
        t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
        for payload, key in payloads:
            while True:
                try:
                    producer.produce(topic, payload, key, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
        c1 = time.thread_time()
        producer.flush(120)
    elif mode == "naive":
        producer = _producer(bootstrap)
        t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
        for event in events:
            actor = event["actor"]
            key = f"{event['tenant']}:{actor['type']}:{actor['id']}"  # same keying as the others
            producer.produce(topic, json.dumps(event).encode(), key, on_delivery=on_delivery)
            producer.poll(0)
        c1 = time.thread_time()
        producer.flush(120)
    elif mode == "rhythm":
        settings = ClientSettings(
            kafka=KafkaSettings(bootstrap_servers=bootstrap),
            topic=topic,
            queue_max_messages=1_000_000,
            queue_max_kbytes=1_048_576,
        )
        client = Client(settings)
        t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
        for event in events:
            client.send(event)
        c1 = time.thread_time()
        client.flush(120)
        delivered = client.stats.delivered
    else:
        raise SystemExit(f"unknown mode {mode}")
    t1, p1 = time.perf_counter(), time.process_time()
    return {
        "mode": mode,
        "events": n,
        "delivered": delivered,
        "caller_cpu_us_per_event": (c1 - c0) / n * 1e6,
        "all_threads_cpu_us_per_event": (p1 - p0) / n * 1e6,
        "events_per_s": n / (t1 - t0),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True, choices=["rhythm", "raw", "naive"])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args()
    events = make_events(args.events)
    # The harness holds every input event in memory; without this the cyclic GC rescans those
    # 200k dicts over and over and bills it to whichever producer runs. A service tracking
    # events holds none of them, so freeze them out of the measurement (the same for all).
    gc.collect()
    gc.freeze()
    print(json.dumps(run(args.mode, events, args.bootstrap, args.topic)))


if __name__ == "__main__":
    main()

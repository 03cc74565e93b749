"""Processor throughput with 1, 2 and 4 workers, and the state they keep per entity.

    python -m bench.scale_workers [--scale 0.3] [--workers 1,2,4] [--partitions 4]

Standalone: starts its own single-node Kafka on free ports (or uses --bootstrap), publishes a
simulated enterprise (`rhythm simulate`'s generator) once to an events topic with
`--partitions` partitions, then for each worker count runs that many `rhythm processors`
processes as one fresh app (own consumer group and output topics) over the same events and
measures:

- seconds from launching the workers until the group has committed the end of the events
  topic and of its updates topic (startup and the first rebalance included), and events/s;
- events/s of processing alone (from the first committed offset to the end);
- after the 1-worker run: the rocksdict state (keys, bytes of keys+values, bytes on disk) and
  the distinct entities, hence bytes of state per entity.

Prints a markdown table (docs/scaling.md quotes it). The machine's load is printed too: on a
shared machine numbers move with it, so compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from rhythm.producers import ClientSettings, KafkaSettings
from rhythm.runtime.process import stop_groups
from rhythm.stack.kafka import LocalKafka, LocalKafkaSettings
from rhythm.stack.simulate.generate import SimConfig, generate
from rhythm.stack.simulate.send import send


@dataclass
class Run:
    workers: int
    seconds: float
    processing_seconds: float
    events: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def processing_events_per_s(self) -> float:
        return self.events / max(self.processing_seconds, 1e-9)


def create_topics(bootstrap: str, names: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, p, 1) for n, p in names.items()])
    for future in futures.values():
        future.result(60)


def offsets(bootstrap: str, group: str, topic: str, partitions: int) -> tuple[int, int]:
    """(committed by `group`, end) summed over the topic's partitions."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
        end = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
        return committed, end
    finally:
        consumer.close()


def run_workers(
    bootstrap: str, events_topic: str, partitions: int, workers: int, work: Path, timeout: float
) -> Run:
    app = f"bench-scale-{workers}-{uuid.uuid4().hex[:6]}"
    topics = {f"{app}.{t}": n for t, n in (("signals", 4), ("alerts", 2), ("dead", 1))}
    create_topics(bootstrap, topics)
    env = dict(
        os.environ,
        RHYTHM_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        RHYTHM_PROCESSOR_APP_ID=app,
        RHYTHM_PROCESSOR_EVENTS_TOPIC=events_topic,
        RHYTHM_PROCESSOR_UPDATES_TOPIC=f"{app}.updates",
        RHYTHM_PROCESSOR_UPDATES_PARTITIONS=str(partitions),
        RHYTHM_PROCESSOR_SIGNALS_TOPIC=f"{app}.signals",
        RHYTHM_PROCESSOR_ALERTS_TOPIC=f"{app}.alerts",
        RHYTHM_PROCESSOR_DEAD_LETTERS_TOPIC=f"{app}.dead",
        RHYTHM_PROCESSOR_DATA_DIR=str(work / app),
        RHYTHM_PROCESSOR_METRICS_PORT="0",
        RHYTHM_PROCESSOR_WEB_PORT="0",
        RHYTHM_PROCESSOR_SESSION_TIMEOUT_S="10",
    )
    total = 0
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "rhythm.stack.cli", "processors", "--workers", str(workers)],
            env=env,
            stdout=(work / f"{app}.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ]
    first_progress: float | None = None
    updates_end = 0
    try:
        deadline = started + timeout
        while True:
            if time.monotonic() > deadline:
                raise SystemExit(f"{workers} worker(s) did not finish within {timeout:.0f} s")
            if procs[0].poll() is not None:
                raise SystemExit(f"the workers exited ({procs[0].returncode}); see {work}")
            try:
                done, total = offsets(bootstrap, app, events_topic, partitions)
                if done > 0 and first_progress is None:
                    first_progress = time.monotonic()
                if done >= total:
                    # Stage 2 is done with what stage 1 sent for the events once it has
                    # committed the updates' end as of then (idle ticks keep adding to it).
                    committed, end = offsets(bootstrap, app, f"{app}.updates", partitions)
                    updates_end = updates_end or end
                    if committed >= updates_end:
                        break
            except KafkaException:  # the group's coordinator is loading or moving: ask again
                pass
            time.sleep(0.5)
        finished = time.monotonic()
    finally:
        stop_groups(procs, 120.0)
    assert first_progress is not None
    return Run(workers, finished - started, finished - first_progress, total)


def state_size(data_dir: Path) -> tuple[int, int, int]:
    """(keys, bytes of keys and values, bytes on disk) of the rocksdict tables under a
    stopped app's data directory."""
    from rocksdict import AccessType, Options, Rdict

    keys = logical = disk = 0
    for db in data_dir.rglob("*.db"):
        if not db.is_dir():
            continue
        disk += sum(f.stat().st_size for f in db.rglob("*") if f.is_file())
        store = Rdict(str(db), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in store.items():
                assert isinstance(key, bytes) and isinstance(value, bytes)  # raw mode
                keys += 1
                logical += len(key) + len(value)
        finally:
            store.close()
    return keys, logical, disk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=0.3, help="Simulation scale.")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--bootstrap", default=None, help="Use this Kafka (default: own one).")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    sim = generate(SimConfig(now_ms=int(time.time() * 1000), days=args.days, scale=args.scale))
    entities = {
        entity
        for e in sim.events
        for entity in (e.actor, e.object, e.target, *(("tag", t) for t in e.tags))
        if entity is not None
    }
    work = Path(tempfile.mkdtemp(prefix="rhythm-bench-scale-"))
    kafka: LocalKafka | None = None
    try:
        bootstrap = args.bootstrap
        if bootstrap is None:
            kafka = LocalKafka(
                LocalKafkaSettings(home=work / "kafka", port=0, controller_port=0, heap="1g")
            )
            bootstrap = kafka.up(())
        events_topic = f"bench-scale-events-{uuid.uuid4().hex[:6]}"
        create_topics(bootstrap, {events_topic: args.partitions})
        settings = ClientSettings(
            kafka=KafkaSettings(bootstrap_servers=bootstrap), topic=events_topic
        )
        delivery = send(sim, settings, show_progress=False)
        runs: list[Run] = []
        state: tuple[int, int, int] | None = None
        for workers in counts:
            runs.append(
                run_workers(bootstrap, events_topic, args.partitions, workers, work, args.timeout)
            )
            if workers == 1 and state is None:
                (app_dir,) = [p for p in work.glob("bench-scale-1-*") if p.is_dir()]
                state = state_size(app_dir)
        load = os.getloadavg()
    finally:
        if kafka is not None:
            kafka.down()
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"{delivery.sent:,} events ({len(sim.events):,} unique, {len(entities):,} entities, "
        f"{args.days} days, scale {args.scale}), {args.partitions} partitions, "
        f"{os.cpu_count()} cores; load average at the end {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f}\n"
    )
    base = min(runs, key=lambda r: r.workers)
    print("| workers | seconds (incl. start) | events/s | ratio | processing events/s | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(
            f"| {run.workers} | {run.seconds:.1f} | {run.events_per_s:,.0f} | "
            f"{run.events_per_s / base.events_per_s:.2f} | "
            f"{run.processing_events_per_s:,.0f} | "
            f"{run.processing_events_per_s / base.processing_events_per_s:.2f} |"
        )
    if state is not None:
        keys, logical, disk = state
        print(
            f"\nState after the 1-worker run: {keys:,} keys, {logical / 2**20:.1f} MiB of keys "
            f"and values, {disk / 2**20:.1f} MiB on disk; {logical / len(entities):,.0f} B "
            f"(logical) and {disk / len(entities):,.0f} B (disk) per entity."
        )


if __name__ == "__main__":
    main()

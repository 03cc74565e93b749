"""Processor throughput with 1 and 2 workers (or any counts), and the state they keep per entity.

    python -m bench.scale_workers [--scale 1] [--days 30] [--workers 1,2] [--rounds 2]

Standalone: starts its own single-node Kafka on free ports (or uses --bootstrap), publishes a
simulated enterprise (`rhythm simulate`'s generator) once to an events topic with
`--partitions` partitions, then runs each worker count `--rounds` times, interleaved
(1, 2, 2, 1), each run `rhythm processors --workers N` as one fresh app (own consumer group
and output topics) over the same events, timed as the peers bench times Rhythm: from the
group's first commit at or past 5 % of the input to the input's end committed and the
updates topic drained. Per run: events/s, CPU per event of all its processes, and the load.
After the first 1-worker run: the rocksdict state (keys, bytes of keys+values, bytes on disk)
per distinct entity.

The `workers` section of `make bench` (bench/run.py) runs `measure()` on the bench's broker
and checks the goal of two workers at least 1.7x one. On a shared machine the numbers move
with the load, so compare the rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.harness import Timing, loadavg, messages_in, progress, time_group
from bench.peers_bench import START_SHARE
from rhythm.producers import ClientSettings, KafkaSettings
from rhythm.runtime.process import stop_groups
from rhythm.stack.kafka import LocalKafka, LocalKafkaSettings
from rhythm.stack.simulate.generate import SimConfig, generate
from rhythm.stack.simulate.send import send


@dataclass
class Run:
    workers: int
    timing: Timing
    load: str  # 1-minute load average at the end of the run


def create_topics(bootstrap: str, names: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, p, 1) for n, p in names.items()])
    for future in futures.values():
        future.result(60)


def run_workers(
    bootstrap: str,
    events_topic: str,
    partitions: int,
    total: int,
    workers: int,
    work: Path,
    timeout: float,
) -> Run:
    """`rhythm processors --workers N` as one fresh app over the whole events topic, timed
    as the peers bench times Rhythm (harness.time_group): from the group's first commit at or
    past 5 % of the input to its end committed and the updates topic drained."""
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "rhythm.stack.cli", "processors", "--workers", str(workers)],
        env=env,
        stdout=(work / f"{app}.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        timing = time_group(
            bootstrap,
            app,
            events_topic,
            total,
            [f"{app}.updates"],
            proc=proc,  # CPU: the supervisor and its worker processes
            timeout=timeout,
            label=f"{workers} worker(s)",
            start_share=START_SHARE,
        )
    finally:
        stop_groups([proc], 120.0)
    return Run(workers, timing, loadavg())


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


def measure(
    bootstrap: str,
    counts: list[int],
    rounds: int,
    scale: float,
    days: int,
    partitions: int,
    timeout: float,
    work: Path,
) -> tuple[str, dict[int, float]]:
    """Publish the simulated company once, then run each worker count `rounds` times,
    interleaved (1, 2, 2, 1, ...): the markdown of the runs and each count's median rate."""
    sim = generate(SimConfig(now_ms=int(time.time() * 1000), days=days, scale=scale))
    entities = {
        entity
        for e in sim.events
        for entity in (e.actor, e.object, e.target, *(("tag", t) for t in e.tags))
        if entity is not None
    }
    events_topic = f"bench-scale-events-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, {events_topic: partitions})
    settings = ClientSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap), topic=events_topic)
    delivery = send(sim, settings, show_progress=False)
    total = messages_in(bootstrap, events_topic)  # not `sent`: people records go apart
    if total != delivery.delivered - (delivery.sent - len(sim.arrivals)):
        progress(f"workers: {total:,} events in the topic, {delivery.delivered:,} delivered")
    runs: list[Run] = []
    state: tuple[int, int, int] | None = None
    for r in range(rounds):
        for workers in counts if r % 2 == 0 else counts[::-1]:
            progress(f"workers: round {r + 1}, {workers} worker(s), load {loadavg()}")
            run = run_workers(bootstrap, events_topic, partitions, total, workers, work, timeout)
            progress(
                f"  {workers} worker(s): {run.timing.rate:,.0f} events/s, "
                f"{run.timing.cpu_us_per_event:,.0f} µs CPU/event, load {run.load}"
            )
            runs.append(run)
            if workers == 1 and state is None:
                (app_dir,) = [p for p in work.glob("bench-scale-1-*") if p.is_dir()]
                state = state_size(app_dir)
    medians = {n: statistics.median(r.timing.rate for r in runs if r.workers == n) for n in counts}
    base = medians[min(counts)]
    lines = [
        f"{total:,} events ({len(sim.events):,} unique, {len(entities):,} entities, "
        f"{days} days, scale {scale}), {partitions} partitions, {os.cpu_count()} cores "
        "shared with the broker; each count run "
        f"{rounds} times interleaved, medians compared.\n",
        "| workers | events/s (median) | each run | ratio | µs CPU per event (all processes) "
        "| load at each run's end |",
        "|---:|---:|---|---:|---|---|",
    ]
    for n in counts:
        mine = [r for r in runs if r.workers == n]
        lines.append(
            f"| {n} | {medians[n]:,.0f} | "
            + " / ".join(f"{r.timing.rate:,.0f}" for r in mine)
            + f" | {medians[n] / base:.2f} | "
            + " / ".join(f"{r.timing.cpu_us_per_event:,.0f}" for r in mine)
            + " | "
            + " / ".join(r.load for r in mine)
            + " |"
        )
    if state is not None:
        keys, logical, disk = state
        lines.append(
            f"\nState after the first 1-worker run: {keys:,} keys, {logical / 2**20:.1f} MiB of "
            f"keys and values, {disk / 2**20:.1f} MiB on disk; {logical / len(entities):,.0f} B "
            f"(logical) and {disk / len(entities):,.0f} B (disk) per entity."
        )
    return "\n".join(lines) + "\n", medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="Simulation scale.")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--bootstrap", default=None, help="Use this Kafka (default: own one).")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="rhythm-bench-scale-"))
    kafka: LocalKafka | None = None
    try:
        bootstrap = args.bootstrap
        if bootstrap is None:
            kafka = LocalKafka(
                LocalKafkaSettings(home=work / "kafka", port=0, controller_port=0, heap="1g")
            )
            bootstrap = kafka.up(())
        text, _ = measure(
            bootstrap,
            counts,
            args.rounds,
            args.scale,
            args.days,
            args.partitions,
            args.timeout,
            work,
        )
    finally:
        if kafka is not None:
            kafka.down()
        shutil.rmtree(work, ignore_errors=True)
    print(text)


if __name__ == "__main__":
    main()

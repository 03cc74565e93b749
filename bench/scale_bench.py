"""Scale: throughput against partitions and distinct entities, memory per open window, and
recovery after SIGKILL with a million entities in state.

The workload here is synthetic (so the entity count is a knob at a fixed event count): N
events over one day of event time, in time order with up to a minute of jitter, each with an
actor (one of E users), an object (one of E documents), a target (one of E/10 accounts) and
one of 20 tags; published through Rhythm's client. Rates are Rhythm's signal stage measured
as in the peers section (between first and last commit, internal topic drained).
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    Timing,
    create_rhythm_outputs,
    create_topic,
    env_int,
    loadavg,
    processor_env,
    progress,
    rhythm_cli,
    rss_bytes,
    scrape,
    start,
    stop,
    time_group,
)
from rhythm.producers import Client, ClientSettings, KafkaSettings
from rhythm.stack.kafka import LocalKafka
from rhythm.stack.ports import free_port, wait_for_port

DAY_MS = 86_400_000


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def synthetic(n: int, entities: int, *, actors_only: bool = False, seed: int = 5) -> Any:
    """N events over the day before yesterday, time-ordered with < 1 min jitter."""
    rng = random.Random(seed)
    start_ms = (int(time.time() * 1000) // DAY_MS - 2) * DAY_MS
    step = DAY_MS / max(n, 1)
    for i in range(n):
        ts = int(start_ms + i * step) + rng.randrange(60_000)
        event: dict[str, Any] = {
            "tenant": "bench",
            "occurred_at": iso(min(ts, start_ms + DAY_MS - 1)),
            "actor": {"type": "user", "id": f"u-{i if actors_only else rng.randrange(entities)}"},
            "verb": "viewed",
            "weight": round(rng.random() * 10, 2),
        }
        if not actors_only:
            event["object"] = {"type": "document", "id": f"doc-{rng.randrange(entities)}"}
            event["target"] = {
                "type": "account",
                "id": f"acct-{rng.randrange(entities // 10 or 1)}",
            }
            event["tags"] = [f"tag-{rng.randrange(20)}"]
        yield event


def publish(bootstrap: str, topic: str, events: Any, total: int) -> None:
    settings = ClientSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topic=topic,
        queue_max_messages=1_000_000,
        queue_max_kbytes=1_048_576,
    )
    with Client(settings) as client:
        for i, event in enumerate(events, 1):
            client.send(event)
            if i % 200_000 == 0:
                progress(f"  published {i:,}/{total:,}")
        if client.flush(300) != 0:
            raise RuntimeError("not every synthetic event was delivered")


class Run:
    """One Rhythm worker on a synthetic topic."""

    def __init__(self, kafka: LocalKafka, home: Path, name: str, partitions: int) -> None:
        self.bootstrap = kafka.bootstrap
        self.home = home / name
        self.name = name
        self.partitions = partitions
        self.topic = f"{name}.events"
        self.metrics_port = free_port()
        create_topic(self.bootstrap, self.topic, partitions)
        create_rhythm_outputs(self.bootstrap, name, partitions)

    def start(self) -> Any:
        env = processor_env(
            self.bootstrap,
            self.name,
            self.topic,
            self.home / "state",
            self.metrics_port,
            {"RHYTHM_PROCESSOR_UPDATES_PARTITIONS": str(self.partitions)},
        )
        return start([*rhythm_cli(), "processors"], env, self.home / "processors.log")

    def timed(self, total: int, proc: Any, sample: bool = False) -> Timing:
        def on_poll() -> dict[str, float] | None:
            metrics = scrape(self.metrics_port)
            if not metrics:
                return None
            return {
                "rss": float(rss_bytes(proc.pid)),
                "open_windows": metrics.get("rhythm_processor_open_windows", 0.0),
            }

        return time_group(
            self.bootstrap,
            self.name,
            self.topic,
            total,
            [f"{self.name}.updates"],
            proc=proc,
            label=self.name,
            on_poll=on_poll if sample else None,
        )


def throughput_runs(kafka: LocalKafka, home: Path) -> tuple[list[str], str]:
    n = env_int("RHYTHM_BENCH_SCALE_EVENTS", 50_000)
    base = env_int("RHYTHM_BENCH_SCALE_ENTITIES", 5_000)
    rows: list[str] = []
    memory = ""
    cases = [(1, base), (2, base), (4, base), (4, base * 10)]
    rates: dict[tuple[int, int], float] = {}
    for partitions, entities in cases:
        name = f"scale-p{partitions}-e{entities}"
        run = Run(kafka, home, name, partitions)
        progress(f"scale: {name}: publishing {n:,} events")
        publish(kafka.bootstrap, run.topic, synthetic(n, entities), n)
        proc = run.start()
        sample = entities == base * 10
        try:
            wait_for_port("127.0.0.1", run.metrics_port, timeout=60)
            baseline = rss_bytes(proc.pid)
            t = run.timed(n, proc, sample=sample)
        finally:
            stop(proc)
        rates[(partitions, entities)] = t.rate
        rows.append(f"| {partitions} | {entities:,} | {t.rate:,.0f} | (below) | {t.load} |")
        progress(f"  {name}: {t.rate:,.0f} events/s, load {t.load}")
        if sample and not any(s["open_windows"] for s in t.samples):
            memory = (
                f"Memory ({name}): not measured in this run (no sample of "
                "`rhythm_processor_open_windows` above 0); see the recovery line for memory "
                "per entity in state.\n"
            )
        elif sample:
            peak = max(t.samples, key=lambda s: s["open_windows"])
            top_rss = max(s["rss"] for s in t.samples)
            per = (peak["rss"] - baseline) / peak["open_windows"] if peak["open_windows"] else 0
            memory = (
                f"Memory ({name}): resident set {baseline / 2**20:,.0f} MiB after start-up, "
                f"{peak['rss'] / 2**20:,.0f} MiB when the most windows were open "
                f"({peak['open_windows']:,.0f} entity-windows, from "
                "`rhythm_processor_open_windows`), peak "
                f"{top_rss / 2**20:,.0f} MiB: **≈ {per:,.0f} bytes per open entity-window** "
                "(resident growth over open windows; includes rocksdict's memtables and "
                "Python's allocator, sampled every 0.25 s).\n"
            )
    # the 4-partition base row is the reference; rewrite the ratios now that it is known
    ref = rates[(4, base)]
    fixed = []
    for (partitions, entities), row in zip(cases, rows, strict=True):
        cells = row.split(" | ")
        cells[3] = f"{rates[(partitions, entities)] / ref:.2f}" if ref else "n/a"
        fixed.append(" | ".join(cells))
    return fixed, memory


def recovery(kafka: LocalKafka, home: Path) -> str:
    entities = env_int("RHYTHM_BENCH_RECOVERY_ENTITIES", 1_000_000)
    run = Run(kafka, home, "recovery", 4)
    progress(f"scale: recovery: publishing {entities:,} events of distinct actors")
    publish(kafka.bootstrap, run.topic, synthetic(entities, entities, actors_only=True), entities)
    proc = run.start()
    try:
        wait_for_port("127.0.0.1", run.metrics_port, timeout=120)
        rss_fresh = rss_bytes(proc.pid)
        t = run.timed(entities, proc)
        progress(f"  recovery: {entities:,} entities in state at {t.rate:,.0f} events/s")
        rss_before = rss_bytes(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        state_mib = sum(f.stat().st_size for f in (run.home / "state").rglob("*") if f.is_file())
        probes = 100
        publish(kafka.bootstrap, run.topic, synthetic(probes, probes, seed=9), probes)
        restarted = time.monotonic()
        proc = run.start()
        time_group(
            kafka.bootstrap,
            run.name,
            run.topic,
            entities + probes,
            [f"{run.name}.updates"],
            proc=proc,
            label="recovery",
            poll_s=0.1,
        )
        recovered_s = time.monotonic() - restarted
        rss_after = rss_bytes(proc.pid)
    finally:
        stop(proc)
    return (
        f"Recovery after SIGKILL with {entities:,} entities in state (one event each, one "
        f"worker, 4 partitions; state on disk {state_mib / 2**20:,.0f} MiB, resident "
        f"{rss_before / 2**20:,.0f} MiB before the kill against {rss_fresh / 2**20:,.0f} MiB "
        f"for the fresh worker, ≈ {(rss_before - rss_fresh) / entities:,.0f} bytes per entity "
        "in state): from the restart of the worker to "
        f"{probes} new events processed (committed, internal topic drained) "
        f"**{recovered_s:.1f} s**; resident {rss_after / 2**20:,.0f} MiB after. Building "
        f"that state ran at {t.rate:,.0f} events/s; a fresh worker took {t.first_seen_s:.1f} s "
        f"from its start to its first commit (start-up alone). Load {loadavg()}.\n"
    )


def scale_section(kafka: LocalKafka, home: Path) -> str:
    n = env_int("RHYTHM_BENCH_SCALE_EVENTS", 50_000)
    rows, memory = throughput_runs(kafka, home)
    text = (
        "## Scale\n\n"
        f"`python -m bench.run --only scale` — synthetic workload ({n:,} events over one day, "
        "actor, object, target, one tag each; see bench/scale_bench.py), one worker, "
        "the internal updates topic with as many partitions as the events topic.\n\n"
        "| partitions | distinct users / documents | events/s | × 4 partitions | load |\n"
        "| ---: | ---: | ---: | ---: | --- |\n" + "\n".join(rows) + "\n\n" + memory + "\n"
    )
    if env_int("RHYTHM_BENCH_RECOVERY_ENTITIES", 1_000_000) > 0:
        text += recovery(kafka, home)
    return text

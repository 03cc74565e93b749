"""`make bench`: benchmarks side by side in one run, written to BENCHMARKS.md as ratios.

Each section writes bench/results/<section>.md; BENCHMARKS.md is the machine's facts plus
every section's latest result, so re-running one section keeps the others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.harness import GOALS, env_float, env_int, goal, loadavg
from rhythm.stack.kafka import LocalKafka, LocalKafkaSettings
from rhythm.stack.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


HOW = """## How these numbers are made

- `make bench` runs every section on a private local Kafka broker (free ports, data in
  bench/.work, git-ignored) and writes bench/results/<section>.md and this file;
  `python -m bench.run --only peers` (or client, e2e, lanes, scale, workers, collector) re-runs one
  section and keeps the others' last results. `make bench-smoke` runs all of them on small
  sizes (about 20 minutes here) and writes bench/.work-smoke/BENCHMARKS.md instead.
- Sizes come from the environment: `RHYTHM_BENCH_EVENTS` (end to end, default 1,000,000),
  `RHYTHM_BENCH_PEER_SCALE` (peers: `rhythm simulate --scale`, default 1.0 ≈ 169k messages),
  `RHYTHM_BENCH_PEER_PARTITIONS` / `RHYTHM_BENCH_QUIX_GRACE_S` (the peers' input topic, 1
  partition, and Quix's grace, 86,700 s: with these Quix's windows equal Rhythm's),
  `RHYTHM_BENCH_ROUNDS` (peer rounds, default 2), `RHYTHM_BENCH_PEERS` (which peers: all by
  default), `RHYTHM_BENCH_PROFILE_S` (> 0: py-spy over one extra
  whole pass; 0: none),
  `RHYTHM_BENCH_LIVE_S` / `RHYTHM_BENCH_LIVE_ENTITIES` (latency tail, 90 s / 200),
  `RHYTHM_BENCH_LANES_S` / `_LANES_RATE` / `_LANES_ENTITIES` / `_LANES_BACKFILL` (live
  beside a backfill: 60 s per phase, 50 events/s, 100 users, 200,000 history events),
  `RHYTHM_BENCH_SCALE_EVENTS` / `RHYTHM_BENCH_SCALE_ENTITIES` (50,000 / 5,000; events 0
  skips the throughput runs and keeps their last table),
  `RHYTHM_BENCH_COLLECTOR_EVENTS` / `_CONNECTIONS` / `_LATENCY_S` / `_ROUNDS` / `_LIMIT` (the
  HTTP collector, driven by bench/loadgen, built with `go build`: 200,000 events in batches of
  100, 16 connections, 3 rounds of 20 s at half rate for each configuration, 5,000
  events/s per tenant in the flood),
  `RHYTHM_BENCH_RECOVERY_ENTITIES` (1,000,000; 0 skips), `RHYTHM_BENCH_RECOVERY_QUIET_S`
  (30: how long a worker's memory must be settled), `RHYTHM_BENCH_RECOVERY_RESEEK_S`
  (3600: the recovery workers' `RHYTHM_PROCESSOR_RESEEK_AFTER_S`),
  `RHYTHM_BENCH_RECOVERY_INSTANCE_ID` (`w-0`: their `RHYTHM_PROCESSOR_INSTANCE_ID`; empty:
  dynamic membership),
  `RHYTHM_BENCH_WORKERS_SCALE` / `_WORKERS_DAYS` / `_WORKERS_ROUNDS` (1 and 2 workers over
  the simulator's company: scale 1.0, 30 days, 2 rounds).
- The Quix Streams peer and py-spy live in bench/.venv-peers (created by the bench on first
  use, git-ignored): quixstreams pins its own confluent-kafka range.
- The machine is shared (2 cores; other brokers and test suites may run at the same time),
  so absolute numbers move a lot between runs: every result carries the 1-minute load
  average, peer runs are interleaved in rotating order, and the comparisons are ratios
  within one run.
"""


def machine_facts() -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem_gib:.0f} GiB\n"
        f"- Python {platform.python_version()}, {platform.system()} {platform.release()}\n"
    )


def _create_topic(bootstrap: str, name: str, partitions: int = 4) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)


def client_section(bootstrap: str, events: int, rounds: int) -> str:
    modes = ["raw", "rhythm", "naive"]
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for r in range(rounds):
        for mode in modes:  # interleaved, so drift on the machine hits every mode alike
            topic = f"bench-client-{mode}-{r}-{int(time.time())}"
            _create_topic(bootstrap, topic)
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.client_bench",
                    "--mode",
                    mode,
                    "--events",
                    str(events),
                    "--bootstrap",
                    bootstrap,
                    "--topic",
                    topic,
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if out.returncode != 0:
                raise SystemExit(f"bench: {mode} failed:\n{out.stderr[-3000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  round {r + 1} {mode}: {result}", file=sys.stderr, flush=True)
            results[mode].append(result)

    def med(mode: str, key: str) -> float:
        return float(statistics.median(x[key] for x in results[mode]))

    rows = []
    for mode, label in (
        ("raw", "confluent-kafka `produce()` of pre-serialised bytes"),
        ("rhythm", "Rhythm `Client.send()` (validate + Avro + produce)"),
        ("naive", "naive `json.dumps()` + `produce()`"),
    ):
        rows.append(
            f"| {label} | {med(mode, 'caller_cpu_us_per_event'):.1f} | "
            f"{med(mode, 'all_threads_cpu_us_per_event'):.1f} | "
            f"{med(mode, 'events_per_s'):,.0f} | "
            f"{med(mode, 'events_per_s') / med('raw', 'events_per_s'):.2f} |"
        )
    delivered_ok = all(x["delivered"] == x["events"] for v in results.values() for x in v)
    cpu = med("rhythm", "all_threads_cpu_us_per_event")
    goal(
        "client ≤ 15 µs CPU per event (all threads)",
        cpu <= 15,
        f"{cpu:.1f} µs",
        "validation, Avro encoding and produce() per event, plus Python call overhead",
    )
    return (
        "## Client library\n\n"
        f"`python -m bench.run --only client` — {events:,} typical events per run (actor, "
        "object, target, channel, context, 2 tags, 2 properties), each mode in a fresh process "
        f"against the same local broker, {rounds} interleaved rounds, medians shown. "
        "Events/s is to the last delivery acknowledgement (`flush()`).\n\n"
        "| producer | caller CPU µs/event | all-threads CPU µs/event | events/s | × raw |\n"
        "| --- | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n\n"
        f"Every event delivered in every run: {'yes' if delivered_ok else 'NO'}. "
        f"Goal: ≤ 15 µs CPU per event in all threads: {'met' if cpu <= 15 else 'not met'} "
        f"({cpu:.1f} µs).\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--only",
        action="append",
        choices=["client", "peers", "e2e", "lanes", "scale", "workers", "collector"],
        default=None,
    )
    parser.add_argument(
        "--assemble", action="store_true", help="Only rewrite BENCHMARKS.md from the results."
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    every = ["client", "peers", "e2e", "lanes", "scale", "workers", "collector"]
    sections = [] if args.assemble else args.only or every
    began = time.monotonic()
    results = Path(os.environ.get("RHYTHM_BENCH_RESULTS", RESULTS)).resolve()
    # A run with its own results directory (make bench-smoke) writes its BENCHMARKS.md beside.
    target = ROOT / "BENCHMARKS.md" if results == RESULTS else results.parent / "BENCHMARKS.md"
    results.mkdir(parents=True, exist_ok=True)
    if sections:
        run_sections(sections, args, results)
    write_benchmarks(results, target)
    print(f"bench: took {time.monotonic() - began:.0f} s", file=sys.stderr)


def run_sections(sections: list[str], args: argparse.Namespace, results: Path) -> None:
    # Logs and data of this run stay in bench/.work (git-ignored) until the next run.
    home = str(Path(os.environ.get("RHYTHM_BENCH_HOME", ROOT / "bench" / ".work")).resolve())
    shutil.rmtree(home, ignore_errors=True)
    Path(home).mkdir(parents=True)
    kafka = LocalKafka(
        # A generous start timeout: on a busy shared machine the JVM can take minutes.
        LocalKafkaSettings(
            home=Path(home), port=free_port(), controller_port=free_port(), start_timeout_s=300
        )
    )
    bootstrap = kafka.up()
    try:
        for section in sections:
            print(f"bench: {section}", file=sys.stderr, flush=True)
            if section == "client":
                text = client_section(bootstrap, args.events, args.rounds)
            elif section == "peers":
                from bench.peers_bench import peers_section

                text = peers_section(kafka, Path(home))
            elif section == "e2e":
                from bench.e2e_bench import e2e_section

                text = e2e_section(kafka, Path(home))
            elif section == "lanes":
                from bench.lanes_bench import lanes_section

                text = lanes_section(kafka, Path(home))
            elif section == "scale":
                from bench.scale_bench import scale_section

                text = scale_section(kafka, Path(home))
            elif section == "collector":
                from bench.collector_bench import collector_section

                text = collector_section(bootstrap, Path(home))
            else:
                text = workers_section(bootstrap, Path(home))
            text += f"\n_Section run at load {loadavg()} (1-minute average, 2 shared cores)._\n"
            (results / f"{section}.md").write_text(text)
            (results / f"{section}.goals.json").write_text(json.dumps(GOALS))
            GOALS.clear()
    finally:
        kafka.down()


def workers_section(bootstrap: str, home: Path) -> str:
    """1 and 2 processor workers over the same events, interleaved (bench/scale_workers.py,
    which docs/scaling.md quotes); RHYTHM_BENCH_WORKERS_SCALE / _DAYS / _ROUNDS size it."""
    from bench.scale_workers import measure

    scale = env_float("RHYTHM_BENCH_WORKERS_SCALE", 1.0)
    days = env_int("RHYTHM_BENCH_WORKERS_DAYS", 30)
    rounds = env_int("RHYTHM_BENCH_WORKERS_ROUNDS", 2)
    work = home / "workers"
    work.mkdir(parents=True, exist_ok=True)
    table, medians = measure(bootstrap, [1, 2], rounds, scale, days, 4, 1800, work)
    ratio = medians[2] / medians[1] if medians[1] else 0.0
    goal(
        "two workers on two cores ≥ 1.7× one worker",
        ratio >= 1.7,
        f"{ratio:.2f}×",
        f"{medians[1]:,.0f} against {medians[2]:,.0f} events/s; the broker, the bench and "
        "both workers share the two cores",
    )
    return (
        "## Workers\n\n"
        "`python -m bench.run --only workers` (`python -m bench.scale_workers --scale "
        f"{scale} --days {days} --workers 1,2 --rounds {rounds}`): the same events through 1 "
        "and 2 `rhythm processors` workers of one fresh app each (docs/scaling.md).\n\n" + table
    )


def write_benchmarks(results: Path, target: Path) -> None:
    parts = [p.read_text() for p in sorted(results.glob("*.md"))]
    goals = [g for p in sorted(results.glob("*.goals.json")) for g in json.loads(p.read_text())]
    notes = ROOT / "bench" / "NOTES.md"
    target.write_text(
        "# Benchmarks\n\n"
        "Written by `make bench` (bench/run.py), last run "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n"
        + machine_facts()
        + "\n"
        + HOW
        + "\n## Goals\n\n| goal | met | measured | what holds it back (from the run) |\n"
        + "| --- | --- | ---: | --- |\n"
        + "".join(
            f"| {g[0]} | {'yes' if g[1] else '**no**'} | {g[2]} | {g[3] if len(g) > 3 else ''} |\n"
            for g in goals
        )
        + "\n"
        + "\n".join(parts)
        + ("\n" + notes.read_text() if notes.exists() else "")
    )
    print(target.read_text())


if __name__ == "__main__":
    main()

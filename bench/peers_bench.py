"""Peers on the same input in the same run: Rhythm's signal stage, a Quix Streams application
computing the same signals, a plain Faust agent, and Kafka's own consumer (the ceiling).

One topic holds the simulator's workload (`rhythm simulate`, one partition unless
`RHYTHM_BENCH_PEER_PARTITIONS` says otherwise: see PARTITIONS); every peer reads
all of it from the beginning in a fresh consumer group, one after the other, in rounds whose
order rotates (the machine is shared: drift hits every peer alike). Kafka's ProducerPerformance
writes the same number of records of the workload's mean size to a topic of its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.compare import compare, quix_windows, rhythm_windows
from bench.harness import (
    ROOT,
    GroupProgress,
    Timing,
    create_rhythm_outputs,
    create_topic,
    env_float,
    env_int,
    goal,
    loadavg,
    messages_in,
    processor_env,
    progress,
    read_all,
    rhythm_cli,
    simulate,
    start,
    stop,
    time_group,
    topic_names,
)
from rhythm.stack.kafka import LocalKafka

PEERS_VENV = ROOT / "bench" / ".venv-peers"
PEER_PACKAGES = ["quixstreams==3.28.1", "py-spy==0.4.3"]
EVENTS_CONFIG = {"message.timestamp.type": "CreateTime", "max.message.bytes": "1048576"}

#: The input topic's partitions: one, so that every engine's event-time clock is the same
#: notion. With several, Quix's stream time is per partition of its repartition topic, and
#: in a fast replay the source partitions drift days apart in event time: it dropped
#: updates as late that Rhythm (minimum watermark over the sources) counts, and only 84% of
#: the windows matched (4 partitions, 3-day grace); with one partition and the grace below,
#: all of them do. Rhythm's rate hardly depends on it (scale section: one worker is one core).
PARTITIONS = env_int("RHYTHM_BENCH_PEER_PARTITIONS", 1)
#: Quix's grace = Rhythm's lateness + late retention (300 s + 1 day): both then fold in the
#: same late events, and Quix's final window equals Rhythm's last version.
QUIX_GRACE_S = env_int("RHYTHM_BENCH_QUIX_GRACE_S", 86_700)


def ensure_peers_venv() -> Path:
    """bench/.venv-peers with Quix Streams and py-spy (git-ignored, created once)."""
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != " ".join(PEER_PACKAGES):
        progress(f"creating {PEERS_VENV} ({', '.join(PEER_PACKAGES)})")
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True, timeout=900
        )
        stamp.write_text(" ".join(PEER_PACKAGES))
    return python


def wait_quiet(bootstrap: str, topic: str, quiet_s: float = 8.0, timeout: float = 300.0) -> int:
    """Messages in `topic` once its count has not moved for `quiet_s` (windows closing late)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = messages_in(bootstrap, topic)
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.5)
    return last


class Peers:
    def __init__(self, kafka: LocalKafka, home: Path, topic: str, total: int) -> None:
        self.kafka = kafka
        self.bootstrap = kafka.bootstrap
        self.home = home
        self.topic = topic
        self.total = total
        self.python = ensure_peers_venv()
        self.quix_late: dict[str, int] = {}

    def rhythm(self, name: str, *, keep: bool = False, profile_s: float = 0.0) -> Timing:
        create_rhythm_outputs(self.bootstrap, name)
        env = processor_env(self.bootstrap, name, self.topic, self.home / name / "state")
        proc = start([*rhythm_cli(), "processors"], env, self.home / name / "log")
        spy: subprocess.Popen[bytes] | None = None
        if profile_s:  # from the first commit to the end of the pass (both stages)
            watch = GroupProgress(self.bootstrap, name)
            deadline = time.monotonic() + 600
            while watch.committed_and_lag(self.topic)[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            watch.close()
            spy = start(
                [
                    str(PEERS_VENV / "bin" / "py-spy"),
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--rate",
                    "50",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(self.home / "profile.txt"),
                ],
                {"PATH": "/usr/bin:/bin"},
                self.home / "py-spy.log",
            )
        try:
            timing = time_group(
                self.bootstrap,
                name,
                self.topic,
                self.total,
                [f"{name}.updates"],
                proc=proc,
                label=f"rhythm {name}",
            )
            if keep:
                wait_quiet(self.bootstrap, f"{name}.signals")
            return timing
        finally:
            if spy is not None:  # SIGINT: py-spy writes what it sampled and exits
                stop(spy, timeout=60, sig=signal.SIGINT)
            stop(proc)

    def quix(self, name: str, *, keep: bool = False) -> Timing:
        output = f"{name}.out"
        create_topic(self.bootstrap, output, 4)
        argv = [
            str(self.python),
            "-m",
            "bench.peers.quix_app",
            "--bootstrap",
            self.bootstrap,
            "--topic",
            self.topic,
            "--output",
            output,
            "--group",
            name,
            "--state",
            str(self.home / name / "state"),
            "--grace-s",
            str(QUIX_GRACE_S),
        ]
        proc = start(
            argv, {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, self.home / name / "log"
        )

        def internal() -> list[str]:
            return [
                t
                for t in topic_names(self.bootstrap)
                if t.startswith("repartition__") and name in t
            ]

        try:
            timing = time_group(
                self.bootstrap,
                name,
                self.topic,
                self.total,
                internal,
                proc=proc,
                label=f"quix {name}",
            )
            if keep:
                wait_quiet(self.bootstrap, output)
            return timing
        finally:
            stop(proc)
            self.quix_late[name] = quix_late(self.home / name / "log")

    def faust(self, name: str, total: int) -> Timing:
        argv = [
            sys.executable,
            "-m",
            "bench.peers.faust_agent",
            "--bootstrap",
            self.bootstrap,
            "--topic",
            self.topic,
            "--group",
            name,
            "--data",
            str(self.home / name / "data"),
            "--partitions",
            str(PARTITIONS),
        ]

        # Faust creates its tables' changelog topics itself, but an agent that writes before
        # the new topic's metadata arrives crashes (PartitionsMismatch): create them first.
        for size in (3600, 86400):
            create_topic(
                self.bootstrap,
                f"{name}-w{size}-changelog",
                PARTITIONS,
                {"cleanup.policy": "compact"},
            )
        log = self.home / name / "log"
        proc = start(argv, dict(os.environ, PYTHONUNBUFFERED="1"), log)

        def crashed() -> None:  # a crashed Faust agent leaves its worker running
            if log.exists() and "Crashed reason" in log.read_text(errors="replace"):
                raise RuntimeError(f"faust {name}: the agent crashed; see {log}")

        try:
            return time_group(
                self.bootstrap,
                name,
                self.topic,
                total,
                proc=proc,
                label=f"faust {name}",
                on_poll=crashed,
            )
        finally:
            stop(proc)

    def kafka_consume(self) -> Timing:
        stats = self.kafka.consumer_perf(self.topic, self.total, timeout_ms=20_000)
        # fetch.nMsg.sec: after the group join (as the others, start-up excluded).
        rate = stats.get("fetch_records_per_s") or stats["records_per_s"]
        seconds = self.total / rate if rate else 0.0
        return Timing(int(stats["records"]), seconds, 0.0, loadavg())


def quix_late(log: Path) -> int:
    """The last count of late window updates the Quix peer logged it dropped (a lower bound:
    it logs every 1000th)."""
    found = re.findall(r"quix peer: (\d+) late window updates", log.read_text(errors="replace"))
    return int(found[-1]) if found else 0


def _frame(frame: str) -> str:
    """`func (path:line)` -> `func (path)`: one row per function, not per line."""
    return re.sub(r":\d+\)$", ")", frame)


def profile_top(raw: Path, top: int = 15) -> str:
    """The hottest functions of a `py-spy record --format raw` file: by own samples (the
    function at the top of the stack), and Rhythm's own functions by total samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return "(no samples)\n"
    lines = ["| self % | total % | function (file) |", "| ---: | ---: | --- |"]
    for frame, count in own.most_common(top):
        lines.append(
            f"| {100 * count / samples:.1f} | {100 * total[frame] / samples:.1f} | `{frame}` |"
        )
    ours = [(f, c) for f, c in total.most_common() if "processors/" in f or "schemas/" in f]
    lines += ["", "Rhythm's own functions by total share (self + callees):", ""]
    lines += ["| total % | function (file) |", "| ---: | --- |"]
    lines += [f"| {100 * c / samples:.1f} | `{f}` |" for f, c in ours[:top]]
    return f"{samples:,} samples.\n\n" + "\n".join(lines) + "\n"


def peers_section(kafka: LocalKafka, home: Path) -> str:
    bootstrap = kafka.bootstrap
    scale = env_float("RHYTHM_BENCH_PEER_SCALE", 1.0)
    rounds = env_int("RHYTHM_BENCH_ROUNDS", 2)
    profile_s = env_float("RHYTHM_BENCH_PROFILE_S", 30.0)
    topic = "bench.peers.events"
    # The plain Faust agent runs at a few hundred events/s: time it on the topic's first
    # messages (all partitions) rather than spend most of the run on it.
    faust_max = env_int("RHYTHM_BENCH_FAUST_EVENTS", 30_000)
    create_topic(bootstrap, topic, PARTITIONS, EVENTS_CONFIG)
    progress(f"peers: publishing the simulator's workload (scale {scale}) to {topic}")
    counts = simulate(bootstrap, topic, scale, home / "peers-manifest.json", home / "simulate.log")
    total = messages_in(bootstrap, topic)
    values = read_all(bootstrap, topic)
    mean_size = round(sum(len(v) for v in values) / max(len(values), 1))
    del values
    progress(f"peers: {total:,} messages, mean {mean_size} bytes")
    peers = Peers(kafka, home, topic, total)

    runs: dict[str, list[Timing]] = {
        "rhythm": [],
        "quix": [],
        "faust": [],
        "kafka": [],
        "produce": [],
    }
    check = None
    names = os.environ.get("RHYTHM_BENCH_PEERS", "rhythm,quix,faust,kafka").split(",")

    def render(profile: str, done_rounds: int, register: bool = False) -> str:
        def med(peer: str) -> float:
            rates = [t.rate for t in runs[peer]]
            return float(statistics.median(rates)) if rates else float("nan")

        def loads(peer: str) -> str:
            return " / ".join(t.load for t in runs[peer])

        rhythm = med("rhythm")
        stage1 = [
            (t.events / t.input_s if t.input_s > 0 else float("nan"), t.seconds - t.input_s)
            for t in runs["rhythm"]
        ]
        rows_md = []
        for peer, label in (
            ("rhythm", "Rhythm signal stage (stage 1 + stage 2, one worker)"),
            ("quix", "Quix Streams 3.28.1 app, same signals"),
            ("faust", "plain Faust agent, windowed tables per event"),
            ("kafka", "Kafka ConsumerPerformance (raw consume)"),
            ("produce", "Kafka ProducerPerformance (raw produce)"),
        ):
            if not runs[peer]:
                continue
            value = med(peer)
            ratio = rhythm / value if value else 0.0
            rows_md.append(
                f"| {label} | {value:,.0f} | {ratio:.2f} | "
                + " / ".join(f"{t.rate:,.0f}" for t in runs[peer])
                + f" | {loads(peer)} |"
            )

        def over(peer: str) -> float:
            value = med(peer)
            return rhythm / value if value else float("nan")

        goals = [
            ("Rhythm ≥ 3× Quix", over("quix") >= 3, f"{over('quix'):.2f}×"),
            ("Rhythm ≥ 10× plain Faust", over("faust") >= 10, f"{over('faust'):.2f}×"),
            (
                "Rhythm ≥ 25% of Kafka raw consume",
                over("kafka") >= 0.25,
                f"{100 * over('kafka'):.1f}%",
            ),
        ]
        if register:
            why = (
                "stage 2: stage 1 had committed the input at "
                + " / ".join(f"{r:,.0f}" for r, _ in stage1)
                + " events/s, then the updates topic took "
                + " / ".join(f"{d:.0f}" for _, d in stage1)
                + " s more to drain"
            )
            for g, ok, m in goals:
                goal(g, ok, m, why)
        text = (
            "## Peers on the same input\n\n"
            "`python -m bench.run --only peers` — the simulator's workload "
            f"(`rhythm simulate --scale {scale}`: {counts['sent']:,} messages sent, "
            f"{counts['duplicates']:,} of them re-sent duplicates, mean {mean_size} bytes, "
            f"Avro in Confluent framing) in one {PARTITIONS}-partition "
            f"topic (`RHYTHM_BENCH_PEER_PARTITIONS={PARTITIONS}`, "
            f"`RHYTHM_BENCH_QUIX_GRACE_S={QUIX_GRACE_S}`); each peer reads all {total:,} "
            "messages from the beginning in a fresh group, "
            f"{done_rounds} rounds with rotating order, medians shown. Events/s is between the "
            "peer's first commit and the commit of the last input message with its internal "
            "(repartition) topic drained, polled from outside every 0.25 s (start-up excluded). "
            "Load = 1-minute load average at the end of each run (2 shared cores).\n\n"
            "| peer | events/s (median) | Rhythm ÷ peer | each round | load |\n"
            "| --- | ---: | ---: | --- | --- |\n" + "\n".join(rows_md) + "\n\n"
            "What each does per input event: **Rhythm** decodes, validates, re-keys to every "
            "entity (actor, object, target, tags) and thread through the internal updates "
            "topic, then per entity dedups by event_id, orders by event time within the "
            "lateness, updates 3600 s "
            "and 86400 s windows (count, sum, max, gaps), the gap histogram and the silence and "
            "unanswered rules, and emits each window once it closes. **Quix** decodes, explodes "
            "to the same entities, repartitions by entity (`group_by`), dedups by event_id and "
            f"computes the gap in state, then two tumbling windows (3600 s, 86400 s; grace "
            f"{QUIX_GRACE_S:,} s; "
            "small fetches so the partitions interleave) "
            "with Count/Sum/Max of weight and Count/Min/Max/Mean of gap, `.final()`. **Faust** "
            "decodes and, per entity and window size, reads and writes `[count, sum, max]` in a "
            "tumbling windowed table (no repartition, dedup, gaps or alerts: less work than "
            "either). **Kafka** consumes the same topic's bytes and does nothing with them.\n\n"
            f"Output check (round 1, bench/compare.py): {check.summary() if check else 'not run'}"
            f"{': EQUAL' if check and check.all_equal else ': NOT EQUAL'}. "
            "Compared: `event_count`, `weight_max` exactly and `weight_sum` (relative 1e-9) for "
            "every role, both window sizes. Not compared: the gap fields (Quix sees arrival order, "
            "Rhythm event-time order within its lateness; the simulator's 3-minute arrival jitter "
            "makes them differ by design) and alerts (Quix computes none).\n"
        )
        text += (
            "\nWhere Rhythm's time goes, from the same timing: the events topic was fully "
            "committed (stage 1) at "
            + " / ".join(f"{r:,.0f}" for r, _ in stage1)
            + " events/s; stage 2 then needed "
            + " / ".join(f"{d:.0f}" for _, d in stage1)
            + " s more to drain the internal updates topic (each round).\n"
        )
        late = peers.quix_late.get("bench-quix-0")
        if late:
            text += (
                f"\nThe Quix peer dropped at least {late:,} window updates as late in round 1 "
                "(past its grace in its per-partition stream time), which is why its counts "
                "fall short where they differ; Rhythm counts those events.\n"
            )
        if check and check.examples:
            text += "\nFirst differences: " + "; ".join(check.examples) + "\n"
        text += (
            "\n| goal | met | measured |\n| --- | --- | ---: |\n"
            + "\n".join(f"| {g} | {'yes' if ok else 'no'} | {m} |" for g, ok, m in goals)
            + "\n"
        )
        if profile:
            text += (
                "\n### Profile of the Rhythm worker\n\n"
                "`py-spy record --rate 50 --nonblocking --format raw` on a worker reading the same "
                "topic, from its first commit until the pass is done (stage 1 and the stage 2 "
                "drain; a separate pass, not one of the timed rounds); "
                "the functions with the most samples at the top of the stack:\n\n" + profile
            )
        return text

    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for peer in order:
            progress(f"peers round {r + 1}/{rounds}: {peer} (load {loadavg()})")
            first = r == 0
            if peer == "rhythm":
                t = peers.rhythm(f"bench-rhythm-{r}", keep=first)
            elif peer == "quix":
                t = peers.quix(f"bench-quix-{r}", keep=first)
            elif peer == "faust":
                t = peers.faust(f"bench-faust-{r}", min(total, faust_max))
            else:
                t = peers.kafka_consume()
            progress(f"  {peer}: {t.rate:,.0f} events/s over {t.seconds:.1f} s, load {t.load}")
            runs[peer].append(t)
        perf_topic = f"bench.perf.{r}"
        create_topic(bootstrap, perf_topic, 4)
        stats = kafka.producer_perf(
            perf_topic,
            total,
            mean_size,
            props={"acks": "all", "linger.ms": "20", "compression.type": "lz4"},
        )
        runs["produce"].append(Timing(total, total / stats["records_per_s"], 0.0, loadavg()))
        progress(f"  kafka produce: {stats['records_per_s']:,.0f} records/s")
        if first:
            progress("peers: comparing Rhythm's and Quix's windows")
            signals = [json.loads(v) for v in read_all(bootstrap, "bench-rhythm-0.signals")]
            rows = [json.loads(v) for v in read_all(bootstrap, "bench-quix-0.out")]
            check = compare(rhythm_windows(signals), quix_windows(rows))
            progress(f"  {check.summary()}")
        # A partial result after every round, in case the run is cut short.
        results = Path(os.environ.get("RHYTHM_BENCH_RESULTS", ROOT / "bench" / "results"))
        partial = render("", r + 1)
        if r + 1 < rounds:
            partial += f"\n_Partial: {r + 1} of {rounds} rounds done when this was written._\n"
        results.mkdir(parents=True, exist_ok=True)
        (results / "peers.md").write_text(partial)

    profile = ""
    if profile_s > 0:
        progress("peers: profiling one more Rhythm pass with py-spy")
        try:
            peers.rhythm("bench-rhythm-profile", profile_s=profile_s)
            profile = profile_top(home / "profile.txt")
        except Exception as exc:  # the profile is extra: say why it is missing
            profile = f"(py-spy failed: {exc})\n"

    return render(profile, rounds, register=True)

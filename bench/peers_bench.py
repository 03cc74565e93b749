"""Peers on the same input in the same run: Rhythm's signal stage with its production
settings, a Quix Streams application computing the same signals (at its defaults, and tuned
as its docs say), a plain Faust agent at Faust's defaults, and three ceilings that do no work:
an empty Faust agent, a plain confluent-kafka `consume()` loop and Kafka's own
ConsumerPerformance.

One topic holds the simulator's workload (`rhythm simulate`, one partition unless
`RHYTHM_BENCH_PEER_PARTITIONS` says otherwise: see PARTITIONS); every peer reads
all of it from the beginning in a fresh consumer group, one after the other, in rounds whose
order rotates (the machine is shared: drift hits every peer alike). Kafka's ProducerPerformance
writes the same number of records of the workload's mean size to a topic of its own.

Every peer that computes windows has its round-1 output checked against a reference computed
here from the input messages (bench/compare.py), by none of the peers' code.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader

from bench.compare import (
    Check,
    Reference,
    WindowKey,
    check,
    faust_windows,
    quix_windows,
    reference_windows,
    rhythm_windows,
)
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
    read_messages,
    rhythm_cli,
    scrape,
    simulate,
    start,
    stop,
    time_group,
    topic_names,
)
from bench.peers.faust_agent import EMPTY_RESULT
from bench.peers.faust_agent import WINDOWS_S as FAUST_WINDOWS_S
from rhythm.stack.kafka import LocalKafka
from rhythm.stack.ports import free_port

PEERS_VENV = ROOT / "bench" / ".venv-peers"
# The clock starts at each peer's first commit at or past this share of the input, the
# same point for every commit regime (Rhythm commits after its first batches, Quix every
# 5 s, Faust every 2.8 s): start-up and warm-up are left out alike.
START_SHARE = 0.05
PEER_PACKAGES = ["quixstreams==3.28.1", "py-spy==0.4.3"]
EVENTS_CONFIG = {"message.timestamp.type": "CreateTime", "max.message.bytes": "1048576"}
SCHEMA = ROOT / "schemas/rhythm/schemas/avro/event-v1.avsc"

#: The input topic's partitions: one, so that every engine's event-time clock is the same
#: notion. With several, Quix's stream time is per partition of its repartition topic, and
#: in a fast replay the source partitions drift days apart in event time: it dropped
#: updates as late that Rhythm (minimum watermark over the sources) counts, and only 84% of
#: the windows matched (4 partitions, 3-day grace); with one partition and the grace below,
#: all of them do. The plain Faust agent does not repartition, so its windows are only whole
#: with one input partition. Rhythm's rate hardly depends on it (scale section: one worker is
#: one core).
PARTITIONS = env_int("RHYTHM_BENCH_PEER_PARTITIONS", 1)
#: Quix's grace = Rhythm's lateness + late retention (300 s + 1 day): both then fold in the
#: same late events, and Quix's final window equals Rhythm's last version. Also how long
#: Quix keeps an event id for its dedup (Rhythm's dedup horizon is the same sum).
QUIX_GRACE_S = env_int("RHYTHM_BENCH_QUIX_GRACE_S", 86_700)

#: Every peer, in the order of the table; RHYTHM_BENCH_PEERS picks some (and their order in
#: round 1; later rounds rotate it).
PEER_LABELS = {
    "rhythm": "Rhythm signal stage, production settings (one worker)",
    "quix": "Quix Streams 3.28.1 app at its defaults, same signals",
    "quix-tuned": "Quix Streams 3.28.1 app, documented tuning (commit_interval 30 s)",
    "faust": "plain Faust agent at Faust's defaults, windowed tables",
    "faust-empty": "ceiling: empty Faust agent (`take_events`, no work)",
    "consume": "ceiling: confluent-kafka `consume()` loop, no work",
    "kafka": "ceiling: Kafka ConsumerPerformance (raw consume)",
}
#: The peers whose output is window signals, checked against the reference.
COMPUTING = ("rhythm", "quix", "quix-tuned", "faust")


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


def _plain_schema(node: Any) -> Any:
    """The schema without logical types: timestamps stay epoch-ms ints."""
    if isinstance(node, dict):
        return {k: _plain_schema(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_plain_schema(v) for v in node]
    return node


def decode_input(values: list[bytes]) -> list[dict[str, Any]]:
    """The input messages decoded with fastavro and the schema file (none of the peers'
    decoders: the reference stands on its own)."""
    parsed = parse_schema(_plain_schema(json.loads(SCHEMA.read_text())))
    out: list[dict[str, Any]] = []
    for value in values:
        magic, _schema_id = struct.unpack_from(">BI", value)
        if magic != 0:
            raise ValueError("input message not in Confluent framing")
        out.append(cast(dict[str, Any], schemaless_reader(io.BytesIO(value[5:]), parsed, None)))
    return out


def read_keyed(bootstrap: str, topic: str, timeout: float = 300.0) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of `topic` up to its end offsets now, in each partition's order (a
    tombstone's value as JSON null)."""
    return [
        (m.key() or b"", m.value() or b"null") for m in read_messages(bootstrap, topic, timeout)
    ]


def rhythm_production_env(
    bootstrap: str, name: str, topic: str, state: Path, metrics_port: int
) -> dict[str, str]:
    """A worker as it runs in production: /metrics and the health timers on (a port), the
    idle partition timeout and every other setting at its default, too-late events routed to
    a history topic of its own (the live lane's default behaviour)."""
    env = processor_env(bootstrap, name, topic, state, metrics_port)
    env.pop("RHYTHM_PROCESSOR_IDLE_AFTER_S", None)
    env["RHYTHM_PROCESSOR_HISTORY_TOPIC"] = f"{name}.history"
    return env


def faust_changelogs(bootstrap: str, group: str) -> list[tuple[int, Any, Any]]:
    """The plain Faust peer's window tables as (window seconds, key, value), in log order."""
    out: list[tuple[int, Any, Any]] = []
    for size in FAUST_WINDOWS_S:
        for key, value in read_keyed(bootstrap, f"{group}-w{size}-changelog"):
            out.append((size, json.loads(key), json.loads(value)))
    return out


def read_result_line(log: Path, prefix: str) -> dict[str, Any] | None:
    """The JSON after `prefix` on the last such line of a peer's log, if it printed one
    (anywhere in the line: a Faust worker sends what its agents print through its logger)."""
    if not log.exists():
        return None
    found = [
        line.partition(prefix)[2].strip()
        for line in log.read_text(errors="replace").splitlines()
        if prefix in line
    ]
    result: dict[str, Any] | None = json.loads(found[-1]) if found else None
    return result


class Peers:
    def __init__(self, kafka: LocalKafka, home: Path, topic: str, total: int) -> None:
        self.kafka = kafka
        self.bootstrap = kafka.bootstrap
        self.home = home
        self.topic = topic
        self.total = total
        self.python = ensure_peers_venv()
        self.quix_late: dict[str, int] = {}
        self.rhythm_metrics: dict[str, dict[str, float]] = {}

    def rhythm(self, name: str, *, keep: bool = False, profile_s: float = 0.0) -> Timing:
        create_rhythm_outputs(self.bootstrap, name)
        port = free_port()
        env = rhythm_production_env(
            self.bootstrap, name, self.topic, self.home / name / "state", port
        )
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
                start_share=START_SHARE,
            )
            if keep:  # the last windows close once the idle input's watermark follows the
                # clock (idle_after_s, 10 s by default): wait longer than that
                wait_quiet(self.bootstrap, f"{name}.signals", quiet_s=20.0)
            self.rhythm_metrics[name] = scrape(port)
            return timing
        finally:
            if spy is not None:  # SIGINT: py-spy writes what it sampled and exits
                stop(spy, timeout=60, sig=signal.SIGINT)
            stop(proc)

    def quix(self, name: str, variant: str) -> Timing:
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
            "--dedup-s",
            str(QUIX_GRACE_S),
            "--variant",
            variant,
            "--expect",
            str(self.total),
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
            return time_group(
                self.bootstrap,
                name,
                self.topic,
                self.total,
                internal,
                proc=proc,
                label=f"quix {name}",
                start_share=START_SHARE,
            )
        finally:
            stop(proc)
            self.quix_late[name] = quix_late(self.home / name / "log")

    def faust(self, name: str, *, keep: bool = False) -> Timing:
        argv = [
            sys.executable,
            "-m",
            "bench.peers.faust_agent",
            "--mode",
            "plain",
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
        for table in ("seen", *(f"w{size}" for size in FAUST_WINDOWS_S)):
            create_topic(
                self.bootstrap,
                f"{name}-{table}-changelog",
                PARTITIONS,
                {"cleanup.policy": "compact"},
            )
        log = self.home / name / "log"
        proc = start(argv, dict(os.environ, PYTHONUNBUFFERED="1"), log)

        def crashed() -> None:  # a crashed Faust agent leaves its worker running
            if log.exists() and "Crashed reason" in log.read_text(errors="replace"):
                raise RuntimeError(f"faust {name}: the agent crashed; see {log}")

        try:
            timing = time_group(
                self.bootstrap,
                name,
                self.topic,
                self.total,
                proc=proc,
                label=f"faust {name}",
                start_share=START_SHARE,
                on_poll=crashed,
            )
            if keep:  # its output: the changelogs, sent before the offsets were committed
                for size in FAUST_WINDOWS_S:
                    wait_quiet(self.bootstrap, f"{name}-w{size}-changelog", quiet_s=5.0)
            return timing
        finally:
            stop(proc)

    def faust_empty(self, name: str, timeout: float = 1800.0) -> Timing:
        argv = [sys.executable, "-m", "bench.peers.faust_agent", "--mode", "empty"]
        argv += ["--bootstrap", self.bootstrap, "--topic", self.topic, "--group", name]
        argv += ["--data", str(self.home / name / "data"), "--expect", str(self.total)]
        log = self.home / name / "log"
        proc = start(argv, dict(os.environ, PYTHONUNBUFFERED="1"), log)
        try:
            return self._self_timed(proc, log, EMPTY_RESULT, timeout, f"faust empty {name}")
        finally:
            stop(proc)

    def consume_loop(self, name: str, timeout: float = 600.0) -> Timing:
        argv = [sys.executable, "-m", "bench.peers.consume_loop"]
        argv += ["--bootstrap", self.bootstrap, "--topic", self.topic, "--group", name]
        argv += ["--expect", str(self.total), "--timeout-s", str(timeout)]
        out = subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout + 60, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(f"consume loop {name} failed: {out.stderr[-2000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        return Timing(int(result["events"]), float(result["seconds"]), 0.0, loadavg())

    def _self_timed(
        self, proc: subprocess.Popen[bytes], log: Path, prefix: str, timeout: float, label: str
    ) -> Timing:
        """A peer that times itself and prints `prefix {"events", "seconds"}` when done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = read_result_line(log, prefix)
            if result is not None:
                return Timing(int(result["events"]), float(result["seconds"]), 0.0, loadavg())
            if proc.poll() is not None:
                raise RuntimeError(f"{label}: exited with {proc.returncode}; see {log}")
            time.sleep(0.5)
        raise TimeoutError(f"{label}: no result after {timeout:.0f} s; see {log}")

    def kafka_consume(self) -> Timing:
        stats = self.kafka.consumer_perf(self.topic, self.total, timeout_ms=20_000)
        # fetch.nMsg.sec: after the group join (as the others, start-up excluded).
        rate = stats.get("fetch_records_per_s") or stats["records_per_s"]
        seconds = self.total / rate if rate else 0.0
        return Timing(int(stats["records"]), seconds, 0.0, loadavg())

    def output(self, peer: str, name: str) -> dict[WindowKey, Mapping[str, Any]]:
        """The windows a computing peer emitted in its run `name`."""
        if peer == "rhythm":
            signals = [json.loads(v) for v in read_all(self.bootstrap, f"{name}.signals")]
            return rhythm_windows(signals)
        if peer == "faust":
            return faust_windows(faust_changelogs(self.bootstrap, name))
        rows = [json.loads(v) for v in read_all(self.bootstrap, f"{name}.out")]
        return quix_windows(rows)


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


def run_name(peer: str, r: int) -> str:
    return f"bench-{peer}-{r}"


def peers_section(kafka: LocalKafka, home: Path) -> str:
    bootstrap = kafka.bootstrap
    scale = env_float("RHYTHM_BENCH_PEER_SCALE", 1.0)
    rounds = env_int("RHYTHM_BENCH_ROUNDS", 2)
    profile_s = env_float("RHYTHM_BENCH_PROFILE_S", 30.0)
    topic = "bench.peers.events"
    create_topic(bootstrap, topic, PARTITIONS, EVENTS_CONFIG)
    progress(f"peers: publishing the simulator's workload (scale {scale}) to {topic}")
    counts = simulate(bootstrap, topic, scale, home / "peers-manifest.json", home / "simulate.log")
    total = messages_in(bootstrap, topic)
    values = read_all(bootstrap, topic)
    mean_size = round(sum(len(v) for v in values) / max(len(values), 1))
    drop_after_ms = QUIX_GRACE_S * 1000
    reference = reference_windows(decode_input(values), FAUST_WINDOWS_S, drop_after_ms)
    del values
    progress(
        f"peers: {total:,} messages, mean {mean_size} bytes; reference: "
        f"{len(reference.windows):,} windows of {reference.events:,} events"
    )
    peers = Peers(kafka, home, topic, total)

    names = os.environ.get("RHYTHM_BENCH_PEERS", ",".join(PEER_LABELS)).split(",")
    unknown = [n for n in names if n not in PEER_LABELS]
    if unknown:
        raise SystemExit(f"RHYTHM_BENCH_PEERS: unknown {unknown}; known: {list(PEER_LABELS)}")
    runs: dict[str, list[Timing]] = {peer: [] for peer in [*PEER_LABELS, "produce"]}
    checks: dict[str, Check] = {}
    failures: list[str] = []

    def render(profile: str, done_rounds: int, register: bool = False) -> str:
        return render_section(
            runs,
            checks,
            reference,
            peers.rhythm_metrics.get(run_name("rhythm", 0), {}),
            peers.quix_late,
            profile,
            done_rounds,
            register=register,
            failures=failures,
            facts={
                "scale": scale,
                "sent": counts["sent"],
                "duplicates": counts["duplicates"],
                "mean_size": mean_size,
                "total": total,
            },
        )

    run: dict[str, Callable[[int], Timing]] = {
        "rhythm": lambda r: peers.rhythm(run_name("rhythm", r), keep=r == 0),
        "quix": lambda r: peers.quix(run_name("quix", r), "defaults"),
        "quix-tuned": lambda r: peers.quix(run_name("quix-tuned", r), "tuned"),
        "faust": lambda r: peers.faust(run_name("faust", r), keep=r == 0),
        "faust-empty": lambda r: peers.faust_empty(run_name("faust-empty", r)),
        "consume": lambda r: peers.consume_loop(run_name("consume", r)),
        "kafka": lambda r: peers.kafka_consume(),
    }
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for peer in order:
            progress(f"peers round {r + 1}/{rounds}: {peer} (load {loadavg()})")
            try:
                t = run[peer](r)
            except Exception as exc:  # one peer's failure is reported, the others still run
                progress(f"  {peer} failed: {exc}")
                failures.append(f"{peer} round {r + 1}: {exc}")
                continue
            cpu = f", {t.cpu_us_per_event:,.0f} µs CPU/event" if not math.isnan(t.cpu_s) else ""
            progress(f"  {peer}: {t.rate:,.0f} events/s over {t.seconds:.1f} s{cpu}, load {t.load}")
            runs[peer].append(t)
            if r == 0 and peer in COMPUTING:
                progress(f"  checking {peer}'s windows against the reference")
                checks[peer] = check(reference.windows, peers.output(peer, run_name(peer, 0)))
                progress(f"  {checks[peer].summary()}")
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
        # A partial result after every round, in case the run is cut short.
        results = Path(os.environ.get("RHYTHM_BENCH_RESULTS", ROOT / "bench" / "results"))
        partial = render("", r + 1)
        if r + 1 < rounds:
            partial += f"\n_Partial: {r + 1} of {rounds} rounds done when this was written._\n"
        results.mkdir(parents=True, exist_ok=True)
        (results / "peers.md").write_text(partial)

    profile = ""
    if profile_s > 0 and "rhythm" in names:
        progress("peers: profiling one more Rhythm pass with py-spy")
        try:
            peers.rhythm("bench-rhythm-profile", profile_s=profile_s)
            profile = profile_top(home / "profile.txt")
        except Exception as exc:  # the profile is extra: say why it is missing
            profile = f"(py-spy failed: {exc})\n"

    return render(profile, rounds, register=True)


def median_rate(timings: list[Timing]) -> float:
    rates = [t.rate for t in timings]
    return float(statistics.median(rates)) if rates else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


def render_section(
    runs: Mapping[str, list[Timing]],
    checks: Mapping[str, Check],
    reference: Reference,
    rhythm_metrics: Mapping[str, float],
    quix_late_counts: Mapping[str, int],
    profile: str,
    done_rounds: int,
    *,
    register: bool = False,
    facts: Mapping[str, Any],
    failures: list[str] | None = None,
) -> str:
    """The section's text from its timings and checks (pure but for `goal` when `register`)."""
    rhythm = median_rate(runs.get("rhythm", []))
    empty = median_rate(runs.get("faust-empty", []))

    def equal(peer: str) -> bool:
        c = checks.get(peer)
        return c is not None and c.all_equal

    rows_md = []
    for peer, label in [*PEER_LABELS.items(), ("produce", "Kafka ProducerPerformance")]:
        if not runs.get(peer):
            continue
        value = median_rate(runs[peer])
        output = ("yes" if equal(peer) else "no") if peer in COMPUTING else "— (no output)"
        rows_md.append(
            f"| {label} | {value:,.0f} | {ratio(rhythm, value):.2f} | "
            f"{ratio(value, empty):.2f} | {output} | "
            + " / ".join(f"{t.rate:,.0f}" for t in runs[peer])
            + " | "
            + " / ".join(t.load for t in runs[peer])
            + " |"
        )

    def over(peer: str) -> float:
        return ratio(rhythm, median_rate(runs.get(peer, [])))

    goals = [
        (
            "Rhythm ≥ 3× Quix Streams at its defaults (outputs equal)",
            over("quix") >= 3 and equal("rhythm") and equal("quix"),
            f"{over('quix'):.2f}×",
        ),
        (
            "Rhythm ≥ 10× plain Faust (outputs equal)",
            over("faust") >= 10 and equal("rhythm") and equal("faust"),
            f"{over('faust'):.2f}×",
        ),
        (
            "Rhythm ≥ 25% of Kafka raw consume",
            over("kafka") >= 0.25,
            f"{100 * over('kafka'):.1f}%",
        ),
        (
            # Issue #21: 12,000 events/s per worker, or 90 % of Faust's own ceiling if the
            # framework cannot deliver that.
            "signal stage ≥ 12,000 events/s per worker, or ≥ 90 % of an empty Faust agent",
            rhythm >= 12_000 or ratio(rhythm, empty) >= 0.9,
            f"{rhythm:,.0f} events/s, {ratio(rhythm, empty):.2f}× the empty agent",
        ),
    ]
    stage1 = [
        (t.events / t.input_s if t.input_s > 0 else float("nan"), t.seconds - t.input_s)
        for t in runs.get("rhythm", [])
    ]
    if register:
        why = (
            f"Rhythm is {ratio(rhythm, empty):.2f}× an empty Faust agent on the same input; "
            "stage 1 had committed the input at "
            + " / ".join(f"{r:,.0f}" for r, _ in stage1)
            + " events/s, then the updates topic took "
            + " / ".join(f"{d:.0f}" for _, d in stage1)
            + " s more to drain"
        )
        for g, ok, m in goals:
            goal(g, ok, m, why)

    def described(peer: str) -> str:
        c = checks.get(peer)
        if c is None:
            return "not run"
        verdict = "EQUAL" if c.all_equal else "NOT EQUAL"
        text = f"{c.summary()}: {verdict}"
        if c.examples and not c.all_equal:
            text += " (first differences: " + "; ".join(c.examples) + ")"
        return text

    metrics_line = (
        "its /metrics answered at the end of round 1 ("
        + ", ".join(
            f"{name.removeprefix('rhythm_processor_').removesuffix('_total')} "
            f"{rhythm_metrics.get(name, 0):,.0f}"
            for name in (
                "rhythm_processor_events_total",
                "rhythm_processor_duplicates_total",
                "rhythm_processor_late_events_total",
                "rhythm_processor_routed_events_total",
            )
        )
        + ")"
        if rhythm_metrics
        else "its /metrics did not answer at the end of round 1"
    )
    text = (
        "## Peers on the same input\n\n"
        "`python -m bench.run --only peers` — the simulator's workload "
        f"(`rhythm simulate --scale {facts['scale']}`: {facts['sent']:,} messages sent, "
        f"{facts['duplicates']:,} of them re-sent duplicates, mean {facts['mean_size']} bytes, "
        f"Avro in Confluent framing) in one {PARTITIONS}-partition "
        f"topic (`RHYTHM_BENCH_PEER_PARTITIONS={PARTITIONS}`, "
        f"`RHYTHM_BENCH_QUIX_GRACE_S={QUIX_GRACE_S}`); each peer reads all "
        f"{facts['total']:,} messages from the beginning in a fresh group, "
        f"{done_rounds} rounds with rotating order, medians shown. For the stream processors "
        "(Rhythm, Quix, plain Faust), events/s is between the peer's first commit at or past "
        f"{START_SHARE:.0%} of the input (the events before it not counted) and the "
        "commit of the last input message with its internal (repartition/updates) topic "
        "drained, polled from outside every 0.25 s (start-up excluded; a peer that commits "
        "on an interval loses up to one interval at the end: plain Faust and Rhythm 2.8 s, "
        "Faust's default; the Quix app stops itself once it has processed everything, which "
        "commits its last checkpoint at once). The ceilings time themselves from their first batch "
        "to the last message (the empty Faust agent to its last full batch of 1,000). "
        "Load = 1-minute load average at the end of each run (2 shared cores).\n\n"
        "| peer | events/s (median) | Rhythm ÷ peer | peer ÷ empty Faust | output equal "
        "| each round | load |\n"
        "| --- | ---: | ---: | ---: | --- | --- | --- |\n" + "\n".join(rows_md) + "\n\n"
        "What each does per input event: **Rhythm** (`rhythm processors` with every setting at "
        "its default but the topics: /metrics, /healthz and /readyz on a port with their "
        "health timers, idle partitions after 10 s, too-late events routed to a history topic; "
        f"{metrics_line}) decodes, validates, dedups by event_id, re-keys to every "
        "entity (actor, object, target, tags) and thread through the internal updates "
        "topic, then per entity orders by event time within the lateness, updates 3600 s "
        "and 86400 s windows (count, sum, max, gaps), the gap histogram and the silence and "
        "unanswered rules, and emits each window once it closes. **Quix** decodes, dedups by "
        "event_id (a state entry per event id, expiring after the same horizon as Rhythm's, "
        "before the fan-out), explodes to the same entities, repartitions by entity "
        "(`group_by`), computes the gap in state, then two tumbling windows (3600 s, 86400 s; "
        f"grace {QUIX_GRACE_S:,} s) with Count/Sum/Max of weight and Count/Min/Max/Mean of "
        "gap, `.final()`; at its defaults (5 s commit interval, librdkafka's fetch sizes) and "
        "with the one throughput knob its docs name (docs/advanced/checkpointing.md: a longer "
        "`commit_interval` flushes state and changelogs less often), 30 s. **Faust** (Faust's "
        "defaults: commit every 2.8 s or 10,000 events; RocksDB store) decodes, dedups by "
        "event_id in a table, and per entity and window size reads and writes "
        "`[count, sum, max]` in a tumbling windowed table relative to the event's time (no "
        "repartition, gaps or alerts: less work than either); its output is its tables' "
        "changelogs (the last value per window). The **ceilings** read the same messages and "
        "do nothing with them: an empty Faust agent (`stream.take_events(1000, 1.0)`, "
        "Faust's defaults), a confluent-kafka `consume(10000)` loop (librdkafka's defaults) "
        "and Kafka's Java ConsumerPerformance.\n\n"
        "Output checks (round 1, bench/compare.py): each peer's windows against a reference "
        "computed from the input messages by none of the peers' code (fastavro and the "
        f"schema file; {reference.events:,} distinct events, {reference.duplicates:,} "
        f"re-sent copies left out, {reference.dropped:,} (event, window size) pairs later "
        f"than {QUIX_GRACE_S:,} s past their window's end left out, "
        f"{len(reference.windows):,} windows). Compared: `event_count`, `weight_max` exactly, "
        "`weight_sum` to a relative 1e-9, for every role and both window sizes; a peer's "
        "output is equal when every window it emitted is in the reference and equal. Windows "
        "not emitted are counted: Quix closes a key's window when that key sees an event past "
        "the window's end + grace, so each entity's newest windows stay open; Rhythm closes "
        "them all once its idle input's watermark follows the clock; Faust's tables hold "
        "every window. Not compared: the gap fields (Quix sees arrival order, Rhythm "
        "event-time order within its lateness; the simulator's arrival jitter makes them "
        "differ by design; Faust computes none) and alerts (only Rhythm computes them).\n\n"
        + "".join(
            f"- {PEER_LABELS[peer]}: {described(peer)}.\n" for peer in COMPUTING if peer in runs
        )
    )
    text += (
        "\nWhere Rhythm's time goes, from the same timing: the events topic was fully "
        "committed (stage 1) at "
        + " / ".join(f"{r:,.0f}" for r, _ in stage1)
        + " events/s; stage 2 then needed "
        + " / ".join(f"{d:.0f}" for _, d in stage1)
        + " s more to drain the internal updates topic (each round).\n"
    )
    if failures:
        text += "\nRuns that failed (not in the table): " + "; ".join(failures) + ".\n"
    late = {n: c for n, c in quix_late_counts.items() if c and n.endswith("-0")}
    if late:
        text += (
            "\nThe Quix peers dropped window updates as late in round 1 (past their grace in "
            "their per-partition stream time; a lower bound, logged every 1,000th): "
            + ", ".join(f"{n} {c:,}" for n, c in sorted(late.items()))
            + ".\n"
        )
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

"""What every benchmark section shares: sizes from the environment, the machine's load, topics,
publishing a workload, starting Rhythm's parts as processes, and timing a consumer group.

Throughput of every stream processor (Rhythm, Quix Streams, Faust) is measured the same way,
from outside: the harness polls the group's committed offsets on its input topic (and its
internal topics) and takes the rate between the first poll that saw a commit and the poll
that saw every input message committed with nothing left in the internal topics. Start-up
(JVM-free here, but Faust's and Quix's own start and the first rebalance) is not counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from rhythm.runtime.process import stop_group

ROOT = Path(__file__).resolve().parent.parent


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def loadavg() -> str:
    """The 1-minute load average now (the machine is shared: every result carries it)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def create_topic(
    bootstrap: str, name: str, partitions: int, config: Mapping[str, str] | None = None
) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    spec = NewTopic(name, partitions, 1, config=dict(config or {}))
    admin.create_topics([spec])[name].result(30)


def topic_names(bootstrap: str) -> list[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return list(admin.list_topics(timeout=10).topics)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
    finally:
        consumer.close()


def messages_in(bootstrap: str, topic: str) -> int:
    return sum(end_offsets(bootstrap, topic).values())


def read_messages(bootstrap: str, topic: str, timeout: float = 120.0) -> list[Message]:
    """Every message of `topic` from the beginning up to its end offsets now, in each
    partition's order."""
    ends = end_offsets(bootstrap, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-read-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    out: list[Message] = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        seen = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout
        while any(seen[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for m in consumer.consume(10_000, 0.5):
                if m.error() is None:
                    out.append(m)
                    p, o = m.partition(), m.offset()
                    assert p is not None and o is not None
                    seen[p] = max(seen[p], o + 1)
        return out
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str, timeout: float = 120.0) -> list[bytes]:
    """Every message value of `topic` (tombstones left out), as `read_messages`."""
    return [v for m in read_messages(bootstrap, topic, timeout) if (v := m.value()) is not None]


class GroupProgress:
    """Committed offsets of one consumer group on a set of topics (one reusable consumer)."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap = bootstrap
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})

    def close(self) -> None:
        self.consumer.close()

    def committed_and_lag(self, topic: str) -> tuple[int, int]:
        """(committed messages, messages left); left is -1 when the broker could not say
        now (a topic just created, a leader moving): never read as "done"."""
        try:
            meta = self.consumer.list_topics(topic, timeout=5).topics.get(topic)
            if meta is None or meta.error is not None:
                return 0, -1
            tps = [TopicPartition(topic, p) for p in meta.partitions]
            committed = self.consumer.committed(tps, timeout=5)
            done = lag = 0
            for tp in committed:
                _, high = self.consumer.get_watermark_offsets(tp, timeout=5)
                done += max(tp.offset, 0)
                lag += high - max(tp.offset, 0)
        except KafkaException:
            return 0, -1
        return done, lag


@dataclass
class Timing:
    """How one processor went through its input: events/s between first and last commit."""

    events: int
    seconds: float
    first_seen_s: float  # from start of the process to its first commit (start-up, rebalance)
    load: str
    samples: list[dict[str, float]] = field(default_factory=list)
    input_s: float = 0.0  # first commit -> every input message committed (internal not drained)
    cpu_s: float = float("nan")  # the process's CPU (all threads) over `seconds`, if known

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s * 1e6 / self.events if self.events > 0 else float("nan")

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def time_group(
    bootstrap: str,
    group: str,
    input_topic: str,
    total: int,
    internal: Iterable[str] | Any = (),
    *,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 1800.0,
    label: str = "",
    poll_s: float = 0.25,
    on_poll: Any = None,
    start_share: float = 0.0,
) -> Timing:
    """Wait until `group` has committed `total` messages of `input_topic` and has no lag on
    its internal topics (a callable returning names, as they may appear late); time it from
    the first commit seen at or past `start_share` of the input (the events before it are
    not counted): with a share above 0 where the clock starts does not depend on how often
    the process commits (at start-up, every batch or on an interval)."""
    watch = GroupProgress(bootstrap, group)
    started = time.monotonic()
    first: tuple[float, int] | None = None
    input_done: float | None = None
    last_print = 0.0
    samples: list[dict[str, float]] = []
    exited_seen = False
    cpu0 = float("nan")
    try:
        while True:
            now = time.monotonic()
            if now - started > timeout:
                raise TimeoutError(f"{label or group}: not done after {timeout:.0f} s")
            # A peer may stop itself once done (the Quix app, after its last commit): read
            # the commits once more after it exited cleanly before calling it a failure.
            exited = proc is not None and proc.poll() is not None
            if exited and (proc is None or proc.returncode != 0 or exited_seen):
                raise RuntimeError(f"{label or group}: exited with {proc and proc.returncode}")
            exited_seen = exited
            done, input_lag = watch.committed_and_lag(input_topic)
            if input_lag < 0:  # unknown just now: ask again
                time.sleep(poll_s)
                continue
            if first is None and done > 0 and done >= start_share * total:
                first = (now, done)
                cpu0 = cpu_seconds(proc.pid) if proc is not None else float("nan")
            names = internal() if callable(internal) else list(internal)
            lags = [watch.committed_and_lag(t)[1] for t in names]
            internal_lag = -1 if any(lag < 0 for lag in lags) else sum(lags)
            if on_poll is not None:
                extra = on_poll()
                if extra:
                    samples.append({"t": now - started, "done": done, **extra})
            if now - last_print > 10:
                progress(f"  {label or group}: {done:,}/{total:,} committed, load {loadavg()}")
                last_print = now
            if done >= total and input_done is None:
                input_done = now
            if done >= total and internal_lag == 0 and first is not None:
                t0, d0 = first
                if d0 >= total:  # all input in the first commit seen: count from the start
                    t0, d0 = started, 0
                input_s = (input_done or now) - t0
                cpu = float("nan")
                if proc is not None and d0 < total:
                    cpu = cpu_seconds(proc.pid) - cpu0
                return Timing(total - d0, now - t0, t0 - started, loadavg(), samples, input_s, cpu)
            time.sleep(poll_s)
    finally:
        watch.close()


# -- processes ------------------------------------------------------------------------------


def start(argv: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        argv,
        env=dict(env),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=ROOT,
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0, sig: int = signal.SIGTERM) -> None:
    """Stop a process group this harness started (by its own pid)."""
    stop_group(proc, timeout, sig=sig)


def _family(pid: int) -> list[int]:
    """A process and its live children."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(int(c) for c in children)]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) of a process and its live children."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in _family(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children (bytes)."""
    total = 0
    for p in _family(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def memory_rollup(pid: int) -> dict[str, int]:
    """One process's memory from /proc (bytes): `rss` (resident now), `anon` (anonymous
    resident: Python's heap, RocksDB's memtables and block cache, allocator slack; not the
    mapped libraries and files), `hwm` (the kernel's peak resident set since the start, not
    sampled). Empty if the process is gone."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("Rss", "Anonymous"):
                out["rss" if name == "Rss" else "anon"] = int(rest.split()[0]) * 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["hwm"] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def scrape(port: int) -> dict[str, float]:
    """Sum of each metric family on a /metrics endpoint (labels summed away)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        except ValueError:
            continue
    return out


@dataclass
class RhythmTopics:
    prefix: str

    @property
    def updates(self) -> str:
        return f"{self.prefix}.updates"

    @property
    def signals(self) -> str:
        return f"{self.prefix}.signals"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.alerts"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"


def processor_env(
    bootstrap: str,
    app_id: str,
    events_topic: str,
    data_dir: Path,
    metrics_port: int = 0,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A Rhythm processor worker on its own group, internal and output topics."""
    t = RhythmTopics(app_id)
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        RHYTHM_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        RHYTHM_PROCESSOR_APP_ID=app_id,
        RHYTHM_PROCESSOR_DATA_DIR=str(data_dir),
        RHYTHM_PROCESSOR_EVENTS_TOPIC=events_topic,
        RHYTHM_PROCESSOR_UPDATES_TOPIC=t.updates,
        RHYTHM_PROCESSOR_SIGNALS_TOPIC=t.signals,
        RHYTHM_PROCESSOR_ALERTS_TOPIC=t.alerts,
        RHYTHM_PROCESSOR_DEAD_LETTERS_TOPIC=t.dead,
        RHYTHM_PROCESSOR_HISTORY_TOPIC="",  # no history lane here: too-late events counted
        RHYTHM_PROCESSOR_WEB_PORT="0",
        RHYTHM_PROCESSOR_METRICS_PORT=str(metrics_port),
        RHYTHM_PROCESSOR_IDLE_AFTER_S="3",
        RHYTHM_PROCESSOR_LOG_LEVEL="warn",
    )
    env.update(extra or {})
    return env


def create_rhythm_outputs(bootstrap: str, app_id: str, partitions: int = 4) -> None:
    t = RhythmTopics(app_id)
    for name, n in ((t.signals, partitions), (t.alerts, 2), (t.dead, 1)):
        create_topic(bootstrap, name, n)


def rhythm_cli() -> list[str]:
    return [sys.executable, "-m", "rhythm.stack.cli"]


def simulate(bootstrap: str, topic: str, scale: float, manifest: Path, log: Path) -> dict[str, Any]:
    """Publish the simulator's workload (`rhythm simulate`) through the client; its counts."""
    with log.open("ab") as out:
        subprocess.run(
            [
                *rhythm_cli(),
                "simulate",
                "--scale",
                str(scale),
                "--bootstrap",
                bootstrap,
                "--topic",
                topic,
                "--manifest",
                str(manifest),
                "--no-progress",
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=3600,
        )
    counts: dict[str, Any] = json.loads(manifest.read_text())["counts"]
    return counts


#: Events per unit of `rhythm simulate --scale` (measured: scale 1 ≈ 170k sent).
EVENTS_PER_SCALE = 170_000


#: Goals a section measured: (goal, met, measured). run.py writes them beside the section's
#: result and puts every section's goals in one table at the top of BENCHMARKS.md.
GOALS: list[tuple[str, bool, str, str]] = []


def goal(name: str, met: bool, measured: str, why: str = "") -> None:
    """`why`: what the section's own numbers say holds it back (empty when met)."""
    GOALS.append((name, met, measured, "" if met else why))

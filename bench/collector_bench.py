"""The collector section: `rhythm collector` processes against this run's broker, driven by
bench/loadgen (a Go open-loop load generator, standard library only, built here with `go
build`: it costs a few percent of a core where a Python generator would compete with the
collector for the same 2 cores), and by the earlier aiohttp generator for comparison.

1. Throughput: Segment batches of 100 events, `RHYTHM_BENCH_COLLECTOR_CONNECTIONS` (16)
   requests in flight, until `RHYTHM_BENCH_COLLECTOR_EVENTS` (200,000) are acknowledged, for
   the collector as it is and as it was (`BEFORE`: delivery reports on a poll thread,
   Python's default GC threshold); events/s, the collector's CPU per event.
2. Latency at half the current collector's rate, `RHYTHM_BENCH_COLLECTOR_ROUNDS` (3)
   interleaved rounds of `RHYTHM_BENCH_COLLECTOR_LATENCY_S` (20 s) each: the collector as it
   was with the aiohttp generator (the earlier measurement), as it was with loadgen, and as
   it is with loadgen. Requests are due on a fixed schedule and timed from when they were
   due; p50 / p99 / max per round, the machine's load and CPU use per round, and where the
   slowest 1% spent their time (the collector's Server-Timing stages).
3. A flood: a second collector with per-tenant limits of `RHYTHM_BENCH_COLLECTOR_LIMIT`
   (5,000) events/s; a calm tenant sends 10-event batches 20 times a second, alone and then
   while a flooding tenant sends 100-event batches as fast as 8 connections go (both loadgen):
   the flood's answers (200 / 429, Retry-After), and the calm tenant's latency and errors in
   both phases.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import ROOT, create_topic, env_float, env_int, goal, loadavg, messages_in
from bench.harness import progress as say
from rhythm.stack.kafka import LocalKafka, LocalKafkaSettings
from rhythm.stack.ports import free_port

BATCH = 100
#: the flood's calm tenant: 10-event batches this many times a second; the flood's connections
CALM_PER_S = 20
FLOOD_CONNECTIONS = 8
LOADGEN = ROOT / "bench" / "loadgen"
#: the collector's settings before the latency work: Python's default young-generation GC
#: threshold
BEFORE = {"gc_threshold": 700}
#: the local broker's JVM options before the latency work: none (G1's 200 ms pause goal)
BEFORE_JVM: list[str] = []
#: Server-Timing's stages (rhythm.collector.handlers.STAGES), then the handler's total
STAGES = ("read", "map", "publish", "kafka", "report", "wake", "total")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Collector:
    def __init__(self, home: Path, bootstrap: str, topic: str, name: str, **settings: Any) -> None:
        self.port = free_port()
        self.keys = home / f"{name}-keys.json"
        self.env = dict(
            os.environ,
            RHYTHM_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            RHYTHM_CLIENT_TOPIC=topic,
            RHYTHM_COLLECTOR_PORT=str(self.port),
            RHYTHM_COLLECTOR_KEYS_FILE=str(self.keys),
        )
        for key, value in settings.items():
            self.env[f"RHYTHM_COLLECTOR_{key.upper()}"] = str(value)
        self.log = home / f"{name}.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def key(self, tenant: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "rhythm.stack.cli", "keys", "create", tenant],
            env=self.env, capture_output=True, text=True, check=True, cwd=ROOT,
        )  # fmt: skip
        return str(json.loads(done.stdout)["key"])

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rhythm.stack.cli", "collector"],
            env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                import urllib.request

                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"collector not ready: {self.log.read_text()[-2000:]}")

    def cpu(self) -> float:
        assert self.proc is not None
        return _cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


def _bodies(prefix: str, count: int, size: int) -> list[bytes]:
    """`count` Segment batches of `size` events, each event a distinct message."""
    out = []
    for b in range(count):
        batch = [
            {
                "type": "track",
                "userId": f"{prefix}-u{(b * size + i) % 997}",
                "event": "Order Completed",
                "messageId": f"{prefix}-{b}-{i}",
                "timestamp": "2026-12-06T12:00:00.000Z",
                "properties": {"order": f"o-{b}-{i}", "total": 10.5 + i, "currency": "EUR"},
                "context": {"library": {"name": "bench", "version": "1"}},
            }
            for i in range(size)
        ]
        out.append(json.dumps({"batch": batch}).encode())
    return out


def _auth(key: str) -> dict[str, str]:
    import base64

    token = base64.b64encode(f"{key}:".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, float, str | None]:
    began = time.perf_counter()
    async with session.post(url + "/v1/batch", data=body, headers=headers) as response:
        await response.read()
        return response.status, time.perf_counter() - began, response.headers.get("Retry-After")


async def _paced(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    bodies: list[bytes],
    per_s: float,
    seconds: float,
) -> dict[str, Any]:
    """Open loop: request i is sent at start + i / per_s, whatever the answers do."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    tasks = []
    began = time.perf_counter()

    async def one(body: bytes) -> None:
        status, latency, _ = await _post(session, url, body, headers)
        statuses[status] = statuses.get(status, 0) + 1
        latencies.append(latency)

    n = int(per_s * seconds)
    for i in range(n):
        delay = began + i / per_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(bodies[i % len(bodies)])))
    await asyncio.gather(*tasks)
    return {"latencies": latencies, "statuses": statuses, "sent": n}


def _ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def loadgen_binary() -> Path:
    """bench/loadgen built once per version of its source into the cache (as tests/drivers
    builds its Go program). Go is required: CI installs it (.ci/run)."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("go is not installed: the collector bench's load generator needs it")
    digest = hashlib.sha256()
    for name in ("go.mod", "main.go"):
        digest.update((LOADGEN / name).read_bytes())
    cache = Path(os.environ.get("RHYTHM_CACHE_DIR", Path.home() / ".cache" / "rhythm"))
    binary = cache / f"loadgen-{digest.hexdigest()[:16]}" / "loadgen"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_suffix(".tmp")
        subprocess.run([go, "build", "-o", str(tmp), "."], cwd=LOADGEN, check=True)
        tmp.replace(binary)
    return binary


def server_timing(header: str) -> dict[str, float]:
    """A Server-Timing header's durations in ms by name (`name;dur=1.5, ...`)."""
    out: dict[str, float] = {}
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                out[name] = float(value)
    return out


@dataclass
class Request:
    """One request as loadgen saw it: times in s from its start, the collector's stages."""

    due: float
    sent: float
    done: float
    status: int
    stages: dict[str, float] = field(default_factory=dict)
    retry_after: str = ""

    @property
    def latency(self) -> float:
        """From when it was due (open loop: a late send counts), in s."""
        return self.done - self.due


def parse_loadgen(stdout: str) -> list[Request]:
    requests = []
    for line in stdout.splitlines():
        r = json.loads(line)
        requests.append(
            Request(
                r["due"] / 1e9,
                r["sent"] / 1e9,
                r["done"] / 1e9,
                r["status"],
                server_timing(r.get("timing", "")),
                r.get("retry", ""),
            )
        )
    return requests


def tail_breakdown(requests: Sequence[Request], q: float = 0.99) -> dict[str, float]:
    """Where the slowest (1 - q) of the requests spent their time, mean ms: each stage, the
    handler's total, `outside` (the rest: the socket, aiohttp's queue before the handler,
    writing the answer, the generator) and `late` (sent after it was due)."""
    ordered = sorted(requests, key=lambda r: r.latency)
    tail = ordered[min(len(ordered) - 1, int(q * len(ordered))) :]
    out = {s: statistics.fmean(r.stages.get(s, 0.0) for r in tail) for s in STAGES}
    out["outside"] = statistics.fmean(1000 * r.latency - r.stages.get("total", 0.0) for r in tail)
    out["late"] = statistics.fmean(1000 * (r.sent - r.due) for r in tail)
    out["latency"] = statistics.fmean(1000 * r.latency for r in tail)
    return out


def cpu_times() -> list[int]:
    """The machine's CPU time by kind (/proc/stat's first line: user, nice, system, idle…)."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def machine_use(before: Sequence[int], after: Sequence[int]) -> tuple[float, float]:
    """Between two cpu_times(): the share of the machine busy, and the share busy with
    niced processes (others' tests run at nice 10), in %."""
    delta = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(delta) or 1
    idle = delta[3] + (delta[4] if len(delta) > 4 else 0)  # idle + iowait
    return 100 * (total - idle) / total, 100 * delta[1] / total


class Loadgen:
    def __init__(self, url: str, key: str, bodies: Path) -> None:
        self.binary = loadgen_binary()
        self.url, self.bodies = url + "/v1/batch", bodies
        self.auth = _auth(key)["Authorization"]

    def argv(
        self, mode: str, n: int, rate: float = 1.0, conns: int = 64, seconds: float = 0.0
    ) -> list[str]:
        argv = [str(self.binary), "-url", self.url, "-bodies", str(self.bodies)]
        argv += ["-auth", self.auth, "-mode", mode, "-n", str(n), "-rate", f"{rate:.3f}"]
        argv += ["-conns", str(conns), "-duration", f"{seconds:.3f}s"]
        return argv

    def run(self, mode: str, n: int, rate: float = 1.0, conns: int = 64) -> list[Request]:
        done = subprocess.run(
            self.argv(mode, n, rate, conns), capture_output=True, text=True, check=True
        )
        return parse_loadgen(done.stdout)

    def start(self, mode: str, n: int, rate: float = 1.0, conns: int = 64, seconds: float = 0.0
    ) -> subprocess.Popen[str]:  # fmt: skip
        """The same in the background; `finish` reads its requests."""
        argv = self.argv(mode, n, rate, conns, seconds)
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def finish(proc: subprocess.Popen[str]) -> list[Request]:
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen exited {proc.returncode}: {err[-2000:]}")
        return parse_loadgen(out)


@dataclass
class Round:
    """One latency round of one configuration."""

    latencies: list[float]
    statuses: dict[int, int]
    load: str
    busy: float
    niced: float
    tail: dict[str, float] | None = None
    #: librdkafka's worst 1 s windows in the round (ms): p99 of its queue and of the broker's
    #: round trip
    kafka: dict[str, float] = field(default_factory=dict)


def kafka_stats(log_text: str) -> dict[str, float]:
    """The worst of each figure over the `kafka stats {...}` lines the collector logged
    (rhythm.collector.publisher: `RHYTHM_COLLECTOR_KAFKA_STATS_S`)."""
    worst: dict[str, float] = {}
    for line in log_text.splitlines():
        _, found, payload = line.partition("kafka stats ")
        if found:
            for key, value in json.loads(payload).items():
                worst[key] = max(worst.get(key, 0.0), float(value))
    return worst


def _statuses(requests: Sequence[Request]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in requests:
        out[r.status] = out.get(r.status, 0) + 1
    return out


def _throughput_go(collector: Collector, loadgen: Loadgen, events: int, conns: int) -> Any:
    cpu0, began = collector.cpu(), time.perf_counter()
    requests = loadgen.run("closed", events // BATCH, conns=conns)
    elapsed, cpu = time.perf_counter() - began, collector.cpu() - cpu0
    sent = BATCH * _statuses(requests).get(200, 0)
    return sent, sent / elapsed, cpu, [r.done - r.sent for r in requests]


def _latency_round(
    collector: Collector, loadgen: Loadgen | None, key: str, bodies: list[bytes], per_s: float,
    seconds: float,
) -> Round:  # fmt: skip
    before = cpu_times()
    log_from = collector.log.stat().st_size if collector.log.exists() else 0
    if loadgen is not None:
        requests = loadgen.run("open", int(per_s * seconds), rate=per_s)
        latencies, statuses = [r.latency for r in requests], _statuses(requests)
        tail: dict[str, float] | None = tail_breakdown(requests)
    else:

        async def paced() -> dict[str, Any]:
            connector = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(connector=connector) as s:
                return await _paced(s, collector.url, _auth(key), bodies, per_s, seconds)

        result = asyncio.run(paced())
        latencies, statuses, tail = result["latencies"], result["statuses"], None
    busy, niced = machine_use(before, cpu_times())
    with collector.log.open("rb") as f:
        f.seek(log_from)
        stats = kafka_stats(f.read().decode(errors="replace"))
    return Round(latencies, statuses, loadavg(), busy, niced, tail, stats)


def broker_gc(log: Path) -> str:
    """A JVM's GC pauses from its `-Xlog:gc` file: count, how many over 10 ms, the longest."""
    pauses = []
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if "Pause" in line and line.endswith("ms"):
            pauses.append(float(line.rsplit(" ", 1)[1].removesuffix("ms")))
    if not pauses:
        return "none logged"
    over = sum(1 for p in pauses if p > 10)
    return f"{len(pauses)}, {over} over 10 ms, longest {max(pauses):.0f} ms"


def _broker(home: Path, name: str, jvm_options: list[str]) -> LocalKafka:
    """A broker of the section's own, its GC logged, so that the collector before and now
    each run against the broker options of their time side by side."""
    gc_log = home / f"{name}-gc.log"
    settings = LocalKafkaSettings(
        home=home / name,
        port=free_port(),
        controller_port=free_port(),
        start_timeout_s=300,
        jvm_options=[*jvm_options, f"-Xlog:gc:file={gc_log}:time"],
    )
    return LocalKafka(settings)


def collector_section(bootstrap: str, home: Path) -> str:
    """`bootstrap` (the run's broker) is not used: the section starts a broker for the
    collector now (the local broker's options) and one for it before (`BEFORE_JVM`)."""
    del bootstrap
    brokers = {
        "now": _broker(home, "kafka-now", LocalKafkaSettings().jvm_options),
        "before": _broker(home, "kafka-before", BEFORE_JVM),
    }
    servers = {name: broker.up() for name, broker in brokers.items()}
    try:
        return _section(home, servers)
    finally:
        for broker in brokers.values():
            broker.down()


def _section(home: Path, servers: dict[str, str]) -> str:
    events = env_int("RHYTHM_BENCH_COLLECTOR_EVENTS", 200_000)
    connections = env_int("RHYTHM_BENCH_COLLECTOR_CONNECTIONS", 16)
    latency_s = env_float("RHYTHM_BENCH_COLLECTOR_LATENCY_S", 20)
    rounds = env_int("RHYTHM_BENCH_COLLECTOR_ROUNDS", 3)
    limit = env_int("RHYTHM_BENCH_COLLECTOR_LIMIT", 5000)
    topic = f"bench.collector.{int(time.time())}"
    for server in servers.values():
        create_topic(server, topic, 4)
    bootstrap = servers["now"]
    unlimited = {"key_rate": 1e9, "key_burst": 1e9, "tenant_rate": 1e9, "tenant_burst": 1e9}
    measured = {"server_timing": "true", "kafka_stats_s": 1}
    now = Collector(home, bootstrap, topic, "collector", **measured, **unlimited)
    was = Collector(
        home, servers["before"], topic, "collector-before", **measured, **BEFORE, **unlimited
    )
    say(f"collector: building {events // BATCH} batches of {BATCH}")
    bodies = _bodies("tp", events // BATCH, BATCH)
    bodies_file = home / "collector-bodies.jsonl"
    bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
    keys = {c: c.key("bench") for c in (now, was)}
    gens = {c: Loadgen(c.url, keys[c], bodies_file) for c in (now, was)}
    acknowledged = 0
    throughput: dict[str, Any] = {}
    configs = {
        "before, aiohttp generator": (was, None),
        "before, loadgen": (was, gens[was]),
        "now, loadgen": (now, gens[now]),
    }
    runs: dict[str, list[Round]] = {name: [] for name in configs}
    for c in (now, was):
        c.start()
    try:
        # Warm-up: the broker's JIT and page cache, each collector's connections and imports
        # (whichever ran first was slower by 2-25% in earlier runs).
        warm = max(20, events // BATCH // 10)
        for c in (now, was):
            done = gens[c].run("closed", warm, conns=connections)
            acknowledged += BATCH * _statuses(done).get(200, 0)
        load_before = loadavg()
        for name, c in (("before", was), ("now", now)):
            sent, rate, cpu, lat = _throughput_go(c, gens[c], events, connections)
            acknowledged += sent
            throughput[name] = (sent, rate, cpu, lat, loadavg())
            say(f"collector ({name}): {rate:,.0f} events/s")
        half = throughput["now"][1] / 2
        say(f"collector: latency at {half:,.0f} events/s, {rounds} rounds of {latency_s:g} s")
        order = list(configs)
        for i in range(rounds):
            # Rotate the order: a busy spell of the machine falls on each in turn.
            for name in order[i % len(order) :] + order[: i % len(order)]:
                c, gen = configs[name]
                result = _latency_round(c, gen, keys[c], bodies, half / BATCH, latency_s)
                acknowledged += BATCH * result.statuses.get(200, 0)
                runs[name].append(result)
                p99 = _ms(result.latencies, 0.99)
                say(f"collector: {name}: p99 {p99:.1f} ms, load {result.load}")
        gc_now, gc_was = _gc_pauses(now.url), _gc_pauses(was.url)
    finally:
        for c in (now, was):
            c.stop()
    stored = sum(messages_in(server, topic) for server in servers.values())
    gc_brokers = {name: broker_gc(home / f"kafka-{name}-gc.log") for name in servers}
    flood_text = _flood_section(home, bootstrap, topic, limit, latency_s)

    sent, rate, cpu, tp_lat, load_tp = throughput["now"]
    sent_b, rate_b, cpu_b, _, _ = throughput["before"]
    now_p99 = [_ms(r.latencies, 0.99) for r in runs["now, loadgen"]]
    goal(
        "collector ≥ 20,000 events/s per process (batches of 100)",
        rate >= 20_000,
        f"{rate:,.0f} events/s",
        f"{1e6 * cpu / max(sent, 1):.0f} µs of collector CPU per event on a shared 2-core "
        "machine where Kafka runs too",
    )
    pooled = _ms([x for r in runs["now, loadgen"] for x in r.latencies], 0.99)
    goal(
        "collector p99 ≤ 50 ms at half that rate (all rounds' requests)",
        pooled <= 50,
        f"p99 {pooled:.1f} ms over {len(now_p99)} rounds at {half:,.0f} events/s (per round "
        f"{min(now_p99):.1f}–{max(now_p99):.1f})",
        "" if pooled <= 50 else _tail_cause(runs["now, loadgen"]),
    )
    rows = []
    for name, results in runs.items():
        for i, r in enumerate(results):
            rows.append(
                f"| {name} | {i + 1} | {_ms(r.latencies, 0.5):.1f} | "
                f"**{_ms(r.latencies, 0.99):.1f}** | {1000 * max(r.latencies, default=0):.1f} | "
                f"{_fmt_statuses(r.statuses)} | {r.load} | {r.busy:.0f}% ({r.niced:.0f}%) |"
            )
    spread = []
    for name, results in runs.items():
        p99s = [_ms(r.latencies, 0.99) for r in results]
        every = [x for r in results for x in r.latencies]
        spread.append(
            f"| {name} | **{_ms(every, 0.99):.1f}** | {statistics.median(p99s):.1f} | "
            f"{min(p99s):.1f}–{max(p99s):.1f} |"
        )
    tails = []
    for name in ("before, loadgen", "now, loadgen"):
        for i, r in enumerate(runs[name]):
            t = r.tail or {}
            k = r.kafka
            tails.append(
                f"| {name} | {i + 1} | {t.get('latency', 0):.1f} | "
                + " | ".join(f"{t.get(s, 0):.1f}" for s in (*STAGES[:-1], "outside"))
                + f" | {k.get('int_p99_ms', 0) + k.get('outbuf_p99_ms', 0):.1f} / "
                f"{k.get('rtt_p99_ms', 0):.1f} / {k.get('rtt_max_ms', 0):.1f} |"
            )
    return (
        "## Collector\n\n"
        "`python -m bench.run --only collector` (bench/collector_bench.py): `rhythm collector` "
        "processes on this run's broker, driven by bench/loadgen (Go, standard library: an "
        "open-loop generator that costs the shared 2 cores little) over keep-alive "
        f"connections. Segment `/v1/batch` requests of {BATCH} events, every answer a 200 only "
        "after Kafka's acknowledgement (acks=all). *Now* is the collector as it is; *before* "
        "is it with the setting of the earlier measurement "
        "(`RHYTHM_COLLECTOR_GC_THRESHOLD=700`: Python's default young-generation threshold) "
        "against a broker with the JVM options of then (none: G1's 200 ms pause goal; now "
        "Kafka's own, `RHYTHM_KAFKA_LOCAL_JVM_OPTIONS`). Each has a local broker of its own "
        "on the same machine (the other one idle meanwhile). Both answer with Server-Timing "
        "and log librdkafka's statistics every second. The throughput runs follow a warm-up "
        "of both.\n\n"
        "| measure | now | before |\n| --- | ---: | ---: |\n"
        f"| **events/s, one collector process** ({connections} connections, closed loop) | "
        f"**{rate:,.0f}** | {rate_b:,.0f} |\n"
        f"| collector CPU per event (all its threads: HTTP, mapping, validation, Avro, "
        f"librdkafka) | {1e6 * cpu / max(sent, 1):.1f} µs | "
        f"{1e6 * cpu_b / max(sent_b, 1):.1f} µs |\n"
        f"| request p50 / p99 in that run (saturated) | {_ms(tp_lat, 0.5):.1f} / "
        f"{_ms(tp_lat, 0.99):.1f} ms | |\n"
        f"| Python GC pauses in the collector, whole run (count, total) | {gc_now} | {gc_was} |\n"
        f"| its broker's JVM GC pauses, whole run (count, over 10 ms, longest) | "
        f"{gc_brokers['now']} | {gc_brokers['before']} |\n"
        f"| events in the topic afterwards / acknowledged | {stored:,} / {acknowledged:,} | |\n"
        f"| load average before / after the throughput runs | {load_before} / {load_tp} | |\n\n"
        f"**Latency at half rate** ({half:,.0f} events/s, {half / BATCH:.0f} requests/s on a "
        f"fixed schedule, {latency_s:g} s per round, rounds interleaved). loadgen times a "
        "request from when it was due; the aiohttp generator (the earlier measurement) from "
        "when it got round to sending it. Machine busy: the share of both cores in use during "
        "the round (in brackets: by niced processes: other work on the machine, such as tests).\n\n"
        "| collector, generator | round | p50 ms | p99 ms | max ms | answers | load after | "
        "machine busy (niced) |\n| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |\n"
        + "\n".join(rows)
        + "\n\n| collector, generator | p99 of all rounds' requests, ms | median of the rounds' "
        "p99, ms | rounds' p99 spread, ms |\n| --- | ---: | ---: | --- |\n"
        + "\n".join(spread)
        + "\n\n**Where the slowest 1% spent their time** (mean ms per request, from the "
        "collector's Server-Timing: `read` auth and body, `map` JSON and mapping, `publish` "
        "validation, Avro and produce, `kafka` produce to Kafka's acknowledgement as "
        "librdkafka measured it (linger, the broker, the network), `report` until that "
        "delivery report was served by librdkafka's poll thread, `wake` until the event loop "
        "resumed the request; `outside` is the rest "
        "of the time loadgen measured: the socket, aiohttp's queue before the handler, the "
        "answer, the generator). The last column is librdkafka's own statistics, the worst "
        "1 s window of the round (ms): `queue` from produce() until the request went out "
        "(linger included), `rtt` the broker's round trip.\n\n"
        "| collector | round | latency | read | map | publish | kafka | report | wake | outside "
        "| librdkafka: queue p99 / broker rtt p99 / rtt max |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        + "\n".join(tails)
        + "\n\n"
        + flood_text
    )


def _fmt_statuses(statuses: dict[int, int]) -> str:
    return ", ".join(f"{n} × {s}" for s, n in sorted(statuses.items()))


def _tail_cause(results: Sequence[Round]) -> str:
    """The largest contributor to the worst round's tail, in words."""
    worst = max(results, key=lambda r: _ms(r.latencies, 0.99))
    t = worst.tail or {}
    parts = {k: t.get(k, 0.0) for k in ("map", "publish", "kafka", "report", "wake", "outside")}
    top = max(parts, key=lambda k: parts[k])
    return (
        f"worst round at load {worst.load}, machine {worst.busy:.0f}% busy: its slowest 1% "
        f"spent most in `{top}` ({parts[top]:.0f} of {t.get('latency', 0):.0f} ms)"
    )


def _gc_pauses(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith("rhythm_collector_gc_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
        elif line.startswith("rhythm_collector_gc_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
    return f"{count:,.0f}, {1000 * total:.0f} ms"


def _flood(limited: Collector, home: Path, seconds: float) -> dict[str, Any]:
    """The calm tenant alone for `seconds` / 2, then beside the flood for `seconds`: two
    loadgen processes, the calm one open loop (its latency counted from when each request was
    due), the flood closed loop on 8 connections, back to back whatever the answers say."""
    calm_file, flood_file = home / "collector-calm.jsonl", home / "collector-flood.jsonl"
    calm_file.write_bytes(b"\n".join(_bodies("calm", 50, 10)) + b"\n")
    flood_file.write_bytes(b"\n".join(_bodies("flood", 50, BATCH)) + b"\n")
    calm = Loadgen(limited.url, limited.key("calm"), calm_file)
    flood = Loadgen(limited.url, limited.key("flood"), flood_file)
    alone = calm.run("open", int(CALM_PER_S * seconds / 2), rate=CALM_PER_S)
    flooding = flood.start("closed", 2_000_000, conns=FLOOD_CONNECTIONS, seconds=seconds)
    during = calm.run("open", int(CALM_PER_S * seconds), rate=CALM_PER_S)
    return {"alone": alone, "during": during, "flood": Loadgen.finish(flooding)}


def _flood_section(home: Path, bootstrap: str, topic: str, limit: int, latency_s: float) -> str:
    limited = Collector(
        home, bootstrap, topic, "collector-limited", server_timing="true",
        key_rate=limit, key_burst=limit, tenant_rate=limit, tenant_burst=limit,
    )  # fmt: skip
    limited.start()
    try:
        say("collector: flood")
        before = cpu_times()
        flood = _flood(limited, home, max(10.0, latency_s))
        busy, _ = machine_use(before, cpu_times())
        load_flood = loadavg()
    finally:
        limited.stop()
    alone = [r.latency for r in flood["alone"]]
    during = [r.latency for r in flood["during"]]
    flood_statuses = _statuses(flood["flood"])
    retry = sorted({r.retry_after for r in flood["flood"] if r.retry_after})
    calm_errors = sum(n for s, n in _statuses(flood["during"]).items() if s != 200)
    seconds = max(10.0, latency_s)
    refused = [r.done - r.sent for r in flood["flood"] if r.status == 429]
    return (
        f"**Flood.** A collector with limits of {limit:,} events/s per key and per tenant; a "
        f"calm tenant sends 10-event batches {CALM_PER_S} times a second (loadgen, open loop), "
        f"first alone for {seconds / 2:g} s, then for {seconds:g} s while a flooding tenant "
        f"sends 100-event batches back to back on {FLOOD_CONNECTIONS} connections (a second "
        "loadgen, ignoring Retry-After).\n\n"
        "| | calm p50 / p99 / max (ms) | calm answers | flood answers | flood 429 p50 (ms) |\n"
        "| --- | ---: | --- | --- | ---: |\n"
        f"| calm alone | {_ms(alone, 0.5):.1f} / {_ms(alone, 0.99):.1f} / {_ms(alone, 1.0):.1f}"
        f" | {_statuses(flood['alone'])} | | |\n"
        f"| during the flood | {_ms(during, 0.5):.1f} / {_ms(during, 0.99):.1f} / "
        f"{_ms(during, 1.0):.1f} | {_statuses(flood['during'])} | {flood_statuses} "
        f"(Retry-After {retry}) | {_ms(refused, 0.5):.2f} |\n\n"
        f"The calm tenant got {calm_errors} non-200 answers during the flood; the flood got "
        f"{BATCH * flood_statuses.get(200, 0):,} events in ({limit:,}/s × {seconds:g} s + a "
        f"burst of {limit:,} allowed); machine {busy:.0f}% busy over the flood's phases, load "
        f"average after it {load_flood}.\n"
    )

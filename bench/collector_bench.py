"""The collector section: `rhythm collector` processes against this run's broker, driven by an
aiohttp client in the bench process (keep-alive connections, bodies built before timing).

1. Throughput: Segment batches of 100 events, `RHYTHM_BENCH_COLLECTOR_CONNECTIONS` (16)
   requests in flight, until `RHYTHM_BENCH_COLLECTOR_EVENTS` (200,000) are acknowledged;
   events/s from the first request to the last answer, the collector's CPU per event, and
   every event counted in the topic afterwards.
2. Latency at half that rate: requests sent on a fixed schedule (open loop) for
   `RHYTHM_BENCH_COLLECTOR_LATENCY_S` (20 s); p50 / p99 / max of the request time.
3. A flood: a second collector with per-tenant limits of `RHYTHM_BENCH_COLLECTOR_LIMIT`
   (5,000) events/s; a calm tenant sends 10-event batches 20 times a second, alone and then
   while a flooding tenant sends as fast as 8 connections go: the flood's answers (200 / 429,
   Retry-After), and the calm tenant's latency and errors in both phases.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import ROOT, create_topic, env_float, env_int, goal, loadavg, messages_in
from bench.harness import progress as say
from rhythm.stack.ports import free_port

BATCH = 100


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


async def _throughput(url: str, key: str, bodies: list[bytes], connections: int) -> dict[str, Any]:
    headers = _auth(key)
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    todo = iter(bodies)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for body in todo:
                status, latency, _ = await _post(session, url, body, headers)
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(latency)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    return {"elapsed": elapsed, "statuses": statuses, "latencies": latencies}


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


async def _flood(url: str, calm_key: str, flood_key: str, seconds: float) -> dict[str, Any]:
    calm_bodies = _bodies("calm", 50, 10)
    flood_bodies = _bodies("flood", 50, BATCH)
    calm_headers, flood_headers = _auth(calm_key), _auth(flood_key)
    flood_statuses: dict[int, int] = {}
    retry_after: set[str] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        alone = await _paced(session, url, calm_headers, calm_bodies, 20, seconds / 2)
        stop = asyncio.Event()

        async def flooder(n: int) -> None:
            i = n
            while not stop.is_set():
                status, _, retry = await _post(
                    session, url, flood_bodies[i % len(flood_bodies)], flood_headers
                )
                flood_statuses[status] = flood_statuses.get(status, 0) + 1
                if retry:
                    retry_after.add(retry)
                i += 8

        flooders = [asyncio.create_task(flooder(n)) for n in range(8)]
        during = await _paced(session, url, calm_headers, calm_bodies, 20, seconds)
        stop.set()
        await asyncio.gather(*flooders)
    return {"alone": alone, "during": during, "flood": flood_statuses, "retry": retry_after}


def collector_section(bootstrap: str, home: Path) -> str:
    events = env_int("RHYTHM_BENCH_COLLECTOR_EVENTS", 200_000)
    connections = env_int("RHYTHM_BENCH_COLLECTOR_CONNECTIONS", 16)
    latency_s = env_float("RHYTHM_BENCH_COLLECTOR_LATENCY_S", 20)
    limit = env_int("RHYTHM_BENCH_COLLECTOR_LIMIT", 5000)
    topic = f"bench.collector.{int(time.time())}"
    create_topic(bootstrap, topic, 4)
    fast = Collector(
        home, bootstrap, topic, "collector",
        key_rate=1e9, key_burst=1e9, tenant_rate=1e9, tenant_burst=1e9,
    )  # fmt: skip
    key = fast.key("bench")
    say(f"collector: building {events // BATCH} batches of {BATCH}")
    bodies = _bodies("tp", events // BATCH, BATCH)
    warm = _bodies("warm", 20, BATCH)
    fast.start()
    try:
        asyncio.run(_throughput(fast.url, key, warm, 4))
        load_before = loadavg()
        cpu0 = fast.cpu()
        result = asyncio.run(_throughput(fast.url, key, bodies, connections))
        cpu = fast.cpu() - cpu0
        load_after = loadavg()
        sent = BATCH * result["statuses"].get(200, 0)
        rate = sent / result["elapsed"]
        say(f"collector: {rate:,.0f} events/s, statuses {result['statuses']}")
        half = rate / 2
        say(f"collector: latency at {half:,.0f} events/s for {latency_s:g} s")

        async def half_rate() -> dict[str, Any]:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
                return await _paced(s, fast.url, _auth(key), bodies, half / BATCH, latency_s)

        paced = asyncio.run(half_rate())
        load_paced = loadavg()
    finally:
        fast.stop()
    stored = messages_in(bootstrap, topic)
    expected = sent + 20 * BATCH + BATCH * paced["statuses"].get(200, 0)

    limited = Collector(
        home, bootstrap, topic, "collector-limited",
        key_rate=limit, key_burst=limit, tenant_rate=limit, tenant_burst=limit,
    )  # fmt: skip
    calm_key, flood_key = limited.key("calm"), limited.key("flood")
    limited.start()
    try:
        say("collector: flood")
        flood = asyncio.run(_flood(limited.url, calm_key, flood_key, max(10.0, latency_s)))
        load_flood = loadavg()
    finally:
        limited.stop()

    lat = paced["latencies"]
    p50, p99, worst = _ms(lat, 0.5), _ms(lat, 0.99), 1000 * max(lat, default=0)
    tp_lat = result["latencies"]
    alone, during = flood["alone"], flood["during"]
    calm_errors = sum(n for s, n in during["statuses"].items() if s != 200)
    goal(
        "collector ≥ 20,000 events/s per process (batches of 100)",
        rate >= 20_000,
        f"{rate:,.0f} events/s",
        f"{1e6 * cpu / max(sent, 1):.0f} µs of collector CPU per event on a shared 2-core "
        "machine where the load generator and Kafka run too",
    )
    goal(
        "collector p99 ≤ 50 ms at half that rate",
        p99 <= 50,
        f"p99 {p99:.1f} ms at {half:,.0f} events/s",
        "see the section: CPU shared with the broker and the load generator",
    )
    return (
        "## Collector\n\n"
        "`python -m bench.run --only collector` (bench/collector_bench.py): `rhythm collector` "
        "processes on this run's broker, an aiohttp client in the bench process on the same "
        "2 cores (so the generator competes with the collector and Kafka for CPU). Segment "
        f"`/v1/batch` requests of {BATCH} events, every answer a 200 only after Kafka's "
        "acknowledgement (acks=all).\n\n"
        "| measure | value |\n| --- | ---: |\n"
        f"| events acknowledged, throughput run | {sent:,} ({result['statuses']}) |\n"
        f"| **events/s, one collector process** ({connections} connections) | **{rate:,.0f}** |\n"
        f"| collector CPU per event (all its threads: HTTP, mapping, validation, Avro, "
        f"librdkafka) | {1e6 * cpu / max(sent, 1):.1f} µs |\n"
        f"| what one core of its own would do at that cost (1 / CPU per event) | "
        f"{sent / max(cpu, 1e-9):,.0f} events/s |\n"
        f"| request p50 / p99 in that run (closed loop, saturated) | "
        f"{_ms(tp_lat, 0.5):.1f} / {_ms(tp_lat, 0.99):.1f} ms |\n"
        f"| **request p50 / p99 / max at half rate** ({half:,.0f} events/s, open loop, "
        f"{paced['sent']} requests) | **{p50:.1f} / {p99:.1f}** / {worst:.1f} ms |\n"
        f"| answers at half rate | {paced['statuses']} |\n"
        f"| events in the topic afterwards / acknowledged | {stored:,} / {expected:,} |\n"
        f"| load average: before, after throughput, after half rate | "
        f"{load_before}, {load_after}, {load_paced} |\n\n"
        f"**Flood.** A collector with limits of {limit:,} events/s per key and per tenant; a "
        "calm tenant sends 10-event batches 20 times a second, first alone, then while a "
        "flooding tenant sends 100-event batches as fast as 8 connections go.\n\n"
        "| | calm p50 / p99 (ms) | calm answers | flood answers |\n| --- | ---: | --- | --- |\n"
        f"| calm alone | {_ms(alone['latencies'], 0.5):.1f} / {_ms(alone['latencies'], 0.99):.1f}"
        f" | {alone['statuses']} | |\n"
        f"| during the flood | {_ms(during['latencies'], 0.5):.1f} / "
        f"{_ms(during['latencies'], 0.99):.1f} | {during['statuses']} | {flood['flood']} "
        f"(Retry-After {sorted(flood['retry'])}) |\n\n"
        f"The calm tenant got {calm_errors} non-200 answers during the flood; "
        f"load average after the flood {load_flood}.\n"
    )

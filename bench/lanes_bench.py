"""Live beside a backfill (issue 19, "live stays live"): the live lane's window close →
signal queryable latency on a steady, unaligned live stream, first alone, then while
`rhythm backfill` imports a large history into the history lane on the same machine.

One live worker, one history worker and one sink (the `rhythm up` shape), on their own
topics. The live stream is Poisson: `RHYTHM_BENCH_LANES_RATE` events/s (50) over
`RHYTHM_BENCH_LANES_ENTITIES` users (100), each stamped with the wall clock as it is sent, so
nothing is aligned to a window's close. Live windows are 10 s with 2 s lateness (as the e2e
latency tail); the history lane keeps the default hour and day windows (a month in 10 s
windows would be a signal per event). Phase A is `RHYTHM_BENCH_LANES_S` seconds (60) of the
live stream alone; phase B starts `rhythm backfill` of `RHYTHM_BENCH_LANES_BACKFILL` events
(200,000: a month of 1,000 accounts) and lasts until it has followed the history lane to
the end of its input. A window's *close* is window_end + lateness
(wall clock); the harness queries ClickHouse every 0.1 s and a window's latency is when its
row was first seen minus its close. Windows count in the phase their close falls in.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from math import nan
from pathlib import Path
from typing import Any

from bench.e2e_bench import Stack, _topics, percentile, query
from bench.harness import (
    create_topic,
    env_float,
    env_int,
    goal,
    loadavg,
    processor_env,
    progress,
    rhythm_cli,
    scrape,
    start,
)
from rhythm.processors.settings import HISTORY_NICE
from rhythm.producers import Client, ClientSettings, KafkaSettings
from rhythm.stack.kafka import LocalKafka
from rhythm.stack.ports import free_port

WINDOW_S = 10
LATENESS_S = 2.0
DAY_MS = 86_400_000


def _stamp(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def history_file(path: Path, events: int, seed: int = 19) -> None:
    """A month of purchases and views by 1,000 accounts, ending two days ago, sorted."""
    rng = random.Random(seed)
    end = int(time.time() * 1000) - 2 * DAY_MS
    begin = end - 30 * DAY_MS
    stamps = sorted(rng.randrange(begin, end) for _ in range(events))
    with path.open("w") as f:
        for i, ts in enumerate(stamps):
            event = {
                "event_id": f"00000000-0000-4000-8000-{i:012d}",
                "tenant": "past",
                "occurred_at": _stamp(ts),
                "actor": {"type": "account", "id": f"acct-{rng.randrange(1000)}"},
                "verb": rng.choice(["purchased", "viewed"]),
                "object": {"type": "product", "id": f"p-{rng.randrange(200)}"},
                "weight": round(rng.uniform(1, 100), 2),
            }
            f.write(json.dumps(event) + "\n")


class LiveStream:
    """Poisson arrivals stamped with the wall clock; polls the store for live windows."""

    def __init__(self, bootstrap: str, topic: str, http_port: int, rate: float, entities: int):
        self.client = Client(
            ClientSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap), topic=topic)
        )
        self.http_port = http_port
        self.rate = rate
        self.entities = entities
        self.rng = random.Random(7)
        self.next_send = time.time()
        self.next_poll = time.time()
        self.sent = 0
        self.seen: dict[tuple[str, int], float] = {}

    def run_for(self, seconds: float, until: Any = None) -> None:
        """Send and poll for `seconds`, or longer while `until()` is False."""
        began = time.time()
        while time.time() - began < seconds or (until is not None and not until()):
            now = time.time()
            while self.next_send <= now:
                e = self.rng.randrange(self.entities)
                ms = int(time.time() * 1000)
                self.client.send(
                    {
                        "tenant": "bench", "occurred_at": _stamp(ms),
                        "actor": {"type": "user", "id": f"u-{e}"}, "verb": "viewed",
                        "weight": round(self.rng.random() * 10, 2),
                    }
                )  # fmt: skip
                self.sent += 1
                self.next_send += self.rng.expovariate(self.rate)
            self.client.flush(0)
            if now >= self.next_poll:
                self.poll()
                self.next_poll = time.time() + 0.1
            time.sleep(0.005)

    def poll(self) -> None:
        rows = query(
            self.http_port,
            "SELECT entity_id, toUnixTimestamp64Milli(window_start) FROM rhythm.signals "
            "WHERE tenant = 'bench' AND role = 'actor'",
        )
        for entity_id, start_ms in rows:
            self.seen.setdefault((entity_id, int(start_ms)), time.time())

    def latencies(self, begin: float, end: float) -> list[float]:
        out = []
        for (_, start_ms), seen in self.seen.items():
            close = start_ms / 1000 + WINDOW_S + LATENESS_S
            if begin <= close <= end:
                out.append(seen - close)
        return out


def lanes_run(kafka: LocalKafka, home: Path) -> dict[str, Any]:
    rate = env_float("RHYTHM_BENCH_LANES_RATE", 50.0)
    entities = env_int("RHYTHM_BENCH_LANES_ENTITIES", 100)
    phase_s = env_float("RHYTHM_BENCH_LANES_S", 60.0)
    backfill_n = env_int("RHYTHM_BENCH_LANES_BACKFILL", 200_000)
    nice = os.environ.get("RHYTHM_BENCH_LANES_NICE", "")  # the history worker's; "": default
    bootstrap = kafka.bootstrap
    topics = _topics(kafka, "lanes")
    history_input = "lanes.history"
    create_topic(bootstrap, history_input, 1)
    stack = Stack(kafka, home, "bench-lanes", topics)
    path = home / "lanes-history.jsonl"
    history_file(path, backfill_n)
    stack.start_sink()
    stack.start_processors(
        {
            "RHYTHM_PROCESSOR_WINDOW_SECONDS": f"[{WINDOW_S}]",
            "RHYTHM_PROCESSOR_LATENESS_S": str(LATENESS_S),
            "RHYTHM_PROCESSOR_TICK_S": "0.2",
            "RHYTHM_PROCESSOR_HISTORY_TOPIC": history_input,
        }
    )
    history_port = free_port()
    history_app = "bench-lanes-history"
    env = processor_env(
        bootstrap,
        history_app,
        history_input,
        home / "bench-lanes" / "history",
        history_port,
        {
            "RHYTHM_PROCESSOR_LANE": "history",
            "RHYTHM_PROCESSOR_SIGNALS_TOPIC": topics["signals"],
            "RHYTHM_PROCESSOR_ALERTS_TOPIC": topics["alerts"],
            "RHYTHM_PROCESSOR_DEAD_LETTERS_TOPIC": topics["dead"],
            "RHYTHM_PROCESSOR_HANDOFF_TOPIC": "bench-lanes.updates",
            **({"RHYTHM_PROCESSOR_NICE": nice} if nice else {}),
        },
    )
    stack.procs.append(start([*rhythm_cli(), "processors"], env, home / "lanes-history.log"))
    live = LiveStream(bootstrap, topics["events"], stack.http_port, rate, entities)
    try:
        progress(f"lanes: warming up (live {rate:.0f} events/s over {entities} users)")
        live.run_for(2 * (WINDOW_S + LATENESS_S))  # the first windows close: both lanes up
        progress(f"lanes: phase A, the live stream alone, {phase_s:.0f} s")
        a_begin, load_a0 = time.time(), loadavg()
        live.run_for(phase_s)
        a_end, load_a1 = time.time(), loadavg()
        progress(f"lanes: phase B, with `rhythm backfill` of {backfill_n:,} events")
        backfill_env = dict(
            os.environ,
            RHYTHM_PROCESSOR_LANE="history",
            RHYTHM_PROCESSOR_APP_ID=history_app,
            RHYTHM_PROCESSOR_EVENTS_TOPIC=history_input,
            RHYTHM_PROCESSOR_UPDATES_TOPIC=f"{history_app}.updates",
            # what `rhythm backfill` asks before it publishes: the live lane's windows (to
            # leave out what it may still change) and the store (the live events to copy)
            RHYTHM_PROCESSOR_WINDOW_SECONDS=f"[{WINDOW_S}]",
            RHYTHM_PROCESSOR_LATENESS_S=str(LATENESS_S),
            RHYTHM_PROCESSOR_STORE_URL=f"http://127.0.0.1:{stack.http_port}",
            RHYTHM_PROCESSOR_SINK_GROUP=f"{stack.name}-sink",
            RHYTHM_PROCESSOR_LIVE_EVENTS_TOPIC=topics["events"],
        )
        with (home / "lanes-backfill.log").open("w") as log:
            backfill = subprocess.Popen(
                [
                    sys.executable, "-m", "rhythm.stack.cli", "backfill", str(path),
                    "--bootstrap", bootstrap, "--metrics-port", str(history_port),
                    "--live-metrics-port", str(stack.metrics_port), "--timeout", "3600",
                ],
                env=backfill_env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            b_begin, load_b0 = time.time(), loadavg()
            live.run_for(0, until=lambda: backfill.poll() is not None)
            b_end, load_b1 = time.time(), loadavg()
        if backfill.returncode != 0:
            raise RuntimeError(f"rhythm backfill exited {backfill.returncode}; see {home}")
        progress("lanes: waiting for the last windows")
        live.run_for(2 * (WINDOW_S + LATENESS_S) + 3)  # rows of windows closing at b_end
        live.client.close()
        metrics = scrape(history_port)
        lat_a = live.latencies(a_begin, a_end)
        lat_b = live.latencies(b_begin, b_end)
        return {
            "rate": rate,
            "entities": entities,
            "sent": live.sent,
            "backfill": backfill_n,
            "backfill_s": b_end - b_begin,
            "phase_s": a_end - a_begin,
            "history_events": int(metrics.get("rhythm_processor_events_total", 0.0)),
            "a": (
                len(lat_a),
                percentile(lat_a, 50),
                percentile(lat_a, 99),
                max(lat_a, default=nan),
            ),
            "b": (
                len(lat_b),
                percentile(lat_b, 50),
                percentile(lat_b, 99),
                max(lat_b, default=nan),
            ),
            "load_a": f"{load_a0} → {load_a1}",
            "load_b": f"{load_b0} → {load_b1}",
            "nice": nice or f"default ({HISTORY_NICE})",
        }
    finally:
        stack.down()


def _summary(latencies: list[float]) -> tuple[int, float, float, float]:
    return (
        len(latencies),
        percentile(latencies, 50),
        percentile(latencies, 99),
        max(latencies, default=nan),
    )


def lanes_section(kafka: LocalKafka, home: Path) -> str:
    r = lanes_run(kafka, home)
    progress(f"lanes: {r}")
    (na, p50a, p99a, maxa), (nb, p50b, p99b, maxb) = r["a"], r["b"]
    ratio50, ratio99 = p50b / p50a, p99b / p99a
    met = p99b <= 2.0
    goal(
        "p99 live window close → queryable ≤ 2 s during a backfill",
        met,
        f"{p99b:.2f} s ({ratio99:.2f}× alone)",
        "both lanes and the sink share 2 cores; see the lanes section",
    )
    return (
        "## Live beside a backfill\n\n"
        f"`RHYTHM_BENCH_LANES_BACKFILL={r['backfill']} python -m bench.run --only lanes` "
        "(bench/lanes_bench.py). One live worker, one history worker and one sink on one "
        f"machine; a Poisson live stream of {r['rate']:.0f} events/s over {r['entities']} users "
        f"stamped with the wall clock ({r['sent']:,} events in all), 10 s windows, "
        f"{LATENESS_S:.0f} s lateness. Phase A: the live stream alone; phase B: the same while "
        f"`rhythm backfill` imports {r['backfill']:,} events (a month of 1,000 accounts) "
        f"into the history lane (worker niceness {r['nice']}; `RHYTHM_BENCH_LANES_NICE`), "
        f"{r['backfill_s']:.0f} s from its start until it had "
        f"followed the lane to the end ({r['history_events']:,} events counted there; phase "
        f"A {r['phase_s']:.0f} s). "
        "Close = window_end + lateness; latency = first seen in ClickHouse (polled every "
        "0.1 s) − close.\n\n"
        "| live windows closing | windows | p50 s | p99 s | max s | load (1-min) |\n"
        "| --- | ---: | ---: | ---: | ---: | --- |\n"
        f"| alone (A) | {na:,} | {p50a:.2f} | {p99a:.2f} | {maxa:.2f} | {r['load_a']} |\n"
        f"| during the backfill (B) | {nb:,} | {p50b:.2f} | {p99b:.2f} | {maxb:.2f} | "
        f"{r['load_b']} |\n"
        f"| **B ÷ A** | | **{ratio50:.2f}×** | **{ratio99:.2f}×** | | |\n\n"
        f"Goal p99 within 2 s during the backfill: {'met' if met else 'not met'}.\n"
    )

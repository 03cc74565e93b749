"""End to end: the client through the processors and the sink to rows in ClickHouse, and the
latency from a window closing (or an alert falling due) to its row being queryable.

Throughput: the processors and the sink run (as `rhythm processors` / `rhythm sink`
processes) before `rhythm simulate` starts publishing RHYTHM_BENCH_EVENTS events (default
1,000,000) through the client. The clock starts when the first event reaches the events topic
and stops when `rhythm sync`'s condition holds (the processors' watermark has reached the end
of the simulated month minus 10 minutes, the processors have drained the events and updates
topics, and the sink has written every events, signals and alerts message to ClickHouse);
then the rows are counted with SQL through the sink's HTTP endpoint.

Latency (a second, small stack so windows close within seconds): 10-second windows,
lateness 2 s, silence threshold at least 3 s. A live tail at wall-clock speed: every entity
sends one event a second stamped with the wall clock, a tenth of them stop half-way (they
go silent). "Window close" is the wall-clock instant `window_end + lateness`: the event time
of the live tail is the wall clock, so that is when the watermark passes the point after which
the window is complete by definition. An alert falls due at `fired_at + lateness` (the silence
is decided over final events). Every 0.1 s the harness queries ClickHouse for the signal and
alert rows; a row's latency is when the harness first saw it minus its close (due) instant.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness import (
    create_topic,
    env_float,
    env_int,
    goal,
    loadavg,
    messages_in,
    processor_env,
    progress,
    rhythm_cli,
    scrape,
    start,
    stop,
)
from rhythm.producers import Client, ClientSettings, KafkaSettings
from rhythm.stack.kafka import LocalKafka
from rhythm.stack.ports import free_port, wait_for_port
from rhythm.stack.supervisor.sync import wait_for_pipeline

#: Events per unit of `rhythm simulate --scale` (scale 1 sends ~169k, scale 4 ~651k).
EVENTS_PER_SCALE = 160_000


def query(port: int, sql: str) -> list[list[Any]]:
    url = f"http://127.0.0.1:{port}/?" + urllib.parse.urlencode(
        {"query": sql + " FORMAT JSONCompact"}
    )
    with urllib.request.urlopen(url, timeout=30) as r:
        rows: list[list[Any]] = json.loads(r.read())["data"]
    return rows


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class Stack:
    """One processor worker and one sink on their own topics, group and store."""

    def __init__(self, kafka: LocalKafka, home: Path, name: str, topics: dict[str, str]) -> None:
        self.bootstrap = kafka.bootstrap
        self.home = home / name
        self.name = name
        self.topics = topics
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.procs: list[Any] = []

    def start_processors(self, processor_extra: dict[str, str]) -> None:
        t = self.topics
        env = processor_env(
            self.bootstrap,
            self.name,
            t["events"],
            self.home / "state",
            self.metrics_port,
            {
                "RHYTHM_PROCESSOR_SIGNALS_TOPIC": t["signals"],
                "RHYTHM_PROCESSOR_ALERTS_TOPIC": t["alerts"],
                "RHYTHM_PROCESSOR_DEAD_LETTERS_TOPIC": t["dead"],
                **processor_extra,
            },
        )
        self.procs.append(start([*rhythm_cli(), "processors"], env, self.home / "processors.log"))

    def start_sink(self) -> None:
        t = self.topics
        sink_env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            RHYTHM_KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            RHYTHM_SINK_DATA_DIR=str(self.home / "store"),
            RHYTHM_SINK_HTTP_PORT=str(self.http_port),
            RHYTHM_SINK_METRICS_PORT="0",
            RHYTHM_SINK_GROUP_ID=f"{self.name}-sink",
            RHYTHM_SINK_EVENTS_TOPIC=t["events"],
            RHYTHM_SINK_SIGNALS_TOPIC=t["signals"],
            RHYTHM_SINK_ALERTS_TOPIC=t["alerts"],
            RHYTHM_SINK_DEAD_LETTER_TOPIC=t["dead"],
        )
        self.procs.append(start([*rhythm_cli(), "sink"], sink_env, self.home / "sink.log"))
        deadline = time.monotonic() + 120
        while not wait_for_port("127.0.0.1", self.http_port, timeout=1.0):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"{self.name}: the sink did not start; see {self.home}")

    def down(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)

    def sync(self, timeout: float, watermark_at_least: float | None) -> bool:
        t = self.topics
        report = wait_for_pipeline(
            KafkaSettings(bootstrap_servers=self.bootstrap),
            timeout,
            events_topic=t["events"],
            updates_topic=f"{self.name}.updates",
            sink_topics=(t["events"], t["signals"], t["alerts"]),
            processor_group=self.name,
            sink_group=f"{self.name}-sink",
            history_group=None,  # the bench runs the live lane only
            watermark_at_least=watermark_at_least,
            metrics_port=self.metrics_port,
        )
        return bool(report)


def _topics(kafka: LocalKafka, prefix: str) -> dict[str, str]:
    topics = {k: f"{prefix}.{k}" for k in ("events", "signals", "alerts", "dead")}
    for key, n in (("events", 4), ("signals", 4), ("alerts", 2), ("dead", 1)):
        create_topic(kafka.bootstrap, topics[key], n)
    return topics


def throughput(kafka: LocalKafka, home: Path, events: int) -> dict[str, Any]:
    scale = round(max(events / EVENTS_PER_SCALE, 0.01), 2)
    topics = _topics(kafka, "e2e")
    stack = Stack(kafka, home, "bench-e2e", topics)
    stack.start_sink()
    try:
        progress(f"e2e: publishing the simulator's workload, scale {scale} (≈{events:,} events)")
        manifest = home / "e2e-manifest.json"
        sim = start(
            [
                *rhythm_cli(),
                "simulate",
                "--scale",
                str(scale),
                "--bootstrap",
                kafka.bootstrap,
                "--topic",
                topics["events"],
                "--manifest",
                str(manifest),
                "--no-progress",
            ],
            dict(os.environ),
            home / "e2e-simulate.log",
        )
        stack.procs.append(sim)  # stopped with the stack, first, if anything fails
        t0 = None
        while t0 is None:
            if messages_in(kafka.bootstrap, topics["events"]) > 0:
                t0 = time.monotonic()
                # Only now: idle partitions' watermark follows the wall clock, and a worker
                # started before a month-old backlog arrives would rightly call it all late.
                stack.start_processors({"RHYTHM_PROCESSOR_IDLE_AFTER_S": "10"})
            elif sim.poll() is not None:
                raise RuntimeError(f"simulate exited with {sim.returncode}")
            else:
                time.sleep(0.1)
        load_start = loadavg()
        while sim.poll() is None:
            time.sleep(1)
            if int(time.monotonic() - t0) % 15 == 0:
                n = messages_in(kafka.bootstrap, topics["events"])
                progress(f"  published {n:,} so far, load {loadavg()}")
        if sim.returncode != 0:
            raise RuntimeError(f"simulate exited with {sim.returncode}")
        published_s = time.monotonic() - t0
        counts = json.loads(manifest.read_text())["counts"]
        sent = messages_in(kafka.bootstrap, topics["events"])
        progress(f"e2e: {sent:,} published in {published_s:.0f} s; waiting for rows")
        end_of_month = time.time() - 600
        ok = stack.sync(
            timeout=env_float("RHYTHM_BENCH_E2E_TIMEOUT_S", 3600), watermark_at_least=end_of_month
        )
        elapsed = time.monotonic() - t0
        unique = query(stack.http_port, "SELECT count(DISTINCT event_id) FROM rhythm.events")[0][0]
        signals = query(stack.http_port, "SELECT count() FROM rhythm.signals FINAL")[0][0]
        alerts = query(stack.http_port, "SELECT count() FROM rhythm.alerts FINAL")[0][0]
        late = scrape(stack.metrics_port).get("rhythm_processor_late_events_total", 0.0)
        labelled = labelled_metrics(
            stack.metrics_port,
            ("rhythm_processor_late_events_total", "rhythm_processor_offset_holes_total"),
        )
        return {
            "scale": scale,
            "sent": sent,
            "unique": counts["events"],
            "rows_unique_events": int(unique),
            "signal_rows": int(signals),
            "alert_rows": int(alerts),
            "late": int(late),
            "late_and_holes": labelled,
            "published_s": published_s,
            "elapsed_s": elapsed,
            "synced": ok,
            "rate": sent / elapsed,
            "publish_rate": sent / published_s,
            "load": f"{load_start} → {loadavg()}",
        }
    finally:
        stack.down()


def labelled_metrics(port: int, names: tuple[str, ...]) -> dict[str, float]:
    """The samples of these metric families with their labels (late events by outcome,
    holes by stage): what the run's `late` total was made of."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(names) and float(line.rsplit(" ", 1)[1]) > 0
    }


def live_event(entity: int, at: float, rng: random.Random) -> dict[str, Any]:
    return {
        "tenant": "bench",
        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
        + f".{int(at * 1000) % 1000:03d}Z",
        "actor": {"type": "user", "id": f"u-{entity}"},
        "verb": "viewed",
        "object": {"type": "document", "id": f"doc-{entity % 50}"},
        "weight": round(rng.random() * 10, 2),
    }


def latency(kafka: LocalKafka, home: Path, rate: float, tag: str) -> dict[str, Any]:
    """A steady Poisson stream of `rate` events/s over the entities (each event's entity
    drawn at random), stamped with its arrival instant: nothing is aligned to the windows'
    close instants, so the wait for the event that moves the watermark past a close is
    measured too. A tenth of the entities stop half-way (their silences are the alerts)."""
    entities = env_int("RHYTHM_BENCH_LIVE_ENTITIES", 200)
    live_s = env_float("RHYTHM_BENCH_LIVE_S", 90.0)
    lateness_s = 2.0
    topics = _topics(kafka, f"live-{tag}")
    stack = Stack(kafka, home, f"bench-live-{tag}", topics)
    stack.start_sink()
    stack.start_processors(
        {
            "RHYTHM_PROCESSOR_WINDOW_SECONDS": "[10]",
            "RHYTHM_PROCESSOR_LATENESS_S": str(lateness_s),
            "RHYTHM_PROCESSOR_SILENCE_MIN_S": "3",
            # a silence after seconds of history, at any hour: the rule's defaults want a
            # week of history and judge office hours only
            "RHYTHM_PROCESSOR_SILENCE_MIN_SPAN_S": "30",
            "RHYTHM_PROCESSOR_WORKING_DAYS": "[0,1,2,3,4,5,6]",
            "RHYTHM_PROCESSOR_WORKING_HOURS": "[0,24]",
            "RHYTHM_PROCESSOR_TICK_S": "0.2",
        }
    )
    rng = random.Random(11)
    client = Client(
        ClientSettings(
            kafka=KafkaSettings(bootstrap_servers=kafka.bootstrap), topic=topics["events"]
        )
    )
    seen_signals: dict[tuple[str, int], float] = {}
    seen_alerts: dict[str, tuple[float, int]] = {}
    stops = set(rng.sample(range(entities), max(1, entities // 10)))
    going = [e for e in range(entities) if e not in stops]
    try:
        progress(
            f"e2e latency: Poisson {rate:,.0f} events/s over {entities} entities, {live_s:.0f} s"
        )
        begin = time.time()
        arrival = begin + rng.expovariate(rate)
        next_poll = begin
        sent = 0
        late_sends: list[float] = []  # how far behind its arrival instant each send was
        quiet_since = None
        while True:
            now = time.time()
            # After the tail: poll on until no new row for 15 s (at most 120 s), so slow rows
            # are measured, not cut off.
            if now - begin >= live_s:
                count = len(seen_signals) + len(seen_alerts)
                if quiet_since is None or count != quiet_since[0]:
                    quiet_since = (count, now)
                if now - quiet_since[1] >= 15 or now - begin >= live_s + 120:
                    break
            if arrival - begin < live_s and arrival <= now:
                half = arrival - begin > live_s / 2
                while arrival <= now and arrival - begin < live_s:
                    pool = going if half else range(entities)
                    client.send(live_event(rng.choice(pool), arrival, rng))
                    late_sends.append(now - arrival)
                    sent += 1
                    arrival += rng.expovariate(rate)
                client.flush(0)
            if now >= next_poll:
                for entity_id, start_ms in query(
                    stack.http_port,
                    "SELECT entity_id, toUnixTimestamp64Milli(window_start) FROM rhythm.signals "
                    "WHERE role = 'actor'",
                ):
                    seen_signals.setdefault((entity_id, int(start_ms)), time.time())
                for alert_id, fired_ms in query(
                    stack.http_port,
                    "SELECT alert_id, toUnixTimestamp64Milli(fired_at) FROM rhythm.alerts "
                    "WHERE kind = 'silence'",
                ):
                    seen_alerts.setdefault(alert_id, (time.time(), int(fired_ms)))
                next_poll = time.time() + 0.1
            time.sleep(min(0.01, max(0.0005, min(arrival, next_poll) - time.time())))
        client.close()
        # Only windows that closed while the tail was live: later ones close by the idle rule.
        tail_end = begin + live_s
        signal_lat = [
            seen - (start_ms / 1000 + 10 + lateness_s)
            for (_, start_ms), seen in seen_signals.items()
            if start_ms / 1000 >= begin and start_ms / 1000 + 10 + lateness_s <= tail_end
        ]
        alert_lat = [
            seen - (fired_ms / 1000 + lateness_s)
            for seen, fired_ms in seen_alerts.values()
            if fired_ms / 1000 + lateness_s <= tail_end
        ]
        return {
            "entities": entities,
            "live_s": live_s,
            "rate": rate,
            "sent": sent,
            "send_lag_p99": percentile(late_sends, 99),
            "silenced": len(stops),
            "signals": len(signal_lat),
            "alerts": len(alert_lat),
            "signal_p50": percentile(signal_lat, 50),
            "signal_p99": percentile(signal_lat, 99),
            "signal_max": max(signal_lat, default=float("nan")),
            "alert_p50": percentile(alert_lat, 50),
            "alert_p99": percentile(alert_lat, 99),
            "lateness_s": lateness_s,
            "load": loadavg(),
        }
    finally:
        stack.down()


LOADS = (0.5, 0.9)  # shares of the measured end-to-end capacity the live tail runs at


def e2e_section(kafka: LocalKafka, home: Path) -> str:
    events = env_int("RHYTHM_BENCH_EVENTS", 1_000_000)
    t = throughput(kafka, home, events)
    progress(f"e2e: {t['rate']:,.0f} events/s end to end ({t})")
    runs = []
    for share in LOADS:
        lat = latency(kafka, home, share * t["rate"], f"{int(share * 100)}")
        progress(f"e2e latency at {share:.0%}: {lat}")
        runs.append((share, lat))
    goal(
        "end to end ≥ 8,000 events/s, one processor worker and one sink",
        t["rate"] >= 8_000,
        f"{t['rate']:,.0f} events/s",
        "the processor worker and the sink share the two cores with the broker; one worker "
        "alone does about 6,000 events/s (peers and workers sections)",
    )
    goal(
        "no event counted late in the end-to-end replay (every window computed whole)",
        t["late"] == 0,
        f"{t['late']:,.0f} late",
        f"{t['late_and_holes']}",
    )
    half = runs[0][1]
    met = half["signal_p99"] <= 2.0
    goal(
        "p99 window close → signal row queryable ≤ 2 s (Poisson, 50 % of capacity)",
        met,
        f"{half['signal_p99']:.2f} s",
        ""
        if met
        else "see the latency table: the tail waits in the sink's and the "
        "processors' batches and for the event that moves the watermark",
    )
    rows = "".join(
        f"| {share:.0%} ({lat['rate']:,.0f} events/s; {lat['sent']:,} sent) | window close → "
        f"signal row | {lat['signals']:,} | {lat['signal_p50']:.2f} | {lat['signal_p99']:.2f} | "
        f"{lat['signal_max']:.2f} | {lat['load']} |\n"
        f"| | alert due → alert row | {lat['alerts']:,} | {lat['alert_p50']:.2f} | "
        f"{lat['alert_p99']:.2f} | | |\n"
        for share, lat in runs
    )
    lag = max(lat["send_lag_p99"] for _, lat in runs)
    return (
        "## End to end\n\n"
        f"`RHYTHM_BENCH_EVENTS={events} python -m bench.run --only e2e`. One processor worker "
        "and one sink (embedded ClickHouse) running while `rhythm simulate --scale "
        f"{t['scale']}` publishes through the client.\n\n"
        "| measure | value |\n| --- | ---: |\n"
        f"| messages published (incl. re-sent duplicates) | {t['sent']:,} |\n"
        "| unique events (simulator) / distinct event rows in ClickHouse | "
        f"{t['unique']:,} / {t['rows_unique_events']:,} |\n"
        f"| signal rows / alert rows in ClickHouse | {t['signal_rows']:,} / {t['alert_rows']:,} |\n"
        f"| client publishing (generation included), events/s | {t['publish_rate']:,.0f} |\n"
        "| **end to end, client → signals → rows in ClickHouse, events/s** | "
        f"**{t['rate']:,.0f}** |\n"
        f"| wall time, first event published → all rows queryable | {t['elapsed_s']:.0f} s |\n"
        f"| pipeline synced within the timeout | {'yes' if t['synced'] else 'NO'} |\n"
        f"| events the processors counted late (should be 0) | {t['late']:,} |\n"
        f"| load (1-min average) start → end | {t['load']} |\n\n"
        "The clock starts when the first event is in the events topic and stops when `rhythm "
        "sync`'s condition holds: the processors' watermark within 10 minutes of the end of "
        "the simulated month, the processors' groups drained (events and internal updates "
        "topics) and the sink's group drained (events, signals, alerts). Windows still open "
        "at the end of the month (the newest hour and day) are not in the count.\n\n"
        "### Latency (live tail, at 50 % and 90 % of that capacity)\n\n"
        f"A fresh stack per load with 10 s windows and {half['lateness_s']:.0f} s lateness; a "
        f"steady Poisson stream at the given share of the end-to-end rate above, each event "
        f"from one of {half['entities']} entities drawn at random and stamped with its "
        f"arrival instant (nothing aligned to window boundaries; sends were at most "
        f"{lag * 1000:.0f} ms behind their arrival instants, p99), for {half['live_s']:.0f} s; "
        f"{half['silenced']} entities stop half-way. **Window close** = the wall-clock instant "
        "window_end + lateness (the stream's event time is the wall clock, so the window is "
        "complete then by definition; the wait for the next event, which moves the "
        "watermark past it, is part of the latency); **alert due** = fired_at + lateness. "
        "The harness queries ClickHouse through the sink's HTTP endpoint every 0.1 s; "
        "latency = first seen − close (due) instant. Only windows and alerts due while the "
        "tail was live count.\n\n"
        "| load | measure | rows | p50 s | p99 s | max s | load (1-min) |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | --- |\n"
        f"{rows}\n"
        f"Goal p99 signal within 2 s of window close at 50 % of capacity: "
        f"{'met' if met else 'not met'} ({half['signal_p99']:.2f} s; at 90 %: "
        f"{runs[1][1]['signal_p99']:.2f} s).\n"
    )

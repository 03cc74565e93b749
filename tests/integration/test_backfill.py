"""The history lane on the real broker and a real sink and store (ARCHITECTURE.md, "the
history lane"): a live worker takes a live stream while `rhythm backfill` imports a month of
labelled history into a history worker, and then a client that was offline for days replays
its buffer into the live lane, which routes what it would have dropped as too late to the
history lane. Every closed window of each tenant equals an independent sorted computation;
live alerts fire, the history lane's are marked historical; the routed events are counted
both ways. Then the same with live and history events of the same tenant and entities in the
same windows (an import overlapping the live period, routed events among live ones), each
event stored once in the raw `events` rows. Then the silence norms and the reply norms a
backfill learned, handed to the live lane; and live windows and alerts while a backfill
runs, as without it."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from rhythm.processors.lanes import EPOCH_SHIFT, lane_of_version
from rhythm.processors.settings import ProcessorSettings
from rhythm.processors.signals.conversation import ContextMessage, Conversations
from rhythm.processors.stage1 import Stage1Config, Stage1Partition
from rhythm.processors.stage2 import Stage2Partition
from rhythm.producers import Client, ClientSettings
from rhythm.producers.prepare import prepare_event
from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.runtime.process import stop_group
from rhythm.runtime.scrape import scrape_min
from rhythm.runtime.sink_sync import wait_for_sink
from rhythm.schemas import encode_event
from rhythm.schemas.keys import EntityKey
from rhythm.schemas.outputs import alert_id
from rhythm.stack.ports import free_ports

from .conftest import payload, read_topic
from .test_processors import (
    LATENESS_MS,
    WINDOWS_MS,
    Pipeline,
    check_alerts,
    check_signals,
    expected_closed,
)
from .test_sink_support import SinkProcess, Topics
from .workload import DAY, HOUR, MIN, generate, iso, ms_of, reference_signals

pytestmark = pytest.mark.integration

Key = tuple[str, str, str, str, int, int]  # tenant, role, type, id, window seconds, start


class Lanes:
    """A live pipeline and a history pipeline writing the same signals and alerts topics."""

    def __init__(self, bootstrap: str, home: Path) -> None:
        name = f"lanes-{uuid.uuid4().hex[:8]}"
        self.live = Pipeline(bootstrap, name, home / "live")
        self.history = Pipeline(bootstrap, f"{name}-history", home / "history")
        self.input = f"{name}.history"  # the history lane's input: one partition
        self.ports = free_ports(2)
        (home / "live").mkdir()
        (home / "history").mkdir()
        self.live.create_topics()
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(self.input, 1, 1)])[self.input].result(30)
        t = self.live.topics
        # The sink stores the live events and the imported history, skipping the history
        # lane's routed events, copies and notes; the lane and `rhythm backfill` read it.
        self.sink = SinkProcess(
            bootstrap, Topics(t["events"], t["signals"], t["alerts"], t["dead"]),
            home, f"{name}-sink", history_topic=self.input,
        )  # fmt: skip
        self.store = {
            "RHYTHM_PROCESSOR_STORE_URL": f"http://127.0.0.1:{self.sink.http_port}",
            "RHYTHM_PROCESSOR_SINK_GROUP": self.sink.group,
            "RHYTHM_PROCESSOR_LIVE_EVENTS_TOPIC": t["events"],
            "RHYTHM_PROCESSOR_COPIES_WAIT_S": "120",
        }
        self.live.extra_env = {
            "RHYTHM_PROCESSOR_HISTORY_TOPIC": self.input,
            "RHYTHM_PROCESSOR_METRICS_PORT": str(self.ports[0]),
        }
        self.history.extra_env = {
            "RHYTHM_PROCESSOR_LANE": "history",
            "RHYTHM_PROCESSOR_EVENTS_TOPIC": self.input,
            "RHYTHM_PROCESSOR_SIGNALS_TOPIC": t["signals"],
            "RHYTHM_PROCESSOR_ALERTS_TOPIC": t["alerts"],
            "RHYTHM_PROCESSOR_DEAD_LETTERS_TOPIC": t["dead"],
            "RHYTHM_PROCESSOR_METRICS_PORT": str(self.ports[1]),
            "RHYTHM_PROCESSOR_HANDOFF_TOPIC": t["updates"],
            "RHYTHM_PROCESSOR_LATER_TOPIC": f"{self.input}.later",
            **self.store,
        }

    def start(self, live: list[dict[str, Any]] | None = None) -> list[subprocess.Popen[bytes]]:
        """The sink, then the two workers; `live` is published before the workers start, so
        no partition goes idle before its events (its watermark would follow the clock and
        the older of them would be routed)."""
        self.sink.start()
        self.sink.keep_raw_rows()  # every row the sink writes stays a row
        if live is not None:
            self.live.send(live)
        return [self.live.start(), self.history.start()]

    def stored(self, timeout: float = 120) -> None:
        """Until the sink has written everything published so far."""
        t = self.live.topics
        topics = [t["events"], t["signals"], t["alerts"], self.input]
        kafka = KafkaSettings(bootstrap_servers=self.live.bootstrap)
        report = wait_for_sink(kafka, topics, timeout, group_id=self.sink.group)
        assert report, f"{report}\n{self.sink.log()[-2000:]}"

    def raw_events(self, tenant: str) -> dict[str, int]:
        """rhythm.events as written (no FINAL, no merges): rows per event_id."""
        client = self.sink.client()
        try:
            rows = client.query(
                "SELECT toString(event_id), count() FROM rhythm.events "
                "WHERE tenant = {t:String} GROUP BY event_id",
                parameters={"t": tenant},
            ).result_rows
        finally:
            client.close()
        return {str(i): int(n) for i, n in rows}

    def latest(self) -> dict[Key, dict[str, Any]]:
        """The highest version of every window, as the store's FINAL keeps it."""
        out: dict[Key, dict[str, Any]] = {}
        for m in read_topic(self.live.bootstrap, self.live.topics["signals"], 0, timeout=5):
            s = json.loads(payload(m))
            key = (
                s["tenant"], s["role"], s["entity_type"], s["entity_id"], s["window_seconds"],
                s["window_start"],
            )  # fmt: skip
            if key not in out or out[key]["version"] < s["version"]:
                out[key] = s
        return out

    def wait_for(self, keys: set[Key], timeout: float = 180) -> dict[Key, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        seen: dict[Key, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            seen = self.latest()
            if keys <= set(seen):
                return seen
        missing = sorted(keys - set(seen))[:5]
        raise AssertionError(
            f"{len(keys - set(seen))} windows never emitted, e.g. {missing}\nlive: "
            f"{self.live.diagnosis()}\nhistory: {self.history.diagnosis()}"
        )

    def wait_until(
        self, check: Callable[[dict[Key, dict[str, Any]]], None], timeout: float = 180
    ) -> dict[Key, dict[str, Any]]:
        """The latest windows once `check` of them passes (it raises until then: the last
        failure is raised at `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.latest()
            try:
                check(seen)
                return seen
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def alerts(self) -> list[dict[str, Any]]:
        messages = read_topic(self.live.bootstrap, self.live.topics["alerts"], 0, timeout=5)
        return [json.loads(payload(m)) for m in messages]

    def metric(self, lane: int, name: str) -> float:
        url = f"http://127.0.0.1:{self.ports[lane]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + " ") or line.startswith(name + "{")
        )


@pytest.fixture
def lanes(kafka_broker: Any, tmp_path: Path) -> Iterator[Lanes]:
    lanes = Lanes(kafka_broker.bootstrap, tmp_path)
    try:
        yield lanes
    finally:
        lanes.sink.close()


def tenant_reference(tenant: str, events: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    return {(tenant, *k): v for k, v in reference_signals(events, WINDOWS_MS).items()}


def check(got: dict[Key, dict[str, Any]], reference: dict[Key, dict[str, Any]]) -> None:
    tenant = next(iter(reference))[0]
    check_signals(
        {k[1:]: s for k, s in got.items() if k[0] == tenant},
        {k[1:]: v for k, v in reference.items()},
    )


def alert_tuples(alerts: list[dict[str, Any]]) -> set[tuple[str, str, str, str, str | None, int]]:
    return {
        (a["kind"], a["role"], a["entity_type"], a["entity_id"], a["context_id"], a["fired_at"])
        for a in alerts
    }


_LIVE_WINDOW_SETTINGS = (
    "RHYTHM_PROCESSOR_WINDOW_SECONDS",
    "RHYTHM_PROCESSOR_LATENESS_S",
    "RHYTHM_PROCESSOR_LATE_RETENTION_S",
)


def backfill(
    lanes: Lanes,
    events: list[dict[str, Any]] | None,
    home: Path,
    wait: bool = True,
    expect: int = 0,
) -> str:
    """`rhythm backfill FILE` (None: `--later`) against the test's history lane (its names
    as its worker reads them); returns what it printed (its exit code must be `expect`)."""
    path = home / "history.jsonl"
    if events is not None:
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
    env = dict(
        os.environ,
        RHYTHM_PROCESSOR_LANE="history",
        RHYTHM_PROCESSOR_APP_ID=lanes.history.name,
        RHYTHM_PROCESSOR_EVENTS_TOPIC=lanes.input,
        RHYTHM_PROCESSOR_UPDATES_TOPIC=lanes.history.topics["updates"],
        RHYTHM_PROCESSOR_LATER_TOPIC=f"{lanes.input}.later",
        RHYTHM_PROCESSOR_LATER_GROUP=f"{lanes.history.name}-later",
        **lanes.store,
        # the live lane's windows, as the command reads them to leave out what it may change
        **{k: v for k, v in lanes.live.extra_env.items() if k in _LIVE_WINDOW_SETTINGS},
    )
    done = subprocess.run(
        [
            sys.executable, "-m", "rhythm.stack.cli", "backfill",
            *([str(path)] if events is not None else ["--later"]),
            "--bootstrap", lanes.live.bootstrap, "--metrics-port", str(lanes.ports[1]),
            "--live-metrics-port", str(lanes.ports[0]), "--timeout", "180",
            *([] if wait else ["--no-wait"]),
        ],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == expect, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_history_and_a_replayed_outage_beside_a_live_stream_are_exact(
    lanes: Lanes, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    today = now - now % DAY
    live = generate(now, seed=31, tenant="live")
    # a month of history, ending six days ago
    past_end = today - 6 * DAY
    past = generate(past_end, seed=32, days=30, tenant="past")
    # a client offline for two days up to two days ago (older than the live lane keeps
    # windows open for: all of it too late there)
    offline = generate(today - 2 * DAY, seed=33, days=2, tenant="offline")
    procs = lanes.start()
    try:
        lanes.live.send(live.arrivals)
        live_ref = tenant_reference("live", live.events)
        closed = expected_closed(reference_signals(live.events, WINDOWS_MS), now - 60_000)
        got = lanes.wait_for({("live", *k) for k in closed})
        # the import, while the live worker runs
        out = backfill(lanes, past.arrivals, tmp_path)
        assert f"{len(past.arrivals):,} selected" in out and "history lane: " in out
        past_ref = tenant_reference("past", past.events)
        # the replayed outage: into the live lane, which routes it
        lanes.live.send(offline.arrivals)
        offline_ref = tenant_reference("offline", offline.events)
        got = lanes.wait_for(set(past_ref) | set(offline_ref) | set(got))
        routed = lanes.metric(0, "rhythm_processor_routed_events_total")
        noted = lanes.metric(0, 'rhythm_processor_late_events_total{outcome="routed"}')
        lost_live = lanes.metric(0, 'rhythm_processor_late_events_total{outcome="too_late"}')
        reread = lanes.metric(0, "rhythm_processor_offset_holes_total")
        lost_history = lanes.metric(1, 'rhythm_processor_late_events_total{outcome="too_late"}')
        history_events = lanes.metric(1, "rhythm_processor_events_total")
    finally:
        for proc in procs:
            stop_group(proc, 30.0)
    check(got, live_ref)
    check(got, past_ref)
    check(got, offline_ref)
    lanes_of = {(k[0], lane_of_version(s["version"])) for k, s in got.items()}
    assert lanes_of == {("live", "live"), ("past", "history"), ("offline", "history")}
    # every event of the outage went to the history lane (re-sent ones too: the live lane's
    # memory of ids is a day, the history lane's deduplicates them), nothing was lost to
    # signals in either lane, and both lanes counted it
    counts = (noted > 0, lost_live, lost_history, history_events)
    assert counts == (True, 0, 0, len(past.events) + len(offline.events))
    # Routed at least once each; more often only if the live worker read input again (beside
    # a month's import on two cores a live partition can stall and be read again from its
    # commit, holes.py, which routes those messages again; the history lane counts each
    # event once: history_events above).
    assert len(offline.events) <= routed
    assert routed <= len(offline.arrivals) or reread > 0, (routed, reread)
    alerts = lanes.alerts()
    live_alerts = [a for a in alerts if a["tenant"] == "live"]
    assert not any(a.get("historical") for a in live_alerts)
    check_alerts(alert_tuples(live_alerts), live)
    past_alerts = [a for a in alerts if a["tenant"] == "past"]
    assert past_alerts and all(a.get("historical") is True for a in past_alerts)
    # The planted ones and only those: the outage's events, another tenant's, move only
    # their own tenant's event time on (tenants.py), never this one's quiet.
    check_alerts(alert_tuples(past_alerts), past)
    # The outage's alerts are the history lane's only: the live lane noted the routed
    # events' times (for its gaps and norms) and judges nothing about them.
    assert all(a.get("historical") is True for a in alerts if a["tenant"] == "offline")
    # Each event is one row of the raw events, imported history included (the history
    # lane's input holds the routed events too: the sink skipped them).
    lanes.stored()
    assert lanes.raw_events("past") == {e["event_id"]: 1 for e in past.events}
    assert set(lanes.raw_events("offline")) == {e["event_id"] for e in offline.events}


SMALL_WINDOWS_MS = (5_000, 30_000)


def test_history_up_to_now_is_imported_in_full_once_the_live_lane_is_done_with_it(
    lanes: Lanes, tmp_path: Path
) -> None:
    # Seconds, not days: 5 s and 30 s windows in both lanes, live lateness 3 s, windows kept
    # 5 s after closing, so the live lane is done with a window about a minute after it.
    small = {"RHYTHM_PROCESSOR_WINDOW_SECONDS": "[5,30]"}
    lanes.live.extra_env |= small | {
        "RHYTHM_PROCESSOR_LATENESS_S": "3", "RHYTHM_PROCESSOR_LATE_RETENTION_S": "5",
    }  # fmt: skip
    lanes.history.extra_env |= small
    accounts = [f"a-{i}" for i in range(4)]
    rng = random.Random(61)
    now = int(time.time() * 1000)
    history: list[dict[str, Any]] = []
    for account in accounts:  # ten minutes of history, up to now
        t = now - 10 * MIN + rng.randrange(3_000)
        stamps = []
        while t < now:
            stamps.append(t)
            t += rng.randrange(1_000, 7_000)
        history += _events("full", account, stamps)
    procs = lanes.start()
    live: list[dict[str, Any]] = []
    try:
        lanes.live.send(_events("warmup", "w", [now]))  # the live lane is up
        _wait_metric(lanes, 0, "rhythm_processor_events_total", 1)
        out = backfill(lanes, history, tmp_path, wait=False)
        assert "wait on" in out and "left out" not in out, out
        waiting = int(out.split(" events at or after")[0].rsplit("\n", 1)[-1].replace(",", ""))
        assert 0 < waiting < len(history)
        # a live stream of the same accounts, on time, in the windows the import left
        # waiting; then `--later` (as `rhythm up` runs it every minute) until none waits
        later_out: list[str] = []  # what each `--later` said

        def stream(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                for account in rng.sample(accounts, 2):
                    live.append(_events("full", account, [int(time.time() * 1000)])[0])
                    lanes.live.send(live[-1:])
                time.sleep(rng.uniform(0.5, 1.5))  # the stream's pace, not a wait for anything

        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            stream(8)
            later_out.append(backfill(lanes, None, tmp_path))  # follows the lane to the end
            last = later_out[-1]
            if ", 0 still waiting" in last and "until" not in last and "wait on" not in last:
                break
        stream(20)  # more live windows after the import: the first gaps after the history
        done = [o for o in later_out if "published" in o]
        assert done and ", 0 still waiting" in done[-1], later_out
        imported = sum(
            int(o.split(" the live lane is done with")[0].rsplit(": ", 1)[-1].replace(",", ""))
            for o in done
        )
        assert imported == waiting  # each waiting event imported once
        end = ms_of(live[-1])
        reference = {
            ("full", *k): v for k, v in reference_signals(history + live, SMALL_WINDOWS_MS).items()
        }
        # Every window of the tenant the live lane closed (no event of it came late): history
        # and live events together, exactly as one sorted computation, the windows where
        # the live stream follows the history included (their first gap is from the
        # history's last event).
        closed = {k for k in reference if k[5] + k[4] * 1000 + 3_000 <= end - 5_000}
        first_live = min(ms_of(e) for e in live)
        assert any(k[5] <= first_live < k[5] + k[4] * 1000 for k in closed)
        lanes.stored()  # the history lane's re-emitted windows too
        got = lanes.wait_for(closed)
        # Another tenant's history, older than what the lane has made final for "full": each
        # tenant's event time is its own, so it is imported in full, exact.
        older: list[dict[str, Any]] = []
        for account in ("o-1", "o-2"):
            stamps = sorted({now - 25 * MIN + rng.randrange(10 * MIN) for _ in range(12)})
            older += _events("older", account, stamps)
        assert "Nothing was published" not in backfill(lanes, older, tmp_path)
        older_reference = {
            ("older", *k): v for k, v in reference_signals(older, SMALL_WINDOWS_MS).items()
        }
        got_older = lanes.wait_for(set(older_reference))
        # A second source of the same tenant and period (older than what the lane made final
        # for it): the tenant is rewound, computed again from its stored events and the new
        # ones; every closed window is again one sorted computation's, the new rows win.
        second: list[dict[str, Any]] = []
        for account in ("a-0", "a-9"):
            stamps = sorted({now - 9 * MIN + rng.randrange(5 * MIN) for _ in range(15)})
            second += _events("full", account, stamps)
        rewound = backfill(lanes, second, tmp_path)
        assert "computes the tenant again from its start (epoch 1)" in rewound, rewound
        assert "'older'" not in rewound, rewound
        lanes.stored()
        again = {
            ("full", *k): v
            for k, v in reference_signals(history + live + second, SMALL_WINDOWS_MS).items()
        }
        again_closed = {k for k in again if k in closed or k[3] == "a-9"}

        def rewound_exactly(seen: dict[Key, dict[str, Any]]) -> None:
            assert again_closed <= set(seen), sorted(again_closed - set(seen))[:5]
            check_signals(
                {k[1:]: seen[k] for k in again_closed}, {k[1:]: again[k] for k in again_closed}
            )

        got_again = lanes.wait_until(rewound_exactly)
        rewound_rows = [k for k in again_closed if got_again[k]["version"] >= 1 << EPOCH_SHIFT]
        raw = lanes.raw_events("full")
        raw_older = lanes.raw_events("older")
    finally:
        for proc in procs:
            stop_group(proc, 30.0)
    check_signals(
        {k[1:]: s for k, s in got.items() if k in closed},
        {k[1:]: v for k, v in reference.items() if k in closed},
    )
    check_signals(
        {k[1:]: s for k, s in got_older.items() if k in older_reference},
        {k[1:]: v for k, v in older_reference.items()},
    )
    # the windows of the second source's period are the rewound epoch's
    assert any(k[3] == "a-9" for k in rewound_rows)
    assert all(k in rewound_rows for k in again_closed if k[5] < min(map(ms_of, second)))
    assert raw == {e["event_id"]: 1 for e in history + live + second}  # each event one raw row
    assert raw_older == {e["event_id"]: 1 for e in older}


@pytest.mark.long  # a minute and more of wall-clock windows: `make test-faults` runs it
@pytest.mark.parametrize("w2_kept", [False, True], ids=["w2-final", "w2-kept"])
def test_a_routed_event_changes_the_gap_of_its_entitys_next_stored_window_once_final(
    lanes: Lanes, tmp_path: Path, w2_kept: bool
) -> None:
    # Seconds: 5 s and 15 s windows in both lanes, live lateness 2 s, windows kept 3 s after
    # closing. An account sends live in the first part of one 15 s window (W1), pauses,
    # sends again in the next (W2); then an event of the pause in W1 arrives late: routed,
    # and the history lane must re-emit W2 with the first gap from that event (the live
    # lane counted it from the account's last W1 event). It arrives after the live lane is
    # done with W2 too (the lane extends the routed event's span to W2), or while the live
    # lane still keeps W2 (W2's first event waits on the later topic, and `rhythm backfill
    # --later`, run by `rhythm up` every minute, imports it again once W2 is done).
    small = {"RHYTHM_PROCESSOR_WINDOW_SECONDS": "[5,15]", "RHYTHM_PROCESSOR_LATENESS_S": "2",
             "RHYTHM_PROCESSOR_LATE_RETENTION_S": "3"}  # fmt: skip
    lanes.live.extra_env |= small
    lanes.history.extra_env |= small | {"RHYTHM_PROCESSOR_LIVE_METRICS_PORT": str(lanes.ports[0])}
    procs = lanes.start()
    sent: list[dict[str, Any]] = []

    def send(account: str, ts: int) -> None:
        sent.extend(_events("routed-next", account, [ts]))
        lanes.live.send(sent[-1:])

    try:
        lanes.live.send(_events("warmup", "w", [int(time.time() * 1000)]))
        _wait_metric(lanes, 0, "rhythm_processor_events_total", 1)
        now = int(time.time() * 1000)
        w1 = now - now % 15_000 + 15_000  # the next 15 s window
        w2 = w1 + 15_000
        while (t := int(time.time() * 1000)) < w2 + 8_000:  # on time, as they happen
            if w1 <= t < w1 + 6_000 or w2 <= t < w2 + 8_000:
                send("x", t)
            send("steady", t)  # keeps the partitions' event time going
            time.sleep(0.7)  # the stream's pace

        def steady(until: int) -> None:
            while int(time.time() * 1000) < until:
                send("steady", int(time.time() * 1000))
                time.sleep(0.7)

        def live_done_with_w2() -> bool:
            """The live lane's stage-2 watermark (the lowest partition's: its idle ones
            follow the clock 10 s behind) is past W2's end, lateness and retention."""
            mark = scrape_min(lanes.ports[0], "rhythm_processor_stage2_watermark_seconds")
            return mark is not None and mark * 1000 >= w2 + 15_000 + 2_000 + 3_000

        if w2_kept:
            steady(w2 + 9_000)  # W1 past its retention in x's partition, W2 still kept
            assert not live_done_with_w2()
        else:
            while not live_done_with_w2():
                steady(int(time.time() * 1000) + 1_000)
        _wait_metric(lanes, 0, "rhythm_processor_events_total", len(sent) + 1)
        send("x", w1 + 10_000)  # late: in W1's pause, after the account's last W1 event
        _wait_metric(lanes, 0, "rhythm_processor_routed_events_total", 1)
        again: list[str] = []  # what `rhythm backfill --later` said
        if w2_kept:  # W2's first event waits on the later topic: as `rhythm up` runs it
            name = 'rhythm_processor_history_copies_total{kind="next_to_later"}'
            _wait_metric(lanes, 1, name, 1)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not any("(and 1 " in o for o in again):
                steady(int(time.time() * 1000) + 5_000)
                again.append(backfill(lanes, None, tmp_path))
            assert any("(and 1 stored events to import again)" in o for o in again), again
        reference = {
            ("routed-next", *k): v
            for k, v in reference_signals(sent, (5_000, 15_000)).items()
            if k[2] == "x"
        }
        w2_key = ("routed-next", "actor", "account", "x", 15, w2)
        first_w2 = min(ms_of(e) for e in sent if e["actor"]["id"] == "x" and ms_of(e) >= w2)
        assert first_w2 - (w1 + 10_000) in reference[w2_key]["gaps"]  # the scenario holds
        deadline = time.monotonic() + 120
        got = lanes.latest()
        while time.monotonic() < deadline:
            got = lanes.latest()
            if w2_key in got and lane_of_version(got[w2_key]["version"]) == "history":
                break
        unextended = lanes.metric(1, "rhythm_processor_history_unextended_keys")
    finally:
        for proc in procs:
            stop_group(proc, 30.0)
    assert w2_key in got and lane_of_version(got[w2_key]["version"]) == "history", (
        got.get(w2_key),
        unextended,
        again,
    )
    # every window of the account, W2 included, as one sorted computation of its events
    check_signals(
        {k[1:]: s for k, s in got.items() if k in reference},
        {k[1:]: v for k, v in reference.items()},
    )


def once(arrivals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Arrival order, each event id once (a re-sent event is two messages, two raw rows)."""
    seen: set[str] = set()
    out = []
    for e in arrivals:
        if e["event_id"] not in seen:
            seen.add(e["event_id"])
            out.append(e)
    return out


def replayed(day_start: int, n: int) -> list[dict[str, Any]]:
    """A client's buffered events of one day, among the live stream's entities, in the middle
    of the day: each is followed by live events of its entities the same day (ARCHITECTURE.md,
    the limits: the first event after a routed one in a window the live lane still keeps
    keeps its gap from the event before the routed one)."""
    tags = ["bikes", "launch-q4", "pricing"]
    return [
        {
            "event_id": str(uuid.UUID(int=(7 << 100) + i)),
            "tenant": "acme",
            "occurred_at": iso(day_start + 4 * HOUR + i * 23 * MIN + 11_000),
            "weight": 1.5 + i % 4,
            "actor": {"type": "user", "id": f"u-{i % 12}"},
            "verb": "edited",
            "object": {"type": "document", "id": f"doc-{(i * 7) % 40}"},
            "target": {"type": "account", "id": f"acct-{i % 5}"},
            "tags": [tags[i % 3]],
            "channel": "web",
        }
        for i in range(n)
    ]


def test_live_and_history_of_the_same_entities_share_windows_exactly_and_are_stored_once(
    lanes: Lanes, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    # The oldest day the live lane may still change starts at `base` (rhythm backfill's cut,
    # a minute early for the live lane's idle watermark behind the clock).
    mark = now - 60_000 - LATENESS_MS - DAY
    base = mark - mark % DAY
    live = generate(now, seed=41, days=6, tenant="acme")
    # A day of the same company's history the live lane also saw (its users' events: the
    # same users, documents, accounts and tags), imported after a day of live events...
    imported = [
        e for e in generate(base - 2 * DAY, seed=42, days=1, tenant="acme").events
        if e["actor"]["type"] == "user" and ms_of(e) >= base - 3 * DAY
    ]  # fmt: skip
    # ...and a client's buffered events of a later day, replayed into the live lane: too late
    # there, routed to the history lane, in windows holding live events.
    routed = replayed(base - DAY, 30)
    everything = live.events + imported + routed
    reference = tenant_reference("acme", everything)
    procs = lanes.start(once(live.arrivals))
    try:
        closed = expected_closed(reference_signals(live.events, WINDOWS_MS), now - 60_000)
        lanes.wait_for({("acme", *k) for k in closed})
        out = backfill(lanes, imported, tmp_path)
        assert f"{len(imported):,} selected" in out and "stored events of the same windows" in out
        lanes.live.send(routed)
        # The windows the history lane must re-emit, from every event: for the import's
        # entities its day and the next (their next events), for the routed events' entities
        # their day.
        touched = tenant_reference("acme", imported + routed)
        spans = [(imported, base - 3 * DAY, base - DAY), (routed, base - DAY, base)]
        redone = {
            k for events, start, end in spans
            for entity in {t[0:4] for t in tenant_reference("acme", events)}
            for k in reference if k[0:4] == entity and start <= k[5] < end
        }  # fmt: skip
        deadline = time.monotonic() + 240
        got = lanes.latest()
        while time.monotonic() < deadline:
            got = lanes.latest()
            if all(k in got and lane_of_version(got[k]["version"]) == "history" for k in redone):
                break
        late = [
            k for k in redone if k not in got or lane_of_version(got[k]["version"]) != "history"
        ]
        assert not late, (late[:5], lanes.history.diagnosis())
        got = lanes.wait_for({("acme", *k) for k in closed} | redone)
        lanes.stored()
        raw = lanes.raw_events("acme")
        copied = lanes.metric(1, "rhythm_processor_history_copies_total")
        lost = lanes.metric(1, 'rhythm_processor_late_events_total{outcome="too_late"}')
        corrected = lanes.metric(1, 'rhythm_processor_late_events_total{outcome="corrected"}')
    finally:
        for proc in procs:
            stop_group(proc, 30.0)
    # every closed window, live or re-emitted, is the sorted computation over all events
    check(got, reference)
    # among them windows holding both live and history events, of both kinds
    mixed = set(tenant_reference("acme", live.events)) & set(touched)
    assert {k[5] < base - 2 * DAY for k in mixed} == {True, False}
    assert mixed <= redone
    assert (lost, corrected) == (0, 0)  # the history lane placed all of it in order
    assert copied > 0
    # each event once in the raw rows: live, imported and routed alike
    assert raw == {e["event_id"]: 1 for e in everything}


def _events(tenant: str, account: str, stamps: list[int]) -> list[dict[str, Any]]:
    actor = {"type": "account", "id": account}
    return [
        {
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{account}/{ts}")),
            "tenant": tenant,
            "occurred_at": iso(ts),
            "actor": actor,
            "verb": "purchased",
            "channel": "web",
        }
        for ts in stamps
    ]


def _live_settings(lanes: Lanes) -> ProcessorSettings:
    """The live worker's settings, as it reads them from its environment."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in lanes.live.env().items():
            if name.startswith("RHYTHM_PROCESSOR_"):
                env.setenv(name, value)
        return ProcessorSettings()


def _one_sequence(lanes: Lanes, account: str, stamps: list[int], end: int) -> set[tuple[str, int]]:
    """The alerts of one stage-2 partition given the entity's whole sequence at once, with
    the workers' settings: no lanes, no hand-off (the rule's own code, in process)."""
    s = _live_settings(lanes)
    proc = Stage2Partition(0, 1, s.signal_config(), s.reply_config(), s.alert_policy())
    key = EntityKey("norms", "actor", "account", account).encode()
    got = []
    for message in (
        {"p": 0, "u": [[key, ts, 1.0, 0, i] for i, ts in enumerate(stamps)], "wm": stamps[-1]},
        {"p": 0, "wm": end},
    ):
        got += [(a["kind"], a["fired_at"]) for a in proc.apply(message).alerts]  # type: ignore[arg-type]
    return set(got)


def _norms_messages(lanes: Lanes) -> list[Any]:
    out = []
    for m in read_topic(lanes.live.bootstrap, lanes.live.topics["updates"], 0, timeout=5):
        value = json.loads(payload(m))
        if value.get("n"):
            out.append(m)
    return out


def _wait_metric(lanes: Lanes, lane: int, name: str, at_least: float, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    value = 0.0
    while time.monotonic() < deadline:
        try:
            value = lanes.metric(lane, name)
        except OSError:
            value = 0.0  # restarting
        if value >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError(
        f"{name} = {value} < {at_least}\nlive: {lanes.live.diagnosis()}\nhistory: "
        f"{lanes.history.diagnosis()}"
    )


def _history_applied_new_flushes(lanes: Lanes, timeout: float = 120) -> None:
    """Wait until the history lane's stage 2 has applied messages sent after now (while idle,
    its stage 1 sends a flush every tick: each is a chance to hand off)."""
    topic = lanes.history.topics["updates"]
    consumer = Consumer({"bootstrap.servers": lanes.live.bootstrap, "group.id": lanes.history.name})
    try:
        tps = [TopicPartition(topic, p) for p in range(4)]
        start = [consumer.get_watermark_offsets(tp, 5)[1] for tp in tps]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [tp.offset for tp in consumer.committed(tps, timeout=10)]
            if all(d > e for d, e in zip(done, start, strict=True)):
                return
            time.sleep(0.2)
    finally:
        consumer.close()
    raise AssertionError(f"the history lane applied nothing new\n{lanes.history.diagnosis()}")


@pytest.mark.long  # minutes of a wall-clock live stream: `make test-faults` runs it
@pytest.mark.parametrize(
    "imports", [1, pytest.param(2, marks=pytest.mark.long)], ids=["one-import", "two-imports"]
)
def test_norms_learned_from_a_backfill_let_the_live_lane_alert_the_silence_once(
    lanes: Lanes, tmp_path: Path, imports: int
) -> None:
    # Two imports: the history in two parts, oldest first, each handed off when it is done;
    # the second's norms (the whole history) replace the first's in the live lane. They are
    # cut at a midnight (UTC): the lane closes the whole day of an import's last event.
    # In seconds, so the quiet after the live events is a silence within minutes: a day of
    # ten-second history (the rule scores gaps once history spans a day), up to a minute
    # ago; the live lane's lateness 30 s
    # (and windows of 10 s kept 10 s: `rhythm backfill` leaves out history in windows the
    # live lane may still change, and this history reaches up to a minute ago)
    lanes.live.extra_env |= {
        "RHYTHM_PROCESSOR_LATENESS_S": "30", "RHYTHM_PROCESSOR_WINDOW_SECONDS": "[10]",
        "RHYTHM_PROCESSOR_LATE_RETENTION_S": "10",
    }  # fmt: skip
    now = int(time.time() * 1000)
    rng = random.Random(41)
    history, t = [], now - 26 * HOUR
    while t < now - MIN:
        history.append(t)
        t += int(10_000 * rng.uniform(0.7, 1.3))
    procs = lanes.start()
    try:
        lanes.live.send(_events("warmup", "w", [now]))  # the live lane is up
        _wait_metric(lanes, 0, "rhythm_processor_events_total", 1)
        middle = history[len(history) // 2]
        midnight = middle - middle % DAY  # the span is over a day: one is inside it
        if midnight <= history[0]:
            midnight += DAY
        parts = [history] if imports == 1 else [
            [t for t in history if t < midnight], [t for t in history if t >= midnight]
        ]  # fmt: skip
        for part, part_of in enumerate(parts):
            assert part_of
            backfill(lanes, _events("norms", "a-1", part_of), tmp_path)
            _wait_metric(lanes, 0, 'rhythm_processor_norms_total{outcome="adopted"}', part + 1)
        live = []
        for _ in range(3):  # live, on time: stamped as sent, ten seconds apart
            live.append(int(time.time() * 1000))
            lanes.live.send(_events("norms", "a-1", live[-1:]) + _events("norms", "a-2", live[-1:]))
            time.sleep(10)  # the entity's pace, not a wait for anything
        expected = _one_sequence(lanes, "a-1", history + live, live[-1] + HOUR)
        assert [k for k, _ in expected].count("silence") >= 1, expected  # the scenario holds
        assert _one_sequence(lanes, "a-2", live, live[-1] + HOUR) == set()  # too short alone
        deadline = time.monotonic() + 420
        mine: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            mine = [a for a in lanes.alerts() if a["tenant"] == "norms"]
            if {(a["kind"], a["fired_at"]) for a in mine} >= expected:
                break
        # restarts: the history lane must not hand off again; the live lane, given the same
        # norms again (as a restart re-reading its input would), must not take them twice
        for proc in procs:
            stop_group(proc, 30.0)
        sent = _norms_messages(lanes)
        procs = [lanes.live.start(), lanes.history.start()]
        again = sent[0]
        producer = Producer({"bootstrap.servers": lanes.live.bootstrap})
        producer.produce(again.topic(), again.value(), partition=again.partition())
        assert producer.flush(30) == 0
        _wait_metric(lanes, 0, 'rhythm_processor_norms_total{outcome="overlap"}', 1)
        _history_applied_new_flushes(lanes)
        mine = [a for a in lanes.alerts() if a["tenant"] == "norms"]
        resent = _norms_messages(lanes)
    finally:
        for proc in procs:
            stop_group(proc, 30.0)
    got = [(a["kind"], a["entity_id"], a["fired_at"]) for a in mine if not a.get("historical")]
    # the live lane alerted what one sequence of history and live events says, when it says,
    # once each (raw messages counted); nothing for the entity without history
    everything = sorted((a["kind"], a["fired_at"], a.get("historical")) for a in mine)
    assert sorted(got) == sorted((k, "a-1", at) for k, at in expected), everything
    assert len(got) == len(set(got))
    # the restarted history lane sent nothing new
    assert len(sent) == imports and len(resent) == imports + 1


def _message(
    tenant: str, thread: str, ts: int, actor: tuple[str, str], verb: str
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{thread}/{ts}/{verb}")),
        "tenant": tenant, "occurred_at": iso(ts), "actor": {"type": actor[0], "id": actor[1]},
        "verb": verb, "channel": "email", "context_id": thread,
    }  # fmt: skip


def _unanswered_in_one_sequence(lanes: Lanes, events: list[dict[str, Any]]) -> set[Any]:
    """The `unanswered` alerts the rule's own code gives these messages as one sequence in
    time order, with the live worker's settings (no lanes, no hand-off)."""
    s = _live_settings(lanes)
    conv = Conversations(s.reply_config(), s.alert_policy())
    for i, e in enumerate(sorted(events, key=ms_of)):
        a = e["actor"]
        message = ContextMessage(ms_of(e), (a["type"], a["id"]), "email", e["verb"], "", 0, i)
        conv.add(f"{e['tenant']}/{e['context_id']}", e["tenant"], e["context_id"], message)
    last = max(ms_of(e) for e in events)
    return {(a.kind, a.tenant, a.context_id, a.fired_at_ms) for a in conv.advance(last + DAY)}


def test_reply_norms_learned_from_a_backfill_let_the_live_lane_alert_at_once(
    lanes: Lanes, tmp_path: Path
) -> None:
    # Seconds, not hours: the history's replies come 2-6 s after the customer's message, so
    # a live message with no reply is overdue within seconds; live lateness 10 s (and 10 s
    # windows kept 10 s: `rhythm backfill` leaves out history the live lane may still change)
    lanes.live.extra_env |= {
        "RHYTHM_PROCESSOR_LATENESS_S": "10", "RHYTHM_PROCESSOR_WINDOW_SECONDS": "[10]",
        "RHYTHM_PROCESSOR_LATE_RETENTION_S": "10",
    }  # fmt: skip
    now = int(time.time() * 1000)
    rng = random.Random(43)
    history = []
    for i in range(30):  # a day of answered threads, up to ten minutes ago
        t = now - DAY + i * (DAY - 10 * MIN) // 30
        customer, reply = ("customer", f"c-{i}"), t + rng.randrange(2_000, 6_000)
        history.append(_message("replies", f"h-{i}", t, customer, "wrote"))
        history.append(_message("replies", f"h-{i}", reply, ("employee", "e-1"), "replied"))
    procs = lanes.start()
    try:
        lanes.live.send(_events("warmup", "w", [now]))  # the live lane is up
        _wait_metric(lanes, 0, "rhythm_processor_events_total", 1)
        backfill(lanes, history, tmp_path)
        _wait_metric(lanes, 1, 'rhythm_processor_reply_norms_total{outcome="handed"}', 30)
        _wait_metric(lanes, 0, 'rhythm_processor_reply_norms_total{outcome="taken"}', 30)
        sent = int(time.time() * 1000)  # on time: stamped as sent; nobody answers either
        live = [_message(tenant, "live-1", sent, ("customer", "c-live"), "wrote")
                for tenant in ("replies", "cold")]  # fmt: skip
        lanes.live.send(live)
        expected = _unanswered_in_one_sequence(lanes, history + live[:1])
        assert {(k, t) for k, t, _, _ in expected} == {("unanswered", "replies")}  # it holds
        assert _unanswered_in_one_sequence(lanes, live[1:]) == set()  # cold alone: no norms
        deadline = time.monotonic() + 180
        got: set[Any] = set()
        while time.monotonic() < deadline and not got >= expected:
            got = {
                (a["kind"], a["tenant"], a["context_id"], a["fired_at"])
                for a in lanes.alerts()
                if not a.get("historical") and a["tenant"] in ("replies", "cold")
            }
        raw = [a for a in lanes.alerts() if a["tenant"] in ("replies", "cold")]
        # a restarted live worker re-reads nothing it took; the hand-off sent again is left
        stop_group(procs[0], 30.0)
        updates = read_topic(lanes.live.bootstrap, lanes.live.topics["updates"], 0, timeout=5)
        handoff: list[Any] = [m for m in updates if json.loads(payload(m)).get("r")]
        procs[0] = lanes.live.start()
        producer = Producer({"bootstrap.servers": lanes.live.bootstrap})
        for m in handoff:
            producer.produce(m.topic(), m.value(), partition=m.partition())
        assert producer.flush(30) == 0
        _wait_metric(lanes, 0, 'rhythm_processor_reply_norms_total{outcome="overlap"}', 30)
    finally:
        for proc in procs:
            stop_group(proc, 30.0)
    # the live lane alerted when one sequence of history and live messages says, once (raw
    # messages counted), and nothing for the tenant without history
    assert got == expected, sorted(raw, key=lambda a: a["fired_at"])
    live_raw = [a for a in raw if not a.get("historical")]
    assert len(live_raw) == 1, live_raw


def test_live_replies_to_imported_messages_teach_the_reply_norms_their_delays(
    lanes: Lanes, tmp_path: Path
) -> None:
    """Customer emails imported after their replies went live: `rhythm backfill` gives the
    history lane each thread's stored (live) reply as a copy for the thread, so each
    imported wait ends with its real delay and is handed to the live lane; the waits the
    live replies opened are the live lane's and are not handed off."""
    lanes.live.extra_env |= {
        "RHYTHM_PROCESSOR_LATENESS_S": "2", "RHYTHM_PROCESSOR_WINDOW_SECONDS": "[5]",
        "RHYTHM_PROCESSOR_LATE_RETENTION_S": "2", "RHYTHM_PROCESSOR_IDLE_AFTER_S": "2",
    }  # fmt: skip
    rng = random.Random(47)
    procs = lanes.start()
    try:
        lanes.live.send(_events("warmup", "w", [int(time.time() * 1000)]))
        _wait_metric(lanes, 0, "rhythm_processor_events_total", 1)
        asked: list[dict[str, Any]] = []
        delays: dict[str, int] = {}
        for i in range(5):  # our replies, live and on time
            sent = int(time.time() * 1000)
            delays[f"t-{i}"] = rng.randrange(2_000, 6_000)
            asked.append(_message("thr", f"t-{i}", sent - delays[f"t-{i}"], ("customer", f"c-{i}"),
                                  "wrote"))  # fmt: skip
            lanes.live.send([_message("thr", f"t-{i}", sent, ("employee", "e-1"), "replied")])
            time.sleep(rng.uniform(0.5, 1.0))  # the stream's pace, not a wait for anything
        # the tenant's import reaches past the replies (its last event, in a later window)
        last = _events("thr", "a-1", [int(time.time() * 1000) + 1_000])
        # ...and is imported once the live lane is done with those windows (not routed)
        until, deadline = (ms_of(last[0]) + 10_000) / 1000, time.monotonic() + 120
        port = lanes.ports[0]
        while (scrape_min(port, "rhythm_processor_stage2_watermark_seconds") or 0) < until:
            assert time.monotonic() < deadline, lanes.live.diagnosis()
            time.sleep(0.5)
        out = backfill(lanes, asked + last, tmp_path)
        assert "wait on" not in out, out  # nothing left for later
        _wait_metric(lanes, 0, 'rhythm_processor_reply_norms_total{outcome="taken"}', 5)
        updates = read_topic(lanes.live.bootstrap, lanes.live.topics["updates"], 0, timeout=5)
    finally:
        for proc in procs:
            stop_group(proc, 30.0)
    handed: dict[str, list[int | None]] = {}
    for m in updates:
        for key, _last, waits in json.loads(payload(m)).get("r") or []:
            handed.setdefault(key.rsplit("\x1f", 1)[-1], []).extend(w[3] for w in waits)
    assert handed == {t: [d] for t, d in delays.items()}  # each imported wait once, exact


def _without_lanes(lanes: Lanes, events: list[dict[str, Any]], now: int) -> set[tuple[Any, ...]]:
    """The alerts a live lane gives these events with no backfill beside it: the stages'
    pure steps in process, one partition each, the workers' settings, the clock at `now`."""
    s = _live_settings(lanes)
    source = Stage1Partition(
        0,
        Stage1Config(
            updates_partitions=1, dedup_horizon_ms=int((s.lateness_s + s.late_retention_s) * 1000),
            lateness_ms=int(s.lateness_s * 1000), idle_after_s=s.idle_after_s,
            window_sizes_ms=tuple(w * 1000 for w in s.window_seconds),
            late_retention_ms=int(s.late_retention_s * 1000),
        ),
    )  # fmt: skip
    proc = Stage2Partition(0, 1, s.signal_config(), s.reply_config(), s.alert_policy())
    wire: list[tuple[int, bytes | None]] = [
        (i, encode_event(prepare_event(e)[0])) for i, e in enumerate(events)
    ]
    out = source.process(wire, now, 0.0)
    tick = source.tick(len(wire), now, 1e9)
    got = set()
    for part in (out, tick):
        for message in part.messages.values() if part else ():
            for alert in proc.apply(message).alerts:
                got.add((alert_id(alert), alert["kind"], alert["entity_id"], alert["fired_at"]))
    return got


class LiveStream:
    """Events stamped with the wall clock as they are sent: every event is on time, so the
    live lane's alerts depend on nothing but the events (a late one could end a silence
    the watermark had already alerted). Each entity sends every 0.5-1.5 s until its stop."""

    def __init__(self, lanes: Lanes, stops: dict[str, float]) -> None:
        settings = ClientSettings(
            kafka=KafkaSettings(bootstrap_servers=lanes.live.bootstrap),
            topic=lanes.live.topics["events"],
        )
        self.client = Client(settings)
        self.stops = stops  # entity -> wall time it stops at (inf: never)
        self.next = dict.fromkeys(stops, time.time())
        self.rng = random.Random(53)
        self.sent: list[dict[str, Any]] = []

    def run_until(self, done: Callable[[], bool]) -> None:
        while not done():
            now = time.time()
            for entity, at in self.next.items():
                if at <= now < self.stops[entity]:
                    ms = int(time.time() * 1000)
                    event = {
                        "event_id": str(uuid.UUID(int=self.rng.getrandbits(128))),
                        "tenant": "live", "occurred_at": iso(ms),
                        "actor": {"type": "account", "id": entity}, "verb": "viewed",
                    }  # fmt: skip
                    self.client.send(event)
                    self.sent.append(event)
                    self.next[entity] = now + self.rng.uniform(0.5, 1.5)
            self.client.flush(0)
            time.sleep(0.01)  # the stream's pace


@pytest.mark.long  # minutes of a wall-clock live stream: `make test-faults` runs it
def test_live_windows_close_and_alerts_fire_during_a_backfill_as_without_it(
    lanes: Lanes, tmp_path: Path
) -> None:
    # seconds, not hours: 10 s windows, 2 s lateness, a silence judged after a minute of history
    lanes.live.extra_env |= {
        "RHYTHM_PROCESSOR_WINDOW_SECONDS": "[10]", "RHYTHM_PROCESSOR_LATENESS_S": "2",
        "RHYTHM_PROCESSOR_SILENCE_MIN_S": "3", "RHYTHM_PROCESSOR_SILENCE_MIN_SPAN_S": "60",
    }  # fmt: skip
    now = int(time.time() * 1000)
    # a history large enough to take tens of seconds here: windows close while it runs
    past = generate(now - now % DAY - 6 * DAY, seed=52, days=14, users=48, tenant="past")
    start = time.time() + 5
    stops = {"steady-1": math.inf, "steady-2": math.inf, "steady-3": math.inf}
    stops |= {"quiet-1": start + 80, "quiet-2": start + 90}  # then silent
    procs = lanes.start()
    stream = LiveStream(lanes, stops)
    try:
        stream.run_until(lambda: time.time() >= start + 95)
        # when the quiet accounts' silences are due, by the rule over what was sent
        judged = _without_lanes(lanes, stream.sent, now=10**13)
        due = sorted(a[3] for a in judged if a[1] == "silence" and a[2].startswith("quiet"))
        assert len(due) == 2, due  # the scenario holds: both quiet accounts alert
        # the import starts just before the first is due (its close: due + lateness)
        stream.run_until(lambda: time.time() * 1000 >= due[0] + 2000 - 3000)
        failed: list[BaseException] = []

        def importer() -> None:
            try:
                backfill(lanes, past.arrivals, tmp_path)
            except BaseException as exc:  # the test's thread must see it
                failed.append(exc)

        importing = threading.Thread(target=importer)
        began = time.time() * 1000
        importing.start()
        stream.run_until(lambda: not importing.is_alive())
        ended = time.time() * 1000
        assert not failed, failed
        stream.run_until(lambda: time.time() * 1000 >= max(ended, due[-1]) + 10_000)
        stream.client.close()
        end = ms_of(stream.sent[-1])
        expected = {a for a in _without_lanes(lanes, stream.sent, now=end) if a[3] <= end}
        deadline = time.monotonic() + 120
        mine: set[tuple[Any, ...]] = set()
        while time.monotonic() < deadline and not mine >= expected:
            alerts = read_topic(lanes.live.bootstrap, lanes.live.topics["alerts"], 0, timeout=5)
            got = [(json.loads(payload(m)), m.timestamp()[1]) for m in alerts]
            mine = {
                (a["alert_id"], a["kind"], a["entity_id"], a["fired_at"])
                for a, _ in got
                if a["tenant"] == "live" and a["fired_at"] <= end
            }
        signals = read_topic(lanes.live.bootstrap, lanes.live.topics["signals"], 0, timeout=5)
    finally:
        for proc in procs:
            stop_group(proc, 30.0)

    def during(messages: list[tuple[dict[str, Any], int]]) -> int:
        return sum(1 for v, at in messages if v["tenant"] == "live" and began <= at <= ended)

    assert ended - began > 10_000  # a backfill long enough to see windows close in it
    # live windows kept closing and live alerts kept firing while the history lane imported
    assert during([(json.loads(payload(m)), m.timestamp()[1]) for m in signals]) > 0
    assert during(got) > 0, (began, ended, due)
    # the same alerts (ids, event times) as the live lane's rule gives without a backfill
    assert mine == expected
    assert not any(a.get("historical") for a, _ in got if a["tenant"] == "live")

"""The processors on the real broker: generated workload in, signals and alerts out, checked
against an independent computation; then the same with the worker SIGKILLed twice."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from rhythm.processors.explode import partition_for
from rhythm.producers import Client, ClientSettings, KafkaSettings
from rhythm.runtime.process import stop_group
from rhythm.schemas import dead_letters
from rhythm.schemas.keys import SEP
from rhythm.schemas.rules import (
    MAX_ENTITY_LEN,
    MAX_PROPERTIES,
    MAX_PROPERTY_KEY_LEN,
    MAX_PROPERTY_STRING_LEN,
    MAX_REF_LEN,
    MAX_TAGS,
)
from rhythm.stack.ports import free_port

from .conftest import payload, read_topic
from .workload import DAY, HOUR, Workload, generate, iso, ms_of, reference_signals

pytestmark = pytest.mark.integration

LATENESS_MS = 300_000
WINDOWS_MS = (HOUR, DAY)


@dataclass
class Pipeline:
    bootstrap: str
    name: str
    home: Path
    log_level: str = os.environ.get("RHYTHM_TEST_PROCESSOR_LOG_LEVEL", "warn")
    extra_env: dict[str, str] = field(default_factory=dict)  # a test's own settings

    @property
    def topics(self) -> dict[str, str]:
        return {
            "events": f"{self.name}.events",
            "signals": f"{self.name}.signals",
            "alerts": f"{self.name}.alerts",
            "updates": f"{self.name}.updates",
            "dead": f"{self.name}.dead",
        }

    def create_topics(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        specs = [
            NewTopic(self.topics["events"], 4, 1),
            NewTopic(self.topics["signals"], 4, 1),
            NewTopic(self.topics["alerts"], 2, 1),
            NewTopic(self.topics["dead"], 1, 1),
        ]
        for future in admin.create_topics(specs).values():
            future.result(30)

    def env(self) -> dict[str, str]:
        t = self.topics
        return (
            dict(
                os.environ,
                RHYTHM_KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
                RHYTHM_PROCESSOR_APP_ID=self.name,
                RHYTHM_PROCESSOR_DATA_DIR=str(self.home / "state"),
                RHYTHM_PROCESSOR_EVENTS_TOPIC=t["events"],
                RHYTHM_PROCESSOR_UPDATES_TOPIC=t["updates"],
                RHYTHM_PROCESSOR_SIGNALS_TOPIC=t["signals"],
                RHYTHM_PROCESSOR_ALERTS_TOPIC=t["alerts"],
                RHYTHM_PROCESSOR_DEAD_LETTERS_TOPIC=t["dead"],
                RHYTHM_PROCESSOR_WEB_PORT="0",
                RHYTHM_PROCESSOR_METRICS_PORT="0",
                RHYTHM_PROCESSOR_SESSION_TIMEOUT_S="6",
                RHYTHM_PROCESSOR_TICK_S="0.5",
                RHYTHM_PROCESSOR_IDLE_AFTER_S="3",
                RHYTHM_PROCESSOR_REPLY_HORIZON_S=str(6 * 3600),
                # The workload is three round-the-clock days: a calendar of every hour, and
                # silence alerts after an hour of history instead of a week.
                RHYTHM_PROCESSOR_WORKING_DAYS="[0,1,2,3,4,5,6]",
                RHYTHM_PROCESSOR_WORKING_HOURS="[0,24]",
                RHYTHM_PROCESSOR_SILENCE_MIN_SPAN_S="3600",
                # Raise it to find out why a run failed (CI keeps the quiet default).
                RHYTHM_PROCESSOR_LOG_LEVEL=self.log_level,
            )
            | self.extra_env
        )

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.home / "processor.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "rhythm.stack.cli", "processors"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def send(self, events: list[dict[str, Any]]) -> None:
        settings = ClientSettings(
            kafka=KafkaSettings(bootstrap_servers=self.bootstrap), topic=self.topics["events"]
        )
        with Client(settings) as client:
            for event in events:
                client.send(event)
            assert client.flush(60) == 0

    def latest_signals(self, expected: int = 0, timeout: float = 5.0) -> dict[tuple[Any, ...], Any]:
        """The highest version of every signal emitted so far."""
        out: dict[tuple[Any, ...], Any] = {}
        for m in read_topic(self.bootstrap, self.topics["signals"], expected, timeout=timeout):
            s = json.loads(payload(m))
            key = (
                s["role"],
                s["entity_type"],
                s["entity_id"],
                s["window_seconds"],
                s["window_start"],
            )
            if key not in out or out[key]["version"] < s["version"]:
                out[key] = s
        return out

    def emitted(self) -> int:
        """Signal messages so far (end offsets: cheap enough to poll in a tight loop)."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.name})
        try:
            return sum(
                consumer.get_watermark_offsets(TopicPartition(self.topics["signals"], p), 5)[1]
                for p in range(4)
            )
        finally:
            consumer.close()

    def offsets(self) -> str:
        """Committed against end offsets of the worker's inputs, for a failure message."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.name})
        try:
            lines = []
            for topic in (self.topics["events"], self.topics["updates"]):
                tps = [TopicPartition(topic, p) for p in range(4)]
                for tp in consumer.committed(tps, timeout=10):
                    end = consumer.get_watermark_offsets(tp, 5)[1]
                    lines.append(f"{topic}[{tp.partition}] committed {tp.offset} end {end}")
            return "\n".join(lines)
        except Exception as exc:  # a diagnostic must not hide the real failure
            return f"offsets unavailable: {exc!r}"
        finally:
            consumer.close()

    def diagnosis(self) -> str:
        """Committed and end offsets of the inputs and the worker's last log lines, for a
        failure message."""
        log = self.home / "processor.log"
        tail = log.read_text(errors="replace").splitlines()[-40:] if log.exists() else []
        return self.offsets() + "\nprocessor log, last lines:\n" + "\n".join(tail)

    def alerts(self) -> set[tuple[str, str, str, str, str | None, int]]:
        messages = read_topic(self.bootstrap, self.topics["alerts"], 0, timeout=5)
        alerts = [json.loads(payload(m)) for m in messages]
        return {
            (a["kind"], a["role"], a["entity_type"], a["entity_id"], a["context_id"], a["fired_at"])
            for a in alerts
        }


def expected_closed(
    reference: dict[tuple[str, str, str, int, int], Any], before_ms: int
) -> set[tuple[str, str, str, int, int]]:
    return {k for k in reference if k[4] + k[3] * 1000 + LATENESS_MS <= before_ms}


def wait_for_windows(
    pipeline: Pipeline, keys: set[tuple[Any, ...]], timeout: float = 240
) -> dict[tuple[Any, ...], Any]:
    deadline = time.monotonic() + timeout
    seen: dict[tuple[Any, ...], Any] = {}
    while time.monotonic() < deadline:
        seen = pipeline.latest_signals(len(keys), timeout=5)
        if keys <= set(seen):
            return seen
    missing = sorted(keys - set(seen))[:5]
    raise AssertionError(
        f"{len(keys - set(seen))} windows never emitted, e.g. {missing}\n" + pipeline.diagnosis()
    )


def check_signals(got: dict[tuple[Any, ...], Any], reference: dict[tuple[Any, ...], Any]) -> None:
    for key, s in got.items():
        assert key in reference, f"a signal for a window with no events: {key}"
        ref = reference[key]
        gaps = ref["gaps"]
        assert s["event_count"] == ref["event_count"], key
        assert s["weight_sum"] == pytest.approx(ref["weight_sum"], rel=1e-9), key
        assert s["weight_max"] == ref["weight_max"], key
        assert s["gap_count"] == len(gaps), key
        if gaps:
            assert s["gap_min_s"] == min(gaps) / 1000, key
            assert s["gap_max_s"] == max(gaps) / 1000, key
            assert s["gap_mean_s"] == pytest.approx(sum(gaps) / len(gaps) / 1000), key
        else:
            assert s["gap_min_s"] is None and s["gap_mean_s"] is None, key


def check_alerts(alerts: set[tuple[str, str, str, str, str | None, int]], w: Workload) -> None:
    actors = {(a[2], a[3]) for a in alerts if a[0] == "silence" and a[1] == "actor"}
    assert {i for t, i in actors if t == "account"} == w.silent_accounts
    assert {i for t, i in actors if t == "user"} & w.steady_entities == set()
    waiting = {a[4] for a in alerts if a[0] == "unanswered"}
    assert w.unanswered_threads <= waiting
    assert waiting & w.answered_threads == set()
    assert waiting & w.chat_threads == set()


@pytest.fixture
def pipeline(kafka_broker: Any, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_broker.bootstrap, f"proc-{uuid.uuid4().hex[:8]}", tmp_path)
    p.create_topics()
    yield p


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_group(proc, 30.0)


def test_signals_and_alerts_equal_an_independent_computation(pipeline: Pipeline) -> None:
    now = int(time.time() * 1000)
    w = generate(now)
    reference = reference_signals(w.events, WINDOWS_MS)
    proc = pipeline.start()
    try:
        pipeline.send(w.arrivals)
        got = wait_for_windows(pipeline, expected_closed(reference, now - 60_000))
    finally:
        _stop(proc)
    check_signals(got, reference)
    check_alerts(pipeline.alerts(), w)


def test_a_worker_killed_twice_gives_the_same_results(kafka_broker: Any, tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    w = generate(now, seed=23, users=40)
    reference = reference_signals(w.events, WINDOWS_MS)
    closed = expected_closed(reference, now - 60_000)

    calm = Pipeline(kafka_broker.bootstrap, f"calm-{uuid.uuid4().hex[:8]}", tmp_path / "calm")
    calm.home.mkdir()
    calm.create_topics()
    proc = calm.start()
    try:
        calm.send(w.arrivals)
        calm_signals = wait_for_windows(calm, closed)
    finally:
        _stop(proc)
    calm_alerts = calm.alerts()

    hurt = Pipeline(kafka_broker.bootstrap, f"hurt-{uuid.uuid4().hex[:8]}", tmp_path / "hurt")
    hurt.home.mkdir()
    hurt.create_topics()
    # Everything is published first, so the worker always has input waiting: a pause between
    # sends longer than the idle rule would (rightly) make the rest late, which is not what
    # this test is about. The kills come while the worker is working through it.
    hurt.send(w.arrivals)
    proc = hurt.start()
    seen_at_kills: list[int] = []
    try:
        for share in (0.1, 0.4):
            deadline = time.monotonic() + 120
            while hurt.emitted() < share * len(closed):
                assert time.monotonic() < deadline, "the worker made no progress"
            os.killpg(proc.pid, signal.SIGKILL)
            seen_at_kills.append(hurt.emitted())
            proc.wait(10)
            proc = hurt.start()
        hurt_signals = wait_for_windows(hurt, closed)
    finally:
        _stop(proc)

    assert seen_at_kills[0] < len(closed)  # the first kill really came mid-stream
    check_signals(hurt_signals, reference)
    for key in closed:
        hurt_s, calm_s = dict(hurt_signals[key]), dict(calm_signals[key])
        # Float sums may differ in the last bit with the order events were added in.
        assert hurt_s.pop("weight_sum") == pytest.approx(calm_s.pop("weight_sum"), rel=1e-12)
        assert hurt_s == calm_s, key
    check_alerts(calm_alerts, w)
    assert hurt.alerts() == calm_alerts


def test_a_static_member_killed_mid_stream_takes_its_partitions_back_at_once(
    kafka_broker: Any, tmp_path: Path
) -> None:
    """With an instance id (Kafka static membership) a worker SIGKILLed mid-stream and started
    again is given its partitions back at once: its session (90 s here, the most Faust allows)
    never has to expire, which is what holds a restarted dynamic member for the session
    timeout. The results stay exact."""
    now = int(time.time() * 1000)
    w = generate(now, seed=31, users=40)
    reference = reference_signals(w.events, WINDOWS_MS)
    closed = expected_closed(reference, now - 60_000)
    name = f"static-{uuid.uuid4().hex[:8]}"
    p = Pipeline(
        kafka_broker.bootstrap,
        name,
        tmp_path,
        extra_env={
            "RHYTHM_PROCESSOR_SESSION_TIMEOUT_S": "90",
            "RHYTHM_PROCESSOR_INSTANCE_ID": f"{name}-0",
        },
    )
    p.create_topics()
    p.send(w.arrivals)
    proc = p.start()
    try:
        deadline = time.monotonic() + 120
        while p.emitted() < 0.2 * len(closed):
            assert proc.poll() is None, f"the worker exited ({proc.returncode})\n" + p.diagnosis()
            assert time.monotonic() < deadline, "the worker made no progress\n" + p.diagnosis()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        killed_at = p.emitted()
        proc = p.start()
        # Less than the session timeout: a dynamic member would still be waiting.
        got = wait_for_windows(p, closed, timeout=60)
    finally:
        _stop(proc)
    assert killed_at < len(closed)  # the kill came mid-stream
    check_signals(got, reference)


def _wait_for_log(path: Path, start: int, text: str, proc: subprocess.Popen[bytes]) -> str:
    """The worker's log from byte `start` once it contains `text`."""
    deadline = time.monotonic() + 120
    while True:
        tail = path.read_bytes()[start:].decode(errors="replace")
        if text in tail:
            return tail
        assert proc.poll() is None, "the worker exited"
        assert time.monotonic() < deadline, f"the worker never logged {text!r}"
        time.sleep(0.01)  # a poll interval on the worker's log


def test_a_worker_killed_while_recovering_its_state_gives_the_same_results(
    kafka_broker: Any, tmp_path: Path
) -> None:
    """SIGKILL mid-stream, then SIGKILL of the next worker while it restores its tables from
    the changelogs: the third worker's signals equal the independent computation and the
    planted alerts are all there, none extra."""
    now = int(time.time() * 1000)
    w = generate(now, seed=37, users=60)
    reference = reference_signals(w.events, WINDOWS_MS)
    closed = expected_closed(reference, now - 60_000)
    p = Pipeline(kafka_broker.bootstrap, f"recov-{uuid.uuid4().hex[:8]}", tmp_path)
    p.log_level = "info"  # Faust's recovery service says when it starts and completes
    p.create_topics()
    p.send(w.arrivals)
    log = p.home / "processor.log"
    proc = p.start()
    try:
        deadline = time.monotonic() + 120
        while p.emitted() < 0.3 * len(closed):
            assert time.monotonic() < deadline, "the worker made no progress"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        start = log.stat().st_size
        proc = p.start()
        _wait_for_log(log, start, "[^---Recovery]: Starting...", proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        tail = log.read_bytes()[start:].decode(errors="replace")
        assert "Recovery complete" not in tail  # it was killed in the middle of recovery
        proc = p.start()
        got = wait_for_windows(p, closed)
    finally:
        _stop(proc)
    check_signals(got, reference)
    check_alerts(p.alerts(), w)


@pytest.mark.long
def test_a_worker_killed_many_times_gives_the_same_results(
    kafka_broker: Any, tmp_path: Path
) -> None:
    """A dozen SIGKILLs while the worker works through its input (each after some progress,
    at a random moment), then one run to the end: every closed window and alert equals the
    independent computation. `make test-faults` runs it."""
    now = int(time.time() * 1000)
    w = generate(now, seed=29, users=int(os.environ.get("RHYTHM_TEST_KILL_USERS", "200")))
    reference = reference_signals(w.events, WINDOWS_MS)
    closed = expected_closed(reference, now - 60_000)
    hurt = Pipeline(kafka_broker.bootstrap, f"kills-{uuid.uuid4().hex[:8]}", tmp_path)
    hurt.create_topics()
    hurt.send(w.arrivals)
    rng = random.Random(int(os.environ.get("RHYTHM_TEST_KILL_SEED", "7")))
    kills = int(os.environ.get("RHYTHM_TEST_KILLS", "12"))
    proc = hurt.start()
    try:
        for i in range(kills):
            # Each worker must show progress of its own before it is killed, else a kill
            # during the previous one's start-up would only test the group join.
            floor = hurt.emitted() + rng.randrange(1, max(2, len(closed) // (2 * kills)))
            deadline = time.monotonic() + 120
            while hurt.emitted() < floor:
                assert proc.poll() is None, f"worker {i} exited by itself ({proc.returncode})"
                assert time.monotonic() < deadline, f"worker {i} made no progress in 120 s"
                time.sleep(0.05)  # polling the topic's end offsets, not waiting for a result
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            proc = hurt.start()
        hurt_signals = wait_for_windows(hurt, closed)
    finally:
        _stop(proc)
    check_signals(hurt_signals, reference)
    check_alerts(hurt.alerts(), w)


def test_poison_on_the_updates_topic_is_dead_lettered_and_the_partitions_go_on(
    pipeline: Pipeline,
) -> None:
    """Messages on the internal updates topic that stage 2 cannot apply (not JSON, the wrong
    shape, wrong types) go to the dead letters with their offsets; every window of the real
    workload is still emitted exactly."""
    now = int(time.time() * 1000)
    w = generate(now, seed=31, users=6, threads=20)
    reference = reference_signals(w.events, WINDOWS_MS)
    proc = pipeline.start()
    try:
        admin = AdminClient({"bootstrap.servers": pipeline.bootstrap})
        deadline = time.monotonic() + 60  # the worker creates its internal topic at start
        while pipeline.topics["updates"] not in admin.list_topics(timeout=10).topics:
            assert time.monotonic() < deadline, "the worker never created its updates topic"
            time.sleep(0.2)  # a poll interval: the loop waits on the topic's existence
        poison = [b"not json at all", b'{"p": 0, "u": [["k", "noon", 1.0, 0, 1]]}', b"[1, 2]"]
        producer = Producer({"bootstrap.servers": pipeline.bootstrap})
        for partition in range(4):
            for value in poison:
                producer.produce(pipeline.topics["updates"], value, partition=partition)
        assert producer.flush(30) == 0
        pipeline.send(w.arrivals)
        got = wait_for_windows(pipeline, expected_closed(reference, now - 60_000))
    finally:
        _stop(proc)
    check_signals(got, reference)
    messages = read_topic(pipeline.bootstrap, pipeline.topics["dead"], 12)
    dead = [(dead_letters.read(m.headers()), m.value()) for m in messages]
    refused = [(d, value) for d, value in dead if d.reason == "invalid_update"]
    assert len(refused) == 12, dead
    assert {(d.topic, d.partition) for d, _ in refused} == {
        (pipeline.topics["updates"], p) for p in range(4)
    }
    assert all(d.offset is not None and d.offset >= 0 for d, _ in refused)
    assert {value for _, value in refused} == set(poison)  # as it came, untouched


def test_a_flooding_tenant_is_aggregated_and_the_other_tenants_stay_exact(
    pipeline: Pipeline,
) -> None:
    """Tenant `noisy` sends 300 events/s for 4 minutes of event time (72,000) against a
    budget of 6,000 a minute, among the workload's tenant: the flood's counts, sums and
    maxima are exact in every window, every other entity's signals equal the independent
    computation (gaps included), and the worker says so in its log and metrics."""
    port = free_port()
    pipeline.extra_env.update(
        RHYTHM_PROCESSOR_TENANT_BUDGET_PER_MIN="6000", RHYTHM_PROCESSOR_METRICS_PORT=str(port)
    )
    now = int(time.time() * 1000)
    w = generate(now, seed=43, users=6, threads=20)
    rng = random.Random(5)
    start = (now - HOUR) // HOUR * HOUR - HOUR - 2 * 60_000  # straddles an hour boundary
    flood = [
        {
            "event_id": str(uuid.UUID(int=(9 << 100) + i)),
            "tenant": "noisy",
            "occurred_at": iso(start + i * 10 // 3),
            "actor": {"type": "service", "id": "flood-bot"},  # one events partition
            "verb": "synced",
            "object": {"type": "channel", "id": f"flood-{rng.randrange(3)}"},
            "weight": rng.choice((1.0, 2.0, 3.5)),
        }
        for i in range(72_000)
    ]
    reference = reference_signals(w.events + flood, WINDOWS_MS)
    arrivals = sorted(
        [(ms_of(e), 0, i, e) for i, e in enumerate(w.arrivals)]
        + [(ms_of(e), 1, i, e) for i, e in enumerate(flood)],
        key=lambda x: x[:3],
    )
    proc = pipeline.start()
    try:
        pipeline.send([e for _, _, _, e in arrivals])
        keys = expected_closed(reference, now - 60_000)
        got = wait_for_windows(pipeline, keys, timeout=300)
        assert proc.poll() is None, "the worker exited"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
    finally:
        _stop(proc)
    flooded = {k: s for k, s in got.items() if k[2].startswith("flood")}
    check_signals({k: s for k, s in got.items() if k not in flooded}, reference)
    # The bot and its three objects, in every window that closed: the two hour windows the
    # four minutes straddle, and a day window too when the day has ended.
    assert set(flooded) >= {k for k in keys if k[2].startswith("flood")}
    assert {k[2] for k in flooded} == {"flood-bot", "flood-0", "flood-1", "flood-2"}
    for key, s in flooded.items():
        ref = reference[key]
        assert s["event_count"] == ref["event_count"], key
        assert s["weight_sum"] == pytest.approx(ref["weight_sum"], rel=1e-9), key
        assert s["weight_max"] == ref["weight_max"], key
    degraded = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("rhythm_processor_degraded_events_total ")
    ]
    assert degraded and degraded[0] >= 72_000 - 5 * 6_000, degraded  # 4 min over <= 5 minutes
    log = (pipeline.home / "processor.log").read_text(errors="replace")
    assert "tenant 'noisy' is over its budget" in log


def _at_the_maxima(now: int, n: int) -> list[dict[str, Any]]:
    """Events with every id, tag and property as large as the contract allows."""
    rng = random.Random(5)
    long = "x" * MAX_ENTITY_LEN
    events = []
    for i in range(n):
        ts = now - 3 * HOUR + i * 1000
        events.append(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "tenant": "t" * 64,
                "occurred_at": iso(ts),
                "actor": {"type": "u" * MAX_ENTITY_LEN, "id": long[:-3] + f"{i % 7:03d}"},
                "verb": "v" * 64,
                "object": {"type": "o" * MAX_ENTITY_LEN, "id": long},
                "target": {"type": "g" * MAX_ENTITY_LEN, "id": long},
                "channel": "c" * 32,
                "context_id": "r" * MAX_REF_LEN,
                "tags": [f"{k:02d}" + "t" * 62 for k in range(MAX_TAGS)],
                "properties": {
                    f"{k:03d}" + "p" * (MAX_PROPERTY_KEY_LEN - 3): "s" * MAX_PROPERTY_STRING_LEN
                    for k in range(MAX_PROPERTIES)
                },
                "weight": 1.0,
            }
        )
    return events


def _poison_the_changelogs(pipeline: Pipeline) -> None:
    """A foreign record on each table's changelog, in the partition its key belongs to."""
    producer = Producer({"bootstrap.servers": pipeline.bootstrap})
    entity = f"acme{SEP}actor{SEP}user{SEP}poisoned"
    producer.produce(
        f"{pipeline.name}-stage2-changelog", b"{not json", entity.encode(),
        partition=partition_for(entity, 4),
    )  # fmt: skip
    for partition in range(4):
        seen = f"seen{SEP}{partition}{SEP}{0:020d}"
        producer.produce(
            f"{pipeline.name}-stage1-changelog", b"[1, 2, 3]", seen.encode(), partition=partition
        )
    assert producer.flush(30) == 0


def test_a_hot_entity_max_size_events_and_poisoned_changelogs_take_nothing_down(
    pipeline: Pipeline,
) -> None:
    """One bot at 1,000 events/s for 200 s of event time (200,000 events, in time order
    among the rest of the workload), events at the contract's maxima, and a foreign record on
    each changelog read at a restart: the worker never exits, every event is counted once,
    and every closed window of every entity (the hot ones too) equals the independent
    computation."""
    now = int(time.time() * 1000)
    w = generate(now, seed=41, users=6, threads=20)
    start = now - 2 * HOUR
    hot: list[dict[str, Any]] = []
    rng = random.Random(3)
    t = start
    for i in range(200_000):  # past MAX_PENDING (32,768) within the lateness, several times
        t += rng.choice((0, 1, 1, 2))  # ~1,000 a second, ties included
        hot.append(
            {
                "event_id": str(uuid.UUID(int=(7 << 100) + i)),
                "tenant": "acme",
                "occurred_at": iso(t),
                "actor": {"type": "service", "id": "bot-1"},
                "verb": "synced",
                "object": {"type": "channel", "id": "firehose"},
                "weight": 1.0,
            }
        )
    big = _at_the_maxima(now, 300)
    reference = reference_signals(w.events + hot + big, WINDOWS_MS)
    # Everything in event-time order (the workload's own jitter kept), the hot bot in order.
    arrivals = sorted(
        [(ms_of(e), 0, i, e) for i, e in enumerate(w.arrivals)]
        + [(ms_of(e), 1, i, e) for i, e in enumerate(hot)]
        + [(ms_of(e), 2, i, e) for i, e in enumerate(big)],
        key=lambda x: x[:3],
    )
    proc = pipeline.start()
    try:
        pipeline.send(w.arrivals[:50])
        deadline = time.monotonic() + 120
        admin = AdminClient({"bootstrap.servers": pipeline.bootstrap})
        changelogs = {f"{pipeline.name}-stage2-changelog", f"{pipeline.name}-stage1-changelog"}
        while not changelogs <= set(admin.list_topics(timeout=10).topics):
            assert time.monotonic() < deadline, "the worker never created its changelogs"
            time.sleep(0.2)  # a poll interval while the worker starts
    finally:
        _stop(proc)
    _poison_the_changelogs(pipeline)
    proc = pipeline.start()
    try:
        pipeline.send([e for _, _, _, e in arrivals])
        keys = expected_closed(reference, now - 60_000)
        got = wait_for_windows(pipeline, keys, timeout=600)
        assert proc.poll() is None, "the worker exited"
    finally:
        _stop(proc)
    check_signals(got, reference)
    hot_hours = [
        s for k, s in got.items() if k[:3] == ("actor", "service", "bot-1") and k[3] == 3600
    ]
    assert sum(s["event_count"] for s in hot_hours) == len(hot)
    assert all(s["late_count"] == 0 for s in hot_hours)
    messages = read_topic(pipeline.bootstrap, pipeline.topics["dead"], 5)
    dead = [dead_letters.read(m.headers()) for m in messages]
    assert sorted(d.topic for d in dead if d.reason == "invalid_state") == [
        f"{pipeline.name}-stage1-changelog"
    ] * 4 + [f"{pipeline.name}-stage2-changelog"], dead
    log = (pipeline.home / "processor.log").read_text(errors="replace")
    assert "hot entity" in log

"""Faults injected into the whole pipeline while it works through a generated workload:
SIGKILL of the processors, of the sink, of both; a broker restart; ClickHouse refusing writes.
Afterwards every event is in rhythm.events once, and the signals and alerts in ClickHouse equal
an independent computation (and, in the long run, an undisturbed run of the same input).

The quick run (a few thousand events, every fault once, a short ClickHouse outage) is part of
`make test`; the long one (200,000+ events, each kill several times, 30 s without ClickHouse)
is marked `long` and runs with `make test-faults`.
"""

from __future__ import annotations

import os
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException

from rhythm.stack.kafka import LocalKafka

from ..integration.test_processors import (
    WINDOWS_MS,
    Pipeline,
    check_alerts,
    check_signals,
    expected_closed,
    wait_for_windows,
)
from ..integration.workload import Workload, generate, reference_signals
from .report import REPORT, RunRow
from .stack import Ledger, Stack, own_broker

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Fault:
    at: float  # share of the closed windows emitted by the processors when it is injected
    kind: str  # kill_processors | kill_sink | kill_both | restart_broker | clickhouse_down
    seconds: float = 0.0  # clickhouse_down: how long


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of this module's own: the broker restart must not disturb other tests."""
    kafka = own_broker(tmp_path_factory.mktemp("faults-kafka"))
    try:
        yield kafka
    finally:
        kafka.down()


def inject(stack: Stack, fault: Fault, ledger: Ledger) -> None:
    if fault.kind in ("kill_processors", "kill_both"):
        stack.processors.kill()
    if fault.kind in ("kill_sink", "kill_both"):
        stack.sink.kill()
    if fault.kind in ("kill_processors", "kill_both"):
        stack.processors.start()
    if fault.kind in ("kill_sink", "kill_both"):
        stack.sink.start(120)
    if fault.kind == "restart_broker":
        stack.broker.restart()
    if fault.kind == "clickhouse_down":
        clickhouse_down(stack, fault.seconds, ledger)
        ledger.note(f"ClickHouse writes failing {fault.seconds:.0f} s")
        return
    ledger.note(
        {
            "kill_processors": "SIGKILL processors",
            "kill_sink": "SIGKILL sink",
            "kill_both": "SIGKILL processors+sink",
            "restart_broker": "broker restart",
        }[fault.kind]
    )


def clickhouse_down(stack: Stack, seconds: float, ledger: Ledger) -> None:
    """Every table the sink writes detached (through its own endpoint) for `seconds`: each
    insert fails with UNKNOWN_TABLE; the sink must hold what it has, pause, and retry.

    A sink that exits meanwhile for another reason (the fenced static member after a broker
    restart, see RELIABILITY.md) cannot notice; that is noted, and the supervisor restarts it
    once the tables are back."""
    tables = ("events", "signals", "alerts")
    client = stack.sink.admin()  # DETACH/ATTACH: the endpoint's admin
    try:
        for table in tables:
            client.command(f"DETACH TABLE rhythm.{table}")
        started = time.monotonic()
        retried = exited = False
        while time.monotonic() - started < seconds:  # the outage's length, not a wait
            exited = exited or stack.sink.proc is None or stack.sink.proc.poll() is not None
            if not exited:
                status = stack.sink.status()
                retried = retried or bool(status["retrying"])
                assert status["held_messages"] <= stack.buffer_max_rows
            time.sleep(0.5)
        if exited:  # its endpoint went with it: the store is attached again on its restart
            ledger.note("sink exited during the ClickHouse outage, restarted after it")
            supervise(stack, ledger)
            client.close()
            client = stack.sink.admin()
        for table in tables:
            client.command(f"ATTACH TABLE IF NOT EXISTS rhythm.{table}")
    finally:
        client.close()
    assert retried or exited, "the sink never noticed that ClickHouse refused its writes"


def emitted(stack: Stack) -> int:
    """Signals emitted so far; 0 while the broker (just restarted) cannot say."""
    try:
        return stack.pipeline.emitted()
    except KafkaException:
        return 0


def supervise(stack: Stack, ledger: Ledger) -> None:
    """What a supervisor (systemd, Kubernetes) does: start a component that exited again.
    Each such exit is noted in the table: a fault the stack had to recover from."""
    sink = stack.sink.proc
    if sink is not None and sink.poll() is not None:
        ledger.note(f"sink exited by itself (code {sink.returncode}), restarted")
        stack.sink.start(240)
    if not stack.processors.alive():
        ledger.note("processors exited by themselves, restarted")
        stack.processors.start()
    elif stack.processors.stalled():  # what a liveness probe does
        ledger.note("processors stalled (/healthz 503), restarted")
        stack.processors.kill()
        stack.processors.start()


def run_with_faults(
    stack: Stack, w: Workload, closed: set[tuple[Any, ...]], plan: list[Fault], ledger: Ledger
) -> None:
    # The sink first, to switch merges off on rhythm.events before any row arrives (the
    # duplicate count is on raw rows, see stored_counts); then all input, then the processors
    # (all input first: see test_a_worker_killed_twice...).
    stack.sink.start(240)
    stack.sink.keep_raw_rows()
    stack.pipeline.send(w.arrivals)
    stack.processors.start()
    for fault in plan:
        deadline = time.monotonic() + 900
        while emitted(stack) < fault.at * len(closed):
            supervise(stack, ledger)
            assert time.monotonic() < deadline, f"no progress before {fault}"
            time.sleep(0.2)
        supervise(stack, ledger)  # a fault hits a running stack, as in production
        inject(stack, fault, ledger)
    deadline = time.monotonic() + 3600
    while True:
        supervise(stack, ledger)
        try:
            seen = stack.pipeline.latest_signals(len(closed), timeout=5)
        except KafkaException:
            seen = {}
        if closed <= set(seen):
            break
        missing = len(closed - set(seen))
        assert time.monotonic() < deadline, f"{missing} closed windows never emitted"
    while not stack.sink.sync(30):
        supervise(stack, ledger)
        assert time.monotonic() < deadline, stack.sink.log()[-3000:]


def stored_counts(stack: Stack, w: Workload) -> tuple[int, int, int]:
    """(stored once, duplicated, lost) in rhythm.events, on its raw rows: not through FINAL,
    which folds the rows of one event_id into one and so hides any duplicate by construction,
    and with merges off for the run (`keep_raw_rows`), which would fold them too. A message
    written twice is then two rows with one source position. Re-sent copies of an event
    (same event_id, another offset) are a row each, unless they came in one insert with
    their first copy (folded as it is written: optimize_on_insert). `stored once`: events
    with no message twice; `duplicated`: rows beyond one per message; `lost`: events with
    no row."""
    sent = Counter(e["event_id"] for e in w.arrivals)
    expected = {e["event_id"] for e in w.events}
    per_id = {
        i: (int(n), int(p))
        for i, n, p in stack.rows(
            "SELECT toString(event_id), count(), uniqExact(kafka_partition, kafka_offset) "
            "FROM rhythm.events GROUP BY event_id"
        )
    }
    rows, ids, positions = (
        int(v)
        for v in stack.rows(
            "SELECT count(), uniqExact(event_id), uniqExact(kafka_partition, kafka_offset) "
            "FROM rhythm.events"
        )[0]
    )
    assert set(per_id) <= expected, "rows for events never sent"
    once = sum(1 for i, (n, p) in per_id.items() if n == p <= sent[i])
    duplicated = rows - positions  # a message stored more than once
    lost = len(expected - set(per_id))
    # count() against uniqExact(event_id): each event's rows are messages sent for it.
    assert all(p <= sent[i] for i, (_, p) in per_id.items()), "more messages than were sent"
    assert rows - ids <= len(w.arrivals) - len(expected) + duplicated, (rows, ids)
    return once, duplicated, lost


def scenario(
    broker: LocalKafka,
    tmp_path: Path,
    name: str,
    w: Workload,
    now: int,
    plan: list[Fault],
    calm: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> None:
    reference = reference_signals(w.events, WINDOWS_MS)
    closed = expected_closed(reference, now - 60_000)
    ledger = Ledger()
    stack = Stack(broker, tmp_path / "hurt", name=f"{name}-{uuid.uuid4().hex[:6]}", extra_env=env)
    # Every column says "no" / "not checked" until its check passed (report.py).
    row = RunRow(name, ledger.faults, len(w.arrivals))
    try:
        try:
            run_with_faults(stack, w, closed, plan, ledger)
            row.stored, row.duplicated, row.lost = stored_counts(stack, w)
            got = stack.signals()
            alerts = stack.alerts()
            scrapes = [stack.sink.metrics(), scrape(stack.processors.metrics_port)]
        finally:
            stack.close()
        if secrets:
            assert_never_shown(secrets, stack, scrapes)
        assert (row.duplicated, row.lost) == (0, 0)
        assert row.stored == len(w.events)
        assert closed <= set(got), f"{len(closed - set(got))} closed windows missing"
        check_signals(got, reference)
        if calm is not None:
            for key in closed:
                hurt_s, calm_s = got[key], calm["signals"][key]
                assert hurt_s["event_count"] == calm_s["event_count"], key
                assert hurt_s["weight_sum"] == pytest.approx(calm_s["weight_sum"], rel=1e-12)
                assert hurt_s["version"] == calm_s["version"], key
        row.signals_checked = len(closed & set(got))
        check_alerts(alerts, w)
        if calm is not None:
            # Alerts are decided in event time, but an idle pipeline's watermark follows the
            # wall clock (processors/README.md, "Idle partitions"): the runs, minutes apart,
            # end at different watermarks, and silences or overdue waits falling due between
            # the two are in one set only. Before the newest closed window's end, both
            # watermarks have passed by the lateness: there the sets must be equal.
            cut = max(start + seconds * 1000 for _, _, _, seconds, start in closed)
            assert {a for a in alerts if a[5] < cut} == {a for a in calm["alerts"] if a[5] < cut}
        row.alerts_as_expected = True
    finally:
        REPORT.runs.append(row)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def assert_never_shown(secrets: dict[str, str], stack: Stack, scrapes: list[str]) -> None:
    """No secret in any log file of the run (processors, sink, broker) nor in /metrics."""
    logs = [*stack.logs(), *Path(stack.broker.home).rglob("*.log")]
    assert all(p.exists() for p in stack.logs())
    for secret in secrets.values():
        for path in logs:
            assert secret.encode() not in path.read_bytes(), f"{secret!r} in {path}"
        for text in scrapes:
            assert secret not in text
    REPORT.notes.append(
        f"planted secrets, read but not used by the PLAINTEXT broker and embedded store "
        f"({', '.join(sorted(secrets))}), found in none of {len(logs)} log "
        f"files ({sum(p.stat().st_size for p in logs) // 1024:,} KiB) and "
        f"{len(scrapes)} /metrics scrapes of the quick run"
    )


def calm_run(broker: LocalKafka, tmp_path: Path, w: Workload, now: int) -> dict[str, Any]:
    """The same input through undisturbed processors: their signals and alerts."""
    reference = reference_signals(w.events, WINDOWS_MS)
    closed = expected_closed(reference, now - 60_000)
    calm = Pipeline(broker.bootstrap, f"calm-{uuid.uuid4().hex[:8]}", tmp_path / "calm")
    calm.home.mkdir()
    calm.create_topics()
    calm.send(w.arrivals)
    proc = calm.start()
    try:
        signals = wait_for_windows(calm, closed, timeout=3600)
    finally:
        proc.kill()
        proc.wait(30)
    return {"signals": signals, "alerts": calm.alerts()}


QUICK_PLAN = [
    Fault(0.05, "kill_processors"),
    Fault(0.15, "kill_sink"),
    Fault(0.25, "restart_broker"),
    Fault(0.35, "kill_both"),
    Fault(0.45, "clickhouse_down", 8),
]


def test_quick_faults_lose_and_double_nothing(broker: LocalKafka, tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    w = generate(now, seed=31, users=30, days=2)
    # Secrets the components read but that the PLAINTEXT broker and the embedded store do not
    # use: they must appear in no log and no metric of a run through every fault. The sink and
    # the processors log at INFO here. The SASL password, which only a broker that checks it
    # shows in use, is tested against one: tests/integration/test_sasl_secrets.py.
    secrets = {
        "RHYTHM_KAFKA_SSL_KEY_PASSWORD": f"key-{uuid.uuid4().hex}",
        "RHYTHM_SINK_CLICKHOUSE_PASSWORD": f"ch-{uuid.uuid4().hex}",
    }
    env = secrets | {"RHYTHM_PROCESSOR_LOG_LEVEL": "info"}
    planted = {k: v for k, v in secrets.items() if "PASSWORD" in k}
    scenario(broker, tmp_path, "quick", w, now, QUICK_PLAN, secrets=planted, env=env)


LONG_PLAN = [
    Fault(0.03, "kill_processors"),
    Fault(0.08, "kill_sink"),
    Fault(0.13, "kill_both"),
    Fault(0.20, "restart_broker"),
    Fault(0.27, "clickhouse_down", 30),
    Fault(0.35, "kill_processors"),
    Fault(0.42, "kill_sink"),
    Fault(0.50, "kill_both"),
    Fault(0.58, "restart_broker"),
    Fault(0.66, "kill_processors"),
    Fault(0.74, "kill_sink"),
    Fault(0.82, "kill_both"),
]


@pytest.mark.long
def test_200k_events_through_every_fault(broker: LocalKafka, tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    w = generate(now, seed=47, users=530, days=3)
    assert len(w.arrivals) >= 200_000
    calm = calm_run(broker, tmp_path, w, now) if os.environ.get("RHYTHM_FAULTS_CALM") else None
    scenario(broker, tmp_path, "long", w, now, LONG_PLAN, calm=calm)

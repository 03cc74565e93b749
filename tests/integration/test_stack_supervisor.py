"""`rhythm up` as a user runs it, supervised: every part SIGKILLed in turn comes back with no
human action and events sent after the kill are processed and stored; a part that exits at
once every time is reported as a crash loop; a Kafka from `rhythm kafka up --brokers 3` is
adopted (and left running by `rhythm down`). Real processes, free ports, own homes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rhythm.runtime.process import alive
from rhythm.stack.ports import free_ports

pytestmark = pytest.mark.integration

RHYTHM = [sys.executable, "-m", "rhythm.stack.cli"]


class UpStack:
    """The env of one `rhythm up` stack: its own home and free ports."""

    def __init__(self, home: Path, **extra: str) -> None:
        self.home = home
        http, proc_metrics, sink_metrics, sup_metrics, collector, history_metrics = free_ports(6)
        self.http_port, self.supervisor_port = http, sup_metrics
        self.env = dict(
            os.environ,
            RHYTHM_STACK_HOME=str(home),
            RHYTHM_STACK_SINK_HTTP_PORT=str(http),
            RHYTHM_STACK_PROCESSOR_METRICS_PORT=str(proc_metrics),
            RHYTHM_STACK_HISTORY_METRICS_PORT=str(history_metrics),
            RHYTHM_STACK_SINK_METRICS_PORT=str(sink_metrics),
            RHYTHM_STACK_SUPERVISOR_METRICS_PORT=str(sup_metrics),
            RHYTHM_STACK_PROMETHEUS_PORT="0",
            RHYTHM_STACK_COLLECTOR_PORT=str(collector),
            RHYTHM_STACK_RESTART_BACKOFF_S="0.2",
            RHYTHM_STACK_RESTART_BACKOFF_MAX_S="2",
            RHYTHM_STACK_HEALTH_INTERVAL_S="1",
            RHYTHM_STACK_HEALTH_GRACE_S="10",
            RHYTHM_KAFKA_LOCAL_PORT="0",
            RHYTHM_KAFKA_LOCAL_CONTROLLER_PORT="0",
            RHYTHM_KAFKA_LOCAL_HEAP="384m",
            COLUMNS="250",  # the status table unwrapped
        )
        self.env.update(extra)

    def rhythm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*RHYTHM, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def status(self) -> dict[str, Any]:
        done = self.rhythm("status", "--json", timeout=60)
        parsed: dict[str, Any] = json.loads(done.stdout)
        return parsed

    def distinct_events(self) -> int:
        sql = urllib.parse.quote("SELECT uniqExact(event_id) FROM rhythm.events")
        url = f"http://127.0.0.1:{self.http_port}/?query={sql}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return int(r.read().decode().strip())
        except OSError:
            return -1  # the sink is restarting

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.supervisor_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())

    def send(self, first: int, count: int, tmp: Path) -> None:
        source = tmp / f"events-{first}.jsonl"
        source.write_text(
            "".join(json.dumps(_event(i)) + "\n" for i in range(first, first + count))
        )
        bootstrap = self.status()["kafka"]["bootstrap"]
        done = self.rhythm("ingest", str(source), "--bootstrap", bootstrap, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    def down(self) -> None:
        self.rhythm("down", timeout=180)


def _event(i: int) -> dict[str, Any]:
    return {
        "event_id": f"00000000-0000-7000-8000-{i:012d}",
        "tenant": "acme",
        "occurred_at": f"2026-10-01T10:{(i // 60) % 60:02d}:{i % 60:02d}Z",
        "actor": {"type": "user", "id": f"u-{i % 17}"},
        "verb": "viewed",
        "object": {"type": "document", "id": f"doc-{i % 5}"},
    }


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[UpStack]:
    s = UpStack(tmp_path / "stack")
    try:
        yield s
    finally:
        s.down()


def test_every_part_sigkilled_in_turn_comes_back_and_keeps_processing(
    stack: UpStack, tmp_path: Path
) -> None:
    up = stack.rhythm("up")
    assert up.returncode == 0, up.stdout + up.stderr
    batch = 200
    stack.send(0, batch, tmp_path)
    wait_until(lambda: stack.distinct_events() == batch, 60, "the first events stored")

    for round_, part in enumerate(("processors", "sink", "kafka"), start=1):
        before = stack.status()
        old = before[part]["pid"]
        assert before[part]["running"] and before[part]["restarts"] == 0
        os.kill(int(old), signal.SIGKILL)

        def back(part: str = part, old: int = old) -> dict[str, Any] | None:
            now = stack.status()
            p = now[part]
            ok = p["running"] and p["pid"] not in (None, old) and p.get("restarts") == 1
            if part != "kafka":  # what /healthz says, read by `rhythm status`
                ok = ok and (p.get("health") or {}).get("ok") is True
            return now if ok else None

        now = wait_until(back, 120, f"{part} restarted after SIGKILL")
        assert now[part]["last_exit"]["reason"] == "killed by SIGKILL"
        assert now[part]["last_exit"]["signal"] == "SIGKILL"
        assert now[part]["crash_loop"] is False
        # events sent after the kill are processed and stored
        stack.send(round_ * batch, batch, tmp_path)
        total = (round_ + 1) * batch

        def stored(total: int = total) -> bool:
            return stack.distinct_events() == total

        wait_until(stored, 120, f"{total} events stored")

        def caught_up() -> bool:
            return bool(stack.status()["processors"].get("lag", {}).get("rhythm.events") == 0)

        wait_until(caught_up, 120, "the processors caught up with the events topic")
        assert f'rhythm_stack_part_restarts_total{{part="{part}"}} 1.0' in stack.metrics()

    text = stack.rhythm("status")
    assert text.returncode == 0, text.stdout
    assert "killed by SIGKILL" in text.stdout
    pids = [int(p) for p in (stack.status()[n]["pid"] for n in ("supervisor", "processors"))]
    stack.down()
    assert not any(alive(p) for p in pids)
    assert stack.status()["kafka"]["running"] is False


@pytest.mark.long
def test_a_hung_part_is_replaced_and_a_killed_supervisor_is_replaced_by_the_next_up(
    stack: UpStack, tmp_path: Path
) -> None:
    up = stack.rhythm("up")
    assert up.returncode == 0, up.stdout + up.stderr
    batch = 200
    stack.send(0, batch, tmp_path)
    wait_until(lambda: stack.distinct_events() == batch, 60, "the first events stored")

    def caught_up() -> bool:
        return bool(stack.status()["processors"].get("lag", {}).get("rhythm.events") == 0)

    # a hung part (SIGSTOP: its /healthz stops answering) is restarted after the grace
    hung = stack.status()["processors"]["pid"]
    os.kill(int(hung), signal.SIGSTOP)

    def unhealthy() -> bool:
        p = stack.status()["processors"]
        return p["running"] and p["pid"] == hung and p["health"]["ok"] is False

    wait_until(unhealthy, 30, "rhythm status to say the hung processors are unhealthy")

    def replaced() -> dict[str, Any] | None:
        p = stack.status()["processors"]
        ok = p["running"] and p["pid"] != hung and (p.get("health") or {}).get("ok") is True
        return p if ok else None

    p = wait_until(replaced, 120, "the hung processors replaced")
    assert p["restarts"] == 1 and p["last_exit"]["reason"].startswith("unhealthy for 10 s")
    stack.send(batch, batch, tmp_path)

    def all_stored() -> bool:
        return stack.distinct_events() == 2 * batch

    wait_until(all_stored, 120, "the events sent after the hang stored")
    wait_until(caught_up, 120, "the processors caught up after the hang")

    # the supervisor itself killed: the parts run on, status says so; `up` adopts them
    last = stack.status()
    os.kill(int(last["supervisor"]["pid"]), signal.SIGKILL)

    def supervisor_gone() -> bool:
        return not alive(int(last["supervisor"]["pid"]))

    wait_until(supervisor_gone, 10, "the supervisor gone")
    orphaned = stack.rhythm("status", "--json", timeout=60)
    assert orphaned.returncode == 3 and json.loads(orphaned.stdout)["processors"]["running"]
    again = stack.rhythm("up")
    assert again.returncode == 0, again.stdout + again.stderr
    now = stack.status()
    for name in ("kafka", "processors", "sink"):
        assert now[name]["pid"] == last[name]["pid"], name  # adopted, not started twice
    assert now["kafka"]["adopted"] is False  # started by this stack: `down` stops it
    pids = [int(now[n]["pid"]) for n in ("supervisor", "processors", "sink")]
    stack.down()
    assert not any(alive(p) for p in pids)
    assert stack.status()["kafka"]["running"] is False


def test_a_part_failing_at_once_is_a_crash_loop_and_a_kafka_cluster_is_adopted(
    tmp_path: Path,
) -> None:
    stack = UpStack(
        tmp_path / "stack",
        RHYTHM_PROCESSOR_LATENESS_S="-1",  # a broken setting: the worker exits at once
        RHYTHM_STACK_CRASH_LOOP_RESTARTS="3",
        RHYTHM_STACK_CRASH_LOOP_WINDOW_S="120",
    )
    kafka_home = str(tmp_path / "stack" / "kafka")
    kafka = stack.rhythm("kafka", "up", "--brokers", "3", "--home", kafka_home,
                         "--port", "0", "--controller-port", "0")  # fmt: skip
    try:
        assert kafka.returncode == 0, kafka.stdout + kafka.stderr
        up = stack.rhythm("up")
        assert up.returncode == 1, up.stdout + up.stderr  # not "port already in use"
        # Both processor lanes read the broken setting; `up` names the first to loop.
        assert "crash loop" in up.stderr, up.stderr
        assert "processors" in up.stderr or "history" in up.stderr, up.stderr
        assert "already in use" not in up.stderr
        wait_until(
            lambda: stack.status()["processors"].get("crash_loop"), 120, "the live lane's loop"
        )

        done = stack.rhythm("status", "--json", timeout=60)
        assert done.returncode == 3  # a part is not right
        status = json.loads(done.stdout)
        assert status["kafka"]["adopted"] is True and status["kafka"]["brokers"] == 3
        assert status["sink"]["running"] is True
        proc = status["processors"]
        assert proc["crash_loop"] is True and proc["restarts"] >= 2
        assert proc["last_exit"]["reason"] == "exit code 1"
        assert 'rhythm_stack_part_crash_loop{part="processors"} 1.0' in stack.metrics()
        assert "crash loop" in stack.rhythm("status").stdout

        sink = status["sink"]["pid"]
        stack.down()
        assert not alive(int(sink))
        after = stack.rhythm("kafka", "status", "--home", kafka_home, "--json", timeout=60)
        assert json.loads(after.stdout)["running"] is True  # adopted: left for `kafka down`
    finally:
        stack.down()
        stack.rhythm("kafka", "down", "--home", kafka_home, timeout=120)


@pytest.mark.long  # a minute and more of wall-clock windows: `make test-faults` runs it
def test_history_up_to_now_that_waits_is_imported_by_the_running_stack(tmp_path: Path) -> None:
    # Seconds, not days: 5 s and 30 s windows, live lateness 3 s, windows kept 5 s after
    # closing; the supervisor looks for waiting history every 5 s.
    stack = UpStack(
        tmp_path / "stack",
        RHYTHM_PROCESSOR_WINDOW_SECONDS="[5,30]",
        RHYTHM_PROCESSOR_LATENESS_S="3",
        RHYTHM_PROCESSOR_LATE_RETENTION_S="5",
        RHYTHM_STACK_LATER_INTERVAL_S="5",
    )
    # `rhythm backfill` asks this stack's store (the supervisor tells its own `--later`)
    stack.env["RHYTHM_PROCESSOR_STORE_URL"] = f"http://127.0.0.1:{stack.http_port}"
    try:
        up = stack.rhythm("up")
        assert up.returncode == 0, up.stdout + up.stderr
        now = int(time.time() * 1000)
        history = [
            {
                "event_id": f"00000000-0000-7000-8000-{i:012d}",
                "tenant": "acme",
                "occurred_at": time.strftime(
                    "%Y-%m-%dT%H:%M:%S", time.gmtime((now - 600_000 + i * 2_000) / 1000)
                )
                + "Z",
                "actor": {"type": "user", "id": f"u-{i % 7}"},
                "verb": "viewed",
            }
            for i in range(300)  # ten minutes up to now
        ]
        source = tmp_path / "history.jsonl"
        source.write_text("".join(json.dumps(e) + "\n" for e in history))
        bootstrap = stack.status()["kafka"]["bootstrap"]
        env = stack.env  # this stack's own ports, not the defaults
        done = stack.rhythm(
            "backfill", str(source), "--bootstrap", bootstrap, "--timeout", "120",
            "--metrics-port", env["RHYTHM_STACK_HISTORY_METRICS_PORT"],
            "--live-metrics-port", env["RHYTHM_STACK_PROCESSOR_METRICS_PORT"],
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "wait on rhythm.history.later" in done.stdout, done.stdout
        waiting = stack.status()["history"].get("later_waiting", 0)
        assert waiting > 0
        # nothing more to do by hand: the running stack imports it once the live lane is done
        wait_until(lambda: stack.status()["history"].get("later_waiting") == 0, 180, "none waiting")
        wait_until(lambda: stack.distinct_events() == len(history), 120, "every event stored")
        log = (tmp_path / "stack" / "logs" / "later.log").read_text()
        assert "published" in log and ", 0 still waiting" in log, log[-3000:]
    finally:
        stack.down()

"""The supervisor's rules: the restart backoff, the crash-loop rule, exit reasons, when it
imports what waits on the later topic."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from rhythm.stack.supervisor import supervise
from rhythm.stack.supervisor.control import Part, Stack, StackSettings
from rhythm.stack.supervisor.supervise import (
    Record,
    RestartPolicy,
    backoff_delay,
    exit_reason,
    in_crash_loop,
)

POLICY = RestartPolicy(backoff_s=1.0, backoff_max_s=30.0, crash_loop_restarts=3,
                       crash_loop_window_s=60.0)  # fmt: skip


def test_backoff_doubles_from_the_first_delay_and_is_capped() -> None:
    assert [backoff_delay(POLICY, n) for n in range(8)] == [0, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(POLICY, 10_000) == 30  # no overflow for a part failing for days


def test_crash_loop_counts_exits_within_the_window_only() -> None:
    assert not in_crash_loop([0.0, 10.0], 10.0, POLICY)
    assert in_crash_loop([0.0, 10.0, 20.0], 20.0, POLICY)
    assert not in_crash_loop([0.0, 10.0, 20.0], 65.0, POLICY)  # the first one left the window


def test_exit_reasons_name_the_code_or_the_signal() -> None:
    assert exit_reason(1) == "exit code 1"
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert "unknown" in exit_reason(None)


def test_a_part_exiting_at_once_every_time_backs_off_and_becomes_a_crash_loop() -> None:
    r = Record("processors")
    now = 100.0
    delays = []
    for _ in range(3):
        r.started(4242, now, restart=r.state == "backoff")
        now += 0.5  # exits half a second after each start
        r.exited(1, exit_reason(1), POLICY, now)
        delays.append(r.next_start - now)
        now = r.next_start
    assert delays == [1, 2, 4]
    assert r.crash_loop and r.restarts == 2 and r.state == "backoff"
    assert r.last_exit is not None and r.last_exit["code"] == 1 and r.last_exit["signal"] is None
    r.started(4243, now, restart=True)
    r.refresh(POLICY, now + 61)  # ran a whole window without exiting: no longer a crash loop
    assert not r.crash_loop and r.restarts == 3


def test_a_long_run_starts_the_backoff_over() -> None:
    r = Record("sink")
    r.started(1, 0.0, restart=False)
    r.exited(-signal.SIGKILL, "killed by SIGKILL", POLICY, 1.0)
    r.started(2, r.next_start, restart=True)
    r.exited(-signal.SIGKILL, "killed by SIGKILL", POLICY, r.next_start + 1.0)
    assert r.streak == 2
    r.started(3, 10.0, restart=True)
    r.exited(-signal.SIGKILL, "killed by SIGKILL", POLICY, 10.0 + 120.0)
    assert r.streak == 1 and r.next_start == 131.0
    assert r.last_exit is not None and r.last_exit["signal"] == "SIGKILL"


def test_status_shows_tenants_over_their_budget() -> None:
    from rhythm.stack.cli.stack import _processor_details

    quiet = _processor_details({"watermark": 1_800_000_000.0, "degraded_events": 0})
    assert quiet == "watermark 2027-01-15 08:00:00Z"
    noisy = _processor_details({"tenants_over_budget": 2, "degraded_events": 123_456})
    assert "2 tenant(s) over budget" in noisy and "123,456 events aggregated" in noisy
    past = _processor_details({"tenants_over_budget": 0, "degraded_events": 7})
    assert past == "7 events aggregated over budget"


# -- importing what waits on rhythm.history.later ---------------------------------------------


class _Spawned:
    def __init__(self, argv: list[str], **_kw: object) -> None:
        self.argv = argv
        self.done: int | None = None
        SPAWNED.append(self)

    def poll(self) -> int | None:
        return self.done


SPAWNED: list[_Spawned] = []


def test_the_later_import_runs_every_interval_one_at_a_time_while_the_history_lane_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rhythm.stack.supervisor.supervise.subprocess.Popen", _Spawned)
    SPAWNED.clear()
    stack = Stack(StackSettings(home=tmp_path, later_interval_s=60.0))
    stack.logs.mkdir(parents=True)
    sup = supervise.Supervisor(stack)
    sup.parts["history"] = Part("history", ["x"], {"RHYTHM_PROCESSOR_LANE": "history"}, None)
    sup._last_later = 0.0
    sup._tick_later(100.0)
    assert SPAWNED == []  # no broker yet
    sup.bootstrap = "127.0.0.1:1"
    sup._tick_later(100.0)
    assert SPAWNED == []  # no history lane up
    sup.records["history"] = Record("history", ready=True)
    sup._tick_later(100.0)
    assert [s.argv[3:5] for s in SPAWNED] == [["backfill", "--later"]]
    assert "--no-wait" in SPAWNED[0].argv and "127.0.0.1:1" in SPAWNED[0].argv
    sup._tick_later(130.0)  # within the interval
    sup._tick_later(200.0)  # the last one still runs
    assert len(SPAWNED) == 1
    SPAWNED[0].done = 0
    sup._tick_later(201.0)
    assert len(SPAWNED) == 2
    off = supervise.Supervisor(Stack(StackSettings(home=tmp_path, later_interval_s=0)))
    off.bootstrap, off.records["history"] = "b", Record("history", ready=True)
    off._tick_later(10_000.0)
    assert len(SPAWNED) == 2  # 0: never

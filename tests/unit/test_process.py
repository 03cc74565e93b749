"""rhythm.runtime.process on real child processes: liveness (running, zombie, gone, a process
whose main thread exited while another still runs), command lines, and group stops (SIGTERM
heard, SIGTERM ignored, a grandchild in the group, a pid that is not our child)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rhythm.runtime.process import alive, cmdline, signal_group, stop_group, stop_groups

PY = sys.executable


def spawn(code: str, *, own_group: bool = True) -> subprocess.Popen[bytes]:
    return subprocess.Popen([PY, "-c", code], start_new_session=own_group)


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_running_process_is_alive_a_zombie_and_a_reaped_one_are_not(
    procs: list[subprocess.Popen[bytes]],
) -> None:
    assert alive(os.getpid())
    proc = spawn("import time; time.sleep(60)")
    procs.append(proc)
    assert alive(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    # Not reaped yet: a zombie, which still answers kill(0).
    wait_for(lambda: not alive(proc.pid))
    os.kill(proc.pid, 0)
    assert proc.wait(10) == -signal.SIGKILL
    assert not alive(proc.pid)


def test_a_process_whose_main_thread_exited_is_alive_while_another_thread_runs(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """The killed JVM's case: its main thread is a zombie while the others still exit."""
    release = tmp_path / "release"
    code = f"""
import ctypes, pathlib, threading, time
def work():
    while not pathlib.Path({str(release)!r}).exists():
        time.sleep(0.02)
threading.Thread(target=work).start()
ctypes.CDLL(None).pthread_exit(None)
"""
    proc = spawn(code)
    procs.append(proc)

    def main_thread_is_zombie() -> bool:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        return stat.rsplit(")", 1)[-1].split()[0] == "Z"

    wait_for(main_thread_is_zombie)
    assert alive(proc.pid)
    release.touch()
    wait_for(lambda: not alive(proc.pid))
    assert proc.wait(10) == 0


def test_cmdline_names_the_arguments_and_is_none_for_a_gone_process() -> None:
    proc = spawn("import time; time.sleep(60)")
    try:
        # Until the child has exec'd, it still has the parent's command line.
        wait_for(lambda: cmdline(proc.pid) == [PY, "-c", "import time; time.sleep(60)"])
    finally:
        proc.kill()
        proc.wait(10)
    assert cmdline(proc.pid) is None


def test_stop_group_stops_the_leader_and_its_group_with_sigterm(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    code = f"""
import pathlib, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))
time.sleep(60)
"""
    proc = spawn(code)
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "")
    grandchild = int(pid_file.read_text())
    assert alive(grandchild)
    started = time.monotonic()
    assert stop_group(proc, 10.0) is True
    assert time.monotonic() - started < 5.0
    assert proc.returncode == -signal.SIGTERM
    wait_for(lambda: not alive(grandchild))  # the group heard it too (reparented, reaped)


def spawn_deaf() -> subprocess.Popen[bytes]:
    """A group leader that ignores SIGTERM, returned once it does."""
    code = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen([PY, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    proc.stdout.close()
    return proc


def test_stop_group_kills_a_process_that_ignores_sigterm_after_the_timeout() -> None:
    proc = spawn_deaf()
    started = time.monotonic()
    assert stop_group(proc, 0.5) is False
    assert 0.5 <= time.monotonic() - started < 10.0
    assert proc.returncode == -signal.SIGKILL


def test_stop_group_by_pid_of_a_process_that_is_not_our_child(tmp_path: Path) -> None:
    """A pid from a pid file (the supervisor's parts after a restart, an orphaned broker):
    waited for by polling `alive`, as it cannot be reaped here."""
    code = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
print(child.pid)
"""
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True)
    pid = int(out.stdout)
    try:
        assert alive(pid)
        assert stop_group(pid, 10.0) is True
        assert not alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_stop_group_of_a_process_gone_already_is_quiet() -> None:
    proc = spawn("pass")
    proc.wait(10)
    assert stop_group(proc, 1.0) is True
    assert stop_group(proc.pid, 1.0) is True


def test_signal_group_never_signals_our_own_group() -> None:
    """A child in our group (no session of its own) is signalled alone."""
    proc = spawn("import time; time.sleep(60)", own_group=False)
    try:
        assert os.getpgid(proc.pid) == os.getpgrp()
        assert signal_group(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert not signal_group(proc.pid, signal.SIGTERM)


def test_stop_groups_stops_several_within_one_shared_timeout() -> None:
    group = [spawn_deaf() for _ in range(3)]
    started = time.monotonic()
    stop_groups(group, 1.0)
    assert time.monotonic() - started < 8.0  # one shared second, not one each
    assert [p.returncode for p in group] == [-signal.SIGKILL] * 3

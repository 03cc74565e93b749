"""Process helpers, one implementation each: is a pid alive, what is its command line, and stop a
process group (SIGTERM, wait, SIGKILL). Used by the local stack, the tests and the benchmarks.

`alive(pid)` is the one liveness check: the process exists (another user's process counts, as
kill(0) answering EPERM says it exists) and at least one of its threads is not a zombie. A
zombie answers kill(0) until its parent reaps it, and the main thread of a killed JVM can be a
zombie while its other threads still exit and hold the sockets: alive until they are gone too.

`stop_group(target, timeout)` is the one group stop: `target` is a Popen this process started
(it is then reaped, no zombie left behind) or the pid of a process that leads its own group
(started with ``start_new_session=True``). A pid that does not lead a group, or leads ours, is
signalled alone, never our own group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["alive", "cmdline", "signal_group", "stop_group", "stop_groups"]

log = logging.getLogger(__name__)

#: How long the group gets to go after SIGKILL before stop_group gives up waiting.
KILL_WAIT_S = 30.0


def alive(pid: int) -> bool:
    """True while `pid` is a process with a thread that is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, and is someone else's
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return False  # gone between kill(0) and now
    except OSError:
        return True  # no /proc: trust kill(0)
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        # The state is the first field after the command name, which is in parentheses and
        # may itself hold spaces and parentheses.
        if stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]:
            return True
    return False


def cmdline(pid: int) -> list[str] | None:
    """The arguments `pid` was started with (None when it is gone or not visible)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def signal_group(pid: int, sig: int) -> bool:
    """Send `sig` to the group `pid` leads (to `pid` alone if it leads no group, or ours);
    False when the process is already gone."""
    try:
        if os.getpgid(pid) == pid and pid != os.getpgrp():
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _pid(target: subprocess.Popen[bytes] | subprocess.Popen[str] | int) -> int:
    return target if isinstance(target, int) else target.pid


def _wait(target: subprocess.Popen[bytes] | subprocess.Popen[str] | int, timeout: float) -> bool:
    """Wait up to `timeout` for the target to exit (a Popen is reaped); True if it did."""
    if not isinstance(target, int):
        try:
            target.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while alive(target):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_group(
    target: subprocess.Popen[bytes] | subprocess.Popen[str] | int,
    timeout: float = 30.0,
    *,
    sig: int = signal.SIGTERM,
    kill_wait: float = KILL_WAIT_S,
) -> bool:
    """Stop the process group `target` leads: `sig` (SIGTERM), up to `timeout` s for it to
    exit, then SIGKILL and up to `kill_wait` s more. True when it went without SIGKILL (or
    was gone already), False when it had to be killed."""
    pid = _pid(target)
    if not isinstance(target, int) and target.poll() is not None:
        return True
    if not signal_group(pid, sig):
        _wait(target, 0.0)  # reap a Popen that exited meanwhile
        return True
    if _wait(target, timeout):
        return True
    log.warning("pid %d did not stop within %.0f s: SIGKILL", pid, timeout)
    signal_group(pid, signal.SIGKILL)
    _wait(target, kill_wait)
    return False


def stop_groups(
    targets: Iterable[subprocess.Popen[bytes] | subprocess.Popen[str] | int],
    timeout: float = 30.0,
) -> None:
    """`stop_group` for several groups at once: all are sent SIGTERM first, then each gets
    what is left of one shared `timeout` before its SIGKILL."""
    targets = list(targets)
    for target in targets:
        if isinstance(target, int) or target.poll() is None:
            with contextlib.suppress(PermissionError):
                signal_group(_pid(target), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for target in targets:
        stop_group(target, max(0.1, deadline - time.monotonic()))

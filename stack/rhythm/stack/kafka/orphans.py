"""The reaper of brokers whose owner died: a test run killed before its teardown leaves its
owned broker running; the next run's ``stop_orphans()`` finds it in /proc and stops it."""

from __future__ import annotations

import logging
from pathlib import Path

from rhythm.runtime.process import alive, cmdline, stop_groups
from rhythm.stack.kafka.settings import BROKER_MAIN, OWNER_ENV

log = logging.getLogger(__name__)


def stop_orphans(timeout: float = 30.0) -> list[int]:
    """Stop the brokers started with ``owned=True`` whose owner process has died (a test run
    killed before its teardown); returns their pids. Only this user's processes are visible
    (``/proc/<pid>/environ``), and brokers not started as owned are never touched."""
    orphans: list[int] = []
    marker = OWNER_ENV.encode() + b"="
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        argv = cmdline(int(entry.name))
        if not argv or BROKER_MAIN not in argv:
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        owners = [item[len(marker) :] for item in environ if item.startswith(marker)]
        if owners and owners[0].isdigit() and not alive(int(owners[0])):
            orphans.append(int(entry.name))
    for pid in orphans:
        log.warning("stopping orphaned Kafka broker (pid %d) of a dead test run", pid)
    stop_groups(orphans, timeout)
    return orphans

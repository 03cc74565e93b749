"""`rhythm processors --workers N`: N processor workers of one Faust app on this machine.

Each worker is its own process (Faust runs one event loop per process; the GIL would serialise
workers in threads) and a member of the consumer group named by the app id, so Kafka shares
the partitions among them and moves them when one joins or leaves. What each needs of its own:

- a state directory (rocksdict cannot be opened by two processes): ``<data_dir>/worker-<i>``;
- its ports: metrics ``metrics_port + i`` and Faust's web server ``web_port + i`` (0 stays 0);
- with ``instance_id`` set (static membership), its own id: ``<instance_id>-<i>``.

On SIGTERM/SIGINT every worker is asked to stop and waited for; when one worker exits on its
own the others are stopped too and its exit code is returned, so a supervisor (``rhythm up``,
systemd, Kubernetes) sees the failure instead of a silently smaller group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from rhythm.processors.settings import ProcessorSettings
from rhythm.runtime.process import stop_groups

__all__ = ["run_workers", "worker_env"]

#: How long stopping workers may take before SIGKILL (a Faust worker commits and leaves the
#: group on SIGTERM; that is quick unless the broker is away).
STOP_TIMEOUT_S = 60.0


def worker_env(settings: ProcessorSettings, index: int) -> dict[str, str]:
    """The environment overrides of worker ``index`` (0-based): its own state directory and
    ports, and the settings' bootstrap servers."""
    env = {
        "RHYTHM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RHYTHM_PROCESSOR_DATA_DIR": str(Path(settings.data_dir) / f"worker-{index}"),
        "RHYTHM_PROCESSOR_METRICS_PORT": str(
            settings.metrics_port + index if settings.metrics_port else 0
        ),
        "RHYTHM_PROCESSOR_WEB_PORT": str(settings.web_port + index if settings.web_port else 0),
    }
    if settings.instance_id:
        env["RHYTHM_PROCESSOR_INSTANCE_ID"] = f"{settings.instance_id}-{index}"
    return env


def run_workers(workers: int, settings: ProcessorSettings) -> int:
    """Run ``workers`` worker processes until stopped (returns 0) or until one exits (returns
    its exit code, 1 if that was 0: a worker does not end by itself)."""
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(workers):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "rhythm.stack.cli", "processors"],
                    env={**os.environ, **worker_env(settings, index)},
                    start_new_session=True,  # Ctrl-C reaches them through us, in order
                )
            )
        code = 0
        while not stopping:
            exited = [p for p in procs if p.poll() is not None]
            if exited:
                code = exited[0].returncode or 1
                break
            time.sleep(0.2)
        return code
    finally:
        stop_groups(procs, STOP_TIMEOUT_S)
        for sig, handler in previous.items():
            signal.signal(sig, handler)

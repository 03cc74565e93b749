"""The whole pipeline as real processes for the fault tests (no tests here): a broker of its
own (so it can be restarted without disturbing other tests), the processors and the sink as
`rhythm processors` / `rhythm sink` subprocesses that can be SIGKILLed, and read-backs of
what ended up in ClickHouse."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rhythm.runtime.process import stop_group
from rhythm.schemas.topics import TopicSpec
from rhythm.stack.kafka import LocalKafka, LocalKafkaSettings
from rhythm.stack.ports import free_port

from ..integration.test_processors import Pipeline
from ..integration.test_sink_support import SinkProcess, Topics


def own_broker(home: Path) -> LocalKafka:
    """A broker on free ports in `home`, with no default topics: the caller stops it."""
    # A generous start timeout: the machine running the suite may be busy (CI, other tests).
    settings = LocalKafkaSettings(home=home, port=0, controller_port=0, start_timeout_s=240)
    broker = LocalKafka(settings, owned=True)
    broker.up(topics=())
    return broker


@dataclass
class Ledger:
    """What was done to the stack, in order, for the report table."""

    faults: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.faults.append(what)


class ProcessorProcess:
    """`rhythm processors` for one Pipeline, restartable, with its log in the pipeline home."""

    def __init__(self, pipeline: Pipeline, extra_env: dict[str, str] | None = None) -> None:
        self.pipeline = pipeline
        self.metrics_port = free_port()
        self.env = pipeline.env() | {
            "RHYTHM_PROCESSOR_METRICS_PORT": str(self.metrics_port),
            "RHYTHM_PROCESSOR_STALL_AFTER_S": "30",
        }
        self.env |= extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.pipeline.home / "processor.log"

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rhythm.stack.cli", "processors"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stalled(self) -> bool:
        """Its /healthz says 503: input waits and nothing was committed for the configured
        time (Faust consumers can stop committing silently; a supervisor restarts them)."""
        url = f"http://127.0.0.1:{self.metrics_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=3):
                return False
        except urllib.error.HTTPError as exc:
            return exc.code == 503
        except OSError:  # not serving (starting, or gone): not a verdict
            return False

    def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, 30.0)


class Stack:
    """Topics for one run, the processors and the sink on them."""

    def __init__(
        self,
        broker: LocalKafka,
        home: Path,
        name: str | None = None,
        extra_env: dict[str, str] | None = None,
        **sink_settings: Any,
    ) -> None:
        self.broker = broker
        self.name = name or f"f-{uuid.uuid4().hex[:8]}"
        home.mkdir(parents=True, exist_ok=True)
        self.pipeline = Pipeline(broker.bootstrap, self.name, home)
        self.pipeline.create_topics()
        t = self.pipeline.topics
        self.topics = Topics(t["events"], t["signals"], t["alerts"], f"{self.name}.sink-dead")
        broker.create_topics([TopicSpec(self.topics.dead_letters, 1, {})])
        self.processors = ProcessorProcess(self.pipeline, extra_env)
        settings: dict[str, Any] = {
            "batch_max_rows": 5000,
            "buffer_max_rows": 20_000,
            "session_timeout_ms": 6000,
        } | sink_settings
        self.buffer_max_rows = int(settings["buffer_max_rows"])
        group = f"{self.name}-sink"
        self.sink = SinkProcess(broker.bootstrap, self.topics, home, group, **settings)
        self.sink.env.update(extra_env or {})

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def logs(self) -> list[Path]:
        return [self.processors.log_path, self.sink.log_path]

    def close(self) -> None:
        self.processors.stop()
        self.sink.close()

    # -- read-backs ----------------------------------------------------------------------------

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        client = self.sink.client()
        try:
            return [tuple(r) for r in client.query(sql).result_rows]
        finally:
            client.close()

    def signals(self) -> dict[tuple[Any, ...], dict[str, Any]]:
        """The latest version of every window in rhythm.signals, keyed like the reference."""
        names = (
            "role", "entity_type", "entity_id", "window_seconds", "window_start", "event_count",
            "weight_sum", "weight_max", "gap_count", "gap_min_s", "gap_max_s", "gap_mean_s",
            "version", "late_count",
        )  # fmt: skip
        sql = (
            "SELECT role, entity_type, entity_id, window_seconds, "
            "toUnixTimestamp64Milli(window_start), event_count, weight_sum, weight_max, "
            "gap_count, gap_min_s, gap_max_s, gap_mean_s, version, late_count "
            "FROM rhythm.signals FINAL"
        )
        out: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in self.rows(sql):
            s = dict(zip(names, row, strict=True))
            out[(s["role"], s["entity_type"], s["entity_id"], s["window_seconds"],
                 s["window_start"])] = s  # fmt: skip
        return out

    def alerts(self) -> set[tuple[Any, ...]]:
        sql = (
            "SELECT toString(kind), role, entity_type, entity_id, context_id, "
            "toUnixTimestamp64Milli(fired_at) FROM rhythm.alerts FINAL"
        )
        return set(self.rows(sql))


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)

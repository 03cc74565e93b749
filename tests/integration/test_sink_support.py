"""Helpers for the sink's integration tests (no tests here): fresh topics, the sink as a
real `rhythm sink` process on a temporary embedded store, and publishing."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client as ChClient

from rhythm.producers import Client, ClientSettings, KafkaSettings
from rhythm.runtime.sink_sync import SyncReport, wait_for_sink
from rhythm.schemas.topics import TopicSpec
from rhythm.stack.kafka import LocalKafka
from rhythm.stack.ports import free_ports

RHYTHM = [sys.executable, "-m", "rhythm.stack.cli"]
T = TypeVar("T")


@dataclass(frozen=True)
class Topics:
    events: str
    signals: str
    alerts: str
    dead_letters: str

    @property
    def written(self) -> list[str]:
        return [self.events, self.signals, self.alerts]


def make_topics(broker: LocalKafka, name: str) -> Topics:
    suffix = f"{name}.{uuid.uuid4().hex[:8]}"
    topics = Topics(f"ev.{suffix}", f"sig.{suffix}", f"al.{suffix}", f"dl.{suffix}")
    broker.create_topics(
        [
            TopicSpec(topics.events, 4, {}),
            TopicSpec(topics.signals, 4, {}),
            TopicSpec(topics.alerts, 2, {}),
            TopicSpec(topics.dead_letters, 1, {}),
        ]
    )
    return topics


def poll(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """`check()` until it returns something truthy; fails with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class SinkProcess:
    """`rhythm sink` as a user runs it, configured through the environment."""

    def __init__(
        self, bootstrap: str, topics: Topics, workdir: Path, group: str, **settings: Any
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.workdir = workdir
        self.group = group
        self.store = workdir / "clickhouse"
        http_port, metrics_port = free_ports(2)
        self.http_port = http_port
        self.metrics_port = metrics_port
        values: dict[str, Any] = {
            "dsn": f"chdb://{self.store}",
            "http_port": http_port,
            "metrics_port": metrics_port,
            "group_id": group,
            # static membership: a restarted sink gets its partitions back at once
            "group_instance_id": f"{group}-1",
            "events_topic": topics.events,
            "signals_topic": topics.signals,
            "alerts_topic": topics.alerts,
            "dead_letter_topic": topics.dead_letters,
            "batch_max_seconds": 0.2,
            "retry_backoff_min_s": 0.05,
            "retry_backoff_max_s": 0.5,
        } | settings
        self.env = os.environ.copy()
        self.env.update({f"RHYTHM_SINK_{k.upper()}": str(v) for k, v in values.items()})
        self.env["RHYTHM_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / "sink.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 60.0) -> SinkProcess:
        self.starts += 1
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*RHYTHM, "sink"], env=self.env, stdout=subprocess.PIPE, stderr=log
        )
        log.close()
        lines: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        stdout = self.proc.stdout
        assert stdout is not None
        threading.Thread(target=_pump, args=(stdout, lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=0.2)
                if line.startswith(b"{"):
                    ready = json.loads(line)
                    assert ready["ready"] and ready["endpoint"].endswith(f":{self.http_port}")
                    return self
            if self.proc.poll() is not None:
                break
        raise AssertionError(f"the sink did not start:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM: finish the batches in hand, commit, exit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def status(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.http_port}/rhythm/status"
        with urllib.request.urlopen(url, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    def client(self) -> ChClient:
        """An analyst's clickhouse-connect client, through the sink's endpoint."""
        return clickhouse_connect.get_client(host="127.0.0.1", port=self.http_port)

    def admin(self) -> ChClient:
        """The endpoint's admin (writes and DDL), with the password the sink generated."""
        password = Path(f"{self.store}.admin").read_text().strip()
        return clickhouse_connect.get_client(
            host="127.0.0.1", port=self.http_port, username="rhythm_admin", password=password
        )

    def scalar(self, sql: str) -> Any:
        client = self.client()
        try:
            return client.query(sql).result_rows[0][0]
        finally:
            client.close()

    def keep_raw_rows(self) -> None:
        """Switch merges off for rhythm.events (a table setting: it holds across restarts of
        the sink), so that every row the sink wrote stays a row: a ReplacingMergeTree merge
        folds rows with one event_id, and FINAL does so at query time, which would hide a
        message written twice. With this, a message written twice (two inserts) stays two
        rows with one source position. Copies within one insert are still folded as it is
        written (ClickHouse's optimize_on_insert): re-sent events in the same batch as their
        first copy. Call it before the events arrive: a merge before it may have folded some."""
        admin = self.admin()
        try:
            admin.command(
                "ALTER TABLE rhythm.events MODIFY SETTING "
                "max_bytes_to_merge_at_max_space_in_pool = 1, "
                "max_bytes_to_merge_at_min_space_in_pool = 1"
            )
            engine = admin.query(
                "SELECT engine_full FROM system.tables WHERE database = 'rhythm' "
                "AND name = 'events'"
            ).result_rows[0][0]
        finally:
            admin.close()
        assert "max_bytes_to_merge_at_max_space_in_pool = 1" in engine, engine

    def raw_counts(self) -> tuple[int, int, int]:
        """rhythm.events as written, without FINAL: (rows, distinct event_ids, distinct
        source positions). A message stored twice is two rows with one position."""
        client = self.client()
        try:
            rows, ids, positions = client.query(
                "SELECT count(), uniqExact(event_id), uniqExact(kafka_partition, kafka_offset) "
                "FROM rhythm.events"
            ).result_rows[0]
        finally:
            client.close()
        return int(rows), int(ids), int(positions)

    def sync(self, timeout: float = 60.0) -> SyncReport:
        kafka = KafkaSettings(bootstrap_servers=self.bootstrap)
        return wait_for_sink(kafka, self.topics.written, timeout, group_id=self.group)


def _pump(stream: IO[bytes], lines: queue.SimpleQueue[bytes]) -> None:
    for line in stream:
        lines.put(line)


@contextlib.contextmanager
def running_sink(
    broker: LocalKafka, topics: Topics, workdir: Path, **settings: Any
) -> Iterator[SinkProcess]:
    sink = SinkProcess(
        broker.bootstrap, topics, workdir, f"sink-{uuid.uuid4().hex[:8]}", **settings
    )
    try:
        yield sink.start()
    finally:
        sink.close()


def publisher(bootstrap: str, topic: str) -> Client:
    return Client(
        ClientSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap), topic=topic, linger_ms=5)
    )


T0_MS = 1_790_856_000_000  # 2026-10-01T12:00:00Z


def event(i: int, **changes: Any) -> dict[str, Any]:
    """A canonical event with a deterministic id (so a re-send is a true duplicate)."""
    occurred = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0_MS / 1000 + i))
    return {
        "event_id": str(uuid.UUID(int=(1 << 64) + i)),
        "tenant": "acme",
        "occurred_at": f"{occurred}.{i % 1000:03d}Z",
        "actor": {"type": "user", "id": f"u-{i % 97}"},
        "verb": "viewed",
        "object": {"type": "doc", "id": f"d-{i % 13}"},
        "target": {"type": "account", "id": f"a-{i % 5}"},
        "channel": "web",
        "context_id": f"t-{i % 50}",
        "tags": ["bikes", "launch"],
        "weight": 1.0 + i % 3,
        "properties": {"n": i, "ok": i % 2 == 0},
    } | changes

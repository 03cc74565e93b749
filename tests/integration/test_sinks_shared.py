"""Two sinks in one consumer group sharing the partitions, as far as is real here: the embedded
store can be opened by ONE process, so the first sink opens it and serves ClickHouse's HTTP
interface, and the second writes through that interface with an http:// DSN, exactly as
several sinks write to a ClickHouse server in production. The second leaves mid-run; every
event lands once."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
import time
from pathlib import Path

import pytest

from rhythm.stack.kafka import LocalKafka

from .test_sink_support import RHYTHM, SinkProcess, _pump, event, make_topics, publisher

pytestmark = pytest.mark.integration


def start_writer(sink: SinkProcess, timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """`rhythm sink` on a server DSN (no endpoint of its own): waits for its ready line."""
    log = sink.log_path.open("ab")
    proc = subprocess.Popen([*RHYTHM, "sink"], env=sink.env, stdout=subprocess.PIPE, stderr=log)
    log.close()
    lines: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    assert proc.stdout is not None
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(queue.Empty):
            line = lines.get(timeout=0.2)
            if line.startswith(b"{") and json.loads(line)["ready"]:
                sink.proc = proc
                return proc
    proc.kill()
    raise AssertionError(f"the second sink did not start:\n{sink.log()[-3000:]}")


def test_two_sinks_share_the_partitions_and_one_leaves_mid_run(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    topics = make_topics(kafka_broker, "shared")
    group = "sink-shared-" + topics.events.rsplit(".", 1)[-1]
    first = SinkProcess(
        kafka_broker.bootstrap, topics, tmp_path / "a", group, group_instance_id=f"{group}-a"
    )
    (tmp_path / "a").mkdir()
    first.start()
    first.keep_raw_rows()  # no merges: raw rows are what both sinks wrote
    second = SinkProcess(
        kafka_broker.bootstrap,
        topics,
        tmp_path / "b",
        group,
        dsn=f"http://127.0.0.1:{first.http_port}",
        # the endpoint's admin: the password the first sink generated (0600, beside the store)
        clickhouse_user="rhythm_admin",
        clickhouse_password_file=f"{first.store}.admin",
        http_port=0,
        group_instance_id=f"{group}-b",
    )
    (tmp_path / "b").mkdir()
    total = 6000
    try:
        start_writer(second)
        # Publish only once the group has split the partitions: before that the first sink
        # owns them all and may write everything, leaving the second nothing to show.
        deadline = time.monotonic() + 90
        while "rhythm.sinks.consumer: assigned ['" not in second.log():
            assert time.monotonic() < deadline, second.log()[-2000:]
            time.sleep(0.2)
        with publisher(kafka_broker.bootstrap, topics.events) as producer:
            for i in range(total // 2):
                producer.send(event(i))
            assert producer.flush(30) == 0
            # Both have written: the second's own metrics count rows it inserted.
            deadline = time.monotonic() + 90
            while not _wrote(second):
                assert time.monotonic() < deadline, second.log()[-2000:]
                time.sleep(0.2)
            assert second.stop() == 0  # leaves mid-run: its partitions go to the first
            for i in range(total // 2, total):
                producer.send(event(i))
            for i in range(0, total, 7):  # and re-sends: same event_id
                producer.send(event(i))
            assert producer.flush(30) == 0
        assert first.sync(120), first.log()[-2000:]
        assert first.scalar("SELECT count() FROM rhythm.events FINAL") == total
        # Raw rows, not FINAL (which folds duplicates by construction): one per message on
        # the topic (the re-sends too), none written twice by the handover.
        rows, ids, positions = first.raw_counts()
        assert (ids, rows - positions) == (total, 0)
        assert total <= rows <= total + len(range(0, total, 7))  # re-sends, some folded
    finally:
        second.close()
        first.close()


def _wrote(sink: SinkProcess) -> bool:
    for line in sink.metrics().splitlines():
        if line.startswith("rhythm_sink_rows_written_total") and 'table="events"' in line:
            return float(line.rsplit(" ", 1)[1]) > 0
    return False

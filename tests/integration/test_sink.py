"""The sink on the real broker and the embedded store: events, signals and alerts in, each
exactly once, queryable through the sink's endpoint while it runs; the CLI around it."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from rhythm.schemas.outputs import Alert, Signal, alert_id
from rhythm.stack.kafka import LocalKafka

from .test_sink_support import RHYTHM, event, make_topics, publisher, running_sink

pytestmark = pytest.mark.integration


def test_events_land_once_and_analysts_query_while_the_sink_runs(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    topics = make_topics(kafka_broker, "events")
    total, resent = 3000, 300
    with running_sink(kafka_broker, topics, tmp_path) as sink:
        sink.keep_raw_rows()  # no merges: raw rows are what was written
        seen: list[int] = []
        errors: list[BaseException] = []
        done = threading.Event()

        def analyst() -> None:  # an analyst's clickhouse-connect client, all along
            client = sink.client()
            # FINAL: without it the re-sent events count twice until a background merge folds
            # them, and the count can then go down (seen once under load).
            query = "SELECT count() FROM rhythm.events FINAL"
            try:
                while not done.is_set():
                    seen.append(client.query(query).result_rows[0][0])
            except BaseException as exc:
                errors.append(exc)
            finally:
                client.close()

        reader = threading.Thread(target=analyst)
        reader.start()
        with publisher(kafka_broker.bootstrap, topics.events) as producer:
            for i in range(total):
                producer.send(event(i))
            for i in range(0, total, total // resent):  # re-sent: same event_id, same event
                producer.send(event(i))
            assert producer.flush(30) == 0
        assert sink.sync(60), sink.log()[-2000:]
        done.set()
        reader.join(30)
        assert errors == [] and len(seen) > 1 and seen == sorted(seen)

        assert sink.scalar("SELECT count() FROM rhythm.events FINAL") == total
        # Raw rows (FINAL folds one event_id into one row, so it cannot show a duplicate): no
        # message is two rows, and beyond one row per event there are at most the re-sends
        # (those in their first copy's insert are folded as it is written).
        rows, ids, positions = sink.raw_counts()
        assert (ids, rows - positions) == (total, 0)
        assert total <= rows <= total + resent
        # actor, object, target and two tags per event
        assert sink.scalar("SELECT count() FROM rhythm.entity_events FINAL") == 5 * total
        analyst_client = sink.client()
        try:
            row = analyst_client.query(
                "SELECT tenant, actor_id, tags, properties, kafka_offset >= 0 FROM rhythm.events "
                "FINAL WHERE event_id = {id:UUID}",
                parameters={"id": event(7)["event_id"]},
            ).result_rows
            assert row == [("acme", "u-7", ["bikes", "launch"], {"n": "7", "ok": "false"}, True)]
            timeline = analyst_client.query(
                "SELECT count() FROM rhythm.entity_timeline(tenant='acme', entity_type='user', "
                "entity_id='u-7')"
            ).result_rows
            assert timeline == [(len(range(7, total, 97)),)]
        finally:
            analyst_client.close()

        metrics = sink.metrics()
        assert 'rhythm_sink_rows_written_total{table="events"}' in metrics
        assert 'rhythm_sink_freshness_seconds_count{table="events"}' in metrics

        # The CLI beside the running sink goes through its endpoint.
        env = sink.env
        query = subprocess.run(
            [*RHYTHM, "query", "SELECT count() FROM rhythm.events FINAL", "--format", "TSV"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (query.returncode, query.stdout) == (0, f"{total}\n"), query.stderr
        migrate = subprocess.run(
            [*RHYTHM, "migrate"], env=env, capture_output=True, text=True, timeout=60
        )
        assert migrate.returncode == 0, migrate.stderr
        assert "endpoint" in migrate.stdout and "applied: none" in migrate.stdout
        synced = subprocess.run(
            [*RHYTHM, "sync", "--sink-only", "--timeout", "30"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert synced.returncode == 0, synced.stderr
        assert sink.stop() == 0

    # Stopped: the store opens directly again.
    query = subprocess.run(
        [*RHYTHM, "query", "SELECT count() FROM rhythm.events FINAL FORMAT TSV"],
        env=sink.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (query.returncode, query.stdout) == (0, f"{total}\n"), query.stderr


def test_sync_fails_with_what_is_missing_when_the_sink_is_not_running(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    topics = make_topics(kafka_broker, "nosink")
    with running_sink(kafka_broker, topics, tmp_path) as sink:
        assert sink.stop() == 0
    with publisher(kafka_broker.bootstrap, topics.events) as client:
        for i in range(10):
            client.send(event(i))
        assert client.flush(30) == 0
    synced = subprocess.run(
        [*RHYTHM, "sync", "--sink-only", "--timeout", "2"],
        env=sink.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert synced.returncode == 1
    assert "messages not written" in synced.stderr
    # Other tests may have left messages on the shared topics (people): count this topic's.
    left = [
        int(m.group(1))
        for m in re.finditer(re.escape(topics.events) + r"\[\d+\]: .*\((\d+) left\)", synced.stderr)
    ]
    assert sum(left) == 10, synced.stderr


def signal_value(entity: str, version: int, count: int) -> dict[str, Any]:
    return {
        "tenant": "acme", "role": "actor", "entity_type": "user", "entity_id": entity,
        "window_start": 1_790_852_400_000, "window_seconds": 3600, "event_count": count,
        "weight_sum": count * 1.5, "weight_max": 2.0, "gap_count": count - 1,
        "gap_min_s": 1.0 if count > 1 else None, "gap_max_s": 60.0 if count > 1 else None,
        "gap_mean_s": 10.5 if count > 1 else None, "first_event_at": 1_790_852_401_000,
        "last_event_at": 1_790_855_000_000, "silence_before_s": 7200.0, "late_count": version - 1,
        "version": version,
    }  # fmt: skip


def alert_value(kind: str, entity: str, fired_at: int) -> dict[str, Any]:
    value: dict[str, Any] = {
        "kind": kind, "tenant": "acme", "role": "actor", "entity_type": "user",
        "entity_id": entity, "context_id": None, "fired_at": fired_at,
        "last_event_at": fired_at - 3_600_000, "expected_within_s": 1800.0,
        "details": {"threshold_s": 1800, "history": 12},
    }  # fmt: skip
    value["alert_id"] = alert_id(value)
    return value


def test_signals_and_alerts_land_as_emitted(kafka_broker: LocalKafka, tmp_path: Path) -> None:
    topics = make_topics(kafka_broker, "outputs")
    signals = [Signal.model_validate(signal_value(f"u-{i}", 1, i + 1)) for i in range(20)]
    corrected = Signal.model_validate(signal_value("u-3", 2, 9))
    alerts = [
        Alert.model_validate(alert_value("silence", "u-1", 1_790_860_000_000)),
        Alert.model_validate(alert_value("resumed", "u-1", 1_790_861_000_000)),
        Alert.model_validate(alert_value("silence", "u-2", 1_790_860_000_000)),
    ]
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for s in signals:
        producer.produce(topics.signals, s.model_dump_json().encode(), key=s.entity_id.encode())
    producer.produce(topics.signals, corrected.model_dump_json().encode(), key=b"u-3")
    for a in [*alerts, alerts[0]]:  # the first one re-sent
        producer.produce(topics.alerts, a.model_dump_json().encode(), key=a.entity_id.encode())
    assert producer.flush(30) == 0

    with running_sink(kafka_broker, topics, tmp_path) as sink:
        assert sink.sync(60), sink.log()[-2000:]
        client = sink.client()
        try:
            names = list(Signal.model_fields)
            columns = [f"toUnixTimestamp64Milli({n})" if n in _TIMES else n for n in names]
            rows = client.query(
                f"SELECT {', '.join(columns)} FROM rhythm.signals FINAL ORDER BY entity_id"
            ).result_rows
            got = {r[3]: dict(zip(names, r, strict=True)) for r in rows}
            expected = {s.entity_id: s.model_dump() for s in signals}
            expected["u-3"] = corrected.model_dump()  # the higher version
            assert got == expected
            assert sink.scalar("SELECT count() FROM rhythm.signals FINAL") == 20

            alert_rows = client.query(
                "SELECT alert_id, kind, entity_id, context_id, toUnixTimestamp64Milli(fired_at), "
                "expected_within_s, details FROM rhythm.alerts FINAL "
                "ORDER BY fired_at, kind, entity_id"
            ).result_rows
            assert [
                (a.alert_id, a.kind, a.entity_id, a.context_id, a.fired_at, a.expected_within_s)
                for a in sorted(alerts, key=lambda a: (a.fired_at, a.kind, a.entity_id))
            ] == [r[:6] for r in alert_rows]
            assert all(json.loads(r[6]) == {"threshold_s": 1800, "history": 12} for r in alert_rows)
            open_alerts = client.query("SELECT entity_id, kind FROM rhythm.open_alerts").result_rows
            assert open_alerts == [("u-2", "silence")]
        finally:
            client.close()


_TIMES = {"window_start", "first_event_at", "last_event_at"}

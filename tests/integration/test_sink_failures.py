"""The sink when things go wrong: killed with SIGKILL in the middle of a backlog, ClickHouse
unavailable for a while, poison messages. Real broker, real embedded store, real process."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from rhythm.stack.kafka import LocalKafka

from .conftest import read_topic
from .test_sink_support import (
    SinkProcess,
    event,
    make_topics,
    poll,
    publisher,
    running_sink,
)

pytestmark = pytest.mark.integration


def publish_events(bootstrap: str, topic: str, numbers: range) -> None:
    with publisher(bootstrap, topic) as client:
        for i in numbers:
            client.send(event(i))
        assert client.flush(60) == 0


def test_a_sink_killed_mid_batch_and_restarted_writes_each_event_once(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    topics = make_topics(kafka_broker, "sigkill")
    total = 60_000
    publish_events(kafka_broker.bootstrap, topics.events, range(total))
    sink = SinkProcess(
        kafka_broker.bootstrap, topics, tmp_path, "sink-sigkill",
        batch_max_rows=3000, buffer_max_rows=12_000,
    )  # fmt: skip
    try:
        sink.start()
        # No merges from here on (the first batches may already be in: this test published
        # before the sink made its tables; a merge can only hide a duplicate, never make one).
        sink.keep_raw_rows()

        def writing() -> dict[str, Any] | None:
            # Batches under a committed intent, two (the writer cannot finish both between
            # this look and the kill): sealed batches whose intent is not committed yet (the
            # group's coordinator still loading) are no evidence, a restart has nothing to
            # rebuild then.
            status = sink.status()
            busy = status["batches_written"] >= 2 and status["intended_batches"] >= 2
            return status if busy else None

        status = poll(writing, 60, "the sink to be writing its backlog", interval=0.02)
        sink.kill()  # SIGKILL: no shutdown, no final commit, maybe half an insert
        assert status["batches_written"] * 3000 < total

        sink.start()
        assert sink.sync(120), sink.log()[-3000:]
        assert "rebuilding" in sink.log()  # the second run found the first one's intents
        assert sink.scalar("SELECT count() FROM rhythm.events FINAL") == total
        # The retried batches were dropped by their tokens, not merely folded by FINAL: raw
        # rows, one per message.
        assert sink.raw_counts() == (total, total, total)

        # SIGTERM in the middle of more work: what is in hand is written and committed, so
        # the next run has nothing to rebuild.
        publish_events(kafka_broker.bootstrap, topics.events, range(total, total + 20_000))
        before = sink.status()["batches_written"]
        poll(lambda: sink.status()["batches_written"] > before, 60, "more batches")
        assert sink.stop() == 0
        log_before = len(sink.log())
        sink.start()
        assert sink.sync(120), sink.log()[-3000:]
        assert "rebuilding" not in sink.log()[log_before:]
        assert sink.raw_counts() == (total + 20_000,) * 3
        assert sink.stop() == 0
    finally:
        sink.close()


def test_clickhouse_away_pauses_consumption_and_nothing_is_lost_or_doubled(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    topics = make_topics(kafka_broker, "outage")
    bound = 2000
    with running_sink(
        kafka_broker, topics, tmp_path, batch_max_rows=500, buffer_max_rows=bound
    ) as sink:
        sink.keep_raw_rows()
        publish_events(kafka_broker.bootstrap, topics.events, range(1000))
        assert sink.sync(60)
        analyst = sink.admin()
        try:
            analyst.command("DETACH TABLE rhythm.events")  # through the sink's own endpoint
            publish_events(kafka_broker.bootstrap, topics.events, range(1000, 9000))

            def paused() -> dict[str, Any] | None:
                status = sink.status()
                full = status["paused_partitions"] > 0 and status["retrying"]
                # the lag (refreshed every 2 s) shows the rest waits in Kafka, not in memory
                waiting = sum(status["lag"].values()) > 9000 - bound - 1000
                return status if full and waiting else None

            status = poll(paused, 60, "the sink to pause with a full buffer and lag")
            assert "UNKNOWN_TABLE" in status["last_error"]
            assert status["held_messages"] <= bound
            for _ in range(20):  # it stays paused and bounded while ClickHouse is away
                status = sink.status()
                assert status["held_messages"] <= bound and status["paused_partitions"] > 0
            analyst.command("ATTACH TABLE rhythm.events")
        finally:
            analyst.close()
        assert sink.sync(120), sink.log()[-3000:]
        status = sink.status()
        assert status["held_messages_max"] <= bound
        assert sink.raw_counts() == (9000, 9000, 9000)  # raw rows, merges off: not even FINAL
        assert sink.scalar("SELECT count() FROM rhythm.entity_events FINAL") == 5 * 9000
        metrics = sink.metrics()
        assert 'rhythm_sink_retries_total{reason="UNKNOWN_TABLE",target="events"}' in metrics
        assert "rhythm_sink_buffered_rows_max" in metrics


def test_poison_messages_become_dead_letters_and_the_pipeline_goes_on(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    topics = make_topics(kafka_broker, "poison")
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    poison = [
        (topics.events, b"garbage bytes \xff\xfe", "bad_magic"),
        (topics.events, json.dumps(event(1)).encode(), "bad_magic"),  # JSON, not the wire
        (topics.events, b"\x00\x00\x00\x00\x01\x02", "bad_avro"),
        (topics.events, None, "empty"),  # a tombstone
        (topics.signals, b'{"tenant": "acme", oops', "invalid_json"),
        (
            topics.signals,
            json.dumps({"tenant": "acme", "event_count": "many"}).encode(),
            "invalid_signal",
        ),
        (topics.alerts, b"\xff\xfe not even text", "invalid_json"),
        (topics.alerts, json.dumps({"alert_id": "x", "kind": "panic"}).encode(), "invalid_alert"),
    ]
    for topic, value, _reason in poison:
        producer.produce(topic, value, key=b"k", partition=0)
    assert producer.flush(30) == 0
    with running_sink(kafka_broker, topics, tmp_path) as sink:
        publish_events(kafka_broker.bootstrap, topics.events, range(100))  # after the poison
        assert sink.sync(60), sink.log()[-3000:]
        assert sink.scalar("SELECT count() FROM rhythm.events FINAL") == 100
        client = sink.client()
        try:
            rows = client.query(
                "SELECT topic, kafka_partition, kafka_offset, reason, detail, value_b64, "
                "value_size FROM rhythm.dead_letters FINAL ORDER BY topic, kafka_offset"
            ).result_rows
        finally:
            client.close()
        got = sorted((r[0], r[3]) for r in rows)
        assert got == sorted((topic, reason) for topic, _value, reason in poison)
        assert all(r[1] == 0 and r[4] for r in rows)  # the partition, and why in words
        events_rows = [r for r in rows if r[0] == topics.events]
        assert [r[2] for r in events_rows] == [0, 1, 2, 3]  # where they were
        assert base64.b64decode(events_rows[0][5]) == b"garbage bytes \xff\xfe"
        metrics = sink.metrics()
        assert 'rhythm_sink_dead_letters_total{reason="bad_magic",topic="events"} 2.0' in metrics

    letters = read_topic(kafka_broker.bootstrap, topics.dead_letters, len(poison))
    assert len(letters) == len(poison)
    reasons = []
    for letter in letters:
        headers: dict[str, str] = {}
        for item in letter.headers() or []:
            assert isinstance(item, tuple) and isinstance(item[1], bytes)
            headers[item[0]] = item[1].decode()
        reasons.append(headers["rhythm.reason"])
        assert headers["rhythm.source.topic"] in topics.written
        assert int(headers["rhythm.source.offset"]) >= 0
    assert sorted(reasons) == sorted(reason for _t, _v, reason in poison)


def test_the_raw_count_shows_a_message_written_twice_where_final_does_not(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    """What the duplicate checks here and in tests/faults count on: with merges off, ten rows
    written a second time (as a retried batch whose token did not drop it would be) are ten
    rows too many in the raw count, while FINAL still says every event is there once."""
    topics = make_topics(kafka_broker, "rawcount")
    with running_sink(kafka_broker, topics, tmp_path) as sink:
        sink.keep_raw_rows()
        publish_events(kafka_broker.bootstrap, topics.events, range(100))
        assert sink.sync(60), sink.log()[-2000:]
        assert sink.raw_counts() == (100, 100, 100)
        admin = sink.admin()
        try:
            admin.command("INSERT INTO rhythm.events SELECT * FROM rhythm.events LIMIT 10")
        finally:
            admin.close()
        rows, ids, positions = sink.raw_counts()
        assert (rows - positions, rows - ids) == (10, 10)
        assert sink.scalar("SELECT count() FROM rhythm.events FINAL") == 100  # hidden there

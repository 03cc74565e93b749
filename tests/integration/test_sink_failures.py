"""The sink when things go wrong: killed with SIGKILL in the middle of a backlog, ClickHouse
unavailable for a while, poison messages. Real broker, real embedded store, real process."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from rhythm.sinks.batcher import intent_metadata, parse_intent
from rhythm.stack.kafka import LocalKafka

from .conftest import read_topic
from .test_sink_support import (
    SinkProcess,
    Topics,
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


def committed_intents(bootstrap: str, group: str, topic: str) -> list[list[int]]:
    """The batch ends each partition's committed offset names (the sink's intents), read
    from outside the sink as an operator's tool would."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
    finally:
        consumer.close()
    return [parse_intent(tp.metadata) for tp in committed]


def own_side_topics(topics: Topics) -> dict[str, str]:
    """Sink settings giving it empty people/notifications/feedback/history topics of its
    own: what other tests left in the shared ones would take room in its buffer and cut
    batches a test needs whole."""
    names = ("people", "notifications", "feedback", "history")
    return {f"{name}_topic": f"{name}.{topics.events}" for name in names}


def commit_intents(
    bootstrap: str, group: str, topic: str, end: Callable[[int], int]
) -> list[tuple[int, int]]:
    """As a crashed sink would leave them: each of the topic's 4 partitions committed at
    offset 0 with an intent naming one batch ending at `end(log end)`. Returns each
    partition's (committed offset before, log end)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        partitions = [TopicPartition(topic, p) for p in range(4)]
        before = consumer.committed(partitions, timeout=10)
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
        intents = [
            TopicPartition(topic, tp.partition, 0, intent_metadata([end(high)]))
            for tp, high in zip(partitions, ends, strict=True)
        ]
        consumer.commit(offsets=intents, asynchronous=False)
    finally:
        consumer.close()
    return [(done.offset, high) for done, high in zip(before, ends, strict=True)]


def test_a_sink_killed_mid_batch_and_restarted_writes_each_event_once(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    topics = make_topics(kafka_broker, "sigkill")
    total = 60_000
    publish_events(kafka_broker.bootstrap, topics.events, range(total))
    group = "sink-sigkill"
    sink = SinkProcess(
        kafka_broker.bootstrap, topics, tmp_path, group, batch_max_rows=3000,
        buffer_max_rows=12_000,
    )  # fmt: skip
    try:
        sink.start()
        # No merges from here on (the first batches may already be in: this test published
        # before the sink made its tables; a merge can only hide a duplicate, never make one).
        sink.keep_raw_rows()

        # 1. SIGKILL at whatever point of the backlog the sink has reached once two batches
        # are written: maybe in the middle of an insert, maybe between one and its commit.
        poll(lambda: sink.status()["batches_written"] >= 2, 60, "the sink writing its backlog")
        sink.kill()
        sink.start()
        assert sink.sync(120), sink.log()[-3000:]
        assert sink.scalar("SELECT count() FROM rhythm.events FINAL") == total
        # The retried batches were dropped by their tokens, not merely folded by FINAL: raw
        # rows, one per message.
        assert sink.raw_counts() == (total, total, total)

        # 2. SIGKILL with batches certainly under intent and unwritten: the store refuses
        # inserts (the table detached; a restart of the store attaches it again).
        admin = sink.admin()
        try:
            admin.command("DETACH TABLE rhythm.events")
        finally:
            admin.close()
        publish_events(kafka_broker.bootstrap, topics.events, range(total, total + 10_000))

        def stuck() -> list[list[int]] | None:
            intents = committed_intents(kafka_broker.bootstrap, group, topics.events)
            return intents if sink.status()["retrying"] and any(intents) else None

        intents = poll(stuck, 60, "intents committed for batches the store refuses")
        sink.kill()
        before = len(sink.log())
        sink.start()
        assert sink.sync(120), sink.log()[-3000:]
        rebuilt = sink.log()[before:].count("the last run was writing")
        assert rebuilt == sum(1 for ends in intents if ends)  # every such partition
        total += 10_000
        assert sink.raw_counts() == (total, total, total)

        # 3. SIGTERM in the middle of more work: what is in hand is written and committed,
        # so the next run has nothing to rebuild.
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


def test_batches_rebuilt_from_an_intent_are_never_cut_short_by_a_full_buffer(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    """The first run wrote one batch per partition and died before committing past them (its
    intent names them). The second run's buffer is smaller than any of those batches: each is
    still rebuilt whole, so its token is the first attempt's and ClickHouse drops it. (Cut
    short at the buffer's size, as the sink once did, its rows would be stored twice: seen in
    CI as 62,932 raw rows for 60,000 events after a kill.)"""
    topics = make_topics(kafka_broker, "rebuild")
    total = 8000
    publish_events(kafka_broker.bootstrap, topics.events, range(total))
    group = "sink-rebuild"
    # Not a static member: a stopped sink leaves the group, so its offsets can be set after.
    alone = own_side_topics(topics)
    first = SinkProcess(
        kafka_broker.bootstrap, topics, tmp_path, group, group_instance_id="",
        batch_max_rows=total, buffer_max_rows=total, batch_max_seconds=600, **alone,
    )  # fmt: skip
    second = SinkProcess(
        kafka_broker.bootstrap, topics, tmp_path, group, group_instance_id="",
        batch_max_rows=500, buffer_max_rows=1000, **alone,
    )  # fmt: skip
    try:
        first.start()
        first.keep_raw_rows()
        poll(lambda: first.status()["held_messages"] == total, 60, "every event read")
        assert first.stop() == 0  # seals one batch per partition, writes it, commits

        logs = commit_intents(kafka_broker.bootstrap, group, topics.events, lambda high: high - 1)
        for done, high in logs:
            assert done == high  # written (the sink commits only what is stored)
            assert high > 1000  # each batch is bigger than the second run's buffer
        ends = [high for _done, high in logs]

        second.start()
        assert second.sync(120), second.log()[-3000:]
        assert second.log().count("rebuilding 1 batch(es) from 0") == 4
        assert second.raw_counts() == (total, total, total)
        held = second.status()["held_messages_max"]
        assert 1000 < held < 1000 + max(ends)  # over the buffer, by less than a batch
        assert second.stop() == 0
    finally:
        first.close()
        second.close()


def test_an_intent_past_the_end_of_the_log_does_not_stall_a_full_buffer(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    """An intent naming offsets the log no longer reaches (a topic emptied and refilled, a
    truncation): the rebuilt batch, which the full buffer may not cut, is closed where the log
    ends instead of being waited for, and everything is written once."""
    topics = make_topics(kafka_broker, "pastend")
    total = 4000
    publish_events(kafka_broker.bootstrap, topics.events, range(total))
    group = "sink-pastend"
    logs = commit_intents(kafka_broker.bootstrap, group, topics.events, lambda high: high + 500)
    assert all(high > 500 for _done, high in logs)
    sink = SinkProcess(
        kafka_broker.bootstrap, topics, tmp_path, group, group_instance_id="",
        batch_max_rows=200, buffer_max_rows=500, **own_side_topics(topics),
    )  # fmt: skip
    try:
        sink.start()
        sink.keep_raw_rows()
        assert sink.sync(120), sink.log()[-3000:]
        assert sink.log().count("rebuilding 1 batch(es) from 0") == 4
        assert sink.raw_counts() == (total, total, total)
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

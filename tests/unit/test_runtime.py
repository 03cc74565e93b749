"""rhythm.runtime's pure parts: lag arithmetic and one registry per part."""

from __future__ import annotations

from prometheus_client import generate_latest

from rhythm.processors.metrics import ProcessorMetrics
from rhythm.runtime.metrics import part_registry
from rhythm.runtime.offsets import lag


def test_lag_counts_from_zero_when_nothing_is_done() -> None:
    assert lag(10, None) == 10
    assert lag(10, -1001) == 10  # librdkafka's OFFSET_INVALID
    assert lag(10, 4) == 6
    assert lag(10, 12) == 0  # a stale end offset never makes lag negative


def test_two_workers_in_one_process_keep_their_own_counts() -> None:
    a, b = ProcessorMetrics(), ProcessorMetrics()
    a.dead_letter("invalid_event")
    assert (
        a.registry.get_sample_value(
            "rhythm_processor_dead_letters_total", {"reason": "invalid_event"}
        )
        == 1.0
    )
    assert (
        b.registry.get_sample_value(
            "rhythm_processor_dead_letters_total", {"reason": "invalid_event"}
        )
        is None
    )


def test_a_part_registry_carries_the_process_metrics() -> None:
    text = generate_latest(part_registry()).decode()
    assert "process_resident_memory_bytes" in text
    assert "python_gc_objects_collected_total" in text
    assert (
        "process_resident_memory_bytes"
        not in generate_latest(part_registry(process=False)).decode()
    )


def test_a_dead_letter_says_why_and_where_and_reads_back() -> None:
    from rhythm.schemas import dead_letters

    value, extra = dead_letters.cut(b"x" * (dead_letters.VALUE_MAX_BYTES + 10))
    assert len(value) == dead_letters.VALUE_MAX_BYTES
    raw = dead_letters.headers("invalid_update", "é" * 900, "rhythm.updates", 3, 17, extra=extra)
    got = dead_letters.read(raw)
    assert (got.reason, got.topic, got.partition, got.offset) == (
        "invalid_update", "rhythm.updates", 3, 17,
    )  # fmt: skip
    assert len(dict(raw)["rhythm.detail"] or b"") <= dead_letters.DETAIL_MAX_BYTES
    assert got.extra == {"rhythm.value.size": str(dead_letters.VALUE_MAX_BYTES + 10)}
    # No Kafka position (state read back at restore): no partition/offset headers at all.
    assert dead_letters.read(dead_letters.headers("invalid_state", "", "t", 0, -1)).offset is None
    assert dead_letters.cut(b"small") == (b"small", [])


def test_a_client_counts_in_the_registry_it_was_given() -> None:
    from prometheus_client import CollectorRegistry

    from rhythm.producers import Client, ClientSettings
    from rhythm.runtime.kafka_settings import KafkaSettings

    mine = CollectorRegistry()
    client = Client(
        ClientSettings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1")), registry=mine
    )
    try:
        before = mine.get_sample_value("rhythm_client_events_tracked_total")
        assert before == 0.0  # registered with this registry at creation, nothing counted
    finally:
        client.close(timeout=0)

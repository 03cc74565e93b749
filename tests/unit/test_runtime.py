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

"""The collector bench's pure parts: Server-Timing and loadgen's output parsed, the slowest
requests' breakdown, the machine's CPU use between two readings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench.collector_bench import (
    STAGES,
    Request,
    broker_gc,
    kafka_stats,
    machine_use,
    parse_loadgen,
    server_timing,
    tail_breakdown,
)


def test_server_timing_reads_each_duration() -> None:
    header = 'read;dur=0.100, map;dur=1.250, kafka;desc="ack";dur=3, total;dur=4.35'
    assert server_timing(header) == {"read": 0.1, "map": 1.25, "kafka": 3.0, "total": 4.35}
    assert server_timing("") == {}
    assert server_timing("cache") == {}  # a metric without a duration


def test_parse_loadgen_takes_one_request_per_line() -> None:
    lines = [
        {"i": 0, "due": 0, "sent": 1_000_000, "done": 11_000_000, "status": 200,
         "timing": "read;dur=1, total;dur=9"},
        {"i": 1, "due": 10_000_000, "sent": 10_000_000, "done": 0, "status": 0,
         "error": "connection refused"},
        {"i": 2, "due": 20_000_000, "sent": 20_000_000, "done": 25_000_000, "status": 429,
         "retry": "1"},
    ]  # fmt: skip
    requests = parse_loadgen("\n".join(json.dumps(x) for x in lines) + "\n")
    assert [r.status for r in requests] == [200, 0, 429]
    first = requests[0]
    assert first.latency == pytest.approx(0.011)  # from when it was due, not when it was sent
    assert first.stages == {"read": 1.0, "total": 9.0}
    assert requests[2].retry_after == "1"


def _request(latency_ms: float, **stages: float) -> Request:
    return Request(0.0, 0.001, latency_ms / 1000, 200, dict(stages))


def test_the_tail_breakdown_is_of_the_slowest_requests_only() -> None:
    fast = [_request(5, map=1, publish=1, kafka=2, total=4) for _ in range(198)]
    slow = [
        _request(100, map=2, publish=3, kafka=60, wake=5, total=70),
        _request(200, map=2, publish=3, kafka=160, wake=5, total=170),
    ]
    tail = tail_breakdown(fast + slow)
    assert tail["latency"] == pytest.approx(150)
    assert tail["kafka"] == pytest.approx(110)
    assert tail["outside"] == pytest.approx(30)  # what loadgen saw beyond the handler
    assert tail["late"] == pytest.approx(1)
    assert set(STAGES) <= set(tail)


def test_machine_use_between_two_readings() -> None:
    before = [100, 50, 10, 1000, 5, 0, 0, 0]
    after = [160, 70, 20, 1100, 15, 0, 0, 0]  # +60 user, +20 nice, +10 sys, +100 idle, +10 io
    busy, niced = machine_use(before, after)
    assert busy == pytest.approx(100 * 90 / 200)
    assert niced == pytest.approx(100 * 20 / 200)


def test_kafka_stats_takes_the_worst_window() -> None:
    log = "\n".join(
        [
            "2026-12-06 INFO rhythm.collector: collector on http://127.0.0.1:1",
            'INFO rhythm.collector: kafka stats {"int_p99_ms": 2.5, "rtt_p99_ms": 4.0}',
            'INFO rhythm.collector: kafka stats {"int_p99_ms": 1.5, "rtt_p99_ms": 40.0}',
        ]
    )
    assert kafka_stats(log) == {"int_p99_ms": 2.5, "rtt_p99_ms": 40.0}
    assert kafka_stats("") == {}


def test_broker_gc_reads_the_pauses_of_a_jvm_gc_log(tmp_path: Path) -> None:
    log = tmp_path / "gc.log"
    log.write_text(
        "[2026-12-06T18:48:38.708+0000] Using G1\n"
        "[2026-12-06T18:48:39.000+0000] GC(0) Pause Young (Normal) (G1 Evacuation Pause) "
        "24M->3M(512M) 4.044ms\n"
        "[2026-12-06T18:48:45.431+0000] GC(1) Pause Young (Normal) (G1 Evacuation Pause) "
        "40M->5M(512M) 40.517ms\n"
    )
    assert broker_gc(log) == "2, 1 over 10 ms, longest 41 ms"
    assert broker_gc(tmp_path / "absent.log") == "none logged"

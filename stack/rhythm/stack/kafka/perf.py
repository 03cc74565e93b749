"""Parsing the output of Kafka's producer and consumer perf tools into numbers."""

from __future__ import annotations

import logging
import re

from rhythm.stack.kafka.settings import LocalKafkaError, tail_lines

log = logging.getLogger(__name__)

_PRODUCER_SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<records_per_s>[\d.]+) records/sec "
    r"\((?P<mb_per_s>[\d.]+) MB/sec\), (?P<avg_latency_ms>[\d.]+) ms avg latency, "
    r"(?P<max_latency_ms>[\d.]+) ms max latency, (?P<p50_ms>\d+) ms 50th, "
    r"(?P<p95_ms>\d+) ms 95th, (?P<p99_ms>\d+) ms 99th, (?P<p999_ms>\d+) ms 99\.9th"
)

_CONSUMER_FIELDS = {
    "data.consumed.in.MB": "mb",
    "MB.sec": "mb_per_s",
    "data.consumed.in.nMsg": "records",
    "nMsg.sec": "records_per_s",
    "rebalance.time.ms": "rebalance_ms",
    "fetch.time.ms": "fetch_ms",
    "fetch.MB.sec": "fetch_mb_per_s",
    "fetch.nMsg.sec": "fetch_records_per_s",
}


def parse_producer_perf(output: str) -> dict[str, float]:
    """The final summary of ProducerPerformance as numbers: records, records_per_s, mb_per_s,
    avg_latency_ms, max_latency_ms, p50_ms, p95_ms, p99_ms, p999_ms."""
    matches = list(_PRODUCER_SUMMARY.finditer(output))
    if not matches:
        raise LocalKafkaError(
            f"no ProducerPerformance summary in its output:\n{tail_lines(output)}"
        )
    return {key: float(value) for key, value in matches[-1].groupdict().items()}


def parse_consumer_perf(output: str) -> dict[str, float]:
    """The summary of ConsumerPerformance as numbers: mb, mb_per_s, records, records_per_s,
    rebalance_ms, fetch_ms, fetch_mb_per_s, fetch_records_per_s."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if not line.startswith("start.time"):
            continue
        header = [h.strip() for h in line.split(",")]
        # The values follow the header, possibly after a WARNING line (e.g. on timeout).
        for candidate in lines[index + 1 :]:
            values = [v.strip() for v in candidate.split(",")]
            if len(values) != len(header):
                continue
            try:
                return {
                    _CONSUMER_FIELDS[name]: float(value)
                    for name, value in zip(header, values, strict=True)
                    if name in _CONSUMER_FIELDS
                }
            except ValueError:
                continue
    raise LocalKafkaError(f"no ConsumerPerformance summary in its output:\n{tail_lines(output)}")

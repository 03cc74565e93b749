"""The collector's Prometheus metrics, in a registry of its own (one per collector, so tests
and embedding applications can run several), with the client library's delivery metrics
beside them. Labels are bounded: routes (a fixed set), status codes, outcomes and reasons
(fixed words); never a key, a tenant name from a body, or an event's content."""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rhythm.runtime.metrics import part_registry

__all__ = ["CollectorMetrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else part_registry()
        r = self.registry
        self.requests = Counter(
            "rhythm_collector_requests", "HTTP requests answered.", ["route", "status"], registry=r
        )
        self.events = Counter(
            "rhythm_collector_events",
            "Messages received, by outcome (accepted: acknowledged by Kafka; rejected).",
            ["route", "outcome"],
            registry=r,
        )
        self.rejects = Counter(
            "rhythm_collector_rejects",
            "Requests or messages refused, by reason (a fixed set: docs/collector.md).",
            ["reason"],
            registry=r,
        )
        self.latency = Histogram(
            "rhythm_collector_request_seconds",
            "Time from a request's arrival to its answer.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stages = Histogram(
            "rhythm_collector_stage_seconds",
            "Where requests' time goes: read (auth and body), map (JSON and the field mapping), "
            "publish (validation, Avro, produce), kafka (produce to acknowledgement, as "
            "librdkafka measured it), report (until the delivery report was served), wake "
            "(until the event loop resumed the request).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.gc_pauses = Histogram(
            "rhythm_collector_gc_seconds",
            "Python's cyclic garbage collections in the collector, by generation (each one "
            "stops the event loop).",
            ["generation"],
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.inflight = Gauge(
            "rhythm_collector_buffer_events",
            "Events sent to Kafka and not yet acknowledged (the bounded buffer).",
            registry=r,
        )
        self.buffer_max = Gauge(
            "rhythm_collector_buffer_max_events", "The buffer's bound.", registry=r
        )

    def watch_gc(self) -> None:
        """Time every cyclic collection of this process (gc.callbacks) into `gc_pauses`."""
        children = {gen: self.gc_pauses.labels(str(gen)) for gen in range(3)}
        began = [0.0]

        def callback(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                began[0] = time.perf_counter()
            else:
                children[info["generation"]].observe(time.perf_counter() - began[0])

        gc.callbacks.append(callback)

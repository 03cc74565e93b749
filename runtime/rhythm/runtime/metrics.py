"""How every part keeps its Prometheus metrics: in a registry of its own, passed explicitly
(never import-time globals on the default registry), so two parts in one process (tests,
benchmarks) never share or collide, and each part's /metrics says only what is its own.

Labels are bounded by design: topic, partition, reason, kind; never a tenant, entity, key
or anything an event carries.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

__all__ = ["part_registry"]


def part_registry(process: bool = True) -> CollectorRegistry:
    """A new registry for one long-running part, with the process, platform and GC metrics
    Prometheus' own client puts on its default registry (CPU, memory, open files), so
    dashboards see them on every part's /metrics."""
    registry = CollectorRegistry()
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry

"""Start one processor worker (`rhythm processors`)."""

from __future__ import annotations

import os

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from rhythm.processors.settings import ProcessorSettings
from rhythm.schemas.topics import (
    DEFAULT_TOPICS,
    HISTORY_LANE,
    HISTORY_TOPIC,
    STAGE1,
    STAGE2,
    changelog_topic,
)


def events_partitions(settings: ProcessorSettings, timeout: float = 30.0) -> int:
    admin = AdminClient(settings.kafka.to_librdkafka())
    topics = admin.list_topics(settings.events_topic, timeout=timeout).topics
    info = topics.get(settings.events_topic)
    if info is None or info.error is not None or not info.partitions:
        raise SystemExit(
            f"topic {settings.events_topic!r} not found on {settings.kafka.bootstrap_servers}:"
            " create it first (`rhythm kafka up` does)"
        )
    return len(info.partitions)


def ensure_updates_topic(
    settings: ProcessorSettings, timeout: float = 30.0, name: str | None = None
) -> None:
    """Create the internal updates topic before Faust starts: Faust creates internal topics
    too, but a consumer that subscribes first ignores the missing topic for good. The
    history lane also creates the live lane's (`name`, where it hands off norms), as the
    live worker would: a send to a topic that does not exist stalls the worker."""
    admin = AdminClient(settings.kafka.to_librdkafka())
    handoff, name = name is not None, name or settings.updates_topic
    existing = admin.list_topics(timeout=timeout).topics
    if name in existing:
        found = len(existing[name].partitions)
        if handoff and found != settings.updates_partitions:  # norms would miss their entity
            raise SystemExit(
                f"topic {name!r} has {found} partitions, not RHYTHM_PROCESSOR_UPDATES_PARTITIONS"
                f" ({settings.updates_partitions}): both lanes must have the same"
            )
        return
    topic = NewTopic(
        name,
        settings.updates_partitions,
        settings.replication_factor,
        config={"retention.ms": str(int(settings.updates_retention_s * 1000))},
    )
    try:
        admin.create_topics([topic])[name].result(timeout)
    except Exception as exc:  # created meanwhile by another worker: fine
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise


def ensure_history_topic(settings: ProcessorSettings, timeout: float = 30.0) -> None:
    """The live lane routes too-late events to the history lane's input, and the history
    lane (expanding them) puts stored events on the later topic: create it as `rhythm kafka
    up` does (one partition, the events' retention) if a broker lacks it, or the first such
    event would stall the worker on a topic that does not exist."""
    if settings.routes:
        name = settings.history_topic
    elif settings.lane == HISTORY_LANE and settings.store_url:
        name = settings.later_topic
    else:
        return
    admin = AdminClient(settings.kafka.to_librdkafka())
    if name in admin.list_topics(timeout=timeout).topics:
        return
    spec = next((t for t in DEFAULT_TOPICS if t.name == HISTORY_TOPIC), None)
    config = dict(spec.config) if spec is not None else {}
    topic = NewTopic(name, 1, settings.replication_factor, config=config)
    try:
        admin.create_topics([topic])[name].result(timeout)
    except Exception as exc:  # created meanwhile by another worker: fine
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise


def ensure_changelog_topics(
    settings: ProcessorSettings, events_partitions: int, timeout: float = 30.0
) -> None:
    """Create the tables' changelog topics (compacted, named as Faust names them) before Faust
    starts, for the reason above: workers starting together each see the topic missing in
    their first metadata, one creates it, and another's table then finds "0 partitions" in
    its changelog and its agent dies (PartitionsMismatch; seen with 4 workers at once)."""
    admin = AdminClient(settings.kafka.to_librdkafka())
    existing = admin.list_topics(timeout=timeout).topics
    wanted = [
        NewTopic(
            changelog_topic(settings.app_id, stage),
            partitions,
            settings.replication_factor,
            config={"cleanup.policy": "compact"},
        )
        for stage, partitions in (
            (STAGE1, events_partitions),
            (STAGE2, settings.updates_partitions),
        )
        if changelog_topic(settings.app_id, stage) not in existing
    ]
    if not wanted:
        return
    for future in admin.create_topics(wanted).values():
        try:
            future.result(timeout)
        except Exception as exc:  # created meanwhile by another worker: fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def run(settings: ProcessorSettings | None = None) -> None:
    import faust

    from rhythm.processors.app import Processors

    settings = settings or ProcessorSettings()
    if settings.niceness:
        os.nice(settings.niceness)  # the history lane yields the CPU to the live lane
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    partitions = events_partitions(settings)
    ensure_updates_topic(settings)
    ensure_history_topic(settings)
    if settings.hands_off:
        ensure_updates_topic(settings, name=settings.handoff_topic)
    ensure_changelog_topics(settings, partitions)
    processors = Processors(settings, partitions)
    if settings.metrics_port:
        from rhythm.runtime.health import HealthServer

        metrics = processors.metrics
        documents = {"/tenants": processors.tenant_watermarks} if processors.historical else {}
        HealthServer(
            settings.metrics_host, settings.metrics_port, metrics.registry, metrics.progress,
            documents,
        ).start()  # fmt: skip
    worker = faust.Worker(processors.app, loglevel=settings.log_level, quiet=True)
    # Faust's startup spinner sets the root logger to DEBUG (for good): every debug call in
    # aiokafka and Faust then builds a LogRecord, ~8% of the worker's CPU in a profile.
    worker.spinner = None
    worker.execute_from_commandline()

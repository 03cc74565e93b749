"""Start one processor worker (`rhythm processors`)."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient

from rhythm.processors.settings import ProcessorSettings


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


def run(settings: ProcessorSettings | None = None) -> None:
    import faust

    from rhythm.processors.app import Processors

    settings = settings or ProcessorSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    processors = Processors(settings, events_partitions(settings))
    worker = faust.Worker(processors.app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()

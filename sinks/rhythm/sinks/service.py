"""The sink process: migrate, serve queries and metrics, consume and write until stopped.

stop = threading.Event()
run_sink(SinkSettings(), stop)   # returns after stop.set(): current batches written,
                                 # offsets committed, group left, store closed
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, TopicCollection
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from rhythm.runtime.health import HealthServer
from rhythm.sinks.batcher import Batcher
from rhythm.sinks.consumer import ConsumerLoop, consumer_config
from rhythm.sinks.dead_letters import DeadLetterTopic
from rhythm.sinks.endpoint.engine import EmbeddedEngine
from rhythm.sinks.endpoint.policy import Credentials, Limits
from rhythm.sinks.endpoint.server import QueryEndpoint
from rhythm.sinks.metrics import SinkMetrics
from rhythm.sinks.migrations import MigrationError, migrate
from rhythm.sinks.settings import SinkSettings
from rhythm.sinks.store import (
    EndpointState,
    Store,
    open_client,
    remove_state,
    write_secret,
    write_state,
)
from rhythm.sinks.writer import Done, Writer

__all__ = ["engine_connection_string", "run_sink", "topic_ids"]

log = logging.getLogger(__name__)


def engine_connection_string(path: str) -> str:
    """chdb compares engine paths literally; clickhouse-connect opens the real path, so the
    endpoint's handles must name the engine the same way."""
    return path if path.startswith(":memory:") else os.path.realpath(path)


def topic_ids(settings: SinkSettings) -> Callable[[list[str]], dict[str, str]]:
    def lookup(topics: list[str]) -> dict[str, str]:
        admin = AdminClient(settings.kafka.to_librdkafka())
        found: dict[str, str] = {}
        for name, future in admin.describe_topics(TopicCollection(topics)).items():
            try:
                found[name] = str(future.result(timeout=10).topic_id)
            except Exception as exc:  # not there yet: the token falls back to the name
                log.warning("no topic id for %s (%s)", name, exc)
        return found

    return lookup


def _open_and_migrate(settings: SinkSettings, stop: threading.Event) -> Client | None:
    """The store, migrated. A server may still be starting: retry with backoff until it
    answers (or until stopped). The embedded store fails at once: if another process has it
    open, waiting will not help."""
    dsn = settings.store_dsn()
    delay = settings.retry_backoff_min_s
    while True:
        try:
            client = open_client(dsn, settings)
        except Exception as exc:
            if dsn.embedded:
                raise RuntimeError(
                    f"cannot open the embedded store {dsn.redacted()}: {exc} - only one process "
                    "can open it: is another sink (or `rhythm query`) using it?"
                ) from exc
            failure: Exception = exc
        else:
            try:
                report = migrate(
                    client, settings.database, settings.retention_days, cluster=settings.cluster
                )
            except Exception as exc:
                client.close()
                if dsn.embedded or isinstance(exc, MigrationError):
                    raise
                failure = exc
            else:
                log.info("sink: %s", report.summary())
                return client
        log.warning("store %s not ready (retrying in %.1f s): %s", dsn.redacted(), delay, failure)
        if stop.wait(delay):
            return None
        delay = min(settings.retry_backoff_max_s, delay * 2)


def endpoint_credentials(settings: SinkSettings) -> Credentials:
    """The endpoint's users. With no admin password configured, a fresh one is generated
    once into `admin_password_file()` (mode 0600; kept across restarts), where `rhythm migrate`,
    `rhythm query` and a second sink on the same host read it; it is never logged."""
    admin = settings.admin_password()
    path = settings.admin_password_file()
    if admin is None and path.exists() and path.stat().st_mode & 0o077 == 0:
        admin = SecretStr(path.read_text(encoding="utf-8").strip()) or None  # kept over restarts
    if admin is None or not admin.get_secret_value():
        admin = SecretStr(secrets.token_urlsafe(32))
        write_secret(path, admin.get_secret_value())
    return Credentials(
        admin_user=settings.http_admin_user,
        admin_password=admin,
        analyst_password=settings.analyst_password(),
    )


def run_sink(
    settings: SinkSettings,
    stop: threading.Event,
    *,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    dsn = settings.store_dsn()
    log.info("sink: store %s, group %s, topics %s", dsn.redacted(), settings.group_id,
             ", ".join(settings.topics))  # fmt: skip
    client = _open_and_migrate(settings, stop)
    if client is None:
        return
    cleanup: list[Callable[[], None]] = [client.close]
    try:
        metrics = SinkMetrics(stall_after_s=settings.stall_after_s)
        ready: dict[str, Any] = {"pid": os.getpid(), "store": dsn.redacted()}
        if settings.metrics_port:
            server = HealthServer(
                settings.metrics_host, settings.metrics_port, metrics.registry, metrics.progress
            ).start()
            cleanup.append(server.stop)
            ready["metrics"] = f"{server.url}/metrics"

        lookup = topic_ids(settings)
        batcher = Batcher(
            settings.batch_max_rows,
            settings.batch_max_bytes,
            settings.batch_max_seconds,
            topic_ids=lookup(settings.topics),
        )
        consumer = Consumer(consumer_config(settings))
        dead_topic = DeadLetterTopic(settings.kafka, settings.dead_letter_topic)
        cleanup.append(dead_topic.close)
        store = Store(client, settings.database, distributed=settings.cluster is not None)

        def writer_factory(on_done: Callable[[Done], None]) -> Writer:
            return Writer(
                store,
                dead_topic,
                metrics,
                on_done,
                backoff_min_s=settings.retry_backoff_min_s,
                backoff_max_s=settings.retry_backoff_max_s,
                dead_letter_max_bytes=settings.dead_letter_max_bytes,
            )

        loop = ConsumerLoop(settings, consumer, batcher, writer_factory, metrics, lookup)

        if dsn.embedded and settings.http_port:
            engine = EmbeddedEngine(engine_connection_string(dsn.path))
            cleanup.append(engine.close)
            endpoint = QueryEndpoint(
                engine,
                settings.http_host,
                settings.http_port,
                credentials=endpoint_credentials(settings),
                limits=Limits(
                    max_execution_time=settings.http_max_execution_time,
                    max_result_rows=settings.http_max_result_rows,
                    max_result_bytes=settings.http_max_result_bytes,
                    max_memory_usage=settings.http_max_memory_usage,
                    max_threads=settings.http_max_threads,
                ),
                max_concurrent_queries=settings.http_max_concurrent_queries,
                max_queries_per_user=settings.http_max_queries_per_user,
                max_connections=settings.http_max_connections,
                max_body_bytes=settings.http_max_body_bytes,
                allowed_hosts=tuple(settings.http_allowed_hosts),
                allowed_origins=tuple(settings.http_allowed_origins),
                status=lambda: loop.status_snapshot,
            )
            endpoint.start()
            cleanup.append(endpoint.stop)
            ready["endpoint"] = f"http://{endpoint.host}:{endpoint.port}"
            state_file = settings.endpoint_state_file()
            if state_file is not None:
                pid = os.getpid()
                write_state(
                    state_file,
                    EndpointState(pid, endpoint.host, endpoint.port, dsn.redacted()),
                )
                cleanup.append(lambda: remove_state(state_file, pid))
        log.info("sink ready: %s", ready)
        if on_ready is not None:
            on_ready(ready)
        loop.run(stop)
        log.info("sink stopped: %d batches written", loop.batches_written)
    finally:
        for action in reversed(cleanup):
            try:
                action()
            except Exception:
                log.exception("sink: error while shutting down")

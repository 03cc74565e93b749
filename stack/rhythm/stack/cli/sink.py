"""`rhythm sink`, `rhythm migrate`, `rhythm sync`, `rhythm query`: the ClickHouse sink and
the analyst's store from a shell. Settings come from `RHYTHM_SINK_*` / `RHYTHM_KAFKA_*`; the
options here override them."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.schemas.topics import NOTIFIER_GROUP
from rhythm.stack.cli.foreground import fail, invalid_settings, run_in_foreground, setup_logging

DsnOption = Annotated[
    str | None,
    typer.Option(
        help="Store: chdb://PATH or http(s)://[user@]host[:port]. Default $RHYTHM_SINK_DSN, "
        "else chdb://<repo or cwd>/.rhythm/clickhouse.",
        show_default=False,
    ),
]
BootstrapOption = Annotated[
    str | None, typer.Option(help="Kafka bootstrap servers (default $RHYTHM_KAFKA_*).")
]
GroupOption = Annotated[
    str | None, typer.Option(help="The sink's consumer group (default rhythm-sink).")
]


def register(app: typer.Typer) -> None:
    app.command("sink")(sink)
    app.command("migrate")(migrate_command)
    app.command("sync")(sync)
    app.command("query")(query)


def _settings(**overrides: Any) -> Any:
    from rhythm.sinks.settings import SinkSettings

    given = {k: v for k, v in overrides.items() if v is not None}
    bootstrap = given.pop("bootstrap", None)
    if bootstrap is not None:
        given["kafka"] = KafkaSettings(bootstrap_servers=bootstrap)
    try:
        return SinkSettings(**given)
    except ValidationError as exc:
        invalid_settings(exc, "RHYTHM_SINK_*")


def sink(
    dsn: DsnOption = None,
    bootstrap: BootstrapOption = None,
    group_id: GroupOption = None,
    http_port: Annotated[
        int | None, typer.Option(help="Query endpoint port (default 8123; 0 = none).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus port (default 9464; 0 = none).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the sink in the foreground: events, signals and alerts into ClickHouse.

    Applies the migrations first. With the embedded store it serves ClickHouse's HTTP
    interface (for clickhouse-connect, curl, `rhythm query`). SIGTERM or Ctrl-C: the batches
    in hand are written and committed, then it exits. Prints one JSON line when ready.
    """
    from rhythm.sinks.service import run_sink

    setup_logging(verbose)
    settings = _settings(
        dsn=dsn,
        bootstrap=bootstrap,
        group_id=group_id,
        http_port=http_port,
        metrics_port=metrics_port,
    )
    run_in_foreground(
        "sink",
        "rhythm.sinks",
        "finishing the current batches",
        lambda stop, ready: run_sink(settings, stop, on_ready=ready),
    )


def migrate_command(
    dsn: DsnOption = None,
    retention_days: Annotated[
        int | None, typer.Option(help="TTL in days (default $RHYTHM_SINK_RETENTION_DAYS, 365).")
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            help="The replicated form ON CLUSTER this cluster (default $RHYTHM_SINK_CLUSTER).",
            show_default=False,
        ),
    ] = None,
    print_only: Annotated[
        bool,
        typer.Option(
            "--print", help="Print every statement for an empty store; connect to nothing."
        ),
    ] = False,
) -> None:
    """Create or upgrade the rhythm database (idempotent).

    Goes through the running sink's endpoint when it owns the embedded store. With
    --cluster: replicated local tables and Distributed tables ON CLUSTER (a server DSN).
    """
    from rhythm.sinks.migrations import MigrationError, migrate, script
    from rhythm.sinks.store import StoreBusyError, connect

    if print_only:
        # Nothing is connected to: a placeholder server DSN, so that a chdb:// default does
        # not stand in the way of rendering the cluster form.
        settings = _settings(dsn="http://localhost", retention_days=retention_days, cluster=cluster)
        statements = script(settings.database, settings.retention_days, settings.cluster)
        typer.echo(";\n\n".join(statements) + ";")
        return
    settings = _settings(dsn=dsn, retention_days=retention_days, cluster=cluster)
    try:
        client, where = connect(settings)
    except StoreBusyError as exc:
        fail(str(exc))
    try:
        report = migrate(
            client, settings.database, settings.retention_days, cluster=settings.cluster
        )
    except MigrationError as exc:
        fail(str(exc))
    finally:
        client.close()
    typer.echo(f"{where}: {report.summary()}")


def sync(
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 60.0,
    bootstrap: BootstrapOption = None,
    group_id: GroupOption = None,
    sink_only: Annotated[
        bool, typer.Option(help="Wait for the sink only, not for the processors.")
    ] = False,
    watermark_at_least: Annotated[
        float | None,
        typer.Option(
            help="First wait until the processors' watermark reaches this epoch time "
            "(seconds; negative = that many seconds before now)."
        ),
    ] = None,
    notifier: Annotated[
        bool,
        typer.Option(
            help="Also wait for the notifier (group rhythm-notifier) to route every alert, "
            "and for the sink to store those deliveries."
        ),
    ] = False,
) -> None:
    """Wait until everything published so far is in ClickHouse.

    Every event published before the call has been through the processors (every window the
    watermark has closed is emitted) and the sink has written the events, signals and alerts
    topics. Exit 1 on timeout, naming what is missing. Tests and backfills use this instead
    of sleeping.
    """
    from rhythm.runtime.sink_sync import wait_for_sink
    from rhythm.stack.supervisor.sync import wait_for_pipeline

    settings = _settings(bootstrap=bootstrap, group_id=group_id)
    if sink_only:
        report = wait_for_sink(settings.kafka, settings.topics, timeout, group_id=settings.group_id)
    else:
        mark = watermark_at_least
        if mark is not None and mark < 0:
            mark = time.time() + mark
        report = wait_for_pipeline(
            settings.kafka,
            timeout,
            sink_topics=tuple(settings.topics),
            sink_group=settings.group_id,
            notifier_group=NOTIFIER_GROUP if notifier else None,
            watermark_at_least=mark,
        )
    if not report:
        fail(report.describe())
    typer.echo(report.describe())


def query(
    sql: Annotated[str, typer.Argument(help="The SQL to run ('-' = read it from stdin).")],
    dsn: DsnOption = None,
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", help="ClickHouse output format (unless the SQL has one)."),
    ] = "PrettyCompactMonoBlock",
) -> None:
    """Run SQL on the store and print the result.

    When a running sink owns the embedded store, the query goes through its endpoint.
    """
    from rhythm.sinks.endpoint.sql import output_format
    from rhythm.sinks.store import StoreBusyError, connect

    text = sys.stdin.read() if sql == "-" else sql
    settings = _settings(dsn=dsn)
    try:
        client, _where = connect(settings)
    except StoreBusyError as exc:
        fail(str(exc))
    try:
        own_format = output_format(text, "") != ""
        data = client.raw_query(text, fmt=None if own_format else fmt)
    except Exception as exc:
        fail(str(exc).strip())
    finally:
        client.close()
    sys.stdout.buffer.write(data)
    sys.stdout.flush()

"""`rhythm processors`: run a processor worker in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("processors")(processors)


def processors(
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Local state directory.")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes sharing the partitions; each gets <data-dir>/worker-<i> and "
            "ports metrics_port+i, web_port+i.",
        ),
    ] = 1,
) -> None:
    """Run Faust workers computing signals and alerts (settings: RHYTHM_PROCESSOR_*)."""
    from rhythm.processors.settings import ProcessorSettings
    from rhythm.processors.worker import run
    from rhythm.runtime.kafka_settings import KafkaSettings

    overrides: dict[str, object] = {}
    if bootstrap is not None:
        overrides["kafka"] = KafkaSettings(bootstrap_servers=bootstrap)
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = ProcessorSettings(**overrides)  # type: ignore[arg-type]
    if workers > 1:
        from rhythm.stack.supervisor.workers import run_workers

        raise typer.Exit(run_workers(workers, settings))
    run(settings)

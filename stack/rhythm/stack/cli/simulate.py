"""`rhythm simulate` and `rhythm report`: a realistic month of an enterprise into Kafka, and
what the pipeline made of it, read back from the store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from rhythm.schemas import EVENTS_TOPIC

ManifestOption = Annotated[
    Path | None,
    typer.Option(
        help="The simulation manifest (default <repo or cwd>/.rhythm/simulation.json).",
        show_default=False,
    ),
]

#: a store read by a command beside the stack (`rhythm report`, `rhythm digest`)
StoreOption = Annotated[
    str | None,
    typer.Option(
        help="Store: chdb://PATH or http(s)://[user@]host[:port]. Default "
        "$RHYTHM_SINK_DSN, else the embedded store (through the running sink if any).",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
    app.command("report")(report)


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _default_manifest() -> Path:
    from rhythm.sinks.settings import default_data_dir

    return default_data_dir() / "simulation.json"


def simulate(
    days: Annotated[int, typer.Option(help="Simulated days, ending now.")] = 30,
    scale: Annotated[
        float, typer.Option(help="Multiplies people, accounts and threads (1 ≈ 170k events).")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="The same seed gives the same enterprise.")] = 7,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (default $RHYTHM_KAFKA_*).")
    ] = None,
    topic: Annotated[str, typer.Option(help="Topic to publish to.")] = EVENTS_TOPIC,
    manifest: ManifestOption = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Generate and write the manifest, send nothing.")
    ] = False,
    flush_timeout: Annotated[float, typer.Option(help="Seconds to wait for delivery.")] = 120.0,
) -> None:
    """Send a simulated month of an enterprise through the client library.

    Employees, customer accounts and contacts, product usage, purchases and support threads
    over the last DAYS days (ending now), as fast as the client allows, with out-of-order
    arrival and re-sent duplicates.

    Planted, and recorded in the manifest: accounts that went silent, threads left
    unanswered, movers in pace and amount. Exit 2 if any event was not delivered.
    """
    from rhythm.producers.config import ClientSettings
    from rhythm.runtime.kafka_settings import KafkaSettings
    from rhythm.stack.simulate.generate import SimConfig, generate
    from rhythm.stack.simulate.send import send, summary, write_manifest

    now_ms = time.time_ns() // 1_000_000  # the simulated month ends now
    try:
        config = SimConfig(now_ms=now_ms, days=days, scale=scale, seed=seed)
    except ValueError as exc:
        _fail(str(exc))
    path = manifest or _default_manifest()
    sim = generate(config)
    write_manifest(path, sim, None, topic=topic)  # what was planted, even if sending fails
    if dry_run:
        typer.echo(summary(sim, None))
        typer.echo(f"manifest: {path}")
        return
    overrides: dict[str, Any] = {"topic": topic}
    if bootstrap is not None:
        overrides["kafka"] = KafkaSettings(bootstrap_servers=bootstrap)
    delivery = send(
        sim, ClientSettings(**overrides), show_progress=progress, flush_timeout=flush_timeout
    )
    write_manifest(path, sim, delivery, topic=topic)
    typer.echo(summary(sim, delivery))
    typer.echo(f"manifest: {path}")
    if delivery.undelivered:
        raise typer.Exit(2)


def report(
    html: Annotated[
        Path | None, typer.Option(help="Also write the report as one HTML file here.")
    ] = None,
    dsn: StoreOption = None,
    tenant: Annotated[str, typer.Option(help="Only this tenant (default: all).")] = "",
    manifest: ManifestOption = None,
    movers: Annotated[
        int, typer.Option(help="How many movers to list, by pace and by amplitude.")
    ] = 8,
) -> None:
    """What the pipeline found, from the store: silences, waiting threads, movers, throughput.

    Accounts gone silent against their own rhythm, threads waiting for a reply, the biggest
    movers in pace and amplitude, and the pipeline's own throughput and latency.

    With a simulation manifest (the default one if it exists), also checks that exactly the
    planted silent accounts and unanswered threads were found.
    """
    from rich.console import Console

    from rhythm.stack.report.data import fetch_report
    from rhythm.stack.report.text import render_text

    planted = _read_manifest(manifest)
    settings, client, where = open_store(dsn)
    try:
        data = fetch_report(
            client, database=settings.database, tenant=tenant, manifest=planted,
            movers_limit=movers,
        )  # fmt: skip
    finally:
        client.close()
    console = Console()
    console.print(f"[dim]store: {where}[/dim]")
    render_text(data, console)
    if html is not None:
        from rhythm.stack.report.page import render_html

        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_html(data), encoding="utf-8")
        typer.echo(f"HTML report: {html.resolve()}")


def open_store(dsn: str | None) -> tuple[Any, Any, str]:
    """The store's settings, a client (the running sink's endpoint over the embedded store,
    or the store) and where it goes; a one-line error and exit 1 when it cannot be opened."""
    from pydantic import ValidationError

    from rhythm.sinks.settings import SinkSettings
    from rhythm.sinks.store import StoreBusyError, connect

    try:
        settings = SinkSettings(dsn=dsn) if dsn else SinkSettings()
    except ValidationError as exc:
        _fail(f"invalid settings: {exc.errors()[0]['msg']}")
    try:
        client, where = connect(settings)
    except StoreBusyError as exc:
        _fail(str(exc))
    return settings, client, where


def _read_manifest(path: Path | None) -> dict[str, Any] | None:
    explicit = path is not None
    path = path or _default_manifest()
    if not path.exists():
        if explicit:
            _fail(f"no manifest at {path}")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        _fail(f"cannot read the manifest {path}: {exc}")
    return data if isinstance(data, dict) else None

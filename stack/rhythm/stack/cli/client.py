"""`rhythm ingest` and `rhythm tail`: the client library and the wire format from a shell."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rhythm.producers.config import ClientSettings
from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.schemas import EVENTS_TOPIC


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("tail")(tail)


def ingest(
    file: Annotated[
        Path, typer.Argument(help="JSON Lines file of canonical events ('-' = stdin).")
    ],
    rejects: Annotated[
        Path | None,
        typer.Option(help="Where invalid lines go (default: FILE.rejects.jsonl)."),
    ] = None,
    topic: Annotated[str, typer.Option(help="Topic to publish to.")] = EVENTS_TOPIC,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
    flush_timeout: Annotated[float, typer.Option(help="Seconds to wait for delivery.")] = 120.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Publish every valid line through the client; report invalid lines by number.

    Exit codes: 0 all lines delivered; 1 some lines invalid (all valid ones delivered);
    2 some valid events could not be delivered.
    """
    from rhythm.stack.ingest import IngestReport, ingest_lines

    settings = _client_settings(topic, bootstrap)
    rejects_path = rejects or (
        Path("rejects.jsonl") if str(file) == "-" else file.with_suffix(".rejects.jsonl")
    )
    source = sys.stdin.buffer if str(file) == "-" else file.open("rb")
    total = None if str(file) == "-" else file.stat().st_size
    with source, rejects_path.open("w", encoding="utf-8") as rejects_out:
        report: IngestReport = ingest_lines(
            source,
            settings=settings,
            rejects_out=rejects_out,
            total_bytes=total,
            show_progress=progress,
            flush_timeout=flush_timeout,
        )
    typer.echo(report.summary())
    if report.invalid:
        shown = ", ".join(str(n) for n in report.invalid_lines[:20])
        more = "" if report.invalid <= 20 else f" (+{report.invalid - 20} more)"
        typer.echo(f"invalid lines: {shown}{more}; details in {rejects_path}", err=True)
    else:
        rejects_path.unlink(missing_ok=True)
    raise typer.Exit(report.exit_code())


def tail(
    topic: Annotated[str, typer.Argument(help="Topic to read.")] = EVENTS_TOPIC,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest offset.")] = False,
    limit: Annotated[int, typer.Option(help="Stop after N messages (0 = never).")] = 0,
    idle_timeout: Annotated[
        float, typer.Option(help="Stop after this many seconds without a message (0 = never).")
    ] = 0.0,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
) -> None:
    """Print a topic's messages as JSON lines, decoding Rhythm's Avro wire format."""
    from rhythm.stack.tailing import tail_topic

    kafka = KafkaSettings() if bootstrap is None else KafkaSettings(bootstrap_servers=bootstrap)
    for message in tail_topic(
        kafka, topic, from_beginning=from_beginning, limit=limit, idle_timeout=idle_timeout
    ):
        sys.stdout.write(json.dumps(message, ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()


def _client_settings(topic: str, bootstrap: str | None) -> ClientSettings:
    overrides: dict[str, Any] = {"topic": topic, "full_queue_policy": "block"}
    if bootstrap is not None:
        overrides["kafka"] = KafkaSettings(bootstrap_servers=bootstrap)
    return ClientSettings(**overrides)

"""`rhythm backfill`: import history through the history lane while live goes on."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from rhythm.schemas.topics import HISTORY_LANE


def register(app: typer.Typer) -> None:
    app.command("backfill")(backfill)


def backfill(
    file: Annotated[
        Path | None,
        typer.Argument(help="JSON Lines file of canonical events ('-' = stdin)."),
    ] = None,
    topic: Annotated[
        str | None,
        typer.Option(help="Instead of a file: a topic of wire-format events (e.g. an archive)."),
    ] = None,
    from_: Annotated[
        datetime | None,
        typer.Option("--from", help="Only events at or after this time (UTC unless given)."),
    ] = None,
    to: Annotated[
        datetime | None, typer.Option(help="Only events before this time (UTC unless given).")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's events.")] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
    wait: Annotated[
        bool, typer.Option(help="Follow the history lane until it has processed it all.")
    ] = True,
    timeout: Annotated[float, typer.Option(help="How long to follow the lane (seconds).")] = 3600,
    metrics_port: Annotated[
        int, typer.Option(help="The history lane's /metrics (its event time).")
    ] = 9469,
) -> None:
    """Publish history, sorted by event time, to the history lane (rhythm.history): its
    signals land in the same tables with the same keys, exactly as if processed live in
    order; its alerts are stored marked historical and never delivered. Then follow the
    lane: events done, event time reached, ETA. Exit 1 if lines were invalid, 2 if events
    were not delivered or the lane did not finish within --timeout."""
    import time

    from rhythm.processors.settings import ProcessorSettings
    from rhythm.runtime.kafka_settings import KafkaSettings
    from rhythm.runtime.offsets import group_lag
    from rhythm.stack import backfill as bf
    from rhythm.stack.supervisor.control import scrape

    if (file is None) == (topic is None):
        typer.echo("error: give a FILE or --topic, one of the two", err=True)
        raise typer.Exit(2)
    kafka = KafkaSettings() if bootstrap is None else KafkaSettings(bootstrap_servers=bootstrap)
    # The lane's names as its worker reads them (RHYTHM_PROCESSOR_*, lane history).
    lane = ProcessorSettings(lane=HISTORY_LANE)
    history_topic, updates_topic, group = lane.events_topic, lane.updates_topic, lane.app_id
    selection = bf.Selection(tenant, _ms(from_), _ms(to))
    rejects_path: Path | None = None
    if file is not None:
        rejects_path = (
            Path("rejects.jsonl") if str(file) == "-" else file.with_suffix(".rejects.jsonl")
        )
        source = sys.stdin.buffer if str(file) == "-" else file.open("rb")
        with source, rejects_path.open("w", encoding="utf-8") as rejects:
            read = bf.read_file(source, selection, rejects)
    else:
        assert topic is not None
        read = bf.read_topic(kafka, topic, selection)
    events = bf.in_order(read.events)
    typer.echo(
        f"{read.lines:,} read: {len(events):,} selected, {read.left_out:,} outside the "
        f"selection, {read.invalid:,} invalid"
        + (f" (in {rejects_path})" if read.invalid and rejects_path else "")
    )
    if rejects_path is not None and not read.invalid:
        rejects_path.unlink(missing_ok=True)
    # What the lane already had to do: its progress counts from here.
    before = sum(group_lag(kafka, group, [history_topic]).values())
    failed = bf.publish(kafka, history_topic, events)
    typer.echo(f"published {len(events) - failed:,} to {history_topic}; {failed:,} not delivered")
    code = 2 if failed else (1 if read.invalid else 0)
    if not wait or not events:
        raise typer.Exit(code)
    tracker = bf.Tracker(total=before + len(events) - failed, started=time.monotonic())

    def remaining() -> int | None:
        """Events not yet through the lane: its input's lag, and at least 1 while stage 2
        still has updates to apply."""
        lag = group_lag(kafka, group, [history_topic, updates_topic])
        if history_topic not in lag:
            return None
        return max(lag[history_topic], 1 if lag.get(updates_topic) else 0)

    def event_time() -> float | None:
        marks = scrape(metrics_port, "rhythm_processor_watermark_seconds")
        return max(marks) if marks else None

    done = bf.follow(
        tracker, remaining, event_time, lambda line: typer.echo(f"history lane: {line}"), timeout
    )
    if not done:
        typer.echo(
            f"the history lane is not done after {timeout:.0f}s: is it running "
            "(`rhythm status`: history)?",
            err=True,
        )
        raise typer.Exit(2)
    raise typer.Exit(code)


def _ms(when: datetime | None) -> int | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)

"""`rhythm backfill`: import history through the history lane while live goes on."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from rhythm.schemas.topics import HISTORY_LANE, KIND_NEXT


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
    live_metrics_port: Annotated[
        int, typer.Option(help="The live lane's /metrics (its watermark: what it still keeps).")
    ] = 9465,
    later: Annotated[
        bool,
        typer.Option(
            "--later",
            help="Instead of a FILE or --topic: import what earlier imports left waiting "
            "(rhythm.history.later) that the live lane is done with (`rhythm up` does this "
            "every minute).",
        ),
    ] = False,
) -> None:
    """Publish history, sorted by event time, to the history lane (rhythm.history): its
    signals land in the same tables with the same keys, exactly as if processed live in
    order, windows the live lane also saw included (the stored events of the windows it
    touches go with it); its alerts are stored marked historical and never delivered. Then
    follow the lane: events done, event time reached, ETA. History in windows the live lane
    may still change (about the last day) waits on rhythm.history.later and is imported the
    same way once the live lane is done with them (`--later`). History older than what the
    lane made final for its tenant (a second source, a part not cut at midnight UTC) rewinds
    the tenant: the lane computes it again with its stored events. Exit 1 if lines were invalid,
    2 if events were not delivered, the store or the live lane could not be asked, or the
    lane did not finish within --timeout."""
    import contextlib
    import hashlib
    import tempfile
    import time

    from rhythm.processors import copies
    from rhythm.processors.settings import ProcessorSettings
    from rhythm.runtime.kafka_settings import KafkaSettings
    from rhythm.runtime.offsets import group_lag
    from rhythm.runtime.scrape import scrape, scrape_min
    from rhythm.runtime.sink_sync import wait_for_sink
    from rhythm.runtime.store_http import StoreUnavailableError, query_rows
    from rhythm.stack import backfill as bf
    from rhythm.stack.kafka.lock import file_lock

    if later and (file is not None or topic is not None):
        typer.echo("error: --later takes no FILE or --topic", err=True)
        raise typer.Exit(2)
    if not later and (file is None) == (topic is None):
        typer.echo("error: give a FILE or --topic, one of the two (or --later)", err=True)
        raise typer.Exit(2)
    kafka = KafkaSettings() if bootstrap is None else KafkaSettings(bootstrap_servers=bootstrap)
    # The lane's names as its worker reads them (RHYTHM_PROCESSOR_*, lane history).
    lane = ProcessorSettings(lane=HISTORY_LANE)
    history_topic, updates_topic, group = lane.events_topic, lane.updates_topic, lane.app_id
    live = ProcessorSettings(lane="live")
    sizes = tuple(w * 1000 for w in live.window_seconds)
    lateness, retention = int(live.lateness_s * 1000), int(live.late_retention_s * 1000)
    lane_lateness = int(lane.lateness_s * 1000)

    def live_watermark() -> int:
        """The live lane's stage-2 watermark: what it may still change is at or after
        `bf.cut` of it."""
        # Just started, its stage 2 may not have heard from every partition yet: a minute.
        deadline = time.monotonic() + min(60.0, timeout)
        mark = scrape_min(live_metrics_port, "rhythm_processor_stage2_watermark_seconds")
        while (mark is None or mark <= 0) and time.monotonic() < deadline:
            time.sleep(1.0)
            mark = scrape_min(live_metrics_port, "rhythm_processor_stage2_watermark_seconds")
        if mark is None or mark <= 0:  # not running, or not yet heard from every partition
            typer.echo(
                f"error: the live lane's watermark is unknown (no /metrics on "
                f"127.0.0.1:{live_metrics_port}, or none yet): is it running (`rhythm status`)?",
                err=True,
            )
            raise typer.Exit(2)
        return int(mark * 1000)

    def with_stored(events: list[bf.Timed], watermark: int) -> list[Any]:
        """The import merged with the stored events of its windows, once the sink has
        stored what the live lane was given (and what the history lane was: an import
        published before, e.g. by a `--later` that stopped before its commit, then goes
        as copies of what is stored, not again). A tenant the import is older than the
        lane's time of rewinds (bf.with_replay)."""
        from rhythm.runtime.scrape import read_json

        page = read_json(metrics_port, "/tenants")
        plan = bf.rewinds(events, page, lane_lateness)
        finals = bf.finals(page, lane_lateness)
        topics = [lane.live_events_topic, history_topic]
        synced = wait_for_sink(kafka, topics, timeout, group_id=lane.sink_group)
        if not synced:
            typer.echo(f"error: the sink has not stored the live events: {synced}", err=True)
            raise typer.Exit(2)
        secret = lane.store_password.get_secret_value() if lane.store_password else None

        def rows(sql: str) -> list[dict[str, Any]]:
            return query_rows(lane.store_url, sql, user=lane.store_user, password=secret)

        final = bf.live_final(watermark, sizes, lateness, retention)
        boundary = bf.cut(watermark, sizes, lateness, retention)
        try:
            merged, following = bf.with_copies(
                events, rows, lane.store_database, sizes, final, finals
            )
            replayed = bf.with_replay(
                merged.messages, plan, rows, lane.store_database, sizes, boundary
            )
        except StoreUnavailableError as exc:
            typer.echo(f"error: the store ({lane.store_url}): {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            f"with {merged.copies:,} stored events of the same windows and {merged.notes:,} "
            f"previous events; {merged.already_stored:,} of the import were stored already"
        )
        for r in plan.values():
            typer.echo(
                f"tenant {r.tenant!r}: the import is older than what the history lane made "
                f"final for it ({_iso(r.final_ms)}): the lane computes the tenant again from "
                f"its start (epoch {r.epoch})"
            )
        if plan:
            typer.echo(
                f"{replayed.replayed:,} stored events of those tenants are sent again whole "
                f"(in place of {replayed.dropped:,} copies and notes)"
            )
        if following:
            # Their first gap is the import's to change, but their windows are still the live
            # lane's: imported again, from the store, once it is done with them.
            bf.ensure_topic(kafka, lane.later_topic)
            nexts = [(t, v, copies.headers(KIND_NEXT)) for t, v in following]
            if bf.publish(kafka, lane.later_topic, nexts):
                typer.echo(f"error: next events not delivered to {lane.later_topic}", err=True)
                raise typer.Exit(2)
            typer.echo(
                f"{len(following):,} stored events after the import are in windows the live "
                f"lane still keeps: they wait on {lane.later_topic} and are imported again "
                "once it is done with them, so their first gaps count the import"
            )
        return replayed.messages

    code = 0
    commit: int | None = None
    # One import at a time into this lane from this machine, from its plan to its publish
    # (and commit): a rewind's store query and its rewind message must have no other import
    # of the tenant between them (`rhythm up` runs `--later` every minute).
    importing = contextlib.ExitStack()
    lock = Path(tempfile.gettempdir()) / (
        "rhythm-backfill-"
        + hashlib.blake2b(
            f"{kafka.bootstrap_servers}/{history_topic}".encode(), digest_size=8
        ).hexdigest()
        + ".lock"
    )
    if later:
        importing.enter_context(file_lock(lock))
        watermark = live_watermark()
        boundary = bf.cut(watermark, sizes, lateness, retention)
        bf.ensure_topic(kafka, lane.later_topic)
        waiting = bf.take_later(kafka, lane.later_topic, lane.later_group, boundary)
        events, _ = bf.unique(waiting.events)
        typer.echo(
            f"{lane.later_topic}: {len(waiting.events) - waiting.next:,} the live lane is done "
            f"with (and {waiting.next:,} stored events to import again), "
            f"{waiting.waiting:,} still waiting"
            + (
                f" (from {_iso(waiting.next_ms)}, until it is done with them)"
                if waiting.next_ms is not None
                else ""
            )
        )
        messages = with_stored(events, watermark) if events else []
        commit = waiting.commit_offset
    else:
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
        events, repeated = bf.unique(bf.in_order(read.events))
        typer.echo(
            f"{read.lines:,} read: {len(events) + repeated:,} selected, {read.left_out:,} "
            f"outside the selection, {read.invalid:,} invalid"
            + (f" (in {rejects_path})" if read.invalid and rejects_path else "")
            + (f", {repeated:,} repeated event ids left out" if repeated else "")
        )
        if rejects_path is not None and not read.invalid:
            rejects_path.unlink(missing_ok=True)
        code = 1 if read.invalid else 0
        messages = []
        if events:
            importing.enter_context(file_lock(lock))
            # The live lane's windows: what it may still change waits on the later topic;
            # the rest goes with the stored events of its windows.
            watermark = live_watermark()
            boundary = bf.cut(watermark, sizes, lateness, retention)
            events, recent = bf.split_recent(events, boundary)
            if recent:
                bf.ensure_topic(kafka, lane.later_topic)
                failed = bf.publish(kafka, lane.later_topic, [(t, v, []) for t, v in recent])
                if failed:
                    typer.echo(f"error: {failed:,} events not delivered to {lane.later_topic}")
                    raise typer.Exit(2)
                typer.echo(
                    f"{len(recent):,} events at or after {_iso(boundary)} wait on "
                    f"{lane.later_topic}: the live lane may still change their windows (it "
                    "keeps them a day after they close); they are imported the same way once "
                    "it is done with them (`rhythm up` looks every minute; `rhythm backfill "
                    "--later` once)"
                )
            if events:
                messages = with_stored(events, watermark)
    # What the lane already had to do: its progress counts from here.
    before = sum(group_lag(kafka, group, [history_topic]).values())
    failed = bf.publish(kafka, history_topic, messages)
    typer.echo(f"published {len(messages) - failed:,} to {history_topic}; {failed:,} not delivered")
    code = 2 if failed else code
    if commit is not None and not failed:  # delivered: those on the later topic are done
        bf.commit_later(kafka, lane.later_topic, lane.later_group, commit)
    importing.close()
    if not wait or not messages:
        raise typer.Exit(code)
    tracker = bf.Tracker(total=before + len(messages) - failed, started=time.monotonic())

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


def _iso(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()

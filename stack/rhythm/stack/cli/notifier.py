"""`rhythm notifier`: deliver heads-ups (webhooks, Slack, email) to the people who owe the
action. Settings come from `RHYTHM_NOTIFIER_*` / `RHYTHM_KAFKA_*`; the options here override
them. See docs/notifications.md."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.schemas.feedback import FeedbackKind

if TYPE_CHECKING:
    from rhythm.notifier.settings import NotifierSettings
from rhythm.stack.cli.foreground import invalid_settings, run_in_foreground, setup_logging


def register(app: typer.Typer) -> None:
    app.command("notifier")(notifier)
    app.command("feedback")(feedback)


def _settings(bootstrap: str | None, **given: Any) -> NotifierSettings:
    """The environment's settings with the options given (None: not given)."""
    from rhythm.notifier.settings import NotifierSettings

    values = {k: v for k, v in given.items() if v is not None}
    if bootstrap is not None:
        values["kafka"] = KafkaSettings(bootstrap_servers=bootstrap)
    try:
        return NotifierSettings(**values)
    except ValidationError as exc:
        invalid_settings(exc, "RHYTHM_NOTIFIER_*")


def notifier(
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (default $RHYTHM_KAFKA_*).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="/metrics and /healthz port (default 9467; 0 = none).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the notifier in the foreground: rhythm.alerts in, heads-ups out.

    Routes each alert to the people who owe the action, records every delivery in its ledger
    (<data_dir>/state.db) and in rhythm.notifications, and sends them through the configured
    channels (RHYTHM_NOTIFIER_WEBHOOK_URL, _SLACK_WEBHOOK_URL, _SMTP_HOST), holding them in
    the recipient's quiet hours and capping each person's day. SIGTERM or Ctrl-C: finishes the
    delivery in hand and exits. Prints one JSON line when ready.
    """
    from rhythm.notifier.service import run_notifier

    setup_logging(verbose)
    settings = _settings(bootstrap, metrics_port=metrics_port)
    run_in_foreground(
        "notifier",
        "rhythm.notifier",
        "stopping",
        lambda stop, ready: run_notifier(settings, stop, on_ready=ready),
    )


_ACTIONS: dict[str, FeedbackKind] = {
    "done": "done",
    "snooze": "snooze",
    "not-useful": "not_useful",
    "not_useful": "not_useful",
}


def feedback(
    action: Annotated[str, typer.Argument(help="done, snooze (with --until) or not-useful.")],
    alert: Annotated[str, typer.Option("--alert", help="The alert's id.")],
    recipient: Annotated[
        str, typer.Option("--recipient", help="Who says it, type:id (as the heads-up named).")
    ],
    until: Annotated[
        str | None,
        typer.Option(help="snooze: until when (ISO 8601 with a zone, or epoch ms)."),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option(help="The alert's tenant (default: from the notifier's ledger)."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="The notifier's data dir, to look the alert up (default its own)."),
    ] = None,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (default $RHYTHM_KAFKA_*).")
    ] = None,
) -> None:
    """Give feedback on a heads-up, as its links do: published to rhythm.feedback, which the
    notifier applies (done closes the wait, snooze re-delivers at --until, not-useful raises
    the recipient's threshold for that kind of entity). Prints the record; exit 1 when it
    could not be published, 2 for a bad request."""
    from confluent_kafka import Producer

    from rhythm.notifier.feedback import FeedbackNotPublishedError, feedback_from_cli, publish
    from rhythm.notifier.feedback_api import RequestError, parse_until
    from rhythm.notifier.ledger import Ledger

    kind = _ACTIONS.get(action)
    if kind is None:
        raise typer.BadParameter("done, snooze or not-useful", param_hint="ACTION")
    settings = _settings(bootstrap, feedback_port=0, data_dir=data_dir)
    now_ms = time.time_ns() // 1_000_000
    snooze_until = None
    if kind == "snooze" or until is not None:
        if kind != "snooze":
            raise typer.BadParameter("--until is for snooze only", param_hint="--until")
        try:
            snooze_until = parse_until({"until": until or ""}, now_ms)
        except RequestError as exc:
            raise typer.BadParameter(exc.reason, param_hint="--until") from None
    routed = None
    if settings.ledger_path.exists():
        ledger = Ledger(settings.ledger_path)
        try:
            routed = ledger.alert(alert)
        finally:
            ledger.close()
    tenant = tenant or (routed or {}).get("tenant")
    if not tenant:
        raise typer.BadParameter(
            f"alert {alert} is not in {settings.ledger_path}: give its --tenant",
            param_hint="--tenant",
        )
    try:
        record = feedback_from_cli(tenant, alert, recipient, kind, now_ms, snooze_until, routed)
    except ValidationError as exc:
        typer.echo(f"invalid: {exc.errors()[0]['msg']}", err=True)
        raise typer.Exit(2) from None
    producer = Producer(
        {**settings.kafka.to_librdkafka(), "enable.idempotence": True, "acks": "all"}
    )
    try:
        publish(producer, settings.feedback_topic, record, settings.request_timeout_s)
    except FeedbackNotPublishedError as exc:
        typer.echo(f"not published: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(record.model_dump(exclude_none=True)))

"""`rhythm notifier`: deliver heads-ups (webhooks, Slack, email) to the people who owe the
action. Settings come from `RHYTHM_NOTIFIER_*` / `RHYTHM_KAFKA_*`; the options here override
them. See docs/notifications.md."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError

from rhythm.producers.config import KafkaSettings
from rhythm.stack.foreground import invalid_settings, run_in_foreground, setup_logging


def register(app: typer.Typer) -> None:
    app.command("notifier")(notifier)


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
    from rhythm.notifier.settings import NotifierSettings

    setup_logging(verbose)
    given: dict[str, Any] = {}
    if bootstrap is not None:
        given["kafka"] = KafkaSettings(bootstrap_servers=bootstrap)
    if metrics_port is not None:
        given["metrics_port"] = metrics_port
    try:
        settings = NotifierSettings(**given)
    except ValidationError as exc:
        invalid_settings(exc, "RHYTHM_NOTIFIER_*")
    run_in_foreground(
        "notifier",
        "rhythm.notifier",
        "stopping",
        lambda stop, ready: run_notifier(settings, stop, on_ready=ready),
    )

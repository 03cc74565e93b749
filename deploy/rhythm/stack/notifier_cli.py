"""`rhythm notifier`: deliver heads-ups (webhooks, Slack, email) to the people who owe the
action. Settings come from `RHYTHM_NOTIFIER_*` / `RHYTHM_KAFKA_*`; the options here override
them. See docs/notifications.md."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from rhythm.producers.config import KafkaSettings


def register(app: typer.Typer) -> None:
    app.command("notifier")(notifier)


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


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

    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    given: dict[str, Any] = {}
    if bootstrap is not None:
        given["kafka"] = KafkaSettings(bootstrap_servers=bootstrap)
    if metrics_port is not None:
        given["metrics_port"] = metrics_port
    try:
        settings = NotifierSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        _fail(f"invalid settings (options or RHYTHM_NOTIFIER_* variables): {problems}")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("rhythm.notifier").info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def ready(info: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps({"ready": True, **info}) + "\n")
        sys.stdout.flush()

    try:
        run_notifier(settings, stop, on_ready=ready)
    except Exception as exc:
        logging.getLogger("rhythm.notifier").debug("notifier failed", exc_info=True)
        _fail(f"the notifier stopped: {exc}")

"""What every long-running part's command does around its loop (`rhythm sink`, `rhythm
notifier`): logging to stderr, settings errors in one line, SIGTERM/SIGINT as a stop event,
one JSON line on stdout when ready, and a failure as a red error line and exit 1."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import typer
from pydantic import ValidationError

Ready = Callable[[dict[str, Any]], None]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def invalid_settings(exc: ValidationError, variables: str) -> NoReturn:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
    )
    fail(f"invalid settings (options or {variables} variables): {problems}")


def setup_logging(verbose: bool) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )


def run_in_foreground(
    part: str, logger: str, stopping: str, run: Callable[[threading.Event, Ready], None]
) -> None:
    """Run `run(stop, on_ready)` until it returns; SIGTERM or Ctrl-C sets `stop`."""
    log = logging.getLogger(logger)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: %s", signum, stopping)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def ready(info: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps({"ready": True, **info}) + "\n")
        sys.stdout.flush()

    try:
        run(stop, ready)
    except Exception as exc:
        log.debug("%s failed", part, exc_info=True)
        fail(f"the {part} stopped: {exc}")

"""`rhythm up`, `rhythm down`, `rhythm status`: the local stack in the background."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)


def up() -> None:
    """Start Kafka, the processors, the sink (embedded ClickHouse) and, when installed,
    Prometheus (port RHYTHM_STACK_PROMETHEUS_PORT, default 9090) in the background."""
    from rhythm.stack.supervisor import Stack

    try:
        parts = Stack().up()
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    _print(parts)


def down() -> None:
    """Stop everything `rhythm up` started (the sink commits what it holds first)."""
    from rhythm.stack.supervisor import Stack

    Stack().down()
    typer.echo("stack stopped")


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Each part, its consumer lag and the processors' watermark. Exit 3 if a part is down."""
    from rhythm.stack.supervisor import Stack

    parts = Stack().status()
    if as_json:
        typer.echo(json.dumps(parts, indent=2, default=str))
    else:
        _print(parts)
    if not all(p.get("running") for p in parts.values()):
        raise typer.Exit(3)


def _print(parts: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="rhythm stack")
    for column in ("part", "state", "pid", "lag (messages)", "details"):
        table.add_column(column)
    for name, part in parts.items():
        lag = part.get("lag")
        details = ""
        if name == "kafka":
            details = str(part.get("bootstrap", ""))
        elif name == "processors" and part.get("watermark"):
            wm = float(part["watermark"])
            details = f"watermark {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(wm))}Z"
        elif name == "sink":
            details = str(part.get("http") or "")
        elif name == "prometheus":
            details = str(part.get("url") or "")
        table.add_row(
            name,
            "[green]running[/]" if part.get("running") else "[red]stopped[/]",
            str(part.get("pid") or ""),
            ", ".join(f"{t}={n}" for t, n in lag.items()) if lag else "",
            details,
        )
    Console().print(table)

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
    """Start Kafka, the processors (live and history lanes), the sink (embedded ClickHouse)
    and, when installed,
    Prometheus (port RHYTHM_STACK_PROMETHEUS_PORT, default 9090) in the background."""
    from rhythm.stack.supervisor.control import Stack

    try:
        parts = Stack().up()
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    _print(parts)


def down() -> None:
    """Stop everything `rhythm up` started (the sink commits what it holds first)."""
    from rhythm.stack.supervisor.control import Stack

    Stack().down()
    typer.echo("stack stopped")


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Each part: running or not, what its /healthz says, restarts and last exit (from the
    supervisor), consumer lag, the processors' watermark. Exit 3 if a part is down, failing
    /healthz, or in a crash loop."""
    from rhythm.stack.supervisor.control import Stack

    parts = Stack().status()
    if as_json:
        typer.echo(json.dumps(parts, indent=2, default=str))
    else:
        _print(parts)
    if not all(_ok(p) for p in parts.values()):
        raise typer.Exit(3)


def _ok(part: dict[str, Any]) -> bool:
    healthy = (part.get("health") or {}).get("ok") is not False
    return bool(part.get("running")) and healthy and not part.get("crash_loop")


def _state(part: dict[str, Any]) -> str:
    if part.get("crash_loop"):
        return "[red]crash loop[/]"
    if not part.get("running"):
        return "[red]stopped[/]"
    if (part.get("health") or {}).get("ok") is False:
        return f"[red]unhealthy[/] ({part['health'].get('detail')})"
    return "[green]running[/]"


def _restarts(part: dict[str, Any]) -> str:
    if not part.get("restarts") and not part.get("last_exit"):
        return ""
    last = part.get("last_exit") or {}
    at = time.strftime("%H:%M:%S", time.localtime(last["at"])) if last.get("at") else ""
    return f"{part.get('restarts', 0)}; last: {last.get('reason', '')} {at}".strip()


def _processor_details(part: dict[str, Any]) -> str:
    details = []
    if part.get("watermark"):
        wm = float(part["watermark"])
        details.append(f"watermark {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(wm))}Z")
    if part.get("tenants_over_budget"):
        details.append(
            f"[yellow]{part['tenants_over_budget']} tenant(s) over budget[/]: "
            f"{part.get('degraded_events', 0):,} events aggregated (names in the log)"
        )
    elif part.get("degraded_events"):
        details.append(f"{part['degraded_events']:,} events aggregated over budget")
    if part.get("routed_events"):
        details.append(f"{part['routed_events']:,} too-late events routed to history")
    if part.get("later_waiting"):
        details.append(
            f"{part['later_waiting']:,} history events wait until the live lane is done with "
            "their windows"
        )
    return "; ".join(details)


def _print(parts: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="rhythm stack")
    for column in ("part", "state", "pid", "restarts", "lag (messages)", "details"):
        table.add_column(column)
    for name, part in parts.items():
        lag = part.get("lag")
        details = ""
        if name == "kafka":
            details = str(part.get("bootstrap", ""))
        elif name in ("processors", "history"):  # the live lane and the history lane
            details = _processor_details(part)
        elif name == "sink":
            details = str(part.get("http") or "")
        elif name == "prometheus":
            details = str(part.get("url") or "")
        elif name == "supervisor":
            details = str(part.get("metrics") or "")
        if name == "kafka" and part.get("adopted"):
            details += " (adopted from `rhythm kafka up`)"
        table.add_row(
            name,
            _state(part),
            str(part.get("pid") or ""),
            _restarts(part),
            ", ".join(f"{t}={n}" for t, n in lag.items()) if lag else "",
            details,
        )
    Console().print(table)

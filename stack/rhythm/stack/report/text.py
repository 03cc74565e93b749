"""The report on a terminal: rich tables, built from a `Report` without any I/O of its own."""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from rhythm.stack.report import format as fmt
from rhythm.stack.report.data import Report
from rhythm.stack.report.feedback import FEEDBACK_COLUMNS, feedback_rows

MAX_ROWS = 15


def renderables(report: Report) -> list[RenderableType]:
    out: list[RenderableType] = [Text(fmt.headline(report), style="bold")]
    multi = len(report.scopes) > 1
    out += [_silences(report, multi), _waiting(report, multi)]
    out += [_movers(report, multi, "pace"), _movers(report, multi, "amplitude")]
    out.append(_deliveries(report))
    out.append(_feedback(report))
    out.append(_pipeline(report))
    if report.check is not None:
        lines = fmt.check_lines(report.check)
        style = "green" if report.check.exact else "yellow"
        out.append(Group(Text(lines[0], style=f"bold {style}"), *(Text(x) for x in lines[1:])))
    return out


def render_text(report: Report, console: Console) -> None:
    for item in renderables(report):
        console.print(item)
        console.print()


def _table(title: str, caption: str | None = None) -> Table:
    return Table(title=title, title_justify="left", title_style="bold", caption=caption,
                 caption_justify="left", header_style="bold", show_lines=False)  # fmt: skip


def _more(shown: int, total: int) -> str | None:
    return f"… and {total - shown} more (see the HTML report)" if total > shown else None


def _silences(report: Report, multi: bool) -> RenderableType:
    quiet = report.quiet_entities
    shown = quiet[:MAX_ROWS]
    captions = [c for c in (_more(len(shown), len(quiet)), fmt.idle_note(report)) if c]
    table = _table(
        "Gone quiet against their own rhythm (open silence alerts)",
        "\n".join(captions) or None,
    )
    if multi:
        table.add_column("tenant")
    for name in ("entity", "role", "last seen", "silent for", "usual gap", "alert after"):
        table.add_column(name, justify="right" if name not in ("entity", "role") else "left")
    for s in shown:
        table.add_row(*([s.tenant] if multi else []), *fmt.silence_cells(s, report.as_of))
    if not shown:
        table.add_row(*([""] if multi else []), "none", "", "", "", "", "")
    return table


def _waiting(report: Report, multi: bool) -> RenderableType:
    shown = report.waiting[:MAX_ROWS]
    table = _table(
        "Waiting for a reply (open unanswered alerts)", _more(len(shown), len(report.waiting))
    )
    if multi:
        table.add_column("tenant")
    for name in fmt.WAITING_HEADERS:
        right = name in ("waiting for", "reply share", "score")
        table.add_column(name, justify="right" if right else "left")
    for w in shown:
        cells = fmt.waiting_cells(w, report.as_of)
        table.add_row(*([w.tenant] if multi else []), *cells)
    if not shown:
        table.add_row(*([""] if multi else []), "none", *[""] * 8)
    return table


def _movers(report: Report, multi: bool, by: str) -> RenderableType:
    movers = report.pace_movers if by == "pace" else report.amplitude_movers
    table = _table(f"Biggest movers in {by}: {fmt.movers_caption(report)}")
    if multi:
        table.add_column("tenant")
    for name in ("entity", "role", "events", "usual", "pace z", "amount", "usual amount",
                 "amplitude z"):  # fmt: skip
        table.add_column(name, justify="left" if name in ("entity", "role") else "right")
    for m in movers:
        table.add_row(*([m.tenant] if multi else []), *fmt.mover_cells(m))
    if not movers:
        table.add_row(*([""] if multi else []), "none", *[""] * 7)
    return table


def _deliveries(report: Report) -> RenderableType:
    table = _table("Deliveries: heads-ups and digests", fmt.deliveries_note(report))
    for name in fmt.DELIVERY_HEADERS:
        numeric = name in ("deliveries", "people")
        table.add_column(name, justify="right" if numeric else "left")
    for row in fmt.delivery_rows(report):
        table.add_row(*row)
    if not report.deliveries:
        table.add_row("none", *[""] * (len(fmt.DELIVERY_HEADERS) - 1))
    return table


def _feedback(report: Report) -> RenderableType:
    table = _table("Heads-ups told and what recipients said of them")
    for name in FEEDBACK_COLUMNS:
        table.add_column(name, justify="left" if name in ("alert", "entity kind") else "right")
    for cells in feedback_rows(report.feedback[:MAX_ROWS]):
        table.add_row(*cells)
    if not report.feedback:
        table.add_row("none", *[""] * (len(FEEDBACK_COLUMNS) - 1))
    return table


def _pipeline(report: Report) -> RenderableType:
    table = _table("The pipeline itself")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("what is measured", style="dim")
    for measure, value, what in fmt.pipeline_rows(report.pipeline):
        table.add_row(measure, value, what)
    return table

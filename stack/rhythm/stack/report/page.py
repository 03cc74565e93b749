"""The report as one self-contained HTML file: inline CSS, charts as inline SVG, no scripts
and nothing fetched, so it opens the same offline, in a mail attachment or a CI artifact."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from rhythm.stack.report import format as fmt
from rhythm.stack.report.data import Report
from rhythm.stack.report.feedback import FEEDBACK_COLUMNS, feedback_rows

MAX_ROWS = 50

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       margin: 24px auto; max-width: 1180px; color: #1d1d1f; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h3 { font-size: 14px; margin: 14px 0 2px; color: #333; }
h2 { font-size: 17px; margin: 28px 0 6px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.sub, p.note { color: #555; margin: 4px 0 10px; font-size: 13px; }
.cards { display: flex; gap: 12px; margin: 14px 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.card b { display: block; font-size: 22px; }
.card span { color: #555; font-size: 12px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 6px 0; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eee; }
th { background: #f6f6f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.dim { color: #666; }
.check { border: 1px solid #cfd8cf; background: #f3f7f3; border-radius: 6px;
         padding: 8px 12px; font-size: 13px; }
.check.off { border-color: #e0d4c0; background: #faf6ef; }
figure { margin: 10px 0 18px; }
figure svg { width: 100%; height: auto; }
"""


def render_html(report: Report, *, charts: bool = True) -> str:
    """The whole page. `charts=False` leaves the figures out (for comparisons in tests)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(fmt.headline(report))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Rhythm report</h1>",
        f'<p class="sub">{escape(fmt.headline(report))}</p>',
        _cards(report),
    ]
    if report.check is not None:
        lines = fmt.check_lines(report.check)
        css = "check" if report.check.exact else "check off"
        body = "<br>".join(escape(x) for x in lines[1:])
        parts.append(f'<div class="{css}"><b>{escape(lines[0])}</b><br>{body}</div>')
    parts += _silences(report, charts)
    parts += _waiting(report)
    parts += _movers(report, charts)
    parts += _timeline(report, charts)
    parts += _deliveries(report)
    parts += _feedback(report)
    parts += _pipeline(report, charts)
    parts.append("</body></html>")
    return "\n".join(parts)


def _cards(report: Report) -> str:
    p = report.pipeline
    cards = [
        (str(len({s.entity_id for s in report.quiet_entities if s.entity_type == "account"})),
         "accounts gone quiet"),
        (str(len(report.waiting)), "threads waiting for a reply"),
        (str(len([s for s in report.quiet_entities if s.entity_type != "account"])),
         "other entities gone quiet"),
        (f"{p.events:,}", "events stored"),
        (f"{p.average_eps:,.0f}/s", "average ingest"),
    ]  # fmt: skip
    inner = "".join(f'<div class="card"><b>{escape(v)}</b><span>{escape(k)}</span></div>'
                    for v, k in cards)  # fmt: skip
    return f'<div class="cards">{inner}</div>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int]) -> str:
    def cell(tag: str, i: int, text: str) -> str:
        css = ' class="num"' if i in numeric else ""
        return f"<{tag}{css}>{escape(text)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>" for r in rows
    )
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="dim">none</td></tr>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figures(report: Report, whys: tuple[str, ...]) -> list[str]:
    from rhythm.stack.report.charts import entity_chart

    until = max([report.as_of, *(s.last_occurred for s in report.scopes)])
    return [f"<figure>{entity_chart(s, until)}</figure>" for s in report.series if s.why in whys]


def _silences(report: Report, charts: bool) -> list[str]:
    quiet = report.quiet_entities
    multi = len(report.scopes) > 1
    rows = [
        [
            *([s.tenant] if multi else []),
            *fmt.silence_cells(s, report.as_of),
            f"{s.history_gaps:,}",
        ]
        for s in quiet[:MAX_ROWS]
    ]
    headers = [*(["tenant"] if multi else []), "entity", "role", "last seen", "silent for",
               "usual gap", "alert after", "gaps learned"]  # fmt: skip
    off = len(headers) - 7
    out = [
        "<h2>Gone quiet against their own rhythm</h2>",
        '<p class="sub">Open silence alerts: the entity has been quiet longer than its own rhythm '
        "makes likely (its rates in working hours, evenings and days off; at most a chance "
        "alarm a quarter), and nothing since. Accounts first.</p>",
        _table(headers, rows, {off + 3, off + 4, off + 5, off + 6}),
    ]
    if len(quiet) > MAX_ROWS:
        out.append(f'<p class="note">… and {len(quiet) - MAX_ROWS} more.</p>')
    note = fmt.idle_note(report)
    if note:
        out.append(f'<p class="note">{escape(note)}</p>')
    if charts:
        out += _figures(report, ("went silent",))
    return out


def _waiting(report: Report) -> list[str]:
    multi = len(report.scopes) > 1
    rows = [
        [*([w.tenant] if multi else []), *fmt.waiting_cells(w, report.as_of)]
        for w in report.waiting[:MAX_ROWS]
    ]
    headers = [*(["tenant"] if multi else []), *fmt.WAITING_HEADERS]
    off = len(headers) - 9
    return [
        "<h2>Waiting for a reply</h2>",
        '<p class="sub">Open unanswered alerts: an outside party\'s message of a kind that '
        "nearly always gets a reply, waiting longer than nearly all replies took, and still "
        "no answer from our side; who owes it, and how sure the rule is (score).</p>",
        _table(headers, rows, {off + 4, off + 5}),
    ]


def _movers(report: Report, charts: bool) -> list[str]:
    multi = len(report.scopes) > 1
    headers = [*(["tenant"] if multi else []), "entity", "role", "events", "usual events",
               "pace z", "amount", "usual amount", "amplitude z"]  # fmt: skip
    numeric = set(range(len(headers) - 6, len(headers)))
    out = [
        "<h2>Biggest movers in pace and amplitude</h2>",
        f'<p class="sub">{escape(fmt.movers_caption(report))} (quiet windows count as zero); '
        "z = the change in the entity's own standard deviations.</p>",
    ]
    for by, movers in (("pace", report.pace_movers), ("amplitude", report.amplitude_movers)):
        rows = [[*([m.tenant] if multi else []), *fmt.mover_cells(m)] for m in movers]
        out += [f"<h3>by {by}</h3>", _table(headers, rows, numeric)]
    if charts:
        out += _figures(report, ("top pace mover", "top amplitude mover"))
    return out


def _timeline(report: Report, charts: bool) -> list[str]:
    out = ["<h2>Alert timeline</h2>"]
    if charts:
        from rhythm.stack.report.charts import timeline_chart

        svg = timeline_chart(
            report.timeline, report.timeline_bucket_s, report.silences, report.waiting
        )
        out.append(f"<figure>{svg}</figure>")
    return out


def _deliveries(report: Report) -> list[str]:
    return [
        "<h2>Deliveries: heads-ups and digests</h2>",
        f'<p class="sub">{escape(fmt.deliveries_note(report))}</p>',
        _table(fmt.DELIVERY_HEADERS, fmt.delivery_rows(report), {3, 4}),
    ]


def _feedback(report: Report) -> list[str]:
    rows = [list(r) for r in feedback_rows(report.feedback[:MAX_ROWS])]
    return [
        "<h2>Heads-ups told and what recipients said of them</h2>",
        _table(FEEDBACK_COLUMNS, rows, {2, 3, 4, 5, 6}) if rows else "<p class='note'>none</p>",
    ]


def _pipeline(report: Report, charts: bool) -> list[str]:
    rows = [list(r) for r in fmt.pipeline_rows(report.pipeline)]
    out = [
        "<h2>The pipeline itself</h2>",
        _table(["measure", "value", "what is measured"], rows, {1}),
    ]
    if charts and report.pipeline.per_second:
        from rhythm.stack.report.charts import throughput_chart

        out.append(f"<figure>{throughput_chart(report.pipeline.per_second)}</figure>")
    return out

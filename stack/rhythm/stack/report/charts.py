"""The report's charts, drawn with matplotlib into SVG text for inline embedding (the HTML
report must render offline: no scripts, no CDN). Pure: data in, SVG text out.

Only `matplotlib.figure.Figure` is used, never pyplot: no global figure state and no GUI
backend, so drawing is safe in any process (a CLI, a test, a server)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from rhythm.stack.report.data import EntitySeries, Silence, Waiting

COLORS = {
    "events": "#1f77b4",
    "gap_mean": "#9467bd",
    "gap_max": "#8c564b",
    "weight": "#17becf",
    "silence": "#d62728",
    "resumed": "#2ca02c",
    "unanswered": "#ff7f0e",
    "ingest": "#1f77b4",
}
_RC: Any = {  # Any: matplotlib types the keys as a Literal of every rc name
    "svg.fonttype": "none",  # text stays text: smaller, crisp, selectable
    "svg.hashsalt": "rhythm",  # stable element ids: the same data gives the same file
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # ships with matplotlib: the same metrics everywhere
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # inline: no XML declaration or doctype


def _figure(width: float, height: float, rows: int = 1, ratios: Sequence[float] | None = None):  # type: ignore[no-untyped-def]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, height_ratios=ratios, squeeze=False)[:, 0]
    return fig, list(axes)


def _date_axis(ax: Any) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(maxticks=10)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]


def entity_chart(series: EntitySeries, until: datetime) -> str:
    """Frequency, gaps and amplitude of one entity per window, with its silence alerts."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig, (freq, gaps, amp) = _figure(10, 5.2, 3, (1.2, 1, 1))
        xs = [p.window_start for p in series.points]
        width = timedelta(seconds=series.window_seconds * 0.85)
        freq.bar(xs, [p.event_count for p in series.points], width=width, align="edge",
                 color=COLORS["events"])  # fmt: skip
        freq.set_ylabel("events")
        with_gaps = [p for p in series.points if p.gap_mean_s is not None]
        gx = [p.window_start + timedelta(seconds=series.window_seconds / 2) for p in with_gaps]
        gaps.plot(gx, [(p.gap_mean_s or 0) / 3600 for p in with_gaps], marker="o", ms=3,
                  color=COLORS["gap_mean"], label="mean gap")  # fmt: skip
        gaps.plot(gx, [(p.gap_max_s or 0) / 3600 for p in with_gaps], marker=".", ms=3,
                  color=COLORS["gap_max"], label="longest gap", linestyle="--")  # fmt: skip
        if with_gaps:
            gaps.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
            gaps.set_ylim(bottom=0)
        gaps.set_ylabel("gap (hours)")
        amp.bar(xs, [p.weight_sum for p in series.points], width=width, align="edge",
                color=COLORS["weight"])  # fmt: skip
        amp.set_ylabel("amplitude\n(weight sum)")
        for kind, at in series.alerts:
            for ax in (freq, gaps, amp):
                ax.axvline(at, color=COLORS.get(kind, "gray"), linestyle=":", linewidth=1.2)
        start = xs[0] if xs else until - timedelta(days=1)
        amp.set_xlim(start, until)
        _date_axis(amp)
        title = (
            f"{series.entity_type}:{series.entity_id} ({series.role}) — {series.why}; "
            f"per {_window_name(series.window_seconds)}"
        )
        if series.alerts:
            title += "; dotted: silence (red), resumed (green)"
        freq.set_title(title, loc="left", fontsize=10)
        return _svg(fig)


def timeline_chart(
    timeline: Sequence[tuple[datetime, str, int]],
    bucket_s: int,
    silences: Sequence[Silence],
    waiting: Sequence[Waiting],
) -> str:
    """Alerts fired per bucket by kind (stacked), and the ones still open below."""
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    with matplotlib.rc_context(_RC):
        fig, (bars, still) = _figure(10, 3.8, 2, (2.2, 1))
        buckets = sorted({b for b, _, _ in timeline})
        bottom = [0] * len(buckets)
        index = {b: i for i, b in enumerate(buckets)}
        width = timedelta(seconds=bucket_s * 0.9)
        for kind in ("silence", "resumed", "unanswered"):
            heights = [0] * len(buckets)
            for b, k, n in timeline:
                if k == kind:
                    heights[index[b]] += n
            if any(heights):
                bars.bar(buckets, heights, width=width, bottom=bottom, align="edge",
                         color=COLORS[kind], label=kind)  # fmt: skip
                bottom = [x + h for x, h in zip(bottom, heights, strict=True)]
        bars.set_ylabel(f"alerts per {_window_name(bucket_s)}")
        if buckets:
            bars.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
        bars.yaxis.set_major_locator(MaxNLocator(integer=True))
        bars.set_title("Alert timeline (all alerts fired, by kind)", loc="left", fontsize=10)
        quiet = [s.fired_at for s in silences if not s.stream_idle]
        still.scatter(quiet, [1] * len(quiet), marker="v", s=40, color=COLORS["silence"])
        still.scatter([w.fired_at for w in waiting], [0] * len(waiting), marker="D", s=30,
                      color=COLORS["unanswered"])  # fmt: skip
        still.set_yticks([0, 1], ["unanswered", "silent"])
        still.set_ylim(-0.6, 1.6)
        still.set_ylabel("still open")
        _date_axis(still)
        return _svg(fig)


def throughput_chart(per_second: Sequence[tuple[datetime, int]]) -> str:
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig, (ax,) = _figure(10, 2.4)
        xs = [t for t, _ in per_second]
        ys = [n for _, n in per_second]
        ax.fill_between(xs, ys, step="post", color=COLORS["ingest"], alpha=0.35)
        ax.step(xs, ys, where="post", color=COLORS["ingest"], linewidth=1)
        ax.set_ylabel("events / s")
        ax.set_title("Events into Kafka per second (newest hour of ingest)", loc="left",
                     fontsize=10)  # fmt: skip
        _date_axis(ax)
        return _svg(fig)


def _window_name(seconds: int) -> str:
    names = {3600: "hour", 6 * 3600: "6 hours", 86_400: "day"}
    return names.get(seconds, f"{seconds} s")

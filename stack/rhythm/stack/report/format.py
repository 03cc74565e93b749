"""Pure formatting shared by the terminal and the HTML report: durations, times, numbers,
entity labels, and the report's sentences."""

from __future__ import annotations

from datetime import datetime

from rhythm.stack.report.data import Check, Mover, Pipeline, Quantiles, Report, Silence, Waiting


def duration(seconds: float | None) -> str:
    """Two units at most, the way people say it: '3 d 4 h', '2 h 5 min', '40 s'."""
    if seconds is None:
        return "–"
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 1:
        return f"{sign}{s * 1000:.0f} ms"
    if s < 60:
        return f"{sign}{s:.0f} s"
    units = (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1))
    for i, (name, size) in enumerate(units):
        if s >= size:
            whole, rest = divmod(round(s), size)
            small_name, small_size = units[i + 1]
            small = rest // small_size
            return f"{sign}{whole} {name}" + (f" {small} {small_name}" if small else "")
    return f"{sign}{s:.0f} s"  # pragma: no cover - the loop always returns


def when(t: datetime | None) -> str:
    return "–" if t is None else t.strftime("%Y-%m-%d %H:%M UTC")


def number(value: float) -> str:
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def signed(value: float) -> str:
    return f"{value:+.1f}"


def entity(entity_type: str, entity_id: str) -> str:
    return f"{entity_type}:{entity_id}"


def quantiles(q: Quantiles) -> str:
    if not q.n:
        return "none"
    p50, p95, p99 = duration(q.p50_s), duration(q.p95_s), duration(q.p99_s)
    return f"p50 {p50} · p95 {p95} · p99 {p99} (n={q.n:,})"


def rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def headline(report: Report) -> str:
    tenants = ", ".join(s.tenant for s in report.scopes) or "no tenant"
    events = sum(s.events for s in report.scopes)
    if not report.scopes:
        return f"Rhythm report as of {when(report.as_of)}: the store has no events yet."
    first = min(s.first_occurred for s in report.scopes)
    last = max(s.last_occurred for s in report.scopes)
    return (
        f"Rhythm report as of {when(report.as_of)} · {tenants} · {events:,} events "
        f"from {when(first)} to {when(last)}"
    )


def idle_note(report: Report) -> str | None:
    idle = report.idle_silences
    if not idle:
        return None
    by_type: dict[str, int] = {}
    for s in idle:
        by_type[s.entity_type] = by_type.get(s.entity_type, 0) + 1
    kinds = ", ".join(f"{n} {t}" for t, n in sorted(by_type.items(), key=lambda kv: -kv[1]))
    last = max(s.last_occurred for s in report.scopes) if report.scopes else None
    return (
        f"{len(idle)} more went quiet only after the newest event ({when(last)}): the stream "
        f"itself has been idle since, so everything busy looks silent ({kinds})."
    )


def check_lines(check: Check) -> list[str]:
    def part(
        name: str, planted: tuple[str, ...], missed: tuple[str, ...], extra: tuple[str, ...]
    ) -> str:
        found = len(planted) - len(missed)
        line = f"{name}: {found}/{len(planted)} planted found"
        if missed:
            line += f"; missed {', '.join(missed)}"
        if extra:
            line += f"; not planted {', '.join(extra)}"
        return line

    verdict = "exactly the planted ones" if check.exact else "differs from the plan"
    return [
        f"Simulation check: {verdict}.",
        part(
            "silent accounts (as actors)",
            check.planted_accounts,
            check.missed_accounts,
            check.extra_accounts,
        ),
        part(
            "unanswered threads", check.planted_threads, check.missed_threads, check.extra_threads
        ),
    ]


def pipeline_rows(p: Pipeline) -> list[tuple[str, str, str]]:
    """(measure, value, what is measured) for the pipeline section."""
    if not p.events:
        return [("events", "none", "the store has no events yet")]
    rows = [
        (
            "events into Kafka",
            f"{p.events:,} in {duration(p.ingest_seconds)}",
            f"received_at (Kafka message time, set by the producer) from {when(p.first_received)}"
            f" to {when(p.last_received)}",
        ),
        (
            "ingest rate",
            f"{p.average_eps:,.0f}/s average · {p.peak_eps:,}/s peak",
            "events per second by received_at (peak over the newest hour of ingest)",
        ),
    ]
    factor = p.replay_factor
    if factor is not None:
        rows.append(
            (
                "replay",
                f"{factor:,.0f}× real time",
                "history older than its receipt: event time covered per second of ingest",
            )
        )
    rows.append(
        (
            "event time → Kafka",
            quantiles(p.event_lag),
            "occurred_at → received_at of events that happened after ingest began"
            + ("" if p.event_lag.n else " (none: a replay of history)"),
        )
    )
    caught = p.caught_up_s
    if caught is not None:
        rows.append(
            (
                "processors caught up",
                f"{duration(caught)} after the last event",
                "the last signal of a window inside the replayed time, produced after the "
                "last event reached Kafka",
            )
        )
    for window, q in p.signal_latency:
        rows.append(
            (
                f"window close → signal ({duration(window)})",
                quantiles(q),
                "window end → signal produced, windows that ended while ingesting (includes "
                "the allowed lateness)",
            )
        )
    rows.append(
        (
            "alert due → alert",
            quantiles(p.alert_latency),
            "fired_at → alert produced, alerts due while ingesting",
        )
    )
    rows.append(
        (
            "Kafka → store",
            "not recorded",
            "the tables keep no insert time; the sink's rhythm_sink_freshness_seconds "
            "metric has event time → insert acknowledged",
        )
    )
    return rows


def movers_caption(report: Report) -> str:
    movers = report.pace_movers or report.amplitude_movers
    start = when(movers[0].window_start) if movers else "–"
    return (
        f"the newest closed {duration(report.movers_window_s)} window ({start}) against each "
        "entity's own earlier windows"
    )


def silence_cells(s: Silence, as_of: datetime) -> list[str]:
    return [
        entity(s.entity_type, s.entity_id),
        s.role,
        when(s.last_event_at),
        duration(s.silent_for_s(as_of)),
        duration(s.mean_gap_s),
        duration(s.expected_within_s),
    ]


def mover_cells(m: Mover) -> list[str]:
    return [
        entity(m.entity_type, m.entity_id),
        m.role,
        f"{m.current_count:,}",
        f"{number(m.baseline_count)} ± {number(m.baseline_count_sd)}",
        signed(m.pace_z),
        number(m.current_weight),
        number(m.baseline_weight),
        signed(m.amplitude_z),
    ]


WAITING_HEADERS = ("thread", "channel", "sender", "since", "waiting for", "alert after",
                   "reply share", "score", "owes the reply")  # fmt: skip


def waiting_cells(w: Waiting, as_of: datetime) -> list[str]:
    """One waiting message's cells, under WAITING_HEADERS."""
    return [
        w.context_id,
        w.channel,
        entity(w.sender_type, w.sender_id),
        when(w.since),
        duration(w.waiting_for_s(as_of)),
        duration(w.expected_within_s),
        f"{rate(w.reply_rate)} of {w.samples:,}" if w.samples else rate(w.reply_rate),
        f"{w.score:.2f}",
        ", ".join(w.awaiting) or "anyone",
    ]


DELIVERY_HEADERS = ("what", "channel", "state", "deliveries", "people", "last sent")


def delivery_rows(report: Report) -> list[list[str]]:
    return [
        [d.what, d.channel, d.state, f"{d.deliveries:,}", f"{d.recipients:,}", when(d.last_sent)]
        for d in report.deliveries
    ]


def deliveries_note(report: Report) -> str:
    if report.deliveries:
        return (
            "The notifier's deliveries as its ledger published them (rhythm.notifications): "
            "held = waiting for the person's working hours, suppressed = over the daily cap "
            "(left for the digest)."
        )
    return (
        "No deliveries recorded: the notifier runs when a channel is configured "
        "(RHYTHM_NOTIFIER_SMTP_HOST, _WEBHOOK_URL or _SLACK_WEBHOOK_URL)."
    )


#: Feedback on heads-ups (done, snooze, not useful) is not collected yet (issue #17 item 5).

"""`rhythm report`: plain rows in, the model, text and HTML out; and its SQL on a temporary
embedded store filled with what the processors make of a simulation (no Kafka)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from rich.console import Console

from rhythm.schemas.outputs import alert_id
from rhythm.sinks.migrations import migrate
from rhythm.sinks.store import Store
from rhythm.sinks.tables import ALERTS, EVENTS, SIGNALS
from rhythm.sinks.tables.alerts import process as transform_alert
from rhythm.sinks.tables.events import process as transform_event
from rhythm.sinks.tables.rows import Message, Row
from rhythm.sinks.tables.signals import process as transform_signal
from rhythm.stack.report import format as fmt
from rhythm.stack.report.data import (
    Pipeline,
    Report,
    check_against_manifest,
    fetch_report,
    movers_from_rows,
    pipeline_from_rows,
    scopes_from_rows,
    series_targets,
    silences_from_rows,
    waiting_from_rows,
)
from rhythm.stack.report.page import render_html
from rhythm.stack.report.sql import QUERIES, render
from rhythm.stack.report.text import render_text
from rhythm.stack.simulate.generate import SimConfig, generate

from .test_simulate import run_processors

T = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
AS_OF = T + timedelta(days=3)


def scope_rows() -> list[dict[str, Any]]:
    return [
        {
            "tenant": "acme", "events": 1200, "first_occurred": T - timedelta(days=30),
            "last_occurred": T + timedelta(days=2), "first_received": AS_OF - timedelta(minutes=2),
            "last_received": AS_OF - timedelta(minutes=1),
        }
    ]  # fmt: skip


def silence_row(etype: str, eid: str, last: datetime, expected: float, role: str = "actor"):  # type: ignore[no-untyped-def]
    return {
        "tenant": "acme", "role": role, "entity_type": etype, "entity_id": eid,
        "fired_at": last + timedelta(seconds=expected), "last_event_at": last.replace(tzinfo=None),
        "expected_within_s": expected, "details": '{"history_gaps":48}', "gaps_learned": 48,
        "mean_gap_s": 3600.0,
    }  # fmt: skip


def waiting_row(context: str, since: datetime) -> dict[str, Any]:
    details = {"awaiting": ["employee:e-1"], "channel": "email", "reply_rate": 1.0, "samples": 53}
    return {
        "tenant": "acme", "context_id": context, "entity_type": "contact", "entity_id": "c-7",
        "fired_at": since + timedelta(hours=2), "last_event_at": since,
        "expected_within_s": 8192.0, "details": json.dumps(details),
    }  # fmt: skip


def mover_row(eid: str, pace_z: float, amplitude_z: float) -> dict[str, Any]:
    return {
        "tenant": "acme", "role": "actor", "entity_type": "user", "entity_id": eid,
        "current_start": T + timedelta(days=1), "current_count": 160, "baseline_count": 57.7,
        "baseline_count_sd": 10.4, "pace_z": pace_z, "current_weight": 571.0,
        "baseline_weight": 148.0, "amplitude_z": amplitude_z,
    }  # fmt: skip


def sample_report(**changes: Any) -> Report:
    scopes = scopes_from_rows(scope_rows())
    silences = silences_from_rows(
        [
            silence_row("user", "u-9<&>", T, 7200),
            silence_row("account", "acct-2", T - timedelta(days=1), 60_000),
            silence_row("account", "acct-2", T, 3000, role="target"),
            silence_row("tag", "team-sales", T + timedelta(days=2), 300),  # after the stream
        ],
        scopes,
        AS_OF,
    )
    waiting = waiting_from_rows([waiting_row("email-000042", T + timedelta(hours=5))])
    pace = movers_from_rows([mover_row("u-1", 9.9, 1.0)])
    amplitude = movers_from_rows([mover_row("u-2", 0.5, 12.1)])
    values: dict[str, Any] = {
        "as_of": AS_OF, "database": "rhythm", "scopes": scopes, "silences": silences,
        "waiting": waiting, "pace_movers": pace, "amplitude_movers": amplitude,
        "movers_window_s": 86_400, "series": (), "timeline": (), "timeline_bucket_s": 21_600,
        "pipeline": Pipeline(),
    }  # fmt: skip
    return Report(**(values | changes))


# -- pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "–"), (0.25, "250 ms"), (42, "42 s"), (60, "1 min"), (3725, "1 h 2 min"),
        (8192, "2 h 16 min"), (86_400 * 4 + 3600 * 9, "4 d 9 h"), (-90, "-1 min 30 s"),
    ],
)  # fmt: skip
def test_durations_read_the_way_people_say_them(seconds: float | None, text: str) -> None:
    assert fmt.duration(seconds) == text


def test_silences_put_accounts_as_actors_first_and_set_apart_the_idle_stream() -> None:
    report = sample_report()
    keys = [(s.entity_type, s.role, s.entity_id) for s in report.quiet_entities]
    assert keys == [("account", "actor", "acct-2"), ("account", "target", "acct-2"),
                    ("user", "actor", "u-9<&>")]  # fmt: skip
    assert [s.entity_id for s in report.idle_silences] == ["team-sales"]
    first = report.quiet_entities[0]
    assert first.last_event_at.tzinfo is not None  # naive driver times are read as UTC
    assert first.silent_for_s(AS_OF) == 4 * 86_400
    assert first.history_gaps == 48 and first.mean_gap_s == 3600.0
    note = fmt.idle_note(report)
    assert note is not None and note.startswith("1 more went quiet only after the newest event")


def test_waiting_threads_carry_the_rule_s_details() -> None:
    (w,) = waiting_from_rows([waiting_row("email-000042", T)])
    assert (w.channel, w.reply_rate, w.samples, w.awaiting) == ("email", 1.0, 53, ("employee:e-1",))
    assert w.waiting_for_s(AS_OF) == 3 * 86_400
    (bare,) = waiting_from_rows([waiting_row("x", T) | {"details": "not json"}])
    assert (bare.channel, bare.reply_rate, bare.awaiting) == ("", None, ())


def test_pipeline_measures_from_rows() -> None:
    t0 = AS_OF - timedelta(seconds=60)
    ingest = {
        "events": 120_000, "first_received": t0, "last_received": t0 + timedelta(seconds=40),
        "first_occurred": t0 - timedelta(days=30), "last_occurred": t0, "live_events": 0,
        "live_lag_ms": [],
    }  # fmt: skip
    rate = [{"second": t0 + timedelta(seconds=i), "events": 3000 + i} for i in range(40)]
    signals = [
        {"window_seconds": 3600, "live": 2, "live_ms": [310_000.0, 320_000.0, 330_000.0],
         "replay_done": t0 + timedelta(seconds=55)},
        {"window_seconds": 86_400, "live": 0, "live_ms": [], "replay_done": datetime(1970, 1, 1)},
    ]  # fmt: skip
    p = pipeline_from_rows(ingest, rate, signals, {"live": 0, "live_ms": []})
    assert p.average_eps == 3000 and p.peak_eps == 3039
    assert p.replay_factor == pytest.approx(30 * 86_400 / 40)
    assert p.caught_up_s == 15
    assert p.signal_latency[0][1].p50_s == 310 and p.signal_latency[1][1].n == 0
    rows = {measure: (value, what) for measure, value, what in fmt.pipeline_rows(p)}
    assert rows["ingest rate"][0] == "3,000/s average · 3,039/s peak"
    assert rows["window close → signal (1 h)"][0].startswith("p50 5 min 10 s · p95 5 min 20 s")
    assert "a replay" in rows["event time → Kafka"][1]
    assert rows["Kafka → store"][0] == "not recorded"
    assert pipeline_from_rows(None, [], [], None) == Pipeline()


def test_the_check_compares_planted_accounts_as_actors_and_threads() -> None:
    report = sample_report()
    manifest = {
        "tenant": "acme",
        "planted": {
            "silent_accounts": [{"entity_id": "acct-2"}, {"entity_id": "acct-3"}],
            "unanswered_threads": [{"context_id": "email-000042"}],
        },
    }
    check = check_against_manifest(manifest, report.silences, report.waiting)
    assert check.found_accounts == ("acct-2",)  # the target-role row is not counted
    assert check.missed_accounts == ("acct-3",) and not check.extra_accounts
    assert not check.missed_threads and not check.extra_threads and not check.exact
    assert (
        fmt.check_lines(check)[1] == "silent accounts (as actors): 1/2 planted found; missed acct-3"
    )


def test_charted_entities_are_the_top_silent_one_and_the_top_movers() -> None:
    report = sample_report()
    targets = series_targets(report.silences, report.pace_movers, report.amplitude_movers)
    assert [(why, eid) for why, _, _, _, eid in targets] == [
        ("went silent", "acct-2"), ("top pace mover", "u-1"), ("top amplitude mover", "u-2"),
    ]  # fmt: skip


def test_text_report_has_every_section() -> None:
    console = Console(record=True, width=200)
    render_text(sample_report(), console)
    text = console.export_text()
    for expected in (
        "Gone quiet against their own rhythm", "account:acct-2", "4 d", "16 h 40 min",
        "Waiting for a reply", "email-000042", "contact:c-7", "100% of 53", "2 h 16 min",
        "Biggest movers in pace", "user:u-1", "+9.9", "Biggest movers in amplitude",
        "+12.1", "The pipeline itself", "1 more went quiet only after the newest event",
    ):  # fmt: skip
        assert expected in text, expected


def test_the_report_shows_deliveries_and_says_when_there_are_none() -> None:
    from dataclasses import replace

    from rhythm.stack.report.data import deliveries_from_rows

    rows = [
        {"what": "digest", "channel": "email", "state": "sent", "deliveries": 3,
         "recipients": 3, "last_sent": T},
        {"what": "heads-up", "channel": "email", "state": "held", "deliveries": 5,
         "recipients": 2, "last_sent": None},
    ]  # fmt: skip
    report = replace(sample_report(), deliveries=deliveries_from_rows(rows))
    console = Console(record=True, width=200)
    render_text(report, console)
    text = console.export_text()
    assert "Deliveries: heads-ups and digests" in text
    assert "Heads-ups told and what recipients said of them" in text
    assert "│ digest   │ email   │ sent  │          3 │      3 │" in text
    html = render_html(report, charts=False)
    assert "<td>heads-up</td><td>email</td><td>held</td>" in html
    assert "<h2>Heads-ups told and what recipients said of them</h2>" in html
    console = Console(record=True, width=200)
    render_text(sample_report(), console)
    assert "No deliveries recorded: the notifier runs when a channel" in console.export_text()


def test_html_report_is_one_escaped_file_with_its_tables() -> None:
    html = render_html(sample_report(), charts=False)
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<script" not in html and "http" not in html.split("</style>")[0]
    assert "<td>user:u-9&lt;&amp;&gt;</td>" in html  # escaped
    assert "<td>email-000042</td>" in html and "<td>account:acct-2</td>" in html
    assert "<svg" not in html


def test_html_report_draws_its_charts_inline() -> None:
    from rhythm.stack.report.data import EntitySeries, Point

    points = tuple(Point(T + timedelta(days=d), 5 + d, 100.0 * d, 3600.0, 7200.0) for d in range(5))
    series = (
        EntitySeries("went silent", "acme", "actor", "account", "acct-2", 86_400, points,
                     (("silence", T + timedelta(days=5)),)),
    )  # fmt: skip
    timeline = ((T, "silence", 3), (T, "resumed", 2), (T + timedelta(hours=6), "unanswered", 1))
    html = render_html(sample_report(series=series, timeline=timeline))
    assert html.count("<svg") == 2  # the silent account and the alert timeline
    assert "<?xml" not in html
    assert "account:acct-2 (actor) — went silent" in html


def test_sql_is_rendered_for_a_database_name_only() -> None:
    assert all("$db" not in render(name, "analytics") for name in QUERIES)
    assert "FROM analytics.alerts FINAL" in render("open_silences", "analytics")
    with pytest.raises(ValueError):
        render("scope", "rhythm; DROP TABLE x")


# -- the SQL on the embedded store ------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Client]:
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'clickhouse'}")
    try:
        migrate(client, "rhythm")
        yield client
    finally:
        client.close()


def test_the_report_and_the_digest_find_what_the_simulation_planted(store: Client) -> None:
    now = 1_790_000_123_456
    sim = generate(SimConfig(now_ms=now, days=14, scale=0.15, seed=3))
    processed = run_processors(sim)
    sent = now + 2_000  # the replay reaches Kafka just after "now", ~5k events a second
    events: list[Row] = []
    for n, (partition, offset, value) in enumerate(processed.wire):
        row = transform_event(
            Message("rhythm.events", partition, offset, sent + n // 5, None, value)
        )
        assert isinstance(row, tuple)
        events.append(row)
    signals: list[Row] = []
    for n, signal in enumerate(processed.signals):
        row = transform_signal(
            Message("rhythm.signals", 0, n, sent + n // 5, None, json.dumps(signal).encode())
        )
        assert isinstance(row, tuple)
        signals.append(row)
    alerts: list[Row] = []
    for n, a in enumerate(processed.alerts):
        value = json.dumps(a | {"alert_id": alert_id(a)}).encode()
        row = transform_alert(Message("rhythm.alerts", 0, n, sent + 5_000, None, value))
        assert isinstance(row, tuple)
        alerts.append(row)
    writer = Store(store, "rhythm")
    writer.insert(EVENTS, events, "e")
    writer.insert(SIGNALS, signals, "s")
    writer.insert(ALERTS, alerts, "a")
    as_of = datetime.fromtimestamp(now / 1000, UTC) + timedelta(minutes=2)
    report = fetch_report(store, as_of=as_of, manifest=sim.manifest())

    assert report.check is not None
    assert report.check.exact, fmt.check_lines(report.check)
    planted = sim.manifest()["planted"]
    top = report.quiet_entities[: len(planted["silent_accounts"])]
    assert {(s.role, s.entity_type) for s in top} == {("actor", "account")}
    for s in top:
        assert s.mean_gap_s is not None and 2 * 3600 < s.mean_gap_s < 8 * 3600
        assert s.silent_for_s(as_of) > 2 * 86_400
    assert [w.context_id for w in report.waiting] == sorted(
        (t["context_id"] for t in planted["unanswered_threads"]),
        key=lambda c: next(t["message_at"] for t in planted["unanswered_threads"]
                           if t["context_id"] == c),
    )  # fmt: skip
    assert all(
        w.reply_rate and w.reply_rate >= 0.8 and w.samples and w.samples >= 20 and w.awaiting
        for w in report.waiting
    )
    pace_mover = next(m["entity_id"] for m in planted["movers"] if m["kind"] == "pace")
    assert ("target", pace_mover) in {(m.role, m.entity_id) for m in report.pace_movers}
    amount_mover = next(m["entity_id"] for m in planted["movers"] if m["kind"] == "amplitude")
    assert ("actor", amount_mover) in {(m.role, m.entity_id) for m in report.amplitude_movers}
    assert [s.why for s in report.series] == [
        "went silent",
        "top pace mover",
        "top amplitude mover",
    ]
    assert all(s.points for s in report.series)
    assert report.series[0].alerts[-1][0] == "silence"
    assert {"silence", "unanswered"} <= {kind for _, kind, _ in report.timeline}
    p = report.pipeline
    # re-sent copies count until ClickHouse folds them (here: already in the one insert)
    assert len(sim.events) <= p.events <= len(processed.wire)
    assert 4_500 <= p.peak_eps <= 5_000  # 5 a millisecond, less the folded copies
    assert p.replay_factor is not None and p.replay_factor > 100_000
    assert p.event_lag.n == 0  # a replay: every event older than the first receipt

    # The digest's queries on the same store: the manager of the first account planted quiet
    # (the person `make run` shows) is told it went quiet, once, and who they are close to.
    from zoneinfo import ZoneInfo

    from rhythm.notifier.digest import build_digest
    from rhythm.notifier.digest_store import client_rows, fetch_inputs

    manager = sim.manifest()["digest_for"]
    first_quiet = planted["silent_accounts"][0]["entity_id"]
    at = now + 120_000
    inputs = fetch_inputs(
        client_rows(store), database="rhythm", tenant="acme", person=manager, now_ms=at,
        engaged_days=30,
    )  # fmt: skip
    # Their own team's tag is on every event of theirs; accounts are what they work with.
    assert max(inputs.engagement, key=lambda e: inputs.engagement[e]) == "tag:team-success"
    assert f"account:{first_quiet}" in {a.entity for a in inputs.quiet}
    digest = build_digest(
        tenant="acme", person=manager, name=None, zone=ZoneInfo("UTC"), day="d", now_ms=at,
        inputs=inputs,
    )  # fmt: skip
    quiet = [i.entity for i in digest.items if i.kind == "quiet"]
    assert quiet.count(f"account:{first_quiet}") == 1
    assert all(i.affinity > 0 for i in digest.items)
    (told,) = (i for i in digest.items if i.entity == f"account:{first_quiet}")
    n = inputs.engagement[f"account:{first_quiet}"]
    assert "has gone quiet" in told.why and f"you had {n} events with it in 30 days" in told.why

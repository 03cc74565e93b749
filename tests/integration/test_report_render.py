"""The HTML report in a real browser: rendered from sample rows (no Kafka, no store), opened
in headless Chromium offline, and its charts are really drawn (the screenshot has the charts'
colours; the same page without charts has none)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rhythm.stack.report.data import (
    EntitySeries,
    Pipeline,
    Report,
    movers_from_rows,
    pipeline_from_rows,
    points_from_rows,
    scopes_from_rows,
    silences_from_rows,
    waiting_from_rows,
)
from rhythm.stack.report.page import render_html

pytestmark = pytest.mark.integration

T0 = datetime(2026, 10, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=30)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def sample_report() -> Report:
    """A month of one tenant as the store would answer: plain rows through the pure builders."""
    scopes = scopes_from_rows(
        [
            {"tenant": "acme", "events": 167_000, "first_occurred": T0, "last_occurred": NOW,
             "first_received": NOW + timedelta(seconds=2),
             "last_received": NOW + timedelta(seconds=50)},
        ]
    )  # fmt: skip
    quiet_from = NOW - timedelta(days=4)
    silences = silences_from_rows(
        [
            {"tenant": "acme", "role": "actor", "entity_type": "account", "entity_id": "acct-0023",
             "fired_at": quiet_from + timedelta(hours=18), "last_event_at": quiet_from,
             "expected_within_s": 65_536.0, "details": '{"history_gaps": 120}',
             "gaps_learned": 120, "mean_gap_s": 16_000.0},
            {"tenant": "acme", "role": "actor", "entity_type": "user", "entity_id": "u-0056",
             "fired_at": quiet_from + timedelta(hours=3), "last_event_at": quiet_from,
             "expected_within_s": 11_585.0, "details": '{"history_gaps": 900}',
             "gaps_learned": 900, "mean_gap_s": 2_400.0},
        ],
        scopes,
        NOW,
    )  # fmt: skip
    waiting = waiting_from_rows(
        [
            {"tenant": "acme", "context_id": "email-000602", "entity_type": "contact",
             "entity_id": "c-0033", "fired_at": NOW - timedelta(days=2, hours=21),
             "last_event_at": NOW - timedelta(days=3), "expected_within_s": 8192.0,
             "details": '{"channel": "email", "reply_rate": 1.0, "samples": 812, '
                        '"awaiting": ["employee:e-004"]}'},
        ]
    )  # fmt: skip
    mover = {
        "tenant": "acme", "role": "target", "entity_type": "account", "entity_id": "acct-0001",
        "current_start": NOW - timedelta(days=1), "current_count": 586, "baseline_count": 228.0,
        "baseline_count_sd": 42.4, "pace_z": 8.5, "current_weight": 14_492.0,
        "baseline_weight": 782.0, "amplitude_z": 129.6,
    }  # fmt: skip
    movers = movers_from_rows([mover])
    silent_days = [
        {"window_start": T0 + timedelta(days=d), "event_count": 4 + d % 3,
         "weight_sum": 2000.0 + 300 * (d % 4), "gap_mean_s": 16_000.0 + 900 * (d % 5),
         "gap_max_s": 25_000.0 + 1500 * (d % 3)}
        for d in range(26)
    ]  # fmt: skip
    surging = [
        {"window_start": T0 + timedelta(days=d),
         "event_count": 220 + 9 * (d % 4) + (360 if d >= 28 else 0),
         "weight_sum": 700.0 + 40 * (d % 6) + (13_000 if d >= 28 else 0),
         "gap_mean_s": 380.0 if d < 28 else 150.0, "gap_max_s": 900.0 if d < 28 else 400.0}
        for d in range(30)
    ]  # fmt: skip
    series = (
        EntitySeries("went silent", "acme", "actor", "account", "acct-0023", 86_400,
                     points_from_rows(silent_days),
                     (("silence", quiet_from + timedelta(hours=18)),)),
        EntitySeries("top pace mover", "acme", "target", "account", "acct-0001", 86_400,
                     points_from_rows(surging)),
    )  # fmt: skip
    timeline = tuple(
        (T0 + timedelta(hours=6 * i), kind, 1 + (i * 7 + k) % 4)
        for i in range(120)
        for k, kind in enumerate(("silence", "resumed", "unanswered"))
        if (i + k) % 3 == 0
    )
    start = NOW + timedelta(seconds=2)
    pipeline = pipeline_from_rows(
        {"events": 167_000, "first_received": start, "last_received": start + timedelta(seconds=48),
         "first_occurred": T0, "last_occurred": NOW, "live_events": 0, "live_lag_ms": []},
        [{"second": start + timedelta(seconds=s), "events": 3400 + 37 * (s % 7)}
         for s in range(49)],
        [{"window_seconds": 3600, "live": 1, "live_ms": [312_000.0] * 3,
          "replay_done": start + timedelta(seconds=61)}],
        {"live": 0, "live_ms": []},
    )  # fmt: skip
    return Report(
        as_of=NOW + timedelta(minutes=3), database="rhythm", scopes=scopes, silences=silences,
        waiting=waiting, pace_movers=movers, amplitude_movers=movers, movers_window_s=86_400,
        series=series, timeline=timeline, timeline_bucket_s=21_600, pipeline=pipeline,
    )  # fmt: skip


def chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp / f"profile-{page.stem}-{len(args)}"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,5200", *args,
        page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def colored_pixels(png: Path) -> int:
    """Pixels of a clear colour (the charts'); text, rules and pale backgrounds are grey-ish."""
    from PIL import Image

    with Image.open(png) as image:
        data = image.convert("RGB").tobytes()
    triples = zip(data[0::3], data[1::3], data[2::3], strict=True)
    return sum(1 for r, g, b in triples if max(r, g, b) - min(r, g, b) > 60)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: apt-get install -y chromium")
def test_the_html_report_renders_with_its_charts_drawn(tmp_path: Path) -> None:
    report = sample_report()
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    bare = tmp_path / "bare.html"
    bare.write_text(render_html(report, charts=False), encoding="utf-8")

    dom = chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") == 4  # silent account, pace mover, timeline, throughput
    assert "acct-0023" in dom.stdout and "email-000602" in dom.stdout

    shots = {}
    for name, html in (("charts", page), ("bare", bare)):
        png = tmp_path / f"{name}.png"
        done = chromium(html, tmp_path, f"--screenshot={png}")
        assert done.returncode == 0 and png.exists(), done.stderr[-2000:]
        shots[name] = colored_pixels(png)
    assert shots["bare"] < 2_000, shots
    assert shots["charts"] > 50_000, shots  # bars, lines and markers in colour


def test_an_empty_store_still_gives_a_page() -> None:
    report = Report(
        as_of=NOW, database="rhythm", scopes=(), silences=(), waiting=(), pace_movers=(),
        amplitude_movers=(), movers_window_s=86_400, series=(), timeline=(),
        timeline_bucket_s=3600, pipeline=Pipeline(),
    )  # fmt: skip
    html = render_html(report)
    assert "the store has no events yet" in html
    assert html.count("<svg") == 1  # the (empty) alert timeline

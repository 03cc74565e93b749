"""deploy/prometheus, the rules (package data of rhythm.stack.prometheus) and deploy/grafana:
promtool accepts the config and the rules, every alert
has its summary and runbook, the dashboard's queries are all PromQL with known variables, and
`rhythm up`'s generated Prometheus config is valid for the stack's ports.

promtool comes with Debian's `prometheus` package, which CI installs: missing, these fail."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rhythm.stack import prometheus
from rhythm.stack.supervisor.control import Stack, StackSettings

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
RULES_DIR = ROOT / "stack" / "rhythm" / "stack" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "rhythm.json"
ALERTS = {
    "RhythmPipelineDown",
    "RhythmConsumerStalled",
    "RhythmLagGrowing",
    "RhythmFreshnessSLOBurn",
    "RhythmDeadLetters",
    "RhythmClientDroppingEvents",
    "RhythmSlowRecovery",
    "RhythmPartCrashLoop",
    "RhythmNotifierDeliveryFailing",
    "RhythmCollectorShedding",
    "RhythmCollectorBufferFull",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: `apt-get install prometheus` (CI's .ci/run does)")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(RULES_DIR / "rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_scrape_config() -> None:
    result = promtool("check", "config", str(PROM_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_asked_for_is_there_with_a_summary_and_a_runbook() -> None:
    text = (RULES_DIR / "rules.yml").read_text()
    assert text == prometheus.rules_text()  # what `rhythm up` loads
    blocks = re.split(r"\n(?=      - (?:alert|record): )", text)
    alerts: dict[str, list[str]] = {}
    for block in blocks:
        match = re.match(r"\s*- alert: (\w+)", block)
        if match:
            alerts.setdefault(match.group(1), []).append(block)
    assert set(alerts) == ALERTS
    for name, versions in alerts.items():
        for block in versions:
            assert "summary:" in block and "runbook:" in block, name


def test_the_tests_copy_of_the_rules_shortens_every_for() -> None:
    short = prometheus.rules_text(for_override="2s")
    durations = re.findall(r"(?m)^\s+for:\s*(\S+)", short)
    assert durations and set(durations) == {"2s"}
    assert len(durations) == len(re.findall(r"(?m)^\s+for:", prometheus.rules_text()))


def test_the_dashboard_has_queries_on_every_panel_and_no_unknown_variables() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    declared = {v["name"] for v in dashboard["templating"]["list"]}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert {"Throughput (events/s)", "Lag (messages waiting)", "Open alerts"} <= {
        p["title"] for p in panels
    }
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            variables = set(re.findall(r"\$\{?(\w+)", target["expr"]))
            assert variables <= {"__rate_interval"} | declared, (panel["title"], variables)


def test_rhythm_up_writes_a_valid_prometheus_config_for_its_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if prometheus.binary() is None:
        pytest.fail("prometheus is missing: `apt-get install prometheus` (CI's .ci/run does)")
    stack = Stack(
        StackSettings(
            home=tmp_path,
            processor_metrics_port=19465,
            history_metrics_port=19469,
            sink_metrics_port=19464,
            prometheus_port=19090,
            supervisor_metrics_port=19466,
            collector_port=18088,
        )
    )
    # The mail connector runs (and is scraped) when an IMAP account is configured.
    monkeypatch.setenv("RHYTHM_MAIL_IMAP_HOST", "imap.example.com")
    monkeypatch.setenv("RHYTHM_MAIL_METRICS_PORT", "19470")
    (part,) = stack._prometheus_part()
    assert part.ready_port == 19090
    assert f"--storage.tsdb.path={tmp_path.resolve() / 'prometheus' / 'data'}" in part.argv
    config_path = tmp_path / "prometheus" / "prometheus.yml"
    config = json.loads(config_path.read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert targets == {
        "rhythm-processors": ["127.0.0.1:19465", "127.0.0.1:19469"],  # both lanes
        "rhythm-sink": ["127.0.0.1:19464"],
        "rhythm-supervisor": ["127.0.0.1:19466"],
        "rhythm-collector": ["127.0.0.1:18088"],
        "rhythm-mail": ["127.0.0.1:19470"],
        "prometheus": ["127.0.0.1:19090"],
    }
    result = promtool("check", "config", str(config_path))
    assert result.returncode == 0, result.stdout + result.stderr
    # Neither the collector switched off nor the mail connector without an account is scraped.
    monkeypatch.delenv("RHYTHM_MAIL_IMAP_HOST")
    Stack(StackSettings(home=tmp_path, collector_port=0))._prometheus_part()
    jobs = {job["job_name"] for job in json.loads(config_path.read_text())["scrape_configs"]}
    assert not jobs & {"rhythm-collector", "rhythm-mail"}
    assert Stack(StackSettings(home=tmp_path, prometheus_port=0))._prometheus_part() == []


def test_the_alert_logic_on_synthetic_series() -> None:
    """promtool's rule unit tests (rules_test.yml beside the rules): the stalled-consumer
    alert from a part's own verdict and from a failing scrape, down, SLO burn, dead letters."""
    result = promtool("test", "rules", str(RULES_DIR / "rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr

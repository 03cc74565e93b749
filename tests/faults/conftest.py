"""The fault suite prints what it did and found as one table at the end of the run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .report import REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not (REPORT.runs or REPORT.bad or REPORT.notes):
        return
    text = REPORT.markdown()
    terminalreporter.section("rhythm faults: what was injected and what came out")
    terminalreporter.write_line(text)
    target = os.environ.get("RHYTHM_FAULTS_REPORT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(text + "\n", encoding="utf-8")

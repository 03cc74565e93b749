"""The fault report says nothing is good before it was checked."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _report_module() -> ModuleType:
    path = Path(__file__).parents[1] / "faults" / "report.py"
    spec = importlib.util.spec_from_file_location("fault_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_run_whose_checks_did_not_run_says_no_and_not_checked() -> None:
    report = _report_module()
    book = report.Report()
    book.runs.append(report.RunRow("quick", ["SIGKILL sink"], 8203))
    row = book.markdown().splitlines()[2]
    assert row == (
        "| quick | SIGKILL sink | 8,203 | not checked | not checked | not checked "
        "| not checked | no |"
    )


def test_checked_columns_show_what_was_measured() -> None:
    report = _report_module()
    book = report.Report()
    run = report.RunRow("quick", ["broker restart"], 8203)
    run.stored, run.duplicated, run.lost, run.signals_checked = 8037, 0, 0, 4138
    run.alerts_as_expected = True
    book.runs.append(run)
    assert book.markdown().splitlines()[2] == (
        "| quick | broker restart | 8,203 | 8,037 | 0 | 0 | 4,138 | yes |"
    )

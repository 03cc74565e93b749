"""The fault suite's table: each test adds its rows here, and the conftest prints them at
the end of the run (and writes them to $RHYTHM_FAULTS_REPORT as Markdown, if set)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunRow:
    """One run. Nothing is taken as good before it was checked: the counts stay None
    ("not checked") until measured, the verdicts False ("no") until their check passed."""

    name: str
    faults: list[str]
    events_in: int
    stored: int | None = None
    duplicated: int | None = None
    lost: int | None = None
    signals_checked: int | None = None  # set once every closed window was compared
    alerts_as_expected: bool = False


def _count(value: int | None) -> str:
    return "not checked" if value is None else f"{value:,}"


@dataclass
class BadRow:
    door: str
    case: str
    outcome: str


@dataclass
class Report:
    runs: list[RunRow] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines: list[str] = []
        if self.runs:
            lines += [
                "| run | faults injected | events in | stored once | duplicated | lost "
                "| signal windows checked | alerts as expected |",
                "|---|---|---:|---:|---:|---:|---:|---|",
            ]
            for r in self.runs:
                lines.append(
                    f"| {r.name} | {'; '.join(r.faults)} | {r.events_in:,} | {_count(r.stored)} "
                    f"| {_count(r.duplicated)} | {_count(r.lost)} | {_count(r.signals_checked)} "
                    f"| {'yes' if r.alerts_as_expected else 'no'} |"
                )
            lines.append("")
        if self.bad:
            lines += ["| door | bad input | outcome |", "|---|---|---|"]
            lines += [f"| {b.door} | {b.case} | {b.outcome} |" for b in self.bad]
            lines.append("")
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines)


REPORT = Report()

"""The fault suite's table: each test adds its rows here, and the conftest prints them at
the end of the run (and writes them to $RHYTHM_FAULTS_REPORT as Markdown, if set)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunRow:
    name: str
    faults: list[str]
    events_in: int
    stored: int
    duplicated: int
    lost: int
    signals_checked: int
    alerts_equal: bool


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
                    f"| {r.name} | {'; '.join(r.faults)} | {r.events_in:,} | {r.stored:,} "
                    f"| {r.duplicated} | {r.lost} | {r.signals_checked:,} "
                    f"| {'yes' if r.alerts_equal else 'NO'} |"
                )
            lines.append("")
        if self.bad:
            lines += ["| door | bad input | outcome |", "|---|---|---|"]
            lines += [f"| {b.door} | {b.case} | {b.outcome} |" for b in self.bad]
            lines.append("")
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines)


REPORT = Report()

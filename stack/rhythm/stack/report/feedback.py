"""The report's heads-ups and feedback section: per alert kind and kind of entity, how many
heads-ups were told (a delivery sent to a recipient), and what recipients said of them (done,
snooze, not useful) with the not-useful rate. Pure from rows (`feedback_from_rows`), its
queries in `report_sql` (`heads_ups_told`, `feedback_given`), rendered by report_text and
report_html."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FEEDBACK_COLUMNS", "FeedbackLine", "feedback_from_rows", "feedback_rows"]

Row = Mapping[str, Any]
FEEDBACK_COLUMNS = ("alert", "entity kind", "told", "done", "snoozed", "not useful", "rate")


@dataclass(frozen=True)
class FeedbackLine:
    alert_kind: str
    entity_kind: str  # role:entity type ("?" when the feedback did not say and no alert did)
    told: int
    done: int = 0
    snoozed: int = 0
    not_useful: int = 0

    @property
    def not_useful_rate(self) -> float | None:
        return self.not_useful / self.told if self.told else None


def _entity_kind(row: Row) -> str:
    role, entity_type = row.get("role") or "", row.get("entity_type") or ""
    return f"{role}:{entity_type}" if role and entity_type else "?"


def feedback_from_rows(told: Iterable[Row], given: Iterable[Row]) -> tuple[FeedbackLine, ...]:
    """Merge the two queries' rows; most told first."""
    lines: dict[tuple[str, str], dict[str, int]] = {}
    for r in told:
        key = (str(r["alert_kind"]), _entity_kind(r))
        lines.setdefault(key, {})["told"] = lines.get(key, {}).get("told", 0) + int(r["told"])
    field = {"done": "done", "snooze": "snoozed", "not_useful": "not_useful"}
    for r in given:
        name = field.get(str(r["kind"]))
        if name is None:
            continue
        key = (str(r["alert_kind"]) or "?", _entity_kind(r))
        counts = lines.setdefault(key, {})
        counts[name] = counts.get(name, 0) + int(r["n"])
    out = [
        FeedbackLine(kind, entity, c.get("told", 0), c.get("done", 0), c.get("snoozed", 0),
                     c.get("not_useful", 0))
        for (kind, entity), c in lines.items()
    ]  # fmt: skip
    return tuple(sorted(out, key=lambda x: (-x.told, x.alert_kind, x.entity_kind)))


def feedback_rows(lines: Iterable[FeedbackLine]) -> list[tuple[str, ...]]:
    """Table cells: alert kind, entity kind, told, done, snoozed, not useful, rate."""
    return [
        (
            x.alert_kind, x.entity_kind, f"{x.told:,}", f"{x.done:,}", f"{x.snoozed:,}",
            f"{x.not_useful:,}",
            "–" if x.not_useful_rate is None else f"{100 * x.not_useful_rate:.1f} %",
        )
        for x in lines
    ]  # fmt: skip

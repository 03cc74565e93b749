"""Scoring alerts against a scenario's labels, and running the rules over it without Kafka.

`score(scenario, alerts)` takes alerts as the processors publish them (dicts with kind,
tenant, role, entity_type, entity_id, context_id, fired_at, last_event_at, ...), from the real
pipeline or from `run_rules`, and counts per alert kind what the labels say they are. Every
count starts at "not found" / "false alarm": an alert the labels do not explain is a false
alarm, a planted case no alert matches is a miss.

`run_rules(scenario, settings)` feeds the scenario through the processors' own stage-2 code
(`Stage2Partition`, the same object the Faust agent drives) on one partition, in arrival
order, with the watermark at the newest event time seen, as stage 1 reports it; then moves
the watermark to the scenario's end.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from rhythm.processors.explode import explode
from rhythm.processors.settings import ProcessorSettings, TenantSettings
from rhythm.processors.signals.calendar import HOUR_MS, WORK
from rhythm.processors.stage2 import Stage2Partition
from rhythm.schemas.event import validate_record
from rhythm.schemas.outputs import AlertRecord

from .generate import Scenario, WaitLabel

QUARTER_MS = 91 * 86_400_000
BATCH = 2_000


def tenant_settings(scenario: Scenario) -> dict[str, TenantSettings]:
    """What each tenant's admin would configure: zone, working time, holidays, sides."""
    return {
        name: TenantSettings(
            timezone=t["tz"],
            working_days=list(t["working_days"]),
            working_hours=(float(t["working_hours"][0]), float(t["working_hours"][1])),
            holidays=[date.fromisoformat(d) for d in t.get("holidays", ())],
            internal_types=list(t["internal_types"]),
            external_types=list(t["external_types"]),
        )
        for name, t in scenario.tenants.items()
    }


def settings_for(scenario: Scenario, **overrides: Any) -> ProcessorSettings:
    return ProcessorSettings(tenants=tenant_settings(scenario), **overrides)


def run_rules(scenario: Scenario, settings: ProcessorSettings) -> list[AlertRecord]:
    proc = Stage2Partition(
        0, 1, settings.signal_config(), settings.reply_config(), settings.alert_policy()
    )
    alerts: list[AlertRecord] = []
    seen: set[str] = set()
    updates: list[Any] = []
    contexts: list[Any] = []
    newest = -(2**62)
    for offset, event in enumerate(scenario.events):
        record = validate_record(event)
        if record["event_id"] in seen:
            continue  # stage 1 drops re-sent event ids
        seen.add(record["event_id"])
        ts = int(record["occurred_at"])
        newest = max(newest, ts)
        u, c = explode(record, ts, 0, offset)
        updates.extend(u)
        if c is not None:
            contexts.append(c)
        if len(updates) >= BATCH:
            alerts += proc.apply({"p": 0, "wm": newest, "u": updates, "c": contexts}).alerts
            updates, contexts = [], []
    alerts += proc.apply({"p": 0, "wm": newest, "u": updates, "c": contexts}).alerts
    end = scenario.end_ms + int(settings.lateness_s * 1000) + 1
    alerts += proc.apply({"p": 0, "wm": end, "u": [], "c": []}).alerts
    while proc.overdue():  # as the worker's idle ticks do: the rest of what fell due
        alerts += proc.apply({"p": 0, "wm": end, "u": [], "c": []}).alerts
    return alerts


# -- scoring ----------------------------------------------------------------------------------


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class SilenceScore:
    stops: int = 0
    found: int = 0  # a silence alert on the planted stop's last event, before the data ended
    found_within_3_usual: int = 0  # ...within 3x the entity's usual gap of working time
    delays_usual: list[float] = field(default_factory=list)  # delay / usual gap (working time)
    stationary: int = 0
    stationary_alarms: int = 0
    stationary_quarters: float = 0.0
    weekday_only_alarms_off_hours: int = 0  # false alarms that fired outside working time
    weekday_only_alarms_off_time: int = 0  # ...whose quiet held under an hour of working time
    changing: int = 0  # entities whose pace changes (not stationary, no stop)
    changing_alarms: int = 0
    alarms_before_stop: int = 0
    by_pattern: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def recall(self) -> float:
        return self.found / self.stops if self.stops else 1.0

    @property
    def false_alarms_per_entity_quarter(self) -> float:
        q = self.stationary_quarters
        return self.stationary_alarms / q if q else 0.0


@dataclass
class WaitScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    fp_by_label: Counter[str] = field(default_factory=Counter)
    unmatched: int = 0  # alerts on a wait the labels do not name
    ours_alerted: int = 0  # alerts on our own people's messages: must be 0
    cold_missed: int = 0
    cold_found: int = 0
    ambiguous_alarms: int = 0
    delays_h: list[float] = field(default_factory=list)  # missed: alert time - message time

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def score_silence(scenario: Scenario, alerts: Sequence[Mapping[str, Any]]) -> SilenceScore:
    policy = ProcessorSettings(tenants=tenant_settings(scenario)).alert_policy()
    by_key: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for a in alerts:
        if a["kind"] == "silence":
            key = (a["tenant"], a["role"], a["entity_type"], a["entity_id"])
            by_key[key].append(a)
    out = SilenceScore()
    for label in scenario.silence_labels:
        key = (label.tenant, label.role, label.entity_type, label.entity_id)
        found = sorted(by_key.get(key, ()), key=lambda a: int(a["fired_at"]))
        cal = policy.tenant(label.tenant).calendar
        counts = out.by_pattern.setdefault(label.pattern, Counter())
        counts["entities"] += 1
        counts["alerts"] += len(found)
        if label.stop_at_ms is not None and label.stop_kind == "stop":
            out.stops += 1
            hit = [a for a in found if int(a["last_event_at"]) == label.stop_at_ms]
            before = [a for a in found if int(a["last_event_at"]) < label.stop_at_ms]
            out.alarms_before_stop += len(before)
            counts["false_alarms"] += len(before)
            if hit:
                out.found += 1
                counts["found"] += 1
                usual = label.usual_gap_ms or 1
                fired = int(hit[0]["fired_at"])
                # weekday-only entities: their usual gap is within a working day, so the
                # delay counts working time; others: wall time
                if label.weekday_only:
                    delay = cal.split(label.stop_at_ms, fired)[0]
                else:
                    delay = fired - label.stop_at_ms
                ratio = delay / usual
                out.delays_usual.append(ratio)
                if ratio <= 3:
                    out.found_within_3_usual += 1
            else:
                counts["missed"] += 1
            continue
        if label.stationary:
            out.stationary += 1
            out.stationary_alarms += len(found)
            span = (label.last_at_ms or scenario.end_ms) - (label.first_at_ms or scenario.start_ms)
            out.stationary_quarters += max(span, 0) / QUARTER_MS
        else:
            out.changing += 1
            out.changing_alarms += len(found)
        counts["false_alarms"] += len(found)
        if label.weekday_only:
            out.weekday_only_alarms_off_hours += sum(
                1 for a in found if cal.category(int(a["fired_at"])) != WORK
            )
            out.weekday_only_alarms_off_time += sum(
                1
                for a in found
                if cal.split(int(a["last_event_at"]), int(a["fired_at"]))[0] < HOUR_MS
            )
    return out


def wait_segments(scenario: Scenario) -> dict[tuple[str, str, int], list[WaitLabel]]:
    """The waits as the labels see them: each run of outside messages in a thread with no
    message of ours between them, keyed by (tenant, context, sent time) of every member."""
    by_context: dict[tuple[str, str], list[WaitLabel]] = defaultdict(list)
    for w in scenario.wait_labels:
        by_context[(w.tenant, w.context_id)].append(w)
    out: dict[tuple[str, str, int], list[WaitLabel]] = {}
    for (tenant, context), labels in by_context.items():
        run: list[WaitLabel] = []
        for w in sorted(labels, key=lambda w: (w.sent_at_ms, w.event_id)):
            if w.side == "outside":
                run.append(w)
                out[(tenant, context, w.sent_at_ms)] = run
            elif w.is_message:
                run = []
    return out


def score_waits(scenario: Scenario, alerts: Sequence[Mapping[str, Any]]) -> WaitScore:
    segments = wait_segments(scenario)
    internal = {t: set(c["internal_types"]) for t, c in scenario.tenants.items()}
    out = WaitScore()
    alerted: set[int] = set()
    for a in alerts:
        if a["kind"] != "unanswered":
            continue
        if a["entity_type"] in internal.get(a["tenant"], ()):
            out.ours_alerted += 1
        run = segments.get((a["tenant"], a["context_id"], int(a["last_event_at"])))
        if run is None:
            out.unmatched += 1
            out.fp += 1
            out.fp_by_label["unlabelled"] += 1
            continue
        if id(run) in alerted:
            out.fp += 1
            out.fp_by_label["again"] += 1  # a second alert on one wait is noise
            continue
        alerted.add(id(run))
        missed = [w for w in run if w.label == "missed"]
        if missed:
            out.tp += 1
            out.delays_h.append((int(a["fired_at"]) - missed[0].sent_at_ms) / 3_600_000)
            out.cold_found += any(w.cold_start for w in missed)
        else:
            label = next((w.label for w in run if w.label != "ends_thread"), run[0].label)
            out.fp += 1
            out.fp_by_label[label] += 1
            out.ambiguous_alarms += any(w.ambiguous for w in run)
    seen: set[int] = set()
    for run in segments.values():
        if id(run) in seen:
            continue
        seen.add(id(run))
        if any(w.label == "missed" for w in run) and id(run) not in alerted:
            out.fn += 1
            out.cold_missed += any(w.cold_start for w in run if w.label == "missed")
    return out

"""An entity's own rhythm, and when its quiet becomes a silence worth a heads-up.

Pure functions over plain data. The rule bounds false alarms *per entity per quarter*, not
per gap: a per-gap rule ("twice the 95th-percentile gap") fires by chance on every busy
entity, which has thousands of gaps a quarter.

The model (time rescaling, Brown et al. 2002):
- The entity's events come at a rate that depends on the tenant's calendar: one rate in
  working hours, one in the evenings of working days, one on days off (calendar.py). Each is
  estimated from the entity's own history (events over time spent, both decayed with
  `half_life_ms`), shrunk towards its overall rate until it has seen that kind of time.
- A quiet span's *size* is the number of events the entity would have been expected to
  produce in it: Λ = Σ rate[c] × time in c. For a Poisson entity Λ is Exp(1) whatever its
  weekly profile, so nights and weekends of a weekday-only entity add almost nothing.
- Real entities are burstier or more regular than Poisson, so the tail of Λ is learned per
  entity: every gap's Λ is scored against the rates known before it (once its history spans
  a day: a burst of three events in a minute, then a week's quiet, would otherwise look like
  a quiet of thousands of expected events); the share of gaps with
  Λ > 1 (p1) and their mean excess over 1 (e) give P(Λ > c) ≈ p1·exp(-(c-1)/e), shrunk
  towards p1 = 1/e and a mean excess of `PRIOR_EXCESS` (a heavier tail than Poisson: most
  of a young entity's false alarms came from assuming too light a one) by `prior_weight`
  pseudo-gaps. The same above `FAR` = 4
  expected events, for entities whose rare long pauses are heavier than the rest says; the
  more cautious of the two decides.
- With N expected gaps a quarter, a quiet is a silence once Λ reaches
  c = 1 + e·ln(N·p1 / k): then N·P(Λ > c) = k false alarms per quarter at most
  (`false_alarms_per_quarter`), and never where more than `MAX_CHANCE_PER_GAP` of its gaps
  reach (3 expected events for a Poisson entity; less for a regular cadence, whose tail is
  thin).
- No alert before `min_gaps` gaps over `min_span_ms` of history (a week shows the weekly
  profile), nor for a quiet shorter than `min_quiet_ms`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rhythm.processors.signals.calendar import DAY_MS, HOUR_MS, BusinessCalendar

QUARTER_WEEKS = 13
MAX_CHANCE_PER_GAP = 0.05  # never call a quiet a silence that one gap in 20 reaches anyway
SCORE_AFTER_GAPS = 3  # the first gaps' rates are too rough to score a gap against...
SCORE_AFTER_MS = DAY_MS  # ...and so are those of the first day
PRIOR_EXCESS = 2.0  # the pseudo-gaps' mean excess: heavier than Poisson until shown otherwise
FAR = 4.0  # the second tail level, in expected events
SHRINK_EXPOSURE_MS = HOUR_MS  # weight of the overall rate in each category's estimate


@dataclass(frozen=True, slots=True)
class SilenceConfig:
    false_alarms_per_quarter: float = 0.25
    min_gaps: int = 6
    min_span_ms: int = 7 * DAY_MS
    min_quiet_ms: int = 60_000
    half_life_ms: int = 21 * DAY_MS
    prior_weight: float = 4.0


@dataclass(frozen=True, slots=True)
class SilenceRule:
    """What one entity's silence is judged by: its tenant's calendar and the knobs."""

    calendar: BusinessCalendar
    cfg: SilenceConfig


@dataclass(slots=True)
class Rhythm:
    first_ms: int
    counts: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    exposure: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    gaps: int = 0
    scored: float = 0.0  # decayed: gaps whose Λ was scored
    over: float = 0.0  # ... of which Λ > 1
    excess: float = 0.0  # ... their Σ (Λ - 1)
    far: float = 0.0  # ... of which Λ > FAR
    far_excess: float = 0.0  # ... their Σ (Λ - FAR)
    armed: bool = False  # history long enough: the quiet after the last event can alert
    due_ms: int | None = None  # when it becomes a silence (computed when first asked)
    expected: float = 0.0  # c: the quiet, in expected events, that makes a silence
    per_quarter: float = 0.0  # N: the events expected in a quarter
    chance: float = 1.0  # P(a gap at least that quiet) per gap, by the learned tail


@dataclass(frozen=True, slots=True)
class Verdict:
    expected_events: float
    events_per_quarter: float
    chance: float  # the chance of so long a quiet, per gap


def start(ts: int, rule: SilenceRule) -> Rhythm:
    model = Rhythm(first_ms=ts)
    model.counts[rule.calendar.category(ts)] += 1.0
    return model


def rates(model: Rhythm) -> tuple[float, float, float]:
    """Events per ms in working time, evenings, days off."""
    total_exposure = sum(model.exposure)
    overall = sum(model.counts) / total_exposure if total_exposure > 0 else 0.0
    w = SHRINK_EXPOSURE_MS
    n, x = model.counts, model.exposure
    return (
        (n[0] + overall * w) / (x[0] + w),
        (n[1] + overall * w) / (x[1] + w),
        (n[2] + overall * w) / (x[2] + w),
    )


def gap_size(model: Rhythm, split: tuple[int, int, int]) -> float:
    """Λ: the events the entity's current rates expected over a span split by the calendar."""
    r = rates(model)
    return r[0] * split[0] + r[1] * split[1] + r[2] * split[2]


def observe_gap(
    model: Rhythm, last: int, ts: int, rule: SilenceRule, split: tuple[int, int, int]
) -> None:
    """The next final event came at `ts` after `last` (the calendar's `split` of the span
    between): learn from the gap, and judge the quiet after `ts`."""
    learn_gap(model, last, ts, rule, split)
    rejudge(model, ts, rule)


def learn_gap(
    model: Rhythm,
    last: int,
    ts: int,
    rule: SilenceRule,
    split: tuple[int, int, int],
    size: float | None = None,
) -> None:
    """`observe_gap` without the verdict: the model's `armed`, `due_ms`, `expected`,
    `per_quarter` and `chance` are left stale until `rejudge(model, ts, rule)`. Judging costs
    more than learning, and of a run of gaps finalized together only the verdict after the
    last is read unless a gap may be a silence (entity._finalize), so the run judges once.
    `size`: the gap's `gap_size(model, split)` if the caller has it already."""
    cal, cfg = rule.calendar, rule.cfg
    if model.gaps >= SCORE_AFTER_GAPS and last - model.first_ms >= SCORE_AFTER_MS:
        if size is None:
            size = gap_size(model, split)
        model.scored += 1.0
        if size > 1.0:
            model.over += 1.0
            model.excess += size - 1.0
            if size > FAR:
                model.far += 1.0
                model.far_excess += size - FAR
    decay = 0.5 ** ((ts - last) / cfg.half_life_ms)
    for c in range(3):
        model.counts[c] *= decay
        model.exposure[c] = model.exposure[c] * decay + split[c]
    model.scored *= decay
    model.over *= decay
    model.excess *= decay
    model.far *= decay
    model.far_excess *= decay
    model.counts[cal.category(ts)] += 1.0
    model.gaps += 1


def may_arm(model: Rhythm, last: int, rule: SilenceRule) -> bool:
    """False when `judge` would say no verdict for its history alone (too few gaps, too
    short a span), without judging."""
    cfg = rule.cfg
    return model.gaps >= cfg.min_gaps and last - model.first_ms >= cfg.min_span_ms


def expected_floor(rule: SilenceRule) -> float:
    """The least `expected` a verdict under this rule can give: FAR (each tail's threshold is
    at least its level, see `judge`) when the prior weight and the false-alarm budget are
    positive, as the settings make them; 0.0 otherwise (no floor assumed)."""
    cfg = rule.cfg
    return FAR if cfg.prior_weight > 0 and cfg.false_alarms_per_quarter > 0 else 0.0


def due(model: Rhythm, last: int, rule: SilenceRule) -> int | None:
    """When the quiet after `last` (the entity's last event) becomes a silence, or None while
    its history is too short. Solved on the calendar once per last event, when first asked:
    most events are followed by another long before, and need no answer."""
    if not model.armed:
        return None
    if model.due_ms is None:
        solved = rule.calendar.solve(last, rates(model), model.expected)
        model.due_ms = max(solved, last + rule.cfg.min_quiet_ms)
    return model.due_ms


def judge(model: Rhythm, last: int, rule: SilenceRule) -> Verdict | None:
    """How quiet (in expected events) a silence is; None while history is too short."""
    if not may_arm(model, last, rule):
        return None
    cfg = rule.cfg
    r = rates(model)
    week = rule.calendar.week
    per_quarter = QUARTER_WEEKS * (r[0] * week[0] + r[1] * week[1] + r[2] * week[2])
    if per_quarter <= 0:
        return None
    k, w = cfg.false_alarms_per_quarter, cfg.prior_weight
    expected, chance = 0.0, 1.0
    # The tail above 1 expected event, and above FAR: a process with rare long pauses (a
    # meeting-heavy afternoon) has a far tail heavier than its many short pauses say.
    for u, over, excess in ((1.0, model.over, model.excess), (FAR, model.far, model.far_excess)):
        p = (over + w * math.exp(-u)) / (model.scored + w)
        e = (excess + w * PRIOR_EXCESS) / (over + w)
        # c >= u when w > 0 and k > 0: `expected` is then never below FAR (expected_floor)
        c = u + e * math.log(max(per_quarter * p / k, p / MAX_CHANCE_PER_GAP, 1.0))
        if c > expected:
            expected, chance = c, min(1.0, p * math.exp(-(c - u) / e))
    return Verdict(
        expected_events=expected,
        events_per_quarter=per_quarter,
        chance=chance,
    )


def combine(
    earlier: Rhythm, earlier_last: int, later: Rhythm, later_last: int, rule: SilenceRule
) -> Rhythm:
    """One model of an entity's whole sequence from two models of its consecutive parts:
    `earlier` learned from events up to `earlier_last` (the history lane's), `later` from
    events from `later.first_ms` (> earlier_last) to `later_last` (the live lane's own).

    The gap between the parts is learned as `observe_gap` would learn it after `earlier`;
    then the decayed sums add, each part's decayed by the time since its end (decay is
    exponential in time, so it does not matter how many gaps that time held). Counts,
    exposure and the number of gaps are what one model over the whole sequence holds; the
    later part's gap tail (scored, over, excess) is as the later model scored its gaps,
    against its own younger rates (their times are not kept to score them again)."""
    bridge = copy(earlier)
    first = later.first_ms
    observe_gap(bridge, earlier_last, first, rule, rule.calendar.split(earlier_last, first))
    # `later` counted its first event when it started; the bridge counted it as the gap's end
    bridge.counts[rule.calendar.category(first)] -= 1.0
    decay = 0.5 ** ((later_last - first) / rule.cfg.half_life_ms)
    out = Rhythm(
        first_ms=earlier.first_ms,
        counts=[b * decay + x for b, x in zip(bridge.counts, later.counts, strict=True)],
        exposure=[b * decay + x for b, x in zip(bridge.exposure, later.exposure, strict=True)],
        gaps=bridge.gaps + later.gaps,
        scored=bridge.scored * decay + later.scored,
        over=bridge.over * decay + later.over,
        excess=bridge.excess * decay + later.excess,
        far=bridge.far * decay + later.far,
        far_excess=bridge.far_excess * decay + later.far_excess,
    )
    rejudge(out, later_last, rule)
    return out


def without(
    whole: Rhythm, last: int, earlier: Rhythm, earlier_last: int, first: int, rule: SilenceRule
) -> Rhythm:
    """`combine`'s inverse: the model of an entity's events from `first` to `last` out of
    `whole`, its model of the whole sequence, and `earlier`, the model of its events up to
    `earlier_last` (the next one being at `first`). Decay is exponential in time, so each
    part's share of the decayed sums at `last` is known: `earlier` decayed since its end,
    and the gap between the parts as `learn_gap` learned it on `earlier` (its exposure from
    `first`; its score, if scored, from `earlier_last`). What rounding leaves below zero is
    zero."""
    half_life = rule.cfg.half_life_ms
    since_earlier = 0.5 ** ((last - earlier_last) / half_life)
    since_first = 0.5 ** ((last - first) / half_life)
    split = rule.calendar.split(earlier_last, first)
    scored = earlier.gaps >= SCORE_AFTER_GAPS and earlier_last - earlier.first_ms >= SCORE_AFTER_MS
    size = gap_size(earlier, split) if scored else 0.0

    def rest(total: float, part: float) -> float:
        return max(0.0, total - part)

    return Rhythm(
        first_ms=first,
        counts=[
            rest(w, e * since_earlier) for w, e in zip(whole.counts, earlier.counts, strict=True)
        ],
        exposure=[
            rest(w, e * since_earlier + s * since_first)
            for w, e, s in zip(whole.exposure, earlier.exposure, split, strict=True)
        ],
        gaps=max(0, whole.gaps - earlier.gaps - 1),
        scored=rest(whole.scored, (earlier.scored + scored) * since_earlier),
        over=rest(whole.over, (earlier.over + (scored and size > 1.0)) * since_earlier),
        excess=rest(whole.excess, (earlier.excess + max(0.0, size - 1.0)) * since_earlier),
        far=rest(whole.far, (earlier.far + (scored and size > FAR)) * since_earlier),
        far_excess=rest(
            whole.far_excess, (earlier.far_excess + max(0.0, size - FAR)) * since_earlier
        ),
    )


def copy(model: Rhythm) -> Rhythm:
    return Rhythm(
        first_ms=model.first_ms, counts=list(model.counts), exposure=list(model.exposure),
        gaps=model.gaps, scored=model.scored, over=model.over, excess=model.excess,
        far=model.far, far_excess=model.far_excess, armed=model.armed, due_ms=model.due_ms,
        expected=model.expected, per_quarter=model.per_quarter, chance=model.chance,
    )  # fmt: skip


def rejudge(model: Rhythm, last: int, rule: SilenceRule) -> None:
    """The verdict after the last event, as `observe_gap` leaves it."""
    verdict = judge(model, last, rule)
    model.armed = verdict is not None
    model.due_ms = None
    if verdict is not None:
        model.expected = verdict.expected_events
        model.per_quarter = verdict.events_per_quarter
        model.chance = verdict.chance

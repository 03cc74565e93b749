"""Per-entity signals in event time: tumbling windows, gaps, and the silence rule.

Pure functions over plain data; the processor owns I/O and state storage.

Event time, as one entity sees it (W is the watermark, L the allowed lateness):
- An event is *final* once W - L has passed it: no on-time event can arrive before it any more.
  Gaps are computed over final events in event-time order, so out-of-order arrival within L
  gives exactly the gaps of the sorted sequence. Each gap is counted in the window(s) of the
  later event; the entity's first event ever has none.
- Count and weight are order-independent and are added to the event's windows on arrival.
- A window [start, end) closes, and is emitted once with version 1, when W >= end + L.
- A *late* event (its time already < W - L on arrival) is never dropped silently:
  * newer than the entity's last final event: it simply extends the final sequence, gap and
    all (exact);
  * older: it counts toward frequency and amplitude of its windows but not toward gaps (that
    would need the entity's whole history), and is counted in the window's `late_count`;
  * if its window was already emitted, the window is emitted again with version + 1 (the
    store keeps the highest version); windows are kept for `late_retention_ms` after closing
    for that. Later than that, the event is reported too late (counted by the processor; the
    raw event is still stored by the sink).
- An entity with more than `max_pending` on-time events not yet final (a watermark held
  back by a silent source partition, or a *hot* entity: a bot sending thousands a minute)
  has some made final early: its state stays bounded whatever its rate; see
  `_finalize_early` for what stays exact.
Silence (rhythm.py): for the entities a rule is given for, each final event's gap teaches
the entity's own rhythm, which says when the quiet after its last event becomes a silence. The
check runs in event time over final events only, so replaying history fast gives the same
alerts as living through it.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from rhythm.processors.signals import rhythm
from rhythm.processors.signals.rhythm import Rhythm, SilenceRule

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class SignalConfig:
    window_sizes_ms: tuple[int, ...] = (HOUR_MS, DAY_MS)
    lateness_ms: int = 300_000
    late_retention_ms: int = DAY_MS
    # An entity's not-yet-final event times are its only state that grows with its rate
    # (rate x lateness): past this many, the oldest half is made final early (see add_event).
    max_pending: int = 32768
    # State that ends: an entity holding nothing (no pending event, no window) is forgotten
    # this long after its last event, or `norms_ttl_ms` if a silence rule is given for it.
    idle_ttl_ms: int = 7 * DAY_MS
    norms_ttl_ms: int = 90 * DAY_MS


@dataclass(slots=True)
class Window:
    size_ms: int
    start_ms: int
    event_count: int = 0
    weight_sum: float = 0.0
    weight_max: float = float("-inf")
    gap_count: int = 0
    gap_min_ms: int = 0
    gap_max_ms: int = 0
    gap_sum_ms: int = 0
    first_ms: int = 0
    last_ms: int = 0
    silence_before_ms: int | None = None
    late_count: int = 0
    version: int = 0  # how many times emitted
    dirty: bool = True  # changed since last emitted

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.size_ms

    def add_event(self, ts: int, weight: float) -> None:
        self.add_events(ts, 1, weight, weight)

    # Comparisons rather than min() and max(), called per event: the same results (a NaN
    # weight included: max(a, b) is b only if b > a), for a fraction of the cost.
    def add_events(self, ts: int, count: int, weight_sum: float, weight_max: float) -> None:
        if self.event_count == 0:
            self.first_ms = self.last_ms = ts
        elif ts < self.first_ms:
            self.first_ms = ts
        elif ts > self.last_ms:
            self.last_ms = ts
        self.event_count += count
        self.weight_sum += weight_sum
        if weight_max > self.weight_max:  # noqa: PLR1730 (see above)
            self.weight_max = weight_max
        self.dirty = True

    def add_gap(self, ts: int, gap_ms: int) -> None:
        if self.gap_count == 0:
            self.gap_min_ms = self.gap_max_ms = gap_ms
        elif gap_ms < self.gap_min_ms:
            self.gap_min_ms = gap_ms
        elif gap_ms > self.gap_max_ms:
            self.gap_max_ms = gap_ms
        self.gap_count += 1
        self.gap_sum_ms += gap_ms
        if ts == self.first_ms:
            self.silence_before_ms = gap_ms
        self.dirty = True

    def to_signal(self) -> dict[str, Any]:
        """The signal's measures (the caller adds tenant, role and entity)."""
        gaps = self.gap_count > 0
        return {
            "window_start": self.start_ms,
            "window_seconds": self.size_ms // 1000,
            "event_count": self.event_count,
            "weight_sum": self.weight_sum,
            "weight_max": self.weight_max,
            "gap_count": self.gap_count,
            "gap_min_s": self.gap_min_ms / 1000 if gaps else None,
            "gap_max_s": self.gap_max_ms / 1000 if gaps else None,
            "gap_mean_s": self.gap_sum_ms / self.gap_count / 1000 if gaps else None,
            "first_event_at": self.first_ms,
            "last_event_at": self.last_ms,
            "silence_before_s": (
                self.silence_before_ms / 1000 if self.silence_before_ms is not None else None
            ),
            "late_count": self.late_count,
            "version": self.version,
        }


@dataclass(slots=True)
class EntityState:
    pending: list[int] = field(default_factory=list)  # on-time event times, not yet final
    last_ms: int | None = None  # newest final event
    windows: dict[tuple[int, int], Window] = field(default_factory=dict)
    rhythm: Rhythm | None = None  # only for entities a silence rule is given for
    silent_since_ms: int | None = None  # last event time of an alerted silence episode
    hot: bool = False  # pending hit max_pending; not saved (a restart may log it again)
    # The history lane only: the last event time whose norms went to the live lane (None:
    # not yet), so a restart hands off what changed since, and nothing else (take_norms).
    handed_ms: int | None = None
    # The live lane only: the history lane's norms it last took (take_norms), the time of
    # their last event, and of the first event this lane finalized after it: what a later
    # hand-off of more of that history replaces.
    taken: Rhythm | None = None
    taken_ms: int | None = None
    taken_next_ms: int | None = None
    taken_epoch: int = 0  # the epoch of the tenant's history it came from (tenants.py)


@dataclass(slots=True)
class EntityAlert:
    kind: str  # "silence" | "resumed"
    fired_at_ms: int
    last_event_at_ms: int
    expected_within_ms: int
    score: float
    details: dict[str, Any]


@dataclass(slots=True)
class AdvanceResult:
    signals: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[EntityAlert] = field(default_factory=list)
    early: int = 0  # events made final before W - L (a hot entity's pending was full)
    became_hot: bool = False


ADDED, LATE, TOO_LATE = "added", "late", "too_late"
#: `silent_since_ms` after a routed event (note_routed): the quiet since it is the history
#: lane's to judge, not this lane's; the next event here resumes judging, with no `resumed`.
ROUTED_QUIET = -1


def window_start(ts: int, size_ms: int) -> int:
    return ts - ts % size_ms


def add_event(
    state: EntityState,
    ts: int,
    weight: float,
    watermark_ms: int,
    cfg: SignalConfig,
    out: AdvanceResult,
    rule: SilenceRule | None = None,
) -> str:
    """Take one event. Returns ADDED (on time), LATE (late but counted) or TOO_LATE.

    A late event can end a silence episode at once: its alerts go to `out`.
    """
    return _add(state, ts, 1, weight, weight, watermark_ms, cfg, out, rule, False)


def add_run(
    state: EntityState,
    second_ms: int,
    count: int,
    weight_sum: float,
    weight_max: float,
    watermark_ms: int,
    cfg: SignalConfig,
    out: AdvanceResult,
    rule: SilenceRule | None = None,
) -> str:
    """Take `count` events of one second (`second_ms`, its start), aggregated by stage 1
    for a tenant over its budget (the degraded mode, stage1.py). Counts, sums and maxima are
    exact; in the gap sequence the second is one point, once however many runs it came in,
    so gaps are between busy seconds, not events, and windows' first and last event times
    are to the second."""
    return _add(state, second_ms, count, weight_sum, weight_max, watermark_ms, cfg, out, rule, True)


def add_runs(
    state: EntityState,
    first_ms: int,
    weights: list[float],
    seconds: list[int],
    watermark_ms: int,
    cfg: SignalConfig,
    out: AdvanceResult,
    rule: SilenceRule | None = None,
) -> tuple[int, int]:
    """A run's events (explode.py: their weights, and their whole seconds after `first_ms`)
    taken per second, in time order; returns how many were late and too late."""
    per: dict[int, list[float]] = {}
    for weight, second in zip(weights, seconds, strict=True):
        acc = per.get(second)
        if acc is None:
            per[second] = [1, weight, weight]
        else:
            acc[0] += 1
            acc[1] += weight
            acc[2] = max(acc[2], weight)
    late = too_late = 0
    for second in sorted(per):
        n, total, top = per[second]
        ts = first_ms + second * 1000
        outcome = add_run(state, ts, int(n), total, top, watermark_ms, cfg, out, rule)
        if outcome == LATE:
            late += int(n)
        elif outcome == TOO_LATE:
            too_late += int(n)
    return late, too_late


def _add(
    state: EntityState,
    ts: int,
    count: int,
    weight_sum: float,
    weight_max: float,
    watermark_ms: int,
    cfg: SignalConfig,
    out: AdvanceResult,
    rule: SilenceRule | None,
    point_once: bool,
) -> str:
    final_before = watermark_ms - cfg.lateness_ms
    if ts >= final_before and (state.last_ms is None or ts >= state.last_ms):
        if not (point_once and (ts == state.last_ms or ts in state.pending)):
            state.pending.append(ts)
        windows = state.windows
        for size in cfg.window_sizes_ms:  # _window, inline: per event and window size
            window = windows.get((size, ts - ts % size))
            if window is None:
                window = _window(state, size, ts)
            # Window.add_events, inline (the same steps): per event and window size
            if window.event_count == 0:
                window.first_ms = window.last_ms = ts
            elif ts < window.first_ms:
                window.first_ms = ts
            elif ts > window.last_ms:
                window.last_ms = ts
            window.event_count += count
            window.weight_sum += weight_sum
            if weight_max > window.weight_max:  # noqa: PLR1730
                window.weight_max = weight_max
            window.dirty = True
        if len(state.pending) > cfg.max_pending:
            _finalize_early(state, cfg, rule, out)
        return ADDED
    # Late, or (only after _finalize_early) older than an event already made final: its
    # gap can no longer be placed, so it is counted like a late event.
    counted = False
    for size in cfg.window_sizes_ms:
        start = window_start(ts, size)
        if start + size + cfg.lateness_ms + cfg.late_retention_ms <= watermark_ms:
            continue  # closed and past retention: this window can no longer be corrected
        window = _window(state, size, ts)
        window.add_events(ts, count, weight_sum, weight_max)
        window.late_count += count
        counted = True
    if not counted:
        return TOO_LATE
    if state.last_ms is None or ts > state.last_ms:
        # Newer than every final event: it extends the final sequence exactly.
        _finalize(state, ts, cfg, rule, out)
    return LATE


def note_routed(
    state: EntityState, ts: int, cfg: SignalConfig, rule: SilenceRule | None = None
) -> bool:
    """An event the live lane routed to the history lane (processors/lanes.py): it counts in
    no window here, but, newer than every final event and older than every pending one, it
    takes its place in the entity's final sequence, so the next event's gap, and the
    silence rule's norms, are those of the whole sequence. Its alerts are the history
    lane's (marked historical), not this lane's, and so is the quiet after it (a later routed
    event may end it; the lane's notes arrive interleaved from its source partitions): no
    silence is judged here until the entity's next event in this lane. Returns whether it
    was placed."""
    if (state.last_ms is not None and ts <= state.last_ms) or (
        state.pending and ts >= min(state.pending)
    ):
        return False
    _finalize(state, ts, cfg, rule, AdvanceResult(), gaps_in_windows=False)
    state.silent_since_ms = ROUTED_QUIET
    return True


def _finalize_early(
    state: EntityState, cfg: SignalConfig, rule: SilenceRule | None, out: AdvanceResult
) -> None:
    """More than `max_pending` events not yet final: bound the entity's state whatever its
    rate and however long the watermark is held (a source partition not heard from yet).
    First, exactly: the events more than the lateness behind the entity's own newest one
    are made final (a later event still older than them would be over the lateness behind
    an event already seen). If that frees less than a quarter, the entity is *hot* (more
    than max_pending / 4 events within the lateness): its oldest half is made final. Counts,
    sums and maxima stay exact; its gaps stay exact while its events come in order; an event
    older than one made final is counted as late (in `late_count`)."""
    pending = state.pending
    pending.sort()
    horizon = pending[-1] - cfg.lateness_ms
    cut = bisect_left(pending, horizon)
    if cut < len(pending) // 4:
        cut = len(pending) // 2
        if not state.hot:
            state.hot = out.became_hot = True
    _finalize_all(state, pending[:cut], cfg, rule, out)
    del pending[:cut]
    out.early += cut


def advance(
    state: EntityState, watermark_ms: int, cfg: SignalConfig, rule: SilenceRule | None = None
) -> AdvanceResult:
    """Finalize events, emit closed (or corrected) windows and silence alerts up to W."""
    out = AdvanceResult()
    final_before = watermark_ms - cfg.lateness_ms
    if state.pending:
        state.pending.sort()
        cut = bisect_left(state.pending, final_before)
        _finalize_all(state, state.pending[:cut], cfg, rule, out)
        del state.pending[:cut]
        if not state.pending:
            state.pending = []  # an emptied list keeps its capacity: idle entities are many
    if state.hot and len(state.pending) <= cfg.max_pending // 4:
        state.hot = False
    _check_silence(state, final_before, rule, out)
    # A window has something to do once closed (W >= end + L): be emitted if dirty, be
    # dropped past its retention. An entity keeps a day of closed clean windows, so find
    # the few with work in one pass first, and sort only those (the signals' order).
    windows = state.windows
    dropped_by = final_before - cfg.late_retention_ms
    ready = [
        key
        for key, w in windows.items()
        if w.start_ms + w.size_ms <= final_before
        and (w.dirty or w.start_ms + w.size_ms <= dropped_by)
    ]
    for key in sorted(ready):
        window = windows[key]
        if window.dirty:
            window.version += 1
            window.dirty = False
            out.signals.append(window.to_signal())
        if window.start_ms + window.size_ms <= dropped_by:
            del windows[key]
    if ready and not windows:
        state.windows = {}  # likewise
    return out


def expires_at(
    state: EntityState, cfg: SignalConfig, rule: SilenceRule | None = None
) -> int | None:
    """The watermark at which the entity may be forgotten (None: not while it holds
    something, or waits for a silence it has not yet alerted). A later event starts it
    afresh: its first gap is then unknown, as for a new entity."""
    if state.pending or state.windows or state.last_ms is None:
        return None
    model = state.rhythm
    if model is None:  # no silence rule: nothing to learn from its past
        return state.last_ms + cfg.idle_ttl_ms
    # A silence rule's entity keeps even a lone first event: forgotten after a week, a
    # weekly account would start afresh at each event and never learn its rhythm.
    waiting = rule is not None and model.armed and state.silent_since_ms is None
    if waiting and rule is not None and rhythm.due(model, state.last_ms, rule) is not None:
        return None  # its silence is still to come (it is forgotten after)
    return state.last_ms + cfg.norms_ttl_ms


def next_due_ms(
    state: EntityState, cfg: SignalConfig, rule: SilenceRule | None = None
) -> int | None:
    """The smallest watermark at which `advance` would have something to do."""
    candidates: list[int] = []
    if state.pending:
        candidates.append(min(state.pending) + cfg.lateness_ms + 1)
    if state.windows:  # a dirty window is due when it closes, a clean one when dropped
        retention = cfg.late_retention_ms
        ends = (
            w.start_ms + w.size_ms + (0 if w.dirty else retention) for w in state.windows.values()
        )
        candidates.append(min(ends) + cfg.lateness_ms)
    model, last = state.rhythm, state.last_ms
    if model is not None and rule is not None and last is not None and model.armed:
        when = rhythm.due(model, last, rule) if state.silent_since_ms is None else None
        if when is not None:
            candidates.append(when + cfg.lateness_ms + 1)
    expiry = expires_at(state, cfg, rule)
    if expiry is not None:
        candidates.append(expiry)
    return min(candidates) if candidates else None


def _window(state: EntityState, size: int, ts: int) -> Window:
    start = window_start(ts, size)
    window = state.windows.get((size, start))
    if window is None:
        window = state.windows[(size, start)] = Window(size_ms=size, start_ms=start)
    return window


def _finalize(
    state: EntityState,
    ts: int,
    cfg: SignalConfig,
    rule: SilenceRule | None,
    out: AdvanceResult,
    gaps_in_windows: bool = True,
) -> None:
    """Make `ts` the entity's next final event: its gap goes to its windows and teaches the
    rhythm of an entity a silence rule is given for."""
    _finalize_all(state, [ts], cfg, rule, out, gaps_in_windows)


def _finalize_all(
    state: EntityState,
    times: list[int],
    cfg: SignalConfig,
    rule: SilenceRule | None,
    out: AdvanceResult,
    gaps_in_windows: bool = True,
) -> None:
    """`_finalize` each of `times` in order, for less than one call each: the rhythm is
    judged once at the end (`_learn`), and the gaps go to the windows window by window (an
    event's windows are mostly its predecessor's)."""
    last = state.last_ms
    model = state.rhythm
    stale_at = None  # the time the model must be judged at (`_learn`), if stale
    gaps: list[tuple[int, int]] = []  # (event time, its gap)
    for ts in times:
        if last is None:  # the entity's first event ever
            if rule is not None:
                state.rhythm = model = rhythm.start(ts, rule)
            last = ts
            continue
        if model is not None and rule is not None:
            stale_at = _learn(state, model, last, ts, rule, out, stale_at)
        gaps.append((ts, ts - last))
        last = max(last, ts)
    state.last_ms = last
    if stale_at is not None and model is not None and rule is not None:
        rhythm.rejudge(model, stale_at, rule)
    if gaps_in_windows:
        windows = state.windows
        for size in cfg.window_sizes_ms:
            start, window = None, None
            for ts, gap in gaps:
                if ts - ts % size != start:
                    start = ts - ts % size
                    window = windows.get((size, start))
                if window is not None:
                    window.add_gap(ts, gap)


def _learn(
    state: EntityState,
    model: Rhythm,
    last: int,
    ts: int,
    rule: SilenceRule,
    out: AdvanceResult,
    stale_at: int | None,
) -> int:
    """The rhythm's part of finalizing `ts` after `last`: a silence the gap turned out to be,
    the end of one, and what the gap teaches (rhythm.learn_gap). Returns the time the model
    must be judged at (rhythm.rejudge): the caller judges it at the end of its run.

    Judging the quiet after each gap cost more than learning from it, and of a run of events
    finalized together only the last verdict is read, unless a gap may be a silence: so the
    model is left stale between gaps (`stale_at`, from the previous call) and judged first
    only then. Same alerts and state as judging after every gap."""
    split = rule.calendar.split(last, ts)
    size = None
    if state.silent_since_ms is None:
        if stale_at is not None and rhythm.may_arm(model, stale_at, rule):
            size = rhythm.gap_size(model, split)
            # A verdict's `expected` is at least the rule's floor (FAR, rhythm.judge): a
            # smaller gap is no silence whatever the verdict, which is then not needed here.
            if size >= rhythm.expected_floor(rule) * (1 - 1e-9):
                rhythm.rejudge(model, stale_at, rule)
                stale_at = None
        # Λ >= c is necessary for ts > due: only then is the due time solved.
        if stale_at is None and model.armed:
            if size is None:
                size = rhythm.gap_size(model, split)
            if size >= model.expected * (1 - 1e-9):
                when = rhythm.due(model, last, rule)
                if when is not None and ts > when:
                    # The quiet became a silence before this event ended it: the episode
                    # happened, whether or not the watermark saw its deadline pass live.
                    out.alerts.append(_silence(model, last, when))
                    state.silent_since_ms = last
    if state.silent_since_ms is not None:
        if state.silent_since_ms != ROUTED_QUIET:
            if stale_at is not None:  # its details are the verdict's
                rhythm.rejudge(model, stale_at, rule)
            out.alerts.append(_resumed(model, last, ts))
        state.silent_since_ms = None
    if last == state.taken_ms and state.taken_next_ms is None:
        state.taken_next_ms = ts  # the gap from the history taken (take_norms)
    rhythm.learn_gap(model, last, ts, rule, split, size)
    return ts


def _check_silence(
    state: EntityState, final_before: int, rule: SilenceRule | None, out: AdvanceResult
) -> None:
    model, last = state.rhythm, state.last_ms
    if rule is None or model is None or last is None or state.silent_since_ms is not None:
        return
    due = rhythm.due(model, last, rule)
    if due is None:
        return
    # Silent at `due` only if every event before `due` is final (due < W - L) and none came.
    if due < final_before and not (state.pending and state.pending[0] <= due):
        out.alerts.append(_silence(model, last, due))
        state.silent_since_ms = last


def _details(model: Rhythm) -> dict[str, Any]:
    per_day = [round(r * DAY_MS, 4) for r in rhythm.rates(model)]
    return {
        "expected_events": round(model.expected, 3),
        "events_per_quarter": round(model.per_quarter, 1),
        "rates_per_day": {"work": per_day[0], "evening": per_day[1], "off": per_day[2]},
        "chance_per_gap": float(f"{model.chance:.3g}"),
        "history_gaps": model.gaps,
    }


def _silence(model: Rhythm, last: int, due: int) -> EntityAlert:
    return EntityAlert("silence", due, last, due - last, 1.0 - model.chance, _details(model))


def _resumed(model: Rhythm, last: int, ts: int) -> EntityAlert:
    return EntityAlert("resumed", ts, last, ts - last, 0.0, _details(model))


#: take_norms's outcomes: the live lane had no model of its own (the history's is taken as
#: it is), had one of later events only (the two are combined), or kept its own.
ADOPTED, COMBINED, OVERLAP, EXPIRED = "adopted", "combined", "overlap", "expired"


def take_norms(
    state: EntityState,
    learned: Rhythm,
    learned_last: int,
    watermark_ms: int,
    cfg: SignalConfig,
    rule: SilenceRule,
    epoch: int = 0,
) -> str:
    """The live lane takes an entity's norms the history lane `learned` from its events up
    to `learned_last`. The rule:
    only norms of events older than every event this lane's model has counted are taken
    (the model's first event; or, with no final event yet, every pending one), so nothing is
    counted twice; a taken model starts at the history's first event, so the same norms
    handed off again (a restart, a re-sent message) are older than nothing and are left
    (OVERLAP): taking is idempotent. Norms of an entity whose last event is older than
    `norms_ttl_ms` are left too (EXPIRED): this lane would have forgotten them.

    With no model here, the history's is taken whole, with its last event (the next event's
    gap is then the whole sequence's, as for a routed event), and the quiet after it is
    the history lane's to judge (as after a routed event: `note_routed`): this lane judges
    the entity's silence from its next event on, with no `resumed`. With a model of later events,
    the two are combined (`rhythm.combine`).

    Norms of more of the history taken before (the same first event, a later last one: a
    second import) replace it: with nothing finalized here since, they are taken whole
    again; else the part learned here (`rhythm.without` the history taken and its gap to
    this lane's next event) is combined with them, if they end before that event. Norms of
    a later `epoch` of the tenant's history (it was computed again from the start, with
    more history: tenants.py) replace what was taken of an earlier one the same way,
    whatever their first and last events; those of an earlier epoch are left."""
    if learned_last + cfg.norms_ttl_ms <= watermark_ms:
        return EXPIRED
    own, last = state.rhythm, state.last_ms
    taken, taken_ms = state.taken, state.taken_ms
    if own is None or last is None:  # (a model without a final event: never)
        if last is not None or (state.pending and learned_last >= min(state.pending)):
            return OVERLAP  # events here already, none older than the learned ones
        _adopt(state, learned, learned_last, rule, epoch)
        return ADOPTED
    if epoch < state.taken_epoch:
        return OVERLAP
    if (
        taken is not None
        and taken_ms is not None
        and (
            epoch > state.taken_epoch
            or (learned.first_ms == taken.first_ms and learned_last > taken_ms)
        )
    ):
        after = state.taken_next_ms
        if after is None:  # nothing finalized here since the history's last event
            if last != taken_ms or (state.pending and learned_last >= min(state.pending)):
                return OVERLAP
            _adopt(state, learned, learned_last, rule, epoch)
            return ADOPTED
        if learned_last >= after:
            return OVERLAP  # the longer history reaches this lane's own events
        mine = rhythm.without(own, last, taken, taken_ms, after, rule)
        state.rhythm = rhythm.combine(learned, learned_last, mine, last, rule)
        state.taken, state.taken_ms = rhythm.copy(learned), learned_last
        state.taken_epoch = epoch
        return COMBINED
    if learned_last >= own.first_ms:
        return OVERLAP
    state.rhythm = rhythm.combine(learned, learned_last, own, last, rule)
    state.taken, state.taken_ms = rhythm.copy(learned), learned_last
    state.taken_next_ms, state.taken_epoch = own.first_ms, epoch
    return COMBINED


def _adopt(
    state: EntityState, learned: Rhythm, learned_last: int, rule: SilenceRule, epoch: int
) -> None:
    state.rhythm = rhythm.copy(learned)
    rhythm.rejudge(state.rhythm, learned_last, rule)  # by this lane's rule
    state.last_ms = learned_last
    state.silent_since_ms = ROUTED_QUIET
    state.taken, state.taken_ms, state.taken_next_ms = rhythm.copy(learned), learned_last, None
    state.taken_epoch = epoch

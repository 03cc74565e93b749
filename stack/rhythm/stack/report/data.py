"""`rhythm report`: what people want to read from the store, as data.

`fetch_report(client)` runs the queries of `report_sql` through any clickhouse-connect client
(a server, or the sink's endpoint over the embedded store) and builds a `Report` with the pure
`*_from_rows` functions below, which take plain rows (dicts) and are unit-tested as such.
Rendering is elsewhere: `report_text` (terminal) and `report_html` (one self-contained file).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from rhythm.schemas.outputs import details_dict
from rhythm.stack.report.feedback import FeedbackLine, feedback_from_rows
from rhythm.stack.report.sql import render

Row = Mapping[str, Any]

DAY_S = 86_400
SERIES_ENTITIES = 3


class QueryClient(Protocol):
    """What the report needs of a clickhouse-connect client."""

    def query(self, query: str, parameters: dict[str, Any] | None = ...) -> Any: ...


@dataclass(frozen=True)
class Scope:
    tenant: str
    events: int
    first_occurred: datetime
    last_occurred: datetime
    first_received: datetime
    last_received: datetime


@dataclass(frozen=True)
class Silence:
    tenant: str
    role: str
    entity_type: str
    entity_id: str
    fired_at: datetime
    last_event_at: datetime
    expected_within_s: float  # the rule's threshold: quiet this long is not normal
    history_gaps: int
    mean_gap_s: float | None  # the entity's usual gap (mean of its whole gap history)
    stream_idle: bool = False  # fired after the tenant's newest event: the stream is quiet

    def silent_for_s(self, as_of: datetime) -> float:
        return (as_of - self.last_event_at).total_seconds()


@dataclass(frozen=True)
class Waiting:
    tenant: str
    context_id: str
    sender_type: str
    sender_id: str
    channel: str
    since: datetime
    fired_at: datetime
    expected_within_s: float  # waiting this long is past (nearly) every reply of the kind
    reply_rate: float | None  # the kind's reply share (open waits counted)
    samples: int | None
    awaiting: tuple[str, ...]  # who owes the reply
    score: float = 0.0

    def waiting_for_s(self, as_of: datetime) -> float:
        return (as_of - self.since).total_seconds()


@dataclass(frozen=True)
class Mover:
    tenant: str
    role: str
    entity_type: str
    entity_id: str
    window_start: datetime
    current_count: int
    baseline_count: float
    baseline_count_sd: float
    pace_z: float
    current_weight: float
    baseline_weight: float
    amplitude_z: float


@dataclass(frozen=True)
class Point:
    window_start: datetime
    event_count: int
    weight_sum: float
    gap_mean_s: float | None
    gap_max_s: float | None


@dataclass(frozen=True)
class EntitySeries:
    why: str  # "went silent", "top pace mover", ...
    tenant: str
    role: str
    entity_type: str
    entity_id: str
    window_seconds: int
    points: tuple[Point, ...]
    alerts: tuple[tuple[str, datetime], ...] = ()  # (kind, fired_at) of silence/resumed


@dataclass(frozen=True)
class Quantiles:
    n: int
    p50_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None


@dataclass(frozen=True)
class Pipeline:
    events: int = 0
    first_received: datetime | None = None
    last_received: datetime | None = None
    first_occurred: datetime | None = None
    last_occurred: datetime | None = None
    per_second: tuple[tuple[datetime, int], ...] = ()  # the newest hour of ingest
    event_lag: Quantiles = Quantiles(0)  # occurred → Kafka, live events only
    signal_latency: tuple[tuple[int, Quantiles], ...] = ()  # window end → signal produced
    replay_done: datetime | None = None  # the last signal of a window within replayed time
    alert_latency: Quantiles = Quantiles(0)  # alert due → produced, live alerts only

    @property
    def ingest_seconds(self) -> float:
        if self.first_received is None or self.last_received is None:
            return 0.0
        return (self.last_received - self.first_received).total_seconds()

    @property
    def average_eps(self) -> float:
        seconds = self.ingest_seconds
        return self.events / seconds if seconds > 0 else float(self.events)

    @property
    def peak_eps(self) -> int:
        return max((n for _, n in self.per_second), default=0)

    @property
    def replay_factor(self) -> float | None:
        """Event time covered per second of ingest, for a replay of history (else None)."""
        if self.first_occurred is None or self.last_occurred is None:
            return None
        if self.event_lag.n > self.events // 2 or self.ingest_seconds <= 0:
            return None
        span = (self.last_occurred - self.first_occurred).total_seconds()
        return span / self.ingest_seconds

    @property
    def caught_up_s(self) -> float | None:
        if self.replay_done is None or self.last_received is None:
            return None
        return (self.replay_done - self.last_received).total_seconds()


@dataclass(frozen=True)
class Deliveries:
    """The notifier's deliveries of one kind (heads-up or digest), channel and state."""

    what: str
    channel: str
    state: str
    deliveries: int
    recipients: int
    last_sent: datetime | None


@dataclass(frozen=True)
class Check:
    """What the pipeline found against what the simulation planted."""

    planted_accounts: tuple[str, ...]
    found_accounts: tuple[str, ...]
    planted_threads: tuple[str, ...]
    found_threads: tuple[str, ...]

    @property
    def missed_accounts(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.planted_accounts) - set(self.found_accounts)))

    @property
    def extra_accounts(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.found_accounts) - set(self.planted_accounts)))

    @property
    def missed_threads(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.planted_threads) - set(self.found_threads)))

    @property
    def extra_threads(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.found_threads) - set(self.planted_threads)))

    @property
    def exact(self) -> bool:
        return not (
            self.missed_accounts or self.extra_accounts or self.missed_threads or self.extra_threads
        )


@dataclass(frozen=True)
class Report:
    as_of: datetime
    database: str
    scopes: tuple[Scope, ...]
    silences: tuple[Silence, ...]  # open, most telling first
    waiting: tuple[Waiting, ...]  # open, longest waiting first
    pace_movers: tuple[Mover, ...]
    amplitude_movers: tuple[Mover, ...]
    movers_window_s: int
    series: tuple[EntitySeries, ...]
    timeline: tuple[tuple[datetime, str, int], ...]  # (bucket start, kind, alerts)
    timeline_bucket_s: int
    pipeline: Pipeline
    check: Check | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    feedback: tuple[FeedbackLine, ...] = ()  # heads-ups told and what recipients said
    deliveries: tuple[Deliveries, ...] = ()

    @property
    def quiet_entities(self) -> tuple[Silence, ...]:
        return tuple(s for s in self.silences if not s.stream_idle)

    @property
    def idle_silences(self) -> tuple[Silence, ...]:
        return tuple(s for s in self.silences if s.stream_idle)


# -- rows → model (pure) ---------------------------------------------------------------------


def utc(value: Any) -> datetime:
    """A row's time as an aware UTC datetime (drivers return naive or aware ones)."""
    if not isinstance(value, datetime):
        raise TypeError(f"not a datetime: {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def scopes_from_rows(rows: Iterable[Row]) -> tuple[Scope, ...]:
    return tuple(
        Scope(
            tenant=str(r["tenant"]),
            events=int(r["events"]),
            first_occurred=utc(r["first_occurred"]),
            last_occurred=utc(r["last_occurred"]),
            first_received=utc(r["first_received"]),
            last_received=utc(r["last_received"]),
        )
        for r in rows
    )


def silences_from_rows(
    rows: Iterable[Row], scopes: Sequence[Scope], as_of: datetime
) -> tuple[Silence, ...]:
    """Open silences: accounts as actors first, then the longest quiet against their own
    norm. One that fired after its tenant's newest event is `stream_idle`: everything of a
    tenant goes quiet once its stream stops, which says nothing about the entity."""
    newest = {s.tenant: s.last_occurred for s in scopes}
    out = []
    for r in rows:
        fired = utc(r["fired_at"])
        last_event = newest.get(str(r["tenant"]))
        gaps = int(r.get("gaps_learned") or 0)
        details = details_dict(r.get("details"))
        out.append(
            Silence(
                tenant=str(r["tenant"]),
                role=str(r["role"]),
                entity_type=str(r["entity_type"]),
                entity_id=str(r["entity_id"]),
                fired_at=fired,
                last_event_at=utc(r["last_event_at"]),
                expected_within_s=float(r["expected_within_s"]),
                history_gaps=int(details.get("history_gaps", gaps)),
                mean_gap_s=_float(r.get("mean_gap_s")) if gaps else None,
                stream_idle=last_event is not None and fired > last_event,
            )
        )

    def order(s: Silence) -> tuple[bool, bool, float, str, str]:
        overdue = s.silent_for_s(as_of) / max(s.expected_within_s, 1.0)
        return (s.entity_type != "account", s.role != "actor", -overdue, s.tenant, s.entity_id)

    return tuple(sorted(out, key=order))


def waiting_from_rows(rows: Iterable[Row]) -> tuple[Waiting, ...]:
    out = []
    for r in rows:
        details = details_dict(r.get("details"))
        rate = details.get("reply_share", details.get("reply_rate"))
        samples = details.get("samples")
        owners = r.get("owners") or details.get("awaiting") or ()
        out.append(
            Waiting(
                tenant=str(r["tenant"]),
                context_id=str(r["context_id"]),
                sender_type=str(r["entity_type"]),
                sender_id=str(r["entity_id"]),
                channel=str(details.get("channel") or ""),
                since=utc(r["last_event_at"]),
                fired_at=utc(r["fired_at"]),
                expected_within_s=float(r["expected_within_s"]),
                reply_rate=float(rate) if rate is not None else None,
                samples=int(samples) if samples is not None else None,
                awaiting=tuple(str(p) for p in owners),
                score=float(r.get("score") or 0.0),
            )
        )
    return tuple(sorted(out, key=lambda w: (w.since, w.context_id)))


def movers_from_rows(rows: Iterable[Row]) -> tuple[Mover, ...]:
    return tuple(
        Mover(
            tenant=str(r["tenant"]),
            role=str(r["role"]),
            entity_type=str(r["entity_type"]),
            entity_id=str(r["entity_id"]),
            window_start=utc(r["current_start"]),
            current_count=int(r["current_count"]),
            baseline_count=float(r["baseline_count"]),
            baseline_count_sd=float(r["baseline_count_sd"]),
            pace_z=float(r["pace_z"]),
            current_weight=float(r["current_weight"]),
            baseline_weight=float(r["baseline_weight"]),
            amplitude_z=float(r["amplitude_z"]),
        )
        for r in rows
    )


def points_from_rows(rows: Iterable[Row]) -> tuple[Point, ...]:
    return tuple(
        Point(
            window_start=utc(r["window_start"]),
            event_count=int(r["event_count"]),
            weight_sum=float(r["weight_sum"]),
            gap_mean_s=_float(r.get("gap_mean_s")),
            gap_max_s=_float(r.get("gap_max_s")),
        )
        for r in rows
    )


def _quantiles(n: Any, values: Any) -> Quantiles:
    count = int(n or 0)
    if not count or not values:
        return Quantiles(count)
    p50, p95, p99 = (float(v) / 1000 for v in list(values)[:3])
    return Quantiles(count, p50, p95, p99)


def pipeline_from_rows(
    ingest: Row | None,
    rate: Iterable[Row],
    signal_latency: Iterable[Row],
    alert_latency: Row | None,
) -> Pipeline:
    if ingest is None or not int(ingest.get("events") or 0):
        return Pipeline()
    signal_rows = list(signal_latency)
    done = [utc(r["replay_done"]) for r in signal_rows if r.get("replay_done") is not None]
    # maxIf over no rows gives the epoch, not NULL
    done = [d for d in done if d.year > 1970]
    return Pipeline(
        events=int(ingest["events"]),
        first_received=utc(ingest["first_received"]),
        last_received=utc(ingest["last_received"]),
        first_occurred=utc(ingest["first_occurred"]),
        last_occurred=utc(ingest["last_occurred"]),
        per_second=tuple((utc(r["second"]), int(r["events"])) for r in rate),
        event_lag=_quantiles(ingest.get("live_events"), ingest.get("live_lag_ms")),
        signal_latency=tuple(
            (int(r["window_seconds"]), _quantiles(r.get("live"), r.get("live_ms")))
            for r in signal_rows
        ),
        replay_done=max(done) if done else None,
        alert_latency=(
            _quantiles(alert_latency.get("live"), alert_latency.get("live_ms"))
            if alert_latency is not None
            else Quantiles(0)
        ),
    )


def deliveries_from_rows(rows: Iterable[Row]) -> tuple[Deliveries, ...]:
    return tuple(
        Deliveries(
            what=str(r["what"]),
            channel=str(r["channel"]),
            state=str(r["state"]),
            deliveries=int(r["deliveries"]),
            recipients=int(r["recipients"]),
            last_sent=utc(r["last_sent"]) if r.get("last_sent") is not None else None,
        )
        for r in rows
    )


def check_against_manifest(
    manifest: Mapping[str, Any], silences: Sequence[Silence], waiting: Sequence[Waiting]
) -> Check:
    """The simulation's planted accounts (as actors) and threads against the open alerts."""
    tenant = manifest.get("tenant")
    planted = manifest.get("planted") or {}
    return Check(
        planted_accounts=tuple(
            sorted(s["entity_id"] for s in planted.get("silent_accounts") or ())
        ),
        found_accounts=tuple(
            sorted(
                s.entity_id
                for s in silences
                if s.tenant == tenant and s.role == "actor" and s.entity_type == "account"
            )
        ),
        planted_threads=tuple(
            sorted(t["context_id"] for t in planted.get("unanswered_threads") or ())
        ),
        found_threads=tuple(sorted(w.context_id for w in waiting if w.tenant == tenant)),
    )


def series_targets(
    silences: Sequence[Silence],
    pace_movers: Sequence[Mover],
    amplitude_movers: Sequence[Mover],
    limit: int = SERIES_ENTITIES,
) -> list[tuple[str, str, str, str, str]]:
    """The entities worth a chart: the top silent account, the top pace and amplitude movers.
    Returns (why, tenant, role, entity_type, entity_id)."""
    chosen: list[tuple[str, str, str, str, str]] = []

    def add(why: str, tenant: str, role: str, etype: str, eid: str) -> None:
        if len(chosen) < limit and all(c[1:] != (tenant, role, etype, eid) for c in chosen):
            chosen.append((why, tenant, role, etype, eid))

    quiet = [s for s in silences if not s.stream_idle]
    if quiet:
        s = quiet[0]
        add("went silent", s.tenant, s.role, s.entity_type, s.entity_id)
    for why, movers in (("top pace mover", pace_movers), ("top amplitude mover", amplitude_movers)):
        if movers:
            m = movers[0]
            add(why, m.tenant, m.role, m.entity_type, m.entity_id)
    return chosen


def timeline_bucket_s(scopes: Sequence[Scope]) -> int:
    if not scopes:
        return 3600
    span = max(s.last_occurred for s in scopes) - min(s.first_occurred for s in scopes)
    return 3600 if span <= timedelta(days=3) else 6 * 3600


# -- I/O -------------------------------------------------------------------------------------


def _rows(client: QueryClient, name: str, database: str, **params: Any) -> list[dict[str, Any]]:
    result = client.query(render(name, database), parameters=params)
    return [dict(r) for r in result.named_results()]


def fetch_report(
    client: QueryClient,
    *,
    database: str = "rhythm",
    tenant: str = "",
    as_of: datetime | None = None,
    manifest: Mapping[str, Any] | None = None,
    movers_limit: int = 8,
    baseline_windows: int = 7,
) -> Report:
    """Query the store and build the report (`tenant` "" = every tenant)."""
    t = {"tenant": tenant}
    scopes = scopes_from_rows(_rows(client, "scope", database, **t))
    windows = [int(r["window_seconds"]) for r in _rows(client, "windows", database, **t)]
    # Day windows when there are any: a month reads best by day; else the largest.
    window = DAY_S if DAY_S in windows else (max(windows) if windows else DAY_S)
    as_of = as_of or datetime.now(UTC)
    silences = silences_from_rows(
        _rows(client, "open_silences", database, window_seconds=window, **t), scopes, as_of
    )
    waiting = waiting_from_rows(_rows(client, "open_unanswered", database, **t))
    movers = {
        by: movers_from_rows(
            _rows(
                client,
                "movers",
                database,
                window_seconds=window,
                baseline=baseline_windows,
                min_active=max(1, baseline_windows * 2 // 3),
                limit=movers_limit,
                by=by,
                **t,
            )
        )
        for by in ("pace", "amplitude")
    }
    series = []
    for why, s_tenant, role, etype, eid in series_targets(
        silences, movers["pace"], movers["amplitude"]
    ):
        key = {"tenant": s_tenant, "role": role, "entity_type": etype, "entity_id": eid}
        points = points_from_rows(_rows(client, "series", database, window_seconds=window, **key))
        alerts = tuple(
            (str(r["kind"]), utc(r["fired_at"]))
            for r in _rows(client, "entity_alerts", database, **key)
        )
        series.append(EntitySeries(why, s_tenant, role, etype, eid, window, points, alerts))
    bucket = timeline_bucket_s(scopes)
    timeline = tuple(
        (utc(r["bucket"]), str(r["kind"]), int(r["alerts"]))
        for r in _rows(client, "alert_timeline", database, bucket_s=bucket, **t)
    )
    ingest = _rows(client, "ingest", database, **t)
    alert_latency = _rows(client, "alert_latency", database, **t)
    pipeline = pipeline_from_rows(
        ingest[0] if ingest else None,
        _rows(client, "ingest_rate", database, **t),
        _rows(client, "signal_latency", database, **t),
        alert_latency[0] if alert_latency else None,
    )
    check = check_against_manifest(manifest, silences, waiting) if manifest else None
    feedback = feedback_from_rows(
        _rows(client, "heads_ups_told", database, **t),
        _rows(client, "feedback_given", database, **t),
    )
    deliveries = deliveries_from_rows(_rows(client, "deliveries", database, **t))
    return Report(
        as_of=as_of,
        database=database,
        scopes=scopes,
        silences=silences,
        waiting=waiting,
        pace_movers=movers["pace"],
        amplitude_movers=movers["amplitude"],
        movers_window_s=window,
        series=tuple(series),
        timeline=timeline,
        timeline_bucket_s=bucket,
        pipeline=pipeline,
        check=check,
        feedback=feedback,
        deliveries=deliveries,
    )

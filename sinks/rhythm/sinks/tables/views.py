"""The views analysts start from, defined once as data (`ddl.py` renders them; the
placeholders in their SELECTs are explained at `definition.View`). They read across tables,
so they live here rather than with one table; `events.ENTITY_EVENTS_MV`, which fills a table,
lives with it.
"""

from __future__ import annotations

from rhythm.sinks.tables.definition import View
from rhythm.sinks.tables.events import ENTITY_EVENTS_MV

__all__ = [
    "ACTIVITY_FEED",
    "ALERTS_RANKED",
    "ENTITY_EVENTS_MV",
    "ENTITY_TIMELINE",
    "OPEN_ALERTS",
    "OPEN_ALERTS_V2",
    "TOP_MOVERS",
    "VIEWS",
]


ENTITY_TIMELINE = View(
    name="entity_timeline",
    select="""
SELECT
    occurred_at, event_id, roles, verb, actor_type, actor_id, object_type, object_id,
    target_type, target_id, channel, context_id, weight, tags,
    dateDiff('millisecond', lagInFrame(toNullable(occurred_at)) OVER w, occurred_at) / 1000
        AS gap_s
FROM (
    SELECT
        occurred_at, event_id, groupArray(role) AS roles, any(verb) AS verb,
        any(actor_type) AS actor_type, any(actor_id) AS actor_id,
        any(object_type) AS object_type, any(object_id) AS object_id,
        any(target_type) AS target_type, any(target_id) AS target_id,
        any(channel) AS channel, any(context_id) AS context_id,
        any(weight) AS weight, any(tags) AS tags
    FROM $db.entity_events FINAL
    WHERE tenant = {tenant:String}
      AND entity_type = {entity_type:String}
      AND entity_id = {entity_id:String}
    GROUP BY occurred_at, event_id
)
WINDOW w AS (ORDER BY occurred_at, event_id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
ORDER BY occurred_at, event_id
""",
    comment="An entity's events in time order, whatever its role, with the gap before each.",
)

ACTIVITY_FEED = View(
    name="activity_feed",
    select="""
SELECT
    occurred_at, event_id, role,
    concat(actor_type, ':', actor_id, ' ', verb,
           if(object_id IS NULL, '', concat(' ', toString(object_type), ':', object_id)),
           if(target_id IS NULL, '', concat(' on ', toString(target_type), ':', target_id)),
           if(channel IS NULL, '', concat(' via ', toString(channel)))) AS line,
    actor_type, actor_id, verb, object_type, object_id, target_type, target_id,
    channel, context_id, weight, tags
FROM $db.entity_events FINAL
WHERE tenant = {tenant:String}
  AND entity_type = {entity_type:String}
  AND entity_id = {entity_id:String}
ORDER BY occurred_at DESC, event_id DESC
""",
    comment="Newest first: what happened around an entity, a group (e.g. a team or an "
    "account, as target) or a tag (entity_type 'tag').",
)

# The current window is the newest window of that length in the tenant; the baseline is the
# `baseline_windows` windows before it, counting windows without a signal as zero (a quiet
# window is part of an entity's rhythm). z-scores are floored at sqrt(mean) and 1 so a flat
# baseline does not make every change infinite.
TOP_MOVERS = View(
    name="top_movers",
    select="""
WITH current AS (
    SELECT tenant, max(window_start) AS current_start
    FROM $db.signals
    WHERE window_seconds = {window_seconds:UInt32}
    GROUP BY tenant
)
SELECT
    s.tenant AS tenant, s.role AS role, s.entity_type AS entity_type,
    s.entity_id AS entity_id,
    any(c.current_start) AS window_start,
    sumIf(s.event_count, s.window_start = c.current_start) AS current_count,
    sumIf(s.weight_sum, s.window_start = c.current_start) AS current_weight,
    sumIf(s.event_count, s.window_start < c.current_start) / {baseline_windows:UInt32}
        AS baseline_count,
    sqrt(greatest(sumIf(s.event_count * s.event_count, s.window_start < c.current_start)
                  / {baseline_windows:UInt32} - baseline_count * baseline_count, 0))
        AS baseline_count_sd,
    sumIf(s.weight_sum, s.window_start < c.current_start) / {baseline_windows:UInt32}
        AS baseline_weight,
    sqrt(greatest(sumIf(s.weight_sum * s.weight_sum, s.window_start < c.current_start)
                  / {baseline_windows:UInt32} - baseline_weight * baseline_weight, 0))
        AS baseline_weight_sd,
    countIf(s.window_start < c.current_start) AS baseline_active_windows,
    (current_count - baseline_count)
        / greatest(baseline_count_sd, sqrt(baseline_count), 1) AS pace_z,
    (current_weight - baseline_weight)
        / greatest(baseline_weight_sd, sqrt(abs(baseline_weight)), 1) AS amplitude_z
FROM $db.signals AS s FINAL
${global}INNER JOIN current AS c ON s.tenant = c.tenant
WHERE s.window_seconds = {window_seconds:UInt32}
  AND s.window_start >= c.current_start
      - toIntervalSecond({window_seconds:UInt32} * {baseline_windows:UInt32})
GROUP BY s.tenant, s.role, s.entity_type, s.entity_id
ORDER BY greatest(abs(pace_z), abs(amplitude_z)) DESC, tenant, role, entity_type, entity_id
""",
    comment="Entities whose pace (event count) or amplitude (weight) in the tenant's newest "
    "window moved most against their own previous windows.",
)


def _open_alerts(
    *, latest: str, carried: str, thread: str, waiting: str, result: str, alerts: str = ""
) -> str:
    """Silence is per entity and ends with `resumed`; the `waiting` kinds are per (entity,
    `thread`) and end when another party writes in that thread after the waiting message.
    `latest`, `carried` and `result` name the alert columns each part carries; `alerts`
    filters the alerts read."""
    return f"""
WITH latest AS (
    SELECT
        tenant, role, entity_type, entity_id,
        a.1 AS alert_id, a.2 AS kind, a.3 AS context_id, a.4 AS fired_at,
        {latest}
    FROM (
        SELECT
            tenant, role, entity_type, entity_id,
            argMax(
                (alert_id, kind, context_id, fired_at, last_event_at, expected_within_s,
                 {carried}),
                (fired_at, kind)
            ) AS a
        FROM $db.alerts FINAL{alerts}
        GROUP BY tenant, role, entity_type, entity_id, {thread}
    )
),
waiting AS (
    SELECT * FROM latest WHERE {waiting}
),
replied AS (
    SELECT w.alert_id AS alert_id
    FROM waiting AS w
    INNER JOIN (
        SELECT tenant, context_id, actor_type, actor_id, occurred_at
        FROM $db.events
        WHERE (tenant, context_id) ${{global}}IN (SELECT tenant, context_id FROM waiting)
    ) AS e ON e.tenant = w.tenant AND e.context_id = w.context_id
    WHERE e.occurred_at > w.last_event_at
      AND NOT (e.actor_type = w.entity_type AND e.actor_id = w.entity_id)
)
SELECT
    alert_id, kind, tenant, role, entity_type, entity_id, context_id, fired_at,
    {result}
    dateDiff('second', fired_at, now64(3, 'UTC')) AS open_for_s
FROM latest
WHERE kind = 'silence'
   OR ({waiting} AND alert_id NOT IN (SELECT alert_id FROM replied))
ORDER BY fired_at DESC, alert_id
"""


# As migration 2 created it (migration 3 replaces it with OPEN_ALERTS): only unanswered
# waits, grouped by thread; no score or owners yet.
OPEN_ALERTS_V2 = View(
    name="open_alerts",
    select=_open_alerts(
        latest="a.5 AS last_event_at, a.6 AS expected_within_s, a.7 AS details",
        carried="details",
        thread="kind = 'unanswered',\n"
        "                 if(kind = 'unanswered', ifNull(context_id, ''), '')",
        waiting="kind = 'unanswered'",
        result="last_event_at, expected_within_s, details,",
    ),
    comment="Alerts still open: a silence not followed by resumed, an unanswered message "
    "with no later reply from another party in its thread.",
)

# Since migration 3: every thread's waits, with each alert's score and owners.
_SCORED: dict[str, str] = {
    "latest": "a.5 AS last_event_at, a.6 AS expected_within_s, a.7 AS details, a.8 AS score,"
    "\n        a.9 AS owners",
    "carried": "details, score, owners",
    "thread": "ifNull(context_id, '')",
    "waiting": "kind IN ('unanswered', 'follow_up')",
    "result": "last_event_at, expected_within_s, score, owners, details,",
}

# As migration 3 created them (migration 7 replaces both: the history lane's alerts left out).
OPEN_ALERTS_V3 = View(
    name="open_alerts",
    select=_open_alerts(**_SCORED),
    comment="Alerts still open: a silence not followed by resumed, an unanswered (or "
    "follow_up) message with no later message from another party in its thread.",
)

# The noise budget: a person gets at most `cap` heads-ups a day, the highest scores first;
# the rest stay here, marked suppressed. An alert's recipient is its first owner; alerts
# without one (silence: routed elsewhere) are never suppressed here.
ALERTS_RANKED_V3 = View(
    name="alerts_ranked",
    select="""
SELECT
    alert_id, kind, tenant, role, entity_type, entity_id, context_id, fired_at,
    last_event_at, expected_within_s, score, owners, details,
    if(empty(owners), '', owners[1]) AS recipient,
    toDate(fired_at) AS day,
    row_number() OVER (
        PARTITION BY tenant, recipient, day ORDER BY score DESC, fired_at, alert_id
    ) AS rank_of_day,
    recipient != '' AND rank_of_day > {cap:UInt32} AS suppressed
FROM $db.alerts FINAL
WHERE kind != 'resumed'
ORDER BY tenant, recipient, day, rank_of_day
""",
    comment="Every alert with its recipient and rank among that person's alerts of the day "
    "(UTC); suppressed past `cap`: SELECT * FROM rhythm.alerts_ranked(cap=5).",
)

# The history lane's alerts (`historical`) are what happened then, not heads-ups now: they
# are neither open nor ranked against a person's cap (the notifier never delivers them).
OPEN_ALERTS = View(
    name="open_alerts",
    select=_open_alerts(**_SCORED, alerts="\n        WHERE NOT historical"),
    comment="Alerts still open: a silence not followed by resumed, an unanswered (or "
    "follow_up) message with no later message from another party in its thread; the "
    "history lane's alerts (historical) are never open.",
)

ALERTS_RANKED = View(
    name="alerts_ranked",
    select=ALERTS_RANKED_V3.select.replace(
        "WHERE kind != 'resumed'", "WHERE kind != 'resumed' AND NOT historical"
    ),
    comment="Every live alert with its recipient and rank among that person's alerts of the "
    "day (UTC); suppressed past `cap`: SELECT * FROM rhythm.alerts_ranked(cap=5). The "
    "history lane's alerts (historical) are not heads-ups and are left out.",
)

#: in creation order (the materialized view needs its tables; the rest only read)
VIEWS: tuple[View, ...] = (
    ENTITY_EVENTS_MV,
    ENTITY_TIMELINE,
    ACTIVITY_FEED,
    TOP_MOVERS,
    OPEN_ALERTS,
    ALERTS_RANKED,
)

"""Every query of `rhythm report`, in one place. `$db` stands for the database; `{name:Type}`
are ClickHouse query parameters (bound by the server, never pasted into the text).

Most read the tables (`events`, `signals` FINAL, `alerts` FINAL) rather than the analysts'
views: the report needs a few columns the views do not carry (the entity's usual gap, the
baseline behind a mover), and the tables are the stable contract. Open unanswered messages
come from the `open_alerts` view itself; where another view answers a similar question
(`top_movers`) the rules are the same.

`received_at` is the Kafka message timestamp: the producer's clock when the message was
handed to Kafka (the topics use CreateTime). The store records no insert time, so what the
pipeline section measures is up to Kafka: event time → Kafka for events, window end → signal
produced, alert due → alert produced.
"""

from __future__ import annotations

import re

__all__ = ["QUERIES", "render"]

_TENANT = "({tenant:String} = '' OR tenant = {tenant:String})"

# What the store holds per tenant; the newest event time tells "the tenant went quiet" from
# "this entity went quiet".
SCOPE = f"""
SELECT tenant, count() AS events,
       min(occurred_at) AS first_occurred, max(occurred_at) AS last_occurred,
       min(received_at) AS first_received, max(received_at) AS last_received
FROM $db.events
WHERE {_TENANT}
GROUP BY tenant
ORDER BY events DESC, tenant
"""

WINDOWS = f"""
SELECT DISTINCT window_seconds FROM $db.signals WHERE {_TENANT} ORDER BY window_seconds
"""

# Silences still open: the entity's latest silence/resumed alert is a silence (a resumed at
# the same instant wins: 'resumed' sorts after 'silence' in the enum). The usual gap is the
# mean over its whole gap history, from the signals of one window size (each gap is counted
# in exactly one window of each size).
OPEN_SILENCES = f"""
WITH open AS (
    SELECT tenant, role, entity_type, entity_id,
           a.2 AS fired_at, a.3 AS last_event_at, a.4 AS expected_within_s, a.5 AS details
    FROM (
        SELECT tenant, role, entity_type, entity_id,
               argMax(tuple(kind, fired_at, last_event_at, expected_within_s, details),
                      tuple(fired_at, kind)) AS a
        FROM $db.alerts FINAL
        WHERE kind IN ('silence', 'resumed') AND {_TENANT}
        GROUP BY tenant, role, entity_type, entity_id
    )
    WHERE a.1 = 'silence'
),
gaps AS (
    SELECT tenant, role, entity_type, entity_id,
           sum(gap_count) AS gaps_learned,
           sum(gap_mean_s * gap_count) / sum(gap_count) AS mean_gap_s
    FROM $db.signals FINAL
    WHERE window_seconds = {{window_seconds:UInt32}} AND gap_count > 0
      AND (tenant, role, entity_type, entity_id)
          IN (SELECT tenant, role, entity_type, entity_id FROM open)
    GROUP BY tenant, role, entity_type, entity_id
)
SELECT o.tenant AS tenant, o.role AS role, o.entity_type AS entity_type,
       o.entity_id AS entity_id, o.fired_at AS fired_at, o.last_event_at AS last_event_at,
       o.expected_within_s AS expected_within_s, o.details AS details,
       g.gaps_learned AS gaps_learned, g.mean_gap_s AS mean_gap_s
FROM open AS o
LEFT JOIN gaps AS g
    ON g.tenant = o.tenant AND g.role = o.role AND g.entity_type = o.entity_type
   AND g.entity_id = o.entity_id
ORDER BY o.last_event_at, o.entity_type, o.entity_id
"""

# Unanswered alerts still open: the sink's open_alerts view owns the rule (no later event
# from another party in the thread), so the report and SQL users agree by construction.
OPEN_UNANSWERED = f"""
SELECT tenant, context_id, entity_type, entity_id, fired_at, last_event_at,
       expected_within_s, score, owners, details
FROM $db.open_alerts
WHERE kind = 'unanswered' AND {_TENANT}
ORDER BY last_event_at, context_id
"""

# The tenant's newest closed window against each entity's own `baseline` windows before it;
# windows without a signal count as 0 (a quiet window is part of the rhythm). z-scores are
# floored at sqrt(mean) and 1, as in the top_movers view, so a flat baseline does not make
# every change infinite. Entities need `min_active` active baseline windows: a rhythm to move
# against (an entity seen once a week is not a mover when it shows up). Ranked by |pace z| or
# |amplitude z| (`by`): one large purchase should not push every change of pace off the list.
MOVERS = f"""
WITH current AS (
    SELECT tenant, max(window_start) AS current_start
    FROM $db.signals
    WHERE window_seconds = {{window_seconds:UInt32}} AND {_TENANT}
    GROUP BY tenant
),
per_entity AS (
    SELECT s.tenant AS tenant, s.role AS role, s.entity_type AS entity_type,
           s.entity_id AS entity_id,
           any(c.current_start) AS current_start,
           sumIf(s.event_count, s.window_start = c.current_start) AS current_count,
           sumIf(s.weight_sum, s.window_start = c.current_start) AS current_weight,
           sumIf(s.event_count, s.window_start < c.current_start)
               / {{baseline:UInt32}} AS baseline_count,
           sqrt(greatest(sumIf(s.event_count * s.event_count, s.window_start < c.current_start)
                         / {{baseline:UInt32}} - baseline_count * baseline_count, 0))
               AS baseline_count_sd,
           sumIf(s.weight_sum, s.window_start < c.current_start)
               / {{baseline:UInt32}} AS baseline_weight,
           sqrt(greatest(sumIf(s.weight_sum * s.weight_sum, s.window_start < c.current_start)
                         / {{baseline:UInt32}} - baseline_weight * baseline_weight, 0))
               AS baseline_weight_sd,
           countIf(s.window_start < c.current_start) AS baseline_active
    FROM $db.signals AS s FINAL
    INNER JOIN current AS c ON s.tenant = c.tenant
    WHERE s.window_seconds = {{window_seconds:UInt32}}
      AND s.window_start >= c.current_start
          - toIntervalSecond({{window_seconds:UInt32}} * {{baseline:UInt32}})
    GROUP BY s.tenant, s.role, s.entity_type, s.entity_id
)
SELECT *,
       (current_count - baseline_count)
           / greatest(baseline_count_sd, sqrt(baseline_count), 1) AS pace_z,
       (current_weight - baseline_weight)
           / greatest(baseline_weight_sd, sqrt(abs(baseline_weight)), 1) AS amplitude_z
FROM per_entity
WHERE baseline_active >= {{min_active:UInt32}}
ORDER BY if({{by:String}} = 'amplitude', abs(amplitude_z), abs(pace_z)) DESC,
         tenant, role, entity_type, entity_id
LIMIT {{limit:UInt32}}
"""

SERIES = """
SELECT window_start, event_count, weight_sum, gap_count, gap_mean_s, gap_max_s
FROM $db.signals FINAL
WHERE tenant = {tenant:String} AND role = {role:String}
  AND entity_type = {entity_type:String} AND entity_id = {entity_id:String}
  AND window_seconds = {window_seconds:UInt32}
ORDER BY window_start
"""

ENTITY_ALERTS = """
SELECT kind, fired_at
FROM $db.alerts FINAL
WHERE tenant = {tenant:String} AND role = {role:String}
  AND entity_type = {entity_type:String} AND entity_id = {entity_id:String}
  AND kind IN ('silence', 'resumed')
ORDER BY fired_at
"""

ALERT_TIMELINE = f"""
SELECT toStartOfInterval(fired_at, toIntervalSecond({{bucket_s:UInt32}})) AS bucket,
       toString(kind) AS kind, count() AS alerts
FROM $db.alerts FINAL
WHERE {_TENANT}
GROUP BY bucket, kind
ORDER BY bucket, kind
"""

# Events into Kafka. "Live" events occurred after the first receipt: for them occurred →
# received is the client's event-time lag; a replay (all events older than the first
# receipt) has none.
INGEST = f"""
WITH (SELECT min(received_at) FROM $db.events WHERE {_TENANT}) AS t0
SELECT count() AS events,
       min(received_at) AS first_received, max(received_at) AS last_received,
       min(occurred_at) AS first_occurred, max(occurred_at) AS last_occurred,
       countIf(occurred_at >= t0) AS live_events,
       quantilesIf(0.5, 0.95, 0.99)(
           dateDiff('millisecond', occurred_at, received_at), occurred_at >= t0) AS live_lag_ms
FROM $db.events
WHERE {_TENANT}
"""

# Per second over the newest hour of ingest (a long-running store has too many seconds).
INGEST_RATE = f"""
WITH (SELECT max(received_at) FROM $db.events WHERE {_TENANT}) AS t1
SELECT toStartOfSecond(received_at) AS second, count() AS events
FROM $db.events
WHERE {_TENANT} AND received_at >= t1 - INTERVAL 1 HOUR
GROUP BY second
ORDER BY second
"""

# Window end → signal produced, for windows that ended after the first event was received
# (closed live; includes the allowed lateness by design). For replayed history: when the
# processors produced the last signal of a window that closed within the replayed time.
SIGNAL_LATENCY = f"""
WITH (SELECT min(received_at) FROM $db.events WHERE {_TENANT}) AS t0,
     (SELECT max(occurred_at) FROM $db.events WHERE {_TENANT}) AS t_last
SELECT window_seconds, count() AS signals,
       countIf(window_start + toIntervalSecond(window_seconds) >= t0) AS live,
       quantilesIf(0.5, 0.95, 0.99)(
           dateDiff('millisecond', window_start + toIntervalSecond(window_seconds), received_at),
           window_start + toIntervalSecond(window_seconds) >= t0) AS live_ms,
       maxIf(received_at, window_start + toIntervalSecond(window_seconds) <= t_last)
           AS replay_done
FROM $db.signals
WHERE {_TENANT} AND version = 1
GROUP BY window_seconds
ORDER BY window_seconds
"""

ALERT_LATENCY = f"""
WITH (SELECT min(received_at) FROM $db.events WHERE {_TENANT}) AS t0
SELECT count() AS alerts, countIf(fired_at >= t0) AS live,
       quantilesIf(0.5, 0.95, 0.99)(dateDiff('millisecond', fired_at, received_at),
                                    fired_at >= t0) AS live_ms
FROM $db.alerts
WHERE {_TENANT}
"""

# Heads-ups told (a delivery sent) per alert kind and kind of entity, and the feedback given
# on them (report_feedback.py). A delivery record names the alert, not its entity: that comes
# from the alert.
HEADS_UPS_TOLD = f"""
SELECT toString(n.kind) AS alert_kind, a.role AS role, a.entity_type AS entity_type,
       uniqExact(n.alert_id, n.recipient) AS told
FROM (SELECT tenant, alert_id, kind, recipient FROM $db.notifications FINAL
      WHERE state = 'sent' AND {_TENANT}) AS n
LEFT JOIN (SELECT tenant, alert_id, toString(role) AS role, toString(entity_type) AS entity_type
           FROM $db.alerts FINAL WHERE {_TENANT}) AS a
  ON a.tenant = n.tenant AND a.alert_id = n.alert_id
GROUP BY alert_kind, role, entity_type
"""

FEEDBACK_GIVEN = f"""
SELECT ifNull(toString(alert_kind), '') AS alert_kind, ifNull(toString(role), '') AS role,
       ifNull(toString(entity_type), '') AS entity_type, toString(kind) AS kind, count() AS n
FROM $db.feedback FINAL
WHERE {_TENANT}
GROUP BY alert_kind, role, entity_type, kind
"""

# The notifier's deliveries (its ledger as published): heads-ups and digests, by channel and
# state, and how many people they went to.
DELIVERIES = f"""
SELECT if(kind = 'digest', 'digest', 'heads-up') AS what, channel, state,
       count() AS deliveries, uniqExact(recipient) AS recipients,
       max(sent_at) AS last_sent
FROM $db.notifications FINAL
WHERE {_TENANT}
GROUP BY what, channel, state
ORDER BY what DESC, channel, state
"""

QUERIES: dict[str, str] = {
    "scope": SCOPE,
    "windows": WINDOWS,
    "open_silences": OPEN_SILENCES,
    "open_unanswered": OPEN_UNANSWERED,
    "movers": MOVERS,
    "series": SERIES,
    "entity_alerts": ENTITY_ALERTS,
    "alert_timeline": ALERT_TIMELINE,
    "ingest": INGEST,
    "ingest_rate": INGEST_RATE,
    "signal_latency": SIGNAL_LATENCY,
    "alert_latency": ALERT_LATENCY,
    "heads_ups_told": HEADS_UPS_TOLD,
    "feedback_given": FEEDBACK_GIVEN,
    "deliveries": DELIVERIES,
}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def render(name: str, database: str = "rhythm") -> str:
    """The query `name` for `database` (an identifier: it is pasted into the text)."""
    if not _IDENTIFIER.fullmatch(database):
        raise ValueError(f"not a database name: {database!r}")
    return QUERIES[name].replace("$db", database)

"""`alerts` (topic `rhythm.alerts`, JSON `rhythm.schemas.outputs.Alert`): one row per alert.

ReplacingMergeTree on (tenant, alert_id): alert ids are stable hashes, so re-sent alerts
collapse. On a cluster the shard is the entity's, which `alert_id` hashes
(`rhythm.schemas.outputs.alert_id`). `ALERTS_V1` is the table as migration 1 created it;
migration 3 brings it to `ALERTS_V3` (follow_up, score, owners), migration 6 to `ALERTS`
(`historical`: alerts of the history lane).
"""

from __future__ import annotations

import json

from rhythm.schemas.outputs import Alert
from rhythm.sinks.tables.columns import DEDUP, ENTITY, INGEST, TS, ZSTD
from rhythm.sinks.tables.definition import Column, Engine, Table
from rhythm.sinks.tables.rows import JSON_REASONS, DeadLetter, Message, Outcome, ingest, parse_json

__all__ = ["ALERTS", "ALERTS_V1", "ALERTS_V3", "HISTORICAL", "KIND_TYPE", "REASONS", "process"]

REASONS = (*JSON_REASONS, "invalid_alert")

#: the `kind` column's type since migration 3 (every kind of `rhythm.schemas.outputs`)
KIND_TYPE = "Enum8('silence' = 1, 'resumed' = 2, 'unanswered' = 3, 'follow_up' = 4)"

ALERTS_V1 = Table(
    name="alerts",
    columns=(
        Column("alert_id", "String"),
        Column("kind", "Enum8('silence' = 1, 'resumed' = 2, 'unanswered' = 3)"),
        *ENTITY,
        Column("context_id", "Nullable(String)", ZSTD),
        Column("fired_at", TS, ZSTD),
        Column("last_event_at", TS, ZSTD),
        Column("expected_within_s", "Float64"),
        Column("details", "String", ZSTD, comment="JSON object"),
        *INGEST,
    ),
    engine=Engine("ReplacingMergeTree"),
    order_by=("tenant", "alert_id"),
    partition_by="toYYYYMM(fired_at)",
    ttl_column="fired_at",
    settings=DEDUP,
    comment="Alerts, one row per alert_id.",
    shard_by=("tenant", "role", "entity_type", "entity_id"),
)

ALERTS_V3 = ALERTS_V1.changed(
    after="expected_within_s",
    add=(
        Column("score", "Float64", comment="how sure the rule is, 0 to 1: ranks a day's alerts"),
        Column("owners", "Array(String)", comment="who is expected to act, as type:id"),
    ),
    retype={"kind": KIND_TYPE},
)

#: Migration 6: alerts the history lane computed (`rhythm backfill`, or events the live lane
#: routed there), never delivered as heads-ups.
HISTORICAL = Column(
    "historical",
    "Bool",  # rows from before the migration read false, the type's default
    comment="computed by the history lane: stored, never delivered as a heads-up",
)

ALERTS = ALERTS_V3.changed(after="details", add=(HISTORICAL,), retype={})


def process(message: Message) -> Outcome:
    a = parse_json(message, Alert, "invalid_alert", times=("fired_at", "last_event_at"))
    if isinstance(a, DeadLetter):
        return a
    try:
        # Sorted keys: the same alert always gives the same text (and the same row).
        details = json.dumps(a.details, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError) as exc:
        return DeadLetter(message, "invalid_alert", str(exc))
    return (
        a.alert_id, a.kind, a.tenant, a.role, a.entity_type, a.entity_id, a.context_id,
        a.fired_at, a.last_event_at, a.expected_within_s, a.score, a.owners, details,
        a.historical, *ingest(message),
    )  # fmt: skip

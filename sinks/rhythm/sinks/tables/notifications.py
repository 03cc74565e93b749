"""`notifications` (topic `rhythm.notifications`, JSON `rhythm.schemas.people.DeliveryRecord`):
the notifier's deliveries, one per (alert, recipient, channel).

ReplacingMergeTree(`version`): the notifier re-publishes each state change with a higher
version, and `FINAL` keeps the latest. On a cluster the shard is the alert's.
"""

from __future__ import annotations

from rhythm.schemas.people import DeliveryRecord
from rhythm.sinks.tables.columns import DEDUP, DELTA, INGEST, LC, TS, ZSTD
from rhythm.sinks.tables.definition import Column, Engine, Table
from rhythm.sinks.tables.rows import JSON_REASONS, DeadLetter, Message, Outcome, ingest, parse_json

__all__ = ["NOTIFICATIONS", "REASONS", "process"]

REASONS = (*JSON_REASONS, "invalid_notification")

NOTIFICATIONS = Table(
    name="notifications",
    columns=(
        Column("alert_id", "String"),
        Column("tenant", LC),
        Column("kind", LC),
        Column("recipient", "String", ZSTD, comment="type:id of a person or a queue"),
        Column("channel", LC, comment="webhook, slack or email"),
        Column("address", "String", ZSTD),
        Column("reason", LC, comment="why this recipient: owner, engaged or queue"),
        Column("state", LC, comment="pending, held, sending, retry, sent, dead, suppressed"),
        Column("attempts", "UInt16"),
        Column("created_at", TS, DELTA),
        Column("due_at", TS, ZSTD),
        Column("updated_at", TS, ZSTD),
        Column("sent_at", f"Nullable({TS})", ZSTD),
        Column("last_error", "Nullable(String)", ZSTD),
        Column("idempotency_key", "String", ZSTD),
        Column("version", "UInt64"),
        *INGEST,
    ),
    engine=Engine("ReplacingMergeTree", version="version"),
    order_by=("tenant", "alert_id", "recipient", "channel"),
    partition_by="toYYYYMM(created_at)",
    ttl_column="created_at",
    settings=DEDUP,
    comment="The notifier's deliveries, one per (alert, recipient, channel) under FINAL.",
    shard_by=("tenant", "alert_id"),
)


def process(message: Message) -> Outcome:
    n = parse_json(
        message,
        DeliveryRecord,
        "invalid_notification",
        times=("created_at", "due_at", "updated_at"),
        optional_times=("sent_at",),
    )
    if isinstance(n, DeadLetter):
        return n
    return (
        n.alert_id, n.tenant, n.kind, n.recipient, n.channel, n.address, n.reason, n.state,
        min(n.attempts, 65535), n.created_at, n.due_at, n.updated_at, n.sent_at, n.last_error,
        n.key, n.version, *ingest(message),
    )  # fmt: skip

"""`feedback` (topic `rhythm.feedback`, JSON `rhythm.schemas.feedback.Feedback`): what
recipients said of their heads-ups (done, snooze, not useful).

One row per `feedback_id` (ReplacingMergeTree: a link used twice is one row), with the
alert's kind and entity as the feedback carried them. Kept for good (no TTL): a recipient's
thresholds are learned from it. On a cluster the shard is the recipient's.
"""

from __future__ import annotations

from rhythm.schemas.feedback import Feedback
from rhythm.sinks.tables.columns import DEDUP, DELTA, INGEST, LC, LCN, TS, ZSTD
from rhythm.sinks.tables.definition import Column, Engine, Table
from rhythm.sinks.tables.rows import JSON_REASONS, DeadLetter, Message, Outcome, ingest, parse_json

__all__ = ["FEEDBACK", "REASONS", "process"]

REASONS = (*JSON_REASONS, "invalid_feedback")

FEEDBACK = Table(
    name="feedback",
    columns=(
        Column("feedback_id", "String"),
        Column("alert_id", "String"),
        Column("tenant", LC),
        Column("recipient", "String", ZSTD, comment="type:id of the person or queue"),
        Column("kind", LC, comment="done, snooze or not_useful"),
        Column("snooze_until", f"Nullable({TS})", ZSTD),
        Column("at", TS, DELTA, comment="when it was given"),
        Column("source", LC, comment="link (the heads-up's links) or cli"),
        Column("alert_kind", LCN, comment="silence, unanswered, follow_up; NULL: not known"),
        Column("role", LCN),
        Column("entity_type", LCN),
        Column("entity_id", "Nullable(String)", ZSTD),
        Column("context_id", "Nullable(String)", ZSTD),
        Column("score", "Nullable(Float64)"),
        *INGEST,
    ),
    engine=Engine("ReplacingMergeTree"),
    order_by=("tenant", "recipient", "feedback_id"),
    partition_by="toYYYYMM(at)",
    settings=DEDUP,
    comment="Feedback on heads-ups (done, snooze, not_useful), one row per feedback_id.",
    shard_by=("tenant", "recipient"),
)


def process(message: Message) -> Outcome:
    f = parse_json(
        message, Feedback, "invalid_feedback", times=("at",), optional_times=("snooze_until",)
    )
    if isinstance(f, DeadLetter):
        return f
    return (
        f.feedback_id, f.alert_id, f.tenant, f.recipient, f.kind, f.snooze_until, f.at,
        f.source, f.alert_kind, f.role, f.entity_type, f.entity_id, f.context_id, f.score,
        *ingest(message),
    )  # fmt: skip

"""The tables, defined once as data. `ddl.py` renders them for a single node, `ddl_cluster.py`
for a ClickHouse cluster (ON CLUSTER, Replicated*MergeTree, Distributed) from the same objects.

Choices, per table (the queries they serve are the views in `views.py`):

events
    Every field of the contract plus where and when it came in. ReplacingMergeTree whose
    sorting key ends in `event_id`: re-sent copies of an event collapse on merge and under
    `FINAL`. The key is (tenant, day, event_id) rather than (tenant, event_id): an event is
    immutable, so its copies share `occurred_at` (the key finds exactly the copies that
    `event_id` alone would), and the day lets "this tenant, last week" read only those days.
    Per-entity queries go to `entity_events`, sorted for them. The bloom filter on event_id
    serves point lookups and in_reply_to joins, which do not know the day.
entity_events
    One row per (event, entity it touches): the actor, object, target and each tag (as the
    processors count them), filled by a materialized view on insert into events. Sorted by
    (tenant, entity_type, entity_id, occurred_at): an entity's timeline or feed, whatever role
    it played, is one contiguous range.
signals
    ReplacingMergeTree(version): a window re-emitted after a late event replaces the older
    version; `FINAL` gives one row per window.
alerts
    ReplacingMergeTree on (tenant, alert_id): alert ids are stable hashes, so re-sent alerts
    collapse.
people
    The directory (`Client.identify()`, topic `rhythm.people`): ReplacingMergeTree on
    (tenant, actor_type, actor_id) with `updated_at` as the version, so the latest record
    of a person wins (`FINAL`). No TTL: a person is kept until said otherwise.
feedback
    What recipients said of their heads-ups (done, snooze, not useful), one row per
    `feedback_id` (ReplacingMergeTree: a link used twice is one row), with the alert's kind
    and entity as the feedback carried them. Kept for good: a recipient's thresholds are
    learned from it.
notifications
    The notifier's deliveries, one per (alert, recipient, channel): ReplacingMergeTree
    (`version`), the notifier re-publishing each state change with a higher version.
dead_letters
    What could not be written, with reason, source position and the raw bytes (base64,
    truncated). Deduplicated on the source position.

All data tables keep `non_replicated_deduplication_window` so the embedded engine (and a
single server) honours `insert_deduplication_token`: a retried batch is dropped, not doubled.
(The cluster form sets `replicated_deduplication_window` to the same value instead.)

On a cluster, `shard_by` names the columns whose cityHash64 picks a row's shard. Rows that
replace each other (the same sorting key) must land on the same shard, because merges and
`FINAL` only collapse rows within one shard: so the shard key is made of columns the sorting
key determines. signals and dead_letters: a prefix/subset of the sorting key. events: the
actor, which every copy of an event_id shares (events are immutable). alerts: the entity,
which `alert_id` hashes (rhythm.schemas.outputs.alert_id). entity_events has none: the
materialized view fills it on the shard that holds the event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ALERTS",
    "DATA_TABLES",
    "DEAD_LETTERS",
    "DEDUP_WINDOW",
    "ENTITY_EVENTS",
    "EVENTS",
    "FEEDBACK",
    "NOTIFICATIONS",
    "PEOPLE",
    "SCHEMA_MIGRATIONS",
    "SIGNALS",
    "Column",
    "Engine",
    "Index",
    "Table",
]

#: How many recent insert blocks a table remembers for deduplication. A retry comes right
#: after its failed attempt (the writer is sequential), so a few hundred would do.
DEDUP_WINDOW = 1000

TS = "DateTime64(3, 'UTC')"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    codec: str | None = None
    default: str | None = None
    comment: str = ""


@dataclass(frozen=True)
class Index:
    name: str
    expr: str
    type: str
    granularity: int = 1


@dataclass(frozen=True)
class Engine:
    kind: Literal["MergeTree", "ReplacingMergeTree"]
    version: str | None = None


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    engine: Engine
    order_by: tuple[str, ...]
    partition_by: str | None = None
    #: retention applies to this time column (`<col> + INTERVAL n DAY`), if any
    ttl_column: str | None = None
    indexes: tuple[Index, ...] = ()
    settings: Mapping[str, str] = field(default_factory=dict)
    comment: str = ""
    #: on a cluster, cityHash64 of these columns picks the shard (empty: not inserted through
    #: the Distributed table; see the module docstring)
    shard_by: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns if c.default is None]

    @property
    def column_types(self) -> list[str]:
        return [c.type for c in self.columns if c.default is None]


_DEDUP = {"non_replicated_deduplication_window": str(DEDUP_WINDOW)}
_LC = "LowCardinality(String)"
_LCN = "LowCardinality(Nullable(String))"
_Z = "ZSTD(1)"
_TIME_CODEC = "Delta, ZSTD(1)"

# Ingest metadata, the same on every table written from a topic.
_INGEST = (
    Column("received_at", TS, _TIME_CODEC, comment="Kafka message timestamp"),
    Column("kafka_partition", "UInt16"),
    Column("kafka_offset", "UInt64", "Delta, ZSTD(1)"),
)

EVENTS = Table(
    name="events",
    columns=(
        Column("event_id", "UUID"),
        Column("tenant", _LC),
        Column("occurred_at", TS, _TIME_CODEC),
        Column("sent_at", f"Nullable({TS})", _Z),
        Column("actor_type", _LC),
        Column("actor_id", "String", _Z),
        Column("verb", _LC),
        Column("object_type", _LCN),
        Column("object_id", "Nullable(String)", _Z),
        Column("target_type", _LCN),
        Column("target_id", "Nullable(String)", _Z),
        Column("channel", _LCN),
        Column("context_id", "Nullable(String)", _Z),
        Column("in_reply_to", "Nullable(String)", _Z),
        Column("tags", f"Array({_LC})"),
        Column("weight", "Float64", _Z),
        Column(
            "properties",
            f"Map({_LC}, String)",
            _Z,
            comment="values as text: strings as sent, numbers in decimal, bools true/false",
        ),
        *_INGEST,
    ),
    engine=Engine("ReplacingMergeTree"),
    order_by=("tenant", "toDate(occurred_at)", "event_id"),
    partition_by="toYYYYMM(occurred_at)",
    ttl_column="occurred_at",
    indexes=(Index("event_id_bf", "event_id", "bloom_filter(0.01)", 4),),
    settings=_DEDUP,
    comment="Raw events, one row per event_id (use FINAL, or it converges on merge).",
    shard_by=("tenant", "actor_type", "actor_id"),
)

ENTITY_EVENTS = Table(
    name="entity_events",
    columns=(
        Column("tenant", _LC),
        Column("entity_type", _LC),
        Column("entity_id", "String", _Z),
        Column("role", _LC, comment="actor, object, target or tag"),
        Column("occurred_at", TS, _TIME_CODEC),
        Column("event_id", "UUID"),
        Column("verb", _LC),
        Column("actor_type", _LC),
        Column("actor_id", "String", _Z),
        Column("object_type", _LCN),
        Column("object_id", "Nullable(String)", _Z),
        Column("target_type", _LCN),
        Column("target_id", "Nullable(String)", _Z),
        Column("channel", _LCN),
        Column("context_id", "Nullable(String)", _Z),
        Column("weight", "Float64", _Z),
        Column("tags", f"Array({_LC})"),
    ),
    engine=Engine("ReplacingMergeTree"),
    order_by=("tenant", "entity_type", "entity_id", "occurred_at", "event_id", "role"),
    partition_by="toYYYYMM(occurred_at)",
    ttl_column="occurred_at",
    settings=_DEDUP,
    comment="Events by entity (filled by entity_events_mv): timelines and feeds.",
)

SIGNALS = Table(
    name="signals",
    columns=(
        Column("tenant", _LC),
        Column("role", _LC),
        Column("entity_type", _LC),
        Column("entity_id", "String", _Z),
        Column("window_start", TS, _TIME_CODEC),
        Column("window_seconds", "UInt32"),
        Column("event_count", "UInt64"),
        Column("weight_sum", "Float64"),
        Column("weight_max", "Float64"),
        Column("gap_count", "UInt64"),
        Column("gap_min_s", "Nullable(Float64)"),
        Column("gap_max_s", "Nullable(Float64)"),
        Column("gap_mean_s", "Nullable(Float64)"),
        Column("first_event_at", TS, _Z),
        Column("last_event_at", TS, _Z),
        Column("silence_before_s", "Nullable(Float64)"),
        Column("late_count", "UInt64"),
        Column("version", "UInt64"),
        *_INGEST,
    ),
    engine=Engine("ReplacingMergeTree", version="version"),
    order_by=("tenant", "role", "entity_type", "entity_id", "window_seconds", "window_start"),
    partition_by="toYYYYMM(window_start)",
    ttl_column="window_start",
    settings=_DEDUP,
    comment="One row per entity window; FINAL keeps the highest version.",
    shard_by=("tenant", "role", "entity_type", "entity_id"),
)

# As migration 1 created it; migration 3 brings it to ALERTS (follow_up, score, owners).
ALERTS_V1 = Table(
    name="alerts",
    columns=(
        Column("alert_id", "String"),
        Column("kind", "Enum8('silence' = 1, 'resumed' = 2, 'unanswered' = 3)"),
        Column("tenant", _LC),
        Column("role", _LC),
        Column("entity_type", _LC),
        Column("entity_id", "String", _Z),
        Column("context_id", "Nullable(String)", _Z),
        Column("fired_at", TS, _Z),
        Column("last_event_at", TS, _Z),
        Column("expected_within_s", "Float64"),
        Column("details", "String", _Z, comment="JSON object"),
        *_INGEST,
    ),
    engine=Engine("ReplacingMergeTree"),
    order_by=("tenant", "alert_id"),
    partition_by="toYYYYMM(fired_at)",
    ttl_column="fired_at",
    settings=_DEDUP,
    comment="Alerts, one row per alert_id.",
    shard_by=("tenant", "role", "entity_type", "entity_id"),
)

ALERT_KINDS = "Enum8('silence' = 1, 'resumed' = 2, 'unanswered' = 3, 'follow_up' = 4)"

ALERTS = Table(
    name="alerts",
    columns=(
        Column("alert_id", "String"),
        Column("kind", ALERT_KINDS),
        Column("tenant", _LC),
        Column("role", _LC),
        Column("entity_type", _LC),
        Column("entity_id", "String", _Z),
        Column("context_id", "Nullable(String)", _Z),
        Column("fired_at", TS, _Z),
        Column("last_event_at", TS, _Z),
        Column("expected_within_s", "Float64"),
        Column("score", "Float64", comment="how sure the rule is, 0 to 1: ranks a day's alerts"),
        Column("owners", "Array(String)", comment="who is expected to act, as type:id"),
        Column("details", "String", _Z, comment="JSON object"),
        *_INGEST,
    ),
    engine=Engine("ReplacingMergeTree"),
    order_by=("tenant", "alert_id"),
    partition_by="toYYYYMM(fired_at)",
    ttl_column="fired_at",
    settings=_DEDUP,
    comment="Alerts, one row per alert_id.",
    shard_by=("tenant", "role", "entity_type", "entity_id"),
)

DEAD_LETTERS = Table(
    name="dead_letters",
    columns=(
        Column("topic", _LC),
        Column("kafka_partition", "UInt16"),
        Column("kafka_offset", "UInt64"),
        Column("received_at", TS, _Z, comment="Kafka message timestamp"),
        Column("reason", _LC),
        Column("detail", "String", _Z),
        Column("key_b64", "String", _Z),
        Column("value_b64", "String", _Z, comment="base64 of the first bytes of the value"),
        Column("value_size", "UInt32"),
        Column("dead_at", TS, default="now64(3, 'UTC')"),
    ),
    engine=Engine("ReplacingMergeTree"),
    order_by=("topic", "kafka_partition", "kafka_offset"),
    partition_by="toYYYYMM(received_at)",
    ttl_column="received_at",
    settings=_DEDUP,
    comment="Messages the sink could not write, and why.",
    shard_by=("topic", "kafka_partition", "kafka_offset"),
)

PEOPLE = Table(
    name="people",
    columns=(
        Column("tenant", _LC),
        Column("actor_type", _LC),
        Column("actor_id", "String", _Z),
        Column("name", "Nullable(String)", _Z),
        Column("email", "Nullable(String)", _Z),
        Column("chat_handle", "Nullable(String)", _Z),
        Column("timezone", _LCN, comment="IANA zone; NULL: the tenant's"),
        Column("working_hours", "Array(UInt8)", comment="[start, end) local hours; []: tenant's"),
        Column("working_days", "Array(UInt8)", comment="0 = Monday; []: the tenant's"),
        Column("team", _LCN),
        Column("internal", "Nullable(Bool)", comment="one of ours; NULL: not said"),
        Column("updated_at", TS, _Z, comment="when the client said it: the version"),
        *_INGEST,
    ),
    engine=Engine("ReplacingMergeTree", version="updated_at"),
    order_by=("tenant", "actor_type", "actor_id"),
    settings=_DEDUP,
    comment="The people directory (Client.identify), latest record per person under FINAL.",
    shard_by=("tenant", "actor_type", "actor_id"),
)

NOTIFICATIONS = Table(
    name="notifications",
    columns=(
        Column("alert_id", "String"),
        Column("tenant", _LC),
        Column("kind", _LC),
        Column("recipient", "String", _Z, comment="type:id of a person or a queue"),
        Column("channel", _LC, comment="webhook, slack or email"),
        Column("address", "String", _Z),
        Column("reason", _LC, comment="why this recipient: owner, engaged or queue"),
        Column("state", _LC, comment="pending, held, sending, retry, sent, dead, suppressed"),
        Column("attempts", "UInt16"),
        Column("created_at", TS, _TIME_CODEC),
        Column("due_at", TS, _Z),
        Column("updated_at", TS, _Z),
        Column("sent_at", f"Nullable({TS})", _Z),
        Column("last_error", "Nullable(String)", _Z),
        Column("idempotency_key", "String", _Z),
        Column("version", "UInt64"),
        *_INGEST,
    ),
    engine=Engine("ReplacingMergeTree", version="version"),
    order_by=("tenant", "alert_id", "recipient", "channel"),
    partition_by="toYYYYMM(created_at)",
    ttl_column="created_at",
    settings=_DEDUP,
    comment="The notifier's deliveries, one per (alert, recipient, channel) under FINAL.",
    shard_by=("tenant", "alert_id"),
)

FEEDBACK = Table(
    name="feedback",
    columns=(
        Column("feedback_id", "String"),
        Column("alert_id", "String"),
        Column("tenant", _LC),
        Column("recipient", "String", _Z, comment="type:id of the person or queue"),
        Column("kind", _LC, comment="done, snooze or not_useful"),
        Column("snooze_until", f"Nullable({TS})", _Z),
        Column("at", TS, _TIME_CODEC, comment="when it was given"),
        Column("source", _LC, comment="link (the heads-up's links) or cli"),
        Column("alert_kind", _LCN, comment="silence, unanswered, follow_up; NULL: not known"),
        Column("role", _LCN),
        Column("entity_type", _LCN),
        Column("entity_id", "Nullable(String)", _Z),
        Column("context_id", "Nullable(String)", _Z),
        Column("score", "Nullable(Float64)"),
        *_INGEST,
    ),
    engine=Engine("ReplacingMergeTree"),
    order_by=("tenant", "recipient", "feedback_id"),
    partition_by="toYYYYMM(at)",
    settings=_DEDUP,
    comment="Feedback on heads-ups (done, snooze, not_useful), one row per feedback_id.",
    shard_by=("tenant", "recipient"),
)

SCHEMA_MIGRATIONS = Table(
    name="schema_migrations",
    columns=(
        Column("version", "UInt32"),
        Column("name", "String"),
        Column("checksum", "String"),
        Column("applied_at", TS, default="now64(3, 'UTC')"),
    ),
    engine=Engine("ReplacingMergeTree", version="applied_at"),
    order_by=("version",),
    comment="Which migrations ran (rhythm migrate).",
)

DATA_TABLES: tuple[Table, ...] = (
    EVENTS, ENTITY_EVENTS, SIGNALS, ALERTS, DEAD_LETTERS, PEOPLE, NOTIFICATIONS, FEEDBACK,
)  # fmt: skip

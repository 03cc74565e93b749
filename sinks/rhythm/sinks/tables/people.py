"""`people` (topic `rhythm.people`, JSON `rhythm.schemas.people.Person`): the directory that
`Client.identify()` fills.

ReplacingMergeTree on (tenant, actor_type, actor_id) with `updated_at` as the version, so
the latest record of a person wins (`FINAL`). No TTL: a person is kept until said otherwise.
"""

from __future__ import annotations

from rhythm.schemas.people import Person
from rhythm.sinks.tables.columns import DEDUP, INGEST, LC, LCN, TS, ZSTD
from rhythm.sinks.tables.definition import Column, Engine, Table
from rhythm.sinks.tables.rows import JSON_REASONS, DeadLetter, Message, Outcome, ingest, parse_json

__all__ = ["PEOPLE", "REASONS", "process"]

REASONS = (*JSON_REASONS, "invalid_person")

PEOPLE = Table(
    name="people",
    columns=(
        Column("tenant", LC),
        Column("actor_type", LC),
        Column("actor_id", "String", ZSTD),
        Column("name", "Nullable(String)", ZSTD),
        Column("email", "Nullable(String)", ZSTD),
        Column("chat_handle", "Nullable(String)", ZSTD),
        Column("timezone", LCN, comment="IANA zone; NULL: the tenant's"),
        Column("working_hours", "Array(UInt8)", comment="[start, end) local hours; []: tenant's"),
        Column("working_days", "Array(UInt8)", comment="0 = Monday; []: the tenant's"),
        Column("team", LCN),
        Column("internal", "Nullable(Bool)", comment="one of ours; NULL: not said"),
        Column("updated_at", TS, ZSTD, comment="when the client said it: the version"),
        *INGEST,
    ),
    engine=Engine("ReplacingMergeTree", version="updated_at"),
    order_by=("tenant", "actor_type", "actor_id"),
    settings=DEDUP,
    comment="The people directory (Client.identify), latest record per person under FINAL.",
    shard_by=("tenant", "actor_type", "actor_id"),
)


def process(message: Message) -> Outcome:
    p = parse_json(message, Person, "invalid_person", times=("updated_at",))
    if isinstance(p, DeadLetter):
        return p
    t = p.traits
    return (
        p.tenant, p.actor_type, p.actor_id, t.name, t.email, t.chat_handle, t.timezone,
        list(t.working_hours or ()), list(t.working_days or ()), t.team, t.internal,
        p.updated_at, *ingest(message),
    )  # fmt: skip

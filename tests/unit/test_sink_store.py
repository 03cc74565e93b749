"""The store on the embedded engine (a temporary chdb path per test): DDL from the
definitions, migrations, deduplication of retried inserts, and the analysts' views."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from rhythm.schemas import encode_event
from rhythm.sinks.ddl import create_table, create_view, quote
from rhythm.sinks.migrations import MIGRATIONS, Migration, MigrationError, migrate
from rhythm.sinks.store import Store, insert_settings
from rhythm.sinks.tables import ALERTS, DATA_TABLES, EVENTS, SIGNALS
from rhythm.sinks.tables.alerts import process as transform_alert
from rhythm.sinks.tables.definition import Column, Engine, Table
from rhythm.sinks.tables.events import process as transform_event
from rhythm.sinks.tables.rows import Message, Row
from rhythm.sinks.tables.signals import process as transform_signal
from rhythm.sinks.tables.views import ENTITY_EVENTS_MV, VIEWS

HOUR_MS = 3_600_000
T0 = 1_790_856_000_000  # 2026-10-01T12:00:00Z, on the hour


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    # One engine path per process at a time: every test closes its client.
    c = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'clickhouse'}")
    try:
        yield c
    finally:
        c.close()


def scalar(client: Client, sql: str) -> Any:
    return client.query(sql).result_rows[0][0]


# -- DDL ------------------------------------------------------------------------------------


def test_create_table_is_rendered_from_the_definition() -> None:
    sql = create_table(EVENTS, "analytics", retention_days=30)
    assert sql.startswith("CREATE TABLE IF NOT EXISTS analytics.events")
    for column in EVENTS.columns:
        assert f"\n    {column.name} {column.type}" in sql
    assert "ENGINE = ReplacingMergeTree()" in sql
    assert "PARTITION BY toYYYYMM(occurred_at)" in sql
    assert "ORDER BY (tenant, toDate(occurred_at), event_id)" in sql
    assert "TTL occurred_at + INTERVAL 30 DAY" in sql
    assert "non_replicated_deduplication_window = 1000" in sql
    assert "INDEX event_id_bf event_id TYPE bloom_filter(0.01) GRANULARITY 4" in sql
    assert "TTL" not in create_table(EVENTS, "analytics", retention_days=0)
    assert "ReplacingMergeTree(version)" in create_table(SIGNALS, "x")
    table = Table(
        "t",
        (Column("a", "UInt8", default="1", comment="it's"),),
        Engine("MergeTree"),
        ("a",),
    )
    assert "a UInt8 DEFAULT 1 COMMENT 'it\\'s'" in create_table(table, "d")
    assert quote("a\\b'c") == "'a\\\\b\\'c'"


def test_views_are_rendered_for_the_database() -> None:
    mv = create_view(ENTITY_EVENTS_MV, "analytics")
    assert mv.startswith(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS analytics.entity_events_mv "
        "TO analytics.entity_events"
    )
    for view in VIEWS:
        assert "$db" not in create_view(view, "analytics")
        assert "analytics." in create_view(view, "analytics")


# -- migrations -----------------------------------------------------------------------------


def test_migrations_are_idempotent_and_recorded(client: Client) -> None:
    first = migrate(client, "rhythm", retention_days=30)
    assert first.applied == [m.version for m in MIGRATIONS]
    again = migrate(client, "rhythm", retention_days=30)
    assert again.applied == [] and again.already == first.applied
    assert again.retention_changed == []
    recorded = client.query(
        "SELECT version, name, checksum FROM rhythm.schema_migrations FINAL ORDER BY version"
    ).result_rows
    assert recorded == [(m.version, m.name, m.checksum()) for m in MIGRATIONS]
    tables = set(client.command("SHOW TABLES FROM rhythm").split())  # type: ignore[union-attr]
    assert {t.name for t in DATA_TABLES} | {v.name for v in VIEWS} <= tables


def test_retention_follows_the_setting(client: Client) -> None:
    migrate(client, "rhythm", retention_days=30)
    report = migrate(client, "rhythm", retention_days=90)
    assert set(report.retention_changed) == {t.name for t in DATA_TABLES if t.ttl_column}
    engine = scalar(
        client, "SELECT engine_full FROM system.tables WHERE database='rhythm' AND name='alerts'"
    )
    assert "TTL fired_at + toIntervalDay(90)" in engine
    migrate(client, "rhythm", retention_days=0)
    engine = scalar(
        client, "SELECT engine_full FROM system.tables WHERE database='rhythm' AND name='events'"
    )
    assert "TTL" not in engine


def test_an_applied_migration_that_changed_is_refused(client: Client) -> None:
    migrate(client, "rhythm")
    edited = [
        *MIGRATIONS[:-1],
        Migration(MIGRATIONS[-1].version, "edited", lambda db, _d: [f"SELECT 1 -- {db}"]),
    ]
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(client, "rhythm", migrations=edited)


# -- deduplication --------------------------------------------------------------------------


def event_row(i: int, **changes: Any) -> Row:
    record: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=i + 1)),
        "tenant": "acme",
        "occurred_at": T0 + i * 1000,
        "sent_at": None,
        "actor_type": "user",
        "actor_id": f"u-{i % 3}",
        "verb": "viewed",
        "object_type": "doc",
        "object_id": f"d-{i % 2}",
        "target_type": "account",
        "target_id": "a-1",
        "channel": "web",
        "context_id": None,
        "in_reply_to": None,
        "tags": ["x", "y", "x"],
        "weight": 1.0,
        "properties": {"n": i},
    } | changes
    row = transform_event(Message("ev", 0, i, T0, None, encode_event(record)))
    assert isinstance(row, tuple), row
    return row


def test_a_retried_batch_with_the_same_token_is_written_once(client: Client) -> None:
    migrate(client, "rhythm")
    store = Store(client, "rhythm")
    rows = [event_row(i) for i in range(100)]
    store.insert(EVENTS, rows, "rhythm:ev:id:0:0-99")
    store.insert(EVENTS, rows, "rhythm:ev:id:0:0-99")  # the retry
    assert scalar(client, "SELECT count() FROM rhythm.events") == 100
    # the materialized view's table too: actor, object, target and 2 distinct tags
    assert scalar(client, "SELECT count() FROM rhythm.entity_events") == 500
    # Another batch of the same events (a re-sent duplicate): written, folded by FINAL.
    store.insert(EVENTS, rows[:10], "rhythm:ev:id:1:0-9")
    assert scalar(client, "SELECT count() FROM rhythm.events") == 110
    assert scalar(client, "SELECT count() FROM rhythm.events FINAL") == 100
    assert scalar(client, "SELECT count() FROM rhythm.entity_events FINAL") == 500


def test_without_the_deduplication_window_the_embedded_engine_keeps_the_retry(
    client: Client,
) -> None:
    # Why every table sets non_replicated_deduplication_window: without it a non-replicated
    # MergeTree ignores insert_deduplication_token.
    client.command("CREATE TABLE default.plain (a UInt64) ENGINE = MergeTree ORDER BY a")
    for _ in range(2):
        client.insert(
            "default.plain", [[1, 2, 3]], column_names=["a"], column_oriented=True,
            settings=insert_settings("same-token"),
        )  # fmt: skip
    assert scalar(client, "SELECT count() FROM default.plain") == 6


def test_a_batch_that_failed_while_the_table_was_away_is_written_once_back(
    client: Client,
) -> None:
    migrate(client, "rhythm")
    store = Store(client, "rhythm")
    rows = [event_row(i) for i in range(50)]
    client.command("DETACH TABLE rhythm.events")
    with pytest.raises(Exception, match="UNKNOWN_TABLE"):
        store.insert(EVENTS, rows, "tok")
    client.command("ATTACH TABLE rhythm.events")
    store.insert(EVENTS, rows, "tok")
    store.insert(EVENTS, rows, "tok")
    assert scalar(client, "SELECT count() FROM rhythm.events") == 50


# -- views ----------------------------------------------------------------------------------


def signal_row(entity: str, hour: int, count: int, version: int = 1) -> Row:
    start = T0 + hour * HOUR_MS
    value: dict[str, Any] = {
        "tenant": "acme", "role": "actor", "entity_type": "user", "entity_id": entity,
        "window_start": start, "window_seconds": 3600, "event_count": count,
        "weight_sum": float(count), "weight_max": 1.0, "gap_count": max(0, count - 1),
        "gap_min_s": None, "gap_max_s": None, "gap_mean_s": None,
        "first_event_at": start, "last_event_at": start + 1000, "silence_before_s": None,
        "late_count": 0, "version": version,
    }  # fmt: skip
    row = transform_signal(Message("sig", 0, hour, start, None, json.dumps(value).encode()))
    assert isinstance(row, tuple), row
    return row


def alert_row(
    alert_id: str,
    kind: str,
    entity: tuple[str, str],
    at: int,
    context: str | None = None,
    score: float = 0.5,
    owners: tuple[str, ...] = (),
    historical: bool = False,
) -> Row:
    value: dict[str, Any] = {
        "alert_id": alert_id, "kind": kind, "tenant": "acme", "role": "actor",
        "entity_type": entity[0], "entity_id": entity[1], "context_id": context,
        "fired_at": at, "last_event_at": at - 60_000, "expected_within_s": 30.0,
        "score": score, "owners": list(owners), "details": {}, "historical": historical,
    }  # fmt: skip
    row = transform_alert(Message("al", 0, 0, at, None, json.dumps(value).encode()))
    assert isinstance(row, tuple), row
    return row


def test_entity_timeline_and_activity_feed(client: Client) -> None:
    migrate(client, "rhythm")
    store = Store(client, "rhythm")
    rows = [
        event_row(0, actor_id="u-1", target_id="a-1"),
        event_row(1, actor_id="u-2", target_id="a-1", occurred_at=T0 + 61_000),
        event_row(2, actor_id="u-1", target_id="a-2", occurred_at=T0 + 90_000),
        event_row(3, actor_id="u-1", target_type=None, target_id=None, object_type="user",
                  object_id="u-1", occurred_at=T0 + 150_000),
    ]  # fmt: skip
    store.insert(EVENTS, rows, "t1")
    store.insert(EVENTS, rows, "t2")  # a re-sent copy: the views read FINAL
    timeline = client.query(
        "SELECT event_id, roles, gap_s FROM rhythm.entity_timeline("
        "tenant='acme', entity_type='user', entity_id='u-1')"
    ).result_rows
    assert [str(r[0]) for r in timeline] == [str(uuid.UUID(int=i)) for i in (1, 3, 4)]
    assert timeline[0][2] is None and timeline[1][2] == 90.0 and timeline[2][2] == 60.0
    assert sorted(timeline[2][1]) == ["actor", "object"]  # actor and object of one event
    feed = client.query(
        "SELECT line, role FROM rhythm.activity_feed("
        "tenant='acme', entity_type='account', entity_id='a-1')"
    ).result_rows
    assert feed == [
        ("user:u-2 viewed doc:d-1 on account:a-1 via web", "target"),
        ("user:u-1 viewed doc:d-0 on account:a-1 via web", "target"),
    ]
    tag_feed = client.query(
        "SELECT count() FROM rhythm.activity_feed(tenant='acme', entity_type='tag', entity_id='x')"
    ).result_rows
    assert tag_feed == [(4,)]


def test_top_movers_compare_the_newest_window_with_the_entitys_own_baseline(
    client: Client,
) -> None:
    migrate(client, "rhythm")
    store = Store(client, "rhythm")
    rows = []
    for hour in range(6):  # hours 0..4 baseline, 5 the newest window of the tenant
        rows.append(signal_row("steady", hour, 10))
        rows.append(signal_row("surging", hour, 10 if hour < 5 else 60))
        if hour < 5:
            rows.append(signal_row("gone", hour, 20))  # nothing in the newest window
    rows.append(signal_row("surging", 5, 61, version=2))  # a late correction
    store.insert(SIGNALS, rows, "s1")
    movers = client.query(
        "SELECT entity_id, current_count, baseline_count, round(pace_z, 2), "
        "baseline_active_windows FROM rhythm.top_movers(window_seconds=3600, "
        "baseline_windows=5)"
    ).result_rows
    by_entity = {r[0]: r[1:] for r in movers}
    assert [r[0] for r in movers] == ["surging", "gone", "steady"]
    assert by_entity["surging"][:2] == (61, 10.0)  # the higher version wins
    assert by_entity["surging"][2] > 10
    assert by_entity["gone"][:2] == (0, 20.0) and by_entity["gone"][2] < -3
    assert by_entity["steady"][2] == 0.0 and by_entity["steady"][3] == 5


def test_open_alerts_are_those_not_resolved(client: Client) -> None:
    migrate(client, "rhythm")
    store = Store(client, "rhythm")
    t = T0 + 10 * HOUR_MS
    store.insert(
        ALERTS,
        [
            alert_row("s1", "silence", ("user", "back"), t),
            alert_row("r1", "resumed", ("user", "back"), t + 1000),
            alert_row("s2", "silence", ("user", "quiet"), t),
            alert_row("u1", "unanswered", ("customer", "c-1"), t, "thread-1"),
            alert_row("u2", "unanswered", ("customer", "c-2"), t, "thread-2"),
        ],
        "a1",
    )
    replies = [
        # an agent answered in thread-1 after the waiting message
        event_row(1, actor_type="agent", actor_id="x", context_id="thread-1", occurred_at=t),
        # in thread-2 only the customer wrote again
        event_row(2, actor_type="customer", actor_id="c-2", context_id="thread-2",
                  occurred_at=t),
    ]  # fmt: skip
    store.insert(EVENTS, replies, "e1")
    open_alerts = client.query(
        "SELECT alert_id, kind FROM rhythm.open_alerts ORDER BY alert_id"
    ).result_rows
    assert open_alerts == [("s2", "silence"), ("u2", "unanswered")]


def test_the_history_lanes_alerts_are_neither_open_nor_ranked(client: Client) -> None:
    """What happened then (`rhythm backfill`) is no heads-up now: it must not show as open
    nor take a place in a person's daily cap."""
    migrate(client, "rhythm")
    store = Store(client, "rhythm")
    t = T0 + 10 * HOUR_MS
    e7 = ("employee:e-7",)
    rows = [
        alert_row("h1", "unanswered", ("customer", "c-1"), t, "th-1", 0.99, e7, historical=True),
        alert_row("h2", "silence", ("account", "a-1"), t, None, 0.99, historical=True),
        alert_row("l1", "unanswered", ("customer", "c-2"), t + 1, "th-2", 0.5, e7),
        alert_row("l2", "silence", ("account", "a-2"), t, None, 0.9),
    ]
    store.insert(ALERTS, rows, "lanes")
    stored = client.query("SELECT alert_id, historical FROM rhythm.alerts ORDER BY alert_id")
    assert stored.result_rows == [("h1", True), ("h2", True), ("l1", False), ("l2", False)]
    open_ids = client.query("SELECT alert_id FROM rhythm.open_alerts ORDER BY alert_id")
    assert [r[0] for r in open_ids.result_rows] == ["l1", "l2"]
    ranked = client.query(
        "SELECT alert_id, rank_of_day, suppressed FROM rhythm.alerts_ranked(cap=1) "
        "ORDER BY alert_id"
    ).result_rows
    # the live alert keeps the recipient's one place although the historical one scored higher
    assert ranked == [("l1", 1, False), ("l2", 1, False)]


def test_the_noise_budget_keeps_each_persons_best_alerts_of_the_day(client: Client) -> None:
    migrate(client, "rhythm")
    store = Store(client, "rhythm")
    t = T0 + 10 * HOUR_MS
    e7, e8 = ("employee:e-7",), ("employee:e-8",)
    rows = [
        alert_row(f"a{i}", "unanswered", ("customer", f"c-{i}"), t + i, f"th-{i}", score, e7)
        for i, score in enumerate((0.91, 0.99, 0.95, 0.97))
    ]
    rows += [
        alert_row("b0", "unanswered", ("customer", "c-9"), t, "th-9", 0.5, e8),
        alert_row("n0", "follow_up", ("employee", "e-7"), t, "th-8", 0.2, ("contact:k-1",)),
        alert_row("s0", "silence", ("account", "a-1"), t, None, 0.999),  # nobody named
        alert_row("s1", "silence", ("account", "a-2"), t, None, 0.998),
        alert_row("s2", "silence", ("account", "a-3"), t, None, 0.997),
        alert_row("late", "unanswered", ("customer", "c-5"), t + 86_400_000, "th-5", 0.1, e7),
    ]
    store.insert(ALERTS, rows, "noise")
    ranked = client.query(
        "SELECT alert_id, recipient, rank_of_day, suppressed FROM rhythm.alerts_ranked(cap=2) "
        "ORDER BY alert_id"
    ).result_rows
    got = {a: (r, rank, bool(sup)) for a, r, rank, sup in ranked}
    # e-7's day: the two highest scores reach them, the rest stay here, marked
    assert got["a1"] == ("employee:e-7", 1, False) and got["a3"] == ("employee:e-7", 2, False)
    assert got["a2"][2] and got["a0"][2]
    assert got["late"] == ("employee:e-7", 1, False)  # the next day starts afresh
    assert not got["b0"][2] and not got["n0"][2]  # other people's budgets
    assert not any(got[s][2] for s in ("s0", "s1", "s2"))  # no recipient: never suppressed
    owners = client.query("SELECT owners, score FROM rhythm.open_alerts WHERE alert_id = 'a1'")
    assert owners.result_rows == [(["employee:e-7"], 0.99)]

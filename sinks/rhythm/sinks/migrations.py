"""Versioned schema migrations, applied by `rhythm migrate` and by the sink at start.

Each migration is a list of statements built from the definitions; every statement is
idempotent on its own (IF NOT EXISTS, OR REPLACE), so a run that died halfway is simply run
again. `<db>.schema_migrations` records each version with a checksum of its statements; a
recorded version whose statements changed since is an error (add a new migration instead).

Retention is not part of the migrations (it is a setting that may change): after them,
each table's TTL is brought to `retention_days` if it differs.

A migration builds its statements for a `Target`: a database on a single node, or on a
cluster (`Target(database, cluster=NAME)`, rendered by `ddl_cluster.py` from the same
definitions). Each form has its own checksum, over a canonical rendering of that form.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rhythm.sinks.ddl import (
    column_sql,
    create_database,
    create_table,
    create_view,
    on_cluster,
    quote,
    ttl_expression,
)
from rhythm.sinks.ddl_cluster import (
    cluster_bookkeeping_table,
    cluster_tables,
    cluster_view,
    local_name,
)
from rhythm.sinks.tables import (
    ALERTS,
    DATA_TABLES,
    DEAD_LETTERS,
    ENTITY_EVENTS,
    EVENTS,
    FEEDBACK,
    NOTIFICATIONS,
    PEOPLE,
    SCHEMA_MIGRATIONS,
    SIGNALS,
)
from rhythm.sinks.tables.alerts import ALERTS_V1, HISTORICAL, KIND_TYPE
from rhythm.sinks.tables.definition import Table, View
from rhythm.sinks.tables.events import ENTITY_EVENTS_MV
from rhythm.sinks.tables.views import (
    ACTIVITY_FEED,
    ALERTS_RANKED,
    ALERTS_RANKED_V3,
    ENTITY_TIMELINE,
    OPEN_ALERTS,
    OPEN_ALERTS_V2,
    OPEN_ALERTS_V3,
    TOP_MOVERS,
)

__all__ = [
    "MIGRATIONS",
    "Migration",
    "MigrationError",
    "MigrationReport",
    "SqlClient",
    "Target",
    "migrate",
    "script",
]

log = logging.getLogger(__name__)


class SqlClient(Protocol):
    """What migrations need from a ClickHouse client (clickhouse-connect's fits)."""

    def command(self, cmd: str) -> object: ...


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Target:
    """Where the DDL goes: a database on one node, or on every node of `cluster`."""

    database: str
    cluster: str | None = None

    def __str__(self) -> str:  # what a migration's statements name
        return self.database

    def create_database(self) -> str:
        return create_database(self.database, cluster=self.cluster)

    def create_tables(self, table: Table, retention_days: int) -> list[str]:
        if self.cluster is None:
            return [create_table(table, self.database, retention_days)]
        return cluster_tables(table, self.database, self.cluster, retention_days)

    def create_view(self, view: View) -> str:
        if self.cluster is None:
            return create_view(view, self.database)
        return cluster_view(view, self.database, self.cluster)

    def create_bookkeeping(self) -> str:
        if self.cluster is None:
            return create_table(SCHEMA_MIGRATIONS, self.database)
        return cluster_bookkeeping_table(self.database, self.cluster)

    def storage_table(self, table: Table) -> str:
        """The table holding the rows (and the TTL): the local one on a cluster."""
        return table.name if self.cluster is None else local_name(table)

    def alter_table(self, table: Table) -> str:
        return f"ALTER TABLE {self.database}.{self.storage_table(table)}{on_cluster(self.cluster)}"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    build: Callable[[Target, int], list[str]]  # (target, retention_days) -> statements

    def statements(
        self, database: str, retention_days: int, cluster: str | None = None
    ) -> list[str]:
        return self.build(Target(database, cluster), retention_days)

    def checksum(self, cluster: bool = False) -> str:
        # Over a canonical rendering of the form: the database and cluster names and the
        # retention do not change what a migration is.
        text = "\n;\n".join(self.build(Target("rhythm", "cluster" if cluster else None), 0))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tables(target: Target, days: int) -> list[str]:
    tables = (EVENTS, ENTITY_EVENTS, SIGNALS, ALERTS_V1, DEAD_LETTERS)
    return [
        target.create_database(),
        *(sql for t in tables for sql in target.create_tables(t, days)),
        target.create_view(ENTITY_EVENTS_MV),
    ]


def _views(target: Target, _days: int) -> list[str]:
    return [
        target.create_view(v) for v in (ENTITY_TIMELINE, ACTIVITY_FEED, TOP_MOVERS, OPEN_ALERTS_V2)
    ]


def _alert_owners(target: Target, _days: int) -> list[str]:
    """follow_up alerts, each alert's score and owners, the noise budget's view."""
    columns = [
        f"MODIFY COLUMN kind {KIND_TYPE}",
        "ADD COLUMN IF NOT EXISTS score Float64 AFTER expected_within_s",
        "ADD COLUMN IF NOT EXISTS owners Array(String) AFTER score",
    ]
    tables = [target.alter_table(ALERTS)]
    if target.cluster is not None:  # the Distributed table in front of the local one
        tables.append(f"ALTER TABLE {target.database}.{ALERTS.name}{on_cluster(target.cluster)}")
    return [
        *(f"{table} {change}" for table in tables for change in columns),
        target.create_view(OPEN_ALERTS_V3),
        target.create_view(ALERTS_RANKED_V3),
    ]


def _historical_alerts(target: Target, _days: int) -> list[str]:
    """Alerts of the history lane (`rhythm backfill`, routed too-late events), marked."""
    column = f"ADD COLUMN IF NOT EXISTS {column_sql(HISTORICAL)} AFTER details"
    tables = [target.alter_table(ALERTS)]
    if target.cluster is not None:  # the Distributed table in front of the local one
        tables.append(f"ALTER TABLE {target.database}.{ALERTS.name}{on_cluster(target.cluster)}")
    return [f"{table} {column}" for table in tables]


def _live_alert_views(target: Target, _days: int) -> list[str]:
    """open_alerts and alerts_ranked without the history lane's alerts."""
    return [target.create_view(OPEN_ALERTS), target.create_view(ALERTS_RANKED)]


def _people_and_notifications(target: Target, days: int) -> list[str]:
    """The people directory (Client.identify) and the notifier's deliveries."""
    return [sql for t in (PEOPLE, NOTIFICATIONS) for sql in target.create_tables(t, days)]


def _feedback(target: Target, days: int) -> list[str]:
    """Feedback on heads-ups (done, snooze, not useful)."""
    return target.create_tables(FEEDBACK, days)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "tables", _tables),
    Migration(2, "analyst views", _views),
    Migration(3, "alert owners, scores and the noise budget", _alert_owners),
    Migration(4, "people directory and notifications", _people_and_notifications),
    Migration(5, "feedback on heads-ups", _feedback),
    Migration(6, "historical alerts", _historical_alerts),
    Migration(7, "open and ranked alerts are live ones", _live_alert_views),
)


@dataclass
class MigrationReport:
    applied: list[int] = field(default_factory=list)
    already: list[int] = field(default_factory=list)
    retention_changed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        done = ", ".join(map(str, self.applied)) or "none"
        text = f"migrations applied: {done}; already applied: {len(self.already)}"
        if self.retention_changed:
            text += f"; retention changed on {', '.join(self.retention_changed)}"
        return text


def _rows(client: SqlClient, sql: str) -> list[list[str]]:
    """Rows of a small TabSeparated result through `command()`, which every client has."""
    result = client.command(sql)
    if isinstance(result, str):
        return [line.split("\t") for line in result.splitlines() if line] if result else []
    if isinstance(result, int):
        return [[str(result)]]
    if isinstance(result, Sequence) and not isinstance(result, bytes):
        return [[str(x) for x in result]]
    return []


def applied_versions(client: SqlClient, database: str) -> dict[int, str]:
    # One row per version as "version:checksum" so `command()` returns a single column.
    rows = _rows(
        client,
        f"SELECT arrayStringConcat(groupArray(concat(toString(version), ':', checksum)), ',') "
        f"FROM (SELECT version, argMax(checksum, applied_at) AS checksum "
        f"FROM {database}.schema_migrations GROUP BY version)",
    )
    text = rows[0][0] if rows and rows[0] else ""
    out: dict[int, str] = {}
    for item in filter(None, text.split(",")):
        version, _, checksum = item.partition(":")
        out[int(version)] = checksum
    return out


def _record(database: str, migration: Migration, checksum: str) -> str:
    return (
        f"INSERT INTO {database}.schema_migrations (version, name, checksum) "
        f"VALUES ({migration.version}, {quote(migration.name)}, '{checksum}')"
    )


def script(
    database: str = "rhythm",
    retention_days: int = 0,
    cluster: str | None = None,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> list[str]:
    """Every statement `migrate` runs on an empty store, bookkeeping included, in order:
    what `rhythm migrate --print` shows (for review, or to apply by hand)."""
    target = Target(database, cluster)
    out = [target.create_database(), target.create_bookkeeping()]
    for migration in sorted(migrations, key=lambda m: m.version):
        out += migration.statements(database, retention_days, cluster)
        out.append(_record(database, migration, migration.checksum(cluster is not None)))
    return out


def migrate(
    client: SqlClient,
    database: str = "rhythm",
    retention_days: int = 0,
    migrations: Sequence[Migration] = MIGRATIONS,
    cluster: str | None = None,
) -> MigrationReport:
    """Apply what has not run yet, in order; then bring the TTLs to `retention_days`.
    With `cluster`, the replicated form ON CLUSTER (the client talks to any node of it)."""
    report = MigrationReport()
    target = Target(database, cluster)
    client.command(target.create_database())
    client.command(target.create_bookkeeping())
    done = applied_versions(client, database)
    for migration in sorted(migrations, key=lambda m: m.version):
        checksum = migration.checksum(cluster is not None)
        if migration.version in done:
            if done[migration.version] != checksum:
                raise MigrationError(
                    f"migration {migration.version} ({migration.name}) changed after it was "
                    f"applied (checksum {done[migration.version]} in the store, {checksum} "
                    "in the code): add a new migration instead of editing an applied one"
                )
            report.already.append(migration.version)
            continue
        log.info("applying migration %d (%s)", migration.version, migration.name)
        for statement in migration.statements(database, retention_days, cluster):
            client.command(statement)
        client.command(_record(database, migration, checksum))
        report.applied.append(migration.version)
    report.retention_changed = apply_retention(client, target, retention_days)
    return report


_TTL_DAYS = re.compile(r"\bTTL\s+\w+\s*\+\s*toIntervalDay\((\d+)\)")


def current_retention(client: SqlClient, target: Target, table: Table) -> int:
    """Days of the table's TTL (0 when none)."""
    rows = _rows(
        client,
        f"SELECT engine_full FROM system.tables WHERE database = "
        f"{quote(target.database)} AND name = '{target.storage_table(table)}'",
    )
    engine_full = "\t".join(rows[0]) if rows else ""
    match = _TTL_DAYS.search(engine_full)
    return int(match.group(1)) if match else 0


def apply_retention(client: SqlClient, target: Target, retention_days: int) -> list[str]:
    changed = []
    for table in DATA_TABLES:
        if table.ttl_column is None:
            continue
        if current_retention(client, target, table) == retention_days:
            continue
        expression = ttl_expression(table, retention_days)
        if expression is None:
            client.command(f"{target.alter_table(table)} REMOVE TTL")
        else:
            client.command(f"{target.alter_table(table)} MODIFY TTL {expression}")
        changed.append(table.name)
    return changed

"""Reaching the store: a clickhouse-connect client for the DSN (embedded chdb or a server),
the columnar insert with its deduplication token, and how other processes find the running
sink's endpoint when it owns the embedded store."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from rhythm.sinks.settings import Dsn, SinkSettings
from rhythm.sinks.tables.definition import Table
from rhythm.sinks.tables.rows import Row

__all__ = [
    "EndpointState",
    "Store",
    "StoreBusyError",
    "admin_login",
    "connect",
    "insert_settings",
    "open_client",
    "read_live_state",
    "remove_state",
    "write_secret",
    "write_state",
]

log = logging.getLogger(__name__)


class StoreBusyError(RuntimeError):
    """The embedded store is open in another process and no endpoint was found."""


def open_client(dsn: Dsn, settings: SinkSettings) -> Client:
    if dsn.embedded:
        return clickhouse_connect.get_client(dsn=f"chdb://{dsn.path}")
    password = dsn.password.get_secret_value() if dsn.password is not None else ""
    return clickhouse_connect.get_client(
        host=dsn.host,
        port=dsn.port,
        username=dsn.username or "default",
        password=password,
        secure=dsn.kind == "https",
        verify=settings.clickhouse_secure_verify,
        ca_cert=settings.clickhouse_ca_cert,
        settings=dict(dsn.settings),
        # The writer needs no session state, and a session pins requests to one server
        # behind a load balancer.
        autogenerate_session_id=False,
    )


def insert_settings(token: str, distributed: bool = False) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "insert_deduplicate": 1,
        "insert_deduplication_token": token,
        # entity_events (filled by a materialized view) deduplicates the retried block too,
        # also if the first attempt failed between the source table and the view.
        "deduplicate_blocks_in_dependent_materialized_views": 1,
    }
    if distributed:
        # Into a Distributed table: return only once every shard has its part, so the offsets
        # are committed after the rows are on the shards (not in a node's send queue). A retry
        # splits the same rows the same way (the sharding key is deterministic) and each
        # shard drops the part it already has by the token.
        settings["distributed_foreground_insert"] = 1
    return settings


class Store:
    """The writer's side of the store: columnar inserts into the sink's tables."""

    def __init__(self, client: Client, database: str, distributed: bool = False) -> None:
        self.client = client
        self.database = database
        #: the tables are Distributed ones (a cluster, `SinkSettings.cluster`)
        self.distributed = distributed

    def insert(self, table: Table, rows: Sequence[Row], token: str) -> int:
        """Insert `rows` (tuples in the table's column order); returns the rows sent.
        The column types are given, so there is no DESCRIBE round trip per insert."""
        columns = [list(column) for column in zip(*rows, strict=True)]
        self.client.insert(
            f"{self.database}.{table.name}",
            columns,
            column_names=table.column_names,
            column_type_names=table.column_types,
            column_oriented=True,
            settings=insert_settings(token, self.distributed),
        )
        return len(rows)

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class EndpointState:
    pid: int
    host: str
    port: int
    dsn: str


def write_state(path: Path, state: EndpointState) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state)))
    tmp.replace(path)


def write_secret(path: Path, text: str) -> None:
    """Write `text` to `path` readable by this user only (0600 from creation on)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    tmp.replace(path)


def admin_login(settings: SinkSettings) -> tuple[str, str]:
    """The endpoint's admin user and password: configured, or the file the sink wrote."""
    password = settings.admin_password()
    if password is not None:
        return settings.http_admin_user, password.get_secret_value()
    try:
        text = settings.admin_password_file().read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return settings.http_admin_user, text


def remove_state(path: Path, pid: int) -> None:
    state = _read_state(path)
    if state is not None and state.pid == pid:
        path.unlink(missing_ok=True)


def _read_state(path: Path) -> EndpointState | None:
    try:
        return EndpointState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def read_live_state(path: Path | None) -> EndpointState | None:
    """The endpoint of the sink that owns the store, if that sink is still running."""
    if path is None:
        return None
    state = _read_state(path)
    if state is None:
        return None
    try:
        os.kill(state.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return state


def connect(settings: SinkSettings) -> tuple[Client, str]:
    """A client for commands run beside the sink (`rhythm query`, `rhythm migrate`): the
    running sink's endpoint when it owns the embedded store, else the store itself. Returns
    the client and a description of where it goes (no secrets)."""
    dsn = settings.store_dsn()
    if not dsn.embedded:
        return open_client(dsn, settings), dsn.redacted()
    state = read_live_state(settings.endpoint_state_file())
    if state is not None:
        user, password = admin_login(settings)
        client = clickhouse_connect.get_client(
            host=state.host, port=state.port, username=user, password=password
        )
        return client, f"the running sink's endpoint http://{state.host}:{state.port}"
    try:
        return open_client(dsn, settings), dsn.redacted()
    except Exception as exc:
        raise StoreBusyError(
            f"cannot open {dsn.redacted()}: {exc}\nIs a sink running on it without its query "
            "endpoint (RHYTHM_SINK_HTTP_PORT=0)? Only one process can open the embedded "
            "store; start the sink with an endpoint and this command goes through it."
        ) from exc

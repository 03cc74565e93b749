"""The sink's settings: one object read from the environment (prefix `RHYTHM_SINK_`).

Connection to Kafka is the shared `KafkaSettings` (`RHYTHM_KAFKA_*`). The store is a DSN:
`chdb://<path>` (the embedded engine, the default, under the data directory) or
`http(s)://[user@]host[:port]` (a ClickHouse server or cluster). Credentials come from the
environment or a file and are `SecretStr`: masked in `repr()`, logs and `model_dump()`;
`Dsn.redacted()` is what gets printed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.schemas.topics import (
    ALERTS_TOPIC,
    DEAD_LETTERS_TOPIC,
    EVENTS_TOPIC,
    FEEDBACK_TOPIC,
    HISTORY_TOPIC,
    NOTIFICATIONS_TOPIC,
    PEOPLE_TOPIC,
    SIGNALS_TOPIC,
    SINK_GROUP,
)

if TYPE_CHECKING:
    from rhythm.sinks.tables.rows import Kind

__all__ = ["Dsn", "SinkSettings", "default_data_dir", "parse_dsn"]

MIB = 1024 * 1024


def default_data_dir() -> Path:
    """`<repo>/.rhythm` in a source checkout (where the local broker keeps its data too),
    else `<cwd>/.rhythm`."""
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file() and (root / "sinks").is_dir():
        return root / ".rhythm"
    return Path.cwd() / ".rhythm"


@dataclass(frozen=True)
class Dsn:
    """A parsed store address. `kind` is `chdb` (embedded, `path`) or `http`/`https`."""

    kind: Literal["chdb", "http", "https"]
    path: str = ""
    host: str = ""
    port: int = 0
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        return self.kind == "chdb"

    def redacted(self) -> str:
        """The DSN for logs and messages: never the password."""
        if self.embedded:
            return f"chdb://{self.path}"
        user = f"{self.username}@" if self.username else ""
        return f"{self.kind}://{user}{self.host}:{self.port}"


def parse_dsn(text: str) -> Dsn:
    """`chdb://PATH` (`chdb:///abs/path`, `chdb://rel/path`, `chdb://:memory:`) or
    `http(s)://[user[:password]@]host[:port][?setting=value...]`."""
    if text.startswith("chdb://"):
        rest = text[len("chdb://") :]
        if not rest:
            raise ValueError("chdb:// needs a path, e.g. chdb:///var/lib/rhythm/clickhouse")
        if rest in (":memory:", "memory"):
            return Dsn("chdb", path=":memory:")
        return Dsn("chdb", path=str(Path(rest).expanduser().absolute()))
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(
            f"unsupported store DSN scheme {parts.scheme!r}: use chdb://, http://, https://"
        )
    if not parts.hostname:
        raise ValueError("the DSN has no host")
    secure = parts.scheme == "https"
    return Dsn(
        "https" if secure else "http",
        host=parts.hostname,
        port=parts.port or (8443 if secure else 8123),
        username=unquote(parts.username) if parts.username else None,
        password=SecretStr(unquote(parts.password)) if parts.password else None,
        settings=dict(parse_qsl(parts.query)),
    )


def _secret(value: SecretStr | None, file: Path | None) -> SecretStr | None:
    """A secret as given, else read from its file (e.g. a mounted secret), else None."""
    if value is not None:
        return value
    if file is not None:
        return SecretStr(file.read_text(encoding="utf-8").strip())
    return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SinkSettings(BaseSettings):
    """Everything the sink, `rhythm migrate`, `rhythm sync` and `rhythm query` need.

    Every field can be set as `RHYTHM_SINK_<FIELD>` (e.g. `RHYTHM_SINK_BATCH_MAX_ROWS=5000`);
    dicts and lists as JSON.
    """

    model_config = SettingsConfigDict(env_prefix="RHYTHM_SINK_", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)

    # -- the store ------------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where the embedded store lives by default: <data_dir>/clickhouse.",
    )
    dsn: str | None = Field(
        None,
        description="chdb://PATH or http(s)://[user@]host[:port]. Default chdb://<data_dir>/"
        "clickhouse. A password in the DSN works but prefer clickhouse_password(_file).",
    )
    database: str = Field("rhythm", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    clickhouse_user: str | None = Field(None, description="Overrides the DSN's user.")
    clickhouse_password: SecretStr | None = Field(None, description="Overrides the DSN's.")
    clickhouse_password_file: Path | None = Field(
        None, description="A file holding the password (e.g. a mounted secret)."
    )
    clickhouse_secure_verify: bool = Field(True, description="Verify the server's TLS cert.")
    clickhouse_ca_cert: str | None = None
    retention_days: int = Field(
        365, ge=0, description="TTL of events, signals, alerts, dead letters; 0 = forever."
    )
    cluster: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="A ClickHouse cluster (remote_servers) to migrate ON CLUSTER: replicated "
        "local tables, Distributed tables in front (see ddl_cluster.py); inserts go through "
        "the Distributed tables synchronously. Needs an http(s) DSN.",
    )

    # -- the query endpoint (embedded store only) -------------------------------------------
    http_host: str = Field("127.0.0.1", description="Where the ClickHouse HTTP endpoint binds.")
    http_port: int = Field(8123, ge=0, le=65535, description="0 = no endpoint.")
    http_password: SecretStr | None = Field(
        None,
        description="The analysts' password (any user name but the admin's); unset: none, "
        "which is allowed only on a loopback address.",
    )
    http_password_file: Path | None = Field(None, description="A file holding it.")
    http_admin_user: str = Field(
        "rhythm_admin", min_length=1, description="The one user that may write and run DDL."
    )
    http_admin_password: SecretStr | None = Field(
        None, description="Unset: generated at each sink start into admin_password_file()."
    )
    http_admin_password_file: Path | None = Field(None, description="A file holding it.")
    http_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names (besides IP addresses and localhost) requests may name.",
    )
    http_allowed_origins: list[str] = Field(
        default_factory=list, description="Web origins allowed to send requests (none)."
    )
    http_max_concurrent_queries: int = Field(8, ge=1)
    http_max_queries_per_user: int = Field(4, ge=1)
    http_max_connections: int = Field(64, ge=1)
    http_max_body_bytes: int = Field(1024**3, ge=1024, description="After decompression.")
    http_max_execution_time: int = Field(60, ge=0, description="Per analyst query (s).")
    http_max_result_rows: int = Field(0, ge=0)
    http_max_result_bytes: int = Field(1024**3, ge=0)
    http_max_memory_usage: int = Field(2 * 1024**3, ge=0)
    http_max_threads: int = Field(2, ge=0)

    # -- Kafka side -------------------------------------------------------------------------
    group_id: str = SINK_GROUP
    group_instance_id: str | None = Field(
        None,
        description="Static group membership: a restarted sink gets its partitions back at "
        "once instead of after session_timeout_ms. Unique per running sink.",
    )
    session_timeout_ms: int = Field(10_000, ge=1000)
    events_topic: str = EVENTS_TOPIC
    signals_topic: str = SIGNALS_TOPIC
    alerts_topic: str = ALERTS_TOPIC
    people_topic: str = PEOPLE_TOPIC
    notifications_topic: str = NOTIFICATIONS_TOPIC
    feedback_topic: str = FEEDBACK_TOPIC
    history_topic: str = Field(
        HISTORY_TOPIC,
        description="Imported history (`rhythm backfill`), stored in events like live events; "
        "its routed events, copies and notes are skipped (stored already). Empty: not read.",
    )
    dead_letter_topic: str = DEAD_LETTERS_TOPIC
    consumer_extra: dict[str, Any] = Field(
        default_factory=dict, description="Any other librdkafka consumer setting."
    )

    # -- batching and memory ----------------------------------------------------------------
    batch_max_rows: int = Field(20_000, ge=1, description="A batch is cut at this many rows,")
    batch_max_bytes: int = Field(16 * MIB, ge=1024, description="or this many message bytes,")
    # 0.5 s, not 1 s: the freshness goal is a signal queryable within 2 s of its window
    # closing, and a quiet topic's batch waits this long (measured: p99 2.03 s at 1 s).
    batch_max_seconds: float = Field(0.5, gt=0, description="or this long after its first row.")
    buffer_max_rows: int = Field(
        100_000, ge=1, description="Rows held at most (open + waiting + writing batches)."
    )
    buffer_max_bytes: int = Field(128 * MIB, ge=1024, description="Message bytes held at most.")
    max_message_bytes: int = Field(
        1 * MIB, ge=1, description="Largest message expected (the topics' max.message.bytes)."
    )
    poll_max_messages: int = Field(2000, ge=1)

    # -- failure handling -------------------------------------------------------------------
    retry_backoff_min_s: float = Field(0.1, gt=0)
    retry_backoff_max_s: float = Field(10.0, gt=0)
    dead_letter_max_bytes: int = Field(
        64 * 1024, ge=0, description="Raw bytes kept (base64) per dead letter in the table."
    )
    shutdown_timeout_s: float = Field(
        30.0, ge=0, description="On SIGTERM: how long to keep trying to write what is buffered."
    )

    # -- observability ----------------------------------------------------------------------
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="/metrics, /healthz, /readyz; 0 = off."
    )
    stall_after_s: float = Field(
        60, gt=0, description="/healthz fails after this long without progress while input waits."
    )
    metrics_host: str = "127.0.0.1"

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @model_validator(mode="after")
    def _consistent(self) -> SinkSettings:
        # A full batch must always fit in the buffer, or the sink could stall with every
        # partition paused and no batch complete.
        if self.buffer_max_rows < self.batch_max_rows:
            raise ValueError("buffer_max_rows must be >= batch_max_rows")
        if self.buffer_max_bytes < self.batch_max_bytes + self.max_message_bytes:
            raise ValueError("buffer_max_bytes must be >= batch_max_bytes + max_message_bytes")
        if self.retry_backoff_max_s < self.retry_backoff_min_s:
            raise ValueError("retry_backoff_max_s must be >= retry_backoff_min_s")
        dsn = parse_dsn(self.resolved_dsn_text())
        if self.cluster is not None and dsn.embedded:
            raise ValueError("cluster needs a ClickHouse server DSN (http(s)://), not chdb://")
        if not _loopback(self.http_host) and self.http_port and self.analyst_password() is None:
            raise ValueError(
                f"http_host {self.http_host} is not a loopback address: set http_password "
                "(or http_password_file) so that the endpoint is not open to everyone"
            )
        return self

    # -- derived ----------------------------------------------------------------------------

    def resolved_dsn_text(self) -> str:
        return self.dsn or f"chdb://{self.data_dir / 'clickhouse'}"

    def store_dsn(self) -> Dsn:
        """The DSN with the credentials from settings or file applied."""
        dsn = parse_dsn(self.resolved_dsn_text())
        if dsn.embedded:
            return dsn
        password = _secret(self.clickhouse_password, self.clickhouse_password_file)
        return Dsn(
            dsn.kind,
            host=dsn.host,
            port=dsn.port,
            username=self.clickhouse_user or dsn.username,
            password=dsn.password if password is None else password,
            settings=dsn.settings,
        )

    def analyst_password(self) -> SecretStr | None:
        return _secret(self.http_password, self.http_password_file)

    def admin_password(self) -> SecretStr | None:
        """The configured admin password, if any (else the running sink generated one)."""
        return _secret(self.http_admin_password, self.http_admin_password_file)

    def admin_password_file(self) -> Path:
        """Where a sink writes the admin password it generated (mode 0600), for the CLI."""
        dsn = parse_dsn(self.resolved_dsn_text())
        if dsn.embedded and dsn.path != ":memory:":
            return Path(dsn.path + ".admin")
        return self.data_dir / "clickhouse.admin"

    @property
    def kind_topics(self) -> dict[Kind, str]:
        """The topic each kind of message is read from (`tables.TABLES` has its table)."""
        return {
            "events": self.events_topic,
            "signals": self.signals_topic,
            "alerts": self.alerts_topic,
            "people": self.people_topic,
            "notifications": self.notifications_topic,
            "feedback": self.feedback_topic,
        }

    @property
    def topic_kinds(self) -> dict[str, Kind]:
        """Every topic read and the kind of its messages: `kind_topics`, and the history
        lane's input, whose imported events are events too."""
        out: dict[str, Kind] = {topic: kind for kind, topic in self.kind_topics.items()}
        if self.history_topic:
            out[self.history_topic] = "events"
        return out

    @property
    def topics(self) -> list[str]:
        return list(self.topic_kinds)

    def endpoint_state_file(self) -> Path | None:
        """Where a running sink says which endpoint serves its embedded store."""
        dsn = parse_dsn(self.resolved_dsn_text())
        if not dsn.embedded or dsn.path == ":memory:":
            return None
        return Path(dsn.path + ".sink.json")

"""The notifier's settings: `RHYTHM_NOTIFIER_*` (Kafka's connection: `RHYTHM_KAFKA_*`).

Secrets (the webhook signing secret, the Slack webhook URL, which is a credential by itself,
the SMTP password, the store's password) are `SecretStr`: printed and logged as `**********`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.schemas.people import Channel
from rhythm.schemas.topics import (
    ALERTS_TOPIC,
    DEAD_LETTERS_TOPIC,
    EVENTS_TOPIC,
    FEEDBACK_TOPIC,
    NOTIFICATIONS_TOPIC,
    NOTIFIER_GROUP,
    PEOPLE_TOPIC,
)

__all__ = ["NotifierSettings", "default_data_dir"]


def default_data_dir() -> Path:
    """`<repo>/.rhythm/notifier` in a source checkout, else `<cwd>/.rhythm/notifier`."""
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file() and (root / "notifier").is_dir():
        return root / ".rhythm" / "notifier"
    return Path.cwd() / ".rhythm" / "notifier"


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RHYTHM_NOTIFIER_", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Holds the delivery ledger (state.db): one running notifier per directory.",
    )
    group_id: str = NOTIFIER_GROUP
    group_instance_id: str | None = Field(
        None,
        description="Static group membership: a restarted notifier gets its partitions back "
        "at once instead of after session_timeout_ms.",
    )
    session_timeout_ms: int = Field(10_000, ge=1000)
    alerts_topic: str = ALERTS_TOPIC
    people_topic: str = PEOPLE_TOPIC
    notifications_topic: str = NOTIFICATIONS_TOPIC
    dead_letters_topic: str = Field(
        DEAD_LETTERS_TOPIC, description="A dead delivery is also published here, for a human."
    )
    feedback_topic: str = Field(FEEDBACK_TOPIC, description="Feedback in (and from the API out).")
    events_topic: str = Field(
        EVENTS_TOPIC, description="Where a 'done' on a thread's alert becomes an event."
    )
    kinds: list[str] = Field(
        default_factory=lambda: ["silence", "unanswered", "follow_up"],
        description="Alert kinds that are delivered (resumed is good news: not by default).",
    )

    # -- routing ----------------------------------------------------------------------------
    default_queue: str = Field("queue:default", description="When nobody else is found.")
    tenant_queues: dict[str, str] = Field(default_factory=dict, description="tenant -> queue")
    internal_types: list[str] = Field(
        default_factory=lambda: ["user", "employee", "agent"],
        description="Actor types on our side (as the processors' INTERNAL_TYPES).",
    )
    engaged_top: int = Field(3, ge=0, description="Silent account: this many engaged people.")
    engaged_days: int = Field(30, ge=1, description="...over this many days before it fired.")
    clickhouse_url: str = Field(
        "http://127.0.0.1:8123", description="The store's HTTP interface (the sink's endpoint)."
    )
    clickhouse_user: str | None = None
    clickhouse_password: SecretStr | None = None
    clickhouse_database: str = "rhythm"

    # -- channels ---------------------------------------------------------------------------
    webhook_url: str | None = Field(None, description="Generic JSON webhook (signed).")
    webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 signing secret.")
    slack_webhook_url: SecretStr | None = Field(None, description="Slack incoming webhook.")
    smtp_host: str | None = None
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        "starttls", description="tls: implicit TLS (465); starttls: upgrade (587); none."
    )
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "Rhythm <rhythm@localhost>"
    smtp_ca_file: Path | None = Field(None, description="Trust this CA (else the system's).")
    request_timeout_s: float = Field(10.0, gt=0)

    # -- pacing -----------------------------------------------------------------------------
    daily_cap: int = Field(
        10, ge=0, description="Heads-ups per recipient per local day (0 = no cap)."
    )
    quiet_hours: bool = Field(True, description="Hold outside the recipient's working hours.")
    default_timezone: str = "UTC"
    default_working_hours: tuple[int, int] = (9, 18)
    default_working_days: tuple[int, ...] = (0, 1, 2, 3, 4)
    digest: bool = Field(True, description="A daily digest per person at their day's start.")
    digest_items: int = Field(10, ge=1, le=50, description="At most this many digest items.")
    digest_check_s: float = Field(
        60.0, gt=0, description="How often people whose working day started are looked for."
    )
    max_attempts: int = Field(8, ge=1, description="Then the delivery is dead-lettered.")
    retry_base_s: float = Field(2.0, gt=0, description="First retry after this, doubling,")
    retry_max_s: float = Field(300.0, gt=0, description="up to this.")
    tick_s: float = Field(0.2, gt=0, description="How often due deliveries are looked for.")

    # -- feedback (links in each heads-up, the HTTP API behind them) ------------------------
    feedback_port: int = Field(
        9468, ge=0, le=65535, description="The feedback links' HTTP API; 0 = no links, no API."
    )
    feedback_host: str = Field("127.0.0.1", description="Where the API listens.")
    feedback_url: str | None = Field(
        None,
        description="The links' base as recipients reach it (a proxy in front of the API); "
        "default http://<feedback_host>:<feedback_port>.",
    )
    feedback_secret: SecretStr | None = Field(
        None,
        description="HMAC key of the links' tokens; none: one is generated in data_dir "
        "(feedback.secret, mode 0600) and kept.",
    )
    feedback_link_ttl_s: int = Field(14 * 86_400, ge=60, description="A link works this long.")
    not_useful_step: float = Field(
        0.2, gt=0, lt=1,
        description="Each net 'not useful' of a recipient on a kind of entity closes this share "
        "of the gap between its score threshold and 1.",
    )  # fmt: skip
    not_useful_cap: float = Field(
        0.9, ge=0, le=1, description="The threshold never exceeds this: strong alerts still go."
    )
    feedback_days: int = Field(90, ge=1, description="Feedback older than this is forgotten.")

    # -- observability ----------------------------------------------------------------------
    metrics_port: int = Field(9467, ge=0, le=65535, description="/metrics, /healthz; 0 = off")
    metrics_host: str = "127.0.0.1"
    stall_after_s: float = Field(60.0, gt=0)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone: {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> NotifierSettings:
        start, end = self.default_working_hours
        if not 0 <= start < end <= 24:
            raise ValueError("default_working_hours: 0 <= start < end <= 24")
        if not self.default_working_days or any(not 0 <= d <= 6 for d in self.default_working_days):
            raise ValueError("default_working_days: one or more of 0 (Monday) to 6")
        if self.retry_max_s < self.retry_base_s:
            raise ValueError("retry_max_s must be >= retry_base_s")
        if self.webhook_url is not None and self.webhook_secret is None:
            raise ValueError("webhook_url needs webhook_secret (receivers verify signatures)")
        return self

    @property
    def channels(self) -> list[Channel]:
        out: list[Channel] = []
        if self.webhook_url:
            out.append("webhook")
        if self.slack_webhook_url is not None:
            out.append("slack")
        if self.smtp_host:
            out.append("email")
        return out

    def queue_for(self, tenant: str) -> str:
        return self.tenant_queues.get(tenant, self.default_queue)

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "state.db"

    @property
    def links_base(self) -> str | None:
        """The feedback links' base URL, or None when the API is off (no links)."""
        if not self.feedback_port:
            return None
        base = self.feedback_url or f"http://{self.feedback_host}:{self.feedback_port}"
        return base.rstrip("/")

    def feedback_key(self) -> bytes:
        """The links' signing key: the setting, else the one kept in data_dir (made once)."""
        if self.feedback_secret is not None:
            return self.feedback_secret.get_secret_value().encode()
        path = self.data_dir / "feedback.secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # made meanwhile by another process (the CLI)
                pass
            else:
                with os.fdopen(fd, "w") as out:
                    out.write(secrets.token_hex(32))
        return path.read_text(encoding="utf-8").strip().encode()

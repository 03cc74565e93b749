"""The processors' settings (env prefix `RHYTHM_PROCESSOR_`), with documented defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rhythm.processors.signals.conversation import ReplyConfig
from rhythm.processors.signals.entity import SignalConfig
from rhythm.producers.config import KafkaSettings
from rhythm.schemas import ALERTS_TOPIC, DEAD_LETTERS_TOPIC, EVENTS_TOPIC, SIGNALS_TOPIC

UPDATES_TOPIC = "rhythm.updates"


class ProcessorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RHYTHM_PROCESSOR_", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    app_id: str = Field("rhythm-processors", description="Faust app id = consumer group.")
    data_dir: Path = Field(Path(".rhythm/processors"), description="rocksdict state per worker.")
    events_topic: str = EVENTS_TOPIC
    updates_topic: str = UPDATES_TOPIC
    signals_topic: str = SIGNALS_TOPIC
    alerts_topic: str = ALERTS_TOPIC
    dead_letters_topic: str = DEAD_LETTERS_TOPIC
    updates_partitions: int = Field(4, ge=1, description="Partitions of the internal topic.")
    updates_retention_s: float = Field(
        7 * 86400, gt=0, description="How long the internal topic keeps what it carries."
    )
    replication_factor: int = Field(1, ge=1, description="For the topics the workers create.")
    window_seconds: tuple[int, ...] = Field((3600, 86400), description="Tumbling windows.")
    lateness_s: float = Field(300, ge=0, description="Allowed lateness behind the watermark.")
    late_retention_s: float = Field(
        86400, ge=0, description="How long after closing a window late events still correct it."
    )
    idle_after_s: float = Field(
        10, gt=0, description="A partition this quiet lets its watermark follow the clock."
    )
    max_future_s: float = Field(3600, ge=0, description="Events further ahead are dead letters.")
    silence_min_history: int = Field(5, ge=1)
    silence_quantile: float = Field(0.95, gt=0, le=1)
    silence_factor: float = Field(2.0, gt=0)
    silence_min_s: float = Field(60, ge=0)
    reply_min_samples: int = Field(20, ge=1)
    reply_min_rate: float = Field(0.9, gt=0, le=1)
    reply_quantile: float = Field(0.95, gt=0, le=1)
    reply_horizon_s: float = Field(7 * 86400, gt=0)
    batch_max: int = Field(2000, ge=1, description="Messages per processing batch at most.")
    batch_within_s: float = Field(0.2, gt=0, description="...or what arrived within this long.")
    tick_s: float = Field(1.0, gt=0, description="Idle-watermark tick interval.")
    session_timeout_s: float = Field(
        30, gt=0, description="A worker silent this long loses its partitions to the others."
    )
    web_port: int = Field(0, ge=0, description="Faust's own web server; 0 = off.")
    metrics_host: str = Field("127.0.0.1", description="Where /metrics binds.")
    metrics_port: int = Field(
        9465, ge=0, description="/metrics, /healthz, /readyz (health.py); 0 = off."
    )
    stall_after_s: float = Field(
        60, gt=0, description="/healthz fails after this long without progress while input waits."
    )
    metadata_max_age_s: float = Field(
        10,
        gt=0,
        description="How often the consumer refreshes topic metadata. A worker that joined "
        "while the broker restarted saw its topics missing and got no partitions until the "
        "next refresh (aiokafka's default: 5 minutes).",
    )
    reseek_after_s: float = Field(
        20,
        gt=0,
        description="A partition with input waiting but nothing delivered this long is read "
        "again from the next offset it owes (holes.py).",
    )
    health_tick_s: float = Field(1.0, gt=0, description="How often readiness and lag are updated.")
    health_check_s: float = Field(
        5, gt=0, description="How often the end offsets are asked from the broker."
    )
    log_level: str = "warn"

    def signal_config(self) -> SignalConfig:
        return SignalConfig(
            window_sizes_ms=tuple(s * 1000 for s in self.window_seconds),
            lateness_ms=int(self.lateness_s * 1000),
            late_retention_ms=int(self.late_retention_s * 1000),
            silence_min_history=self.silence_min_history,
            silence_quantile=self.silence_quantile,
            silence_factor=self.silence_factor,
            silence_min_ms=int(self.silence_min_s * 1000),
        )

    def reply_config(self) -> ReplyConfig:
        return ReplyConfig(
            lateness_ms=int(self.lateness_s * 1000),
            min_samples=self.reply_min_samples,
            min_reply_rate=self.reply_min_rate,
            delay_quantile=self.reply_quantile,
            horizon_ms=int(self.reply_horizon_s * 1000),
        )

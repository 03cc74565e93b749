"""The collector's settings: one object read from the environment (prefix
`RHYTHM_COLLECTOR_`), with the client's own settings (`RHYTHM_CLIENT_*`, `RHYTHM_KAFKA_*`)
for the producer it publishes through."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rhythm.producers.config import ClientSettings
from rhythm.sinks.settings import default_data_dir

KB = 1024


def _client_defaults() -> ClientSettings:
    """The client's settings from the environment, with a collector's defaults where the
    environment says nothing: a short linger (a request waits for its acknowledgement) and a
    delivery timeout that is not five minutes (the buffer must drain when Kafka is away)."""
    settings = ClientSettings()
    given = settings.model_fields_set
    updates: dict[str, object] = {}
    if "linger_ms" not in given:
        updates["linger_ms"] = 2.0
    if "delivery_timeout_ms" not in given:
        updates["delivery_timeout_ms"] = 60_000
    return settings.model_copy(update=updates)


class CollectorSettings(BaseSettings):
    """`rhythm collector` (docs/collector.md). Sizes are bytes; rates are events per second."""

    model_config = SettingsConfigDict(env_prefix="RHYTHM_COLLECTOR_", extra="ignore")

    host: str = Field("127.0.0.1", description="Where to listen (put a TLS proxy in front).")
    port: int = Field(8088, ge=0, le=65535, description="0 = a free port (printed when ready).")
    keys_file: Path = Field(
        default_factory=lambda: default_data_dir() / "collector-keys.json",
        description="The write keys (hashed), managed by `rhythm keys`.",
    )
    max_event_bytes: int = Field(32 * KB, ge=256, description="One event's JSON, at most.")
    max_batch_bytes: int = Field(
        500 * KB, ge=1 * KB, description="One request's body (after gzip), at most."
    )
    max_batch_events: int = Field(2500, ge=1, description="Events in one request, at most.")
    header_timeout_s: float = Field(
        10.0, gt=0, description="A connection's request line and headers (and idle keep-alive)."
    )
    body_timeout_s: float = Field(10.0, gt=0, description="Reading one request's body.")
    ack_timeout_s: float = Field(
        10.0, gt=0, description="How long a request waits for Kafka's acknowledgement (503)."
    )
    buffer_max_events: int = Field(
        50_000, ge=1, description="Events sent and not yet acknowledged, at most (then 503)."
    )
    key_rate: float = Field(5000.0, gt=0, description="Events/s per write key (token bucket).")
    key_burst: float = Field(10_000.0, ge=1, description="The per-key bucket's size.")
    tenant_rate: float = Field(10_000.0, gt=0, description="Events/s per tenant, all its keys.")
    tenant_burst: float = Field(20_000.0, ge=1, description="The per-tenant bucket's size.")
    cors_origins: list[str] = Field(
        default_factory=list,
        description='Browser origins allowed (JSON list; ["*"] = any): empty = none.',
    )
    gc_threshold: int = Field(
        50_000,
        ge=100,
        description="Allocations between young-generation collections (Python's default 700).",
    )
    kafka_stats_s: float = Field(
        0.0,
        ge=0,
        description="Log librdkafka's latency percentiles (queue, broker round trip) this "
        "often; 0 = never (benchmarks).",
    )
    server_timing: bool = Field(
        False,
        description="Answer with a Server-Timing header: each stage's milliseconds (benchmarks).",
    )
    retry_after_s: int = Field(5, ge=1, description="Retry-After of a 503.")
    refusal_delay_s: float = Field(
        0.5,
        ge=0,
        le=10,
        description="A 429 is answered this much later (not past its Retry-After): a sender "
        "that ignores Retry-After then costs a few requests a second per connection, not "
        "the collector's whole loop.",
    )
    client: ClientSettings = Field(default_factory=_client_defaults)

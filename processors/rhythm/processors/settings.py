"""The processors' settings (env prefix `RHYTHM_PROCESSOR_`), with documented defaults."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rhythm.processors.signals.calendar import BusinessCalendar
from rhythm.processors.signals.conversation import ReplyConfig
from rhythm.processors.signals.entity import SignalConfig
from rhythm.processors.signals.policy import ANY_ROLE, AlertPolicy, TenantPolicy
from rhythm.processors.signals.rhythm import SilenceConfig
from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.schemas.topics import (
    ALERTS_TOPIC,
    DEAD_LETTERS_TOPIC,
    EVENTS_TOPIC,
    HISTORY_LANE,
    HISTORY_LATER_GROUP,
    HISTORY_LATER_TOPIC,
    HISTORY_TOPIC,
    PROCESSORS_GROUP,
    SIGNALS_TOPIC,
    SINK_GROUP,
    UPDATES_TOPIC,
    lane_names,
)

SILENCE_ROLES = ("actor", "object", "target", ANY_ROLE)
HISTORY_NICE = 10
DAY_S = 86400


class TenantSettings(BaseModel):
    """One tenant's overrides (`RHYTHM_PROCESSOR_TENANTS`, JSON: {"acme": {...}}); anything
    left out is the global setting of the same name."""

    model_config = ConfigDict(extra="forbid")

    timezone: str | None = None
    working_days: list[int] | None = None
    working_hours: tuple[float, float] | None = None
    holidays: list[date] | None = None
    internal_types: list[str] | None = None
    external_types: list[str] | None = None
    queue: str | None = None
    #: Mail domains of our people: the mail connector makes addresses there internal types.
    internal_domains: list[str] | None = None


class ProcessorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RHYTHM_PROCESSOR_", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    lane: Literal["live", "history"] = Field(
        "live",
        description="live: rhythm.events in the wall clock's event time, too-late events "
        "routed to the history lane; history: rhythm.history in its own event time (the "
        "app id, input and updates topics default to the lane's), alerts marked historical.",
    )
    history_topic: str = Field(
        HISTORY_TOPIC,
        description="Where the live lane routes events it would drop as too late; empty: "
        "nowhere (counted too_late). Unused by the history lane.",
    )
    later_topic: str = Field(
        HISTORY_LATER_TOPIC,
        description="Where `rhythm backfill` puts history the live lane may still change, "
        "to be imported once it is done with it (read by `rhythm backfill --later`).",
    )
    later_group: str = Field(
        HISTORY_LATER_GROUP, description="The group that commits what `later_topic` imported."
    )
    nice: int | None = Field(
        None,
        ge=0,
        le=19,
        description="CPU niceness the worker adds to its own at start (os.nice); unset: 10 "
        "for the history lane, 0 for the live lane, so on a shared machine a backfill takes "
        "the CPU the live lane leaves (BENCHMARKS.md, the lanes section).",
    )
    handoff_topic: str = Field(
        UPDATES_TOPIC,
        description="The history lane: where the norms it learned go once its input is "
        "drained (the live lane's updates topic, which must have `updates_partitions` "
        "partitions, as the history lane's does); empty: nowhere. Unused by the live lane.",
    )
    history_lateness_s: float = Field(
        3 * DAY_S,
        ge=0,
        description="The history lane's allowed lateness (its lateness_s): what it is given "
        "is sorted (rhythm backfill) or routed from several live partitions, each in order, "
        "interleaved by the live lane's batches; within this much it is put back in order.",
    )
    # The history lane's routed events: before using one, it waits until the sink has
    # stored what the live lane had been given, then takes the stored events of the routed
    # event's windows from the store (copies.py, expansion.py).
    store_url: str = Field(
        "http://127.0.0.1:8123",
        description="The history lane's store: ClickHouse's HTTP interface (the sink's "
        "endpoint or a server); empty: routed events are used without the stored events of "
        "their windows (a window holding both is then the history lane's own events only).",
    )
    store_user: str | None = Field(None, description="The store's user (none: the default).")
    store_password: SecretStr | None = None
    store_database: str = Field("rhythm", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    sink_group: str = Field(SINK_GROUP, description="The sink whose writes the lane waits for.")
    live_events_topic: str = Field(
        EVENTS_TOPIC, description="The live lane's input, which that sink stores."
    )
    live_metrics_port: int = Field(
        9465,
        ge=0,
        description="The history lane: the live lane's /metrics on 127.0.0.1, whose stage-2 "
        "watermark says which windows it will never change again, so a routed event's "
        "windows reach to its entity's next stored event (its gap changes) when that one's "
        "windows are done; 0: not asked (those next windows keep the live lane's gap).",
    )
    copies_wait_s: float = Field(
        300,
        gt=0,
        description="How long the history lane waits for the sink and the store before it "
        "uses a routed event without its windows' stored events (logged and counted).",
    )
    app_id: str = Field(PROCESSORS_GROUP, description="Faust app id = consumer group.")
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
    max_pending: int = Field(
        32768,
        ge=16,
        le=32768,
        description="Per entity, events not yet final held at most (a hot entity's oldest "
        "half is then made final early): bounds its state whatever its rate.",
    )
    tenant_budget_per_min: int = Field(
        120_000,
        ge=0,
        description="Per tenant and source partition, events per minute of event time taken "
        "one by one; the rest of that minute is aggregated per entity and second (counts "
        "exact, gaps between seconds): one tenant's flood cannot take the others' share. "
        "0: no budget.",
    )
    # -- state that ends (see processors/README.md, "Bounded state") ----------------------
    entity_ttl_s: float = Field(
        7 * DAY_S,
        gt=0,
        description="An entity holding nothing (no window, no event pending) is forgotten "
        "this long after its last event...",
    )
    norms_ttl_s: float = Field(
        90 * DAY_S, gt=0, description="...or this long if a silence rule is given for it."
    )
    thread_ttl_s: float = Field(
        90 * DAY_S,
        gt=0,
        description="A thread with no open wait is forgotten this long after its last "
        "message, and what it taught the reply norms with it.",
    )
    rocksdb_write_buffer_mb: int = Field(
        8, ge=1, description="Per state database (one per partition): each of 2 write buffers."
    )
    rocksdb_block_cache_mb: int = Field(
        32, ge=1, description="Per state database: its block cache (reads at recovery)."
    )
    # -- who is who, and when people work (per tenant in `tenants`) ------------------------
    internal_types: list[str] = Field(
        ["user", "employee", "agent"], description="Actor types on our side."
    )
    external_types: list[str] = Field(
        ["contact", "customer", "lead", "visitor"], description="Actor types outside."
    )
    timezone: str = Field("UTC", description="IANA zone of the business calendar.")
    working_days: list[int] = Field([0, 1, 2, 3, 4], description="0 = Monday.")
    working_hours: tuple[float, float] = Field((9, 18), description="Local hours [start, end).")
    holidays: list[date] = Field(default_factory=list, description="Local dates off.")
    queue: str = Field("queue:default", description="Who owes a reply when no one is named.")
    internal_domains: list[str] = Field(
        default_factory=list,
        description="Mail domains of our people (the mail connector: addresses there are the "
        "first internal type, others the first external type); per tenant in `tenants`.",
    )
    tenants: dict[str, TenantSettings] = Field(
        default_factory=dict, description="Per-tenant overrides of the six settings above."
    )
    # -- silence ---------------------------------------------------------------------------
    silence_for: list[str] = Field(
        [
            "actor:user",
            "actor:employee",
            "actor:agent",
            "actor:contact",
            "actor:customer",
            "*:account",
        ],
        description="role:entity_type pairs that get silence alerts (role * = any).",
    )
    silence_false_alarms_per_quarter: float = Field(
        0.25, gt=0, le=90, description="Bound on chance silences per steady entity."
    )
    silence_min_gaps: int = Field(6, ge=2, description="History before the first alert.")
    silence_min_span_s: float = Field(7 * DAY_S, ge=0, description="...and its time span.")
    silence_min_s: float = Field(60, ge=0, description="A shorter quiet is never a silence.")
    silence_half_life_s: float = Field(21 * DAY_S, gt=0, description="Memory of the rates.")
    # -- unanswered / follow_up --------------------------------------------------------------
    reply_min_replies: int = Field(
        20, ge=1, description="Replies behind a reply-time norm (the kind's, else its channel's)."
    )
    reply_min_kind_replies: int = Field(5, ge=1, description="Replies a kind needs to alert.")
    reply_min_share: float = Field(
        0.8, gt=0, le=1, description="Kinds replied less often never alert."
    )
    reply_quantile: float = Field(0.99, gt=0, lt=1, description="Of the kind's reply delays...")
    reply_margin: float = Field(1.5, ge=1, description="...times this: the alert threshold.")
    reply_horizon_s: float = Field(14 * DAY_S, gt=0, description="Older waits are given up.")
    reply_recheck_min_s: float = Field(900, gt=0, description="Cold-start re-check step.")
    follow_up: bool = Field(False, description="Also alert when they owe us a reply.")
    not_replies: list[str] | None = Field(
        None, description="Verbs that are no message in a thread (default: assigned, viewed...)."
    )
    batch_max: int = Field(
        2000,
        ge=1,
        le=10_000,
        description="Messages per processing batch at most (its seen-id record stays under "
        "the message limit).",
    )
    batch_within_s: float = Field(0.2, gt=0, description="...or what arrived within this long.")
    commit_interval_s: float = Field(
        2.8,
        gt=0,
        description="Finished input is committed this often (Faust's default).",
    )
    tick_s: float = Field(1.0, gt=0, description="Idle-watermark tick interval.")
    session_timeout_s: float = Field(
        30,
        gt=0,
        le=90,
        description="A worker silent this long loses its partitions to the others (at most "
        "Faust's request timeout, 90 s).",
    )
    instance_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Kafka static membership (group.instance.id): a worker restarted under "
        "the same id takes its partitions back at once, not after the session timeout. Each "
        "worker of the group needs its own stable id (a StatefulSet pod's name); one that "
        "stops for good keeps its partitions from the others until the session timeout.",
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

    @model_validator(mode="after")
    def _lane_defaults(self) -> Self:
        """The history lane's own names, unless given (tests give their own)."""
        if self.lane == HISTORY_LANE:
            events, updates, group = lane_names(self.lane)
            given = self.model_fields_set
            if "app_id" not in given:
                self.app_id = group
            if "events_topic" not in given:
                self.events_topic = events
            if "updates_topic" not in given:
                self.updates_topic = updates
            self.lateness_s = self.history_lateness_s
        return self

    @property
    def niceness(self) -> int:
        if self.nice is not None:
            return self.nice
        return HISTORY_NICE if self.lane == HISTORY_LANE else 0

    @property
    def hands_off(self) -> bool:
        """Whether learned norms go to the live lane (the history lane, with a topic)."""
        return self.lane == HISTORY_LANE and bool(self.handoff_topic)

    @property
    def routes(self) -> bool:
        """Whether too-late events go to the history lane (the live lane, with a topic)."""
        return self.lane != HISTORY_LANE and bool(self.history_topic)

    @model_validator(mode="after")
    def _check_policy(self) -> Self:
        self.alert_policy()  # a bad calendar, overlapping sides...: an error at start
        if self.thread_ttl_s <= self.reply_horizon_s:
            raise ValueError("thread_ttl_s must be longer than reply_horizon_s")
        if self.entity_ttl_s <= self.lateness_s + self.late_retention_s:
            raise ValueError("entity_ttl_s must be longer than lateness_s + late_retention_s")
        return self

    def signal_config(self) -> SignalConfig:
        return SignalConfig(
            window_sizes_ms=tuple(s * 1000 for s in self.window_seconds),
            lateness_ms=int(self.lateness_s * 1000),
            late_retention_ms=int(self.late_retention_s * 1000),
            max_pending=self.max_pending,
            idle_ttl_ms=int(self.entity_ttl_s * 1000),
            norms_ttl_ms=int(self.norms_ttl_s * 1000),
        )

    def reply_config(self) -> ReplyConfig:
        cfg = ReplyConfig(
            lateness_ms=int(self.lateness_s * 1000),
            min_replies=self.reply_min_replies,
            min_kind_replies=self.reply_min_kind_replies,
            min_reply_share=self.reply_min_share,
            quantile=self.reply_quantile,
            margin=self.reply_margin,
            horizon_ms=int(self.reply_horizon_s * 1000),
            recheck_min_ms=int(self.reply_recheck_min_s * 1000),
            follow_up=self.follow_up,
            ttl_ms=int(self.thread_ttl_s * 1000),
        )
        if self.not_replies is not None:
            cfg = dataclasses.replace(cfg, not_replies=frozenset(self.not_replies))
        return cfg

    def alert_policy(self) -> AlertPolicy:
        return AlertPolicy(
            default=self._tenant_policy("default", TenantSettings()),
            tenants={t: self._tenant_policy(t, o) for t, o in self.tenants.items()},
            silence_for=frozenset(_silence_pair(p) for p in self.silence_for),
            silence=SilenceConfig(
                false_alarms_per_quarter=self.silence_false_alarms_per_quarter,
                min_gaps=self.silence_min_gaps,
                min_span_ms=int(self.silence_min_span_s * 1000),
                min_quiet_ms=int(self.silence_min_s * 1000),
                half_life_ms=int(self.silence_half_life_s * 1000),
            ),
        )

    def _tenant_policy(self, tenant: str, o: TenantSettings) -> TenantPolicy:
        internal = frozenset(
            o.internal_types if o.internal_types is not None else self.internal_types
        )
        external = frozenset(
            o.external_types if o.external_types is not None else self.external_types
        )
        if internal & external:
            raise ValueError(
                f"tenant {tenant}: types both internal and external: {sorted(internal & external)}"
            )
        hours = o.working_hours if o.working_hours is not None else self.working_hours
        days = o.working_days if o.working_days is not None else self.working_days
        holidays = o.holidays if o.holidays is not None else self.holidays
        calendar = BusinessCalendar(
            tz=o.timezone or self.timezone,
            working_days=frozenset(days),
            start_hour=hours[0],
            end_hour=hours[1],
            holidays=frozenset(holidays),
        )  # raises CalendarError (a ValueError) with what is wrong
        return TenantPolicy(calendar, internal, external, o.queue or self.queue)


def _silence_pair(text: str) -> tuple[str, str]:
    role, sep, entity_type = text.partition(":")
    if not sep or role not in SILENCE_ROLES or not entity_type or len(entity_type) > 256:
        raise ValueError(
            f"silence_for: {text!r} is not role:entity_type with role one of "
            f"{', '.join(SILENCE_ROLES)}"
        )
    return role, entity_type

"""Every Kafka topic and consumer-group name Rhythm uses, and how its topics are created: the
one source for them (settings take their defaults from here). Replication and
min.insync.replicas are the broker manager's business (they depend on the cluster size), so
they are not set here."""

from __future__ import annotations

from dataclasses import dataclass, field

EVENTS_TOPIC = "rhythm.events"
SIGNALS_TOPIC = "rhythm.signals"
ALERTS_TOPIC = "rhythm.alerts"
DEAD_LETTERS_TOPIC = "rhythm.dead_letters"
#: The people directory: `Client.identify()` publishes one record per (tenant, actor), keyed
#: by `tenant:type:id`; compacted, so the latest traits of each person stay for good.
PEOPLE_TOPIC = "rhythm.people"
#: The notifier's delivery records, keyed by the idempotency key (alert, recipient, channel);
#: compacted: the latest state of each delivery stays.
NOTIFICATIONS_TOPIC = "rhythm.notifications"
#: Feedback on delivered heads-ups (done, snooze, not useful; rhythm.schemas.feedback), keyed
#: by alert id so one alert's feedback keeps its order.
FEEDBACK_TOPIC = "rhythm.feedback"

#: The processors' internal topic between their two stages (created by the processors).
UPDATES_TOPIC = "rhythm.updates"

#: The two lanes of processing (ARCHITECTURE.md, "the history lane"): `live` reads
#: `rhythm.events` in the wall clock's event time; `history` reads `rhythm.history` (what
#: `rhythm backfill` publishes and what the live lane would drop as too late) in its own
#: event time, with its own group, updates topic and tables. Both write the same signals and
#: alerts topics.
LIVE_LANE = "live"
HISTORY_LANE = "history"
LANES = (LIVE_LANE, HISTORY_LANE)
#: The history lane's input: one partition, so its watermark is the one stream's newest
#: event time, in the order the history was published (sorted by `rhythm backfill`).
HISTORY_TOPIC = "rhythm.history"
HISTORY_UPDATES_TOPIC = "rhythm.history.updates"
#: History `rhythm backfill` could not import yet, in windows the live lane may still change
#: (about the last day): one partition, wire-format events in the order published; imported
#: through the history lane, as `rhythm backfill` imports, once the live lane is done with
#: those windows (`rhythm up` looks every minute; `rhythm backfill --later` once). Its group
#: commits what was imported. Besides history, it holds stored events an import changed the
#: first gap of, in windows the live lane still kept (header `HISTORY_KIND_HEADER`:
#: `KIND_NEXT`): imported again, from the store, once it is done with them.
HISTORY_LATER_TOPIC = "rhythm.history.later"
HISTORY_LATER_GROUP = "rhythm-history-later"
#: What a message on `rhythm.history` is besides history of its own (no header: an imported
#: event, which the sink stores like a live one). The sink stores none of these.
#: - `routed`: a live event the live lane routed as too late (stored from `rhythm.events`);
#:   `routed-expanded` once the history lane has brought in its windows' stored events;
#: - `copy`: an event already stored, re-sent so that the history lane sees every event of
#:   the windows it re-emits; it counts only for the entity keys in `HISTORY_KEYS_HEADER`;
#: - `note`: an entity's previous stored event: only its time is noted, for those keys
#:   (the first gap of what follows);
#: - `rewind`: the value is JSON {"tenant": ..., "epoch": n}: the lane forgets that tenant's
#:   state and computes it again from what follows (an import older than what the lane made
#:   final for the tenant: `rhythm backfill` re-sends the tenant's stored events with it);
#: - `replay`: an event already stored, re-sent whole after a `rewind`: it counts for every
#:   key, as the event did when it came.
HISTORY_KIND_HEADER = "rhythm-history-kind"
#: The entity keys (`rhythm.schemas.keys`) a `copy` or a `note` is for, newline-separated.
HISTORY_KEYS_HEADER = "rhythm-history-keys"
KIND_ROUTED = "routed"
KIND_ROUTED_EXPANDED = "routed-expanded"
KIND_COPY = "copy"
KIND_NOTE = "note"
KIND_NEXT = "next"  # on the later topic only (above)
KIND_REWIND = "rewind"
KIND_REPLAY = "replay"

#: The processors' two stages, by one name each: the Faust agent, its table (whose
#: changelog is `changelog_topic(app_id, stage)`) and the `stage` label of their metrics.
#: Stage 1 reads events and explodes them into per-entity updates; stage 2 turns updates
#: into signals and alerts.
STAGE1 = "stage1"
STAGE2 = "stage2"

#: Consumer groups (the processors' is also their Faust app id).
PROCESSORS_GROUP = "rhythm-processors"
HISTORY_GROUP = "rhythm-history"
SINK_GROUP = "rhythm-sink"
NOTIFIER_GROUP = "rhythm-notifier"

#: What the sink writes to ClickHouse by default (the history lane's input: its imported
#: events, into events).
SINK_TOPICS = (EVENTS_TOPIC, SIGNALS_TOPIC, ALERTS_TOPIC, HISTORY_TOPIC)

_DAY_MS = 24 * 60 * 60 * 1000


def lane_names(lane: str) -> tuple[str, str, str]:
    """(input topic, updates topic, group = Faust app id) of a lane."""
    if lane == HISTORY_LANE:
        return HISTORY_TOPIC, HISTORY_UPDATES_TOPIC, HISTORY_GROUP
    return EVENTS_TOPIC, UPDATES_TOPIC, PROCESSORS_GROUP


def changelog_topic(app_id: str, stage: str) -> str:
    """The changelog of a stage's Faust table (Faust names it so: `<app>-<table>-changelog`)."""
    return f"{app_id}-{stage}-changelog"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def _retention(days: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(days * _DAY_MS)}


DEFAULT_TOPICS: list[TopicSpec] = [
    # Events are keyed by tenant/context, so partitions bound the processors' parallelism.
    # A week of raw events lets processors be rebuilt or replayed after an outage; ClickHouse
    # keeps the long-term copy. Message time is the producer's (CreateTime), as sent.
    TopicSpec(
        EVENTS_TOPIC,
        4,
        {**_retention(7), "message.timestamp.type": "CreateTime", "max.message.bytes": "1048576"},
    ),
    # History waiting for (or routed to) the history lane: the events topic's week.
    TopicSpec(
        HISTORY_TOPIC,
        1,
        {**_retention(7), "message.timestamp.type": "CreateTime", "max.message.bytes": "1048576"},
    ),
    # Signals are derived and can be recomputed from events: the same week.
    TopicSpec(SIGNALS_TOPIC, 4, _retention(7)),
    # Alerts are few and people look back at them: a month.
    TopicSpec(ALERTS_TOPIC, 2, _retention(30)),
    # Dead letters wait for a human to look: a month; one partition keeps them in order.
    TopicSpec(DEAD_LETTERS_TOPIC, 1, _retention(30)),
    # Directory and delivery state: compacted (latest per key wins), never expired.
    TopicSpec(PEOPLE_TOPIC, 2, {"cleanup.policy": "compact"}),
    TopicSpec(NOTIFICATIONS_TOPIC, 2, {"cleanup.policy": "compact"}),
    # Feedback is what recipients said: kept a year (the store keeps it for good), so the
    # notifier and the report can always re-read it.
    TopicSpec(FEEDBACK_TOPIC, 2, _retention(365)),
]

"""What the sink stores: one module per table family, each a table definition (columns,
engine, keys) and a pure `process(message) -> Row | DeadLetter`; and this registry, which
maps each kind of message (one topic each) to its table and processor.

The consumer, the batcher and the writer know tables only through `TABLES`: a new table fed
by a topic is a new module here, one entry below, a topic in `SinkSettings.kind_topics` and a
migration (`migrations.py`) that creates it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from rhythm.sinks.tables import alerts, events, feedback, notifications, people, signals
from rhythm.sinks.tables.alerts import ALERTS
from rhythm.sinks.tables.dead_letters import DEAD_LETTERS
from rhythm.sinks.tables.definition import Table
from rhythm.sinks.tables.events import ENTITY_EVENTS, EVENTS
from rhythm.sinks.tables.feedback import FEEDBACK
from rhythm.sinks.tables.notifications import NOTIFICATIONS
from rhythm.sinks.tables.people import PEOPLE
from rhythm.sinks.tables.rows import Kind, Message, Outcome
from rhythm.sinks.tables.schema_migrations import SCHEMA_MIGRATIONS
from rhythm.sinks.tables.signals import SIGNALS

__all__ = [
    "ALERTS",
    "DATA_TABLES",
    "DEAD_LETTERS",
    "DEAD_LETTER_REASONS",
    "ENTITY_EVENTS",
    "EVENTS",
    "FEEDBACK",
    "NOTIFICATIONS",
    "PEOPLE",
    "SCHEMA_MIGRATIONS",
    "SIGNALS",
    "TABLES",
    "TopicTable",
]


@dataclass(frozen=True)
class TopicTable:
    """Where one kind of message goes: its table, and the processor that makes its rows."""

    table: Table
    process: Callable[[Message], Outcome]
    #: every reason `process` gives a dead letter (a bounded metric label)
    reasons: tuple[str, ...]
    #: the column holding the row's event time (the freshness histogram measures from it)
    event_time: str

    def __post_init__(self) -> None:
        if self.event_time not in self.table.column_names:
            raise ValueError(f"{self.table.name} has no column {self.event_time}")

    @property
    def event_time_index(self) -> int:
        return self.table.column_names.index(self.event_time)


TABLES: Mapping[Kind, TopicTable] = MappingProxyType(
    {
        "events": TopicTable(EVENTS, events.process, events.REASONS, "occurred_at"),
        "signals": TopicTable(SIGNALS, signals.process, signals.REASONS, "last_event_at"),
        "alerts": TopicTable(ALERTS, alerts.process, alerts.REASONS, "fired_at"),
        "people": TopicTable(PEOPLE, people.process, people.REASONS, "updated_at"),
        "notifications": TopicTable(
            NOTIFICATIONS, notifications.process, notifications.REASONS, "updated_at"
        ),
        "feedback": TopicTable(FEEDBACK, feedback.process, feedback.REASONS, "at"),
    }
)

#: Every reason a message can be dead-lettered for (a bounded metric label).
DEAD_LETTER_REASONS: tuple[str, ...] = tuple(
    dict.fromkeys(reason for t in TABLES.values() for reason in t.reasons)
)

#: every table holding data, in the order they were created
DATA_TABLES: tuple[Table, ...] = (
    EVENTS, ENTITY_EVENTS, SIGNALS, ALERTS, DEAD_LETTERS, PEOPLE, NOTIFICATIONS, FEEDBACK,
)  # fmt: skip

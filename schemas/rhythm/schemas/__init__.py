"""rhythm.schemas: the event contract (canonical JSON, Avro wire record, topics)."""

from rhythm.schemas.catalogue import CatalogueError, SchemaCatalogue, SchemaVersion
from rhythm.schemas.errors import ContractError, WireError, WireReason, format_validation_error
from rhythm.schemas.event import (
    Entity,
    EntityDict,
    Event,
    EventDict,
    WireRecord,
    format_timestamp,
    validate_record,
)
from rhythm.schemas.json_codec import event_from_json_line
from rhythm.schemas.topics import (
    ALERTS_TOPIC,
    DEAD_LETTERS_TOPIC,
    DEFAULT_TOPICS,
    EVENTS_TOPIC,
    FEEDBACK_TOPIC,
    NOTIFICATIONS_TOPIC,
    PEOPLE_TOPIC,
    SIGNALS_TOPIC,
    TopicSpec,
)
from rhythm.schemas.wire import CURRENT_SCHEMA_ID, decode_event, encode_event, schema_json

__all__ = [
    "ALERTS_TOPIC",
    "CURRENT_SCHEMA_ID",
    "DEAD_LETTERS_TOPIC",
    "DEFAULT_TOPICS",
    "EVENTS_TOPIC",
    "FEEDBACK_TOPIC",
    "NOTIFICATIONS_TOPIC",
    "PEOPLE_TOPIC",
    "SIGNALS_TOPIC",
    "CatalogueError",
    "ContractError",
    "Entity",
    "EntityDict",
    "Event",
    "EventDict",
    "SchemaCatalogue",
    "SchemaVersion",
    "TopicSpec",
    "WireError",
    "WireReason",
    "WireRecord",
    "decode_event",
    "encode_event",
    "event_from_json_line",
    "format_timestamp",
    "format_validation_error",
    "schema_json",
    "validate_record",
]

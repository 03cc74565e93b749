"""The event: the canonical JSON shape (`Event`, `EventDict`) and the flat wire record.

Two ways in, one set of rules (`rules.py`):
- `Event.model_validate(data)`: the model, for code that wants attributes and datetimes.
- `validate_record(data)`: the fast path. It validates the same input against `EventDict`
  (a TypedDict with the same field types: no model objects to build) and flattens it straight
  into the wire record. tests/unit/test_model_avro_agree.py proves both agree. The client
  goes one step further: `validate_event_dict(data)`, then `wire.encode_validated` writes the
  bytes of that record without building it.
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, NotRequired, Self, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic import with_config as _with_config

# pydantic needs typing_extensions' TypedDict before Python 3.12 (a pydantic dependency).
# No `from __future__ import annotations` here: TypedDict's __required_keys__ needs the
# NotRequired[...] annotations evaluated.
from typing_extensions import TypedDict

from rhythm.schemas import rules
from rhythm.schemas.errors import ContractError

# The model keeps timestamps in datetime.UTC, truncated to the millisecond: what the wire keeps,
# so that model -> record -> model is the identity.
UtcTimestamp = Annotated[rules.Timestamp, AfterValidator(rules.to_utc_millis)]

_FORBID = ConfigDict(extra="forbid")


class WireRecord(TypedDict):
    """The flat Avro record of the current schema (avro/event-v1.avsc); times in epoch ms."""

    event_id: str
    tenant: str
    occurred_at: int
    sent_at: int | None
    actor_type: str
    actor_id: str
    verb: str
    object_type: str | None
    object_id: str | None
    target_type: str | None
    target_id: str | None
    channel: str | None
    context_id: str | None
    in_reply_to: str | None
    tags: list[str]
    weight: float
    properties: dict[str, str | int | float | bool]


class Entity(BaseModel):
    """Who or what: `{"type": "user", "id": "u-42"}`."""

    model_config = _FORBID

    type: rules.EntityPart
    id: rules.EntityPart


class Event(BaseModel):
    """One interaction, in the canonical JSON shape. See schemas/README.md for the rules."""

    model_config = _FORBID

    event_id: rules.EventId | None = None
    tenant: rules.Tenant
    occurred_at: UtcTimestamp
    sent_at: UtcTimestamp | None = None
    actor: Entity
    verb: rules.Verb
    object: Entity | None = None
    target: Entity | None = None
    channel: rules.Channel | None = None
    context_id: rules.Ref | None = None
    in_reply_to: rules.Ref | None = None
    tags: rules.Tags = Field(default_factory=list)
    weight: rules.Weight = 1.0
    properties: rules.Properties = Field(default_factory=dict)

    def to_record(self) -> WireRecord:
        """The flat Avro wire record. The event_id must be set (the client assigns one)."""
        if self.event_id is None:
            raise ContractError(
                "event_id: required on the wire (the client assigns a UUIDv7 when absent)"
            )
        obj, target, sent_at = self.object, self.target, self.sent_at
        return {
            "event_id": self.event_id,
            "tenant": self.tenant,
            "occurred_at": rules.epoch_millis(self.occurred_at),
            "sent_at": None if sent_at is None else rules.epoch_millis(sent_at),
            "actor_type": self.actor.type,
            "actor_id": self.actor.id,
            "verb": self.verb,
            "object_type": None if obj is None else obj.type,
            "object_id": None if obj is None else obj.id,
            "target_type": None if target is None else target.type,
            "target_id": None if target is None else target.id,
            "channel": self.channel,
            "context_id": self.context_id,
            "in_reply_to": self.in_reply_to,
            "tags": list(self.tags),
            "weight": self.weight,
            "properties": dict(self.properties),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """The event a wire record holds, validated (records may come from other producers)."""
        data = {
            "event_id": record.get("event_id"),
            "tenant": record.get("tenant"),
            "occurred_at": _timestamp(record.get("occurred_at")),
            "sent_at": _timestamp(record.get("sent_at")),
            "actor": _entity(record, "actor", required=True),
            "verb": record.get("verb"),
            "object": _entity(record, "object"),
            "target": _entity(record, "target"),
            "channel": record.get("channel"),
            "context_id": record.get("context_id"),
            "in_reply_to": record.get("in_reply_to"),
            "tags": record.get("tags", []),
            "weight": record.get("weight", 1.0),
            "properties": record.get("properties", {}),
        }
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ContractError.from_validation_error(exc) from exc

    def to_json_dict(self) -> dict[str, Any]:
        """Canonical JSON (None fields left out; timestamps as `...T12:00:00.123Z`)."""
        out: dict[str, Any] = {}
        if self.event_id is not None:
            out["event_id"] = self.event_id
        out["tenant"] = self.tenant
        out["occurred_at"] = format_timestamp(self.occurred_at)
        if self.sent_at is not None:
            out["sent_at"] = format_timestamp(self.sent_at)
        out["actor"] = {"type": self.actor.type, "id": self.actor.id}
        out["verb"] = self.verb
        for name in ("object", "target"):
            entity: Entity | None = getattr(self, name)
            if entity is not None:
                out[name] = {"type": entity.type, "id": entity.id}
        for name in ("channel", "context_id", "in_reply_to"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["tags"] = list(self.tags)
        out["weight"] = self.weight
        out["properties"] = dict(self.properties)
        return out


def format_timestamp(value: datetime) -> str:
    """`2026-10-01T12:00:00.123Z` (UTC, milliseconds)."""
    value = rules.to_utc_millis(value)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


def _timestamp(value: Any) -> Any:
    # The wire keeps epoch ms; anything else is left for validation to reject.
    if type(value) is int:
        try:
            return rules.from_epoch_millis(value)
        except OverflowError:
            return value
    return value


def _entity(record: Mapping[str, Any], name: str, *, required: bool = False) -> Any:
    kind, ident = record.get(f"{name}_type"), record.get(f"{name}_id")
    if kind is None and ident is None and not required:
        return None
    return {"type": kind, "id": ident}


# -- the fast path ------------------------------------------------------------------------------
@_with_config(_FORBID)
class EntityDict(TypedDict):
    type: rules.EntityPart
    id: rules.EntityPart


@_with_config(_FORBID)
class EventDict(TypedDict):
    """The canonical JSON input, as a TypedDict: the same fields and rules as `Event`."""

    event_id: NotRequired[rules.EventId | None]
    tenant: rules.Tenant
    occurred_at: rules.Timestamp
    sent_at: NotRequired[rules.Timestamp | None]
    actor: EntityDict
    verb: rules.Verb
    object: NotRequired[EntityDict | None]
    target: NotRequired[EntityDict | None]
    channel: NotRequired[rules.Channel | None]
    context_id: NotRequired[rules.Ref | None]
    in_reply_to: NotRequired[rules.Ref | None]
    tags: NotRequired[rules.Tags]
    weight: NotRequired[rules.Weight]
    properties: NotRequired[rules.Properties]


EVENT_DICT_ADAPTER: TypeAdapter[EventDict] = TypeAdapter(EventDict)
_validate_event_dict = EVENT_DICT_ADAPTER.validator.validate_python


def validate_record(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate canonical JSON input and return its wire record, without building an Event.

    The record's event_id is None when the input has none: the caller assigns one before
    `encode_event`. Raises ContractError naming each field and rule broken.
    """
    return record_of(validate_event_dict(data))


def validate_event_dict(data: Mapping[str, Any]) -> EventDict:
    """Validate canonical JSON input against EventDict; raises ContractError like
    `validate_record`. What it returns is what `rhythm.schemas.wire.encode_validated` takes."""
    try:
        return cast(EventDict, _validate_event_dict(data))
    except ValidationError as exc:
        raise ContractError.from_validation_error(exc) from exc


def record_of(event: Mapping[str, Any]) -> dict[str, Any]:
    """The wire record of a validated EventDict (event_id None when it has none)."""
    get = event.get
    actor = event["actor"]
    obj, target, sent_at = get("object"), get("target"), get("sent_at")
    return {
        "event_id": get("event_id"),
        "tenant": event["tenant"],
        "occurred_at": (event["occurred_at"] - rules.EPOCH) // rules.ONE_MS,
        "sent_at": None if sent_at is None else (sent_at - rules.EPOCH) // rules.ONE_MS,
        "actor_type": actor["type"],
        "actor_id": actor["id"],
        "verb": event["verb"],
        "object_type": None if obj is None else obj["type"],
        "object_id": None if obj is None else obj["id"],
        "target_type": None if target is None else target["type"],
        "target_id": None if target is None else target["id"],
        "channel": get("channel"),
        "context_id": get("context_id"),
        "in_reply_to": get("in_reply_to"),
        "tags": get("tags") or [],
        "weight": get("weight", 1.0),
        "properties": get("properties") or {},
    }

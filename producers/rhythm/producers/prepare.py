"""Turn what a caller gives `track()`/`send()` into a validated wire record (or straight into
its wire bytes, `send()`'s path) and its key.

Pure: no I/O, so the rules are unit-tested without a broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import uuid_utils
from pydantic import ValidationError

from rhythm.schemas import (
    ContractError,
    Entity,
    Event,
    encode_event,
    format_validation_error,
    validate_record,
)
from rhythm.schemas.event import EVENT_DICT_ADAPTER, validate_event_dict
from rhythm.schemas.people import Person, Traits
from rhythm.schemas.wire import encode_validated

EntityLike = Mapping[str, str] | tuple[str, str] | Entity

_ENTITY_ROLES = ("actor", "object", "target")
_validate_event_dict = EVENT_DICT_ADAPTER.validator.validate_python


def prepare_event(event: Mapping[str, Any] | Event) -> tuple[dict[str, Any], str]:
    """Validate `event` (canonical JSON shape) and return (Avro wire record, partition key).

    Assigns a UUIDv7 `event_id` when the event has none. Raises ContractError.
    """
    if isinstance(event, Event):
        if event.event_id is None:
            event = event.model_copy(update={"event_id": str(uuid_utils.uuid7())})
        record: dict[str, Any] = dict(event.to_record())
    else:
        record = validate_record(_entity_pairs_as_dicts(event))
        if record["event_id"] is None:
            record["event_id"] = str(uuid_utils.uuid7())
    return record, partition_key(record)


def prepare_payload(event: Mapping[str, Any] | Event, sent_at: int) -> tuple[bytes, str, str]:
    """What `Client.send()` publishes: (payload, partition key, event_id).

    The payload is `encode_event()` of `prepare_event(event)`'s record with `sent_at` set:
    the same bytes, but a dict event goes from validation straight to bytes, without the
    record in between (the client's per-event cost). Raises ContractError.
    """
    if type(event) is not dict and isinstance(event, Event):  # the dict test is the cheap one
        record, key = prepare_event(event)
        record["sent_at"] = sent_at
        return encode_event(record), key, record["event_id"]
    refused: ValidationError | None = None
    try:
        valid = _validate_event_dict(event)  # validate_event_dict's work, one call fewer
    except ValidationError as exc:
        refused = exc
    if refused is not None:
        # (type, id) pairs and Entity models fail as entities: converted only then, so dicts
        # pay nothing for them, and the errors are those of the converted event, as in
        # prepare_event (a bad pair's error is raised out here, not chained to the first
        # validation's).
        paired = _entity_pairs_as_dicts(event)
        if paired is event:
            raise ContractError.from_validation_error(refused) from refused
        valid = validate_event_dict(paired)
    event_id = valid.get("event_id") or str(uuid_utils.uuid7())
    actor = valid["actor"]
    key = f"{valid['tenant']}:{actor['type']}:{actor['id']}"
    return encode_validated(valid, event_id, sent_at), key, event_id


def _entity_pairs_as_dicts(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """(type, id) pairs and `Entity` models of the entity roles as dicts (`EntityLike`)."""
    for role in _ENTITY_ROLES:
        value = data.get(role)
        if isinstance(value, tuple | Entity):
            data = {**data, role: entity_as_dict(role, value)}
    return data


def partition_key(record: Mapping[str, Any]) -> str:
    """One actor's events share a key, so Kafka keeps their order (one partition)."""
    return f"{record['tenant']}:{record['actor_type']}:{record['actor_id']}"


def entity_as_dict(role: str, entity: Any) -> Any:
    """A (type, id) pair or an `Entity` as the entity dict; anything else as it is
    (validation judges it)."""
    if isinstance(entity, tuple):
        return _entity_from_pair(role, entity)
    if isinstance(entity, Entity):
        return {"type": entity.type, "id": entity.id}
    return entity


def _entity_from_pair(role: str, pair: tuple[Any, ...]) -> dict[str, Any]:
    if len(pair) != 2:
        raise ContractError(f"{role}: a (type, id) pair must have 2 items (got {len(pair)})")
    return {"type": pair[0], "id": pair[1]}


def make_person(
    tenant: str, actor: EntityLike, traits: Mapping[str, Any] | Traits, updated_at: int
) -> Person:
    """A directory record for `identify()`; raises ContractError naming the bad field."""
    if isinstance(actor, tuple):
        actor = _entity_from_pair("actor", actor)
    if isinstance(actor, Entity):
        actor_type, actor_id = actor.type, actor.id
    else:
        actor_type, actor_id = actor.get("type", ""), actor.get("id", "")
    try:
        return Person(
            tenant=tenant,
            actor_type=actor_type,
            actor_id=actor_id,
            traits=traits if isinstance(traits, Traits) else Traits.model_validate(dict(traits)),
            updated_at=updated_at,
        )
    except ValidationError as exc:
        raise ContractError(format_validation_error(exc)) from exc

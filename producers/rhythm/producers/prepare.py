"""Turn what a caller gives `track()`/`send()` into a validated wire record and its key.

Pure: no I/O, so the rules are unit-tested without a broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import uuid_utils
from pydantic import ValidationError

from rhythm.schemas import ContractError, Entity, Event, format_validation_error

EntityLike = Mapping[str, str] | tuple[str, str] | Entity

_ENTITY_ROLES = ("actor", "object", "target")


def prepare_event(event: Mapping[str, Any] | Event) -> tuple[dict[str, Any], str]:
    """Validate `event` (canonical JSON shape) and return (Avro wire record, partition key).

    Assigns a UUIDv7 `event_id` when the event has none. Raises ContractError.
    """
    if isinstance(event, Event):
        model = event
    else:
        data = dict(event)
        for role in _ENTITY_ROLES:
            value = data.get(role)
            if isinstance(value, tuple):
                data[role] = _entity_from_pair(role, value)
        try:
            model = Event.model_validate(data)
        except ValidationError as exc:
            raise ContractError(format_validation_error(exc)) from None
    record = model.to_record(event_id=model.event_id or str(uuid_utils.uuid7()))
    return record, partition_key(record)


def partition_key(record: Mapping[str, Any]) -> str:
    """One actor's events share a key, so Kafka keeps their order (one partition)."""
    return f"{record['tenant']}:{record['actor_type']}:{record['actor_id']}"


def _entity_from_pair(role: str, pair: tuple[Any, ...]) -> dict[str, Any]:
    if len(pair) != 2:
        raise ContractError(f"{role}: a (type, id) pair must have 2 items (got {len(pair)})")
    return {"type": pair[0], "id": pair[1]}

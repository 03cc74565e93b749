"""The contract's rules for a decoded wire record, for the consumers of the events topic.

The Avro schema fixes the shape of a record but not its rules: a producer that is not the
Rhythm client (kcat, another language, a bug) can write a well-framed record with a NaN
weight, the tenant `ACME`, an actor id of 100 kB or 200 properties. The processors and the
sink call `record_problem` on every record they decode and dead-letter those (reason
`invalid_event`) instead of counting or storing them.

The rules are the ones of `rules.py` (the same annotated types as `EventDict`), declared over
the flat wire shape and run by pydantic-core: a few microseconds per record.
"""

from typing import Annotated, Any

from pydantic import Field, GetPydanticSchema, TypeAdapter, ValidationError
from pydantic import with_config as _with_config

# See event.py: pydantic needs typing_extensions' TypedDict before Python 3.12, and no
# `from __future__ import annotations` here.
from pydantic_core import core_schema
from typing_extensions import TypedDict

from rhythm.schemas import rules
from rhythm.schemas.errors import format_validation_error

__all__ = ["record_problem"]

_LATEST_MS = rules.epoch_millis(rules.LATEST)
# Epoch ms from 1970 (inclusive) to 2200 (exclusive), as the canonical timestamps.
WireTime = Annotated[int, Field(strict=True, ge=0, lt=_LATEST_MS)]
# A UUID in its canonical text (the client writes lowercase; the sink stores a UUID column).
WireEventId = Annotated[
    str,
    GetPydanticSchema(
        lambda _source, _handler: core_schema.custom_error_schema(
            core_schema.str_schema(strict=True, pattern=rules.UUID_PATTERN),
            custom_error_type="uuid",
            custom_error_message=rules.UUID_RULE,
        )
    ),
]


@_with_config({"extra": "forbid"})
class WireRecordRules(TypedDict):
    event_id: WireEventId
    tenant: rules.Tenant
    occurred_at: WireTime
    sent_at: WireTime | None
    actor_type: rules.EntityPart
    actor_id: rules.EntityPart
    verb: rules.Verb
    object_type: rules.EntityPart | None
    object_id: rules.EntityPart | None
    target_type: rules.EntityPart | None
    target_id: rules.EntityPart | None
    channel: rules.Channel | None
    context_id: rules.Ref | None
    in_reply_to: rules.Ref | None
    tags: rules.Tags
    weight: rules.Weight
    properties: rules.Properties


_validate = TypeAdapter(WireRecordRules).validator.validate_python


def record_problem(record: Any) -> str | None:
    """None if the decoded record keeps the contract, else what it breaks (field: rule)."""
    try:
        _validate(record)
    except ValidationError as exc:
        return format_validation_error(exc)
    return None

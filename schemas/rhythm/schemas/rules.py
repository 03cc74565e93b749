"""The event contract's field rules, in one place.

`Event` (the model) and `EventDict` (the TypedDict behind the fast `validate_record`) are both
declared with the types below, so a rule changes in exactly one spot. Rules are pydantic-core
constraints and schemas rather than Python validators wherever possible: they run in Rust,
which is what keeps validation at a few microseconds per event.

Custom errors carry the rule in their message, so `format_validation_error` can name it.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError, core_schema

# -- bounds ---------------------------------------------------------------------------------
# Patterns are anchored with ^...$: pydantic-core's (Rust) regex searches, it does not
# fullmatch, and its `$` does not match before a trailing newline the way Python's does.
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
VERB_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
CHANNEL_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
TAG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# The canonical UUID text; any case is accepted and lowercased.
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# RFC 3339 date-time (section 5.6, including its lowercase and space-separator allowances).
# The offset is mandatory; [0-9], not \d, because the Rust \d also matches non-ASCII digits.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)

MAX_ENTITY_LEN = 256  # entity type and id
MAX_REF_LEN = 256  # context_id, in_reply_to
MAX_TAGS = 32
MAX_PROPERTIES = 64
MAX_PROPERTY_KEY_LEN = 128
MAX_PROPERTY_STRING_LEN = 1024
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_ABS_WEIGHT = 1e12
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)  # inclusive; also the epoch of the wire's ms
LATEST = datetime(2200, 1, 1, tzinfo=UTC)  # exclusive

EPOCH = EARLIEST
ONE_MS = timedelta(milliseconds=1)
ONE_US = timedelta(microseconds=1)

TIMESTAMP_RULE = "must be an RFC 3339 timestamp with Z or an offset, e.g. 2026-10-01T12:00:00.123Z"
UUID_RULE = "must be a UUID, e.g. 0190a8b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b"
PROPERTY_VALUE_RULE = (
    f"must be a string of at most {MAX_PROPERTY_STRING_LEN} characters, a bool, "
    "an integer within int64 or a finite float"
)


# -- simple constrained strings --------------------------------------------------------------
# strict=True everywhere: no silent coercion of bytes or numbers into strings.
Tenant = Annotated[str, StringConstraints(strict=True, pattern=TENANT_PATTERN)]
Verb = Annotated[str, StringConstraints(strict=True, pattern=VERB_PATTERN)]
Channel = Annotated[str, StringConstraints(strict=True, pattern=CHANNEL_PATTERN)]
Tag = Annotated[str, StringConstraints(strict=True, pattern=TAG_PATTERN)]
EntityPart = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_ENTITY_LEN)]
Ref = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_REF_LEN)]
PropertyKey = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=MAX_PROPERTY_KEY_LEN)
]

# Lax list: a tuple or other sequence of tags is fine; each tag itself is strict.
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS)]
# Strict float accepts ints (2 -> 2.0) but not bools or numeric strings.
Weight = Annotated[
    float, Field(strict=True, allow_inf_nan=False, ge=-MAX_ABS_WEIGHT, le=MAX_ABS_WEIGHT)
]


# -- event_id ----------------------------------------------------------------------------------
def _uuid_other_forms(value: Any) -> str:
    """Slow path for UUIDs not already in canonical text: uuid.UUID objects, braces, urn:."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        return str(uuid.UUID(value))  # ValueError -> the union's custom error
    raise ValueError("not a UUID")


def _event_id_schema(_source: Any, _handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    return core_schema.union_schema(
        [
            core_schema.str_schema(strict=True, pattern=UUID_PATTERN, to_lower=True),
            core_schema.no_info_plain_validator_function(_uuid_other_forms),
        ],
        mode="left_to_right",
        custom_error_type="uuid",
        custom_error_message=UUID_RULE,
    )


# WithJsonSchema: pydantic cannot derive a JSON Schema from these custom core schemas.
EventId = Annotated[
    str,
    GetPydanticSchema(_event_id_schema),
    WithJsonSchema({"type": "string", "format": "uuid"}),
]


# -- timestamps --------------------------------------------------------------------------------
def _timestamp_schema(_source: Any, _handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    # Two steps. The gate lets through only RFC 3339 strings and datetime objects: pydantic's
    # own datetime parsing would also take "1700000000" (a unix time) or "2026-10-01" (a date).
    # Then pydantic parses and checks; its errors there say what is wrong (no timezone, out of
    # range, no such day) instead of being folded into the format error.
    rfc3339 = core_schema.str_schema(strict=True, pattern=RFC3339_PATTERN)
    aware_in_range = core_schema.datetime_schema(tz_constraint="aware", ge=EARLIEST, lt=LATEST)

    def gated(gate: core_schema.CoreSchema) -> core_schema.CoreSchema:
        return core_schema.chain_schema(
            [
                core_schema.custom_error_schema(
                    gate, custom_error_type="timestamp", custom_error_message=TIMESTAMP_RULE
                ),
                aware_in_range,
            ]
        )

    return core_schema.json_or_python_schema(
        # JSON has no datetime objects (and pydantic's JSON datetime parsing is lax too).
        json_schema=gated(rfc3339),
        python_schema=gated(
            core_schema.union_schema(
                [core_schema.datetime_schema(strict=True), rfc3339], mode="left_to_right"
            )
        ),
    )


# Any aware datetime in range, as given (offset and microseconds kept): `validate_record`
# only needs its epoch milliseconds, which do not depend on the offset.
Timestamp = Annotated[
    datetime,
    GetPydanticSchema(_timestamp_schema),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}),
]


def to_utc_millis(value: datetime) -> datetime:
    """The same instant in datetime.UTC, truncated to the millisecond (what the wire keeps)."""
    # Cheaper than a round trip through epoch ms: this runs for every Event validated.
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    sub_ms = value.microsecond % 1000
    return value - sub_ms * ONE_US if sub_ms else value


def epoch_millis(value: datetime) -> int:
    """Milliseconds since the epoch, exact (no float rounding), for an aware datetime."""
    return (value - EPOCH) // ONE_MS


def from_epoch_millis(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


# -- property values ---------------------------------------------------------------------------
def _check_property_value(value: Any) -> str | bool | int | float:
    """The property-value rule in Python, for JSON input (see _property_value_schema)."""
    kind = type(value)
    if (
        (kind is str and len(value) <= MAX_PROPERTY_STRING_LEN)
        or kind is bool
        or (kind is int and INT64_MIN <= value <= INT64_MAX)
        or (kind is float and math.isfinite(value))
    ):
        return value  # type: ignore[no-any-return]
    raise PydanticCustomError("property_value", PROPERTY_VALUE_RULE)


def _property_value_schema(_source: Any, _handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    # Order matters: bool before int (True is an int), int before float. The float branch
    # checks isinstance(float) first because a strict float still accepts ints, which would
    # turn an int outside int64 into a float instead of rejecting it.
    python_value = core_schema.union_schema(
        [
            core_schema.str_schema(strict=True, max_length=MAX_PROPERTY_STRING_LEN),
            core_schema.bool_schema(strict=True),
            core_schema.int_schema(strict=True, ge=INT64_MIN, le=INT64_MAX),
            core_schema.chain_schema(
                [
                    core_schema.is_instance_schema(float),
                    core_schema.float_schema(allow_inf_nan=False),
                ]
            ),
        ],
        mode="left_to_right",
        custom_error_type="property_value",
        custom_error_message=PROPERTY_VALUE_RULE,
    )
    # isinstance cannot run on JSON input, and a JSON float schema would accept (and convert)
    # big ints; the same rule in Python is exact, and JSON input is not the hot path.
    return core_schema.json_or_python_schema(
        json_schema=core_schema.no_info_plain_validator_function(_check_property_value),
        python_schema=python_value,
    )


PropertyValue = Annotated[
    str | bool | int | float,
    GetPydanticSchema(_property_value_schema),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": MAX_PROPERTY_STRING_LEN},
                {"type": "boolean"},
                {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
                {"type": "number"},
            ]
        }
    ),
]
Properties = Annotated[dict[PropertyKey, PropertyValue], Field(max_length=MAX_PROPERTIES)]

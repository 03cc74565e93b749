"""Canonical JSON lines in: `event_from_json_line`, for `rhythm ingest` and friends."""

from __future__ import annotations

from pydantic import ValidationError

from rhythm.schemas.errors import ContractError, format_validation_error
from rhythm.schemas.event import Event

__all__ = ["event_from_json_line", "format_validation_error"]


def event_from_json_line(line: str | bytes) -> Event:
    """Parse and validate one JSON object; ContractError names each field and rule broken.

    pydantic parses the JSON itself (in Rust), so there is no intermediate dict; the field
    types are written to apply the same rules to JSON as to Python input.
    """
    try:
        return Event.model_validate_json(line)
    except ValidationError as exc:
        raise ContractError.from_validation_error(exc) from exc

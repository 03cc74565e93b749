"""What every table's processor takes and gives, and the checks they share. Pure.

A processor (`process` in each table's module) takes a `Message` and returns either a row (a
tuple in the column order of its table) or a `DeadLetter` naming why it cannot be written. A
row only ever holds values its columns accept (valid UUID, times in range, ...), so
ClickHouse never refuses a batch over one bad message: such a message becomes a dead letter,
and the batch goes on. Rows depend only on the message (its position and timestamp
included), so a batch rebuilt after a crash holds exactly the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from rhythm.schemas import rules

__all__ = [
    "JSON_REASONS",
    "DeadLetter",
    "InvalidError",
    "Kind",
    "Message",
    "Outcome",
    "Row",
    "Skipped",
    "check_time",
    "ingest",
    "parse_json",
    "text",
]

Row = tuple[Any, ...]
#: the kinds of message the sink reads, one topic each (`tables.TABLES` maps them to tables)
Kind = Literal["events", "signals", "alerts", "people", "notifications", "feedback"]

#: the reasons `parse_json` gives besides the model's own `invalid_<kind>`
JSON_REASONS = ("empty", "invalid_json")

# What the contract allows (schemas/README.md: 1970 up to 2200), which DateTime64(3) holds.
_MIN_MS = rules.epoch_millis(rules.EARLIEST)
_MAX_MS = rules.epoch_millis(rules.LATEST)  # exclusive


@dataclass(frozen=True, slots=True)
class Message:
    """What the sink needs of a Kafka message."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def size(self) -> int:
        return len(self.value or b"") + len(self.key or b"")

    def header(self, name: str) -> bytes | None:
        """The first value of header `name` (None: not there)."""
        return next((value for key, value in self.headers if key == name), None)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: Message
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A message that is no row of its table (and no dead letter): its offset is done."""

    message: Message
    why: str


Outcome = Row | DeadLetter | Skipped


class InvalidError(ValueError):
    """A value its column cannot hold (the message becomes a dead letter)."""


def check_time(name: str, value: Any) -> int:
    """`value` if it is epoch milliseconds from 1970 to 2200 (what DateTime64(3) holds)."""
    if not isinstance(value, int) or not _MIN_MS <= value < _MAX_MS:
        raise InvalidError(f"{name}: not a time from 1970 to 2200 (got {value!r})")
    return value


def text(value: str | int | float | bool) -> str:
    """A value as the text a Map(String, String) column holds: bools as true/false (never
    1/0), numbers in their shortest form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def ingest(message: Message) -> tuple[int, int, int]:
    """The ingest columns every table fed by a topic ends with (`columns.INGEST`)."""
    return message.timestamp_ms, message.partition, message.offset


M = TypeVar("M", bound=BaseModel)


def parse_json(
    message: Message,
    model: type[M],
    invalid: str,
    times: Iterable[str] = (),
    optional_times: Iterable[str] = (),
) -> M | DeadLetter:
    """The message's JSON value as `model`, its `times` (and `optional_times` unless None)
    checked, or a dead letter: `empty` (no value), `invalid_json` (not JSON), else `invalid`."""
    if not message.value:
        return DeadLetter(message, "empty", "no value (a tombstone?)")
    try:
        record = model.model_validate_json(message.value)
        for name in times:
            check_time(name, getattr(record, name))
        for name in optional_times:
            if getattr(record, name) is not None:
                check_time(name, getattr(record, name))
    except ValidationError as exc:
        return DeadLetter(message, _validation_reason(exc, invalid), _detail(exc))
    except InvalidError as exc:
        return DeadLetter(message, invalid, str(exc))
    return record


def _validation_reason(exc: ValidationError, invalid: str) -> str:
    if any(e["type"] in ("json_invalid", "json_type") for e in exc.errors()):
        return "invalid_json"
    return invalid


def _detail(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '(value)'}: {e['msg']}" for e in exc.errors()[:10]
    )

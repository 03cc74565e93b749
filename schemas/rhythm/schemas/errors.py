"""The contract's two errors, and the one-line-per-problem rendering of validation errors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from rhythm.schemas import rules


class ContractError(ValueError):
    """An event (or wire record) breaks the contract. The message names each field and rule.

    `errors` holds pydantic's structured errors when validation found them (else empty).
    """

    def __init__(self, message: str, errors: Sequence[ErrorDetails] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)

    @classmethod
    def from_validation_error(cls, exc: ValidationError) -> ContractError:
        return cls(format_validation_error(exc), exc.errors(include_url=False))


WireReason = Literal["empty", "too_short", "bad_magic", "unknown_schema_id", "bad_avro"]


class WireError(Exception):
    """Bytes that are not a readable Rhythm event; `reason` is one of WireReason."""

    def __init__(self, reason: WireReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: WireReason = reason


# -- rendering ----------------------------------------------------------------------------------
_PREVIEW_LEN = 60


def format_validation_error(exc: ValidationError) -> str:
    """`tenant: must match [a-z0-9][a-z0-9_-]{0,63} (got 'ACME'); verb: required`."""
    return "; ".join(format_error(error) for error in exc.errors(include_url=False))


def format_error(error: ErrorDetails) -> str:
    loc = error["loc"]
    # A dict key (of properties) broke a rule: loc is (..., "properties", key, "[key]").
    is_key = bool(loc) and loc[-1] == "[key]"
    field = _path(loc[:-2] if is_key else loc)
    rule, show_input = _rule(error)
    if is_key:
        rule = "key " + rule
    got = f" (got {_preview(error['input'])})" if show_input else ""
    return f"{field}: {rule}{got}"


def _path(loc: tuple[int | str, ...]) -> str:
    if not loc:
        return "event"
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _preview(value: Any) -> str:
    # A datetime is only ever the parsed form of the input: show it as a timestamp.
    text = repr(value.isoformat() if isinstance(value, datetime) else value)
    return text if len(text) <= _PREVIEW_LEN else text[: _PREVIEW_LEN - 3] + "..."


def _bound(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return f"{value:g}" if isinstance(value, float) else str(value)


_SIMPLE_RULES = {
    "missing": ("required", False),
    "extra_forbidden": ("unknown field (the event contract allows no extra fields)", True),
    "string_type": ("must be a string", True),
    "string_unicode": ("must be valid Unicode (a lone surrogate is not)", True),
    "string_too_short": ("must not be empty", True),  # every min_length is 1
    "float_type": ("must be a number (not a string or bool)", True),
    "finite_number": ("must be finite (NaN and infinity are not allowed)", True),
    "list_type": ("must be a list", True),
    "dict_type": ("must be an object", True),
    "model_type": ("must be an object", True),
    "model_attributes_type": ("must be an object", True),
    "timezone_aware": ("must have a timezone (naive datetimes are ambiguous)", True),
}
_COMPARISONS = {
    "greater_than_equal": ("ge", ">="),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "<="),
    "less_than": ("lt", "<"),
}


def _rule(error: ErrorDetails) -> tuple[str, bool]:
    """The rule an error broke, and whether showing the input helps."""
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind in _SIMPLE_RULES:
        return _SIMPLE_RULES[kind]
    if kind == "too_long":  # a whole list or map: show its size, not its content
        size = ctx.get("actual_length")
        if size is None:  # pydantic leaves it out for dicts
            size = len(error["input"])
        return f"must have at most {ctx['max_length']} items (got {size})", False
    if kind == "json_invalid":
        return f"invalid JSON ({ctx.get('error', 'unparseable')})", False
    return _rule_from_context(kind, ctx, error["msg"]), True


def _rule_from_context(kind: str, ctx: dict[str, Any], msg: str) -> str:
    if kind == "string_pattern_mismatch":
        return f"must match {ctx['pattern'].removeprefix('^').removesuffix('$')}"
    if kind == "string_too_long":
        return f"must have at most {ctx['max_length']} characters"
    if kind in _COMPARISONS:
        key, op = _COMPARISONS[kind]
        if isinstance(ctx[key], str):  # only timestamps have bounds of this kind (ISO text)
            return (
                f"must be between {_bound(rules.EARLIEST)} (inclusive) "
                f"and {_bound(rules.LATEST)} (exclusive)"
            )
        return f"must be {op} {_bound(ctx[key])}"
    if kind.startswith("datetime_"):  # an RFC 3339 string naming no real instant
        detail = ctx.get("error")
        return rules.TIMESTAMP_RULE + (f" ({detail})" if detail else "")
    # Custom errors (timestamp, uuid, property_value) carry their rule as the message.
    return msg[:1].lower() + msg[1:]

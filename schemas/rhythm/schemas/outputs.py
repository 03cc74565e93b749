"""What the processors publish: one signal per entity window, and alerts.

Both travel as JSON objects (UTF-8, no framing) on `rhythm.signals` and `rhythm.alerts`; the
sink validates them with these models before writing. Times are epoch milliseconds (UTC).

A signal's identity is (tenant, role, entity_type, entity_id, window_seconds, window_start);
a window can be re-emitted with a higher `version` (a late event corrected it), so consumers
keep the highest version. An alert's identity is `alert_id`, a stable hash of what it is
about and when it fired: re-sent duplicates carry the same id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from rhythm.schemas.keys import SEP

Role = Literal["actor", "object", "target", "tag"]
AlertKind = Literal["silence", "resumed", "unanswered", "follow_up"]
ALERT_KINDS: tuple[AlertKind, ...] = ("silence", "resumed", "unanswered", "follow_up")


class Signal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str
    role: Role
    entity_type: str
    entity_id: str
    window_start: int = Field(description="epoch ms, aligned to window_seconds")
    window_seconds: int = Field(gt=0)
    event_count: int = Field(ge=0)
    weight_sum: float
    weight_max: float
    gap_count: int = Field(ge=0)
    gap_min_s: float | None
    gap_max_s: float | None
    gap_mean_s: float | None
    first_event_at: int
    last_event_at: int
    silence_before_s: float | None = Field(
        description="the gap before the window's first event: how long the entity was quiet"
    )
    late_count: int = Field(ge=0, description="late events this version includes")
    version: int = Field(ge=1)


class Alert(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    alert_id: str
    kind: AlertKind
    tenant: str
    role: Role
    entity_type: str
    entity_id: str
    context_id: str | None
    fired_at: int = Field(description="event time the alert fired at, epoch ms")
    last_event_at: int
    expected_within_s: float
    score: float = Field(0.0, ge=0, le=1, description="how sure the rule is; ranks alerts")
    owners: list[str] = Field(default_factory=list, description="who should act, type:id")
    details: dict[str, Any]
    historical: bool = Field(
        False,
        description="computed by the history lane (an import or events the live lane had "
        "to route): stored, never delivered as a heads-up",
    )


class SignalRecord(TypedDict):
    """A signal as the processors build it (the `Signal` model's fields; a unit test keeps
    the two equal)."""

    tenant: str
    role: str  # a Role; the sink's model checks the value
    entity_type: str
    entity_id: str
    window_start: int
    window_seconds: int
    event_count: int
    weight_sum: float
    weight_max: float
    gap_count: int
    gap_min_s: float | None
    gap_max_s: float | None
    gap_mean_s: float | None
    first_event_at: int
    last_event_at: int
    silence_before_s: float | None
    late_count: int
    version: int


class AlertRecord(TypedDict):
    """An alert as the processors build it (the `Alert` model's fields; `alert_id` is added
    last, from the others)."""

    alert_id: NotRequired[str]
    kind: str  # an AlertKind; the sink's model checks the value
    tenant: str
    role: str  # a Role; the sink's model checks the value
    entity_type: str
    entity_id: str
    context_id: str | None
    fired_at: int
    last_event_at: int
    expected_within_s: float
    score: float
    owners: list[str]
    details: dict[str, Any]
    historical: NotRequired[bool]  # set by the history lane only


def alert_id(a: Mapping[str, Any]) -> str:
    parts = (
        a["kind"], a["tenant"], a["role"], a["entity_type"], a["entity_id"],
        a.get("context_id") or "", str(a["fired_at"]),
    )  # fmt: skip
    return hashlib.blake2b(SEP.join(parts).encode(), digest_size=16).hexdigest()


def details_dict(value: Any) -> dict[str, Any]:
    """An alert's `details` as a dict, from the store's JSON string (or a mapping already);
    {} for anything else."""
    if isinstance(value, Mapping):
        return dict(value)
    try:
        parsed = json.loads(value or "{}")
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}

"""The people directory and the notifier's delivery records: what travels on `rhythm.people`
and `rhythm.notifications` (JSON objects, UTF-8, no framing), validated by these models.

A person is (tenant, actor_type, actor_id), the same entity the events name as an actor;
`Client.identify()` publishes their traits (Segment's `identify` shape) keyed by
`tenant:type:id` on a compacted topic, so the latest record per person is the directory.
Traits are optional: what is not said falls back to the tenant's defaults where it is used
(the notifier's time zone and working hours, for instance).

A delivery record is one (alert, recipient, channel): its state and attempts, re-published
with a higher `version` at each change, so consumers keep the highest version.
"""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rhythm.schemas.rules import MAX_ENTITY_LEN, TENANT_PATTERN

__all__ = [
    "DELIVERY_STATES",
    "Channel",
    "DeliveryRecord",
    "DeliveryState",
    "Person",
    "Traits",
    "person_key",
]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

Channel = Literal["webhook", "slack", "email"]
#: snoozed: held by the recipient's feedback until `due_at` (then pending); cancelled: not
#: sent after all (a recipient said the alert is done).
DeliveryState = Literal[
    "pending", "held", "sending", "retry", "sent", "dead", "suppressed", "snoozed", "cancelled"
]
DELIVERY_STATES: tuple[DeliveryState, ...] = (
    "pending", "held", "sending", "retry", "sent", "dead", "suppressed", "snoozed", "cancelled",
)  # fmt: skip


class Traits(BaseModel):
    """What `identify()` says of a person. All optional; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, max_length=200, description="display name")
    email: str | None = Field(None, max_length=320)
    chat_handle: str | None = Field(
        None, max_length=100, description="chat user id, e.g. Slack's U024BE7LH (mentioned)"
    )
    timezone: str | None = Field(None, description="IANA zone, e.g. Europe/Berlin")
    working_hours: tuple[int, int] | None = Field(
        None, description="local [start, end) hours, e.g. [9, 18]"
    )
    working_days: tuple[int, ...] | None = Field(None, description="0 = Monday")
    team: str | None = Field(None, max_length=200)
    internal: bool | None = Field(None, description="one of ours (True) or outside (False)")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError(f"not an email address: {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone: {value!r}") from exc
        return value

    @field_validator("working_hours")
    @classmethod
    def _hours(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not 0 <= value[0] < value[1] <= 24:
            raise ValueError(f"working_hours must be 0 <= start < end <= 24 (got {value})")
        return value

    @field_validator("working_days")
    @classmethod
    def _days(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (not value or any(not 0 <= d <= 6 for d in value)):
            raise ValueError("working_days: one or more of 0 (Monday) to 6 (Sunday)")
        return value


class Person(BaseModel):
    """One record of the directory (the value on `rhythm.people`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(pattern=TENANT_PATTERN)
    actor_type: str = Field(min_length=1, max_length=MAX_ENTITY_LEN)
    actor_id: str = Field(min_length=1, max_length=MAX_ENTITY_LEN)
    traits: Traits
    updated_at: int = Field(ge=0, description="epoch ms the client said it")

    @property
    def ref(self) -> str:
        """type:id, as alerts name their owners."""
        return f"{self.actor_type}:{self.actor_id}"

    @property
    def key(self) -> str:
        return person_key(self.tenant, self.actor_type, self.actor_id)


def person_key(tenant: str, actor_type: str, actor_id: str) -> str:
    """The directory's message key: the same as the events' partition key for that actor."""
    return f"{tenant}:{actor_type}:{actor_id}"


class DeliveryRecord(BaseModel):
    """One delivery's latest state (the value on `rhythm.notifications`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(description="the idempotency key of (alert_id, recipient, channel)")
    alert_id: str
    tenant: str
    kind: str
    recipient: str = Field(description="type:id of the person or queue")
    channel: Channel
    address: str = Field(description="where it goes: an email address, a webhook, a queue")
    reason: str = Field(description="why this recipient: owner, engaged, queue")
    state: DeliveryState
    attempts: int = Field(ge=0)
    created_at: int
    due_at: int = Field(description="when it is (or was) to be sent, epoch ms")
    updated_at: int
    sent_at: int | None = None
    last_error: str | None = None
    version: int = Field(ge=1)

    @model_validator(mode="after")
    def _sent(self) -> DeliveryRecord:
        if self.state == "sent" and self.sent_at is None:
            raise ValueError("a sent delivery has sent_at")
        return self

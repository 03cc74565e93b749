"""Feedback on a delivered heads-up: what travels on `rhythm.feedback` (a JSON object, UTF-8,
no framing), validated by this model. The one contract for the links' HTTP API, `rhythm
feedback`, the notifier that applies it and the sink that stores it.

A recipient says of one alert:
- `done`: the action is taken. The notifier cancels what it still had to send of that alert
  and, for a thread's alert (`unanswered`, `follow_up`), publishes an activity event in the
  thread by the recipient with verb `DONE_VERB`: the processors close the open wait on it
  (as censored, not as a reply: the reply norms learn no delay that never happened).
- `snooze`: tell me again at `snooze_until` (epoch ms): the notifier holds the alert for that
  recipient and delivers it once more then.
- `not_useful`: alerts like this one are noise to me: the notifier raises that recipient's
  score threshold for that kind of entity (tenant, role, entity type).

`feedback_id` is the deduplication key: a link used twice, or a command repeated, gives the
same id (derived from what it says), and the notifier applies each id once.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rhythm.schemas.rules import MAX_ENTITY_LEN, TENANT_PATTERN

__all__ = [
    "DONE_VERB",
    "FEEDBACK_KINDS",
    "Feedback",
    "FeedbackKind",
    "feedback_id",
]

FeedbackKind = Literal["done", "snooze", "not_useful"]
FEEDBACK_KINDS: tuple[FeedbackKind, ...] = ("done", "snooze", "not_useful")

#: The verb of the activity event a `done` becomes in the alert's thread (namespaced: no
#: product's own verb can mean it by accident).
DONE_VERB = "rhythm.done"


class Feedback(BaseModel):
    """One piece of feedback (the value on `rhythm.feedback`, keyed by `alert_id`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feedback_id: str = Field(min_length=1, max_length=64, description="the dedup key")
    alert_id: str = Field(min_length=1, max_length=256)
    tenant: str = Field(pattern=TENANT_PATTERN)
    recipient: str = Field(
        min_length=3, max_length=2 * MAX_ENTITY_LEN + 1, pattern=r"^[^:]+:.+$",
        description="type:id of the person (or queue) the heads-up went to",
    )  # fmt: skip
    kind: FeedbackKind
    snooze_until: int | None = Field(None, ge=0, description="epoch ms; only for snooze")
    at: int = Field(ge=0, description="epoch ms it was given")
    source: Literal["link", "cli"] = "link"
    # What the alert was about (as the alert says; None when the giver did not know it).
    alert_kind: str | None = Field(None, max_length=64)
    role: str | None = Field(None, max_length=16)
    entity_type: str | None = Field(None, max_length=MAX_ENTITY_LEN)
    entity_id: str | None = Field(None, max_length=MAX_ENTITY_LEN)
    context_id: str | None = Field(None, max_length=256)
    score: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _until(self) -> Feedback:
        if (self.kind == "snooze") != (self.snooze_until is not None):
            raise ValueError("snooze_until is required for snooze and only for snooze")
        return self

    @property
    def entity_kind(self) -> str | None:
        """`role:entity_type`, what a not-useful threshold is kept for."""
        if self.role is None or self.entity_type is None:
            return None
        return f"{self.role}:{self.entity_type}"


def feedback_id(*parts: str) -> str:
    """A stable id from what identifies a piece of feedback (a token, or the command's
    alert, recipient, kind and time)."""
    text = "\x1f".join(parts).encode()
    return hashlib.blake2b(text, digest_size=16).hexdigest()

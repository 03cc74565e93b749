"""Feedback on heads-ups: the links a heads-up carries, the records the links' API and
`rhythm feedback` publish, what a "done" becomes in the alert's thread, and how "not useful"
raises a recipient's threshold. Pure, but for `publish` (Kafka).

- Links: one per action, `<base>/feedback/<action>?t=<token>`, the token signed and bound to
  (tenant, alert, recipient, action) with an expiry (signing.make_token).
- A record's `feedback_id` is derived from what was said: the token for a link (a link used
  twice is one piece of feedback), (alert, recipient, kind, time) for the command line.
- Threshold: a recipient's score threshold for a kind of entity (tenant, role:entity type)
  starts at 0 (every alert is told) and each net "not useful" (not useful minus done or
  snooze on that kind, over the last `feedback_days`) closes `step` of the gap to 1, up to
  `cap`: 1 - (1 - step)^n. With the default step 0.2: 0.2, 0.36, 0.49, 0.59...; alerts
  scored below it are not sent to that recipient (`suppressed`, reason not_useful). The
  cap keeps the surest alerts coming whatever was said.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from confluent_kafka import KafkaError, Producer
from confluent_kafka import Message as KafkaMessage

from rhythm.notifier.signing import Claims, make_token
from rhythm.producers.prepare import prepare_event
from rhythm.schemas import format_timestamp
from rhythm.schemas.feedback import DONE_VERB, FEEDBACK_KINDS, Feedback, FeedbackKind, feedback_id

__all__ = [
    "ACTION_LABELS",
    "THREAD_KINDS",
    "FeedbackNotPublishedError",
    "done_event",
    "feedback_from_cli",
    "feedback_from_link",
    "links",
    "publish",
    "threshold",
]

#: Alert kinds about a wait in a thread: a "done" on them closes the wait.
THREAD_KINDS = ("unanswered", "follow_up")
#: How each action is shown (links, the confirmation page).
ACTION_LABELS = {"done": "Done", "snooze": "Snooze", "not_useful": "Not useful"}


def links(
    base: str, secret: bytes, tenant: str, alert_id: str, recipient: str, now_s: float, ttl_s: int
) -> dict[str, str]:
    """The three links of one heads-up (action -> URL)."""
    expires = int(now_s) + ttl_s
    out: dict[str, str] = {}
    for action in FEEDBACK_KINDS:
        token = make_token(secret, Claims(tenant, alert_id, recipient, action, expires))
        out[action] = f"{base}/feedback/{action}?t={quote(token, safe='')}"
    return out


def threshold(not_useful: int, useful: int, step: float, cap: float) -> float:
    """The score an alert needs to reach this recipient for this kind of entity."""
    n = max(0, not_useful - useful)
    return 0.0 if n == 0 else min(cap, 1.0 - (1.0 - step) ** n)


def _about(alert: Mapping[str, Any] | None) -> dict[str, Any]:
    if not alert:
        return {}
    return {
        "alert_kind": alert.get("kind"),
        "role": alert.get("role"),
        "entity_type": alert.get("entity_type"),
        "entity_id": alert.get("entity_id"),
        "context_id": alert.get("context_id"),
        "score": alert.get("score"),
    }


def feedback_from_link(
    claims: Claims,
    token: str,
    at_ms: int,
    snooze_until: int | None,
    alert: Mapping[str, Any] | None,
) -> Feedback:
    kind: FeedbackKind = claims.action  # type: ignore[assignment]  # read_token checked it
    return Feedback(
        feedback_id=feedback_id("link", token),
        alert_id=claims.alert_id,
        tenant=claims.tenant,
        recipient=claims.recipient,
        kind=kind,
        snooze_until=snooze_until if kind == "snooze" else None,
        at=at_ms,
        source="link",
        **_about(alert),
    )


def feedback_from_cli(
    tenant: str,
    alert_id: str,
    recipient: str,
    kind: FeedbackKind,
    at_ms: int,
    snooze_until: int | None,
    alert: Mapping[str, Any] | None,
) -> Feedback:
    return Feedback(
        feedback_id=feedback_id("cli", alert_id, recipient, kind, str(at_ms)),
        alert_id=alert_id,
        tenant=tenant,
        recipient=recipient,
        kind=kind,
        snooze_until=snooze_until,
        at=at_ms,
        source="cli",
        **_about(alert),
    )


def done_event(fb: Feedback, alert: Mapping[str, Any] | None) -> tuple[dict[str, Any], str] | None:
    """The activity event a "done" on a thread's alert becomes (wire record, key): by the
    recipient, in the alert's thread, about the waiting party (the alert's entity), with a
    stable id (a re-published copy is the same event). None when there is no thread."""
    if fb.kind != "done" or not alert or alert.get("kind") not in THREAD_KINDS:
        return None
    context = alert.get("context_id")
    if not context:
        return None
    actor_type, _, actor_id = fb.recipient.partition(":")
    event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"rhythm:feedback:{fb.feedback_id}")
    return prepare_event(
        {
            "event_id": str(event_id),
            "tenant": fb.tenant,
            "occurred_at": format_timestamp(datetime.fromtimestamp(fb.at / 1000, UTC)),
            "actor": {"type": actor_type, "id": actor_id},
            "verb": DONE_VERB,
            "target": {"type": alert["entity_type"], "id": alert["entity_id"]},
            "context_id": context,
            "properties": {"alert_id": fb.alert_id, "feedback_id": fb.feedback_id},
        }
    )


class FeedbackNotPublishedError(RuntimeError):
    """Kafka did not acknowledge the feedback in time: nothing is known to be recorded."""


def publish(producer: Producer, topic: str, fb: Feedback, timeout_s: float = 10.0) -> None:
    """Publish one piece of feedback and wait for Kafka's acknowledgement (keyed by alert:
    one alert's feedback stays in order). Raises FeedbackNotPublishedError."""
    errors: list[str] = []
    acked: list[bool] = []

    def on_delivery(err: KafkaError | None, _msg: KafkaMessage) -> None:
        if err is None:
            acked.append(True)
        else:
            errors.append(str(err))

    producer.produce(
        topic, fb.model_dump_json().encode(), fb.alert_id.encode(), on_delivery=on_delivery
    )
    producer.flush(timeout_s)
    if not acked:
        raise FeedbackNotPublishedError(errors[0] if errors else "no acknowledgement in time")

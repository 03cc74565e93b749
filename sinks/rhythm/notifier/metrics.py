"""The notifier's metrics (its own registry, served on its metrics port). Labels are bounded:
channel (webhook, slack, email), reason (a fixed set), state (the delivery states), feedback
kind (done, snooze, not_useful, invalid), alert kind (the processors' four)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rhythm.runtime.health import Progress
from rhythm.runtime.metrics import part_registry
from rhythm.schemas.feedback import FEEDBACK_KINDS
from rhythm.schemas.outputs import ALERT_KINDS
from rhythm.schemas.people import DELIVERY_STATES

FeedbackCounts = tuple[dict[tuple[str, str], int], dict[str, int]]

__all__ = ["NotifierMetrics"]


class _States(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "rhythm_notifier_deliveries", "Deliveries in the ledger by state.", labels=["state"]
        )
        counts = self._counts()
        for state in DELIVERY_STATES:
            family.add_metric([state], counts.get(state, 0))
        yield family


class _Feedback(Collector):
    """From the ledger: feedback recorded by kind and alert kind, and the not-useful rate
    (not useful / heads-ups told) per alert kind."""

    def __init__(self, counts: Callable[[], FeedbackCounts]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        given, told = self._counts()
        recorded = GaugeMetricFamily(
            "rhythm_notifier_feedback_recorded",
            "Feedback in the ledger by kind and alert kind.",
            labels=["kind", "alert_kind"],
        )
        rate = GaugeMetricFamily(
            "rhythm_notifier_not_useful_rate",
            "Share of heads-ups told (alert, recipient) that the recipient said were not useful.",
            labels=["alert_kind"],
        )
        for alert_kind in ALERT_KINDS:
            for kind in FEEDBACK_KINDS:
                recorded.add_metric([kind, alert_kind], given.get((kind, alert_kind), 0))
            n = told.get(alert_kind, 0)
            if n:
                rate.add_metric([alert_kind], given.get(("not_useful", alert_kind), 0) / n)
        yield recorded
        yield rate


class NotifierMetrics:
    def __init__(self, stall_after_s: float) -> None:
        self.registry = part_registry()
        r = self.registry
        self.sent = Counter("rhythm_notifier_sent", "Heads-ups delivered.", ["channel"], registry=r)
        self.failed = Counter(
            "rhythm_notifier_failed",
            "Deliveries given up (dead-lettered) after the last attempt or a refusal.",
            ["channel"],
            registry=r,
        )
        self.retried = Counter(
            "rhythm_notifier_retried", "Failed attempts that will be tried again.", ["channel"],
            registry=r,
        )  # fmt: skip
        self.suppressed = Counter(
            "rhythm_notifier_suppressed",
            "Deliveries held (quiet_hours: sent when the recipient's day starts) or not sent "
            "(cap: over the daily cap).",
            ["reason"],
            registry=r,
        )
        self.alerts = Counter(
            "rhythm_notifier_alerts",
            "Alerts read, by outcome (routed, duplicate, skipped_kind, historical: the history "
            "lane's, never delivered, invalid).",
            ["outcome"],
            registry=r,
        )
        self.route_errors = Counter(
            "rhythm_notifier_route_errors", "Routing put off: the store did not answer.",
            registry=r,
        )  # fmt: skip
        self.feedback = Counter(
            "rhythm_notifier_feedback",
            "Feedback applied, by kind (done, snooze, not_useful; invalid: refused).",
            ["kind"],
            registry=r,
        )
        self.feedback_api = Counter(
            "rhythm_notifier_feedback_requests",
            "Requests to the feedback links' API by answer (the HTTP status).",
            ["status"],
            registry=r,
        )
        self.digests = Counter(
            "rhythm_notifier_digests",
            "Daily digests by outcome: planned (recorded for sending, once per person and "
            "day), sent (a digest delivery went out, per channel), skipped_nothing_new "
            "(nothing not already in the person's last digest: not sent).",
            ["outcome"],
            registry=r,
        )
        self.digest_checks = Counter(
            "rhythm_notifier_digest_checks",
            "Passes over the directory looking for people whose digest is due.",
            registry=r,
        )
        self.progress = Progress("notifier", stall_after_s)

    def watch_ledger(self, counts: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_States(counts))

    def watch_feedback(self, counts: Callable[[], FeedbackCounts]) -> None:
        self.registry.register(_Feedback(counts))

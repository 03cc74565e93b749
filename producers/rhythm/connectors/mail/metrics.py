"""The mail connector's metrics (its own registry, served with /healthz by
`rhythm.runtime.health.HealthServer` on `RHYTHM_MAIL_METRICS_PORT`).

Labels are fixed sets only (verbs, error classes): never an address, a mailbox name or an
account, which are personal data or credentials' neighbours.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class MailMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "rhythm_mail_messages", "Messages mapped to events, by verb.", ["verb"], registry=r
        )
        self.skipped = Counter(
            "rhythm_mail_messages_skipped", "Messages with no sender or no time at all.", registry=r
        )
        self.events = Counter(
            "rhythm_mail_events_published", "Events delivered to Kafka (each once).", registry=r
        )
        self.passes = Counter(
            "rhythm_mail_sync_passes", "IMAP passes over every mailbox.", registry=r
        )
        self.errors = Counter(
            "rhythm_mail_sync_errors", "Interrupted passes, by error class.", ["error"], registry=r
        )
        self.last_pass = Gauge(
            "rhythm_mail_last_pass_timestamp_seconds", "When the last full pass ended.", registry=r
        )

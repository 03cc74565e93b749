"""Raw header blocks to published events: parse, thread, map, publish (one batch)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rhythm.connectors.mail.headers import MailHeaders, parse_headers
from rhythm.connectors.mail.mapping import Mapper, Source, occurred_at
from rhythm.connectors.mail.metrics import MailMetrics
from rhythm.connectors.mail.publish import Publisher
from rhythm.connectors.mail.settings import MailSettings, Sides, tenant_sides
from rhythm.connectors.mail.store import Store
from rhythm.connectors.mail.threads import Threader
from rhythm.schemas.rules import epoch_millis

log = logging.getLogger("rhythm.connectors.mail")


@dataclass(frozen=True, slots=True)
class RawMessage:
    header: bytes  # the header block (a whole message works too: the body is cut off)
    source: Source


class MailPipeline:
    """One per process: the store, the threader, the mapper and the publisher."""

    def __init__(
        self,
        settings: MailSettings,
        sides: Sides | None = None,
        metrics: MailMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.sides = sides or tenant_sides(settings)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.state_dir / "index.db")
        self.threader = Threader(self.store, settings.tenant)
        self.mapper = Mapper(settings, self.sides, settings.key())
        self.counts: Counter[str] = Counter()
        self.metrics = metrics or MailMetrics()
        self.publisher = Publisher(
            self.store,
            settings.client,
            settings.state_dir / "publish.lock",
            registry=self.metrics.registry,  # the client's metrics on the connector's /metrics
        )

    def close(self) -> None:
        try:
            self.publisher.close()
        finally:
            self.store.close()

    def process(self, raws: Sequence[RawMessage]) -> int:
        """Publish the events of these messages not published before; return how many."""
        parsed: list[tuple[MailHeaders, Source, int]] = []
        for raw in raws:
            h = parse_headers(raw.header)
            when = occurred_at(h, raw.source.delivered, self.settings)
            if h.sender is None or when is None:
                self.counts["skipped_no_sender_or_date"] += 1
                self.metrics.skipped.inc()
                continue
            self.counts["defects"] += h.defects
            parsed.append((h, raw.source, epoch_millis(when[0])))
        roots = self.threader.roots([(h, ms) for h, _, ms in parsed])
        events = []
        for h, source, _ in parsed:
            mapped = self.mapper.events(h, roots[h.message_id], source)
            if mapped:
                self.counts["messages"] += 1
                self.counts[f"verb_{mapped[0]['verb']}"] += 1
                self.metrics.messages.labels(mapped[0]["verb"]).inc()
            events.extend(mapped)
        sent = self.publisher.publish(events)
        if self.settings.identify and self.mapper.key is None:
            ours = self.sides.internal_type
            people = [
                (e[role]["type"], e[role]["id"])
                for e in events
                for role in ("actor", "target")
                if role in e and e[role]["type"] == ours
            ]
            self.publisher.identify(self.settings.tenant, people)
        self.counts["events"] += sent
        self.metrics.events.inc(sent)
        return sent

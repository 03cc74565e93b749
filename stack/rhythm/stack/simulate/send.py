"""`rhythm simulate`, the sending part: a generated `Simulation` through the client library,
as fast as the client allows, with progress on the terminal and a manifest on disk."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rhythm.producers import Client, ClientSettings
from rhythm.stack.progress import Progress
from rhythm.stack.publishing import given_up, publishing_client
from rhythm.stack.simulate.generate import Simulation
from rhythm.stack.simulate.model import directory, iso

_PROGRESS_EVERY = 2_000  # events between progress updates: keeps the bar off the hot path


@dataclass
class Delivery:
    sent: int = 0
    delivered: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def undelivered(self) -> int:
        return self.sent - self.delivered

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "delivered": self.delivered,
            "failed": dict(self.failed),
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s, 1),
        }


def summary(sim: Simulation, delivery: Delivery | None) -> str:
    m = sim.manifest()
    planted = m["planted"]
    head = (
        f"{m['counts']['events']:,} events over {m['days']} days ending {m['end']} "
        f"(+{m['counts']['duplicates']:,} re-sent duplicates); planted: "
        f"{len(planted['silent_accounts'])} silent accounts, "
        f"{len(planted['unanswered_threads'])} unanswered threads, {len(planted['movers'])} movers"
    )
    if delivery is None:
        return head + "; not sent (dry run)"
    failed = ", ".join(f"{r}={n}" for r, n in sorted(delivery.failed.items())) or "none"
    return (
        f"{head}; sent {delivery.sent:,}, delivered {delivery.delivered:,} "
        f"(failed: {failed}) in {delivery.seconds:.1f}s, {delivery.events_per_s:,.0f} events/s"
    )


def send(
    sim: Simulation,
    settings: ClientSettings,
    *,
    show_progress: bool = True,
    flush_timeout: float = 120.0,
) -> Delivery:
    delivery = Delivery()
    total = len(sim.arrivals)
    progress = Progress("simulate", total, enabled=show_progress)
    tenant = sim.config.tenant
    events = sim.events
    started = time.monotonic()
    client: Client | None = None
    try:
        with publishing_client(settings, flush_timeout) as client:
            for n, index in enumerate(sim.arrivals, 1):
                event = events[index]
                client.send(event.to_json(tenant))
                if n % _PROGRESS_EVERY == 0:
                    elapsed = time.monotonic() - started
                    rate = n / elapsed if elapsed > 0 else 0.0
                    at = iso(event.ts)[:16].replace("T", " ")
                    detail = f"{n:,}/{total:,} events, {rate:,.0f}/s, event time {at}"
                    progress.update(n, detail, elapsed)
            people = directory(sim.world)
            for actor, traits in people:  # the directory the notifier routes and dates by
                client.identify(tenant, actor, traits)
            # A person's record is a message like an event's: counted in sent and delivered.
            delivery.sent = len(sim.arrivals) + len(people)
    finally:
        if client is not None:
            delivery.delivered = client.stats.delivered
            delivery.failed = given_up(client)
        delivery.seconds = time.monotonic() - started
        progress.finish(delivery.sent)
    return delivery


def write_manifest(path: Path, sim: Simulation, delivery: Delivery | None, **extra: Any) -> None:
    data = sim.manifest()
    data.update(extra)
    data["delivery"] = delivery.as_dict() if delivery is not None else None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)

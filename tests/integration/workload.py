"""A generated enterprise workload with known answers, for the processor tests.

Event times cover the last `days` days and end at `now`, so once the stream is idle the
watermark follows the clock and every window that ended before now closes.
Planted:
- steady users and accounts (active until now: never silent);
- silent accounts: steady, then nothing for the last `silent_for_h` hours (must alert);
- support threads (email, customer -> employee) answered in 5-30 minutes, many of them, so
  the rule learns that such messages nearly always get a reply;
- unanswered threads: a customer email hours before now, no reply (must alert);
- late-but-answered threads: answered in 25-29 minutes, slower than most but within the
  learned norm (must not alert);
- chat threads that usually just end (must not alert even when unanswered).
Arrival is shuffled within `jitter_ms` and a share of events is re-sent with the same id.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Workload:
    events: list[dict[str, Any]] = field(default_factory=list)  # unique events, in time order
    arrivals: list[dict[str, Any]] = field(default_factory=list)  # shuffled, with re-sends
    silent_accounts: set[str] = field(default_factory=set)
    steady_entities: set[str] = field(default_factory=set)
    unanswered_threads: set[str] = field(default_factory=set)
    answered_threads: set[str] = field(default_factory=set)
    chat_threads: set[str] = field(default_factory=set)


def generate(
    now_ms: int,
    *,
    seed: int = 11,
    days: int = 3,
    users: int = 12,
    silent: int = 3,
    silent_for_h: int = 20,
    threads: int = 60,
    jitter_ms: int = 2 * MIN,
    resend_share: float = 0.02,
    tenant: str = "acme",
) -> Workload:
    rng = random.Random(seed)
    w = Workload()
    start = now_ms - days * DAY

    def add(ts: int, **fields: Any) -> None:
        event = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "tenant": tenant,
            "occurred_at": iso(ts),
            "weight": round(rng.uniform(0.5, 20.0), 2),
            **fields,
        }
        w.events.append(event)

    for u in range(users):
        user = f"u-{u}"
        w.steady_entities.add(user)
        t = start + rng.randrange(0, 30 * MIN)
        pace = rng.choice([7, 13, 21]) * MIN
        while t < now_ms - 2 * MIN:
            add(
                t,
                actor={"type": "user", "id": user},
                verb=rng.choice(["viewed", "edited", "commented"]),
                object={"type": "document", "id": f"doc-{rng.randrange(40)}"},
                target={"type": "account", "id": f"acct-{rng.randrange(5)}"},
                tags=rng.sample(["bikes", "launch-q4", "pricing"], rng.randrange(0, 3)),
                channel="web",
            )
            t += int(pace * rng.uniform(0.6, 1.4))

    for s in range(silent):
        account = f"quiet-{s}"
        w.silent_accounts.add(account)
        t = start + rng.randrange(0, 30 * MIN)
        while t < now_ms - silent_for_h * HOUR:
            add(t, actor={"type": "account", "id": account}, verb="purchased", channel="web")
            t += int(30 * MIN * rng.uniform(0.7, 1.3))

    customers = [f"c-{i}" for i in range(30)]
    t = start + HOUR
    step = (days * DAY - 12 * HOUR) // threads
    for i in range(threads):
        thread = f"t-{i}"
        customer = {"type": "customer", "id": rng.choice(customers)}
        agent = {"type": "employee", "id": f"e-{rng.randrange(4)}"}
        add(t, actor=customer, verb="wrote", context_id=thread, channel="email")
        add(
            t + rng.randrange(5 * MIN, 30 * MIN),
            actor=agent, verb="replied", context_id=thread, channel="email",
        )  # fmt: skip
        t += step
    for i in range(3):  # unanswered, hours ago
        thread = f"waiting-{i}"
        w.unanswered_threads.add(thread)
        sender = {"type": "customer", "id": f"c-{i}"}
        add(now_ms - (5 + i) * HOUR, actor=sender, verb="wrote", context_id=thread, channel="email")
    for i in range(3):  # answered slower than most, within the norm
        thread = f"slow-{i}"
        w.answered_threads.add(thread)
        at = now_ms - (4 + i) * HOUR
        sender = {"type": "customer", "id": f"c-{i + 10}"}
        add(at, actor=sender, verb="wrote", context_id=thread, channel="email")
        add(
            at + rng.randrange(25 * MIN, 29 * MIN),
            actor={"type": "employee", "id": "e-1"}, verb="replied", context_id=thread,
            channel="email",
        )  # fmt: skip
    t = start + HOUR
    for i in range(40):  # chat threads: most just end
        thread = f"chat-{i}"
        w.chat_threads.add(thread)
        sender = {"type": "customer", "id": rng.choice(customers)}
        add(t, actor=sender, verb="wrote", context_id=thread, channel="chat")
        if i % 5 == 0:
            add(t + 3 * MIN, actor={"type": "employee", "id": "e-2"}, verb="replied",
                context_id=thread, channel="chat")  # fmt: skip
        t += (days * DAY - 2 * HOUR) // 40

    w.events.sort(key=lambda e: e["occurred_at"])
    resent = [e for e in w.events if rng.random() < resend_share]
    arrivals = w.events + resent
    w.arrivals = sorted(arrivals, key=lambda e: _ms(e["occurred_at"]) + rng.randrange(0, jitter_ms))
    return w


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def ms_of(event: dict[str, Any]) -> int:
    return _ms(event["occurred_at"])


def reference_signals(
    events: list[dict[str, Any]], window_ms: tuple[int, ...]
) -> dict[tuple[str, str, str, int, int], dict[str, Any]]:
    """Signals the plain way, written apart from the processor: collect each entity's event
    times per role, sort them, bucket them."""
    per_entity: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for e in events:
        ts, weight = _ms(e["occurred_at"]), float(e.get("weight", 1.0))
        roles = [("actor", e["actor"])]
        roles += [(r, e[r]) for r in ("object", "target") if e.get(r)]
        roles += [("tag", {"type": "tag", "id": t}) for t in dict.fromkeys(e.get("tags", []))]
        for role, entity in roles:
            per_entity.setdefault((role, entity["type"], entity["id"]), []).append((ts, weight))
    out: dict[tuple[str, str, str, int, int], dict[str, Any]] = {}
    for (role, etype, eid), items in per_entity.items():
        items.sort()
        for size in window_ms:
            previous = None
            for ts, weight in items:
                key = (role, etype, eid, size // 1000, ts - ts % size)
                w = out.setdefault(
                    key, {"event_count": 0, "weight_sum": 0.0, "weight_max": None, "gaps": []}
                )
                w["event_count"] += 1
                w["weight_sum"] += weight
                w["weight_max"] = (
                    weight if w["weight_max"] is None else max(w["weight_max"], weight)
                )
                if previous is not None:
                    w["gaps"].append(ts - previous)
                previous = ts
    return out

"""`rhythm simulate`, the pure part: a month of a realistic enterprise with known answers.

`generate(SimConfig)` builds the world (`simulate_model`), everyone's steady activity,
purchases and conversations (`simulate_threads`), and the order in which a real fleet of
clients would deliver them: shuffled within a few minutes of event time (less than the
processors' allowed lateness, so signals equal those of the sorted stream) with about 1 % of
events sent twice under the same event_id (a client retrying). Event times cover the last
`days` days and END AT `now_ms`: once the stream is idle the processors' watermark follows the
clock, so every window before now closes and the planted alerts fire.

The manifest records exactly what was planted (silent accounts, unanswered threads, movers)
and what was generated, so a report or a test can compare what the pipeline found with it.
Sending is `simulate_send.py`.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rhythm.stack.simulate.model import (
    DAY,
    MIN,
    SimEvent,
    World,
    build_world,
    employee_events,
    iso,
    purchase_events,
    usage_events,
)
from rhythm.stack.simulate.threads import PlantedThread, simulate_threads

__all__ = ["MANIFEST_VERSION", "SimConfig", "Simulation", "generate"]

MANIFEST_VERSION = 1
MIN_DAYS = 7  # planted silences need weeks of rhythm, planted threads a learned norm


@dataclass(frozen=True)
class SimConfig:
    now_ms: int
    days: int = 30
    scale: float = 1.0
    seed: int = 7
    tenant: str = "acme"
    jitter_ms: int = 3 * MIN  # below the processors' default lateness (5 min)
    resend_share: float = 0.01

    def __post_init__(self) -> None:
        if self.days < MIN_DAYS:
            raise ValueError(f"days must be at least {MIN_DAYS} (got {self.days})")
        if not 0 < self.scale <= 100:
            raise ValueError(f"scale must be in (0, 100] (got {self.scale})")


@dataclass
class Simulation:
    config: SimConfig
    world: World
    events: list[SimEvent]  # unique events in event-time order
    arrivals: list[int]  # indices into `events` in sending order; a re-sent one appears twice
    planted_threads: list[PlantedThread]
    thread_counts: Counter[str] = field(default_factory=Counter)

    @property
    def duplicates(self) -> int:
        return len(self.arrivals) - len(self.events)

    def manifest(self) -> dict[str, Any]:
        return build_manifest(self)


def generate(config: SimConfig) -> Simulation:
    # One random stream per part: changing how threads are drawn does not move every user.
    def rng(part: str) -> random.Random:
        return random.Random(f"rhythm-sim:{config.seed}:{part}")

    start = config.now_ms - config.days * DAY
    world = build_world(rng("world"), scale=config.scale, start=start, now=config.now_ms)
    threads = simulate_threads(world, rng("threads"), config.scale)
    events = [
        *usage_events(world, rng("usage")),
        *employee_events(world, rng("staff")),
        *purchase_events(world, rng("purchases")),
        *threads.events,
    ]
    events.sort(key=lambda e: (e.ts, e.event_id))
    arrivals = arrival_order(events, rng("arrivals"), config.jitter_ms, config.resend_share)
    return Simulation(config, world, events, arrivals, threads.planted, threads.counts)


def arrival_order(
    events: list[SimEvent], rng: random.Random, jitter_ms: int, resend_share: float
) -> list[int]:
    """Each event arrives up to `jitter_ms` after its time; a re-sent copy up to a minute
    after the first."""
    keyed: list[tuple[int, int]] = []
    for i, e in enumerate(events):
        arrive = e.ts + rng.randrange(jitter_ms)
        keyed.append((arrive, i))
        if rng.random() < resend_share:
            keyed.append((arrive + rng.randrange(1_000, MIN), i))
    keyed.sort()
    return [i for _, i in keyed]


def build_manifest(sim: Simulation) -> dict[str, Any]:
    cfg, world = sim.config, sim.world
    last_actor: dict[tuple[str, str], int] = {}
    by_channel: Counter[str] = Counter()
    by_verb: Counter[str] = Counter()
    by_actor_type: Counter[str] = Counter()
    for e in sim.events:
        last_actor[e.actor] = e.ts
        by_channel[e.channel or "none"] += 1
        by_verb[e.verb] += 1
        by_actor_type[e.actor[0]] += 1
    silent = []
    for account in world.accounts:
        if account.quiet_from is None:
            continue
        last = last_actor[account.entity]
        silent.append(
            {
                "role": "actor",
                "entity_type": "account",
                "entity_id": account.id,
                "last_event_at": iso(last),
                "quiet_since": iso(account.quiet_from),  # nothing of the account after this
                "quiet_for_s": (cfg.now_ms - last) // 1000,
                "usual_gap_s": account.purchase_gap_ms // 1000,
                "users": [u.entity[1] for u in account.users],
                "contacts": [c[1] for c in account.contacts],
            }
        )
    movers = []
    for account in world.accounts:
        for kind, since in (
            ("pace", account.pace_mover_from),
            ("amplitude", account.amount_mover_from),
        ):
            if since is not None:
                movers.append(
                    {
                        "kind": kind,
                        "role": "target" if kind == "pace" else "actor",
                        "entity_type": "account",
                        "entity_id": account.id,
                        "since": iso(since),
                        "users": [u.entity[1] for u in account.users] if kind == "pace" else [],
                    }
                )
    unanswered = [
        {
            "context_id": t.context_id,
            "channel": t.channel,
            "sender": {"type": t.sender[0], "id": t.sender[1]},
            "account": t.account,
            "message_at": iso(t.message_at),
            "waiting_s": (cfg.now_ms - t.message_at) // 1000,
        }
        for t in sim.planted_threads
    ]
    users = sum(len(a.users) for a in world.accounts)
    # Whose digest `make run` shows: the manager of the first account that went quiet.
    quiet = [a for a in world.accounts if a.quiet_from is not None]
    digest_for = quiet[0].owner if quiet else world.employees[0].entity
    return {
        "version": MANIFEST_VERSION,
        "tenant": cfg.tenant,
        "seed": cfg.seed,
        "scale": cfg.scale,
        "days": cfg.days,
        "start": iso(world.start),
        "end": iso(world.now),
        "world": {
            "accounts": len(world.accounts),
            "users": users,
            "contacts": sum(len(a.contacts) for a in world.accounts),
            "employees": len(world.employees),
            "teams": dict(Counter(e.team or "" for e in world.employees)),
        },
        "digest_for": f"{digest_for[0]}:{digest_for[1]}",
        "planted": {
            "silent_accounts": silent,
            "unanswered_threads": unanswered,
            "movers": movers,
        },
        "counts": {
            "events": len(sim.events),
            "sent": len(sim.arrivals),
            "duplicates": sim.duplicates,
            "by_channel": dict(sorted(by_channel.items())),
            "by_verb": dict(sorted(by_verb.items())),
            "by_actor_type": dict(sorted(by_actor_type.items())),
            "threads": dict(sorted(sim.thread_counts.items())),
        },
    }

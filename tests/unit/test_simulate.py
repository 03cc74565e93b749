"""The simulator: deterministic by seed, and its planted scenarios are exactly what the
processors' own rules alert on (stage 1 and stage 2 driven offline, no Kafka)."""

from __future__ import annotations

import copy
import itertools
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import pytest

from rhythm.processors.messages import UpdatesMessage
from rhythm.processors.signals.conversation import ReplyConfig
from rhythm.processors.signals.entity import SignalConfig
from rhythm.processors.stage1 import Stage1Config, Stage1Partition
from rhythm.processors.stage2 import Stage2Partition
from rhythm.producers import prepare_event
from rhythm.schemas import encode_event
from rhythm.schemas.outputs import AlertRecord, SignalRecord
from rhythm.stack.simulate.generate import SimConfig, Simulation, generate
from rhythm.stack.simulate.model import DAY, HOUR, MIN, iso, mover_start

NOW = 1_790_000_123_456  # not on any boundary: windows and days cut the data mid-way
SMALL = SimConfig(now_ms=NOW, days=14, scale=0.15, seed=3)


@dataclass
class Processed:
    signals: list[SignalRecord]
    alerts: list[AlertRecord]
    wire: list[tuple[int, int, bytes]]  # (source partition, offset, value) as sent

    def open_silences(self) -> set[tuple[str, str, str]]:
        """(role, type, id) whose latest silence/resumed alert is a silence."""
        latest: dict[tuple[str, str, str], str] = {}
        ordered = sorted(self.alerts, key=lambda a: (a["fired_at"], a["kind"] == "resumed"))
        for a in ordered:
            if a["kind"] in ("silence", "resumed"):
                latest[(a["role"], a["entity_type"], a["entity_id"])] = a["kind"]
        return {k for k, kind in latest.items() if kind == "silence"}


def run_processors(sim: Simulation, sources: int = 2, batch: int = 500) -> Processed:
    """The simulation through stage 1 and stage 2 with default rules, as the Faust app runs
    them: arrival order (duplicates included) split over `sources` partitions by key, batches
    interleaved, then the source partitions go idle and the watermark reaches now."""
    sig = SignalConfig()
    cfg = Stage1Config(
        updates_partitions=2, dedup_horizon_ms=sig.lateness_ms + sig.late_retention_ms
    )
    parts = [Stage1Partition(p, cfg) for p in range(sources)]
    procs = [Stage2Partition(k, sources, sig, ReplyConfig()) for k in range(2)]
    queues: list[list[bytes]] = [[] for _ in range(sources)]
    for i in sim.arrivals:
        record, key = prepare_event(sim.events[i].to_json(sim.config.tenant))
        queues[zlib.crc32(key.encode()) % sources].append(encode_event(record))
    out = Processed([], [], [])

    def feed(messages: dict[int, UpdatesMessage]) -> None:
        for k, message in messages.items():
            result = procs[k].apply(copy.deepcopy(message))
            out.signals.extend(result.signals)
            out.alerts.extend(result.alerts)

    now = sim.config.now_ms
    for start in range(0, max(len(q) for q in queues), batch):
        for p, queue in enumerate(queues):
            chunk: list[tuple[int, bytes | None]] = [
                (start + j, v) for j, v in enumerate(queue[start : start + batch])
            ]
            if chunk:
                out.wire.extend(
                    (p, start + j, v) for j, v in enumerate(queue[start : start + batch])
                )
                feed(parts[p].process(chunk, now, 0.0).messages)
    for p, queue in enumerate(queues):
        idle = parts[p].tick(end_offset=len(queue), wall_ms=now + 10_000, wall_s=60.0)
        assert idle is not None
        feed(idle.messages)
    return out


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return generate(SMALL)


@pytest.fixture(scope="module")
def processed(sim: Simulation) -> Processed:
    return run_processors(sim)


def test_the_same_seed_gives_the_same_enterprise_and_another_seed_another() -> None:
    a, b = generate(SMALL), generate(SMALL)
    assert [e.to_json("acme") for e in a.events] == [e.to_json("acme") for e in b.events]
    assert a.arrivals == b.arrivals
    assert a.manifest() == b.manifest()
    other = generate(SimConfig(now_ms=NOW, days=14, scale=0.15, seed=4))
    assert [e.event_id for e in other.events] != [e.event_id for e in a.events]


def test_event_times_cover_the_days_and_end_at_now(sim: Simulation) -> None:
    times = [e.ts for e in sim.events]
    assert times == sorted(times)
    assert NOW - 14 * DAY <= times[0] < NOW - 14 * DAY + HOUR
    assert NOW - 2 * MIN <= times[-1] < NOW
    assert len({e.event_id for e in sim.events}) == len(sim.events)


def test_arrival_is_shuffled_within_minutes_and_about_one_percent_is_sent_twice(
    sim: Simulation,
) -> None:
    assert sorted(set(sim.arrivals)) == list(range(len(sim.events)))
    assert 0.005 < sim.duplicates / len(sim.events) < 0.02
    newest = 0
    out_of_order = 0
    for i in sim.arrivals:
        ts = sim.events[i].ts
        if ts < newest:
            out_of_order += 1
            # within the processors' allowed lateness (5 min): signals stay exact
            assert newest - ts < 5 * MIN
        newest = max(newest, ts)
    assert out_of_order > len(sim.events) // 10


def test_the_enterprise_has_its_kinds_of_people_channels_and_verbs(sim: Simulation) -> None:
    counts = sim.manifest()["counts"]
    assert set(counts["by_channel"]) == {"chat", "email", "meeting", "mobile", "ticket", "web"}
    assert set(counts["by_actor_type"]) == {"account", "contact", "employee", "system", "user"}
    assert {"viewed", "edited", "purchased", "wrote", "replied", "closed"} <= set(counts["by_verb"])
    purchases = [e for e in sim.events if e.verb == "purchased"]
    assert all(e.weight > 1 for e in purchases)  # the amount is the weight
    assert sum(counts["by_channel"].values()) == counts["events"] == len(sim.events)
    assert counts["sent"] == len(sim.arrivals)


def test_the_default_scale_is_a_realistic_month() -> None:
    m = generate(SimConfig(now_ms=NOW)).manifest()
    assert 100_000 <= m["counts"]["events"] <= 200_000
    assert m["world"]["accounts"] == 40 and m["world"]["employees"] == 30
    assert len(m["planted"]["silent_accounts"]) == 4
    assert len(m["planted"]["unanswered_threads"]) == 5


def test_a_config_too_short_for_the_rules_is_refused() -> None:
    with pytest.raises(ValueError, match="days"):
        SimConfig(now_ms=NOW, days=3)
    with pytest.raises(ValueError, match="scale"):
        SimConfig(now_ms=NOW, scale=0)


def test_exactly_the_planted_accounts_go_silent_as_actors(
    sim: Simulation, processed: Processed
) -> None:
    planted = {s["entity_id"] for s in sim.manifest()["planted"]["silent_accounts"]}
    assert len(planted) == 2
    open_accounts = {
        eid
        for role, etype, eid in processed.open_silences()
        if (role, etype) == ("actor", "account")
    }
    assert open_accounts == planted
    # and no other account ever looked silent as an actor, not even for a while
    ever = {
        a["entity_id"]
        for a in processed.alerts
        if a["kind"] == "silence" and (a["role"], a["entity_type"]) == ("actor", "account")
    }
    assert ever == planted


def test_steady_people_never_look_silent_at_the_end(sim: Simulation, processed: Processed) -> None:
    quiet_users = {u for s in sim.manifest()["planted"]["silent_accounts"] for u in s["users"]}
    open_users = {eid for role, etype, eid in processed.open_silences() if etype == "user"}
    assert open_users == quiet_users  # the users of the silent accounts went quiet with them
    assert not {k for k in processed.open_silences() if k[1] == "employee"}


def test_exactly_the_planted_threads_alert_unanswered(
    sim: Simulation, processed: Processed
) -> None:
    planted = sim.manifest()["planted"]["unanswered_threads"]
    assert len(planted) == 2
    alerted = Counter(a["context_id"] for a in processed.alerts if a["kind"] == "unanswered")
    # every alert of the whole month, not just the open ones: no reply was ever overdue
    assert alerted == Counter(t["context_id"] for t in planted)
    for t in planted:
        alert = next(a for a in processed.alerts if a["context_id"] == t["context_id"])
        assert (alert["entity_type"], alert["entity_id"]) == (
            t["sender"]["type"],
            t["sender"]["id"],
        )
        assert alert["owners"]  # someone is named to act
        thread = [e for e in sim.events if e.context_id == t["context_id"]]
        assert {e.actor[1] for e in thread} == {t["sender"]["id"]}  # nobody else wrote


def test_silent_accounts_have_a_steady_history_and_a_long_quiet(sim: Simulation) -> None:
    for s in sim.manifest()["planted"]["silent_accounts"]:
        account = ("account", s["entity_id"])
        times = [e.ts for e in sim.events if e.actor == account]
        assert len(times) >= 30
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert NOW - times[-1] > 4 * max(gaps)
        assert s["quiet_for_s"] == (NOW - times[-1]) // 1000
        # the whole account went quiet: its users and contacts too, and nobody wrote to it
        members = {("user", u) for u in s["users"]} | {("contact", c) for c in s["contacts"]}
        quiet_since = datetime.fromisoformat(s["quiet_since"]).timestamp() * 1000
        assert times[-1] < quiet_since
        later = [
            e
            for e in sim.events
            if e.ts >= quiet_since and (e.actor in members or e.target == account)
        ]
        assert not later


def test_planted_movers_move_in_the_newest_closed_day(
    sim: Simulation, processed: Processed
) -> None:
    day = [s for s in processed.signals if s["window_seconds"] == 86_400]
    newest = max(s["window_start"] for s in day)

    def measure(role: str, eid: str, field: str) -> tuple[float, float]:
        rows = {
            s["window_start"]: cast(Mapping[str, Any], s)[field]
            for s in day
            if (s["role"], s["entity_type"], s["entity_id"]) == (role, "account", eid)
        }
        before = [rows.get(newest - k * DAY, 0) for k in range(2, 9)]
        return rows[newest], sum(before) / len(before)

    for mover in sim.manifest()["planted"]["movers"]:
        field = "event_count" if mover["kind"] == "pace" else "weight_sum"
        now_value, usual = measure(mover["role"], mover["entity_id"], field)
        assert now_value > 2 * usual, mover
        assert mover["since"] == iso(newest)  # the whole window moved, none of the baseline


def test_movers_start_at_the_midnight_of_the_newest_closed_day() -> None:
    midnight = NOW - NOW % DAY
    assert mover_start(midnight + 5 * HOUR) == midnight - DAY
    assert mover_start(midnight + 20 * MIN) == midnight - 2 * DAY  # yesterday may not close

"""State that stays bounded and ends: hot threads, capped history, eviction, message sizes."""

from __future__ import annotations

import itertools

import pytest

from rhythm.processors import stage2
from rhythm.processors.codec import MAX_MESSAGE_BYTES, decode_context, encode_context
from rhythm.processors.signals.calendar import BusinessCalendar
from rhythm.processors.signals.conversation import ContextMessage, Conversations, ReplyConfig
from rhythm.processors.signals.entity import EntityState, SignalConfig
from rhythm.processors.signals.policy import AlertPolicy, TenantPolicy
from rhythm.processors.signals.survival import KindStats
from rhythm.processors.stage2 import Stage2Partition
from rhythm.schemas.keys import EntityKey, context_key
from rhythm.schemas.outputs import SignalRecord
from rhythm.schemas.rules import MAX_ENTITY_LEN, MAX_REF_LEN

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
OFFSETS = itertools.count()
AGENT = ("employee", "e-1")
SIG = SignalConfig(
    window_sizes_ms=(HOUR, DAY), lateness_ms=5 * MIN, late_retention_ms=DAY,
    idle_ttl_ms=7 * DAY, norms_ttl_ms=30 * DAY,
)  # fmt: skip
REPLY = ReplyConfig(lateness_ms=5 * MIN, min_replies=5, horizon_ms=2 * DAY, ttl_ms=10 * DAY)


def msg(ts: int, sender: tuple[str, str], verb: str = "wrote") -> ContextMessage:
    return ContextMessage(ts, sender, "email", verb, "", 0, next(OFFSETS))


def _stats(conv: Conversations) -> dict[object, tuple[list[int], int, list[int], int]]:
    def flat(s: KindStats) -> tuple[list[int], int, list[int], int]:
        return (
            s.wall.replied.counts,
            s.wall.replied.total,
            s.wall.censored.counts,
            len(s.wall.open),
        )

    every: list[tuple[object, KindStats]] = [*conv.stats.items(), *conv.pools.items()]
    return {k: flat(v) for k, v in every if flat(v)[1] or flat(v)[3]}


def _restored(conv: Conversations, cfg: ReplyConfig, watermark: int) -> Conversations:
    fresh = Conversations(cfg, AlertPolicy())
    fresh.restore({k: decode_context(encode_context(c)) for k, c in conv.contexts.items()})
    fresh.advance(watermark)  # replays their history
    return fresh


def test_a_long_thread_keeps_its_newest_waits_and_the_stats_agree_after_a_restart() -> None:
    cfg = ReplyConfig(lateness_ms=5 * MIN, min_replies=5, horizon_ms=2 * DAY, max_finished=8)
    conv = Conversations(cfg, AlertPolicy())
    t = 0
    for _ in range(50):  # 100 waits in one thread: customer writes, we reply, in turn
        conv.add("k", "acme", "k", msg(t, ("customer", "c-1")))
        conv.add("k", "acme", "k", msg(t + 10 * MIN, AGENT))
        t += HOUR
    conv.advance(t)
    assert len(conv.contexts["k"].finished) == cfg.max_finished
    assert _stats(conv) == _stats(_restored(conv, cfg, t))
    kind_totals = [s.wall.replied.total + s.wall.censored.total for s in conv.stats.values()]
    assert sum(kind_totals) == cfg.max_finished


def test_a_hot_thread_holds_at_most_its_cap_of_pending_messages() -> None:
    cfg = ReplyConfig(lateness_ms=5 * MIN, max_pending=50)
    conv = Conversations(cfg, AlertPolicy())
    for i in range(5000):  # a bot posting every 10 ms, nothing final yet
        conv.add("bot", "acme", "bot", msg(i * 10, ("customer", "bot-1")))
        assert len(conv.contexts["bot"].pending) <= cfg.max_pending
    assert conv.hot == ["bot"]
    assert len(encode_context(conv.contexts["bot"])) < 64 * 1024


def test_an_idle_thread_is_forgotten_after_its_ttl_with_what_it_taught() -> None:
    conv = Conversations(REPLY, AlertPolicy())
    for i in range(6):
        key = f"old-{i}"
        conv.add(key, "acme", key, msg(i * HOUR, ("customer", f"c-{i}")))
        conv.add(key, "acme", key, msg(i * HOUR + 10 * MIN, AGENT))
    conv.add("new", "acme", "new", msg(5 * DAY, ("customer", "c-9")))
    conv.add("new", "acme", "new", msg(5 * DAY + 5 * MIN, AGENT))
    conv.advance(5 * DAY + HOUR)
    assert sum(s.wall.replied.total for s in conv.stats.values()) == 7
    wm = 5 * HOUR + 10 * MIN + REPLY.ttl_ms + 5 * MIN + 1  # past the last old one's TTL
    conv.advance(wm)
    assert set(conv.contexts) == {"new"}
    assert conv.evicted == {f"old-{i}" for i in range(6)}
    assert sum(s.wall.replied.total for s in conv.stats.values()) == 1
    assert _stats(conv) == _stats(_restored(conv, REPLY, wm))


def test_an_idle_entity_is_forgotten_with_a_tombstone_and_comes_back_fresh() -> None:
    proc = Stage2Partition(0, 1, SIG, REPLY)
    key = EntityKey("acme", "object", "message", "m-1").encode()
    proc.apply({"p": 0, "wm": HOUR, "u": [[key, HOUR, 1.0, 0, 1]]})
    proc.take_dirty()
    # windows close, stay a day for corrections, then the entity holds nothing: TTL from there
    proc.apply({"p": 0, "wm": HOUR + SIG.idle_ttl_ms - MIN})
    assert key in proc.entities
    out = proc.apply({"p": 0, "wm": HOUR + SIG.idle_ttl_ms})
    assert key not in proc.entities and out.evicted == 1
    saved = dict(proc.take_dirty())
    assert key in saved and saved[key] is None  # a tombstone for the table's changelog
    restored = Stage2Partition(0, 1, SIG, REPLY)
    restored.restore(saved.items())
    assert key not in restored.entities
    wm = HOUR + SIG.idle_ttl_ms
    out = proc.apply({"p": 0, "wm": wm + 2 * DAY, "u": [[key, wm + DAY, 1.0, 0, 2]]})
    assert proc.entity_state(key).last_ms == wm + DAY
    assert [s["gap_count"] for s in out.signals] == [0, 0]  # a first event again


def test_an_entity_waiting_for_its_silence_is_kept_until_it_has_alerted() -> None:
    always = BusinessCalendar(working_days=frozenset(range(7)), start_hour=0, end_hour=24)
    policy = AlertPolicy(default=TenantPolicy(calendar=always))
    proc = Stage2Partition(0, 1, SIG, REPLY, policy)
    key = EntityKey("acme", "actor", "user", "u-1").encode()
    updates = [[key, i * HOUR, 1.0, 0, i] for i in range(1, 24 * 14)]  # hourly for two weeks
    proc.apply({"p": 0, "wm": 14 * DAY, "u": updates})
    silences = []
    wm = 14 * DAY
    while key in proc.entities and wm < 120 * DAY:
        wm += DAY
        silences += [a for a in proc.apply({"p": 0, "wm": wm}).alerts if a["kind"] == "silence"]
    assert len(silences) == 1
    assert key not in proc.entities  # forgotten after its silence, norms TTL after its last
    assert wm >= 14 * DAY + SIG.norms_ttl_ms - DAY


def test_state_at_the_contracts_maxima_stays_under_the_message_limit() -> None:
    """A hot entity and a hot thread whose every id is as long as the contract allows."""
    long, tenant = "x" * max(MAX_ENTITY_LEN, MAX_REF_LEN), "t" * 64
    proc = Stage2Partition(0, 1, SIG, REPLY)
    key = EntityKey(tenant, "actor", long, long).encode()
    ctx = context_key(tenant, long)
    t0 = 1_800_000_000_000
    for batch in range(40):
        updates = [[key, t0 + batch * 1000 + i, 1e300, 0, batch * 1000 + i] for i in range(1000)]
        contexts = [
            [ctx, t0 + batch * 1000 + i, "customer", long, long, long, long, 0, batch * 1000 + i]
            for i in range(1000)
        ]
        proc.apply({"p": 0, "wm": t0 + batch * 1000, "u": updates, "c": contexts})
        for saved_key, value in proc.take_dirty():
            assert value is None or len(saved_key) + len(value) < MAX_MESSAGE_BYTES
    assert len(proc.entity_state(key).pending) <= SIG.max_pending


def test_many_windows_closing_at_once_are_emitted_over_several_calls_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At most MAX_ADVANCE entities are advanced per call; an entity touched while overdue
    is advanced first: the signals are those of advancing everything at once."""

    def run(limit: int) -> list[tuple[object, ...]]:
        monkeypatch.setattr(stage2, "MAX_ADVANCE", limit)
        proc = Stage2Partition(0, 1, SIG, REPLY)
        keys = [EntityKey("acme", "object", "doc", f"d-{i}").encode() for i in range(50)]
        proc.apply(
            {"p": 0, "wm": HOUR, "u": [[k, HOUR + i, 1.0, 0, i] for i, k in enumerate(keys)]}
        )
        signals: list[SignalRecord] = []
        late = [[keys[3], 2 * HOUR + 5, 2.0, 0, 100], [keys[40], 3 * DAY, 1.0, 0, 101]]
        signals += proc.apply({"p": 0, "wm": 3 * DAY, "u": late}).signals
        while proc.overdue():
            signals += proc.apply({"p": 0, "wm": 3 * DAY}).signals
        return sorted((s["entity_id"], s["window_seconds"], s["window_start"], s["event_count"],
                       s["gap_count"], s["version"]) for s in signals)  # fmt: skip

    at_once = run(10_000)
    assert len(at_once) > 100
    assert run(7) == at_once
    assert EntityState() == stage2._FROZEN  # frozen entities' placeholder never touched


def test_an_entity_with_a_silence_rule_keeps_a_lone_first_event_past_the_idle_ttl() -> None:
    """A weekly account forgotten a week after its first event would start afresh at each
    event and never learn its rhythm (the scenario evaluation caught it)."""
    proc = Stage2Partition(0, 1, SIG, REPLY)
    key = EntityKey("acme", "target", "account", "a-1").encode()
    proc.apply({"p": 0, "wm": HOUR, "u": [[key, HOUR, 1.0, 0, 1]]})
    proc.apply({"p": 0, "wm": HOUR + 2 * SIG.idle_ttl_ms})
    assert key in proc.entities
    proc.apply({"p": 0, "wm": HOUR + SIG.norms_ttl_ms})
    assert key not in proc.entities


def test_a_window_with_every_field_set_survives_the_codec() -> None:
    """A field added to Window but not to the codec would be lost at every restore."""
    import dataclasses

    from rhythm.processors.codec import decode_entity, encode_entity
    from rhythm.processors.signals.entity import EntityState, Window

    values: dict[str, float] = {}
    for i, f in enumerate(dataclasses.fields(Window)):
        if f.name == "dirty":
            continue  # not saved: a restored window is emitted only when it changes again
        values[f.name] = 0.5 + i if f.type in ("float", float) else 7 + i
    window = Window(**values)  # type: ignore[arg-type]
    state = EntityState(last_ms=5, windows={(window.size_ms, window.start_ms): window})
    restored, applied = decode_entity(encode_entity(state, {0: 3}))
    got = restored.windows[(window.size_ms, window.start_ms)]
    for name, value in values.items():
        assert getattr(got, name) == value, name
    assert applied == {0: 3}

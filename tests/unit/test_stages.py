"""Stage 1 and stage 2 on plain data: dedup, dead letters, idle partitions, watermarks, replay."""

from __future__ import annotations

import copy
import random
from typing import Any

from rhythm.processors.codec import dumps, encode_batch, loads
from rhythm.processors.explode import entity_keys, partition_for
from rhythm.processors.messages import UpdatesMessage
from rhythm.processors.signals.conversation import ReplyConfig
from rhythm.processors.signals.entity import SignalConfig, next_due_ms
from rhythm.processors.stage1 import Stage1Config, Stage1Partition
from rhythm.processors.stage2 import Stage2Partition
from rhythm.producers import prepare_event
from rhythm.schemas import encode_event
from rhythm.schemas.keys import EntityKey
from rhythm.schemas.outputs import SignalRecord

MIN = 60_000
HOUR = 60 * MIN
NOW = 1_800_000_000_000
CFG = Stage1Config(updates_partitions=2, dedup_horizon_ms=2 * HOUR, idle_after_s=10)
SIG = SignalConfig(window_sizes_ms=(HOUR,), lateness_ms=5 * MIN, late_retention_ms=HOUR)


def wire(ts: int, actor: str = "u-1", event_id: str | None = None, **extra: Any) -> bytes:
    from datetime import UTC, datetime

    stamp = datetime.fromtimestamp(ts / 1000, UTC).isoformat().replace("+00:00", "Z")
    event = {"tenant": "acme", "occurred_at": stamp, "actor": ("user", actor), "verb": "viewed"}
    if event_id:
        event["event_id"] = event_id
    record, _ = prepare_event({**event, **extra})
    return encode_event(record)


def test_entity_keys_cover_every_role_and_each_tag_once() -> None:
    record = {
        "tenant": "acme", "actor_type": "user", "actor_id": "u-1", "object_type": "doc",
        "object_id": "d/1", "target_type": None, "tags": ["a", "b", "a"],
    }  # fmt: skip
    keys = [EntityKey.decode(k) for k in entity_keys(record)]
    assert [(k.role, k.entity_type, k.entity_id) for k in keys] == [
        ("actor", "user", "u-1"),
        ("object", "doc", "d/1"),
        ("tag", "tag", "a"),
        ("tag", "tag", "b"),
    ]


def test_same_event_id_counts_once_but_a_replayed_offset_is_forwarded_again() -> None:
    source = Stage1Partition(0, CFG)
    eid = "0191e2b4-0000-7000-8000-000000000001"
    out = source.process([(0, wire(NOW, event_id=eid)), (1, wire(NOW, event_id=eid))], NOW, 0.0)
    assert (out.events, out.duplicates) == (1, 1)
    # after a crash the same message (same offset) is read again: it must go out again
    restored = Stage1Partition(0, CFG)
    restored.restore([(k, v) for k, v in out.writes if v is not None])
    again = restored.process([(0, wire(NOW, event_id=eid))], NOW, 0.0)
    assert (again.events, again.duplicates) == (1, 0)
    assert restored.next_offset == 2  # the restored state had got past offset 1 already


def test_next_offset_never_goes_back_so_a_drained_partition_still_goes_idle() -> None:
    """After a rebalance Faust can hand over messages fetched before it together with the
    same offsets read again from the commit, in either order."""
    source = Stage1Partition(0, CFG)
    source.process([(5, wire(NOW)), (6, wire(NOW + 1))], NOW, 0.0)
    source.process([(6, wire(NOW + 1)), (3, wire(NOW - 5)), (4, wire(NOW - 4))], NOW, 0.0)
    assert source.next_offset == 7
    # nothing left to read (end offset 7) and quiet for longer than idle_after_s: idle
    assert source.tick(7, NOW + 60_000, 60.0) is not None


def test_a_batch_re_read_from_an_older_offset_never_overwrites_an_earlier_seen_record() -> None:
    source = Stage1Partition(0, CFG)
    ids = [f"0191e2b4-0000-7000-8000-00000000000{i}" for i in range(4)]
    first = source.process([(i, wire(NOW, event_id=ids[i])) for i in (0, 1)], NOW, 0.0)
    again = source.process([(i, wire(NOW, event_id=ids[i])) for i in (0, 1, 2, 3)], NOW, 0.0)
    seen_first = {k for k, v in first.writes if k.startswith("seen")}
    seen_again = {k for k, v in again.writes if k.startswith("seen")}
    assert seen_first and seen_again and not seen_first & seen_again
    restored = Stage1Partition(0, CFG)
    restored.restore([(k, v) for k, v in first.writes + again.writes if v is not None])
    resent = restored.process([(9, wire(NOW, event_id=ids[0]))], NOW, 0.0)
    assert (resent.events, resent.duplicates) == (0, 1)


def test_garbage_and_far_future_events_become_dead_letters_with_a_reason() -> None:
    source = Stage1Partition(0, CFG)
    out = source.process(
        [
            (0, b"\x00\x00\x00\x00\x01garbage"),
            (1, b'{"json": true}'),
            (2, wire(NOW + 2 * HOUR)),
            (3, wire(NOW)),
        ],
        NOW,
        0.0,
    )
    assert [(d.offset, d.reason) for d in out.dead_letters] == [
        (0, "bad_avro"), (1, "bad_magic"), (2, "future_timestamp"),
    ]  # fmt: skip
    assert out.events == 1


def test_every_destination_hears_the_watermark() -> None:
    source = Stage1Partition(3, CFG)
    out = source.process([(0, wire(NOW))], NOW, 0.0)
    assert set(out.messages) == {0, 1}
    assert all(m["p"] == 3 and m["wm"] == NOW for m in out.messages.values())
    assert sum(len(m.get("u", [])) for m in out.messages.values()) == 1


def test_an_idle_partition_follows_the_clock_only_with_nothing_left_to_read() -> None:
    source = Stage1Partition(0, CFG)
    source.process([(0, wire(NOW - HOUR))], NOW, 100.0)
    assert source.tick(end_offset=1, wall_ms=NOW, wall_s=105.0) is None  # not quiet long enough
    assert source.tick(end_offset=5, wall_ms=NOW, wall_s=200.0) is None  # input waiting (lag)
    out = source.tick(end_offset=1, wall_ms=NOW, wall_s=200.0)
    assert out is not None
    assert {m["wm"] for m in out.messages.values()} == {NOW - 10_000}


def test_dedup_memory_is_dropped_past_the_horizon() -> None:
    source = Stage1Partition(0, CFG)
    eid = "0191e2b4-0000-7000-8000-000000000002"
    source.process([(0, wire(NOW, event_id=eid))], NOW, 0.0)
    out = source.process([(1, wire(NOW + 3 * HOUR))], NOW + 3 * HOUR, 0.0)
    assert any(v is None for _, v in out.writes)  # the old record is deleted


def stage2(messages: list[UpdatesMessage], proc: Stage2Partition) -> list[SignalRecord]:
    signals: list[SignalRecord] = []
    for m in messages:
        signals.extend(proc.apply(copy.deepcopy(m)).signals)
    return signals


def test_stage2_waits_for_every_source_partition_and_takes_the_minimum() -> None:
    proc = Stage2Partition(0, 2, SIG, ReplyConfig())
    key = "acme\x1factor\x1fuser\x1fu-1"
    assert stage2([{"p": 0, "wm": 3 * HOUR, "u": [[key, 10 * MIN, 1.0, 0, 0]]}], proc) == []
    # partition 1 has said nothing: nothing may close, however far partition 0 is
    assert proc.watermark < 0
    assert stage2([{"p": 1, "wm": HOUR}], proc) == []  # min = 1 h < end + lateness
    closed = stage2([{"p": 1, "wm": HOUR + 5 * MIN}], proc)
    assert [(s["entity_id"], s["window_start"], s["event_count"]) for s in closed] == [
        ("u-1", 0, 1)
    ]


def test_stage2_skips_updates_it_already_applied_and_restores_to_the_same_state() -> None:
    proc = Stage2Partition(0, 1, SIG, ReplyConfig())
    key = "acme\x1factor\x1fuser\x1fu-1"
    first: UpdatesMessage = {"p": 0, "wm": 10 * MIN, "u": [[key, 10 * MIN, 1.0, 0, 7]]}
    stage2([first], proc)
    saved = proc.take_dirty()
    restored = Stage2Partition(0, 1, SIG, ReplyConfig())
    restored.restore(saved)
    out = restored.apply(copy.deepcopy(first))  # the same update re-sent after a crash
    assert out.duplicates == 1
    closed = stage2([{"p": 0, "wm": 2 * HOUR}], restored)
    assert [s["event_count"] for s in closed] == [1]


def test_threads_of_a_tenant_share_a_partition() -> None:
    keys = [f"ctx\x1facme\x1fthread-{i}" for i in range(50)]
    assert len({partition_for(k, 8) for k in keys}) == 1
    entities = [f"acme\x1factor\x1fuser\x1fu-{i}" for i in range(50)]
    assert len({partition_for(k, 8) for k in entities}) > 1


def test_watermarks_survive_a_restart() -> None:
    proc = Stage2Partition(1, 2, SIG, ReplyConfig())
    stage2([{"p": 0, "wm": 5 * HOUR}, {"p": 1, "wm": 4 * HOUR}], proc)
    saved = dict(proc.take_dirty())
    assert loads(saved["\x00wm\x1f1"] or b"") == [[0, 5 * HOUR], [1, 4 * HOUR]]
    restored = Stage2Partition(1, 2, SIG, ReplyConfig())
    restored.restore(saved.items())
    assert restored.watermark == 4 * HOUR


def test_the_due_time_of_every_entity_stays_what_next_due_ms_says() -> None:
    # apply() updates an entity's due time incrementally for on-time events (no rescan of
    # its windows); after any mix of on-time, late and too-late updates, every entity must
    # still be due exactly when advance() would have work for it, or windows close late.
    rng = random.Random(5)
    proc = Stage2Partition(0, 1, SIG, ReplyConfig())
    keys = [f"acme\x1factor\x1fuser\x1fu-{i}" for i in range(6)]
    wm, offset = 0, 0
    for _ in range(300):
        updates = []
        for _ in range(rng.randrange(0, 8)):
            offset += 1
            ts = max(0, wm + rng.randrange(-3 * HOUR, 20 * MIN))  # some late, some too late
            updates.append([rng.choice(keys), ts, 1.0, 0, offset])
        wm += rng.randrange(0, 15 * MIN)
        proc.apply({"p": 0, "wm": wm, "u": updates})
        for key, entity in proc.entities.items():
            due = next_due_ms(proc.entity_state(key), SIG, entity.rule)
            assert proc._due_of.get(key) == due, key
            assert due is None or (due, key) in proc._due
        # the window gauge is kept per change: it must equal a fresh count at any point
        assert proc.open_windows() == sum(len(e.state.windows) for e in proc.entities.values())
    restored = Stage2Partition(0, 1, SIG, ReplyConfig())
    restored.restore(proc.take_dirty())
    assert restored.open_windows() == proc.open_windows() > 0


def test_a_batch_at_the_contracts_maxima_is_split_under_the_message_limit() -> None:
    """2,000 events with 256-character ids, 32 tags of 64 characters and a thread each: the
    stage 1 messages are megabytes; split, each part is under the limit, only the last part
    moves the watermark, and stage 2 ends exactly where the unsplit message leaves it."""
    rng = random.Random(4)
    source = Stage1Partition(0, CFG)
    batch: list[tuple[int, bytes | None]] = []
    for i in range(2000):
        tags = [f"{rng.randrange(10**6):06d}-" + "t" * 57 for _ in range(32)]
        batch.append(
            (i, wire(NOW + i * 100, actor="a" * 250 + f"{i % 50:06d}", tags=tags,
                     context_id="c" * 250 + f"{i % 7:06d}", object=("doc", "d" * 256),
                     target=("account", "x" * 256), channel="email"))
        )  # fmt: skip
    out = source.process(batch, NOW + 300_000, 0.0)
    for k, message in out.messages.items():
        parts = encode_batch(message, 200_000)
        assert len(dumps(message)) > 1_000_000 and len(parts) > 5
        assert all(len(p) <= 200_000 for p in parts)
        decoded = [loads(p) for p in parts]
        assert ["wm" in d for d in decoded] == [False] * (len(parts) - 1) + [True]
        assert sum(len(d.get("u", ())) + len(d.get("c", ())) for d in decoded) == len(
            message.get("u", ())
        ) + len(message.get("c", ()))
        whole = Stage2Partition(k, 1, SIG, ReplyConfig())
        split = Stage2Partition(k, 1, SIG, ReplyConfig())
        expected = whole.apply(loads(dumps(message)))
        got = [split.apply(d) for d in decoded]
        assert all(o.signals == [] for o in got[:-1]) and split.watermark == whole.watermark
        assert [s for o in got for s in o.signals] == expected.signals
        assert sorted(split.take_dirty()) == sorted(whole.take_dirty())


def _mixed_run(restart_every: int, sig: SignalConfig = SIG) -> tuple[list[Any], list[int]]:
    """Signals and alerts of 300 random batches over 40 entities (on-time, late and
    too-late updates, silences), the partition restarted from its saved keys every
    `restart_every` batches (0: never); and, at each restart, how many restored entities
    holding windows were kept as their saved bytes."""
    rng = random.Random(11)
    proc = Stage2Partition(0, 1, sig, ReplyConfig())
    keys = [f"acme\x1factor\x1fuser\x1fu-{i}" for i in range(40)]
    saved: dict[str, bytes | None] = {}
    outputs: list[Any] = []
    kept: list[int] = []
    wm, offset = 0, 0
    for n in range(1, 301):
        updates = []
        for _ in range(rng.randrange(0, 12)):
            offset += 1
            ts = max(0, wm + rng.randrange(-2 * HOUR, 20 * MIN))
            updates.append([rng.choice(keys[: 10 + n // 10]), ts, rng.random(), 0, offset])
        wm += rng.randrange(0, 20 * MIN)
        out = proc.apply({"p": 0, "wm": wm, "u": updates})
        outputs.append((out.signals, out.alerts))
        saved.update(proc.take_dirty())
        if restart_every and n % restart_every == 0:
            proc = Stage2Partition(0, 1, SIG, ReplyConfig())
            proc.restore(list(saved.items()))
            kept.append(sum(1 for e in proc.entities.values() if e.frozen is not None))
            assert proc.open_windows() == sum(
                len(proc.entity_state(k).windows) for k in list(proc.entities)
            )
            # decoded for the check above: restore again, so the run goes on as restored
            proc = Stage2Partition(0, 1, SIG, ReplyConfig())
            proc.restore(list(saved.items()))
    return outputs, kept


def test_a_restored_entity_is_kept_as_bytes_until_due_and_the_outputs_stay_the_same() -> None:
    # A restore schedules each entity by the due time saved at the head of its value
    # instead of decoding it; every output must equal the run that never restarted.
    whole, _ = _mixed_run(0)
    restarted, kept = _mixed_run(7)
    assert restarted == whole
    assert sum(whole[i][0] != [] for i in range(len(whole))) > 50  # windows did close
    assert min(kept) > 0 and sum(kept) > 100  # and the restores kept entities as bytes


def test_a_restore_under_other_settings_or_of_old_values_decodes_them() -> None:
    proc = Stage2Partition(0, 1, SIG, ReplyConfig())
    key = "acme\x1factor\x1fuser\x1fu-1"
    proc.apply({"p": 0, "wm": 10 * MIN, "u": [[key, 10 * MIN, 1.0, 0, 7]]})
    saved = proc.take_dirty()
    value = dict(saved)[key]
    assert value is not None and value.startswith(b'{"d":')
    same = Stage2Partition(0, 1, SIG, ReplyConfig())
    same.restore(saved)
    assert same.entities[key].frozen is not None  # kept as bytes: its head is trusted
    # Other lateness: the saved due time is not this worker's, so the value is decoded.
    other_sig = SignalConfig(window_sizes_ms=(HOUR,), lateness_ms=1 * MIN, late_retention_ms=HOUR)
    other = Stage2Partition(0, 1, other_sig, ReplyConfig())
    other.restore(saved)
    assert other.entities[key].frozen is None
    assert other._due_of[key] == next_due_ms(other.entity_state(key), other_sig)
    # A value saved before the head existed: decoded likewise.
    headless = b"{" + value[value.index(b'"p":') :]
    old = Stage2Partition(0, 1, SIG, ReplyConfig())
    old.restore([(key, headless)])
    assert old.entities[key].frozen is None and old.open_windows() == 1

"""Windows holding both live and history events (processors/copies.py): the history lane, given
its own events merged with the stored events of their windows (copies) and each entity's
previous stored event (a note), emits every such window as the sorted computation over all
of the entity's events; stage 1 takes copies once per (event, key) and only for their keys;
the sink skips what the history lane's input holds besides imported history; `rhythm
backfill` leaves out what the live lane may still change."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect

from rhythm.processors import copies
from rhythm.processors.explode import entity_keys
from rhythm.processors.lanes import too_late
from rhythm.processors.messages import ROUTED
from rhythm.processors.settings import ProcessorSettings
from rhythm.processors.signals.conversation import ReplyConfig
from rhythm.processors.signals.entity import SignalConfig
from rhythm.processors.stage1 import SKIP, Stage1Config, Stage1Partition
from rhythm.processors.stage2 import Stage2Partition
from rhythm.producers.prepare import prepare_event
from rhythm.schemas import decode_event, encode_event
from rhythm.schemas.keys import EntityKey, context_key, entity_key
from rhythm.schemas.topics import (
    HISTORY_KEYS_HEADER,
    HISTORY_KIND_HEADER,
    KIND_COPY,
    KIND_NOTE,
    KIND_ROUTED,
    KIND_ROUTED_EXPANDED,
)
from rhythm.sinks.batcher import Batcher
from rhythm.sinks.migrations import migrate
from rhythm.sinks.store import Store
from rhythm.sinks.tables import EVENTS
from rhythm.sinks.tables.events import process as process_event
from rhythm.sinks.tables.rows import Message, Skipped
from rhythm.stack.backfill import cut, split_recent, with_copies

from .test_stages import wire

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
D0 = 1_790_000_000_000 - 1_790_000_000_000 % DAY  # a midnight, UTC
NOW = D0 + 10 * DAY
L = 5 * MIN
SIZES = (HOUR, DAY)
HISTORY = Stage1Config(
    updates_partitions=1, dedup_horizon_ms=DAY + L, lateness_ms=L, window_sizes_ms=SIZES,
    late_retention_ms=DAY, follow_clock=False, takes_copies=True,
)  # fmt: skip
U1 = entity_key("acme", "actor", "user", "u-1")
TAG = entity_key("acme", "tag", "tag", "x")


def rows_of(values: list[bytes]) -> list[dict[str, Any]]:
    """What the store's entity_events holds for these events: a row per (event, key)."""
    out = []
    for value in values:
        r = decode_event(value)
        for key in entity_keys(r):
            k = EntityKey.decode(key)
            out.append(
                {
                    **k.fields(), "role": k.role, "event_id": r["event_id"],
                    "ts": r["occurred_at"], "verb": r["verb"], "actor_type": r["actor_type"],
                    "actor_id": r["actor_id"], "object_type": r["object_type"],
                    "object_id": r["object_id"], "target_type": r["target_type"],
                    "target_id": r["target_id"], "channel": r["channel"],
                    "context_id": r["context_id"], "weight": r["weight"], "tags": r["tags"],
                }
            )  # fmt: skip
    return out


def within(rows: list[dict[str, Any]], spans: dict[str, copies.Span]) -> list[dict[str, Any]]:
    """What `copies.stored_queries` selects."""
    out = []
    for row in rows:
        span = spans.get(copies.row_key(row))
        if span is not None and span[0] <= row["ts"] < span[1]:
            out.append(row)
    return out


def neighbours(
    rows: list[dict[str, Any]], spans: dict[str, copies.Span], before: bool
) -> list[dict[str, Any]]:
    """What `copies.neighbour_queries` selects: per key its last row before the span, or
    its first at or after its end."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = copies.row_key(row)
        span = spans.get(key)
        if span is None:
            continue
        outside = row["ts"] < span[0] if before else row["ts"] >= span[1]
        closer = key not in best or (row["ts"] > best[key]["ts"]) == before
        if outside and closer:
            best[key] = {**row, "id": row["event_id"]}
    return list(best.values())


def run_history_lane(messages: list[tuple[int, bytes, copies.Headers]]) -> dict[Any, Any]:
    """The history lane's two stages over what was published; the latest version of each
    window after its idle flush."""
    source = Stage1Partition(0, HISTORY)
    proc = Stage2Partition(
        0, 1, SignalConfig(window_sizes_ms=SIZES, lateness_ms=L, late_retention_ms=DAY),
        ReplyConfig(lateness_ms=L), ProcessorSettings().alert_policy(),
    )  # fmt: skip
    batch: list[tuple[int, bytes | None]] = [(i, v) for i, (_, v, _) in enumerate(messages)]
    marks = {}
    for i, (_, _, headers) in enumerate(messages):
        h = dict(headers)
        kind = h.get(HISTORY_KIND_HEADER)
        if kind in (KIND_COPY.encode(), KIND_NOTE.encode()):
            marks[i] = (kind.decode(), tuple(json.loads(h[HISTORY_KEYS_HEADER])))
    signals = []
    out = source.process(batch, NOW, 0.0, marks)
    signals += proc.apply(out.messages[0]).signals
    flush = source.tick(len(batch), NOW, 100.0)
    assert flush is not None
    signals += proc.apply(flush.messages[0]).signals
    latest: dict[Any, Any] = {}
    for s in signals:
        key = (entity_key(s["tenant"], s["role"], s["entity_type"], s["entity_id"]),
               s["window_seconds"] * 1000, s["window_start"])  # fmt: skip
        if key not in latest or latest[key]["version"] < s["version"]:
            latest[key] = s
    return latest


def reference(values: list[bytes]) -> dict[Any, Any]:
    """Each window of each key, computed the plain way from all the entity's events."""
    per_key: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for value in values:
        r = decode_event(value)
        for key in entity_keys(r):
            per_key[key].append((r["occurred_at"], r["weight"]))
    out: dict[Any, Any] = {}
    for key, items in per_key.items():
        items.sort()
        for size in SIZES:
            previous = None
            for ts, weight in items:
                w = out.setdefault((key, size, ts - ts % size), {"n": 0, "sum": 0.0, "gaps": []})
                w["n"] += 1
                w["sum"] += weight
                if previous is not None:
                    w["gaps"].append(ts - previous)
                previous = ts
    return out


def check(got: dict[Any, Any], ref: dict[Any, Any]) -> None:
    for key, s in got.items():
        assert key in ref, f"a window with no events: {key}"
        r = ref[key]
        assert (s["event_count"], s["gap_count"]) == (r["n"], len(r["gaps"])), key
        assert abs(s["weight_sum"] - r["sum"]) < 1e-9, key
        if r["gaps"]:
            assert (s["gap_min_s"], s["gap_max_s"]) == (
                min(r["gaps"]) / 1000,
                max(r["gaps"]) / 1000,
            )
            assert s["silence_before_s"] is None or s["silence_before_s"] * 1000 in r["gaps"]


def live_and_imported() -> tuple[list[bytes], list[bytes]]:
    live = [wire(D0 - 5 * HOUR, actor="u-1", weight=3.0)]  # before the import's day
    live += [
        wire(D0 + i * 40 * MIN, actor="u-1", weight=1.0 + i % 3, tags=["x"] if i % 2 else [])
        for i in range(0, 72)
    ]  # two days, every 40 minutes
    imported = [
        wire(D0 + 3 * HOUR + i * 50 * MIN + 7 * MIN, actor="u-1", weight=2.5, tags=["x"])
        for i in range(20)
    ]
    imported += [wire(D0 + 4 * HOUR + i * HOUR, actor="u-2") for i in range(5)]  # only history
    return live, imported


def test_a_window_holding_live_and_imported_events_is_the_sorted_computation_of_all() -> None:
    live, imported = live_and_imported()
    stored = rows_of(live)
    own = [(decode_event(v)["occurred_at"], v) for v in imported]
    touched = [(ts, entity_keys(decode_event(v))) for ts, v in own]
    spans = copies.spans(touched, SIZES)
    assert spans[U1] == (D0, D0 + DAY) and spans[TAG] == (D0, D0 + DAY)
    spans, kept = copies.extend(spans, neighbours(stored, spans, False), SIZES, lambda ts: True)
    assert kept == [] and spans[U1] == (D0, D0 + 2 * DAY)  # to the next event's day
    merged = copies.merge(
        [(ts, decode_event(v)["event_id"], v, []) for ts, v in own],
        within(stored, spans),
        neighbours(stored, spans, True),
        spans,
        stored_wins=True,
    )
    assert merged.notes == 1  # u-1's event before the day; the tag and u-2 have none
    assert merged.copies == 72 and merged.already_stored == 0
    assert [ts for ts, _, _ in merged.messages] == sorted(ts for ts, _, _ in merged.messages)
    got = run_history_lane(merged.messages)
    ref = reference(live + imported)
    check(got, ref)
    # every window of the spans with events is re-emitted, and nothing outside them
    in_spans = {k for k in ref if k[0] in spans and spans[k[0]][0] <= k[2] < spans[k[0]][1]}
    assert set(got) == in_spans
    first = got[(U1, DAY, D0)]
    assert first["silence_before_s"] == 5 * HOUR / 1000  # the gap from the noted event
    assert first["event_count"] == 36 + 20


def test_without_the_stored_events_the_history_lane_counts_only_its_own() -> None:
    """What the copies fix: the same import alone gives other windows than all events."""
    live, imported = live_and_imported()
    own: list[tuple[int, bytes, copies.Headers]] = [
        (decode_event(v)["occurred_at"], v, []) for v in imported
    ]
    got = run_history_lane(sorted(own, key=lambda m: m[0]))
    assert got[(U1, DAY, D0)]["event_count"] == 20 != reference(live + imported)[(U1, DAY, D0)]["n"]


def test_an_imported_event_already_stored_is_sent_as_a_copy_and_a_routed_one_as_itself() -> None:
    live, _ = live_and_imported()
    again = live[10]  # e.g. a mail archive holding what the IMAP connector sent live
    record = decode_event(again)
    ts = record["occurred_at"]
    spans = copies.spans([(ts, entity_keys(record))], SIZES)
    stored = within(rows_of(live), spans)
    own = [(ts, record["event_id"], again, copies.headers(KIND_ROUTED_EXPANDED))]
    imported = copies.merge(own, stored, [], spans, stored_wins=True)
    assert imported.already_stored == 1
    kinds = [dict(h)[HISTORY_KIND_HEADER] for _, _, h in imported.messages]
    assert kinds.count(KIND_COPY.encode()) == len(kinds)  # nothing new for the sink
    routed = copies.merge(own, stored, [], spans, stored_wins=False)
    assert routed.already_stored == 0
    mine = [m for m in routed.messages if m[1] == again]
    assert len(mine) == 1 and dict(mine[0][2])[HISTORY_KIND_HEADER] == KIND_ROUTED_EXPANDED.encode()
    # its stored rows are not copied too (it would count twice)
    assert routed.copies == imported.copies - 1


def test_extend_stops_at_windows_the_live_lane_may_still_change() -> None:
    spans = {U1: (D0, D0 + DAY)}
    following = [{**EntityKey.decode(U1).fields(), "role": "actor", "ts": D0 + 3 * DAY + HOUR}]
    out, kept = copies.extend(spans, following, SIZES, lambda ts: ts < D0 + 3 * DAY)
    assert (out, [copies.row_key(r) for r in kept]) == (spans, [U1])
    out, kept = copies.extend(spans, following, SIZES, lambda ts: True)
    assert (out[U1], kept) == ((D0, D0 + 4 * DAY), [])


def test_stage1_takes_a_copy_once_per_event_and_key_and_only_for_its_keys() -> None:
    source = Stage1Partition(0, HISTORY)
    event = wire(
        D0 + HOUR, actor="u-1", tags=["x"], object=("doc", "d-1"),
        event_id="0190c1a1-0000-7000-8000-000000000001",
    )  # fmt: skip
    marks = {
        0: (KIND_COPY, (U1,)),
        1: (KIND_COPY, (U1, TAG)),  # the same event for the tag too (another span)
        2: (KIND_NOTE, (U1,)),
        3: (SKIP, ()),
    }
    note = wire(D0 - HOUR, actor="other")
    out = source.process([(0, event), (1, event), (2, note), (3, event)], NOW, 0.0, marks)
    updates = out.messages[0]["u"]
    counted = [(u[0], u[1]) for u in updates if len(u) == 5]
    assert counted == [(U1, D0 + HOUR), (TAG, D0 + HOUR)]  # u-1 once, the tag once
    noted = [(u[0], u[1]) for u in updates if len(u) == 6 and u[5] == ROUTED]
    assert noted == [(U1, D0 - HOUR)]  # only a time, for the keys it was sent for
    assert (out.events, out.copies, out.notes, out.duplicates) == (0, 2, 1, 0)
    assert "c" not in out.messages[0]  # no thread update for a copy
    assert source.next_offset == 4  # a skipped message is done
    # the event itself after its copies: the lane has it, for those keys (the rest, new)
    again = source.process([(4, event)], NOW, 1.0)
    assert again.events == 1 and again.duplicates == 0
    doc = entity_key("acme", "object", "doc", "d-1")
    assert [u[0] for u in again.messages[0]["u"]] == [doc]
    # a copy after the event itself: dropped
    late = source.process([(5, event)], NOW, 2.0, {5: (KIND_COPY, (U1,))})
    assert (late.copies, late.duplicates) == (0, 1)


def test_the_sink_stores_imported_history_and_skips_routed_events_copies_and_notes() -> None:
    value = wire(D0, actor="u-1")
    plain = Message("rhythm.history", 0, 7, D0, None, value)
    assert isinstance(process_event(plain), tuple)
    batcher = Batcher(10, 10**6, 60.0)
    for offset, kind in enumerate((KIND_ROUTED, KIND_ROUTED_EXPANDED, KIND_COPY, KIND_NOTE)):
        message = Message(
            "rhythm.history", 0, offset, D0, None, value, ((HISTORY_KIND_HEADER, kind.encode()),)
        )
        outcome = process_event(message)
        assert isinstance(outcome, Skipped) and outcome.why == kind
        batcher.add("events", message, outcome, 0.0)
    batcher.add("events", plain, process_event(plain), 0.0)
    (batch,) = batcher.seal_all()
    assert (len(batch.rows), batch.skipped, batch.messages) == (1, 4, 5)
    assert (batch.start, batch.end) == (0, 7)


def test_backfill_cut_is_where_the_live_lane_stops_routing() -> None:
    for watermark in (NOW, NOW + 5 * MIN, NOW + L + 17 * HOUR + 3):
        boundary = cut(watermark, SIZES, L, DAY)
        assert too_late(boundary - 1, watermark, SIZES, L, DAY)
        assert not too_late(boundary, watermark, SIZES, L, DAY)
    events = [(NOW - 3 * DAY, b"a"), (NOW - HOUR, b"b")]
    assert split_recent(events, cut(NOW, SIZES, L, DAY)) == ([events[0]], [events[1]])


def test_the_store_queries_select_what_the_merge_expects(tmp_path: Path) -> None:
    """copies.py's SQL on the real engine (entity_events filled by its view from events)
    gives the rows the pure model above gives."""
    live, imported = live_and_imported()
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'clickhouse'}")
    try:
        migrate(client, "rhythm")
        rows = [process_event(Message("ev", 0, i, D0, None, v)) for i, v in enumerate(live)]
        Store(client, "rhythm").insert(EVENTS, [r for r in rows if isinstance(r, tuple)], "t")

        def run(sql: str) -> list[dict[str, Any]]:
            return [dict(r) for r in client.query(sql).named_results()]

        stored = rows_of(live)
        touched = [(decode_event(v)["occurred_at"], entity_keys(decode_event(v))) for v in imported]
        spans = copies.spans(touched, SIZES)
        for before in (True, False):
            got = [r for sql in copies.neighbour_queries("rhythm", spans, before) for r in run(sql)]
            want = neighbours(stored, spans, before)
            assert sorted((copies.row_key(r), str(r["id"]), int(r["ts"])) for r in got) == sorted(
                (copies.row_key(r), r["id"], r["ts"]) for r in want
            )
        got = [r for sql in copies.stored_queries("rhythm", spans) for r in run(sql)]
        want = within(stored, spans)
        assert len(got) == len(want) > 0
        assert sorted((copies.row_key(r), str(r["event_id"]), int(r["ts"])) for r in got) == sorted(
            (copies.row_key(r), r["event_id"], r["ts"]) for r in want
        )
        # a copy rebuilt from a stored row is the stored event, for the stage's purposes
        row = got[0]
        record = decode_event(encode_event(copies.stored_record(row)))
        original = decode_event(
            next(v for v in live if decode_event(v)["event_id"] == str(row["event_id"]))
        )
        assert entity_keys(record) == entity_keys(original)
        assert (record["occurred_at"], record["weight"]) == (
            original["occurred_at"],
            original["weight"],
        )
    finally:
        client.close()


def test_a_stored_next_event_the_live_lane_still_keeps_is_imported_again_once_it_is_done(
    tmp_path: Path,
) -> None:
    """An import ends two days before an entity's next stored (live) event, whose day the
    live lane still keeps: the import goes at once, that next event is returned to wait
    (`next_events`), and imported again later (already stored: as a copy) it makes the
    history lane re-emit its day with the import's last event as the previous one: the
    first gap after the history is the sorted computation's. Re-importing it asks for
    nothing more to wait (no chain)."""
    history = [wire(D0 + h * HOUR, actor="u-1") for h in (1, 5, 30)]
    live = [wire(D0 + 3 * DAY + h * HOUR, actor="u-1") for h in (2, 4, 25)]
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'clickhouse'}")
    try:
        migrate(client, "rhythm")

        def store(values: list[bytes]) -> None:
            rows = [process_event(Message("ev", 0, i, D0, None, v)) for i, v in enumerate(values)]
            Store(client, "rhythm").insert(EVENTS, [r for r in rows if isinstance(r, tuple)], "t")

        def run(sql: str) -> list[dict[str, Any]]:
            return [dict(r) for r in client.query(sql).named_results()]

        store(live)
        timed = [(decode_event(v)["occurred_at"], v) for v in history]
        not_yet = lambda ts: ts < D0 + 3 * DAY  # noqa: E731  (the live lane keeps day 3)
        first, following = with_copies(timed, run, "rhythm", SIZES, not_yet)
        assert [ts for ts, _ in following] == [D0 + 3 * DAY + 2 * HOUR]  # u-1's next; once
        store(history)  # the sink stores the import
        # later, the live lane done with day 3 (not 4): the next event imported again, from
        # the store; the one after it is no import's to change
        again, more = with_copies(following, run, "rhythm", SIZES, lambda ts: ts < D0 + 4 * DAY)
        assert again.already_stored == 1 and more == []
        latest = run_history_lane(first.messages + again.messages)
        day3 = (U1, DAY, D0 + 3 * DAY)
        check({day3: latest[day3]}, reference(history + live))
        assert latest[day3]["silence_before_s"] == (2 * DAY - 4 * HOUR) / 1000  # from hour 30
        # without it, day 3 is the live lane's: no previous event, the history unknown to it
        assert day3 not in run_history_lane(first.messages)
    finally:
        client.close()


def test_a_threads_live_reply_to_an_imported_message_is_a_copy_for_the_thread(
    tmp_path: Path,
) -> None:
    """An imported customer email whose reply was live (stored): `rhythm backfill` gives the
    history lane the reply as a copy for the thread's key too (from the tenant's time in the
    lane on), stage 1 sends its thread update marked a copy, once, and stage 2 learns the
    wait with its real delay and hands it off; the wait the live reply opened is not."""

    def iso_ms(ts: int) -> str:
        return datetime.fromtimestamp(ts / 1000, UTC).isoformat().replace("+00:00", "Z")

    def message(ts: int, sender: tuple[str, str], verb: str) -> bytes:
        record, _ = prepare_event({
            "tenant": "acme", "occurred_at": iso_ms(ts), "actor": sender, "verb": verb,
            "context_id": "t-1", "channel": "email",
        })  # fmt: skip
        return encode_event(record)

    asked = message(D0 + HOUR, ("contact", "c-1"), "wrote")
    reply = message(D0 + HOUR + 25 * MIN, ("employee", "e-1"), "replied")
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'clickhouse'}")
    try:
        migrate(client, "rhythm")
        row = process_event(Message("ev", 0, 0, D0, None, reply))
        assert isinstance(row, tuple)
        Store(client, "rhythm").insert(EVENTS, [row], "t")

        def run(sql: str) -> list[dict[str, Any]]:
            return [dict(r) for r in client.query(sql).named_results()]

        timed = [(D0 + HOUR, asked)]
        merged, _ = with_copies(timed, run, "rhythm", SIZES, lambda ts: True)
        ctx = context_key("acme", "t-1")
        (copy,) = [h for _, _, h in merged.messages if h]
        assert ctx in json.loads(dict(copy)[HISTORY_KEYS_HEADER])
        # the lane's time for the tenant past the reply: the lane has the thread already
        later, _ = with_copies(timed, run, "rhythm", SIZES, lambda ts: True, {"acme": D0 + DAY})
        assert not any(ctx in dict(h).get(HISTORY_KEYS_HEADER, b"").decode()
                       for _, _, h in later.messages)  # fmt: skip
    finally:
        client.close()
    source = Stage1Partition(0, HISTORY)
    batch: list[tuple[int, bytes | None]] = [(i, v) for i, (_, v, _) in enumerate(merged.messages)]
    marks = {
        i: (KIND_COPY, tuple(json.loads(dict(h)[HISTORY_KEYS_HEADER])))
        for i, (_, _, h) in enumerate(merged.messages)
        if h
    }
    out = source.process(batch, NOW, 0.0, marks)
    contexts = out.messages[0]["c"]
    assert [(c[0], c[1], len(c)) for c in contexts] == [
        (ctx, D0 + HOUR, 9), (ctx, D0 + HOUR + 25 * MIN, 10),
    ]  # fmt: skip
    again = source.process([(len(batch), batch[-1][1])], NOW, 1.0, {len(batch): marks[1]})
    assert "c" not in again.messages[0]  # once per (event, thread)
    policy = ProcessorSettings().alert_policy()
    proc = Stage2Partition(
        0, 1, SignalConfig(window_sizes_ms=SIZES, lateness_ms=L, late_retention_ms=DAY),
        ReplyConfig(lateness_ms=L), policy, hand_off=True,
    )  # fmt: skip
    proc.apply(out.messages[0])
    flush = source.tick(len(batch) + 1, NOW, 100.0)
    assert flush is not None
    handed = proc.apply(flush.messages[0]).replies
    assert [(r[0], [w[3] for w in r[2]]) for r in handed] == [(ctx, [25 * MIN])]

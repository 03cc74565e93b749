"""Batching: bounds, one topic-partition per batch, stable tokens, and exact rebuilding of
the batches a crashed run was writing (from the intent in the commit metadata)."""

from __future__ import annotations

from prometheus_client import generate_latest

from rhythm.sinks.batcher import Batch, Batcher, intent_metadata, parse_intent
from rhythm.sinks.metrics import SinkMetrics
from rhythm.sinks.tables.rows import DeadLetter, Message

IDS = {"ev": "topic-uuid-1"}


def msg(offset: int, partition: int = 0, size: int = 10, topic: str = "ev") -> Message:
    return Message(topic, partition, offset, 1000 + offset, None, b"x" * size)


def feed(
    batcher: Batcher, offsets: range, partition: int = 0, now: float = 0.0, size: int = 10
) -> list[Batch]:
    sealed: list[Batch] = []
    for offset in offsets:
        m = msg(offset, partition, size)
        sealed += batcher.add("events", m, (offset,), now)
    return sealed


def ranges(batches: list[Batch]) -> list[tuple[int, int, int]]:
    return [(b.partition, b.start, b.end) for b in batches]


def test_batches_are_cut_at_max_rows_and_hold_one_partition_each() -> None:
    b = Batcher(max_rows=3, max_bytes=10**9, max_seconds=60, topic_ids=IDS)
    sealed = feed(b, range(0, 7)) + feed(b, range(0, 2), partition=1)
    assert ranges(sealed) == [(0, 0, 2), (0, 3, 5)]
    assert b.messages == 3 and b.open_batches() == 2
    rest = b.seal_all()
    assert sorted(ranges(rest)) == [(0, 6, 6), (1, 0, 1)]
    assert b.messages == 0 and b.nbytes == 0


def test_batches_are_cut_at_max_bytes() -> None:
    b = Batcher(max_rows=1000, max_bytes=25, max_seconds=60)
    assert ranges(feed(b, range(0, 6), size=10)) == [(0, 0, 2), (0, 3, 5)]


def test_batches_are_cut_by_age() -> None:
    b = Batcher(max_rows=1000, max_bytes=10**9, max_seconds=1.0)
    feed(b, range(0, 3), now=10.0)
    feed(b, range(0, 1), partition=1, now=10.6)
    assert b.due(10.9) == []
    assert ranges(b.due(11.0)) == [(0, 0, 2)]
    assert ranges(b.due(11.6)) == [(1, 0, 0)]


def test_dead_letters_travel_in_their_batch_and_count_as_messages() -> None:
    b = Batcher(max_rows=3, max_bytes=10**9, max_seconds=60)
    b.add("events", msg(0), (0,), 0)
    b.add("events", msg(1), DeadLetter(msg(1), "bad_magic", "x"), 0)
    (batch,) = b.add("events", msg(2), (2,), 0)
    assert batch.rows == [(0,), (2,)]
    assert [d.reason for d in batch.dead] == ["bad_magic"]
    assert batch.messages == 3


def test_the_token_names_topic_id_partition_and_offsets() -> None:
    b = Batcher(max_rows=2, max_bytes=10**9, max_seconds=60, topic_ids=IDS)
    (batch,) = feed(b, range(10, 12), partition=3)
    assert batch.token() == "rhythm:ev:topic-uuid-1:3:10-11"
    assert batch.dead_token() == batch.token() + ":dead"
    # A topic created again under the same name has another id: other tokens.
    other = Batcher(max_rows=2, max_bytes=10**9, max_seconds=60, topic_ids={"ev": "new-id"})
    (again,) = feed(other, range(10, 12), partition=3)
    assert again.token() != batch.token()


def test_intent_metadata_round_trips_and_ignores_anything_else() -> None:
    assert parse_intent(intent_metadata([5, 9, 12])) == [5, 9, 12]
    assert intent_metadata([]) == ""
    for other in (None, "", "rhythm-sink/1 ends=", "rhythm-sink/1 ends=4,x", "x", "ends=1"):
        assert parse_intent(other) == []
    assert parse_intent("rhythm-sink/1 ends=9,5") == []  # not in order: not ours


def test_a_crashed_runs_batches_are_rebuilt_exactly_whatever_the_limits() -> None:
    # Run 1 cut small batches by time: [0..3] and [4..5] were being written when it died.
    run1 = Batcher(max_rows=1000, max_bytes=10**9, max_seconds=1.0, topic_ids=IDS)
    feed(run1, range(0, 4), now=0.0)
    first = run1.due(1.0)
    feed(run1, range(4, 6), now=1.0)
    second = run1.due(2.0)
    written = first + second
    assert ranges(written) == [(0, 0, 3), (0, 4, 5)]
    intent = intent_metadata([b.end for b in written])

    # Run 2 has a bigger backlog and other limits; the committed offset is 0 with the intent.
    run2 = Batcher(max_rows=50, max_bytes=10**9, max_seconds=0.001, topic_ids=IDS)
    run2.expect("ev", 0, 0, parse_intent(intent))
    rebuilt = feed(run2, range(0, 120), now=100.0)
    assert [b.token() for b in rebuilt[:2]] == [b.token() for b in written]
    assert [b.rows for b in rebuilt[:2]] == [b.rows for b in written]
    # ...then it goes on with its own limits.
    assert ranges(rebuilt[2:]) == [(0, 6, 55), (0, 56, 105)]
    assert rebuilt[0].forced and not rebuilt[2].forced


def test_a_batch_being_rebuilt_waits_for_its_last_offset_not_the_clock() -> None:
    b = Batcher(max_rows=2, max_bytes=10, max_seconds=0.5, topic_ids=IDS)
    b.expect("ev", 0, 100, [104])
    assert feed(b, range(100, 103), now=0.0) == []  # past max_rows, max_bytes: still open
    assert b.due(60.0) == []
    (batch,) = feed(b, range(103, 105), now=60.0)
    assert (batch.start, batch.end, batch.messages) == (100, 104, 5)


def test_rebuilding_skips_what_retention_deleted() -> None:
    b = Batcher(max_rows=100, max_bytes=10**9, max_seconds=60, topic_ids=IDS)
    b.expect("ev", 0, 0, [9, 19, 29])
    # Offsets 0..14 are gone: the first batch is empty, the second closes short at 19.
    sealed = feed(b, range(15, 31))
    assert ranges(sealed) == [(0, 10, 19), (0, 20, 29)]
    assert [b.token().rsplit(":", 1)[1] for b in sealed] == ["10-19", "20-29"]
    assert ranges(b.seal_all()) == [(0, 30, 30)]


def test_seal_largest_and_drop() -> None:
    b = Batcher(max_rows=100, max_bytes=10**9, max_seconds=60)
    feed(b, range(0, 5), partition=0)
    feed(b, range(0, 9), partition=1)
    largest = b.seal_largest()
    assert largest is not None and (largest.partition, largest.messages) == (1, 9)
    assert b.drop("ev", 0) == (5, 50)
    assert b.messages == 0 and b.seal_largest() is None
    assert b.drop("ev", 0) == (0, 0)


def test_a_full_buffer_never_cuts_a_batch_being_rebuilt() -> None:
    # The first run wrote [0..2999] of each partition and died before its commit. Cut short,
    # the rebuilt batch would get another token, and ClickHouse would keep both copies.
    b = Batcher(max_rows=100, max_bytes=10**9, max_seconds=60, topic_ids=IDS)
    b.expect("ev", 0, 0, [2999])
    b.expect("ev", 1, 0, [2999])
    feed(b, range(0, 1000), partition=0)
    feed(b, range(0, 1500), partition=1)
    feed(b, range(0, 40), partition=2)  # not rebuilt: may be cut
    largest = b.seal_largest()
    assert largest is not None and ranges([largest]) == [(2, 0, 39)]
    assert b.seal_largest() is None
    # The caller reads on from the one closest to its end, which then closes exactly.
    assert b.nearest_rebuilt() == (("ev", 1), 1500)
    (rebuilt,) = feed(b, range(1500, 3000), partition=1)
    assert rebuilt.token() == "rhythm:ev:topic-uuid-1:1:0-2999"
    assert b.nearest_rebuilt() == (("ev", 0), 2000)


def test_a_rebuilt_batch_the_log_ends_before_is_closed_short_on_request() -> None:
    b = Batcher(max_rows=100, max_bytes=10**9, max_seconds=60, topic_ids=IDS)
    b.expect("ev", 0, 0, [9, 19])
    feed(b, range(0, 5))
    assert b.open_end(("ev", 0)) == 4 and b.open_end(("ev", 1)) == -1
    feed(b, range(0, 3), partition=1)  # not rebuilt
    assert b.rebuilding() == [("ev", 0)]
    short = b.seal_short("ev", 0)
    assert short is not None and ranges([short]) == [(0, 0, 4)]
    assert b.seal_short("ev", 0) is None
    # The rest of the first batch, if it comes, is a batch of its own; then the second.
    assert ranges(feed(b, range(5, 20))) == [(0, 5, 9), (0, 10, 19)]


def test_freshness_histogram_takes_a_whole_batch() -> None:
    metrics = SinkMetrics()
    metrics.freshness.observe_many([0.05, 0.3, 0.3, 7200.0, 10**6], "events")
    text = generate_latest(metrics.registry).decode()
    assert 'rhythm_sink_freshness_seconds_bucket{le="0.1",table="events"} 1.0' in text
    assert 'rhythm_sink_freshness_seconds_bucket{le="0.5",table="events"} 3.0' in text
    assert 'rhythm_sink_freshness_seconds_bucket{le="21600",table="events"} 4.0' in text
    assert 'rhythm_sink_freshness_seconds_bucket{le="+Inf",table="events"} 5.0' in text
    assert 'rhythm_sink_freshness_seconds_count{table="events"} 5.0' in text

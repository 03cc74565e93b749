"""Mixed windows, pure: what the history lane must be given besides its own events so that
every window it emits holds every event of its entity, live or history (ARCHITECTURE.md,
"the history lane").

The history lane re-emits, with versions that win in the store, every window holding an
event it is given. For a window that also holds live events, it must see those too, and for
the first gap of what it is given, the entity's previous event. So, per entity key touched
(`spans`): the whole largest windows holding its history events (a contiguous *span*), the
events the store already holds in it (re-sent as *copies*, counted only for that key), and
its last stored event before the span (a *note*: only its time). Per thread touched
(`threads`), its stored messages from where the lane's time for the tenant is to the end of
the import's windows, as copies for the thread's key (its `unanswered` rule sees the live
replies to imported messages; conversation.py neither alerts on nor hands off a wait a
copy opened). `rhythm backfill` also
extends a span to the window of the entity's next stored event, whose gap an import may
change, when the live lane will never change that window again; when it still may, that
next event is imported again later, from the store (`stored_record`), once it will not.

Everything here is plain data: the SQL text for the store's `entity_events` (sorted by
tenant, entity type, id and time), the rows it answers as dicts, and the messages to publish
to `rhythm.history` (value and headers, `rhythm.schemas.topics`). The I/O is the caller's
(`rhythm.stack.backfill`, `rhythm.processors.expansion`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rhythm.schemas import encode_event
from rhythm.schemas.keys import EntityKey, context_key
from rhythm.schemas.topics import (
    HISTORY_KEYS_HEADER,
    HISTORY_KIND_HEADER,
    KIND_COPY,
    KIND_NOTE,
    KIND_REWIND,
)

#: (start, end) in epoch ms: [start, end), whole windows of the largest size
Span = tuple[int, int]
Headers = list[tuple[str, bytes]]
#: keys per query: each adds a condition to the WHERE (ClickHouse's max_query_size is 256 KiB)
KEYS_PER_QUERY = 400


def span_of(ts: int, window_sizes_ms: Sequence[int]) -> Span:
    """The largest window holding `ts` (the others nest in it)."""
    size = max(window_sizes_ms)
    start = ts - ts % size
    return start, start + size


def spans(
    events: Iterable[tuple[int, Iterable[str]]], window_sizes_ms: Sequence[int]
) -> dict[str, Span]:
    """Per entity key of the (event time, keys) given: from the largest window of its
    oldest event to the end of that of its newest, all of it (the gaps within are exact
    only if the lane sees every event between)."""
    out: dict[str, Span] = {}
    for ts, keys in events:
        start, end = span_of(ts, window_sizes_ms)
        for key in keys:
            old = out.get(key)
            out[key] = (start, end) if old is None else (min(old[0], start), max(old[1], end))
    return out


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _key_condition(key: str) -> str:
    k = EntityKey.decode(key)
    return (
        f"tenant = {_quote(k.tenant)} AND entity_type = {_quote(k.entity_type)} "
        f"AND entity_id = {_quote(k.entity_id)} AND role = {_quote(k.role)}"
    )


def _ms(column: str = "occurred_at") -> str:
    return f"toUnixTimestamp64Milli({column})"


def _chunks(items: Mapping[str, Span]) -> list[dict[str, Span]]:
    keys = sorted(items)
    return [
        {k: items[k] for k in keys[i : i + KEYS_PER_QUERY]}
        for i in range(0, len(keys), KEYS_PER_QUERY)
    ]


# Aliases never reuse a column's name: ClickHouse would take the alias inside the expression.
_ROW = (
    "tenant, role, entity_type, entity_id, event_id, "
    f"{_ms()} AS ts, verb, actor_type, actor_id, object_type, object_id, target_type, "
    "target_id, channel, context_id, weight, tags"
)


def _wheres(spans_of: Mapping[str, Span], when: Callable[[Span], str]) -> list[str]:
    """One WHERE per chunk of keys: each key's entity, and `when` of its span."""
    return [
        " OR ".join(f"({_key_condition(k)} AND {when(span)})" for k, span in chunk.items())
        for chunk in _chunks(spans_of)
    ]


def _at(ms: int) -> str:
    return f"fromUnixTimestamp64Milli({ms})"


def stored_queries(database: str, spans_of: Mapping[str, Span]) -> list[str]:
    """The stored (event, key) rows within each key's span, in time order."""
    return [
        f"SELECT DISTINCT {_ROW} FROM {database}.entity_events WHERE {where} "
        "ORDER BY ts, event_id, role"
        for where in _wheres(
            spans_of, lambda span: f"occurred_at >= {_at(span[0])} AND occurred_at < {_at(span[1])}"
        )
    ]


def tenant_queries(database: str, tenant: str, end_ms: int) -> list[str]:
    """Every stored (event, key) row of `tenant` before `end_ms`, in time order: what a
    rewound tenant's history is computed again from (`rhythm backfill`)."""
    return [
        f"SELECT DISTINCT {_ROW} FROM {database}.entity_events "
        f"WHERE tenant = {_quote(tenant)} AND occurred_at < {_at(end_ms)} "
        "ORDER BY ts, event_id, role"
    ]


def neighbour_queries(database: str, spans_of: Mapping[str, Span], before: bool) -> list[str]:
    """Per key, its last stored event before its span (`before`) or its first at or after
    the span's end: one row per key that has one (tenant, role, entity_type, entity_id, id:
    the event's, ts)."""
    pick, ts = ("argMax", "max") if before else ("argMin", "min")
    return [
        f"SELECT tenant, role, entity_type, entity_id, {pick}(event_id, occurred_at) AS id, "
        f"{ts}({_ms()}) AS ts FROM {database}.entity_events WHERE {where} "
        "GROUP BY tenant, role, entity_type, entity_id"
        for where in _wheres(
            spans_of,
            lambda span: (
                f"occurred_at < {_at(span[0])}" if before else f"occurred_at >= {_at(span[1])}"
            ),
        )
    ]


#: (tenant, context id) -> [from, to) in epoch ms
Threads = dict[tuple[str, str], Span]


def threads(
    events: Iterable[Mapping[str, Any]],
    spans_of: Mapping[str, Span],
    finals: Mapping[str, int],
) -> Threads:
    """The threads of the records given (wire records), each from its tenant's final time
    in the lane (`finals`; none: from the start: older messages the lane has already, or
    would take late) to the end of its tenant's spans (never later: the tenant's time in the
    lane moves with its copies)."""
    ends: dict[str, int] = {}
    for key, (_, end) in spans_of.items():
        tenant = EntityKey.decode(key).tenant
        ends[tenant] = max(end, ends.get(tenant, end))
    out: Threads = {}
    for record in events:
        context_id, tenant = record.get("context_id"), record["tenant"]
        if context_id is not None and tenant in ends:
            start = finals.get(tenant, -(2**62))
            if start < ends[tenant]:
                out[(tenant, context_id)] = (start, ends[tenant])
    return out


def thread_queries(database: str, threads_of: Threads) -> list[str]:
    """The stored (event, key) rows of each thread's messages within its span."""
    items = sorted(threads_of.items())
    chunks = [items[i : i + KEYS_PER_QUERY] for i in range(0, len(items), KEYS_PER_QUERY)]
    return [
        f"SELECT DISTINCT {_ROW} FROM {database}.entity_events WHERE "
        + " OR ".join(
            f"(tenant = {_quote(t)} AND context_id = {_quote(c)} "
            f"AND occurred_at >= {_at(max(start, 0))} AND occurred_at < {_at(end)})"
            for (t, c), (start, end) in chunk
        )
        + " ORDER BY ts, event_id, role"
        for chunk in chunks
    ]


def row_key(row: Mapping[str, Any]) -> str:
    return EntityKey.of(row).encode()


def extend(
    spans_of: Mapping[str, Span],
    next_rows: Iterable[Mapping[str, Any]],
    window_sizes_ms: Sequence[int],
    final: Any,
) -> tuple[dict[str, Span], list[Mapping[str, Any]]]:
    """Each key's span up to the end of the largest window of its next stored event, when
    `final(ts)` says the live lane will never change that event's windows again (its gap
    may change: its previous event may be one of the span's history events). Returns the
    spans and the next rows of the keys that could not be extended (their next event's
    windows are still the live lane's: imported again once they are not)."""
    out = dict(spans_of)
    kept: list[Mapping[str, Any]] = []
    for row in next_rows:
        key = row_key(row)
        if key not in out:
            continue
        ts = int(row["ts"])
        if final(ts):
            out[key] = (out[key][0], max(out[key][1], span_of(ts, window_sizes_ms)[1]))
        else:
            kept.append(row)
    return out, kept


def at_queries(database: str, rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The stored (event, key) rows of each row's key at exactly its time (`neighbour_queries`
    names an event by key and time): whole rows, for `stored_record`."""
    return stored_queries(database, {row_key(r): (int(r["ts"]), int(r["ts"]) + 1) for r in rows})


@dataclass
class Merged:
    """What to publish to `rhythm.history`, in time order: (event time, value, headers)."""

    messages: list[tuple[int, bytes, Headers]] = field(default_factory=list)
    copies: int = 0  # stored events re-sent (once per event, for all its keys in a span)
    notes: int = 0
    already_stored: int = 0  # given events the store already held: sent as copies instead


def stored_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row as a wire record: what the lane needs (time, weight, entities, thread);
    the fields `entity_events` does not keep are left empty (the sink never stores a copy)."""
    return {
        "event_id": str(row["event_id"]),
        "tenant": row["tenant"],
        "occurred_at": int(row["ts"]),
        "sent_at": None,
        "actor_type": row["actor_type"],
        "actor_id": row["actor_id"],
        "verb": row["verb"],
        "object_type": row["object_type"],
        "object_id": row["object_id"],
        "target_type": row["target_type"],
        "target_id": row["target_id"],
        "channel": row["channel"],
        "context_id": row["context_id"],
        "in_reply_to": None,
        "tags": list(row["tags"]),
        "weight": float(row["weight"]),
        "properties": {},
    }


def stored_events(rows: Iterable[Mapping[str, Any]]) -> list[tuple[int, bytes]]:
    """Stored rows (one per event and key) as wire events (`stored_record`), each event
    once, in time order."""
    by_id: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        by_id.setdefault(str(row["event_id"]), row)
    return sorted(
        ((int(r["ts"]), encode_event(stored_record(r))) for r in by_id.values()),
        key=lambda e: e[0],
    )


def headers(kind: str, keys: Iterable[str] = ()) -> Headers:
    out: Headers = [(HISTORY_KIND_HEADER, kind.encode())]
    keys = sorted(keys)
    if keys:
        out.append((HISTORY_KEYS_HEADER, json.dumps(keys).encode()))
    return out


def merge(
    own: Sequence[tuple[int, str, bytes, Headers]],
    stored: Iterable[Mapping[str, Any]],
    previous: Iterable[Mapping[str, Any]],
    spans_of: Mapping[str, Span],
    *,
    stored_wins: bool,
    thread_rows: Iterable[Mapping[str, Any]] = (),
) -> Merged:
    """The lane's input for these spans: its own events (`own`: event time, event id, wire
    value, headers), each stored event of a span as a copy for the keys whose span holds
    it (and for its thread's key, when it is one of `thread_rows`: `thread_queries`), and
    each key's previous stored event as a note, in time order (notes first, then by event
    time; equal times in a stable order).

    An event both given and stored: with `stored_wins` (an import) it is sent as a copy
    only (the sink holds it already; `already_stored`); else (a routed event, stored from
    the live topic) it is sent itself and its stored rows are left out."""
    own_ids = {event_id for _, event_id, _, _ in own}
    by_event: dict[str, tuple[Mapping[str, Any], set[str]]] = {}
    for row in stored:
        key = row_key(row)
        span = spans_of.get(key)
        ts = int(row["ts"])
        if span is None or not span[0] <= ts < span[1]:
            continue
        event_id = str(row["event_id"])
        if event_id in own_ids and not stored_wins:
            continue
        entry = by_event.setdefault(event_id, (row, set()))
        entry[1].add(key)
    for row in thread_rows:
        event_id = str(row["event_id"])
        if event_id in own_ids and not stored_wins:
            continue
        entry = by_event.setdefault(event_id, (row, set()))
        entry[1].add(context_key(row["tenant"], row["context_id"]))
    out = Merged()
    items: list[tuple[int, int, str, bytes, Headers]] = []
    for ts, event_id, value, extra in own:
        if event_id in by_event:
            out.already_stored += 1
            continue
        items.append((ts, 1, event_id, value, extra))
    for event_id, (row, keys) in by_event.items():
        out.copies += 1
        value = encode_event(stored_record(row))
        items.append((int(row["ts"]), 1, event_id, value, headers(KIND_COPY, keys)))
    notes: dict[str, tuple[int, set[str]]] = {}
    for row in previous:
        key = row_key(row)
        if key in spans_of:
            note_of = notes.setdefault(str(row["id"]), (int(row["ts"]), set()))
            note_of[1].add(key)
    for event_id, (ts, keys) in notes.items():
        out.notes += 1
        note = {**_NOTE, "event_id": event_id, "tenant": EntityKey.decode(min(keys)).tenant}
        items.append(
            (ts, 0, event_id, encode_event({**note, "occurred_at": ts}), headers(KIND_NOTE, keys))
        )
    items.sort(key=lambda i: (i[0], i[1], i[2]))
    out.messages = [(ts, value, extra) for ts, _, _, value, extra in items]
    return out


# A note is only a time for its keys: the rest of the record is a placeholder the lane
# never reads (stage 1 takes the keys from the header).
_NOTE: dict[str, Any] = {
    "sent_at": None, "actor_type": "note", "actor_id": "note", "verb": "note",
    "object_type": None, "object_id": None, "target_type": None, "target_id": None,
    "channel": None, "context_id": None, "in_reply_to": None, "tags": [], "weight": 1.0,
    "properties": {},
}  # fmt: skip


def rewind_message(tenant: str, epoch: int) -> tuple[bytes, Headers]:
    """The message that starts a tenant's next epoch in the history lane (value, headers:
    rhythm.schemas.topics, `rewind`)."""
    return json.dumps({"tenant": tenant, "epoch": epoch}).encode(), headers(KIND_REWIND)


def read_rewind(value: bytes) -> tuple[str, int] | None:
    """(tenant, epoch) of a `rewind_message`; None if it is not one."""
    try:
        body = json.loads(value)
        tenant, epoch = body["tenant"], body["epoch"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(tenant, str) or not isinstance(epoch, int) or epoch < 1:
        return None
    return tenant, epoch

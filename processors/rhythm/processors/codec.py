"""Bytes for the processor's state (table values) and internal messages.

orjson over plain lists: the state is read back only at recovery, written once per changed
key per batch, and JSON keeps the changelog topics readable with `rhythm tail`.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from rhythm.processors.messages import UpdatesMessage
from rhythm.processors.signals.conversation import (
    ContextMessage,
    ContextState,
    Contribution,
    Position,
    Wait,
)
from rhythm.processors.signals.entity import EntityState, Window
from rhythm.processors.signals.rhythm import Rhythm


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


# Well under the producer's 1 MiB request limit (aiokafka's max_request_size): a batch of a
# few thousand events at the contract's maxima (256-character ids, 32 tags) is megabytes.
MAX_MESSAGE_BYTES = 512 * 1024


def encode_batch(message: UpdatesMessage, max_bytes: int = MAX_MESSAGE_BYTES) -> list[bytes]:
    """A message for one updates partition (stage 1's batch, the history lane's hand-off), as
    one or more messages of at most `max_bytes` each (sent in order). Items are split in
    order; only the last part carries the watermark, so stage 2 moves its watermark only
    after applying every update before it; every part carries the tenants' epochs. Entity
    and thread updates touch different state, so their relative order is free."""
    data = orjson.dumps(message)
    items = [(f, x) for f in _LISTS for x in message.get(f, ())]  # type: ignore[attr-defined]
    if len(data) <= max_bytes or len(items) <= 1:
        return [data]  # one update alone is bounded by the contract's field limits
    half = len(items) // 2
    head: UpdatesMessage = {"p": message["p"]}
    tail: UpdatesMessage = {"p": message["p"]}
    if "wm" in message:
        tail["wm"] = message["wm"]
    if "f" in message:
        tail["f"] = message["f"]
    if "tw" in message:
        tail["tw"] = message["tw"]
    if "te" in message:  # every part: its updates belong to those epochs
        head["te"] = tail["te"] = message["te"]
    for part, chunk in ((head, items[:half]), (tail, items[half:])):
        for field, update in chunk:
            part.setdefault(field, []).append(update)  # type: ignore[misc]
    return encode_batch(head, max_bytes) + encode_batch(tail, max_bytes)


_LISTS = ("u", "c", "n", "r")  # UpdatesMessage's lists of items


def loads(data: bytes) -> Any:
    return orjson.loads(data)


# -- entities --------------------------------------------------------------------------------


# The head of a saved entity written by stage 2 (`encode_entity` with a hint): its due time,
# its open windows and the fingerprint of the settings the due time was computed with. A
# restore reads them without decoding the rest (`entity_hint`).
_HINT = re.compile(rb'\{"d":(null|-?[0-9]+),"n":([0-9]+),"f":"([0-9a-f]{8})"')


def entity_hint(data: bytes) -> tuple[int | None, int, str] | None:
    """(due time, open windows, settings fingerprint) from a saved entity's head, or None
    for a value saved without them."""
    m = _HINT.match(data)
    if m is None:
        return None
    due = m.group(1)
    return (None if due == b"null" else int(due)), int(m.group(2)), m.group(3).decode()


def encode_entity(
    state: EntityState, applied: dict[int, int], hint: tuple[int | None, str] | None = None
) -> bytes:
    """`hint`: (due time, settings fingerprint), written first (see `entity_hint`)."""
    windows = [
        [
            w.size_ms, w.start_ms, w.event_count, w.weight_sum, w.weight_max, w.gap_count,
            w.gap_min_ms, w.gap_max_ms, w.gap_sum_ms, w.first_ms, w.last_ms,
            w.silence_before_ms, w.late_count, w.version, w.dirty,
        ]
        for w in state.windows.values()
    ]  # fmt: skip
    head = {} if hint is None else {"d": hint[0], "n": len(state.windows), "f": hint[1]}
    return orjson.dumps(
        {
            **head,
            "p": _deltas(state.pending),
            "l": state.last_ms,
            "w": windows,
            "pd": True,  # "p" as deltas (a held watermark can leave tens of thousands)
            "r": encode_rhythm(state.rhythm),
            "s": state.silent_since_ms,
            "a": [[k, v] for k, v in applied.items()],
            **({} if state.handed_ms is None else {"h": state.handed_ms}),
            **(
                {}
                if state.taken is None
                else {
                    "t": [
                        encode_rhythm(state.taken),
                        state.taken_ms,
                        state.taken_next_ms,
                        *([state.taken_epoch] if state.taken_epoch else []),
                    ]
                }
            ),
        }
    )


def _deltas(times: list[int]) -> list[int]:
    """Sorted first (pending is unordered between advances): small numbers, short JSON."""
    ordered = sorted(times)
    return [t - p for t, p in zip(ordered, [0, *ordered[:-1]], strict=False)]


def _undelta(values: list[int], deltas: bool) -> list[int]:
    if not deltas:
        return list(values)  # saved before pending was delta-encoded
    out: list[int] = []
    total = 0
    for d in values:
        total += d
        out.append(total)
    return out


def decode_entity(data: bytes) -> tuple[EntityState, dict[int, int]]:
    raw = orjson.loads(data)
    state = EntityState(
        pending=_undelta(raw["p"], raw.get("pd", False)),
        last_ms=raw["l"],
        rhythm=decode_rhythm(raw.get("r")),
        silent_since_ms=raw["s"],
        handed_ms=raw.get("h"),  # saved before the hand-off: none yet
    )
    taken = raw.get("t")  # saved before norms were replaced: none taken that way
    if taken is not None:
        state.taken = decode_rhythm(taken[0])
        state.taken_ms, state.taken_next_ms = taken[1], taken[2]
        state.taken_epoch = taken[3] if len(taken) > 3 else 0
    windows = state.windows
    for f in raw["w"]:
        # Positional: the saved fields are Window's in its order (encode_entity; a unit test
        # holds them together), and keywords cost a third of a restore's decode.
        windows[(f[0], f[1])] = Window(*f)
    return state, {int(k): int(v) for k, v in raw["a"]}


def encode_rhythm(m: Rhythm | None) -> list[Any] | None:
    if m is None:
        return None
    return [
        m.first_ms, m.counts, m.exposure, m.gaps, m.scored, m.over, m.excess, m.due_ms,
        m.expected, m.per_quarter, m.chance, m.far, m.far_excess, m.armed,
    ]  # fmt: skip


def decode_rhythm(f: list[Any] | None) -> Rhythm | None:
    if f is None:
        return None
    return Rhythm(
        first_ms=f[0], counts=list(f[1]), exposure=list(f[2]), gaps=f[3], scored=f[4],
        over=f[5], excess=f[6], due_ms=f[7], expected=f[8], per_quarter=f[9], chance=f[10],
        far=f[11], far_excess=f[12], armed=f[13],
    )  # fmt: skip


# -- contexts --------------------------------------------------------------------------------


def encode_context(ctx: ContextState) -> bytes:
    wait = ctx.waiting
    return orjson.dumps(
        {
            "t": ctx.tenant,
            "c": ctx.context_id,
            "p": [
                [m.ts, list(m.sender), m.channel, m.verb, m.about, m.src_partition, m.src_offset]
                + ([True] if m.copy else [])
                for m in ctx.pending
            ],
            "w": None if wait is None else _encode_wait(wait),
            "y": [list(p) for p in ctx.parties],
            "b": ctx.about,
            "f": [encode_contribution(c) for c in ctx.finished],
            "a": [[k, v] for k, v in ctx.applied.items()],
            "l": ctx.last_ms,
            **({} if ctx.handed is None else {"h": list(ctx.handed)}),
        }
    )


def is_context(data: bytes) -> bool:
    """Whether a saved stage-2 value is a thread's (else an entity's). A key cannot always
    tell: an entity key of the tenant `ctx` starts as a thread key does (keys.py)."""
    raw = orjson.loads(data)
    return isinstance(raw, dict) and "y" in raw  # a thread's parties: no entity has them


def encode_contribution(c: Contribution) -> list[Any]:
    """A finished wait, in a thread's saved state and in the history lane's hand-off."""
    return [list(c.opened), list(c.closed), list(c.kind), c.delay_ms, c.work_delay_ms] + (
        # closed by feedback (done), not a reply; opened by a copy (never handed off)
        [c.censored, True] if c.copied else [True] if c.censored else []
    )


def decode_contribution(c: list[Any]) -> Contribution:
    return Contribution(
        _position(c[0]),
        _position(c[1]),
        (c[2][0], c[2][1], c[2][2], bool(c[2][3])),
        c[3],
        c[4],
        len(c) > 5 and bool(c[5]),
        len(c) > 6 and bool(c[6]),
    )


def _encode_wait(w: Wait) -> list[Any]:
    return [
        list(w.sender), w.side, w.channel, w.verb, w.since_ms, list(w.pos), w.check_ms,
        w.cold, w.alerted, w.opens, *([True] if w.copied else []),
    ]  # fmt: skip


def _position(p: list[Any]) -> Position:
    return (p[0], p[1], p[2], p[3], p[4])


def decode_context(data: bytes) -> ContextState:
    raw = orjson.loads(data)
    w = raw["w"]
    wait = None
    if w is not None:
        wait = Wait(
            sender=(w[0][0], w[0][1]), side=w[1], channel=w[2], verb=w[3], since_ms=w[4],
            pos=_position(w[5]), check_ms=w[6], cold=w[7], alerted=w[8], opens=w[9],
            copied=len(w) > 10 and bool(w[10]),
        )  # fmt: skip
    finished = [decode_contribution(c) for c in raw["f"]]
    last = raw.get("l")
    if last is None:  # saved before threads kept it: their newest message known here
        last = max([c.closed[0] for c in finished] + [wait.since_ms if wait else 0])
    return ContextState(
        tenant=raw["t"],
        context_id=raw["c"],
        pending=[
            ContextMessage(
                m[0], (m[1][0], m[1][1]), m[2], m[3], m[4], m[5], m[6], len(m) > 7 and bool(m[7])
            )
            for m in raw["p"]
        ],
        waiting=wait,
        parties=[(p[0], p[1]) for p in raw["y"]],
        about=raw["b"],
        finished=finished,
        applied={int(k): int(v) for k, v in raw["a"]},
        last_ms=last,
        handed=_position(raw["h"]) if "h" in raw else None,
    )

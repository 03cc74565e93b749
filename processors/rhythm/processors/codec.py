"""Bytes for the processor's state (table values) and internal messages.

orjson over plain lists: the state is read back only at recovery, written once per changed
key per batch, and JSON keeps the changelog topics readable with `rhythm tail`.
"""

from __future__ import annotations

from typing import Any

import orjson

from rhythm.processors.signals.conversation import (
    ContextMessage,
    ContextState,
    Contribution,
    Wait,
)
from rhythm.processors.signals.entity import EntityState, Window
from rhythm.processors.signals.histogram import LogHistogram


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(data: bytes) -> Any:
    return orjson.loads(data)


# -- entities --------------------------------------------------------------------------------


def encode_entity(state: EntityState, applied: dict[int, int]) -> bytes:
    windows = [
        [
            w.size_ms, w.start_ms, w.event_count, w.weight_sum, w.weight_max, w.gap_count,
            w.gap_min_ms, w.gap_max_ms, w.gap_sum_ms, w.first_ms, w.last_ms,
            w.silence_before_ms, w.late_count, w.version, w.dirty,
        ]
        for w in state.windows.values()
    ]  # fmt: skip
    return orjson.dumps(
        {
            "p": state.pending,
            "l": state.last_ms,
            "w": windows,
            "g": state.gaps.to_sparse(),
            "s": state.silent_since_ms,
            "a": [[k, v] for k, v in applied.items()],
        }
    )


def decode_entity(data: bytes) -> tuple[EntityState, dict[int, int]]:
    raw = orjson.loads(data)
    state = EntityState(
        pending=list(raw["p"]),
        last_ms=raw["l"],
        gaps=LogHistogram.from_sparse(raw["g"]),
        silent_since_ms=raw["s"],
    )
    for f in raw["w"]:
        window = Window(
            size_ms=f[0], start_ms=f[1], event_count=f[2], weight_sum=f[3], weight_max=f[4],
            gap_count=f[5], gap_min_ms=f[6], gap_max_ms=f[7], gap_sum_ms=f[8], first_ms=f[9],
            last_ms=f[10], silence_before_ms=f[11], late_count=f[12], version=f[13], dirty=f[14],
        )  # fmt: skip
        state.windows[(window.size_ms, window.start_ms)] = window
    return state, {int(k): int(v) for k, v in raw["a"]}


# -- contexts --------------------------------------------------------------------------------


def encode_context(ctx: ContextState) -> bytes:
    wait = ctx.waiting
    return orjson.dumps(
        {
            "t": ctx.tenant,
            "c": ctx.context_id,
            "p": [
                [m.ts, list(m.sender), m.channel, m.src_partition, m.src_offset]
                for m in ctx.pending
            ],
            "w": (
                None
                if wait is None
                else [
                    list(wait.sender),
                    wait.channel,
                    wait.since_ms,
                    wait.threshold_ms,
                    wait.alerted,
                ]
            ),
            "y": [list(p) for p in ctx.parties],
            "f": [[list(c.pos), c.channel, c.sender_type, c.delay_ms] for c in ctx.finished],
            "a": [[k, v] for k, v in ctx.applied.items()],
        }
    )


def decode_context(data: bytes) -> ContextState:
    raw = orjson.loads(data)
    w = raw["w"]
    return ContextState(
        tenant=raw["t"],
        context_id=raw["c"],
        pending=[ContextMessage(m[0], (m[1][0], m[1][1]), m[2], m[3], m[4]) for m in raw["p"]],
        waiting=None if w is None else Wait((w[0][0], w[0][1]), w[1], w[2], w[3], w[4]),
        parties=[(p[0], p[1]) for p in raw["y"]],
        finished=[
            Contribution((c[0][0], c[0][1], c[0][2], c[0][3], c[0][4]), c[1], c[2], c[3])
            for c in raw["f"]
        ],
        applied={int(k): int(v) for k, v in raw["a"]},
    )

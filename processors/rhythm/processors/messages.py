"""The processors' internal messages on `rhythm.updates`, from stage 1 to stage 2: one place
for their shapes (plain lists and dicts, cheap to encode with orjson), and the helpers that
build a degraded tenant's runs.
"""

from __future__ import annotations

from typing import Any, Required, TypedDict

__all__ = [
    "HANDOFF",
    "ROUTED",
    "ContextUpdate",
    "EntityUpdate",
    "NormsUpdate",
    "RepliesUpdate",
    "UpdatesMessage",
    "extend_run",
    "new_run",
]

# An update as it travels to stage 2: plain lists, cheap to encode (stage 1 builds the
# entity, routed and context shapes as tuples, the same JSON arrays: thousands per batch,
# and the garbage collector stops tracking a tuple of plain values at its first collection,
# where it walks lists in every one; a run stays a list, extended while it is open).
# entity:  [key, ts_ms, weight, src_partition, src_offset]
# run:     [key, first_ms, [weight, ...], src_partition, last_offset, [offset, ...],
#           [whole seconds after first_ms, ...]]
#   an entity's events while their tenant is over its budget (budget.py), joined per batch
#   (any other update of the entity in the batch starts a new run, so each entity's updates
#   stay in offset order); stage 2 takes them per second. The offsets let it skip those it
#   already applied when a run is re-sent, after a restart, with other bounds.
# routed:  [key, ts_ms, 0.0, src_partition, src_offset, ROUTED]
#   an event the live lane routed to the history lane (lanes.py): stage 2 only notes its
#   time in the entity's sequence of final events, so the next event's gap is exact
# context: [key, ts_ms, actor_type, actor_id, channel, verb, about, src_partition, src_offset]
#   (about: the event's target as "type:id", or ""), and a 10th item, 1, for a copy of a
#   stored message in the history lane (copies.py; conversation.py never alerts on or hands
#   off a wait a copy opened)
# norms:   [key, last_ms, rhythm(, epoch)]  (on the live lane's updates topic only)
#   what the history lane learned of an entity's rhythm from its events up to last_ms
#   (rhythm: codec.encode_rhythm's list; epoch: its tenant's, when rewound),
#   sent once its input is drained; live stage 2 takes it by entity.take_norms's rule
# replies: [context key, last_ms, [finished wait, ...]]  (likewise, live updates topic only)
#   a thread's finished waits the history lane had not handed off yet (codec's
#   encode_contribution), for the reply norms; live stage 2 takes them by
#   Conversations.take_handed
EntityUpdate = list[Any]
ROUTED = "routed"
ContextUpdate = list[Any]
NormsUpdate = list[Any]
RepliesUpdate = list[Any]
#: The "p" of a message of norms: no events partition (it carries no watermark).
HANDOFF = -1


class UpdatesMessage(TypedDict, total=False):
    """One message on the updates topic: stage 1's batch for one stage 2 partition (split in
    order into parts under the size limit by `codec.encode_batch`; only the last part
    carries the watermark)."""

    p: Required[int]  # the source (events) partition
    wm: int | None  # its watermark, epoch ms (None: none yet); stage 2 closes windows up to it
    f: int  # 1: `wm` is a history lane's flush (lanes.py), not evidence that time passed
    # The history lane: tenant -> that tenant's own watermark (stage 1's `tenant_time`), for
    # the tenants of the batch (or, with "f", whose flush mark moved): tenants.py.
    tw: dict[str, int]
    # The history lane: each rewound tenant's epoch (stage1.py's `rewind`): stage 2 forgets a
    # tenant's state when its epoch grows and ignores its updates of an older one.
    te: dict[str, int]
    u: list[EntityUpdate]
    c: list[ContextUpdate]
    n: list[NormsUpdate]  # from the history lane (p = HANDOFF)
    r: list[RepliesUpdate]  # from the history lane (p = HANDOFF)


def new_run(key: str, ts: int, src_partition: int) -> EntityUpdate:
    return [key, ts - ts % 1000, [], src_partition, -1, [], []]


def extend_run(run: EntityUpdate, ts: int, weight: float, src_offset: int) -> None:
    run[2].append(weight)
    run[4] = src_offset
    run[5].append(src_offset)
    run[6].append((ts - run[1]) // 1000)

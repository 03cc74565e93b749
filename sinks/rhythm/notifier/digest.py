"""The daily digest of one person: what they owe, what went quiet near them, what moved.
Pure: plain data in (what the store says, see digest_store.py), ranked items out.

Four kinds of item, each with one line of why:

- `owed`: an open heads-up the person owes (an unanswered or follow-up alert naming them
  among its owners). Score: the alert's; affinity 1 (it is theirs); recency 1 (still open,
  so it is due now). Listed oldest first.
- `quiet`: an open silence on an entity the person acted on (an account, a contact...),
  once per entity (silent as actor and as target is one item). Score: the alert's;
  affinity: how much they engage with it; recency: when it fired.
- `mover`: one of their entities (not already quiet) whose pace or amount in the newest day
  window moved most against its own baseline. Score: |z| / (|z| + 3); affinity; recency:
  the window's end.
- `community`: the same for a tag (a community) their events carry.

Affinity is the person's events on the entity over the last `ENGAGED_DAYS` (as routing
counts engagement: distinct events), divided by their most engaged entity's of the same
sort (tags against tags, the rest against the rest): 1 for what they touch most. Recency
halves every `HALF_LIFE_MS`. The rank is score x affinity x recency; the top `cap` items are
kept, then shown grouped by kind (owed oldest first, the others by rank).

Each item has a stable `key` (the alert; a quiet spell; the entity and its window): a digest
with no key outside the previous digest sent to that person has nothing new, and is not
sent.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal
from zoneinfo import ZoneInfo

from rhythm.notifier.channels import duration, headline

__all__ = [
    "CAP",
    "Digest",
    "DigestInputs",
    "DigestItem",
    "Move",
    "OpenAlert",
    "build_digest",
    "digest_id",
    "has_new",
]

ItemKind = Literal["owed", "quiet", "mover", "community"]
KINDS: tuple[ItemKind, ...] = ("owed", "quiet", "mover", "community")
CAP = 10
HALF_LIFE_MS = 3 * 86_400_000
MIN_MOVER_Z = 2.0


@dataclass(frozen=True)
class OpenAlert:
    """An open alert as the store's `open_alerts` has it (times epoch ms)."""

    alert_id: str
    kind: str
    entity_type: str
    entity_id: str
    context_id: str | None
    fired_at: int
    last_event_at: int
    expected_within_s: float
    score: float
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def entity(self) -> str:
        return f"{self.entity_type}:{self.entity_id}"


@dataclass(frozen=True)
class Move:
    """An entity's newest day window against its own baseline (`top_movers`)."""

    entity_type: str
    entity_id: str
    window_start: int
    window_s: int
    current_count: int
    baseline_count: float
    current_weight: float
    baseline_weight: float
    pace_z: float
    amplitude_z: float

    @property
    def entity(self) -> str:
        return f"{self.entity_type}:{self.entity_id}"

    @property
    def z(self) -> float:
        return max(abs(self.pace_z), abs(self.amplitude_z))


@dataclass(frozen=True)
class DigestInputs:
    owed: Sequence[OpenAlert] = ()
    quiet: Sequence[OpenAlert] = ()
    moves: Sequence[Move] = ()
    #: type:id -> the person's distinct events on it over the engaged days
    engagement: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DigestItem:
    kind: ItemKind
    entity: str  # type:id
    why: str
    score: float
    affinity: float
    recency: float
    key: str
    at: int  # epoch ms: since when (owed), fired (quiet), window end (movers)
    #: where the item's actions go (issue #17 item 5 fills these: (label, url) pairs)
    links: tuple[tuple[str, str], ...] = ()

    @property
    def rank(self) -> float:
        return self.score * self.affinity * self.recency


@dataclass(frozen=True)
class Digest:
    tenant: str
    person: str  # type:id
    name: str | None
    day: str  # the person's local day, ISO
    zone: str
    as_of: int  # epoch ms, the wall clock it was built at
    items: tuple[DigestItem, ...]

    @property
    def id(self) -> str:
        return digest_id(self.tenant, self.person, self.day)

    def keys(self) -> frozenset[str]:
        return frozenset(i.key for i in self.items)

    def as_dict(self) -> dict[str, Any]:
        """The ledger's record of it (what the channels render from, what the next day's
        digest is compared with): `kind`/`alert_id` make it a ledger entry like an alert's."""
        data = asdict(self)
        data.update(kind="digest", alert_id=self.id)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Digest:
        items = tuple(
            DigestItem(**{**i, "links": tuple(tuple(x) for x in i.get("links") or ())})
            for i in data["items"]
        )
        names = ("tenant", "person", "name", "day", "zone", "as_of")
        return cls(**{n: data[n] for n in names}, items=items)


def digest_id(tenant: str, person: str, day: str) -> str:
    """One digest per (tenant, person, local day): the ledger's idempotency unit."""
    return f"digest:{tenant}:{person}:{day}"


def has_new(digest: Digest, previous: Collection[str]) -> bool:
    """Whether the digest has an item not in the previous one sent (an empty one has not)."""
    return any(i.key not in previous for i in digest.items)


def recency(at_ms: int, now_ms: int) -> float:
    return float(0.5 ** (max(0, now_ms - at_ms) / HALF_LIFE_MS))


def _mover_score(z: float) -> float:
    return z / (z + 3.0)


def _number(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}"


def _move_why(m: Move, engaged: int, days: int) -> str:
    pace = abs(m.pace_z) >= abs(m.amplitude_z)
    if pace:
        what = f"{m.current_count:,} events in the last day, usually {_number(m.baseline_count)}"
        z = m.pace_z
    else:
        what = f"amount {_number(m.current_weight)} in the last day, usually "
        what += _number(m.baseline_weight)
        z = m.amplitude_z
    direction = "up" if z > 0 else "down"
    where = f"tag {m.entity_id}" if m.entity_type == "tag" else f"{m.entity_type} {m.entity_id}"
    return f"{where} is {direction}: {what} (z {z:+.1f}); {_yours(engaged, days)}"


def _yours(engaged: int, days: int) -> str:
    return f"you had {engaged} event{'s' if engaged != 1 else ''} with it in {days} days"


def build_digest(
    *,
    tenant: str,
    person: str,
    name: str | None,
    zone: ZoneInfo,
    day: str,
    now_ms: int,
    inputs: DigestInputs,
    engaged_days: int = 30,
    cap: int = CAP,
) -> Digest:
    # Tags against tags, the rest against the rest: a person's own team tag is on every
    # event of theirs, and would make every account look remote.
    top = {False: 0, True: 0}
    for entity, n in inputs.engagement.items():
        tag = entity.startswith("tag:")
        top[tag] = max(top[tag], n)

    def affinity(entity: str) -> float:
        n = inputs.engagement.get(entity, 0)
        most = top[entity.startswith("tag:")]
        return n / most if most > 0 else 0.0

    items: list[DigestItem] = []
    for a in inputs.owed:
        text = headline({**_alert(a), "fired_at": now_ms}, zone)  # waited as of now
        key = f"owed:{a.alert_id}"
        items.append(DigestItem("owed", a.entity, text, a.score, 1.0, 1.0, key, a.last_event_at))
    quiet: dict[str, DigestItem] = {}
    since: dict[str, int] = {}
    for a in inputs.quiet:  # an entity may be silent in several roles: told once
        if a.entity == person or affinity(a.entity) <= 0:
            continue
        n = inputs.engagement[a.entity]
        text = f"{headline({**_alert(a), 'fired_at': now_ms}, zone)}; {_yours(n, engaged_days)}"
        item = DigestItem("quiet", a.entity, text, a.score, affinity(a.entity),
                          recency(a.fired_at, now_ms), "", a.fired_at)  # fmt: skip
        since[a.entity] = min(since.get(a.entity, a.last_event_at), a.last_event_at)
        if a.entity not in quiet or quiet[a.entity].rank < item.rank:
            quiet[a.entity] = item
    # The key names the quiet spell (the entity's last event before it), whichever role's
    # alert tells it: the same spell is nothing new tomorrow.
    items += [replace(i, key=f"quiet:{e}:{since[e]}") for e, i in quiet.items()]
    best: dict[str, Move] = {}
    for m in inputs.moves:
        # A quiet entity is "down" too: told once, as quiet.
        mine = m.z >= MIN_MOVER_Z and m.entity not in (person, *quiet) and affinity(m.entity) > 0
        if mine and (m.entity not in best or best[m.entity].z < m.z):
            best[m.entity] = m
    for m in best.values():
        end = m.window_start + m.window_s * 1000
        kind: ItemKind = "community" if m.entity_type == "tag" else "mover"
        items.append(
            DigestItem(kind, m.entity, _move_why(m, inputs.engagement[m.entity], engaged_days),
                       _mover_score(m.z), affinity(m.entity), recency(end, now_ms),
                       f"{kind}:{m.entity}:{m.window_start}", end)
        )  # fmt: skip
    kept = sorted(items, key=lambda i: (-i.rank, i.at, i.key))[: max(0, cap)]

    def shown(i: DigestItem) -> tuple[int, float, float, str]:
        order = KINDS.index(i.kind)
        return (order, i.at if i.kind == "owed" else 0.0, -i.rank, i.key)

    return Digest(tenant, person, name, day, zone.key, now_ms, tuple(sorted(kept, key=shown)))


def _alert(a: OpenAlert) -> dict[str, Any]:
    return {
        "kind": a.kind, "entity_type": a.entity_type, "entity_id": a.entity_id,
        "fired_at": a.fired_at, "last_event_at": a.last_event_at,
        "expected_within_s": a.expected_within_s, "details": dict(a.details),
    }  # fmt: skip


def mean_age_s(digest: Digest) -> float:
    """How old the owed items are on average (for the summary line), seconds."""
    owed = [digest.as_of - i.at for i in digest.items if i.kind == "owed"]
    return sum(owed) / len(owed) / 1000 if owed else math.nan


def summary(digest: Digest) -> str:
    counts = {k: sum(1 for i in digest.items if i.kind == k) for k in KINDS}
    if not digest.items:
        return "Nothing needs you today."
    parts = []
    if counts["owed"]:
        parts.append(f"{counts['owed']} you owe (on average {duration(mean_age_s(digest))} old)")
    if counts["quiet"]:
        parts.append(f"{counts['quiet']} gone quiet")
    if counts["mover"] + counts["community"]:
        parts.append(f"{counts['mover'] + counts['community']} on the move")
    return "; ".join(parts) + "."

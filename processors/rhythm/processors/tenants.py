"""The history lane's stage 2: each tenant's event time is its own.

Tenants import their history when they come, not oldest first: a tenant's year of history
imported after another tenant's last month must not meet a watermark the other tenant moved
on (it would be late, or lost to signals). So the history lane keeps, per stage-2 partition,
one `Stage2Partition` per tenant, each with its own watermarks, saved under its own key;
stage 1 (`tenant_time`) stamps every batch with its tenants' watermarks (`"tw"`), and its
idle flush with each tenant's flush mark. An entity and a thread belong to one tenant, and a
tenant's reply norms are learned from its own threads only (conversation.py's kinds start
with the tenant), so the split changes no computation, only whose time closes what.

A batch goes to the tenants it names. A tenant without news in it advances only what is
still overdue at its own watermark (`catch_up`: no evidence that time passed for it); a
flush reaches every tenant (each hands its norms off once its input is drained).

A rewound tenant (stage1.py: an import older than what the lane made final for it, sent
with the tenant's stored events) has an *epoch*, named on every message ("te"): when it
grows, the tenant's `Stage2Partition` is forgotten (its keys deleted) and started afresh;
updates of an older epoch (sent again after a restart of stage 1) are ignored. The epoch
is saved beside the tenant's watermarks and goes into the versions of its signals
(`lanes.epoch_version`: a recomputed window wins over the one it replaces), its alerts'
details and its norms hand-off (the live lane replaces what it took of an older epoch).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import fields

from rhythm.processors.codec import dumps, is_context, loads
from rhythm.processors.lanes import epoch_version
from rhythm.processors.messages import UpdatesMessage
from rhythm.processors.signals.conversation import ReplyConfig
from rhythm.processors.signals.entity import EntityState, SignalConfig
from rhythm.processors.signals.policy import AlertPolicy
from rhythm.processors.stage2 import (
    NO_WATERMARK,
    WATERMARKS_PREFIX,
    Stage2Output,
    Stage2Partition,
)
from rhythm.schemas.keys import SEP, is_context_key, split_context_key

__all__ = ["TenantPartitions", "epoch_key", "tenant_of", "watermarks_key"]

_EPOCH = f"{SEP}epoch"


def watermarks_key(partition: int, tenant: str) -> str:
    """Where one tenant's watermarks of one stage-2 partition are saved."""
    return f"{WATERMARKS_PREFIX}{partition}{SEP}{tenant}"


def epoch_key(partition: int, tenant: str) -> str:
    """Where a rewound tenant's epoch in one stage-2 partition is saved (beside its
    watermarks: the same partition of the table)."""
    return watermarks_key(partition, tenant) + _EPOCH


def tenant_of(key: str, thread: bool) -> str | None:
    """The tenant of a stage-2 key, a thread's (`thread`) or else an entity's (an entity key
    of the tenant `ctx` starts as a thread key does: the caller knows which it has); None
    for a partition's watermarks saved before tenants had their own time (one for all)."""
    if key.startswith(WATERMARKS_PREFIX):
        _partition, sep, tenant = key[len(WATERMARKS_PREFIX) :].partition(SEP)
        return tenant if sep else None
    if thread:
        return split_context_key(key)[0]
    tenant, sep, _rest = key.partition(SEP)
    if not sep:
        raise ValueError("not an entity, thread or watermarks key")
    return tenant


class TenantPartitions:
    """One stage-2 partition of the history lane: `Stage2Partition`'s interface, per tenant."""

    def __init__(
        self,
        partition: int,
        source_partitions: int,
        signal_cfg: SignalConfig,
        reply_cfg: ReplyConfig,
        policy: AlertPolicy | None = None,
        hand_off: bool = False,
    ) -> None:
        self.partition = partition
        self._args = (source_partitions, signal_cfg, reply_cfg, policy, hand_off)
        self.tenants: dict[str, Stage2Partition] = {}
        self._legacy: str | None = None  # a shared watermarks record to delete once
        self._behind: set[str] = set()  # tenants with entities still overdue (MAX_ADVANCE)
        self.epochs: dict[str, int] = {}  # rewound tenants' epochs (absent: 0)
        self._dropped: set[str] = set()  # keys of forgotten epochs, deleted at take_dirty
        self._epochs_dirty: set[str] = set()

    def _of(self, tenant: str) -> Stage2Partition:
        proc = self.tenants.get(tenant)
        if proc is None:
            sources, signal_cfg, reply_cfg, policy, hand_off = self._args
            proc = self.tenants[tenant] = Stage2Partition(
                self.partition, sources, signal_cfg, reply_cfg, policy, hand_off,
                watermarks_key=watermarks_key(self.partition, tenant),
            )  # fmt: skip
        return proc

    # -- Stage2Partition's interface -------------------------------------------------------

    def restore(self, items: Iterable[tuple[str, bytes | None]]) -> list[tuple[str, bytes, str]]:
        per: dict[str, list[tuple[str, bytes | None]]] = defaultdict(list)
        bad: list[tuple[str, bytes, str]] = []
        shared: bytes | None = None
        for key, value in items:
            if key.startswith(WATERMARKS_PREFIX) and key.endswith(_EPOCH):
                if value is not None:
                    rewound = key[: -len(_EPOCH)].split(SEP, 2)[2]
                    self.epochs[rewound] = int(loads(value))
                continue
            try:
                thread = is_context_key(key) and value is not None and is_context(value)
                tenant = tenant_of(key, thread)
            except ValueError as exc:
                if value is not None:
                    bad.append((key, value, f"{type(exc).__name__}: {exc}"))
                continue
            if tenant is None:
                self._legacy, shared = key, value
            else:
                per[tenant].append((key, value))
        for tenant in sorted(per):
            items_of = per[tenant]
            if shared is not None:  # every tenant starts from the shared record: its own next
                items_of.insert(0, (watermarks_key(self.partition, tenant), shared))
            proc = self._of(tenant)
            bad += proc.restore(items_of)
            if shared is not None:
                proc.mark_watermarks_dirty()
            self._note_behind(tenant, proc)
        return bad

    def apply(self, message: UpdatesMessage) -> Stage2Output:
        source = message["p"]
        parts: dict[str, UpdatesMessage] = {}
        for field in ("u", "c", "n", "r"):
            for item in message.get(field, ()):  # type: ignore[attr-defined]
                tenant = tenant_of(item[0], thread=field in ("c", "r")) or ""
                part = parts.get(tenant)
                if part is None:
                    part = parts[tenant] = {"p": source}
                part.setdefault(field, []).append(item)  # type: ignore[misc]
        marks = message.get("tw") or {}
        flush = bool(message.get("f"))
        epochs = message.get("te") or {}
        out = Stage2Output()
        advanced: set[str] = set()
        for tenant in sorted(set(parts) | set(marks) | (set(self.tenants) if flush else set())):
            epoch, mine = epochs.get(tenant, 0), self.epochs.get(tenant, 0)
            if epoch < mine:
                continue  # sent again after a restart, from before the tenant's rewind
            if epoch > mine:
                self._rewind(tenant, epoch)
            proc = self._of(tenant)
            part = parts.get(tenant) or {"p": source}
            mark = marks.get(tenant)
            if mark is None and flush:
                mark = proc.source_watermarks.get(source)
            if mark is not None:
                part["wm"] = mark
                advanced.add(tenant)
                if flush:
                    part["f"] = 1
            _add(out, self._stamped(tenant, proc.apply(part)))
            self._note_behind(tenant, proc)
        # The others take only what is still overdue at their own watermark.
        for tenant in sorted(self._behind - advanced):
            proc = self.tenants[tenant]
            _add(out, self._stamped(tenant, proc.catch_up()))
            self._note_behind(tenant, proc)
        return out

    def _rewind(self, tenant: str, epoch: int) -> None:
        """Forget the tenant's state: its next epoch is computed from what follows."""
        proc = self.tenants.pop(tenant, None)
        if proc is not None:
            self._dropped.update(proc.saved_keys())
        self._behind.discard(tenant)
        self.epochs[tenant] = epoch
        self._epochs_dirty.add(tenant)

    def _stamped(self, tenant: str, out: Stage2Output) -> Stage2Output:
        """A rewound tenant's signals, alerts and norms carry its epoch."""
        epoch = self.epochs.get(tenant, 0)
        if epoch:
            for signal in out.signals:
                signal["version"] = epoch_version(signal["version"], epoch)
            for alert in out.alerts:  # which computation fired it (its id stays the same)
                alert["details"] = {**alert["details"], "epoch": epoch}
            for item in out.norms:
                item.append(epoch)
        return out

    def _note_behind(self, tenant: str, proc: Stage2Partition) -> None:
        if proc.overdue():
            self._behind.add(tenant)
        else:
            self._behind.discard(tenant)

    def take_dirty(self) -> list[tuple[str, bytes | None]]:
        """Each tenant's keys, its watermarks after them (Stage2Partition.take_dirty)."""
        # A forgotten epoch's keys first: the next epoch's own writes of them come after.
        items: list[tuple[str, bytes | None]] = [(key, None) for key in sorted(self._dropped)]
        self._dropped.clear()
        for tenant in sorted(self._epochs_dirty):
            items.append((epoch_key(self.partition, tenant), dumps(self.epochs[tenant])))
        self._epochs_dirty.clear()
        for tenant in sorted(self.tenants):
            items.extend(self.tenants[tenant].take_dirty())
        if self._legacy is not None:
            items.append((self._legacy, None))
            self._legacy = None
        return items

    def overdue(self) -> bool:
        return any(proc.overdue() for proc in self.tenants.values())

    def open_windows(self) -> int:
        return sum(proc.open_windows() for proc in self.tenants.values())

    @property
    def watermark(self) -> int:
        """How far the lane's event time has come: the newest tenant's."""
        return max((p.watermark for p in self.tenants.values()), default=NO_WATERMARK)

    def watermarks(self) -> dict[str, int]:
        """Each tenant's watermark in this partition (what it has made final: less the
        lateness)."""
        return {t: p.watermark for t, p in self.tenants.items() if p.watermark != NO_WATERMARK}

    def entity_state(self, key: str) -> EntityState:
        return self._of(tenant_of(key, thread=False) or "").entity_state(key)


def _add(total: Stage2Output, part: Stage2Output) -> None:
    for f in fields(Stage2Output):
        mine, theirs = getattr(total, f.name), getattr(part, f.name)
        if isinstance(mine, list):
            mine.extend(theirs)
        elif isinstance(mine, dict):
            for k, n in theirs.items():
                mine[k] = mine.get(k, 0) + n
        else:
            setattr(total, f.name, mine + theirs)

"""Every key Rhythm builds from the contract's fields, in one place: an entity's key
(tenant, role, type, id), a thread's key (tenant, context), a window signal's key. Stage 1
builds them, stage 2 and the sink read them back, the signals topic is keyed by them.

Keys are strings joined by the unit separator (\\x1f), which the contract does not allow in
tenants, roles or types (ids may contain anything but stay last, so a split with a maximum
count reads them back whole).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONTEXT_PREFIX",
    "SEP",
    "EntityKey",
    "context_key",
    "display",
    "entity_key",
    "is_context_key",
    "signal_key",
    "split_context_key",
]

SEP = "\x1f"
CONTEXT_PREFIX = "ctx"


@dataclass(frozen=True, slots=True)
class EntityKey:
    tenant: str
    role: str
    entity_type: str
    entity_id: str

    def encode(self) -> str:
        return SEP.join((self.tenant, self.role, self.entity_type, self.entity_id))

    @classmethod
    def decode(cls, key: str) -> EntityKey:
        tenant, role, entity_type, entity_id = key.split(SEP, 3)
        return cls(tenant, role, entity_type, entity_id)

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> EntityKey:
        """The entity a signal or alert record is about."""
        return cls(record["tenant"], record["role"], record["entity_type"], record["entity_id"])

    def fields(self) -> dict[str, str]:
        """The four fields as a signal or alert record carries them."""
        return {
            "tenant": self.tenant,
            "role": self.role,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
        }

    def display(self) -> str:
        """For logs: tenant/role/type/id."""
        return "/".join((self.tenant, self.role, self.entity_type, self.entity_id))


def entity_key(tenant: str, role: str, entity_type: str, entity_id: str) -> str:
    """`EntityKey(...).encode()` without building the object (stage 1's hot path)."""
    return SEP.join((tenant, role, entity_type, entity_id))


def context_key(tenant: str, context_id: str) -> str:
    return SEP.join((CONTEXT_PREFIX, tenant, context_id))


def split_context_key(key: str) -> tuple[str, str]:
    _, tenant, context_id = key.split(SEP, 2)
    return tenant, context_id


def is_context_key(key: str) -> bool:
    return key.startswith(CONTEXT_PREFIX + SEP)


def display(key: str) -> str:
    """Any key, readable in a log line."""
    return key.replace(SEP, "/")


def signal_key(signal: Mapping[str, Any]) -> str:
    """A window signal's key: its entity, window length and start (the topic's message key
    and the unit of the store's deduplication)."""
    return SEP.join(
        (EntityKey.of(signal).encode(), str(signal["window_seconds"]), str(signal["window_start"]))
    )

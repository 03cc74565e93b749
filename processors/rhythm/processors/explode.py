"""Stage 1, pure: one event becomes updates for every entity it touches, plus its thread.

The events topic is keyed by actor, but signals are per (tenant, role, entity): the object,
target and tags of an event live on other keys. So stage 1 re-keys each event's updates by
entity (and by context for the `unanswered` rule) and sends them, batched per destination
partition, to the internal updates topic; stage 2 owns each key's state.

Keys are built by rhythm.schemas.keys. Destination partitions use a stable hash (CRC-32),
never Python's per-process `hash()`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

from rhythm.schemas.keys import (
    CONTEXT_PREFIX,
    SEP,
    context_key,
    entity_key,
    split_context_key,
)

ROLES = ("actor", "object", "target")
TAG_ROLE = "tag"
_CONTEXT_START = CONTEXT_PREFIX + SEP  # is_context_key's test
#: An entity or context update as stage 1 builds it: a tuple (messages.py says why).
Update = tuple[Any, ...]


def partition_for(key: str, partitions: int) -> int:
    """The stage 2 partition that owns `key`.

    Entities spread by their own key. Threads go by tenant: the `unanswered` rule learns
    reply norms per (tenant, channel, sender type) across all of a tenant's threads, so they
    must all be in one place; learning from a hash sample would make the norms (and the
    alerts) depend on the partition count.
    """
    if key.startswith(_CONTEXT_START):  # is_context_key, inline: per update
        key = split_context_key(key)[0]
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


def entity_keys(record: Mapping[str, Any]) -> list[str]:
    """Every (tenant, role, entity) the event counts for, tags as entities of type `tag`."""
    tenant = record["tenant"]
    keys = [entity_key(tenant, "actor", record["actor_type"], record["actor_id"])]
    # the roles spelled out, not f"{role}_type": per event
    object_type = record.get("object_type")
    if object_type is not None:
        keys.append(entity_key(tenant, "object", object_type, record["object_id"]))
    target_type = record.get("target_type")
    if target_type is not None:
        keys.append(entity_key(tenant, "target", target_type, record["target_id"]))
    tags = record.get("tags")
    if tags:
        for tag in dict.fromkeys(tags):  # a tag given twice counts once
            keys.append(entity_key(tenant, TAG_ROLE, "tag", tag))
    return keys


def explode(
    record: Mapping[str, Any], ts: int, src_partition: int, src_offset: int
) -> tuple[list[Update], Update | None]:
    """The event's entity updates and its thread's (messages.py's shapes, as tuples)."""
    weight = float(record.get("weight", 1.0))
    updates = [(key, ts, weight, src_partition, src_offset) for key in entity_keys(record)]
    return updates, explode_context(record, ts, src_partition, src_offset)


def explode_context(
    record: Mapping[str, Any], ts: int, src_partition: int, src_offset: int
) -> Update | None:
    context: Update | None = None
    context_id = record.get("context_id")
    if context_id is not None:
        context = (
            context_key(record["tenant"], context_id),
            ts,
            record["actor_type"],
            record["actor_id"],
            record.get("channel") or "",
            record["verb"],
            _about(record),
            src_partition,
            src_offset,
        )
    return context


def _about(record: Mapping[str, Any]) -> str:
    target_type = record.get("target_type")
    return "" if target_type is None else f"{target_type}:{record['target_id']}"

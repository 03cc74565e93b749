"""Kafka's default partitioner (murmur2 of the key), as aiokafka's, in fewer Python steps.

Every signal and alert the processors send is keyed and so partitioned by the producer;
aiokafka hashes the key with a pure-Python murmur2 that masks and shifts byte by byte, which
took 7 % of a worker's CPU in the peers bench's profile (2026-12-06). This one reads the key
four bytes at a time with `struct` and masks once per step: the same hash, so the same
partition as aiokafka's and Java's clients (tests/unit/test_partitioner.py compares them).
Given to Faust's producer through its public `producer_partitioner` setting.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

__all__ = ["murmur2", "partition_of"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = [struct.Struct(f"<{n}I") for n in range(64)]


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), unsigned."""
    length = len(data)
    n = length >> 2
    words = (_WORDS[n] if n < 64 else struct.Struct(f"<{n}I")).unpack_from(data)
    h = 0x9747B28C ^ length
    for word in words:
        k = (word * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail, rest = length & ~3, length & 3
    if rest:
        if rest == 3:
            h ^= data[tail + 2] << 16
        if rest >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def partition_of(key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
    """aiokafka's DefaultPartitioner: murmur2 of the key, a random partition without one."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]

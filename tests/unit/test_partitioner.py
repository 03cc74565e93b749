"""The processors' partitioner chooses what aiokafka's (and so Java's) default one chooses."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner, murmur2  # type: ignore[import-untyped]

from rhythm.processors.partitioner import murmur2 as fast_murmur2
from rhythm.processors.partitioner import partition_of


def test_murmur2_equals_aiokafkas_for_every_length_and_byte() -> None:
    rng = random.Random(7)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(300) for _ in range(5)]
    keys += [b"", b"\x00", b"\xff" * 7, "tenant\x1fuser\x1fü-😀".encode()]
    for key in keys:
        assert fast_murmur2(key) == murmur2(key), key


def test_known_values_of_kafkas_murmur2() -> None:
    # Kafka's own UtilsTest.testMurmur2 (signed ints there): these keys and hashes
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        bytes([ord("a"), ord("b"), ord("c")]): 479470107,
    }
    for key, signed in cases.items():
        assert fast_murmur2(key) == signed & 0xFFFFFFFF, key


def test_partition_of_equals_the_default_partitioner() -> None:
    rng = random.Random(3)
    default = DefaultPartitioner()
    for n in (1, 3, 4, 12, 64):
        partitions = list(range(n))
        for _ in range(500):
            key = rng.randbytes(rng.randrange(1, 120))
            assert partition_of(key, partitions, partitions) == default(key, partitions, partitions)
    assert partition_of(None, [0, 1, 2], [2]) == 2  # no key: an available partition

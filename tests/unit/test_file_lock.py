"""`file_lock` (rhythm.stack.kafka.lock): held for its block, exclusive across open files (as
across processes: `rhythm backfill`'s imports take turns), released after it, and when the
block raises."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from rhythm.stack.kafka.lock import file_lock


def _free(path: Path) -> bool:
    """Whether another open file could take the lock now."""
    with path.open("a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return True


def test_the_lock_is_exclusive_while_held_and_released_after(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.lock"
    with file_lock(path):
        assert not _free(path)
    assert _free(path)
    with pytest.raises(RuntimeError), file_lock(path):
        raise RuntimeError("boom")
    assert _free(path)

"""Where each mailbox's sync stands: (UIDVALIDITY, the last UID done), per account and
mailbox, in one small JSON file written atomically (a temporary file, fsync, rename, fsync
of the directory): a crash leaves the old file or the new one, never half of one.

A checkpoint moves only after the messages up to its UID are published (publish.py), so a
connector killed at any point re-reads at most the batch it was in; the published index
makes that re-read publish nothing twice. A changed UIDVALIDITY (the server renumbered the
mailbox) starts the mailbox over from UID 1, which the same index makes harmless.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Checkpoint:
    uidvalidity: int
    last_uid: int
    since: str | None = None  # ISO date: mail delivered before it is never read (since_days)


class Checkpoints:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, dict[str, dict[str, int | str]]] = self._load()

    def _load(self) -> dict[str, dict[str, dict[str, int | str]]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict):
            raise ValueError(f"{self.path}: not a checkpoints file")
        return data

    def get(self, account: str, mailbox: str) -> Checkpoint | None:
        entry = self._data.get(account, {}).get(mailbox)
        if entry is None:
            return None
        since = entry.get("since")
        return Checkpoint(
            int(entry["uidvalidity"]), int(entry["last_uid"]), None if since is None else str(since)
        )

    def put(self, account: str, mailbox: str, checkpoint: Checkpoint) -> None:
        entry: dict[str, int | str] = {
            "uidvalidity": checkpoint.uidvalidity,
            "last_uid": checkpoint.last_uid,
        }
        if checkpoint.since is not None:
            entry["since"] = checkpoint.since
        self._data.setdefault(account, {})[mailbox] = entry
        write_atomically(self.path, json.dumps(self._data, indent=1, sort_keys=True) + "\n")


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

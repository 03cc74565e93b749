"""The connector's durable memory: one SQLite file (`<state_dir>/index.db`, WAL).

- `thread`: every Message-ID seen (sent, received or only referenced) -> its thread's root
  id, first come first kept, so a thread keeps one `context_id` across folders, imports and
  re-syncs, whatever order its messages arrive in.
- `subject`: per normalised-subject hash, the latest thread with it and its participants'
  hashes (the subject fallback for replies without threading headers). Subjects themselves
  are never stored.
- `published`: the event ids already delivered to Kafka: a re-sync, an overlapping import or
  the same message in Sent and Inbox publishes nothing twice.
- `pending`: the batch in flight and the events topic's end offsets taken before it was
  produced (publish.py): after a crash the topic is read from there to learn which of its
  events were delivered.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS thread (tenant TEXT, id TEXT, root TEXT, PRIMARY KEY (tenant, id));
CREATE TABLE IF NOT EXISTS subject (
  tenant TEXT, key TEXT, root TEXT, last_ms INTEGER, participants TEXT,
  PRIMARY KEY (tenant, key));
CREATE TABLE IF NOT EXISTS published (event_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS pending (event_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS identified (tenant TEXT, type TEXT, id TEXT,
  PRIMARY KEY (tenant, type, id));
"""
_CHUNK = 500  # SQLite's host-parameter limit is 999 in old builds


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Autocommit, and explicit transactions where several writes must land together
        # (`with db:` does not begin one in autocommit mode: each row would be its own).
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- threads ---------------------------------------------------------------------------

    def roots(self, tenant: str, ids: Iterable[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(ids))
        out: dict[str, str] = {}
        for i in range(0, len(wanted), _CHUNK):
            part = wanted[i : i + _CHUNK]
            marks = ",".join("?" * len(part))
            rows = self.db.execute(
                f"SELECT id, root FROM thread WHERE tenant = ? AND id IN ({marks})",
                [tenant, *part],
            )
            out.update(dict(rows.fetchall()))
        return out

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One commit (one fsync) for many thread and subject writes."""
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def keep_roots(self, tenant: str, pairs: Iterable[tuple[str, str]]) -> None:
        """Record id -> root for ids not known yet (a known id keeps its root)."""
        self.db.executemany(
            "INSERT OR IGNORE INTO thread VALUES (?, ?, ?)", [(tenant, i, r) for i, r in pairs]
        )

    def subject(self, tenant: str, key: str) -> tuple[str, int, list[str]] | None:
        row = self.db.execute(
            "SELECT root, last_ms, participants FROM subject WHERE tenant = ? AND key = ?",
            (tenant, key),
        ).fetchone()
        if row is None:
            return None
        return str(row[0]), int(row[1]), [p for p in str(row[2]).split(",") if p]

    def keep_subject(
        self, tenant: str, key: str, root: str, last_ms: int, participants: Sequence[str]
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO subject VALUES (?, ?, ?, ?, ?)",
            (tenant, key, root, last_ms, ",".join(participants[:32])),
        )

    # -- the people directory --------------------------------------------------------------

    def unidentified(self, tenant: str, people: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        out = []
        for kind, ident in dict.fromkeys(people):
            row = self.db.execute(
                "SELECT 1 FROM identified WHERE tenant = ? AND type = ? AND id = ?",
                (tenant, kind, ident),
            ).fetchone()
            if row is None:
                out.append((kind, ident))
        return out

    def identified(self, tenant: str, people: Iterable[tuple[str, str]]) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO identified VALUES (?, ?, ?)",
                [(tenant, k, i) for k, i in people],
            )

    # -- what was published ----------------------------------------------------------------

    def unpublished(self, event_ids: Sequence[str]) -> set[str]:
        known: set[str] = set()
        for i in range(0, len(event_ids), _CHUNK):
            part = list(event_ids[i : i + _CHUNK])
            marks = ",".join("?" * len(part))
            rows = self.db.execute(
                f"SELECT event_id FROM published WHERE event_id IN ({marks})", part
            )
            known.update(r[0] for r in rows.fetchall())
        return set(event_ids) - known

    def published_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM published").fetchone()[0])

    def begin_pending(self, event_ids: Sequence[str], offsets: dict[int, int]) -> None:
        """Record a batch about to be produced, and where the topic ended before it."""
        with self.transaction():
            self.db.execute("DELETE FROM pending")
            self.db.executemany(
                "INSERT OR IGNORE INTO pending VALUES (?)", [(e,) for e in event_ids]
            )
            self.db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('pending_offsets', ?)",
                (json.dumps({str(p): o for p, o in offsets.items()}),),
            )

    def pending(self) -> tuple[set[str], dict[int, int]]:
        ids = {r[0] for r in self.db.execute("SELECT event_id FROM pending").fetchall()}
        row = self.db.execute("SELECT v FROM meta WHERE k = 'pending_offsets'").fetchone()
        offsets = {int(p): int(o) for p, o in json.loads(row[0]).items()} if row else {}
        return ids, offsets

    def settle(self, delivered: Iterable[str]) -> None:
        """The batch in flight is over: what was delivered is published, the rest forgotten
        (its messages are read again, from the checkpoint)."""
        with self.transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO published VALUES (?)", [(e,) for e in delivered]
            )
            self.db.execute("DELETE FROM pending")
            self.db.execute("DELETE FROM meta WHERE k = 'pending_offsets'")

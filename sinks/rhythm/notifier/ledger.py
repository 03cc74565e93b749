"""The delivery ledger: every delivery's state, durable across crashes (SQLite, WAL,
synchronous=FULL: a committed transaction survives a SIGKILL and a power cut).

Why SQLite in the notifier's data directory: the state changes one delivery at a time and
must be on disk *before* the notifier acts on it (before the alert's Kafka offset is
committed, before and after each send). A local transactional file does that in well under a
millisecond, needs no other service (the embedded ClickHouse belongs to the sink process,
and a Kafka-only ledger would need transactions to tie the outcome to the offset), and is
rebuilt by nothing: it *is* the record. `rhythm.notifications` in ClickHouse is a copy of it
for analysts, published from it (each change bumps `version`; a row is re-published until
Kafka acknowledged its latest version). One notifier per data directory.

The protocol (service.py) that makes "never twice, never skipped" hold:
1. Intake: an alert's routing and all its deliveries (`INSERT OR IGNORE` on the idempotency
   key) and the alert's id in `routed` are one transaction; only after it commits is the
   alert's Kafka offset committed. A crash before the offset commit re-reads the alert and
   finds it routed: nothing is added (and the routing, which may depend on the store, is
   never redone differently).
2. Sending: the attempt is recorded (`sending`, attempts + 1) and committed before the
   request, and the outcome after it. At restart a delivery found `sending` is sent again
   with the same idempotency key: the only window where a receiver can see a delivery twice
   is a crash between its acceptance of the request and our commit of the outcome (a few
   milliseconds), and the key lets the receiver drop that copy.

Digests ride the same protocol: a digest is an entry of kind `digest` whose id is
`digest:<tenant>:<person>:<local day>` (digest.digest_id), so `routed` makes it once per
person and day (a digest with nothing new is recorded with no deliveries: decided, not
sent), its deliveries are sent, retried and published like a heads-up's, and the record is
the digest itself: what the next day's digest is compared with (`last_digest`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rhythm.schemas.feedback import Feedback
from rhythm.schemas.people import DeliveryRecord, DeliveryState

__all__ = ["ACTIVE_STATES", "Delivery", "Ledger", "NewDelivery", "snooze_key"]

#: States of a delivery not finished yet.
ACTIVE_STATES: tuple[DeliveryState, ...] = ("pending", "held", "sending", "retry")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS routed (
    alert_id TEXT PRIMARY KEY,
    routed_at INTEGER NOT NULL,
    recipients TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    alert_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    sent_at INTEGER,
    last_error TEXT,
    day TEXT NOT NULL,
    alert TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    published INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_destination ON deliveries (channel, recipient, state, seq);
CREATE INDEX IF NOT EXISTS deliveries_day ON deliveries (recipient, day, state);
CREATE INDEX IF NOT EXISTS deliveries_unpublished ON deliveries (published, version);
CREATE INDEX IF NOT EXISTS deliveries_alert ON deliveries (alert_id, recipient);
CREATE INDEX IF NOT EXISTS deliveries_snoozed ON deliveries (state, due_at);
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    snooze_until INTEGER,
    at INTEGER NOT NULL,
    alert_kind TEXT,
    entity_kind TEXT,
    recorded_at INTEGER NOT NULL,
    event TEXT,
    event_key TEXT,
    event_published INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS feedback_threshold ON feedback (tenant, recipient, entity_kind, at);
"""

_ACTIVE = "('pending', 'held', 'sending', 'retry')"
#: Not sent yet: what a "done" cancels. (sending is not: it is in the receiver's hands.)
_UNSENT = "('pending', 'held', 'retry', 'snoozed')"


def snooze_key(key: str, until_ms: int) -> str:
    """The idempotency key of a snoozed heads-up's second delivery: a new delivery (the
    receiver acted on the first key), the same for the same snooze."""
    return hashlib.blake2b(f"{key}\x1fsnooze\x1f{until_ms}".encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class NewDelivery:
    key: str
    recipient: str
    channel: str
    address: str
    reason: str
    state: DeliveryState  # pending, held or suppressed
    due_at: int
    day: str
    last_error: str | None = None


@dataclass(frozen=True)
class Delivery:
    seq: int
    key: str
    alert_id: str
    tenant: str
    kind: str
    recipient: str
    channel: str
    address: str
    reason: str
    state: DeliveryState
    attempts: int
    created_at: int
    due_at: int
    updated_at: int
    sent_at: int | None
    last_error: str | None
    day: str
    alert: dict[str, Any]
    version: int

    def record(self) -> DeliveryRecord:
        return DeliveryRecord(
            key=self.key, alert_id=self.alert_id, tenant=self.tenant, kind=self.kind,
            recipient=self.recipient, channel=self.channel,
            address=self.address, reason=self.reason, state=self.state,
            attempts=self.attempts, created_at=self.created_at, due_at=self.due_at,
            updated_at=self.updated_at, sent_at=self.sent_at, last_error=self.last_error,
            version=self.version,
        )  # fmt: skip


_COLUMNS = (
    "seq, key, alert_id, tenant, kind, recipient, channel, address, reason, state, attempts, "
    "created_at, due_at, updated_at, sent_at, last_error, day, alert, version"
)


def _delivery(row: sqlite3.Row) -> Delivery:
    values = dict(row)
    values["alert"] = json.loads(values["alert"])
    return Delivery(**values)


class Ledger:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- intake -----------------------------------------------------------------------------

    def routed(self, alert_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM routed WHERE alert_id = ?", (alert_id,)).fetchone()
        return row is not None

    def count_for_day(self, recipient: str, day: str) -> int:
        """Alerts counted against a recipient's cap on a local day (suppressed ones and
        digests not)."""
        row = self._db.execute(
            "SELECT count(DISTINCT alert_id) FROM deliveries WHERE recipient = ? AND day = ? "
            "AND state != 'suppressed' AND kind != 'digest'",
            (recipient, day),
        ).fetchone()
        return int(row[0])

    def intake(
        self,
        alert: dict[str, Any],
        deliveries: Sequence[NewDelivery],
        recipients: Sequence[str],
        now_ms: int,
    ) -> bool:
        """Record an alert's routing and its deliveries in one transaction; False (and
        nothing changed) when the alert was routed before."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO routed (alert_id, routed_at, recipients) VALUES (?, ?, ?)",
                (alert["alert_id"], now_ms, json.dumps(list(recipients))),
            )
            if cur.rowcount == 0:
                return False
            text = json.dumps(alert, sort_keys=True, separators=(",", ":"))
            for d in deliveries:
                db.execute(
                    "INSERT OR IGNORE INTO deliveries (key, alert_id, tenant, kind, recipient, "
                    "channel, address, reason, state, created_at, due_at, updated_at, day, "
                    "alert, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        d.key, alert["alert_id"], alert["tenant"], alert["kind"], d.recipient,
                        d.channel, d.address, d.reason, d.state, now_ms, d.due_at, now_ms,
                        d.day, text, d.last_error,
                    ),
                )  # fmt: skip
        return True

    def last_digest(self, tenant: str, recipient: str) -> dict[str, Any] | None:
        """The newest digest recorded for sending to the person (not one given up on)."""
        row = self._db.execute(
            "SELECT alert FROM deliveries WHERE kind = 'digest' AND tenant = ? AND recipient = ? "
            "AND state NOT IN ('dead', 'suppressed') ORDER BY seq DESC LIMIT 1",
            (tenant, recipient),
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    # -- sending ----------------------------------------------------------------------------

    def due(self, now_ms: int, limit: int = 100) -> list[Delivery]:
        """Deliveries to attempt now: per destination (channel, recipient) only the oldest
        unfinished one, so each destination gets its heads-ups in order."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM deliveries d WHERE state IN {_ACTIVE} AND due_at <= ? "
            f"AND seq = (SELECT min(seq) FROM deliveries WHERE channel = d.channel "
            f"AND recipient = d.recipient AND state IN {_ACTIVE}) ORDER BY due_at, seq LIMIT ?",
            (now_ms, limit),
        ).fetchall()
        return [_delivery(r) for r in rows]

    def get(self, key: str) -> Delivery | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM deliveries WHERE key = ?", (key,))
        found = row.fetchone()
        return None if found is None else _delivery(found)

    def _update(self, key: str, now_ms: int, **fields: Any) -> None:
        sets = ", ".join(f"{name} = ?" for name in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE deliveries SET {sets}, updated_at = ?, version = version + 1 "
                "WHERE key = ?",
                (*fields.values(), now_ms, key),
            )

    def start_attempt(self, key: str, now_ms: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, "
                "updated_at = ?, version = version + 1 WHERE key = ?",
                (now_ms, key),
            )

    def sent(self, key: str, now_ms: int) -> None:
        self._update(key, now_ms, state="sent", sent_at=now_ms, last_error=None)

    def retry(self, key: str, now_ms: int, due_at: int, error: str) -> None:
        self._update(key, now_ms, state="retry", due_at=due_at, last_error=error[:500])

    def dead(self, key: str, now_ms: int, error: str) -> None:
        self._update(key, now_ms, state="dead", last_error=error[:500])

    # -- publishing and reading ---------------------------------------------------------------

    def unpublished(self, limit: int = 500) -> list[Delivery]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM deliveries WHERE published < version ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [_delivery(r) for r in rows]

    def published(self, acknowledged: Sequence[tuple[str, int]]) -> None:
        if not acknowledged:
            return
        with self._tx() as db:
            db.executemany(
                "UPDATE deliveries SET published = max(published, ?) WHERE key = ?",
                [(version, key) for key, version in acknowledged],
            )

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, count(*) FROM deliveries GROUP BY state")
        return {str(state): int(n) for state, n in rows.fetchall()}

    def alert(self, alert_id: str) -> dict[str, Any] | None:
        """The alert as routed (None when this ledger never routed it)."""
        row = self._db.execute(
            "SELECT alert FROM deliveries WHERE alert_id = ? LIMIT 1", (alert_id,)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    # -- feedback -----------------------------------------------------------------------------

    def has_feedback(self, feedback_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM feedback WHERE feedback_id = ?", (feedback_id,))
        return row.fetchone() is not None

    def record_feedback(
        self,
        fb: Feedback,
        entity_kind: str | None,
        alert_kind: str | None,
        event: tuple[str, str] | None,
        now_ms: int,
    ) -> bool:
        """Record one piece of feedback and apply it to the deliveries, in one transaction;
        False (nothing changed) when its id was recorded before. `event`: the done event to
        publish (wire record as JSON, key), kept here until Kafka acknowledged it.

        - done: every delivery of the alert not sent yet (any recipient) is cancelled.
        - snooze: the recipient's deliveries of the alert wait until `snooze_until`: one not
          sent yet is held; one sent gets a second delivery then (a new key; one per channel:
          a later snooze replaces an earlier one still waiting).
        - not_useful: nothing here: thresholds are read from the recorded feedback.
        """
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO feedback (feedback_id, alert_id, tenant, recipient, kind, "
                "snooze_until, at, alert_kind, entity_kind, recorded_at, event, event_key) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    fb.feedback_id, fb.alert_id, fb.tenant, fb.recipient, fb.kind,
                    fb.snooze_until, fb.at, alert_kind, entity_kind, now_ms,
                    event[0] if event else None, event[1] if event else None,
                ),
            )  # fmt: skip
            if cur.rowcount == 0:
                return False
            if fb.kind == "done":
                db.execute(
                    f"UPDATE deliveries SET state = 'cancelled', updated_at = ?, "
                    f"last_error = 'done: feedback from ' || ?, version = version + 1 "
                    f"WHERE alert_id = ? AND state IN {_UNSENT}",
                    (now_ms, fb.recipient, fb.alert_id),
                )
            elif fb.kind == "snooze" and fb.snooze_until is not None:
                self._snooze(db, fb.alert_id, fb.recipient, fb.snooze_until, now_ms)
        return True

    def _snooze(
        self, db: sqlite3.Connection, alert_id: str, recipient: str, until: int, now_ms: int
    ) -> None:
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM deliveries WHERE alert_id = ? AND recipient = ? ORDER BY seq",
            (alert_id, recipient),
        ).fetchall()
        latest: dict[str, Delivery] = {}
        for row in rows:  # per channel, the newest delivery of this heads-up
            d = _delivery(row)
            latest[d.channel] = d
        for d in latest.values():
            if d.state in ("pending", "held", "retry", "snoozed"):
                db.execute(
                    "UPDATE deliveries SET state = 'snoozed', due_at = ?, updated_at = ?, "
                    "version = version + 1 WHERE key = ?",
                    (until, now_ms, d.key),
                )
            elif d.state == "sent":
                db.execute(
                    "INSERT OR IGNORE INTO deliveries (key, alert_id, tenant, kind, recipient, "
                    "channel, address, reason, state, created_at, due_at, updated_at, day, "
                    "alert) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'snoozed', ?, ?, ?, ?, ?)",
                    (
                        snooze_key(d.key, until), alert_id, d.tenant, d.kind, recipient,
                        d.channel, d.address, d.reason, now_ms, until, now_ms, d.day,
                        json.dumps(d.alert, sort_keys=True, separators=(",", ":")),
                    ),
                )  # fmt: skip

    def snoozed_due(self, now_ms: int, limit: int = 100) -> list[Delivery]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM deliveries WHERE state = 'snoozed' AND due_at <= ? "
            "ORDER BY due_at, seq LIMIT ?",
            (now_ms, limit),
        ).fetchall()
        return [_delivery(r) for r in rows]

    def wake(self, key: str, now_ms: int, held_until: int | None) -> None:
        """A snooze ended: send now (pending), or hold for quiet hours until `held_until`."""
        state = "held" if held_until is not None and held_until > now_ms else "pending"
        with self._tx() as db:
            db.execute(
                "UPDATE deliveries SET state = ?, due_at = ?, updated_at = ?, "
                "version = version + 1 WHERE key = ? AND state = 'snoozed'",
                (state, held_until if state == "held" else now_ms, now_ms, key),
            )

    def feedback_on(
        self, tenant: str, recipient: str, entity_kind: str, since_ms: int
    ) -> dict[str, int]:
        """A recipient's feedback on a kind of entity since a time, by kind."""
        rows = self._db.execute(
            "SELECT kind, count(*) FROM feedback WHERE tenant = ? AND recipient = ? "
            "AND entity_kind = ? AND at >= ? GROUP BY kind",
            (tenant, recipient, entity_kind, since_ms),
        ).fetchall()
        return {str(kind): int(n) for kind, n in rows}

    def feedback_counts(self) -> dict[tuple[str, str], int]:
        """(feedback kind, alert kind) -> how many (alert kind "" when not known)."""
        rows = self._db.execute(
            "SELECT kind, coalesce(alert_kind, ''), count(*) FROM feedback GROUP BY 1, 2"
        ).fetchall()
        return {(str(k), str(a)): int(n) for k, a, n in rows}

    def told_counts(self) -> dict[str, int]:
        """Alert kind -> heads-ups told: distinct (alert, recipient) with a sent delivery."""
        rows = self._db.execute(
            "SELECT kind, count(DISTINCT alert_id || char(31) || recipient) FROM deliveries "
            "WHERE state = 'sent' GROUP BY kind"
        ).fetchall()
        return {str(k): int(n) for k, n in rows}

    def unpublished_events(self, limit: int = 100) -> list[tuple[str, str, str]]:
        """(feedback_id, event JSON, key) of done events Kafka has not acknowledged yet."""
        rows = self._db.execute(
            "SELECT feedback_id, event, event_key FROM feedback WHERE event IS NOT NULL "
            "AND event_published = 0 ORDER BY recorded_at LIMIT ?",
            (limit,),
        ).fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]

    def events_published(self, feedback_ids: Sequence[str]) -> None:
        if not feedback_ids:
            return
        with self._tx() as db:
            db.executemany(
                "UPDATE feedback SET event_published = 1 WHERE feedback_id = ?",
                [(f,) for f in feedback_ids],
            )

    def all(self) -> list[Delivery]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM deliveries ORDER BY seq").fetchall()
        return [_delivery(r) for r in rows]

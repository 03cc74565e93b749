"""What a digest reads from the store, as `DigestInputs` for the pure builder (digest.py).

Every query goes through a `Rows` function (SQL with `{name:Type}` parameters bound by the
server, and the parameters): the notifier's is `lookups.store_rows` (the sink's HTTP
endpoint), the CLI's wraps a clickhouse-connect client. Times come back as epoch ms.

- The person: `people FINAL` (the CLI; the notifier has the directory in memory).
- Engagement: the person's distinct events per entity in `entity_events` over the engaged
  days before now, the entity being anything their events touched (tags included), as
  routing counts engagement (lookups.engaged_query).
- Owed: `open_alerts` (unanswered, follow_up) naming the person among their owners.
- Quiet: open silences on entities the person engaged with.
- Moves: `top_movers` over day windows, for the entities the person engaged with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rhythm.notifier.digest import DigestInputs, Move, OpenAlert
from rhythm.schemas.outputs import details_dict
from rhythm.schemas.people import Person, Traits

__all__ = ["Rows", "client_rows", "fetch_inputs", "find_people"]

Rows = Callable[[str, dict[str, Any]], list[dict[str, Any]]]

DAY_S = 86_400
BASELINE_WINDOWS = 7
ENTITIES_MAX = 500

PEOPLE = """
SELECT tenant, actor_type, actor_id, name, email, chat_handle, timezone, working_hours,
       working_days, team, internal, toUnixTimestamp64Milli(updated_at) AS updated_ms
FROM $db.people FINAL
WHERE actor_type = {actor_type:String} AND actor_id = {actor_id:String}
  AND ({tenant:String} = '' OR tenant = {tenant:String})
ORDER BY tenant
"""

_ENGAGED = """
SELECT entity_type, entity_id
FROM $db.entity_events
WHERE tenant = {tenant:String} AND actor_type = {actor_type:String}
  AND actor_id = {actor_id:String} AND occurred_at >= fromUnixTimestamp64Milli({since:Int64})
  AND NOT (entity_type = {actor_type:String} AND entity_id = {actor_id:String})
"""

ENGAGEMENT = """
SELECT entity_type, entity_id, uniqExact(event_id) AS n
FROM $db.entity_events
WHERE tenant = {tenant:String} AND actor_type = {actor_type:String}
  AND actor_id = {actor_id:String} AND occurred_at >= fromUnixTimestamp64Milli({since:Int64})
  AND NOT (entity_type = {actor_type:String} AND entity_id = {actor_id:String})
GROUP BY entity_type, entity_id
ORDER BY n DESC, entity_type, entity_id
LIMIT {limit:UInt32}
"""

_OPEN = """
SELECT alert_id, toString(kind) AS kind, entity_type, entity_id, context_id,
       toUnixTimestamp64Milli(fired_at) AS fired_ms,
       toUnixTimestamp64Milli(last_event_at) AS last_event_ms,
       expected_within_s, score, details
FROM $db.open_alerts
"""

OWED = (
    _OPEN
    + """WHERE tenant = {tenant:String} AND kind IN ('unanswered', 'follow_up')
  AND has(owners, {ref:String})
ORDER BY last_event_at, alert_id
"""
)

QUIET = (
    _OPEN
    + f"""WHERE tenant = {{tenant:String}} AND kind = 'silence'
  AND (entity_type, entity_id) IN ({_ENGAGED})
ORDER BY fired_at DESC, alert_id
"""
)

MOVES = f"""
SELECT entity_type, entity_id, toUnixTimestamp64Milli(window_start) AS window_ms,
       current_count, baseline_count, current_weight, baseline_weight, pace_z, amplitude_z
FROM $db.top_movers(window_seconds = {DAY_S}, baseline_windows = {BASELINE_WINDOWS})
WHERE tenant = {{tenant:String}} AND baseline_active_windows >= {BASELINE_WINDOWS * 2 // 3}
  AND greatest(abs(pace_z), abs(amplitude_z)) >= {{min_z:Float64}}
  AND (entity_type, entity_id) IN ({_ENGAGED})
ORDER BY greatest(abs(pace_z), abs(amplitude_z)) DESC, entity_type, entity_id
LIMIT 100
"""


def _sql(query: str, database: str) -> str:
    if not database.isidentifier():
        raise ValueError(f"not a database name: {database!r}")
    return query.replace("$db", database)


def client_rows(client: Any) -> Rows:
    """A `Rows` over a clickhouse-connect client (the CLI's, as `rhythm report` opens it)."""

    def rows(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(r) for r in client.query(sql, parameters=params).named_results()]

    return rows


def _open_alert(r: Mapping[str, Any]) -> OpenAlert:
    return OpenAlert(
        alert_id=str(r["alert_id"]),
        kind=str(r["kind"]),
        entity_type=str(r["entity_type"]),
        entity_id=str(r["entity_id"]),
        context_id=None if r.get("context_id") is None else str(r["context_id"]),
        fired_at=int(r["fired_ms"]),
        last_event_at=int(r["last_event_ms"]),
        expected_within_s=float(r["expected_within_s"]),
        score=float(r.get("score") or 0.0),
        details=details_dict(r.get("details")),
    )


def _move(r: Mapping[str, Any]) -> Move:
    return Move(
        entity_type=str(r["entity_type"]),
        entity_id=str(r["entity_id"]),
        window_start=int(r["window_ms"]),
        window_s=DAY_S,
        current_count=int(r["current_count"]),
        baseline_count=float(r["baseline_count"]),
        current_weight=float(r["current_weight"]),
        baseline_weight=float(r["baseline_weight"]),
        pace_z=float(r["pace_z"]),
        amplitude_z=float(r["amplitude_z"]),
    )


def fetch_inputs(
    rows: Rows,
    *,
    database: str,
    tenant: str,
    person: str,
    now_ms: int,
    engaged_days: int,
    min_mover_z: float = 2.0,
) -> DigestInputs:
    actor_type, _, actor_id = person.partition(":")
    who = {
        "tenant": tenant,
        "actor_type": actor_type,
        "actor_id": actor_id,
        "since": now_ms - engaged_days * DAY_S * 1000,
    }
    engagement = {
        f"{r['entity_type']}:{r['entity_id']}": int(r["n"])
        for r in rows(_sql(ENGAGEMENT, database), {**who, "limit": ENTITIES_MAX})
    }
    owed = rows(_sql(OWED, database), {"tenant": tenant, "ref": person})
    quiet = rows(_sql(QUIET, database), who)
    moves = rows(_sql(MOVES, database), {**who, "min_z": min_mover_z})
    return DigestInputs(
        owed=tuple(_open_alert(r) for r in owed),
        quiet=tuple(_open_alert(r) for r in quiet),
        moves=tuple(_move(r) for r in moves),
        engagement=engagement,
    )


def _person(r: Mapping[str, Any]) -> Person:
    def opt(name: str) -> Any:
        value = r.get(name)
        return None if value in (None, "", []) else value

    hours = opt("working_hours")
    days = opt("working_days")
    internal = r.get("internal")
    traits = Traits(
        name=opt("name"), email=opt("email"), chat_handle=opt("chat_handle"),
        timezone=opt("timezone"),
        working_hours=(int(hours[0]), int(hours[1])) if hours else None,
        working_days=tuple(int(d) for d in days) if days else None,
        team=opt("team"), internal=None if internal is None else bool(internal),
    )  # fmt: skip
    return Person(
        tenant=str(r["tenant"]),
        actor_type=str(r["actor_type"]),
        actor_id=str(r["actor_id"]),
        traits=traits,
        updated_at=int(r["updated_ms"]),
    )


def find_people(rows: Rows, *, database: str, person: str, tenant: str = "") -> list[Person]:
    """The directory's records of `type:id` (in `tenant`, or in every tenant: "")."""
    actor_type, _, actor_id = person.partition(":")
    params = {"actor_type": actor_type, "actor_id": actor_id, "tenant": tenant}
    return [_person(r) for r in rows(_sql(PEOPLE, database), params)]

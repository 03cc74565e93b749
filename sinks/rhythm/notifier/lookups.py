"""What the notifier reads: the people directory (the compacted `rhythm.people` topic, read
from the beginning into memory at start and followed after) and, for alerts without owners,
who is most engaged with the entity (the store's `entity_events`, through ClickHouse's HTTP
interface: the sink's endpoint, read-only, or a server)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pydantic import ValidationError

from rhythm.notifier.settings import NotifierSettings
from rhythm.runtime.store_http import StoreUnavailableError, query_rows
from rhythm.schemas.outputs import Alert
from rhythm.schemas.people import Person

__all__ = [
    "Directory",
    "StoreUnavailableError",
    "engaged_query",
    "most_engaged",
    "store_rows",
]

log = logging.getLogger(__name__)


class Directory:
    """(tenant, type:id) -> the latest Person, from the people topic."""

    def __init__(self, settings: NotifierSettings) -> None:
        conf = settings.kafka.to_librdkafka()
        conf.update(
            {
                # No group: every notifier reads the whole directory; nothing is committed.
                "group.id": f"rhythm-notifier-directory-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        self.topic = settings.people_topic
        self.people: dict[str, dict[str, Person]] = {}
        self._consumer = Consumer(conf)

    def start(self, timeout_s: float = 30.0) -> None:
        """Read the directory to its end (as it was at start), then follow it in `poll()`."""
        metadata = self._consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if metadata is None or metadata.error is not None:
            log.warning("people topic %s not found: the directory is empty", self.topic)
            return
        tps = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        self._consumer.assign(tps)
        ends = {}
        for tp in tps:
            _low, high = self._consumer.get_watermark_offsets(tp, timeout=10)
            ends[tp.partition] = high
        position = dict.fromkeys(ends, -1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(
            position[p] < ends[p] - 1 for p in ends if ends[p] > 0
        ):
            for message in self._consumer.consume(1000, 0.2):
                if message.error() is None:
                    self._apply(message.value())
                    position[message.partition() or 0] = message.offset() or 0
        log.info("directory: %d people", sum(len(p) for p in self.people.values()))

    def poll(self) -> int:
        n = 0
        for message in self._consumer.consume(500, 0):
            if message.error() is None:
                self._apply(message.value())
                n += 1
        return n

    def _apply(self, value: bytes | None) -> None:
        if not value:
            return
        try:
            person = Person.model_validate_json(value)
        except ValidationError as exc:
            log.warning("people: an invalid record skipped (%s)", exc.errors()[:1])
            return
        tenant = self.people.setdefault(person.tenant, {})
        known = tenant.get(person.ref)
        if known is None or known.updated_at <= person.updated_at:
            tenant[person.ref] = person

    def of(self, tenant: str) -> dict[str, Person]:
        return self.people.get(tenant, {})

    def close(self) -> None:
        self._consumer.close()


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def engaged_query(
    alert: Alert, database: str, internal_types: Sequence[str], days: int, limit: int
) -> str:
    """Actors on our side who acted on the entity most, in the days before the alert."""
    types = ", ".join(_quote(t) for t in internal_types) or "''"
    return (
        f"SELECT actor_type, actor_id, uniqExact(event_id) AS n, sum(weight) AS w "
        f"FROM {database}.entity_events "
        f"WHERE tenant = {_quote(alert.tenant)} AND entity_type = {_quote(alert.entity_type)} "
        f"AND entity_id = {_quote(alert.entity_id)} AND actor_type IN ({types}) "
        f"AND occurred_at >= fromUnixTimestamp64Milli({alert.fired_at - days * 86_400_000}) "
        f"AND occurred_at <= fromUnixTimestamp64Milli({alert.fired_at}) "
        f"GROUP BY actor_type, actor_id ORDER BY n DESC, w DESC, actor_type, actor_id "
        f"LIMIT {int(limit)}"
    )


def most_engaged(settings: NotifierSettings, alert: Alert, limit: int) -> list[str]:
    """type:id of the most engaged internal actors; StoreUnavailableError when the store
    cannot be asked."""
    sql = engaged_query(
        alert, settings.clickhouse_database, settings.internal_types, settings.engaged_days, limit
    )
    return [f"{r['actor_type']}:{r['actor_id']}" for r in store_rows(settings)(sql, {})]


def store_rows(settings: NotifierSettings) -> Callable[[str, dict[str, Any]], list[dict[str, Any]]]:
    """Run a query on the store's HTTP interface (`rhythm.runtime.store_http`):
    StoreUnavailableError when the store cannot be asked."""

    def rows(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        password = settings.clickhouse_password
        return query_rows(
            settings.clickhouse_url,
            sql,
            params,
            user=settings.clickhouse_user,
            password=password.get_secret_value() if password is not None else None,
            timeout_s=settings.request_timeout_s,
        )

    return rows

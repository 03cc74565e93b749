"""The notifier's loop: read alerts, route them into the ledger, commit, deliver what is due,
publish delivery records. One thread does it all (alerts are few; a receiver's time-out
delays the others by at most `request_timeout_s`).

Per turn:
1. Follow the people directory.
2. Read alerts (own consumer group, no auto-commit). Each alert is routed and its
   deliveries recorded in the ledger in one transaction (ledger.py); then the offsets of the
   alerts read are committed. An alert whose routing needs the store while it does not
   answer stops its partition there (seek back, paused for a while): it is routed later,
   in order, never skipped.
3. Deliver what is due, oldest first per destination: record the attempt, send, record the
   outcome (sent; retry after a doubling delay; dead after `max_attempts` or a refusal).
4. Publish the changed deliveries to `rhythm.notifications` (the sink writes them to the
   store's `rhythm.notifications`).
5. Every `digest_check_s`: each internal person of the directory whose working day has
   started (their zone, by the notifier's clock) and who has no digest for that day yet gets
   one built from the store (digest_store.py, digest.py) and recorded in the ledger like an
   alert's deliveries (id `digest:<tenant>:<person>:<day>`), or recorded as decided and not
   sent when nothing in it is new against their last digest. A digest with no item at all
   is not decided: it is looked at again at the next check (the store may be catching up).
   Step 3 sends it.

The clock (`clock`, epoch ms; the wall clock by default) decides quiet hours, caps and
whose day has started; tests inject one.

Feedback (`rhythm.feedback`, from the links' API or `rhythm feedback`) is read by the same
consumer: each piece is recorded and applied in the ledger in one transaction before its
offset is committed (done cancels what is not sent yet, snooze holds or re-delivers, not
useful counts against the recipient's threshold for that kind of entity, applied when later
alerts are planned). A done on a thread's alert becomes an activity event in the thread
(`rhythm.done`), published from the ledger until Kafka acknowledges it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage
from pydantic import ValidationError

from rhythm.notifier.channels import (
    DeliveryError,
    email_message,
    headline,
    send_email,
    send_slack,
    send_webhook,
    slack_payload,
    webhook_payload,
)
from rhythm.notifier.digest import Digest, DigestInputs, build_digest, digest_id, has_new
from rhythm.notifier.digest_render import (
    digest_email,
    digest_slack_payload,
    digest_webhook_payload,
)
from rhythm.notifier.digest_store import fetch_inputs
from rhythm.notifier.feedback import done_event, links, threshold
from rhythm.notifier.ledger import Delivery, Ledger, NewDelivery
from rhythm.notifier.lookups import Directory, StoreUnavailableError, most_engaged, store_rows
from rhythm.notifier.metrics import NotifierMetrics
from rhythm.notifier.routing import (
    Recipient,
    destinations,
    idempotency_key,
    is_internal,
    needs_engaged,
    route,
)
from rhythm.notifier.schedule import (
    backoff_s,
    digest_due,
    local_day,
    next_send_at,
    working_time,
)
from rhythm.notifier.settings import NotifierSettings
from rhythm.schemas import dead_letters, encode_event
from rhythm.schemas.feedback import Feedback
from rhythm.schemas.outputs import Alert
from rhythm.schemas.people import Person

__all__ = ["Notifier", "plan_deliveries", "run_notifier"]

log = logging.getLogger(__name__)

Engaged = Callable[[Alert, int], list[str]]
#: (tenant, person type:id, now ms) -> what their digest is built from
DigestSource = Callable[[str, str, int], DigestInputs]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def plan_deliveries(
    settings: NotifierSettings,
    alert: Alert,
    people: dict[str, Person],
    engaged: list[str],
    count_for_day: Callable[[str, str], int],
    now_ms: int,
    threshold_for: Callable[[str], float] = lambda _recipient: 0.0,
) -> tuple[list[str], list[NewDelivery], dict[str, int]]:
    """Recipients, their deliveries (pending, held for quiet hours, or suppressed by the cap
    or by the recipient's not-useful threshold for this kind of entity) and what was
    suppressed by reason. Pure but for `count_for_day` and `threshold_for` (the ledger's)."""
    recipients = route(
        alert, engaged, settings.queue_for(alert.tenant), people, settings.internal_types,
        settings.engaged_top,
    )  # fmt: skip
    out: list[NewDelivery] = []
    suppressed = {"quiet_hours": 0, "cap": 0, "not_useful": 0}
    planned_today: dict[tuple[str, str], int] = {}
    by_recipient: dict[str, list[Any]] = {}
    for d in destinations(recipients, people, settings.channels, settings.webhook_url):
        by_recipient.setdefault(d.recipient.ref, []).append(d)
    for ref, dests in by_recipient.items():
        person = people.get(ref)
        wt = working_time(
            person, settings.default_timezone, settings.default_working_hours,
            settings.default_working_days,
        )  # fmt: skip
        due = next_send_at(now_ms, wt) if settings.quiet_hours else now_ms
        day = local_day(due, wt.zone)
        held = due > now_ms
        bar = threshold_for(ref)
        noise = alert.score < bar
        counted = count_for_day(ref, day) + planned_today.get((ref, day), 0)
        over = not noise and settings.daily_cap > 0 and counted >= settings.daily_cap
        planned_today[(ref, day)] = planned_today.get((ref, day), 0) + (0 if over or noise else 1)
        why = None
        if noise:
            suppressed["not_useful"] += len(dests)
            why = f"not useful: score {alert.score:.2f} under this recipient's {bar:.2f}"
        elif over:
            suppressed["cap"] += len(dests)
            why = f"daily cap {settings.daily_cap} reached"
        elif held:
            suppressed["quiet_hours"] += len(dests)
        for d in dests:
            out.append(
                NewDelivery(
                    key=idempotency_key(alert.alert_id, ref, d.channel),
                    recipient=ref,
                    channel=d.channel,
                    address=d.address,
                    reason=d.recipient.reason,
                    state="suppressed" if why else ("held" if held else "pending"),
                    due_at=due,
                    day=day,
                    last_error=why,
                )
            )
    return [r.ref for r in recipients], out, suppressed


class Notifier:
    def __init__(
        self,
        settings: NotifierSettings,
        metrics: NotifierMetrics | None = None,
        engaged: Engaged | None = None,
        digest_inputs: DigestSource | None = None,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.metrics = metrics or NotifierMetrics(settings.stall_after_s)
        self.ledger = Ledger(settings.ledger_path)
        self._counts: dict[str, int] = self.ledger.counts()
        self._feedback_counts = self.ledger.feedback_counts()
        self._told = self.ledger.told_counts()
        self.metrics.watch_ledger(lambda: dict(self._counts))
        self.metrics.watch_feedback(lambda: (dict(self._feedback_counts), dict(self._told)))
        self._links_key = settings.feedback_key() if settings.links_base else b""
        self.directory = Directory(settings)
        self._engaged = engaged or (lambda alert, n: most_engaged(settings, alert, n))
        rows = store_rows(settings)
        self._digest_inputs = digest_inputs or (
            lambda tenant, person, now: fetch_inputs(
                rows, database=settings.clickhouse_database, tenant=tenant, person=person,
                now_ms=now, engaged_days=settings.engaged_days,
            )
        )  # fmt: skip
        self._next_digests = 0.0
        conf = settings.kafka.manual_commit_consumer(
            settings.group_id, settings.session_timeout_ms, settings.group_instance_id
        )
        self.consumer = Consumer(conf)
        producer_conf = settings.kafka.to_librdkafka()
        producer_conf.update({"enable.idempotence": True, "acks": "all", "linger.ms": 20})
        self.producer = Producer(producer_conf)
        self._acked: list[tuple[str, int]] = []
        self._events_acked: list[str] = []
        self._events_in_flight: set[str] = set()
        self._in_flight: dict[str, int] = {}
        self._paused: dict[tuple[str, int], float] = {}
        self._route_backoff_s = 1.0
        self._next_publish = 0.0
        self._next_counts = 0.0
        self._next_feedback_counts = 0.0

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.directory.start()
        self.consumer.subscribe(
            [self.settings.alerts_topic, self.settings.feedback_topic], on_assign=self._on_assign
        )
        self.metrics.progress.set_ready(True)
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.metrics.progress.set_ready(False)
            self._next_publish = 0.0
            self._publish()  # the last changes too
            self.producer.flush(10)
            self._collect_acks()
            self.consumer.close()
            self.directory.close()
            self.ledger.close()

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.progress.assigned({(tp.topic, tp.partition) for tp in partitions})

    def step(self) -> None:
        self.metrics.progress.beat()
        self.directory.poll()
        self._resume_due()
        messages = self.consumer.consume(100, self.settings.tick_s)
        if messages:
            self._intake(messages)
        now = time.monotonic()
        if self.settings.digest and now >= self._next_digests:
            self._next_digests = now + self.settings.digest_check_s
            self.plan_digests(self._clock())
        self.deliver_due()
        self._publish()
        now = time.monotonic()
        if now >= self._next_counts:
            self._next_counts = now + 1.0
            self._counts = self.ledger.counts()
        if now >= self._next_feedback_counts:  # scans the ledger: now and then is enough
            self._next_feedback_counts = now + 15.0
            self._feedback_counts = self.ledger.feedback_counts()
            self._told = self.ledger.told_counts()

    # -- intake -----------------------------------------------------------------------------

    def _intake(self, messages: list[KafkaMessage]) -> None:
        commit: dict[tuple[str, int], int] = {}
        stopped: set[tuple[str, int]] = set()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("alerts consumer: %s", error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:
                continue
            tp = (topic, partition)
            if tp in stopped:
                continue
            try:
                if topic == self.settings.feedback_topic:
                    self.handle_feedback(message.value())
                else:
                    self.handle_alert(message.value())
            except StoreUnavailableError as exc:
                self.metrics.route_errors.inc()
                log.warning("routing put off (%s): partition %s waits at %d", exc, tp, offset)
                stopped.add(tp)
                self._pause(tp, offset)
                continue
            commit[tp] = offset + 1
            self.metrics.progress.done(topic, partition, offset + 1)
        if commit:
            # Only now: every alert before these offsets is in the ledger (committed). A
            # commit refused (the partition moved on a rebalance) only means re-reading
            # alerts the ledger already holds. Their delivery records go out first, so a
            # group past an alert has published its routing (`rhythm sync --notifier`).
            self._next_publish = 0.0
            self._publish()
            self.producer.flush(10)
            try:
                self.consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in commit.items()],
                    asynchronous=False,
                )
            except KafkaException as exc:
                log.warning("offset commit refused (%s): the alerts are read again", exc)

    def _pause(self, tp: tuple[str, int], offset: int) -> None:
        part = TopicPartition(tp[0], tp[1], offset)
        self.consumer.pause([part])
        self.consumer.seek(part)
        self._paused[tp] = time.monotonic() + self._route_backoff_s
        self._route_backoff_s = min(30.0, self._route_backoff_s * 2)

    def _resume_due(self) -> None:
        now = time.monotonic()
        due = [tp for tp, at in self._paused.items() if at <= now]
        if due:
            try:
                self.consumer.resume([TopicPartition(t, p) for t, p in due])
            except KafkaException as exc:  # revoked meanwhile
                log.info("resume: %s", exc)
            for tp in due:
                del self._paused[tp]

    def handle_alert(self, value: bytes | None) -> bool:
        """Route one alert into the ledger; True when it added deliveries."""
        if not value:
            self.metrics.alerts.labels("invalid").inc()
            return False
        try:
            alert = Alert.model_validate_json(value)
        except ValidationError as exc:
            log.warning("an invalid alert skipped: %s", exc.errors()[:1])
            self.metrics.alerts.labels("invalid").inc()
            return False
        if alert.historical:  # the history lane's: what happened then, not a heads-up now
            self.metrics.alerts.labels("historical").inc()
            return False
        if alert.kind not in self.settings.kinds:
            self.metrics.alerts.labels("skipped_kind").inc()
            return False
        if self.ledger.routed(alert.alert_id):
            self.metrics.alerts.labels("duplicate").inc()
            return False
        people = self.directory.of(alert.tenant)
        engaged: list[str] = []
        if needs_engaged(alert) and self.settings.engaged_top > 0:
            engaged = self._engaged(alert, self.settings.engaged_top * 4)
        self._route_backoff_s = 1.0
        now = self._clock()
        recipients, deliveries, suppressed = plan_deliveries(
            self.settings, alert, people, engaged, self.ledger.count_for_day, now,
            lambda ref: self.threshold(alert, ref, now),
        )  # fmt: skip
        if not self.ledger.intake(alert.model_dump(), deliveries, recipients, now):
            self.metrics.alerts.labels("duplicate").inc()
            return False
        self.metrics.alerts.labels("routed").inc()
        for reason, n in suppressed.items():
            if n:
                self.metrics.suppressed.labels(reason).inc(n)
        log.info(
            "alert %s (%s %s:%s) -> %s", alert.alert_id, alert.kind, alert.entity_type,
            alert.entity_id, ", ".join(f"{d.recipient}/{d.channel}/{d.state}" for d in deliveries),
        )  # fmt: skip
        return bool(deliveries)

    def threshold(self, alert: Alert, recipient: str, now_ms: int) -> float:
        """The score `alert` needs to reach `recipient`, from their feedback on its kind of
        entity (tenant, role:entity type) over the last `feedback_days`."""
        s = self.settings
        said = self.ledger.feedback_on(
            alert.tenant, recipient, f"{alert.role}:{alert.entity_type}",
            now_ms - s.feedback_days * 86_400_000,
        )  # fmt: skip
        useful = said.get("done", 0) + said.get("snooze", 0)
        return threshold(said.get("not_useful", 0), useful, s.not_useful_step, s.not_useful_cap)

    # -- feedback -----------------------------------------------------------------------------

    def handle_feedback(self, value: bytes | None) -> bool:
        """Record and apply one piece of feedback; True when it was new."""
        try:
            fb = Feedback.model_validate_json(value or b"")
        except ValidationError as exc:
            log.warning("invalid feedback skipped: %s", exc.errors()[:1])
            self.metrics.feedback.labels("invalid").inc()
            return False
        alert = self.ledger.alert(fb.alert_id)
        kind = (alert or {}).get("kind") or fb.alert_kind
        entity_kind = fb.entity_kind
        if alert is not None:
            entity_kind = f"{alert['role']}:{alert['entity_type']}"
        event = None
        made = done_event(fb, alert)
        if made is not None:
            record, key = made
            event = (json.dumps(record, sort_keys=True), key)
        if not self.ledger.record_feedback(fb, entity_kind, kind, event, self._clock()):
            return False
        self.metrics.feedback.labels(fb.kind).inc()
        log.info(
            "feedback %s: %s on alert %s by %s%s", fb.feedback_id, fb.kind, fb.alert_id,
            fb.recipient, "" if alert is not None else " (an alert this notifier never routed)",
        )  # fmt: skip
        return True

    def _publish_events(self) -> None:
        """The done events recorded in the ledger, until Kafka acknowledges them."""
        for fid, record, key in self.ledger.unpublished_events():
            if fid in self._events_in_flight:
                continue
            self._events_in_flight.add(fid)

            def on_delivery(err: KafkaError | None, _msg: KafkaMessage, fid: str = fid) -> None:
                if err is None:
                    self._events_acked.append(fid)
                else:
                    log.warning("done event of feedback %s not published: %s", fid, err)
                self._events_in_flight.discard(fid)

            try:
                self.producer.produce(
                    self.settings.events_topic, encode_event(json.loads(record)), key,
                    on_delivery=on_delivery,
                )  # fmt: skip
            except BufferError:
                self._events_in_flight.discard(fid)
                break

    def _links(self, d: Delivery) -> dict[str, str]:
        base = self.settings.links_base
        if base is None:
            return {}
        return links(
            base, self._links_key, d.tenant, d.alert_id, d.recipient, time.time(),
            self.settings.feedback_link_ttl_s,
        )  # fmt: skip

    # -- delivery ---------------------------------------------------------------------------

    def wake_snoozed(self) -> int:
        """Snoozes that ended: their deliveries go now (or at the recipient's next working
        hour, in quiet hours)."""
        s = self.settings
        now = self._clock()
        woken = self.ledger.snoozed_due(now)
        for d in woken:
            person = self.directory.of(d.tenant).get(d.recipient)
            wt = working_time(
                person, s.default_timezone, s.default_working_hours, s.default_working_days
            )
            self.ledger.wake(d.key, now, next_send_at(now, wt) if s.quiet_hours else None)
        return len(woken)

    def deliver_due(self) -> int:
        self.wake_snoozed()
        done = 0
        for delivery in self.ledger.due(self._clock()):
            self.metrics.progress.beat()
            self._attempt(delivery)
            done += 1
        return done

    def _attempt(self, d: Delivery) -> None:
        s = self.settings
        self.ledger.start_attempt(d.key, self._clock())
        attempt = d.attempts + 1
        try:
            self._send(d)
        except DeliveryError as exc:
            now = self._clock()
            if exc.transient and attempt < s.max_attempts:
                delay = backoff_s(attempt, s.retry_base_s, s.retry_max_s)
                self.ledger.retry(d.key, now, now + int(delay * 1000), exc.reason)
                self.metrics.retried.labels(d.channel).inc()
                log.info("delivery %s (%s) failed (%s): retry in %.1fs", d.key, d.channel,
                         exc.reason, delay)  # fmt: skip
            else:
                self.ledger.dead(d.key, now, exc.reason)
                self.metrics.failed.labels(d.channel).inc()
                log.warning("delivery %s (%s to %s) dead-lettered after %d attempt(s): %s",
                            d.key, d.channel, d.recipient, attempt, exc.reason)  # fmt: skip
            return
        self.ledger.sent(d.key, self._clock())
        self.metrics.sent.labels(d.channel).inc()
        if d.kind == "digest":
            self.metrics.digests.labels("sent").inc()

    def _send(self, d: Delivery) -> None:
        s = self.settings
        person = self.directory.of(d.tenant).get(d.recipient)
        traits = person.traits if person is not None else None
        digest = Digest.from_dict(d.alert) if d.kind == "digest" else None
        text = ""
        if digest is None:
            wt = working_time(
                person, s.default_timezone, s.default_working_hours, s.default_working_days
            )
            text = headline(d.alert, wt.zone)
        if d.channel == "webhook":
            assert s.webhook_url is not None and s.webhook_secret is not None
            recipient = {
                "ref": d.recipient,
                "reason": d.reason,
                "name": traits.name if traits else None,
                "email": traits.email if traits else None,
                "chat_handle": traits.chat_handle if traits else None,
            }
            if digest is not None:
                body = digest_webhook_payload(d.key, digest, recipient)
            else:
                body = webhook_payload(d.key, d.alert, recipient, text, self._links(d))
            secret = s.webhook_secret.get_secret_value().encode()
            send_webhook(s.webhook_url, secret, d.key, body, s.request_timeout_s)
        elif d.channel == "slack":
            assert s.slack_webhook_url is not None
            if digest is not None:
                body = digest_slack_payload(d.address, digest)
            else:
                body = slack_payload(d.address, d.alert, text, self._links(d))
            send_slack(s.slack_webhook_url.get_secret_value(), d.key, body, s.request_timeout_s)
        elif d.channel == "email":
            name = traits.name if traits else None
            if digest is not None:
                send_email(s, digest_email(s, d.key, d.address, digest))
            else:
                send_email(
                    s, email_message(s, d.key, d.address, name, d.alert, text, self._links(d))
                )
        else:
            raise DeliveryError(f"unknown channel {d.channel}", False)

    # -- digests ----------------------------------------------------------------------------

    def plan_digests(self, now_ms: int) -> int:
        """Record the digest of each internal person whose working day has started and who
        has none for that day yet; returns how many were planned for sending. A store that
        does not answer leaves the rest for the next check."""
        s = self.settings
        self.metrics.digest_checks.inc()
        planned = 0
        for tenant, people in list(self.directory.people.items()):
            for ref, person in list(people.items()):
                if not is_internal(ref, person, s.internal_types):
                    continue
                wt = working_time(
                    person, s.default_timezone, s.default_working_hours, s.default_working_days
                )
                due = digest_due(now_ms, wt)
                if due is None or self.ledger.routed(digest_id(tenant, ref, due[0])):
                    continue
                dests = destinations([Recipient(ref, "digest")], people, s.channels, s.webhook_url)
                if not dests:
                    continue
                try:
                    inputs = self._digest_inputs(tenant, ref, now_ms)
                except StoreUnavailableError as exc:
                    self.metrics.route_errors.inc()
                    log.warning("digests put off (%s): tried again in %.0fs", exc,
                                s.digest_check_s)  # fmt: skip
                    return planned
                digest = build_digest(
                    tenant=tenant, person=ref, name=person.traits.name, zone=wt.zone,
                    day=due[0], now_ms=now_ms, inputs=inputs, engaged_days=s.engaged_days,
                    cap=s.digest_items,
                )  # fmt: skip
                if not digest.items:
                    continue  # nothing at all (yet): looked at again at the next check
                last = self.ledger.last_digest(tenant, ref)
                new = has_new(digest, Digest.from_dict(last).keys() if last else ())
                deliveries = [
                    NewDelivery(
                        key=idempotency_key(digest.id, ref, d.channel),
                        recipient=ref,
                        channel=d.channel,
                        address=d.address,
                        reason="digest",
                        state="pending",
                        due_at=now_ms,
                        day=due[0],
                    )
                    for d in (dests if new else [])
                ]
                if not self.ledger.intake(digest.as_dict(), deliveries, [ref], now_ms):
                    continue
                outcome = "planned" if new else "skipped_nothing_new"
                self.metrics.digests.labels(outcome).inc()
                planned += int(new)
                log.info("digest %s (%d items, day started %s): %s", digest.id,
                         len(digest.items), due[1], outcome)  # fmt: skip
        return planned

    # -- publishing -------------------------------------------------------------------------

    def _publish(self) -> None:
        self._collect_acks()
        now = time.monotonic()
        if now < self._next_publish:
            return
        self._next_publish = now + 0.5
        self._publish_events()
        for d in self.ledger.unpublished():
            if self._in_flight.get(d.key, 0) >= d.version:
                continue
            self._in_flight[d.key] = d.version
            value = d.record().model_dump_json().encode()

            def on_delivery(err: KafkaError | None, _msg: KafkaMessage, d: Delivery = d) -> None:
                if err is None:
                    self._acked.append((d.key, d.version))
                else:
                    log.warning("notification record %s not published: %s", d.key, err)
                if self._in_flight.get(d.key) == d.version:
                    del self._in_flight[d.key]

            try:
                if d.state == "dead":
                    self._dead_letter(d)
                self.producer.produce(
                    self.settings.notifications_topic, value, d.key, on_delivery=on_delivery
                )
            except BufferError:
                del self._in_flight[d.key]
                break
        self.producer.poll(0)

    def _dead_letter(self, d: Delivery) -> None:
        """The dead delivery on the dead-letter topic, as the other parts write theirs: the
        alert as value, why in the headers. Published with the delivery's record (again if
        that record has to be published again: keyed by the delivery, so a copy is plain)."""
        self.producer.produce(
            self.settings.dead_letters_topic,
            json.dumps(d.alert, sort_keys=True).encode(),
            d.key,
            headers=dead_letters.headers(
                "notification_failed",
                f"{d.channel} to {d.recipient}: {d.last_error}",
                self.settings.alerts_topic,
                extra=[
                    ("rhythm.notifier.delivery_key", d.key),
                    ("rhythm.notifier.attempts", str(d.attempts)),
                ],
            ),
        )

    def _collect_acks(self) -> None:
        self.producer.poll(0)
        if self._acked:
            acked, self._acked = self._acked, []
            self.ledger.published(acked)
        if self._events_acked:
            events, self._events_acked = self._events_acked, []
            self.ledger.events_published(events)


def run_notifier(
    settings: NotifierSettings,
    stop: threading.Event,
    *,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Run until `stop` is set: the health server, then the loop."""
    from rhythm.runtime.health import HealthServer

    log.info(
        "notifier: group %s, channels %s, ledger %s", settings.group_id,
        ", ".join(settings.channels) or "none (routing is recorded, nothing is sent)",
        settings.ledger_path,
    )  # fmt: skip
    notifier = Notifier(settings)
    server = None
    ready: dict[str, Any] = {"ledger": str(settings.ledger_path)}
    if settings.metrics_port:
        server = HealthServer(
            settings.metrics_host,
            settings.metrics_port,
            notifier.metrics.registry,
            notifier.metrics.progress,
        ).start()
        ready["metrics"] = f"{server.url}/metrics"
    api = None
    if settings.feedback_port:
        from rhythm.notifier.feedback_api import FeedbackApi

        api = FeedbackApi(settings, notifier.metrics).start()
        ready["feedback"] = api.url
    try:
        if on_ready is not None:
            on_ready(ready)
        notifier.run(stop)
    finally:
        if api is not None:
            api.stop()
        if server is not None:
            server.stop()

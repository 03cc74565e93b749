"""The client in a product service while the broker is down: memory stays bounded (the
queue is capped, RSS measured while the service keeps tracking), the configured full-queue
policy gives events up with `on_error`, and once the broker is back the queued events are
delivered. Every event offered is either on the topic or was reported given up, never both,
never neither."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rhythm.schemas import TopicSpec, decode_event
from rhythm.stack.kafka import LocalKafka, LocalKafkaSettings
from rhythm.stack.ports import free_ports

from ..integration.conftest import payload, read_topic
from .report import REPORT

pytestmark = pytest.mark.integration

CHILD = Path(__file__).with_name("outage_child.py")
QUEUE_MAX = 20_000


class Service:
    """outage_child.py as a process: a service tracking events through the client."""

    def __init__(self, work: Path, bootstrap: str, topic: str, policy: str, block_s: float):
        self.work = work
        work.mkdir()
        self.topic = topic
        self.policy = policy
        args = [bootstrap, topic, policy, str(QUEUE_MAX), str(block_s), str(work)]
        with (work / "stderr.log").open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, str(CHILD), *args], stderr=err)

    def samples(self) -> list[dict[str, Any]]:
        path = self.work / "SAMPLES"
        text = path.read_text() if path.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def last(self) -> dict[str, Any]:
        samples = self.samples()
        return samples[-1] if samples else {"offered": 0, "delivered": 0, "queued": 0}

    def stop(self) -> dict[str, Any]:
        (self.work / "STOP").touch()
        self.proc.wait(timeout=300)
        assert self.proc.returncode == 0, (self.work / "stderr.log").read_text()[-3000:]
        summary: dict[str, Any] = json.loads((self.work / "SUMMARY").read_text())
        return summary

    def given_up(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for line in (self.work / "GIVEN_UP").read_text().splitlines():
            number, reason = line.split()
            assert int(number) not in out, "an event reported given up twice"
            out[int(number)] = reason
        return out


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.long  # a broker of its own, stopped and started: minutes on a busy machine
def test_a_service_keeps_tracking_through_a_broker_outage(tmp_path: Path) -> None:
    port, controller = free_ports(2)
    bootstrap = f"127.0.0.1:{port}"
    topics = {"drop": f"outage-drop-{uuid.uuid4().hex[:6]}",
              "block": f"outage-block-{uuid.uuid4().hex[:6]}"}  # fmt: skip
    broker = LocalKafka(
        LocalKafkaSettings(
            home=tmp_path / "kafka", port=port, controller_port=controller, start_timeout_s=240
        ),
        owned=True,
    )
    # The topics exist; then the broker goes away (stopped, its data kept) before the
    # services start tracking, and comes back later with the same topics.
    broker.up([TopicSpec(t, 2, {}) for t in topics.values()])
    broker.down()
    services = {
        "drop": Service(tmp_path / "drop", bootstrap, topics["drop"], "drop", 0),
        "block": Service(tmp_path / "block", bootstrap, topics["block"], "block", 0.02),
    }
    try:
        # -- the outage: no broker at all; the services keep tracking --------------------------
        drop = services["drop"]
        wait_for(lambda: drop.last()["offered"] >= 5 * QUEUE_MAX, 180, "5x the queue offered")
        wait_for(lambda: services["block"].last()["dropped"] >= 20, 120, "block to give up")
        during = drop.samples()
        full_at = next(i for i, s in enumerate(during) if s["queued"] >= QUEUE_MAX)
        rss_full = during[full_at]["rss_kib"]
        rss_max = max(s["rss_kib"] for s in during[full_at:])
        last = during[-1]
        assert last["queued"] <= QUEUE_MAX and last["delivered"] == 0
        # Tracking went on to 5x the queue's size: memory grew by less than the queue holds
        # again (an unbounded queue would have grown by 4x it, ~1 kB per event here).
        assert rss_max - rss_full < 25_000, (rss_full, rss_max)

        # -- the broker comes back -------------------------------------------------------------
        broker.up(topics=())
        offered_at_recovery = {p: s.last()["offered"] for p, s in services.items()}
        wait_for(
            lambda: all(s.last()["delivered"] > QUEUE_MAX // 2 for s in services.values()),
            300, "delivery after recovery",
        )  # fmt: skip
        results = {p: s.stop() for p, s in services.items()}

        for policy, service in services.items():
            summary = results[policy]
            given_up = service.given_up()
            on_topic = {
                uuid.UUID(decode_event(payload(m))["event_id"]).int
                for m in read_topic(bootstrap, service.topic, summary["delivered"], 120)
            }
            offered = set(range(1, summary["offered"] + 1))
            assert summary["left_after_flush"] == 0
            assert len(on_topic) == summary["delivered"]  # no duplicates on the topic either
            assert on_topic.isdisjoint(given_up)
            assert on_topic | set(given_up) == offered  # nothing lost silently
            reasons = Counter(given_up.values())
            assert set(reasons) == {"queue_full"}  # the policy's reason, and no other
            assert summary["dropped"] == {"queue_full": reasons["queue_full"]}
            assert summary["failed"] == {}
            # What the queue held through the outage was delivered when the broker came back.
            assert set(range(1, QUEUE_MAX + 1)) <= on_topic
            # Delivery resumed: events tracked after the broker came back arrived.
            assert max(on_topic) > offered_at_recovery[policy]
            REPORT.notes.append(
                f"client outage ({policy} policy, queue {QUEUE_MAX:,}): {len(offered):,} "
                f"offered = {len(on_topic):,} delivered + {len(given_up):,} given up "
                f"({dict(reasons)}, each reported to on_error once)"
                + (
                    f"; RSS {rss_full / 1024:.0f} MiB when the queue filled, at most "
                    f"{rss_max / 1024:.0f} MiB after {during[-1]['offered']:,} offered "
                    "with the broker down"
                    if policy == "drop"
                    else ""
                )
            )
    finally:
        for service in services.values():
            if service.proc.poll() is None:
                service.proc.kill()
                service.proc.wait(10)
        broker.down()


def test_a_topic_that_does_not_exist_is_reported_not_raised(kafka_broker: LocalKafka) -> None:
    """Found by the outage test: once librdkafka knows a topic is missing, produce() raised
    KafkaException out of track() (the service's own code path) and the event was neither
    counted nor reported. It is given up as unknown_topic and reported to on_error."""
    from rhythm.producers import Client, ClientSettings, KafkaSettings

    reported: list[str] = []
    settings = ClientSettings(
        kafka=KafkaSettings(bootstrap_servers=kafka_broker.bootstrap),
        topic=f"missing-{uuid.uuid4().hex[:8]}",
        linger_ms=5,
        # librdkafka waits this long (30 s by default) before it believes a topic missing
        extra={"topic.metadata.propagation.max.ms": 2000},
    )
    client = Client(settings, on_error=lambda _e, reason: reported.append(reason))
    try:
        client.track("acme", ("user", "u-1"), "clicked")
        assert client.flush(60) == 0  # the delivery report says the topic is unknown
        for _ in range(5):  # now produce() itself refuses: still no exception for the caller
            client.track("acme", ("user", "u-1"), "clicked")
        assert client.flush(60) == 0
    finally:
        client.close(5)
    assert reported == ["unknown_topic"] * 6
    assert client.stats.failed == {"unknown_topic": 6}
    REPORT.notes.append("client: events for a topic that does not exist: 6 of 6 reported "
                        "to on_error as unknown_topic, track() never raised")  # fmt: skip

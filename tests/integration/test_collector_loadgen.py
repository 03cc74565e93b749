"""bench/loadgen (the collector bench's Go load generator) against a real `rhythm collector` on
the session broker: every request answered 200 once Kafka acknowledged, the open loop's
schedule, the collector's Server-Timing stages, and every event counted in the topic. Go is
required (CI installs it): without it the build fails, and so does this test."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from bench.collector_bench import STAGES, Loadgen, _bodies, loadgen_binary
from bench.harness import create_topic, messages_in

from rhythm.stack.kafka import LocalKafka

from .test_collector import CollectorProcess

pytestmark = pytest.mark.integration


def test_loadgen_builds() -> None:
    assert loadgen_binary().is_file()


def test_loadgen_drives_the_collector_and_reads_its_stages(
    kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = f"loadgen.{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, 2)
    collector = CollectorProcess(tmp_path, bootstrap, "loadgen", server_timing=True)
    collector.env["RHYTHM_CLIENT_TOPIC"] = topic
    key, _ = collector.key("acme")
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_bytes(b"\n".join(_bodies("lg", 5, 10)) + b"\n")
    try:
        collector.start()
        gen = Loadgen(collector.url, key, bodies)
        opened = gen.run("open", 30, rate=20)
        closed = gen.run("closed", 12, conns=3)
        counted = collector.metric('rhythm_collector_stage_seconds_count{stage="kafka"}')
    finally:
        collector.close()
    assert [r.status for r in opened + closed] == [200] * 42
    # Open loop: request i is due at i / rate whatever the answers did, and is timed from then.
    assert [round(r.due, 6) for r in opened] == [round(i / 20, 6) for i in range(30)]
    for r in opened + closed:
        assert r.due <= r.sent <= r.done
        assert set(r.stages) == set(STAGES)
        # The stages cover the handler up to its answer (ms, rounded to µs); Kafka's
        # acknowledgement always takes some time.
        assert sum(r.stages[s] for s in STAGES if s != "total") <= r.stages["total"] + 0.01
        assert r.stages["kafka"] > 0
        assert r.stages["total"] <= 1000 * r.latency
    assert counted == 42
    # Each request's 10 events were sent once: 420 messages, the resent bodies included.
    assert messages_in(bootstrap, topic) == 420

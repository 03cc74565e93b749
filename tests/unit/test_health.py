"""The liveness and readiness rules (health.py), on a fake clock, and the server's answers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry

from rhythm.runtime.health import HealthServer, Progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def progress(clock: Clock, stall_after_s: float = 10, ready: bool = True) -> Progress:
    p = Progress("test", stall_after_s, clock=clock, wall=clock)
    p.set_ready(ready)
    return p


def test_caught_up_partitions_are_live_however_long_they_stay_quiet() -> None:
    clock = Clock()
    p = progress(clock)
    p.done("t", 0, 5)
    p.end("t", 0, 5)
    clock.now += 3600
    assert p.verdict().live
    assert p.verdict().waiting == 0


def test_input_waiting_without_progress_fails_liveness_after_the_grace() -> None:
    clock = Clock()
    p = progress(clock)
    p.done("t", 0, 5)
    p.end("t", 0, 9)
    clock.now += 9
    assert p.verdict().live  # still within stall_after_s
    clock.now += 2
    v = p.verdict()
    assert not v.live and v.waiting == 4 and "no progress" in v.reason
    p.done("t", 0, 6)  # one more done: progress, so live again
    assert p.verdict().live


def test_progress_on_one_partition_does_not_hide_a_stall_on_another() -> None:
    clock = Clock()
    p = progress(clock)
    for partition in (0, 1):
        p.done("t", partition, 0)
        p.end("t", partition, 100)
    for _ in range(5):
        clock.now += 5
        p.done("t", 0, int(clock.now))
    assert not p.verdict().live


def test_a_loop_that_stops_turning_fails_liveness_even_with_nothing_waiting() -> None:
    clock = Clock()
    p = progress(clock)
    p.beat()
    clock.now += 11
    assert "loop" in p.verdict().reason
    p.beat()
    assert p.verdict().live


def test_a_part_recovering_its_state_is_not_stalled_and_gets_a_fresh_grace_after() -> None:
    clock = Clock()
    p = progress(clock, ready=False)
    p.done("t", 0, 0)
    p.end("t", 0, 50)
    clock.now += 300
    assert p.verdict().live  # recovering: busy, not stalled
    p.set_ready(True)
    clock.now += 9
    assert p.verdict().live
    clock.now += 2
    assert not p.verdict().live


def test_revoked_partitions_no_longer_count() -> None:
    clock = Clock()
    p = progress(clock)
    p.done("t", 0, 0)
    p.end("t", 0, 10)
    p.done("t", 1, 0)
    p.end("t", 1, 10)
    p.assigned({("t", 1)})
    p.forget("t", 1)
    clock.now += 60
    assert p.verdict().live and p.verdict().waiting == 0


def test_the_server_answers_200_and_503_and_exports_the_verdict() -> None:
    clock = Clock()
    p = progress(clock)
    p.set_ready(False)
    server = HealthServer("127.0.0.1", 0, CollectorRegistry(), p).start()
    try:
        assert _get(server.url + "/healthz")[0] == 200
        assert _get(server.url + "/readyz")[0] == 503
        p.set_ready(True)
        assert _get(server.url + "/readyz")[0] == 200
        p.done("t", 0, 1)
        p.end("t", 0, 3)
        clock.now += 11
        code, body = _get(server.url + "/healthz")
        assert code == 503 and json.loads(body)["waiting"] == 2
        metrics = _get(server.url + "/metrics")[1].decode()
        assert 'rhythm_health_live{component="test"} 0.0' in metrics
        assert 'rhythm_health_input_waiting_messages{component="test"} 2.0' in metrics
        assert _get(server.url + "/nope")[0] == 404
    finally:
        server.stop()


def test_the_server_serves_a_parts_json_documents_beside_its_health() -> None:
    """The history worker's `/tenants` (each tenant's watermark), read by `rhythm backfill`
    through `read_json`."""
    from rhythm.runtime.scrape import read_json

    marks = {"partitions": [0], "watermarks": {"acme": 1}}
    server = HealthServer(
        "127.0.0.1", 0, CollectorRegistry(), progress(Clock()), {"/tenants": lambda: marks}
    ).start()
    try:
        assert read_json(server.port, "/tenants") == marks
        marks = {"partitions": [0, 1], "watermarks": {}}  # read at each request
        assert read_json(server.port, "/tenants") == marks
        assert read_json(server.port, "/other") is None and _get(server.url + "/other")[0] == 404
    finally:
        server.stop()
    assert read_json(server.port, "/tenants") is None  # not running: unavailable, not an error


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_client_counters_keep_the_counts_of_clients_that_are_gone() -> None:
    """A closed client's counts stay in the totals: a counter that goes down reads as a reset
    to Prometheus and loses what was counted since the last scrape."""
    import gc

    from rhythm.producers.metrics import ClientStats, _ClientCollector

    class FakeClient:
        def __init__(self) -> None:
            self.stats = ClientStats()

        def queue_depth(self) -> int:
            return 1

    def totals(collector: _ClientCollector) -> dict[str, float]:
        return {
            s.name: s.value
            for family in collector.collect()
            for s in family.samples
            if s.name in ("rhythm_client_events_delivered_total", "rhythm_client_queue_depth")
        }

    collector = _ClientCollector()
    first, second = FakeClient(), FakeClient()
    collector.add(first)
    collector.add(second)
    first.stats.delivered, second.stats.delivered = 3, 4
    assert totals(collector) == {
        "rhythm_client_events_delivered_total": 7,
        "rhythm_client_queue_depth": 2,
    }
    first.stats.delivered = 5  # counted after the last scrape, before it was closed
    del first
    gc.collect()
    assert totals(collector) == {
        "rhythm_client_events_delivered_total": 9,
        "rhythm_client_queue_depth": 1,
    }

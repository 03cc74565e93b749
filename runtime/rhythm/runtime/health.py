"""Liveness and readiness of a long-running part, and the HTTP server that tells them.

Every long-running part (the processor worker, the sink) serves on its metrics port:
`GET /metrics` (Prometheus text format), `GET /healthz` (liveness) and `GET /readyz`
(readiness). It lives here, beside the client's metrics, because the processors and the sink
both build on this package and it needs nothing but the standard library and
prometheus_client.

Liveness is about progress, not about the process answering: Faust consumers are known to
stall silently (the process runs, the web server answers, nothing is consumed). A part is
*not live* when, for longer than `stall_after_s`,
- some partition has input waiting (its end offset is past what the part has done) and what
  the part has done there did not move, or
- its loop stopped beating (an event loop blocked by a call that never returns).
A partition that is caught up is live however long it stays quiet, and so is a part that is
not ready yet (recovering its state is progress of another kind).

`Progress` is the pure bookkeeping (thread-safe: the loop writes, the HTTP thread reads);
`HealthServer` serves it. Both take their clock as a parameter, so the rules are unit-tested.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["HealthServer", "Progress", "Verdict"]

Key = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class Verdict:
    live: bool
    ready: bool
    reason: str  # why not live ("" when live)
    waiting: int  # messages past what was done, summed over partitions
    since_progress_s: float  # on the partition stalled longest (0 when none waits)

    def as_dict(self) -> dict[str, Any]:
        return {
            "live": self.live,
            "ready": self.ready,
            "reason": self.reason,
            "waiting": self.waiting,
            "since_progress_s": round(self.since_progress_s, 3),
        }


@dataclass
class _Partition:
    done: int | None = None  # next offset to do (what was done, +1)
    end: int | None = None  # the partition's end offset, as last seen
    moved_at: float = 0.0  # monotonic: last time `done` moved or the partition caught up


class Progress:
    """What each partition has done and what waits, and when the loop last beat."""

    def __init__(
        self,
        component: str,
        stall_after_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.component = component
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._parts: dict[Key, _Partition] = {}
        self._beat: float | None = None
        self._ready = False
        self._last_progress_wall = wall()

    def beat(self) -> None:
        """The loop is turning (call it from the loop, not from a thread of its own)."""
        self._beat = self._clock()

    def set_ready(self, ready: bool) -> None:
        """Not ready (recovering state, starting) counts as busy, not stalled: a liveness
        probe must not restart a part in the middle of a long recovery (a slow recovery has
        an alert of its own). Becoming ready starts every partition's grace anew."""
        if ready and not self._ready:
            now = self._clock()
            with self._lock:
                for p in self._parts.values():
                    p.moved_at = now
        self._ready = ready

    def done(self, topic: str, partition: int, next_offset: int) -> None:
        """The part has done everything before `next_offset` in this partition."""
        now = self._clock()
        with self._lock:
            p = self._partition((topic, partition), now)
            if p.done is None or next_offset > p.done:
                p.done = next_offset
                p.moved_at = now
                self._last_progress_wall = self._wall()

    def end(self, topic: str, partition: int, end_offset: int) -> None:
        """The partition's end offset (high watermark), as the broker last said."""
        now = self._clock()
        with self._lock:
            p = self._partition((topic, partition), now)
            if p.end is None or end_offset > p.end:
                p.end = end_offset
            if p.done is not None and p.done >= p.end:
                p.moved_at = now  # caught up: quiet is fine

    def forget(self, topic: str, partition: int) -> None:
        """No longer ours (revoked): whatever waits there is another worker's."""
        with self._lock:
            self._parts.pop((topic, partition), None)

    def assigned(self, keys: set[Key]) -> None:
        """Keep exactly these partitions (those revoked meanwhile are forgotten)."""
        now = self._clock()
        with self._lock:
            for key in set(self._parts) - keys:
                del self._parts[key]
            for key in keys:
                self._partition(key, now)

    def verdict(self) -> Verdict:
        now = self._clock()
        with self._lock:
            waiting, stalled_for = 0, 0.0
            for p in self._parts.values():
                if p.end is None or p.done is None or p.done >= p.end:
                    continue
                waiting += p.end - p.done
                stalled_for = max(stalled_for, now - p.moved_at)
        reason = ""
        if self._beat is not None and now - self._beat > self.stall_after_s:
            reason = f"loop has not turned for {now - self._beat:.0f}s"
        elif self._ready and waiting and stalled_for > self.stall_after_s:
            reason = f"{waiting} messages waiting, no progress for {stalled_for:.0f}s"
        return Verdict(not reason, self._ready, reason, waiting, stalled_for)

    def last_progress_wall(self) -> float:
        return self._last_progress_wall

    def _partition(self, key: Key, now: float) -> _Partition:
        p = self._parts.get(key)
        if p is None:  # newly assigned: its backlog gets a full stall_after_s of grace
            p = self._parts[key] = _Partition(moved_at=now)
        return p


class ProgressCollector(Collector):
    """Exports a Progress as `rhythm_health_*` gauges (label: component, a fixed name)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def collect(self) -> Iterator[Metric]:
        v = self.progress.verdict()
        c = [self.progress.component]
        families = (
            ("rhythm_health_live", "1 while making progress (what /healthz says).", v.live),
            ("rhythm_health_ready", "1 once recovered and serving (what /readyz says).", v.ready),
            (
                "rhythm_health_input_waiting_messages",
                "Messages past what the part has done, over its assigned partitions.",
                v.waiting,
            ),
            (
                "rhythm_health_stalled_seconds",
                "How long the partition waiting longest has made no progress.",
                v.since_progress_s,
            ),
            (
                "rhythm_health_last_progress_timestamp_seconds",
                "When the part last did something (epoch seconds).",
                self.progress.last_progress_wall(),
            ),
        )
        for name, doc, value in families:
            family = GaugeMetricFamily(name, doc, labels=["component"])
            family.add_metric(c, float(value))
            yield family


class HealthServer:
    """`/metrics`, `/healthz`, `/readyz` on one port, in a daemon thread.

    Port 0 binds a free port (see `.port`). Runs in its own thread so it answers while the
    part's loop is busy or blocked: that is exactly when /healthz must say 503. `documents`:
    more JSON paths, each a function called in this thread (it must only read a value the
    part's loop replaces whole, never one it changes in place)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        progress: Progress,
        documents: Mapping[str, Callable[[], Any]] | None = None,
    ) -> None:
        self.registry = registry
        self.progress = progress
        self.documents = dict(documents or {})
        registry.register(ProgressCollector(progress))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(server.registry))
                elif path in ("/healthz", "/readyz"):
                    v = server.progress.verdict()
                    ok = v.live if path == "/healthz" else v.ready
                    body = json.dumps({"component": server.progress.component, **v.as_dict()})
                    self._send(200 if ok else 503, "application/json", body.encode())
                elif path in server.documents:
                    body = json.dumps(server.documents[path]())
                    self._send(200, "application/json", body.encode())
                else:
                    self._send(404, "text/plain", b"not found: try /metrics, /healthz, /readyz\n")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scraped every few seconds: not worth a log line each

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="rhythm-health", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

"""The collector's request handling: one POST through auth, limits, mapping, rate limits,
the buffer and Kafka's acknowledgement, to one answer; plus CORS, health and metrics.

Answers (JSON; docs/collector.md):
- 200 `{"success": true, "accepted": n, "rejected": k, "errors": [...]}` once Kafka has
  acknowledged every accepted message; the invalid messages of a batch are in `errors`
  (`index`, `messageId`/`event_id`, `error`) and were not sent.
- 400 (malformed JSON, a body that is not a batch, every message invalid), 401 (no, an
  unknown or a revoked key), 408 (the body did not arrive within `body_timeout_s`),
  413 (a body or every message over its limit), 415 (content type or encoding),
  429 (a rate limit; `Retry-After`), 503 (the buffer is full or Kafka did not acknowledge in
  time; `Retry-After`: send the same request again: ids make the retry a duplicate the
  pipeline drops, never a second event).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rhythm.collector.body import BodyError, decode_body
from rhythm.collector.canonical import BatchShapeError, canonical_items
from rhythm.collector.items import Item
from rhythm.collector.keys import AuthError, KeyStore, credential_from_headers
from rhythm.collector.metrics import CollectorMetrics
from rhythm.collector.publisher import BufferFullError, Publisher
from rhythm.collector.ratelimit import RateLimiter
from rhythm.collector.segment import segment_items
from rhythm.collector.settings import CollectorSettings

__all__ = ["ROUTES", "STAGES", "Collector", "Stages"]

log = logging.getLogger("rhythm.collector")

#: path → route label (the metric's bounded set)
ROUTES = {
    "/v1/events": "events",
    "/v1/track": "track",
    "/v1/identify": "identify",
    "/v1/batch": "batch",
}
#: the stages of a request's time (the stage metric's bounded label set; Server-Timing names)
STAGES = ("read", "map", "publish", "kafka", "report", "wake")
_ALLOWED_HEADERS = "Authorization, Content-Type, Content-Encoding"


class RefusedError(Exception):
    """A whole request refused: status, fixed reason, message, extra headers."""

    def __init__(
        self, status: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.headers = headers or {}

    @property
    def retry(self) -> int:
        return int(self.headers.get("Retry-After", "0"))


class Stages:
    """Where one request's time went, stage by stage (`STAGES`): each mark closes the stage
    that ran since the previous one. After `publish`, the wait for Kafka is split in three:
    `kafka`, the longest produce-to-acknowledgement time librdkafka measured for one of the
    request's messages (linger, the broker, the network); `report`, the rest of the time
    until the last delivery report was served (librdkafka's poll thread waiting for the GIL);
    `wake`, from then until the handler ran again (the event loop's queue)."""

    __slots__ = ("_last", "spent")

    def __init__(self, started: float) -> None:
        self._last = started
        self.spent: list[tuple[str, float]] = []

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.spent.append((stage, now - self._last))
        self._last = now

    def acknowledged(self, reported_at: float, acked_at: float) -> None:
        """`reported_at`: when the last delivery report was served; `acked_at`: when the last
        acknowledgement reached librdkafka (both perf_counter(), maybe from another thread)."""
        now = time.perf_counter()
        reported_at = min(max(reported_at, self._last), now)
        # The first produce() ran inside `publish`: only the wait after it counts here.
        kafka = min(max(acked_at - self._last, 0.0), reported_at - self._last)
        self.spent.append(("kafka", kafka))
        self.spent.append(("report", reported_at - self._last - kafka))
        self.spent.append(("wake", now - reported_at))
        self._last = now

    def header(self, total: float) -> str:
        """Server-Timing (W3C): each stage's milliseconds, then the whole handler's."""
        parts = [f"{stage};dur={1000 * seconds:.3f}" for stage, seconds in self.spent]
        parts.append(f"total;dur={1000 * total:.3f}")
        return ", ".join(parts)


class Collector:
    def __init__(
        self,
        settings: CollectorSettings,
        publisher: Publisher,
        metrics: CollectorMetrics | None = None,
        keys: KeyStore | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.metrics = metrics or CollectorMetrics()
        self.keys = keys or KeyStore(settings.keys_file)
        self.limiter = RateLimiter(
            settings.key_rate, settings.key_burst, settings.tenant_rate, settings.tenant_burst
        )
        self.kafka_ready = False
        self.metrics.buffer_max.set(settings.buffer_max_events)
        self._stage_seconds = {stage: self.metrics.stages.labels(stage) for stage in STAGES}
        origins = settings.cors_origins
        self._any_origin = "*" in origins
        self._origins = frozenset(origins)

    # -- routes -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        for path in ROUTES:
            app.router.add_post(path, self.collect)
            app.router.add_route("OPTIONS", path, self.preflight)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.prometheus)
        return app

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"live": True})  # answering is the proof: the loop turns

    async def readyz(self, _request: web.Request) -> web.Response:
        full = self.publisher.inflight >= self.publisher.buffer_max
        ready = self.kafka_ready and not full
        reason = "" if ready else ("buffer full" if full else "Kafka not reached yet")
        return web.json_response({"ready": ready, "reason": reason}, status=200 if ready else 503)

    async def prometheus(self, _request: web.Request) -> web.Response:
        self.metrics.inflight.set(self.publisher.inflight)
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def preflight(self, request: web.Request) -> web.Response:
        headers = self._cors(request)
        if headers:
            headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
            headers["Access-Control-Max-Age"] = "600"
        return web.Response(status=204, headers=headers)

    def _cors(self, request: web.Request) -> dict[str, str]:
        origin = request.headers.get("Origin")
        if origin is None or not (self._any_origin or origin in self._origins):
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    # -- collecting -------------------------------------------------------------------------

    async def collect(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        route = ROUTES[request.path]
        stages = Stages(started)
        try:
            status, body, headers = await self._collect(request, route, stages)
        except RefusedError as exc:
            self.metrics.rejects.labels(exc.reason).inc()
            status, headers = exc.status, exc.headers
            body = {"success": False, "reason": exc.reason, "error": str(exc)}
            if status >= 500:
                log.warning("%s: %d %s: %s", request.path, status, exc.reason, exc)
            if status == 429 and self.settings.refusal_delay_s > 0:
                # A flood that ignores Retry-After sends its next request as soon as this
                # answer arrives: answered at once, even refusals that cost 0.1 ms each took
                # the whole loop (10,000 a second on 8 connections) and other tenants waited.
                await asyncio.sleep(min(self.settings.refusal_delay_s, float(exc.retry)))
        headers = {**headers, **self._cors(request)}
        elapsed = time.perf_counter() - started
        self.metrics.requests.labels(route, str(status)).inc()
        self.metrics.latency.labels(route).observe(elapsed)
        for stage, seconds in stages.spent:
            self._stage_seconds[stage].observe(seconds)
        if self.settings.server_timing:
            headers["Server-Timing"] = stages.header(elapsed)
        response = web.Response(
            body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
        )
        if status == 408:
            response.force_close()  # the rest of a slow body is not waited for
        return response

    async def _collect(
        self, request: web.Request, route: str, stages: Stages
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        s = self.settings
        received_at = datetime.now(UTC)
        authorization = request.headers.get("Authorization")
        tenant = key_id = None
        if authorization:  # refused before reading the body
            tenant, key_id = self._authenticate(authorization)
            self._refuse(self.limiter.look(key_id, tenant))  # no need to read the body
        raw = await self._read(request)
        stages.mark("read")
        try:
            body = decode_body(
                raw,
                request.headers.get("Content-Type", ""),
                request.headers.get("Content-Encoding", ""),
                s.max_batch_bytes,
            )
        except BodyError as exc:
            raise RefusedError(exc.status, exc.reason, str(exc)) from None
        if tenant is None or key_id is None:
            # Where a page cannot set headers (sendBeacon), the key may be in the body, as
            # Segment allows: `writeKey`.
            key = body.get("writeKey") if isinstance(body, dict) else None
            if isinstance(key, str) and key:
                tenant, key_id = self._authenticate_key(key)
            else:
                tenant, key_id = self._authenticate(None)  # raises: no credential
        if isinstance(body, dict):
            body.pop("writeKey", None)
        try:
            if route == "events":
                items = canonical_items(body, tenant, received_at, s.max_event_bytes)
            else:
                items = segment_items(body, route, tenant, received_at, s.max_event_bytes)
        except BatchShapeError as exc:
            raise RefusedError(400, "bad_shape", str(exc)) from None
        if not items:
            raise RefusedError(400, "empty_batch", "no messages in the request")
        if len(items) > s.max_batch_events:
            raise RefusedError(
                413, "too_many_events", f"{len(items)} messages: {s.max_batch_events} at most"
            )
        self._limit(key_id, tenant, len(items))
        stages.mark("map")
        try:
            delivery = self.publisher.publish(items, asyncio.get_running_loop())
        except BufferFullError:
            raise RefusedError(
                503,
                "buffer_full",
                "the collector's buffer is full (Kafka is slow or away): retry later",
                {"Retry-After": str(s.retry_after_s)},
            ) from None
        stages.mark("publish")
        if delivery is not None:
            try:
                await asyncio.wait_for(asyncio.shield(delivery.done), s.ack_timeout_s)
            except TimeoutError:
                raise RefusedError(
                    503,
                    "kafka_timeout",
                    f"Kafka did not acknowledge within {s.ack_timeout_s:g} s: retry later",
                    {"Retry-After": str(s.retry_after_s)},
                ) from None
            stages.acknowledged(delivery.reported_at, delivery.produced_at + delivery.acked_s)
            if delivery.failed:
                first = delivery.failed[0]
                raise RefusedError(
                    503,
                    "kafka_error",
                    f"Kafka did not take {len(delivery.failed)} message(s) ({first}): retry",
                    {"Retry-After": str(s.retry_after_s)},
                )
        return self._answer(route, items)

    def _answer(self, route: str, items: list[Item]) -> tuple[int, dict[str, Any], dict[str, str]]:
        errors = [item for item in items if item.error is not None]
        accepted = len(items) - len(errors)
        if accepted:
            self.metrics.events.labels(route, "accepted").inc(accepted)
        if errors:
            self.metrics.events.labels(route, "rejected").inc(len(errors))
            for item in errors:
                self.metrics.rejects.labels(item.reason).inc()
        listed = [{"index": e.index, **e.ref, "error": e.error} for e in errors[:100]]
        body: dict[str, Any] = {
            "success": accepted > 0,
            "accepted": accepted,
            "rejected": len(errors),
        }
        if listed:
            body["errors"] = listed
        if accepted:
            return 200, body, {}
        too_large = all(e.reason == "event_too_large" for e in errors)
        return (413 if too_large else 400), body, {}

    def _limit(self, key_id: str, tenant: str, events: int) -> None:
        self._refuse(self.limiter.admit(key_id, tenant, events))

    @staticmethod
    def _refuse(limited: tuple[str, int] | None) -> None:
        if limited is not None:
            which, retry = limited
            raise RefusedError(
                429,
                f"rate_limited_{which}",
                f"over this {which}'s rate: retry after {retry} s",
                {"Retry-After": str(retry)},
            )

    def _authenticate(self, authorization: str | None) -> tuple[str, str]:
        try:
            return self._authenticate_key(credential_from_headers(authorization))
        except AuthError as exc:
            raise RefusedError(
                401, exc.reason, str(exc), {"WWW-Authenticate": 'Basic realm="rhythm"'}
            ) from None

    def _authenticate_key(self, key: str) -> tuple[str, str]:
        try:
            return self.keys.tenant_of(key)
        except AuthError as exc:
            raise RefusedError(
                401, exc.reason, str(exc), {"WWW-Authenticate": 'Basic realm="rhythm"'}
            ) from None

    async def _read(self, request: web.Request) -> bytes:
        """The body, at most `max_batch_bytes` as sent, within `body_timeout_s`."""
        limit = self.settings.max_batch_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise RefusedError(413, "too_large", f"the body is {length} bytes: {limit} at most")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                while True:
                    chunk = await request.content.readany()
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limit:
                        raise RefusedError(413, "too_large", f"the body is over {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise RefusedError(
                408,
                "body_timeout",
                f"the body did not arrive within {self.settings.body_timeout_s:g} s",
            ) from None
        return b"".join(chunks)

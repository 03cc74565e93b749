"""`rhythm collector`: the server around `Collector` (handlers.py) on aiohttp.

Why aiohttp: one well-kept package (server, streaming request bodies, keep-alive and the
parser's limits) with no ASGI layer between the socket and the handler, which matters at
20k events/s in one process; the body is read by the handler itself, chunk by chunk, so
size caps and the slow-body timeout are ours. Its server closes a connection that has not
sent a whole request within `keepalive_timeout` from connecting (aiohttp >= 3.14), which
is the slowloris guard for headers (`header_timeout_s`); request decompression is off
(`auto_decompress=False`) so gzip is inflated by body.py under a cap.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from rhythm.collector.handlers import Collector
from rhythm.collector.metrics import CollectorMetrics
from rhythm.collector.publisher import Publisher
from rhythm.collector.settings import CollectorSettings

__all__ = ["CollectorServer", "run_collector"]

log = logging.getLogger("rhythm.collector")

Ready = Callable[[dict[str, Any]], None]


class CollectorServer:
    """The collector on an event loop: `await start()`, `.port`, `await stop()`."""

    def __init__(
        self, settings: CollectorSettings, metrics: CollectorMetrics | None = None
    ) -> None:
        self.settings = settings
        metrics = metrics or CollectorMetrics()
        # The producer's rhythm_client_* metrics go to the collector's registry, beside its own.
        self.publisher = Publisher(settings.client, settings.buffer_max_events, metrics.registry)
        self.collector = Collector(settings, self.publisher, metrics)
        self._runner: web.AppRunner | None = None
        self._probe: asyncio.Task[None] | None = None
        if settings.kafka_stats_s:
            self.publisher.client.log_kafka_stats(settings.kafka_stats_s)
        self.port = settings.port

    async def start(self) -> None:
        s = self.settings
        runner = web.AppRunner(
            self.collector.app(),
            access_log=None,  # nothing per request in the log (and never a credential)
            keepalive_timeout=s.header_timeout_s,
            auto_decompress=False,
            handle_signals=False,
            shutdown_timeout=s.ack_timeout_s + 1,
        )
        await runner.setup()
        site = web.TCPSite(runner, s.host, s.port, reuse_address=True, backlog=512)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._probe = asyncio.create_task(self._probe_kafka())

    async def _probe_kafka(self) -> None:
        """Ready once Kafka answered a metadata request for the events topic."""
        client = self.publisher.client
        topic = self.settings.client.topic
        while True:
            try:
                producer = client._open()
                meta = await asyncio.to_thread(producer.list_topics, topic, 5)
                if topic in meta.topics and meta.topics[topic].error is None:
                    self.collector.kafka_ready = True
                    return
            except Exception as exc:
                log.warning("Kafka not reached yet: %s", exc)
            await asyncio.sleep(1)

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        if self._runner is not None:
            await self._runner.cleanup()  # stops accepting, lets requests in hand finish
        await asyncio.to_thread(self.publisher.close, 10.0)


def run_collector(settings: CollectorSettings, stop: threading.Event, on_ready: Ready) -> None:
    """Serve until `stop` is set; then finish the requests in hand and flush."""

    async def main() -> None:
        metrics = CollectorMetrics()
        metrics.watch_gc()
        server = CollectorServer(settings, metrics)
        await server.start()
        # What start-up made (modules, pydantic's schemas, librdkafka's config) lives for
        # good: out of the cyclic GC's sight, so its full collections stay short.
        gc.collect()
        gc.freeze()
        # A request of 100 events allocates thousands of objects that all die with it: with
        # Python's default (700) the young generation is collected several times per
        # request and promotes live requests' objects into older generations, whose
        # collections then cost more; a larger threshold collects far less often.
        _, older1, older2 = gc.get_threshold()
        gc.set_threshold(settings.gc_threshold, older1, older2)
        log.info("collector on http://%s:%d", settings.host, server.port)
        on_ready({"url": f"http://{settings.host}:{server.port}", "port": server.port})
        try:
            await asyncio.to_thread(stop.wait)
        finally:
            await server.stop()

    try:  # libuv's loop when installed (the `collector` extra has it): less per request
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())

"""`QueryEndpoint`: the endpoint's listening server, its cap on connections (one thread
each), its query slots (analysts' and the admin's apart, a cap per analyst user) and what
analysts' sessions remember; `start()` serves in a thread, `stop()` ends it."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from typing import Any

from rhythm.sinks.endpoint.engine import EmbeddedEngine, EngineError
from rhythm.sinks.endpoint.handler import RequestHandler
from rhythm.sinks.endpoint.policy import (
    ADMIN,
    ANALYST,
    Credentials,
    Limits,
    PolicyError,
    Principal,
)

__all__ = ["EndpointServer", "QueryEndpoint", "StatusProvider"]

log = logging.getLogger(__name__)

StatusProvider = Callable[[], dict[str, Any]]


class EndpointServer(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` of them: beyond that a
    connection gets a 503 at once and is closed (a flood never grows the thread count)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    endpoint: QueryEndpoint
    connections: threading.BoundedSemaphore

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.acquire(blocking=False):
            self.endpoint.refused += 1
            with contextlib.suppress(OSError):
                request.settimeout(1)
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()


_BUSY_TEXT = (
    b"Code: 203. DB::Exception: Too many connections to the endpoint, try again later. "
    b"(NO_FREE_CONNECTION)\n"
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nX-ClickHouse-Exception-Code: 203\r\n"
    b"Content-Type: text/plain; charset=UTF-8\r\nConnection: close\r\n"
    + f"Content-Length: {len(_BUSY_TEXT)}\r\n\r\n".encode()
    + _BUSY_TEXT
)


class QueryEndpoint:
    """Serves `engine` over ClickHouse's HTTP interface on host:port (port 0 = any free)."""

    def __init__(
        self,
        engine: EmbeddedEngine,
        host: str = "127.0.0.1",
        port: int = 8123,
        *,
        credentials: Credentials,
        limits: Limits | None = None,
        max_concurrent_queries: int = 8,
        max_queries_per_user: int = 4,
        max_connections: int = 64,
        max_body_bytes: int = 1024**3,
        allowed_hosts: tuple[str, ...] = (),
        allowed_origins: tuple[str, ...] = (),
        status: StatusProvider | None = None,
    ) -> None:
        self.engine = engine
        self.credentials = credentials
        self.limits = limits or Limits()
        self.max_body_bytes = max_body_bytes
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = allowed_origins
        self.status = status
        self.max_queries_per_user = max_queries_per_user
        #: connections refused because all `max_connections` were taken
        self.refused = 0
        self._slots = {
            ANALYST: threading.BoundedSemaphore(max_concurrent_queries),
            ADMIN: threading.BoundedSemaphore(max_concurrent_queries),
        }
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        self._databases: dict[str, str] = {}
        self._server = EndpointServer((host, port), RequestHandler, bind_and_activate=False)
        self._server.endpoint = self
        self._server.connections = threading.BoundedSemaphore(max_connections)
        try:
            self._server.server_bind()
            self._server.server_activate()
        except BaseException:
            self._server.server_close()
            raise
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @contextlib.contextmanager
    def slot(self, principal: Principal) -> Iterator[None]:
        """A query slot for the principal's role (waited for a while, then refused as a
        server does) and, for analysts, one of the user's `max_queries_per_user`."""
        per_user = principal.role == ANALYST
        if per_user:
            with self._lock:
                running = self._running.get(principal.user, 0)
                if running >= self.max_queries_per_user:
                    raise PolicyError(
                        202,
                        "Code: 202. DB::Exception: Too many simultaneous queries for user "
                        f"(max {self.max_queries_per_user}). (TOO_MANY_SIMULTANEOUS_QUERIES)",
                    )
                self._running[principal.user] = running + 1
        try:
            semaphore = self._slots[principal.role]
            if not semaphore.acquire(timeout=30):
                raise EngineError(
                    202,
                    "Code: 202. DB::Exception: Too many simultaneous queries. "
                    "(TOO_MANY_SIMULTANEOUS_QUERIES)",
                )
            try:
                yield
            finally:
                semaphore.release()
        finally:
            if per_user:
                with self._lock:
                    self._running[principal.user] -= 1
                    if not self._running[principal.user]:
                        del self._running[principal.user]

    def analyst_database(self, key: str) -> str | None:
        with self._lock:
            return self._databases.get(key)

    def remember_database(self, key: str, database: str) -> None:
        """An analyst's session keeps only its current database (readonly: no SET)."""
        with self._lock:
            if len(self._databases) >= 10_000:
                self._databases.clear()
            self._databases[key] = database

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how long stop() waits for the loop to notice
            name="rhythm-sink-endpoint",
            daemon=True,
        )
        self._thread.start()
        log.info("ClickHouse HTTP endpoint on http://%s:%d", self.host, self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

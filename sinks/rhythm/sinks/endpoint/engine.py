"""The embedded engine behind the HTTP endpoint: chdb connection handles and sessions.

Verified with chdb 26.9 (tests/unit/test_sink_endpoint.py): a process hosts one engine, and
any number of connection handles to it run statements concurrently (the GIL is released
while the engine works); a handle itself must not be used by two threads at once. So there
is no global lock: the sink's writer has its own handle, each HTTP session gets its own
handle (kept while the session lives, like a ClickHouse session with its SET and USE
state), and a request without a session gets a fresh handle, closed after it.

URL settings apply to the request only, as on a server: they are SET on the handle before
the statement and put back afterwards (only when they differ from the previous request's,
which with clickhouse-connect they rarely do). A session that SETs one of those same
settings explicitly sees it reset when a request stops sending it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import chdb

from rhythm.sinks.endpoint.sql import error_code

__all__ = ["EmbeddedEngine", "EngineError", "Session", "Stats"]

_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class EngineError(Exception):
    """An error with a ClickHouse code, reported to HTTP clients as a server would."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _engine_error(exc: BaseException) -> EngineError:
    message = str(exc)
    index = message.find("Code: ")
    if index > 0:
        message = message[index:]
    return EngineError(error_code(message), message.strip())


@dataclass
class Stats:
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    result_rows: int = 0
    result_bytes: int = 0
    elapsed_ns: int = 0

    def summary(self) -> dict[str, str]:
        """The X-ClickHouse-Summary shape (every value a string, as the server sends)."""
        return {
            "read_rows": str(self.read_rows),
            "read_bytes": str(self.read_bytes),
            "written_rows": str(self.written_rows),
            "written_bytes": str(self.written_bytes),
            "total_rows_to_read": str(self.read_rows),
            "result_rows": str(self.result_rows),
            "result_bytes": str(self.result_bytes),
            "elapsed_ns": str(self.elapsed_ns),
        }


def _result_stats(result: Any) -> Stats:
    stats = Stats()
    for name in ("rows_read", "bytes_read", "rows_written", "bytes_written"):
        with contextlib.suppress(Exception):
            value = getattr(result, name)
            setattr(stats, _STAT_FIELDS[name], int(value() if callable(value) else value))
    with contextlib.suppress(Exception):
        elapsed = result.elapsed
        stats.elapsed_ns = int((elapsed() if callable(elapsed) else elapsed) * 1e9)
    return stats


_STAT_FIELDS = {
    "rows_read": "read_rows",
    "bytes_read": "read_bytes",
    "rows_written": "written_rows",
    "bytes_written": "written_bytes",
}


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_name(name: str) -> str:
    if not name or not set(name) <= _NAME_OK:
        raise EngineError(
            115, f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)"
        )
    return name


@dataclass
class Session:
    """One chdb handle and the state a ClickHouse session keeps on it."""

    handle: Any
    ephemeral: bool
    lock: threading.Lock = field(default_factory=threading.Lock)
    timeout_s: float | None = None
    last_used: float = field(default_factory=time.monotonic)
    database: str | None = None
    #: URL settings currently SET on the handle
    applied: dict[str, str] = field(default_factory=dict)
    #: their values before we first touched them: (value, changed)
    base: dict[str, tuple[str, bool]] = field(default_factory=dict)

    def run(
        self, sql: str, fmt: str = "TabSeparated", params: Mapping[str, str] | None = None
    ) -> Any:
        try:
            return self.handle.query(sql, fmt, params=dict(params or {}))
        except Exception as exc:
            raise _engine_error(exc) from exc

    def prepare(self, database: str | None, settings: Mapping[str, str]) -> None:
        """USE the database and SET exactly `settings` (restoring the previous request's)."""
        if database and database != self.database:
            self.run(f"USE `{database.replace('`', '')}`")
            self.database = database
        for name in list(self.applied):
            if name not in settings:
                self._restore(name)
        new = [_check_name(n) for n in settings if n not in self.base]
        if new and not self.ephemeral:
            names = ", ".join(_quote(n) for n in new)
            rows = self.run(
                f"SELECT name, value, changed FROM system.settings WHERE name IN ({names})",
                "JSONEachRow",
            ).bytes()
            for line in rows.splitlines():
                row = json.loads(line)
                self.base[row["name"]] = (row["value"], bool(row["changed"]))
        for name, value in settings.items():
            if self.applied.get(name) != value:
                self.run(f"SET {_check_name(name)} = {_quote(value)}")
                self.applied[name] = value

    def _restore(self, name: str) -> None:
        value, changed = self.base.get(name, ("", False))
        if changed:
            self.run(f"SET {name} = {_quote(value)}")
        else:
            self.run(f"SET {name} = DEFAULT")
        del self.applied[name]

    def query(self, sql: str, fmt: str, params: Mapping[str, str]) -> tuple[bytes, Stats]:
        result = self.run(sql, fmt, params)
        data = bytes(result.bytes() or b"")
        stats = _result_stats(result)
        stats.result_bytes = len(data)
        return data, stats

    def stream(self, sql: str, fmt: str, params: Mapping[str, str]) -> Iterator[bytes]:
        """Chunks of the result as the engine produces them (one per block)."""
        try:
            streaming = self.handle.send_query(sql, fmt, params=dict(params))
        except Exception as exc:
            raise _engine_error(exc) from exc
        try:
            while True:
                try:
                    chunk = streaming.fetch()
                except Exception as exc:
                    raise _engine_error(exc) from exc
                if chunk is None:
                    return
                data = chunk.bytes() if hasattr(chunk, "bytes") else bytes(chunk)
                if data:
                    yield bytes(data)
        finally:
            with contextlib.suppress(Exception):
                streaming.close()

    def insert(self, target: str, fmt: str, chunks: Iterable[bytes]) -> Stats:
        """`INSERT INTO <target>` with data in `fmt`, streamed chunk by chunk."""
        try:
            inserter = self.handle.send_insert(f"INSERT INTO {target}", fmt)
        except Exception as exc:
            raise _engine_error(exc) from exc
        try:
            for chunk in chunks:
                if chunk:
                    inserter.append(chunk)
            result = inserter.finish()
        except EngineError:
            with contextlib.suppress(Exception):
                inserter.cancel()
            raise
        except Exception as exc:
            with contextlib.suppress(Exception):
                inserter.cancel()
            raise _engine_error(exc) from exc
        return _result_stats(result)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.handle.close()


class EmbeddedEngine:
    """Handles and sessions on the engine at `connection_string` (an absolute path)."""

    def __init__(
        self, connection_string: str, *, session_timeout_s: float = 60.0, max_sessions: int = 64
    ) -> None:
        self.connection_string = connection_string
        self.session_timeout_s = session_timeout_s
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        # Held for the endpoint's lifetime: it answers the server-info questions.
        self._keeper = Session(self._connect(), ephemeral=False)
        info = self._keeper.run("SELECT version(), timezone()").bytes().decode().split("\t")
        self.version = info[0].strip()
        self.timezone = info[1].strip() if len(info) > 1 else "UTC"
        names = self._keeper.run("SELECT name FROM system.table_functions").bytes().decode()
        #: the engine's table functions (the endpoint refuses those that reach outside)
        self.table_functions = frozenset(names.split())
        self._closed = False

    def _connect(self) -> Any:
        try:
            return chdb.connect(self.connection_string)
        except Exception as exc:
            raise _engine_error(exc) from exc

    @contextlib.contextmanager
    def session(self, session_id: str | None, timeout_s: float | None = None) -> Iterator[Session]:
        """A locked session for one request: the named one (created on first use) or a
        fresh handle for requests without a session."""
        if self._closed:
            raise EngineError(1002, "Code: 1002. the endpoint is shutting down")
        if not session_id:
            session = Session(self._connect(), ephemeral=True)
            try:
                yield session
            finally:
                session.close()
            return
        session = self._named(session_id, timeout_s)
        if not session.lock.acquire(blocking=False):
            raise EngineError(
                373,
                f"Code: 373. DB::Exception: Session {session_id} is locked by a concurrent "
                "client. (SESSION_IS_LOCKED)",
            )
        try:
            yield session
        finally:
            session.last_used = time.monotonic()
            session.lock.release()

    def _named(self, session_id: str, timeout_s: float | None) -> Session:
        with self._lock:
            self._expire()
            session = self._sessions.get(session_id)
            if session is None:
                if len(self._sessions) >= self.max_sessions:
                    raise EngineError(
                        1002, f"Code: 1002. too many sessions ({self.max_sessions}) open"
                    )
                session = Session(self._connect(), ephemeral=False)
                self._sessions[session_id] = session
            if timeout_s:
                session.timeout_s = timeout_s
            session.last_used = time.monotonic()
            return session

    def _expire(self) -> None:
        now = time.monotonic()
        for key, session in list(self._sessions.items()):
            timeout = session.timeout_s or self.session_timeout_s
            if now - session.last_used > timeout and not session.lock.locked():
                del self._sessions[key]
                session.close()

    @property
    def open_sessions(self) -> int:
        return len(self._sessions)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            for session in self._sessions.values():
                # a session still serving a request closes when its request ends
                if session.lock.acquire(timeout=5):
                    session.close()
                    session.lock.release()
            self._sessions.clear()
        self._keeper.close()

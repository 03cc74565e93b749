"""Publish a JSON Lines file through the client: every valid line delivered, every invalid
line reported by number (and written to a rejects file with the reason)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from rhythm.producers import Client, ClientSettings
from rhythm.schemas import ContractError
from rhythm.stack.progress import Progress
from rhythm.stack.publishing import given_up, publishing_client

_PROGRESS_EVERY = 2_000  # lines between progress updates: keeps the bar off the hot path


@dataclass
class IngestReport:
    lines: int = 0
    valid: int = 0
    invalid_lines: list[int] = field(default_factory=list)
    delivered: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def invalid(self) -> int:
        return len(self.invalid_lines)

    @property
    def undelivered(self) -> int:
        return self.valid - self.delivered

    def exit_code(self) -> int:
        if self.undelivered:
            return 2
        return 1 if self.invalid else 0

    def summary(self) -> str:
        rate = self.valid / self.seconds if self.seconds > 0 else 0.0
        failed = ", ".join(f"{r}={n}" for r, n in sorted(self.failed.items())) or "none"
        return (
            f"{self.lines} lines: {self.valid} valid, {self.invalid} invalid; "
            f"{self.delivered} delivered, {self.undelivered} undelivered (failed: {failed}); "
            f"{self.seconds:.1f}s, {rate:,.0f} events/s"
        )


def ingest_lines(
    source: Iterable[bytes],
    *,
    settings: ClientSettings,
    rejects_out: TextIO,
    total_bytes: int | None = None,
    show_progress: bool = True,
    flush_timeout: float = 120.0,
) -> IngestReport:
    report = IngestReport()
    progress = Progress("ingest", total_bytes, enabled=show_progress)
    started = time.monotonic()
    read = 0
    client: Client | None = None
    try:
        with publishing_client(settings, flush_timeout) as client:
            for number, raw in enumerate(source, 1):
                read += len(raw)
                if not raw.strip():
                    continue
                report.lines += 1
                try:
                    obj: Any = parse_line(raw)
                    client.send(obj)
                    report.valid += 1
                except ValueError as exc:  # ContractError, bad JSON and bad UTF-8 alike
                    report.invalid_lines.append(number)
                    rejects_out.write(reject_line(number, raw, exc))
                if number % _PROGRESS_EVERY == 0:
                    elapsed = time.monotonic() - started
                    rate = report.lines / elapsed if elapsed > 0 else 0.0
                    progress.update(read, f"{report.lines:,} lines {rate:,.0f}/s", elapsed)
    finally:
        if client is not None:
            report.delivered = client.stats.delivered
            report.failed = given_up(client)
        report.seconds = time.monotonic() - started
        progress.finish(read)
    return report


def parse_line(raw: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ContractError(f"line: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise ContractError(f"line: not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(obj, dict):
        raise ContractError(f"line: must be a JSON object (got {type(obj).__name__})")
    return obj


def reject_line(number: int, raw: bytes, exc: Exception) -> str:
    entry = {"line": number, "error": str(exc), "raw": raw.decode("utf-8", "replace").rstrip()}
    return json.dumps(entry, ensure_ascii=False) + "\n"

"""Progress of long CLI work (ingest, simulate): a rich bar on a terminal, a plain line every
few seconds otherwise, so CI logs show progress without a bar's control codes."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress"]

_LINE_EVERY_S = 5.0


class Progress:
    """``update(done, detail, elapsed)`` moves the bar to ``done`` of ``total`` (None: no
    known total) and shows ``detail``; callers rate-limit their calls (keep it off hot paths)."""

    def __init__(self, label: str, total: int | None, *, enabled: bool) -> None:
        self._label = label
        self._enabled = enabled
        self._bar: Any = None
        self._last_line = 0.0
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn(label),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task(label, total=total, detail="")
            self._bar.start()

    def update(self, done: int, detail: str, elapsed: float) -> None:
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=done, detail=detail)
        elif elapsed - self._last_line >= _LINE_EVERY_S:
            self._last_line = elapsed
            print(f"{self._label}: {detail}", file=sys.stderr, flush=True)

    def finish(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
            self._bar.stop()

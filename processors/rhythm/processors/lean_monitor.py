"""Faust's Monitor without its per-message bookkeeping.

Faust calls its sensors four times for every message (in, stream in, stream out, out) and
again for every message sent; its default `Monitor` answers each call with counters keyed by
topic, stream and task, timestamps and a latency deque. Those figures feed Faust's web views
only, which the processors do not serve: their own metrics (metrics.py) count what they
process, per batch. `App(Monitor=LeanMonitor)` is Faust's public setting for the monitor
class; the hooks overridden here are its public sensor interface (faust.types.SensorT).
Rebalance, commit and assignment figures are still kept (a few calls per rebalance or commit).
"""

from __future__ import annotations

from typing import Any

from faust.sensors import Monitor

__all__ = ["LeanMonitor"]


class LeanMonitor(Monitor):
    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        return None

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None

    def on_table_del(self, table: Any, key: Any) -> None:
        return None

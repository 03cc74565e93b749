"""Reading one metric off a local Prometheus `/metrics` endpoint: how the parts learn each
other's progress (a lane's watermark, its routed events) without a Prometheus server."""

from __future__ import annotations

import json
import urllib.request
from typing import Any


def scrape(port: int, metric: str) -> list[float] | None:
    """Every value of `metric` (any labels) on `127.0.0.1:port/metrics` (None if
    unavailable)."""
    if not port:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    return [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(metric + "{") or line.startswith(metric + " ")
    ]


def read_json(port: int, path: str) -> Any:
    """A JSON document a local part serves beside its /metrics (None if unavailable)."""
    if not port:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def scrape_min(port: int, metric: str) -> float | None:
    """The smallest value of `metric` on a local /metrics endpoint (None if unavailable)."""
    values = scrape(port, metric)
    return min(values) if values else None

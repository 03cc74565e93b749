"""Queries to the store through ClickHouse's HTTP interface (the sink's endpoint, or a
server): the one implementation the parts that read the store at run time share (the
notifier's lookups, the history lane's copies of stored events, `rhythm backfill`). Stdlib
only: the processors and the notifier need no ClickHouse client for a few SELECTs."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["StoreUnavailableError", "query_rows"]


class StoreUnavailableError(RuntimeError):
    """The store did not answer (or refused the query)."""


def query_rows(
    url: str,
    sql: str,
    params: dict[str, Any] | None = None,
    *,
    user: str | None = None,
    password: str | None = None,
    timeout_s: float = 10.0,
) -> list[dict[str, Any]]:
    """Run `sql` on the store at `url`: `{name:Type}` parameters are bound by the server
    (`param_<name>`), rows come back as dicts; StoreUnavailableError when the store cannot
    be asked. The password goes in the Authorization header, never in the URL or a log."""
    query = {f"param_{k}": str(v) for k, v in (params or {}).items()}
    query["default_format"] = "JSONEachRow"
    request = urllib.request.Request(
        f"{url}?{urllib.parse.urlencode(query)}", data=sql.encode(), method="POST"
    )
    if user:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        raise StoreUnavailableError(f"store answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise StoreUnavailableError(f"store unreachable: {exc}") from None
    return [json.loads(line) for line in text.splitlines() if line.strip()]

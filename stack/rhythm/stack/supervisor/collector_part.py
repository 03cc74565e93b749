"""The HTTP collector as a part of `rhythm up` (started unless `RHYTHM_STACK_COLLECTOR_PORT`
is 0), and its line in `rhythm status`. Kept apart from control.py, which only calls these."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rhythm.stack.supervisor.control import Part


def collector_part(home: Path, port: int, env: dict[str, str], cli: list[str]) -> list[Part]:
    """`rhythm collector` on 127.0.0.1:`port`, its keys in `<home>/collector-keys.json`
    (unless RHYTHM_COLLECTOR_KEYS_FILE says otherwise); /healthz on the same port."""
    from rhythm.stack.supervisor.control import Part

    if not port:
        return []
    part_env = dict(
        env,
        RHYTHM_COLLECTOR_PORT=str(port),
        RHYTHM_COLLECTOR_HOST="127.0.0.1",
        RHYTHM_COLLECTOR_KEYS_FILE=os.environ.get(
            "RHYTHM_COLLECTOR_KEYS_FILE", str(home / "collector-keys.json")
        ),
    )
    health = f"http://127.0.0.1:{port}/healthz"
    return [Part("collector", [*cli, "collector"], part_env, port, health)]


def collector_status(state: dict[str, Any], port: int) -> dict[str, Any]:
    """The collector's entry for `rhythm status` (none when it is switched off)."""
    from rhythm.runtime.process import alive as _alive
    from rhythm.stack.supervisor.supervise import probe_health

    if not port and "collector" not in state:
        return {}
    pid = state.get("collector", {}).get("pid")
    running = bool(pid and _alive(pid))
    entry: dict[str, Any] = {
        "running": running,
        "pid": pid,
        "log": state.get("collector", {}).get("log"),
        "url": f"http://127.0.0.1:{port}" if port else None,
    }
    if running and port:
        ok, detail = probe_health(f"http://127.0.0.1:{port}/healthz")
        entry["health"] = {"ok": bool(ok), "detail": detail}
    return {"collector": entry}

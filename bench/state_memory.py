"""Memory per entity held by stage 2, and what forgetting gives back (no Kafka, no Faust).

    python -m bench.state_memory [--entities 1000000] [--roles message|user]

Separate processes, as a worker's life has them:
1. *build* (resident set, /proc/self/statm, against the process's start): N entities in one
   `Stage2Partition`, one event each, in batches of 2,000 updates, each batch's changed
   state written out (to a file here; RocksDB in a worker); then the watermark passes the
   windows' day of retention so every entity holds nothing.
2. *restart*: a fresh processor restores that state, as a restarted worker does: the state
   as saved while the windows were open, and as saved once idle (Python's heap held by the
   processor, from tracemalloc).
3. *forget*: the same, then the watermark passes the idle TTL and the entities are forgotten.
Resident memory includes Python's allocator slack (memory freed but kept), the honest figure
for a worker; RocksDB's buffers are not in it (bounded per database by settings). Not part of
`make bench`; its numbers are in BENCHMARKS.md ("State memory").
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from rhythm.processors.settings import ProcessorSettings
from rhythm.processors.stage2 import Stage2Partition
from rhythm.schemas.keys import EntityKey

DAY_MS = 86_400_000
T0 = 1_790_000_000_000
PAGE = os.sysconf("SC_PAGE_SIZE")


def resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def processor() -> Stage2Partition:
    s = ProcessorSettings()
    return Stage2Partition(0, 1, s.signal_config(), s.reply_config(), s.alert_policy())


def idle_watermark(n: int) -> int:
    return T0 + n + 3 * DAY_MS


def build(n: int, roles: str, path: Path) -> None:
    base = resident()
    proc = processor()
    peak = 0
    with path.open("wb") as out:
        for first in range(0, n, 2000):
            updates = []
            for i in range(first, min(n, first + 2000)):
                # "message": one entity per message (the case); "user": a silence rule
                entity = EntityKey("acme", "object", "message", f"m-{i:09d}")
                if roles == "user":
                    entity = EntityKey("acme", "actor", "user", f"u-{i:09d}")
                updates.append([entity.encode(), T0 + i, 1.0, 0, i])
            proc.apply({"p": 0, "wm": T0 + first, "u": updates})
            pickle.dump(proc.take_dirty(), out)
            peak = max(peak, resident())
    # Every window closes and passes its day of retention: the entities hold nothing.
    with path.with_suffix(".idle").open("wb") as out:
        proc.apply({"p": 0, "wm": idle_watermark(n)})
        while proc.overdue():
            pickle.dump(proc.take_dirty(), out)
            proc.apply({"p": 0, "wm": idle_watermark(n)})
        pickle.dump(proc.take_dirty(), out)
    gc.collect()
    print(f"  build: {(peak - base) / n:,.0f} bytes/entity resident at the peak (windows open),")
    print(f"         {(resident() - base) / n:,.0f} once idle (allocator slack included)")


def restart(n: int, path: Path, phase: str) -> None:
    batches = []
    files = [path] if phase == "restart-open" else [path, path.with_suffix(".idle")]
    for name in files:  # restart-open: as saved before the windows closed
        with name.open("rb") as f:
            while True:
                try:
                    batches.append(pickle.load(f))
                except EOFError:
                    break
    saved: dict[str, bytes | None] = {}
    for batch in batches:
        saved.update(batch)
    del batches
    size = sum(len(k) + len(v or b"") for k, v in saved.items())
    gc.collect()
    # Resident growth would count the loaded state's memory reused after it is freed:
    # tracemalloc counts only what the restored processor still holds (Python's heap).
    tracemalloc.start()
    proc = processor()
    proc.restore(saved.items())
    del saved
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    held = len(proc.entities)
    if phase != "forget":
        state = "windows open" if phase == "restart-open" else "idle"
        print(
            f"  restart ({state}): {heap / held:,.0f} bytes/entity held in Python's heap "
            f"({held:,} entities, saved state {size / n:,.0f} bytes/entity)"
        )
        return
    wm = idle_watermark(n) + int(ProcessorSettings().entity_ttl_s * 1000)
    started = time.monotonic()
    evicted = tombstones = 0
    while True:
        out = proc.apply({"p": 0, "wm": wm})
        evicted += out.evicted
        tombstones += sum(1 for _, v in proc.take_dirty() if v is None)
        if not proc.overdue():
            break
    gc.collect()
    print(
        f"  forget: {evicted:,} forgotten in {time.monotonic() - started:.1f} s, "
        f"{tombstones:,} tombstones, {len(proc.entities):,} left"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--roles", choices=("message", "user"), default="message")
    parser.add_argument("--phase", choices=("build", "restart-open", "restart", "forget"))
    parser.add_argument("--state")
    args = parser.parse_args()
    if args.phase == "build":
        build(args.entities, args.roles, Path(args.state))
        return
    if args.phase:
        restart(args.entities, Path(args.state), args.phase)
        return
    print(f"{args.entities:,} entities ({args.roles}):")
    with tempfile.TemporaryDirectory() as tmp:
        state = str(Path(tmp) / "state.pickle")
        for phase in ("build", "restart-open", "restart", "forget"):
            subprocess.run(
                [sys.executable, "-m", "bench.state_memory", "--phase", phase, "--state", state,
                 "--entities", str(args.entities), "--roles", args.roles],
                check=True,
            )  # fmt: skip


if __name__ == "__main__":
    main()

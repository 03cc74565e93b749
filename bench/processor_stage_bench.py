"""The processors' pure cost per event, without Kafka or Faust (process CPU time per step).

    python -m bench.processor_stage_bench --scale 0.4 [--limit 60000]

Builds the simulator's workload (`rhythm simulate`, arrival order with re-sends), encodes it
as the client would, spreads it over 4 source partitions by key, and runs it through stage 1
(`Stage1Partition.process`, batches of 500 per partition) and stage 2
(`Stage2Partition.apply` + `take_dirty`, 4 partitions) the way the Faust agents call them,
with the internal messages and outputs encoded as on the wire. Prints µs/event per step and a
digest of every output and saved state byte (stage 2's outputs and state; stage 1's messages
to stage 2 and its state writes), so an optimisation can show it changed nothing.
Not part of `make bench` (bench/run.py): a tool for working on the hot path. Run the old and
new code interleaved in one sitting and compare ratios; absolute numbers move with load.
"""

from __future__ import annotations

import argparse
import hashlib
import time
import zlib
from collections import defaultdict

from rhythm.processors.codec import dumps, loads
from rhythm.processors.settings import ProcessorSettings
from rhythm.processors.stage1 import Stage1Config, Stage1Partition
from rhythm.processors.stage2 import Stage2Partition
from rhythm.producers.prepare import prepare_event
from rhythm.schemas import decode_event, encode_event
from rhythm.schemas.keys import signal_key
from rhythm.schemas.outputs import AlertRecord, SignalRecord, alert_id
from rhythm.stack.simulate.generate import SimConfig, generate

SOURCES, DESTINATIONS, PER_BATCH = 4, 4, 500
NOW_MS = 1_790_000_000_000  # fixed: the same workload and outputs on every run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=0.4)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    sim = generate(SimConfig(now_ms=NOW_MS, scale=args.scale))
    parts: dict[int, list[bytes]] = defaultdict(list)
    arrivals = sim.arrivals[: args.limit]
    for i in arrivals:
        record, key = prepare_event(sim.events[i].to_json(sim.config.tenant))
        parts[zlib.crc32(key.encode()) % SOURCES].append(encode_event(record))
    n = len(arrivals)

    s = ProcessorSettings()
    cfg = Stage1Config(
        DESTINATIONS,
        int((s.lateness_s + s.late_retention_s) * 1000),
        int(s.max_future_s * 1000),
        s.idle_after_s,
    )
    sources = {p: Stage1Partition(p, cfg) for p in range(SOURCES)}
    procs = {
        k: Stage2Partition(k, SOURCES, s.signal_config(), s.reply_config(), s.alert_policy())
        for k in range(DESTINATIONS)
    }
    spent: dict[str, float] = defaultdict(float)
    outputs, state = hashlib.sha256(), hashlib.sha256()
    wire, writes = hashlib.sha256(), hashlib.sha256()  # stage 1's messages and state writes
    wall_s = NOW_MS / 1000 + 60
    offsets = dict.fromkeys(range(SOURCES), 0)

    def timed(step: str, started: float) -> None:
        spent[step] += time.process_time() - started

    started = time.process_time()
    for values in parts.values():
        for value in values[:20_000]:
            decode_event(value)
    decoded = sum(min(len(v), 20_000) for v in parts.values())
    decode_us = (time.process_time() - started) / max(decoded, 1) * 1e6

    while any(offsets[p] < len(parts[p]) for p in range(SOURCES)):
        inbox: dict[int, list[bytes]] = defaultdict(list)
        for p in range(SOURCES):
            first = offsets[p]
            chunk = parts[p][first : first + PER_BATCH]
            batch: list[tuple[int, bytes | None]] = [(first + i, v) for i, v in enumerate(chunk)]
            if not batch:
                continue
            offsets[p] = first + len(batch)
            t = time.process_time()
            out = sources[p].process(batch, int(wall_s * 1000), wall_s)
            sent = [(k, dumps(message)) for k, message in out.messages.items()]
            timed("stage 1: decode, dedup, explode, encode", t)
            for k, blob in sent:
                inbox[k].append(blob)
                wire.update(blob)
            for key, written in out.writes:
                writes.update(key.encode() + (written or b""))
        for k, blobs in inbox.items():
            t = time.process_time()
            signals: list[SignalRecord] = []
            alerts: list[AlertRecord] = []
            for blob in blobs:
                result = procs[k].apply(loads(blob))
                signals += result.signals
                alerts += result.alerts
            timed("stage 2: apply", t)
            t = time.process_time()
            for signal in signals:
                signal_key(signal).encode()
                outputs.update(dumps(signal))
            for alert in alerts:
                alert["alert_id"] = alert_id(alert)
                outputs.update(dumps(alert))
            timed("stage 2: encode outputs", t)
            t = time.process_time()
            saved = procs[k].take_dirty()
            timed("stage 2: take_dirty (state bytes)", t)
            for key, saved_value in sorted(saved, key=lambda kv: kv[0]):
                state.update(key.encode() + (saved_value or b""))

    print(f"{n:,} events ({len(sim.events):,} unique), {SOURCES}x{DESTINATIONS} partitions")
    print(f"decode_event alone: {decode_us:.2f} µs/event")
    for step, seconds in spent.items():
        print(f"{step:40s} {seconds:7.2f} s {seconds / n * 1e6:8.2f} µs/event")
    total = sum(spent.values())
    print(f"{'total':40s} {total:7.2f} s {total / n * 1e6:8.2f} µs/event")
    print(f"digest: outputs {outputs.hexdigest()[:16]} state {state.hexdigest()[:16]}")
    print(f"digest: stage 1 messages {wire.hexdigest()[:16]} writes {writes.hexdigest()[:16]}")


if __name__ == "__main__":
    main()

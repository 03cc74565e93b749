"""The Quix Streams peer: the same per-entity signals as Rhythm, the Quix way.

Runs in its own virtual environment (bench/.venv-peers: quixstreams pins its own
confluent-kafka range), so it imports nothing of Rhythm: it decodes the Confluent-framed
Avro with fastavro and the project's schema file, and re-implements Rhythm's entity rule
(actor, object, target, each distinct tag; weight default 1.0; an event_id counts once).

    python -m bench.peers.quix_app --bootstrap H:P --topic T --output O --group G --state DIR
        [--variant defaults|tuned] [--expect N]

Pipeline: decode -> dedup by event_id (state keyed by the message key, which is the actor's:
every copy of an event has it; one point lookup and one write per event, expiring in event
time after --dedup-s, as Rhythm's stage 1 dedups each event once before the fan-out) ->
explode to entity updates -> group_by entity (a repartition topic, like Rhythm's stage 1 ->
updates) -> gap since the entity's previous event (state) -> two tumbling windows (3600 s and
86400 s, grace = --grace-s; the harness passes Rhythm's lateness + late retention) with Count,
Sum, Max of weight and Count, Min, Max, Mean of gap -> `.final()` -> JSON rows on the output
topic.

Variants: `defaults` is `Application` as its docs give it (commit every 5 s, librdkafka's
fetch sizes); `tuned` changes the one knob the Quix docs name for throughput
(docs/advanced/checkpointing.md, "Configuring the Checkpointing": longer commit intervals
flush state stores and changelogs less often, limiting the IO, at the cost of memory and of
more reprocessing after a failure): `commit_interval` 30 s. Changelogs stay on (off, a
restart would lose the state; Rhythm's state is recoverable) and so does at-least-once.

With `--expect N` the app stops itself once it has processed N input messages and every
message it sent to its repartition topic (the `on_message_processed` callback and
`Application.stop()`, as the Quix configuration docs show), so its last checkpoint is
committed at once and not up to a commit interval later: the harness times the commits.

Gaps follow arrival order (Quix has no per-key event-time reordering); Rhythm's follow event
time after its allowed lateness, so the harness does not compare gap fields (see compare.py).
"""

from __future__ import annotations

import argparse
import io
import json
import struct
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader
from quixstreams import Application  # type: ignore[import-not-found,unused-ignore]
from quixstreams.dataframe.windows import (  # type: ignore[import-not-found,unused-ignore]
    Count,
    Max,
    Mean,
    Min,
    Sum,
)
from quixstreams.models.serializers import (  # type: ignore[import-not-found,unused-ignore]
    Deserializer,
)

SCHEMA = Path(__file__).resolve().parents[2] / "schemas/rhythm/schemas/avro/event-v1.avsc"
SEP = "\x1f"
WINDOWS_S = (3600, 86400)


def _plain(node: Any) -> Any:
    """The schema without logical types: timestamps stay epoch-ms ints, as in Rhythm."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


_PARSED = parse_schema(_plain(json.loads(SCHEMA.read_text())))


class AvroWire(Deserializer):  # type: ignore[misc,unused-ignore]
    """Confluent framing: magic byte, 4-byte schema id, Avro body."""

    def __call__(self, value: bytes, ctx: Any) -> Any:
        magic, _schema_id = struct.unpack_from(">BI", value)
        if magic != 0:
            raise ValueError("not Confluent-framed")
        return schemaless_reader(io.BytesIO(value[5:]), _PARSED, None)


COMMIT_INTERVAL_S = {"defaults": 5.0, "tuned": 30.0}


class Progress:
    """What the app has processed and sent to its repartition topic, to stop once done.
    Quix reports only input-topic messages to `on_message_processed`; the repartitioned
    ones are counted where they arrive (`gap`, the first step after `group_by`)."""

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.source = 0
        self.sent = 0
        self.repartitioned = 0
        self.app: Any = None

    def on_processed(self, _topic: str, _partition: int, _offset: int) -> None:
        self.source += 1
        self.stop_when_done()

    def on_repartitioned(self) -> None:
        self.repartitioned += 1
        self.stop_when_done()

    def stop_when_done(self) -> None:
        # Stopping lets the current message finish; the app then commits its checkpoint.
        if self.expect and self.source >= self.expect and self.repartitioned >= self.sent:
            self.app.stop()


PROGRESS = Progress(0)


def dedup(value: dict[str, Any], state: Any, keep: timedelta) -> dict[str, Any] | None:
    """None for a re-sent copy of an event already seen (within `keep` of event time)."""
    event_id = value["event_id"]
    if state.exists(event_id):
        return None
    state.set(event_id, 1, ttl=keep)
    return value


def entity_updates(record: dict[str, Any]) -> list[dict[str, Any]]:
    tenant = record["tenant"]
    keys = [SEP.join((tenant, "actor", record["actor_type"], record["actor_id"]))]
    for role in ("object", "target"):
        entity_type = record.get(f"{role}_type")
        if entity_type is not None:
            keys.append(SEP.join((tenant, role, entity_type, record[f"{role}_id"])))
    for tag in dict.fromkeys(record.get("tags") or ()):
        keys.append(SEP.join((tenant, "tag", "tag", tag)))
    weight = float(record.get("weight", 1.0))
    ts = record["occurred_at"]
    PROGRESS.sent += len(keys)
    return [{"k": k, "ts": ts, "w": weight} for k in keys]


def gap(value: dict[str, Any], state: Any) -> dict[str, Any]:
    """The update with the gap (s) since the entity's previous event, in arrival order."""
    PROGRESS.on_repartitioned()
    ts = value["ts"]
    last = state.get("last")
    gap_s = None
    if last is not None and ts >= last:
        gap_s = (ts - last) / 1000.0
    if last is None or ts > last:
        state.set("last", ts)
    return {"w": value["w"], "gap": gap_s}


LATE = [0]


def on_late(*_args: Any, **_kwargs: Any) -> bool:
    """Count the events Quix drops as late (past the grace); log every 1000th, not each."""
    LATE[0] += 1
    if LATE[0] % 1000 == 1:
        print(f"quix peer: {LATE[0]} late window updates dropped so far", flush=True)
    return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--grace-s", type=int, default=3 * 86400)
    parser.add_argument("--dedup-s", type=int, default=86_700)
    parser.add_argument("--variant", choices=sorted(COMMIT_INTERVAL_S), default="defaults")
    parser.add_argument("--expect", type=int, default=0, help="stop after this many inputs")
    args = parser.parse_args()

    PROGRESS.expect = args.expect
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=COMMIT_INTERVAL_S[args.variant],
        state_dir=args.state,
        loglevel="WARNING",
        on_message_processed=PROGRESS.on_processed,
    )
    PROGRESS.app = app
    source = app.topic(
        args.topic,
        key_deserializer="str",
        value_deserializer=AvroWire(),
        timestamp_extractor=lambda value, headers, ts, ts_type: value["occurred_at"],
    )
    output = app.topic(args.output, value_serializer="json", key_serializer="str")
    keep = timedelta(seconds=args.dedup_s)
    sdf = app.dataframe(source)
    sdf = sdf.apply(lambda v, state: dedup(v, state, keep), stateful=True)
    sdf = sdf.filter(lambda v: v is not None)
    sdf = sdf.apply(entity_updates, expand=True)
    sdf = sdf.group_by(lambda v: v["k"], name="entity")
    sdf = sdf.apply(gap, stateful=True)
    for size in WINDOWS_S:
        windows = (
            sdf.tumbling_window(
                size * 1000,
                grace_ms=args.grace_s * 1000,
                name=f"w{size}",
                on_late=on_late,
            )
            .agg(
                event_count=Count(),
                weight_sum=Sum("w"),
                weight_max=Max("w"),
                gap_count=Count("gap"),
                gap_min_s=Min("gap"),
                gap_max_s=Max("gap"),
                gap_mean_s=Mean("gap"),
            )
            .final()
        )

        def row(value: dict[str, Any], key: Any, _ts: int, _h: Any, size: int = size) -> Any:
            return {"key": key, "window_seconds": size, **value}

        windows.apply(row, metadata=True).to_topic(output)
    app.run()


if __name__ == "__main__":
    main()

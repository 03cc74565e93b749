"""The Quix Streams peer: the same per-entity signals as Rhythm, the Quix way.

Runs in its own virtual environment (bench/.venv-peers: quixstreams pins its own
confluent-kafka range), so it imports nothing of Rhythm: it decodes the Confluent-framed
Avro with fastavro and the project's schema file, and re-implements Rhythm's entity rule
(actor, object, target, each distinct tag; weight default 1.0; an event_id counts once).

    python -m bench.peers.quix_app --bootstrap H:P --topic T --output O --group G --state DIR

Pipeline: decode -> explode to entity updates -> group_by entity (a repartition topic, like
Rhythm's stage 1 -> updates) -> stateful dedup and gap since the entity's previous event ->
two tumbling windows (3600 s and 86400 s, grace = --grace-s; the harness passes Rhythm's
lateness + late retention) with Count,
Sum, Max of weight and Count, Min, Max, Mean of gap -> `.final()` -> JSON rows on the output topic.

Gaps follow arrival order (Quix has no per-key event-time reordering); Rhythm's follow event
time after its allowed lateness, so the harness does not compare gap fields (see compare.py).
"""

from __future__ import annotations

import argparse
import io
import json
import struct
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
DEDUP_KEEP_MS = 15 * 60 * 1000  # re-sent copies arrive within a minute: keep ids this long


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
    ts, event_id = record["occurred_at"], record["event_id"]
    return [{"k": k, "ts": ts, "w": weight, "id": event_id} for k in keys]


def dedup_and_gap(value: dict[str, Any], state: Any) -> dict[str, Any] | None:
    """None for a re-sent copy; else the update with the gap (s) since the previous event."""
    ts = value["ts"]
    seen: dict[str, int] = state.get("seen", {})
    if value["id"] in seen:
        return None
    last = state.get("last")
    seen = {i: t for i, t in seen.items() if t >= ts - DEDUP_KEEP_MS}
    seen[value["id"]] = ts
    state.set("seen", seen)
    gap = None
    if last is not None and ts >= last:
        gap = (ts - last) / 1000.0
    if last is None or ts > last:
        state.set("last", ts)
    return {"w": value["w"], "gap": gap}


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
    args = parser.parse_args()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=0.5,
        state_dir=args.state,
        loglevel="WARNING",
        # Small fetches interleave the source partitions finely: Quix keeps stream time per
        # partition, so a partition read far ahead of another would make the other's events
        # late (dropped) in the repartitioned windows. Rhythm aligns on the minimum instead.
        consumer_extra_config={"max.partition.fetch.bytes": 32768},
    )
    source = app.topic(
        args.topic,
        key_deserializer="str",
        value_deserializer=AvroWire(),
        timestamp_extractor=lambda value, headers, ts, ts_type: value["occurred_at"],
    )
    output = app.topic(args.output, value_serializer="json", key_serializer="str")
    sdf = app.dataframe(source)
    sdf = sdf.apply(entity_updates, expand=True)
    sdf = sdf.group_by(lambda v: v["k"], name="entity")
    sdf = sdf.apply(dedup_and_gap, stateful=True)
    sdf = sdf.filter(lambda v: v is not None)
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

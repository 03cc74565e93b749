"""The one dead-letter format of `rhythm.dead_letters`, written by every part (the processors,
the sink, the notifier), as Sentry's arroyo writes its DLQ: the message as it came (key and
value untouched, so it can be replayed), and in the headers why and where it came from.

Headers (all UTF-8 text):
- `rhythm.reason`: a short fixed reason (`invalid_event`, `invalid_update`, `invalid_state`,
  `bad_avro`, `notification_failed`, ...), bounded like a metric label;
- `rhythm.detail`: what a human needs to see (cut to 1,000 bytes);
- `rhythm.source.topic`, `rhythm.source.partition`, `rhythm.source.offset`: where the message
  was (partition and offset absent where there was no Kafka position, e.g. a state value
  read back from a changelog at restore has its changelog topic and no offset);
- `rhythm.source.timestamp`: the source message's timestamp (ms), where known;
- `rhythm.value.size`: present only when the value was cut (see `cut`), its size before;
- anything a part adds under its own `rhythm.<part>.` prefix (the notifier's delivery key).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["DeadLetterInfo", "cut", "headers", "read"]

REASON = "rhythm.reason"
DETAIL = "rhythm.detail"
TOPIC = "rhythm.source.topic"
PARTITION = "rhythm.source.partition"
OFFSET = "rhythm.source.offset"
TIMESTAMP = "rhythm.source.timestamp"
VALUE_SIZE = "rhythm.value.size"
DETAIL_MAX_BYTES = 1000
#: A value kept whole up to here: with the headers, the dead letter stays under the
#: producers' 1 MiB request limit even for an event of the topic's largest size.
VALUE_MAX_BYTES = 960 * 1024


def cut(value: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    """The value to publish, and the extra header saying it was cut (none if it was not)."""
    if len(value) <= VALUE_MAX_BYTES:
        return value, []
    return value[:VALUE_MAX_BYTES], [(VALUE_SIZE, str(len(value)))]


@dataclass(frozen=True)
class DeadLetterInfo:
    """What the headers of one dead letter say."""

    reason: str
    detail: str
    topic: str
    partition: int | None = None
    offset: int | None = None
    timestamp_ms: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def headers(
    reason: str,
    detail: str,
    topic: str,
    partition: int | None = None,
    offset: int | None = None,
    timestamp_ms: int | None = None,
    extra: Iterable[tuple[str, str]] = (),
) -> list[tuple[str, str | bytes | None]]:
    """The headers of a dead letter (see the module's docstring)."""
    out: list[tuple[str, str | bytes | None]] = [
        (REASON, reason.encode()),
        (DETAIL, detail.encode("utf-8", "replace")[:DETAIL_MAX_BYTES]),
        (TOPIC, topic.encode()),
    ]
    for name, number in ((PARTITION, partition), (OFFSET, offset), (TIMESTAMP, timestamp_ms)):
        if number is not None and number >= 0:
            out.append((name, str(number).encode()))
    out.extend((name, value.encode("utf-8", "replace")) for name, value in extra)
    return out


Headers = Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None]


def read(raw: Headers | None) -> DeadLetterInfo:
    """The headers of a consumed dead letter, read back (confluent-kafka's `headers()`)."""
    pairs = raw.items() if isinstance(raw, Mapping) else raw or []
    found = {
        name: (value.decode("utf-8", "replace") if isinstance(value, bytes) else value or "")
        for name, value in pairs
    }

    def number(name: str) -> int | None:
        text = found.pop(name, None)
        return int(text) if text else None

    reason, detail, topic = found.pop(REASON, ""), found.pop(DETAIL, ""), found.pop(TOPIC, "")
    partition, offset, timestamp = number(PARTITION), number(OFFSET), number(TIMESTAMP)
    return DeadLetterInfo(reason, detail, topic, partition, offset, timestamp, found)

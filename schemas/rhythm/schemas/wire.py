"""Confluent wire format: byte 0, a 4-byte big-endian schema id, then the Avro binary body.

Schema ids come from the catalogue of avro/event-v*.avsc files (see catalogue.py). We write
with the current schema and read anything the catalogue knows, resolving an older writer
schema to the current one, so a consumer always sees records in the current shape.
Timestamps stay epoch-millisecond ints on both sides.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Callable, Mapping
from typing import Any, cast

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError as AvroValidationError
from fastavro.validation import validate as avro_validate

from rhythm.schemas import avro_reader, avro_writer
from rhythm.schemas.catalogue import SchemaCatalogue, SchemaVersion, strip_logical_types
from rhythm.schemas.errors import ContractError, WireError
from rhythm.schemas.event import WireRecord, record_of

MAGIC = 0
HEADER_SIZE = 5
_HEADER = struct.Struct(">BI")
# What a record that does not fit the schema raises from either encoder.
_UNENCODABLE = (AttributeError, TypeError, KeyError, ValueError, OverflowError, struct.error)


def layout(version: SchemaVersion) -> tuple[tuple[str, Any], ...]:
    """(name, type) of each field, logical types removed: what avro_writer.LAYOUT describes."""
    fields = strip_logical_types(version.schema)["fields"]
    return tuple((f["name"], f["type"]) for f in fields)


class WireFormat:
    """Encoder and decoder over one schema catalogue (the module functions use the package's)."""

    def __init__(self, catalogue: SchemaCatalogue) -> None:
        self.catalogue = catalogue
        self.current = catalogue.current
        self._header = _HEADER.pack(MAGIC, self.current.schema_id)
        # The hand-written encoder only for the layout it was written for (see avro_writer).
        self.fast_encoder = layout(self.current) == avro_writer.LAYOUT
        self._encode_body: Callable[[Mapping[str, Any]], bytes] = (
            avro_writer.encode_body if self.fast_encoder else self._fastavro_body
        )
        # ...and the hand-written decoder for messages written with exactly that layout.
        self.fast_decoder = self.fast_encoder
        # What `encode()` writes for `record_of(event)` with event_id and sent_at set, from an
        # EventDict just validated (`validate_event_dict`), without building the record: the
        # client's path. A partial, not a method: no Python frame of its own per event.
        self.encode_validated: Callable[[Mapping[str, Any], str, int], bytes] = (
            functools.partial(avro_writer.encode_validated, self._header)
            if self.fast_encoder
            else self._encode_validated
        )

    def _fastavro_body(self, record: Mapping[str, Any]) -> bytes:
        buffer = io.BytesIO()
        schemaless_writer(buffer, self.current.plain, record)
        return buffer.getvalue()

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """A wire record (`Event.to_record()`, `validate_record()`) in the current schema.

        Does not re-check the contract's rules; raises ContractError if the record cannot be
        encoded at all (a missing field, a value of the wrong type).
        """
        try:
            return self._header + self._encode_body(record)
        except _UNENCODABLE as exc:
            raise ContractError(self._why_unencodable(record, exc)) from exc

    def _encode_validated(self, event: Mapping[str, Any], event_id: str, sent_at: int) -> bytes:
        record = record_of(event)
        record["event_id"] = event_id
        record["sent_at"] = sent_at
        return self.encode(record)

    def _why_unencodable(self, record: Mapping[str, Any], exc: Exception) -> str:
        # The error path only: fastavro's validator names the field and the expected type.
        prefix = f"record does not fit Avro schema id {self.current.schema_id}"
        try:
            avro_validate(record, self.current.plain, raise_errors=True)
        except AvroValidationError as problem:
            return f"{prefix}: " + "; ".join(str(error) for error in problem.errors)
        except Exception as problem:  # its validator can fail on odd input too
            return f"{prefix}: {type(problem).__name__}: {problem}"
        return f"{prefix}: {type(exc).__name__}: {exc}"

    def decode(self, data: bytes | bytearray | memoryview) -> WireRecord:
        """The wire record in `data`, in the current schema's shape, times as epoch-ms ints.

        Raises WireError with reason empty, too_short, bad_magic, unknown_schema_id or bad_avro.
        """
        size = len(data)
        if size == 0:
            raise WireError("empty", "no bytes (a tombstone or an empty message)")
        if size < HEADER_SIZE:
            raise WireError("too_short", f"{size} byte(s); the header alone is {HEADER_SIZE}")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise WireError(
                "bad_magic", f"byte 0 is 0x{magic:02x}, expected 0x00 (not Confluent Avro)"
            )
        writer = self.catalogue.by_id.get(schema_id)
        if writer is None:
            known = ", ".join(str(i) for i in sorted(self.catalogue.by_id))
            raise WireError("unknown_schema_id", f"schema id {schema_id} (known: {known})")
        if writer is self.current and self.fast_decoder:
            try:
                body = data if type(data) is bytes else bytes(data)
                fast, end = avro_reader.decode_body(body, HEADER_SIZE)
            except Exception:  # fastavro below gives the record or the exact error
                pass
            else:
                if end == size:
                    return cast(WireRecord, fast)
        buffer = io.BytesIO(data)
        buffer.seek(HEADER_SIZE)
        # Same schema: no resolution needed, and reader_schema=None is fastavro's fast path.
        reader = None if writer is self.current else self.current.plain
        try:
            record = schemaless_reader(buffer, writer.plain, reader)
        except Exception as exc:  # whatever the Avro reader trips on, the body is garbled
            raise WireError(
                "bad_avro",
                f"schema id {schema_id}: unreadable body (stopped at offset {buffer.tell()} "
                f"of {size}): {type(exc).__name__}: {exc}",
            ) from exc
        if buffer.tell() != size:
            raise WireError(
                "bad_avro",
                f"schema id {schema_id}: {size - buffer.tell()} trailing byte(s) "
                f"after the record, from offset {buffer.tell()}",
            )
        return cast(WireRecord, record)

    def schema_json(self, schema_id: int) -> str:
        """The Avro schema with this id, as JSON text (to seed a Schema Registry)."""
        try:
            return self.catalogue.by_id[schema_id].text
        except KeyError:
            raise KeyError(f"no schema with id {schema_id} in the catalogue") from None


WIRE = WireFormat(SchemaCatalogue.load())
CURRENT_SCHEMA_ID = WIRE.current.schema_id
encode_event = WIRE.encode
encode_validated = WIRE.encode_validated
decode_event = WIRE.decode
schema_json = WIRE.schema_json

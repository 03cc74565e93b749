"""The versioned Avro schemas, `avro/event-v<N>.avsc`, and the ids the wire format uses.

Without a Schema Registry, a schema's id is the `"rhythm.schema_id"` attribute in its file (Avro
ignores unknown attributes). The highest version is the current writer; every older one stays
in the catalogue so that data written with it can still be read.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema

SCHEMA_ID_ATTRIBUTE = "rhythm.schema_id"
_FILE_NAME = re.compile(r"^event-v([1-9][0-9]*)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    version: int  # N of event-vN.avsc
    schema_id: int
    text: str  # the file's JSON, compact: what a Schema Registry is seeded with
    schema: dict[str, Any] = field(repr=False)  # as written, logical types included
    # Parsed with logical types removed: the wire record keeps epoch-ms ints, and fastavro
    # would otherwise turn timestamp-millis into datetimes on read. The bytes are identical.
    plain: dict[str, Any] = field(repr=False)


class CatalogueError(Exception):
    """The schema files themselves are inconsistent (a bug in the repository, not in data)."""


@dataclass(frozen=True)
class SchemaCatalogue:
    by_id: dict[int, SchemaVersion]
    current: SchemaVersion

    @classmethod
    def load(cls, directory: Traversable | Path | None = None) -> SchemaCatalogue:
        """Every event-v*.avsc in `directory` (default: the package's avro/ folder)."""
        folder: Traversable | Path = directory or resources.files("rhythm.schemas") / "avro"
        versions = [
            _load_version(entry, int(match.group(1)))
            for entry in folder.iterdir()
            if (match := _FILE_NAME.match(entry.name))
        ]
        if not versions:
            raise CatalogueError(f"no event-v*.avsc in {folder}")
        by_id: dict[int, SchemaVersion] = {}
        for version in sorted(versions, key=lambda v: v.version):
            other = by_id.get(version.schema_id)
            if other is not None:
                raise CatalogueError(
                    f"event-v{version.version}.avsc and event-v{other.version}.avsc "
                    f"share {SCHEMA_ID_ATTRIBUTE} {version.schema_id}"
                )
            by_id[version.schema_id] = version
        return cls(by_id, max(versions, key=lambda v: v.version))

    def in_version_order(self) -> list[SchemaVersion]:
        return sorted(self.by_id.values(), key=lambda v: v.version)


def _load_version(entry: Traversable | Path, version: int) -> SchemaVersion:
    schema = json.loads(entry.read_text(encoding="utf-8"))
    schema_id = schema.get(SCHEMA_ID_ATTRIBUTE)
    if type(schema_id) is not int or schema_id < 1:
        raise CatalogueError(f"{entry.name}: {SCHEMA_ID_ATTRIBUTE} must be a positive int")
    return SchemaVersion(
        version=version,
        schema_id=schema_id,
        text=json.dumps(schema, separators=(",", ":"), ensure_ascii=False),
        schema=schema,
        plain=cast(dict[str, Any], parse_schema(strip_logical_types(schema))),
    )


def strip_logical_types(schema: Any) -> Any:
    """A copy of `schema` with every logicalType removed (each reads as its underlying type)."""
    if isinstance(schema, list):
        return [strip_logical_types(item) for item in schema]
    if not isinstance(schema, dict):
        return copy.copy(schema)
    out = {key: strip_logical_types(value) for key, value in schema.items() if key != "logicalType"}
    # {"type": "long"} and "long" are the same schema; the short form keeps it canonical.
    if "logicalType" in schema and set(out) == {"type"} and isinstance(out["type"], str):
        return out["type"]
    return out

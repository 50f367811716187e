"""JSON Schemas of every event type, generated from the models.

``python -m feedsvc.domain.schemas [FOLDER]`` writes one file per type and schema
version (``events/schemas/<type>.v<N>.json``); a test fails when the files drift from
the code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from feedsvc.domain.events import CURRENT_VERSIONS, EVENT_TYPES, EventMetadata

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_files() -> dict[str, bytes]:
    """File name → pretty JSON Schema, for every event type version and the metadata."""
    out: dict[str, bytes] = {}
    for (name, version), event_type in sorted(EVENT_TYPES.items()):
        schema: dict[str, Any] = {
            "$schema": SCHEMA_DIALECT,
            "$id": f"urn:feedsvc:schema:{name}.v{version}",
            **event_type.model.model_json_schema(),
            "title": f"{name} (schema version {version})",
            "x-feedsvc-type": name,
            "x-feedsvc-schema-version": version,
            "x-feedsvc-current": version == CURRENT_VERSIONS[name],
        }
        out[f"{name}.v{version}.json"] = _dump(schema)
    meta: dict[str, Any] = {
        "$schema": SCHEMA_DIALECT,
        "$id": "urn:feedsvc:schema:metadata",
        **EventMetadata.model_json_schema(),
    }
    out["metadata.json"] = _dump(meta)
    return out


def _dump(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write(folder: Path) -> list[Path]:
    """Write every schema file into ``folder``; remove stale ones."""
    folder.mkdir(parents=True, exist_ok=True)
    files = schema_files()
    for stale in folder.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, body in files.items():
        path = folder / name
        path.write_bytes(body)
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("events/schemas")
    for path in write(target):
        print(path)

"""The export format: one event per line, as compact JSON, in position order.

``export`` writes :meth:`RecordedEvent.to_json` lines; ``parse_line`` reads one back,
checking the envelope and the data against its schema, so an import refuses a corrupt
line by its number before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from feedsvc.domain.events import (
    NewEventIn,
    RecordedEvent,
    format_recorded_at,
    parse_recorded_at,
    problems_of,
    validate_data,
)
from feedsvc.errors import ImportFailed, ValidationFailed

EXPORT_FIELDS: tuple[str, ...] = (
    "position",
    "id",
    "stream",
    "version",
    "type",
    "schema_version",
    "occurred_at",
    "recorded_at",
    "data",
    "metadata",
)
"""The keys of an export line, in the order they are written."""


def parse_line(line: bytes, number: int) -> RecordedEvent:
    """One export line back into an event; :class:`ImportFailed` names the line."""
    try:
        raw: Any = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise ImportFailed(number, f"not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ImportFailed(number, "an event line must be a JSON object")
    missing = [f for f in EXPORT_FIELDS if f not in raw]
    extra = sorted(set(raw) - set(EXPORT_FIELDS))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unknown {', '.join(extra)}")
        raise ImportFailed(number, "; ".join(parts))
    for name in ("position", "version", "schema_version"):
        if not isinstance(raw[name], int) or isinstance(raw[name], bool) or raw[name] < 1:
            raise ImportFailed(number, f"{name} must be a positive integer")
    for name in ("id", "stream", "type", "occurred_at", "recorded_at"):
        if not isinstance(raw[name], str):
            raise ImportFailed(number, f"{name} must be a string")
    try:
        if format_recorded_at(parse_recorded_at(raw["recorded_at"])) != raw["recorded_at"]:
            raise ValueError
    except ValueError:
        raise ImportFailed(
            number, f"recorded_at {raw['recorded_at']!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ"
        ) from None
    try:
        # the envelope rules (id, occurred_at, metadata) and the data schema
        NewEventIn.model_validate(
            {
                "id": raw["id"],
                "type": raw["type"],
                "schema_version": raw["schema_version"],
                "occurred_at": raw["occurred_at"],
                "data": raw["data"] if isinstance(raw["data"], dict) else {},
                "metadata": raw["metadata"],
            }
        )
        validate_data(raw["type"], raw["schema_version"], raw["data"])
    except ValidationFailed as e:
        raise ImportFailed(number, str(e)) from None
    except ValidationError as e:
        listing = "; ".join(str(p) for p in problems_of(e))
        raise ImportFailed(number, f"invalid event: {listing}") from None
    return RecordedEvent(
        position=raw["position"],
        id=raw["id"],
        stream=raw["stream"],
        version=raw["version"],
        type=raw["type"],
        schema_version=raw["schema_version"],
        occurred_at=raw["occurred_at"],
        recorded_at=raw["recorded_at"],
        data_json=orjson.dumps(raw["data"]).decode(),
        metadata_json=orjson.dumps(raw["metadata"]).decode(),
    )


def read_ndjson(path: Path, progress: Callable[[int], object] | None = None) -> list[RecordedEvent]:
    """Parse and validate every line of an export file; refuse the file at its first
    bad line (by number) before anything is written. ``progress`` gets bytes read."""
    events: list[RecordedEvent] = []
    try:
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if progress is not None:
                    progress(len(line))
                if line.strip():
                    events.append(parse_line(line, number))
    except OSError as e:
        raise ImportFailed(0, f"cannot read {path}: {e.strerror}") from e
    return events

"""The decisions of an append that do not depend on the database, as plain code over
rows: shared by every adapter of the event store.

An adapter, inside the transaction that will write a group of appends, reads what
the decisions need (the log's head and last ``recorded_at``, the current version of
each stream in the group, and the rows already holding any of the group's event ids)
and hands them to :func:`decide_group`. It answers, for each append of the group, an
:class:`~feedsvc.store.port.AppendResult` or the error to raise, and the rows to
insert, in position order. Nothing here does I/O or reads the clock: ``now`` is passed
in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from feedsvc.domain.events import (
    RecordedEvent,
    ValidEvent,
    format_recorded_at,
    parse_recorded_at,
)
from feedsvc.errors import DuplicateEventId, ImportFailed, StoreError, WrongExpectedVersion
from feedsvc.ndjson import EXPORT_FIELDS
from feedsvc.store.port import AppendResult, Expected

TICK = timedelta(microseconds=1)
"""The least step between two events' ``recorded_at``."""


COLUMNS = EXPORT_FIELDS
"""The events table's columns, in order: the export's fields (a row is
:meth:`RecordedEvent.row() <feedsvc.domain.events.RecordedEvent.row>`)."""


class StoredEvent(NamedTuple):
    """What a replay is checked against: an event already in the log, by id."""

    id: str
    position: int
    stream: str
    version: int
    type: str
    schema_version: int
    occurred_at: str
    data: str
    recorded_at: str


STORED_COLUMNS = StoredEvent._fields
"""The columns to read for :class:`StoredEvent`, in order."""


@dataclass(frozen=True)
class AppendRequest:
    """One append of a group: events for one stream, with the version expected."""

    stream: str
    events: Sequence[ValidEvent]
    expected: Expected


@dataclass(frozen=True)
class LogTail:
    """What the log is at when a group is decided: its last position and the last
    ``recorded_at`` (empty for an empty log)."""

    head: int
    last_recorded: str


class RecordedClock:
    """Hands out the ``recorded_at`` of a group's events, one per event.

    The first is the later of now and one microsecond after the log's last
    ``recorded_at``; each next one is a microsecond after the one before. So no two
    events share a ``recorded_at``, and it never goes back (``as_of`` stays a log
    prefix).
    """

    def __init__(self, now: datetime, last_recorded: str) -> None:
        start = now
        if last_recorded:
            start = max(now, parse_recorded_at(last_recorded) + TICK)
        self._next = start

    def take(self, count: int) -> list[str]:
        """The ``recorded_at`` of the next ``count`` events, in order."""
        stamps: list[str] = []
        for _ in range(count):
            stamps.append(format_recorded_at(self._next))
            self._next += TICK
        return stamps


Outcome = AppendResult | StoreError
"""What one append of a group comes to: its result, or the error to answer it with."""


def decide_group(
    requests: Sequence[AppendRequest],
    tail: LogTail,
    versions: Mapping[str, int],
    existing: Mapping[str, StoredEvent],
    now: datetime,
) -> tuple[list[Outcome], list[RecordedEvent]]:
    """Decide every append of a group, in order, as if each were committed alone.

    ``versions`` holds the current version of the group's streams (a stream not in it
    does not exist); ``existing`` the stored events whose ids the group uses. A refused
    append is answered with its error and writes nothing; the others get consecutive
    positions after ``tail.head``. An append that resends the ids of an earlier one of
    the same group is a replay of it.
    """
    head = tail.head
    current = dict(versions)
    known = dict(existing)
    clock = RecordedClock(now, tail.last_recorded)
    outcomes: list[Outcome] = []
    rows: list[RecordedEvent] = []
    for request in requests:
        try:
            outcome, new_rows = _decide_one(request, head, current, known, clock)
        except StoreError as e:
            outcomes.append(e)
            continue
        outcomes.append(outcome)
        if new_rows:
            rows.extend(new_rows)
            head = new_rows[-1].position
            current[request.stream] = outcome.version
            for row in new_rows:
                known[row.id] = StoredEvent(
                    row.id,
                    row.position,
                    row.stream,
                    row.version,
                    row.type,
                    row.schema_version,
                    row.occurred_at,
                    row.data_json,
                    row.recorded_at,
                )
    return outcomes, rows


def _decide_one(
    request: AppendRequest,
    head: int,
    versions: Mapping[str, int],
    existing: Mapping[str, StoredEvent],
    clock: RecordedClock,
) -> tuple[AppendResult, list[RecordedEvent]]:
    stream, events = request.stream, request.events
    seen = [existing.get(e.id) for e in events]
    if any(row is not None for row in seen):
        return replay(stream, events, seen), []
    ids = [e.id for e in events]
    if len(set(ids)) != len(ids):
        raise DuplicateEventId(next(i for n, i in enumerate(ids) if i in ids[:n]))
    current = versions.get(stream, 0)
    expected = request.expected
    if (expected == "no_stream" and current != 0) or (
        isinstance(expected, int) and expected != current
    ):
        raise WrongExpectedVersion(stream, expected, current)
    stamps = clock.take(len(events))
    rows = [
        RecordedEvent(
            head + offset,
            event.id,
            stream,
            current + offset,
            event.type,
            event.schema_version,
            event.occurred_at,
            recorded_at,
            event.data_json,
            event.metadata_json,
        )
        for offset, (event, recorded_at) in enumerate(zip(events, stamps, strict=True), start=1)
    ]
    return (
        AppendResult(
            stream=stream,
            version=current + len(events),
            ids=tuple(ids),
            positions=tuple(row.position for row in rows),
            recorded_at=stamps[0],
        ),
        rows,
    )


def replay(
    stream: str, events: Sequence[ValidEvent], seen: Sequence[StoredEvent | None]
) -> AppendResult:
    """The original result of an append whose events are all in the log with the same
    content; :class:`~feedsvc.errors.DuplicateEventId` if one is new (part of the
    request written before, part not) or differs."""
    positions: list[int] = []
    version = 0
    first: StoredEvent | None = None
    for event, row in zip(events, seen, strict=True):
        if row is None:
            reused = next((e.id for e, r in zip(events, seen, strict=True) if r is not None), None)
            raise DuplicateEventId(reused or event.id)
        if (row.stream, row.type, row.schema_version, row.occurred_at, row.data) != (
            stream,
            event.type,
            event.schema_version,
            event.occurred_at,
            event.data_json,
        ):
            raise DuplicateEventId(event.id)
        positions.append(row.position)
        version = max(version, row.version)
        if first is None or row.position < first.position:
            first = row
    return AppendResult(
        stream=stream,
        version=version,
        ids=tuple(e.id for e in events),
        positions=tuple(positions),
        recorded_at=first.recorded_at if first else "",
        replayed=True,
    )


def decide_import(
    events: Sequence[RecordedEvent],
    head: int,
    present: Mapping[int, RecordedEvent],
    versions: Mapping[str, int],
) -> list[RecordedEvent]:
    """The events of an import to write: those after ``head``, which must continue
    the log without a gap and each stream without a skipped version. ``present``
    holds the logged events at the import's positions up to ``head`` (each must be
    the very same event); ``versions`` the current version of the streams the new
    events belong to. :class:`~feedsvc.errors.ImportFailed` names the first bad
    line."""
    current = dict(versions)
    new: list[RecordedEvent] = []
    for index, event in enumerate(events, start=1):
        if event.position <= head:
            if present.get(event.position) != event:
                raise ImportFailed(
                    index,
                    f"position {event.position} already holds a different event; "
                    "import into an empty database or export from this one",
                )
            continue
        expected_position = head + len(new) + 1
        if event.position != expected_position:
            raise ImportFailed(
                index, f"position {event.position} leaves a gap: expected {expected_position}"
            )
        version = current.get(event.stream, 0)
        if event.version != version + 1:
            raise ImportFailed(
                index,
                f"stream {event.stream!r} version {event.version} does not follow "
                f"version {version}",
            )
        current[event.stream] = event.version
        new.append(event)
    return new

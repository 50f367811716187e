"""The event store port: what the rest of feedsvc may ask of the log.

Adapters (:mod:`feedsvc.store.sqlite` first) implement :class:`EventStore` and must
pass the contract suite in ``tests/store/contract.py`` against a real database.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from feedsvc.domain.events import RecordedEvent, ValidEvent

Expected = int | Literal["any", "no_stream"]
"""What the caller believes the stream's version is: ``"any"`` (no check),
``"no_stream"`` (the stream must not exist) or an exact version (0 = no stream)."""


@dataclass(frozen=True)
class AppendResult:
    """What an append did: the stream's version after it, and each event's place.

    ``recorded_at`` is the first event's ``recorded_at``. Every event gets its own,
    strictly increasing with position: each next event of the append is one
    microsecond after the one before, and no two events in the log share one (so
    no two feed entries changed by different events share an ``updated``).

    ``replayed`` is true when every event id was already in the log with the same
    content: nothing was written and this is the original result (the same
    positions, version and ``recorded_at`` as first answered).
    """

    stream: str
    version: int
    ids: tuple[str, ...]
    positions: tuple[int, ...]
    recorded_at: str
    replayed: bool = False


@dataclass(frozen=True)
class EncodedEvents:
    """Events in their export form (:func:`~feedsvc.domain.events.export_dict`), each a
    JSON object, joined by commas: the inside of a JSON array."""

    count: int
    last: int | None
    """the position of the last event, None when there is none"""
    json: bytes


class EventStore(ABC):
    """An append-only log of events, one stream per story.

    Positions are global, gapless and strictly increasing in commit order; versions
    are 1-based and contiguous per stream. Nothing is ever updated or deleted.
    """

    @abstractmethod
    async def open(self) -> None:
        """Connect, create or migrate the schema; raise a StoreError if impossible."""

    @abstractmethod
    async def close(self) -> None:
        """Finish the writes in flight, then close every connection."""

    @abstractmethod
    async def append(
        self, stream: str, events: Sequence[ValidEvent], expected: Expected = "any"
    ) -> AppendResult:
        """Append ``events`` to ``stream`` atomically, after checking ``expected``.

        Each event is recorded at its own time: the first at the later of now and
        one microsecond after the log's last ``recorded_at``, each next one a
        microsecond later, also across the appends of one group commit.

        Idempotent by event id: if every id is already in the log with the same
        content (stream, type, schema version, occurred_at, data) the original result
        is returned with ``replayed=True``; a reused id with other content raises
        :class:`~feedsvc.errors.DuplicateEventId`. A version mismatch raises
        :class:`~feedsvc.errors.WrongExpectedVersion`.
        """

    def submit(
        self, stream: str, events: Sequence[ValidEvent], expected: Expected = "any"
    ) -> asyncio.Future[AppendResult]:
        """:meth:`append`, queued at once: the future of its outcome. Appends submitted
        one after another reach the log in that order (an adapter with a queue of its
        own answers this without a task per append)."""
        return asyncio.ensure_future(self.append(stream, events, expected))

    @abstractmethod
    async def import_events(self, events: Sequence[RecordedEvent]) -> int:
        """Write already-recorded events at their exact positions, all or nothing.

        Events already present (same position, id and content) are skipped; the rest
        must continue the log without a gap. Returns how many were written.
        """

    @abstractmethod
    async def read_all(
        self,
        after: int = 0,
        limit: int = 100,
        *,
        types: Sequence[str] | None = None,
        stream: str | None = None,
        upto: int | None = None,
    ) -> list[RecordedEvent]:
        """Events with position greater than ``after`` (and at most ``upto``), in
        order, at most ``limit``, optionally only of some types or one stream."""

    async def read_all_json(
        self,
        after: int = 0,
        limit: int = 100,
        *,
        types: Sequence[str] | None = None,
        stream: str | None = None,
        upto: int | None = None,
    ) -> EncodedEvents:
        """What :meth:`read_all` reads, already encoded in the export form, for pages
        that are only sent on (an adapter may encode in the database)."""
        found = await self.read_all(after, limit, types=types, stream=stream, upto=upto)
        return EncodedEvents(
            len(found),
            found[-1].position if found else None,
            b",".join(event.to_json() for event in found),
        )

    @abstractmethod
    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        """One stream's events from ``from_version`` on, in order."""

    @abstractmethod
    async def find(self, ids: Sequence[str]) -> list[RecordedEvent]:
        """The events with these ids that the log holds, in position order."""

    @abstractmethod
    async def head(self) -> int:
        """The position of the last event (0 for an empty log)."""

    @abstractmethod
    async def stream_version(self, stream: str) -> int:
        """The stream's current version (0 if it does not exist)."""

    @abstractmethod
    async def streams(self) -> list[str]:
        """Every stream name, sorted."""

    @abstractmethod
    async def position_at(self, recorded_at: str) -> int:
        """The last position whose ``recorded_at`` is at or before the given time."""

    @abstractmethod
    async def wait_for(self, position: int, timeout: float) -> int:
        """Wait until the head reaches ``position`` or ``timeout`` seconds pass;
        return the head."""

    @abstractmethod
    def add_commit_listener(self, listener: Callable[[int], object]) -> None:
        """Call ``listener(events)`` after every commit of appended events (metrics)."""

    async def iterate(self, after: int = 0, page: int = 1000) -> AsyncIterator[RecordedEvent]:
        """Every event after ``after``, read in pages."""
        while True:
            batch = await self.read_all(after, page)
            if not batch:
                return
            for event in batch:
                yield event
            after = batch[-1].position

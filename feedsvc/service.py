"""Appending to stories: validation, the story's rules, then the log.

:class:`StoryService` is what the HTTP API and the CLI call to append. It validates
every event against its schema, checks the story's rules (:class:`StoryRules`, a light
fold kept per story), and hands the events to the store with the exact version it
checked against, so a rule can never be broken by a race: a writer that lost one is
re-checked against the new state.

Appends to one story are pipelined: while one waits for its group commit, the next is
checked against the rules *including* the pending events and queued right behind it,
so concurrent appends to one story still share an fsync.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from feedsvc.domain.events import ValidEvent, validate_new_event
from feedsvc.domain.story import StoryRules, check_append, check_onto, rules_of
from feedsvc.errors import (
    FieldProblem,
    NoStory,
    StoreUnavailable,
    StoryExists,
    ValidationFailed,
    WrongExpectedVersion,
)
from feedsvc.store.port import AppendResult, EventStore, Expected


@dataclass
class _StreamState:
    """The committed rules and version of one story, and the appends accepted after
    them but not yet committed."""

    rules: StoryRules = field(default_factory=StoryRules)
    version: int = 0
    pending: list[tuple[asyncio.Future[AppendResult], list[ValidEvent]]] = field(
        default_factory=list
    )
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stale: bool = True
    ahead: StoryRules | None = None
    """The committed rules with the pending appends folded in (None: to be worked
    out again, after an append failed or the story was read again)."""

    @property
    def pending_events(self) -> list[ValidEvent]:
        return [e for _, events in self.pending for e in events]


class StoryService:
    """Validate, check and append events to stories."""

    def __init__(
        self,
        store: EventStore,
        *,
        future_skew: timedelta = timedelta(days=1),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        contention_timeout_s: float = 10.0,
    ) -> None:
        self.store = store
        self.future_skew = future_skew
        self.clock = clock
        self.contention_timeout_s = contention_timeout_s
        """How long an append expecting any version keeps trying while other writers
        (other replicas) keep moving its story; then it is refused as unavailable."""
        self._streams: dict[str, _StreamState] = {}

    def validate(self, raw_events: Sequence[Any], actor: str | None = None) -> list[ValidEvent]:
        """Check every submitted event, reporting every bad field of every event."""
        problems: list[FieldProblem] = []
        valid: list[ValidEvent] = []
        many = len(raw_events) > 1
        latest = self.clock() + self.future_skew
        for index, raw in enumerate(raw_events):
            prefix = f"/{index}" if many else ""
            if isinstance(raw, dict) and actor is not None:
                metadata = raw.get("metadata")
                if isinstance(metadata, dict):
                    raw = {**raw, "metadata": {**metadata, "actor": actor}}
                elif metadata is None:
                    raw = {**raw, "metadata": {"actor": actor}}
            try:
                event = validate_new_event(raw, prefix)
            except ValidationFailed as e:
                problems.extend(e.problems)
                continue
            if event.occurred.start > latest:
                problems.append(
                    FieldProblem(
                        f"{prefix}/occurred_at",
                        f"{event.occurred_at} is in the future; developments are "
                        "reported after they happen",
                    )
                )
            valid.append(event)
        ids = [e.id for e in valid]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            for index, event_id in enumerate(ids):
                if event_id in seen:
                    problems.append(FieldProblem(f"/{index}/id", "id repeated in this request"))
                seen.add(event_id)
        if problems:
            raise ValidationFailed(problems)
        return valid

    async def append(
        self,
        stream: str,
        raw_events: Sequence[Any],
        expected: Expected = "any",
        actor: str | None = None,
    ) -> AppendResult:
        """Validate and append ``raw_events`` (JSON-like dicts) to ``stream``."""
        return await self.append_valid(stream, self.validate(raw_events, actor), expected)

    async def append_valid(
        self, stream: str, events: list[ValidEvent], expected: Expected = "any"
    ) -> AppendResult:
        """Append events that passed :meth:`validate`.

        The append is chained onto this service's view of the story; when another
        writer moved the story meanwhile, the story is read again and the append
        checked again: at once refused if it expected an exact version, tried again
        if it expected any (for up to ``contention_timeout_s``)."""
        if not events:
            raise ValidationFailed([FieldProblem("", "no events to append")])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.contention_timeout_s
        while True:
            try:
                future = await self._enqueue(stream, events, expected)
            except (ValidationFailed, WrongExpectedVersion, StoryExists, NoStory):
                # a retry of an append already made breaks the story's rules or the
                # expected version; if it is one (or reuses an id), the store decides.
                # Looked up only then: a retry the rules accept reaches the store anyway
                if any(e.client_id for e in events) and await self.store.find(
                    [e.id for e in events]
                ):
                    return await self.store.append(stream, events, expected)
                raise
            try:
                return await future
            except WrongExpectedVersion:
                # a writer elsewhere got in first: refresh the story and check again
                self._streams[stream].stale = True
                if expected != "any":
                    raise
                if loop.time() > deadline:
                    raise StoreUnavailable(
                        f"story {stream!r} is being appended to by other writers faster than "
                        f"this append could follow for {self.contention_timeout_s:g} s; "
                        "try again"
                    ) from None

    async def _enqueue(
        self, stream: str, events: list[ValidEvent], expected: Expected
    ) -> asyncio.Future[AppendResult]:
        state = self._streams.setdefault(stream, _StreamState())
        async with state.lock:
            if state.stale:
                # another writer moved the stream: read it again once the appends
                # in flight have settled (chaining onto them would guess wrong)
                while state.pending:
                    await asyncio.wait([future for future, _ in state.pending])
                await self._refresh(stream, state)
            prior = state.pending_events
            tentative = state.version + len(prior)
            if expected == "no_stream" and tentative != 0:
                raise WrongExpectedVersion(stream, expected, tentative)
            if isinstance(expected, int) and expected != tentative:
                raise WrongExpectedVersion(stream, expected, tentative)
            if state.ahead is None:
                state.ahead = check_append(stream, state.rules, [], prior)
            check_onto(stream, state.ahead, events)
            future = self.store.submit(stream, events, tentative)
            state.pending.append((future, events))
        future.add_done_callback(lambda f: self._settled(stream, f))
        return future

    def _settled(self, stream: str, future: asyncio.Future[AppendResult]) -> None:
        state = self._streams[stream]
        events = next((ev for f, ev in state.pending if f is future), [])
        state.pending = [(f, ev) for f, ev in state.pending if f is not future]
        if future.cancelled() or future.exception() is not None:
            # whatever was chained behind it fails its version check and is retried
            state.stale = True
            state.ahead = None
            return
        result = future.result()
        if result.replayed or result.version - len(events) != state.version:
            state.stale = True  # someone else wrote too: read the stream again
            state.ahead = None
            return
        for event in events:
            state.rules.accept(stream, event.type, event.model.__dict__)
        state.version = result.version

    async def _refresh(self, stream: str, state: _StreamState) -> None:
        events = await self.store.read_stream(stream, state.version + 1)
        rules_of(events, state.rules)
        state.ahead = None
        if events:
            state.version = events[-1].version
        state.stale = False

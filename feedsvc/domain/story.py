"""The fold of a story's events into its current state, and the rules an append
must keep.

Pure: the state is computed from events alone (never from the wall clock), so the
same log always folds to the same story. :meth:`Story.apply` is used by the
projections; :func:`check_append` by the service before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from pydantic import BaseModel, Field

from feedsvc.domain.events import Occurred, Precision, RecordedEvent, ValidEvent, slugify
from feedsvc.errors import (
    FieldProblem,
    NoStory,
    StoryAlreadyOpen,
    StoryExists,
    StoryMissing,
    ValidationFailed,
)


class _State(BaseModel):
    model_config = {"extra": "forbid", "validate_assignment": False}


class SourceRef(_State):
    """A link to where a development is documented."""

    url: str
    title: str
    publisher: str | None = None


class PersonRef(_State):
    """A person involved in a development."""

    name: str
    role: str | None = None


class Quote(_State):
    """Words attributed to someone, as the timeline shows them."""

    quote_id: str
    speaker: str
    role: str | None = None
    text: str
    recorded_at: str
    position: int


class Correction(_State):
    """A published correction of a development."""

    note: str
    fields: list[str]
    recorded_at: str
    position: int


class Retraction(_State):
    """Why a development was withdrawn."""

    reason: str
    recorded_at: str
    position: int


class Development(_State):
    """One development of a story, with corrections applied."""

    development_id: str
    headline: str
    body: str
    kind: str
    occurred_at: str
    occurred_precision: Precision
    occurred_start: str
    sources: list[SourceRef] = Field(default_factory=list)
    people: list[PersonRef] = Field(default_factory=list)
    organizations: list[str] = Field(default_factory=list)
    places: list[str] = Field(default_factory=list)
    topics: list[str] = Field(default_factory=list)
    quotes: list[Quote] = Field(default_factory=list)
    corrections: list[Correction] = Field(default_factory=list)
    retraction: Retraction | None = None
    reported_at: str
    reported_position: int
    updated_at: str
    updated_position: int

    @property
    def occurred(self) -> Occurred:
        """The occurred date as an :class:`Occurred`."""
        return Occurred.parse(self.occurred_at)

    def touch(self, event: RecordedEvent) -> None:
        """Mark the development changed by ``event`` (bumps its ``updated``)."""
        self.updated_at = event.recorded_at
        self.updated_position = event.position


class FollowUp(_State):
    """Something the story is waiting for."""

    followup_id: str
    description: str
    subjects: list[str] = Field(default_factory=list)
    development_id: str | None = None
    expected_at: str
    resolved_at: str | None = None
    resolved_by: str | None = None
    resolution_note: str | None = None


class Story(_State):
    """A story's current state: everything a page or a feed shows of it."""

    slug: str
    title: str
    summary: str
    topics: list[str] = Field(default_factory=list)
    places: list[str] = Field(default_factory=list)
    status: str = "open"
    opened_at: str
    updated_at: str
    version: int
    last_position: int
    development_count: int = 0
    developments: dict[str, Development] = Field(default_factory=dict)
    followups: dict[str, FollowUp] = Field(default_factory=dict)

    @classmethod
    def open(cls, event: RecordedEvent) -> Story:
        """Start a story from its ``story.opened`` event."""
        data = event.data
        return cls(
            slug=data["slug"],
            title=data["title"],
            summary=data["summary"],
            topics=list(data.get("topics", [])),
            places=list(data.get("places", [])),
            opened_at=event.recorded_at,
            updated_at=event.recorded_at,
            version=event.version,
            last_position=event.position,
        )

    @property
    def topic_slugs(self) -> list[str]:
        """Every topic of the story and its developments, in URL form, sorted."""
        found = {slugify(t) for t in self.topics}
        for dev in self.developments.values():
            found.update(slugify(t) for t in dev.topics)
        return sorted(found)

    def timeline(self) -> list[Development]:
        """Developments in the order they happened (ties: the order reported)."""
        return sorted(
            self.developments.values(),
            key=lambda d: (d.occurred_start, d.reported_position),
        )

    def apply(self, event: RecordedEvent) -> list[str]:
        """Fold one event in; return the ids of the developments it touched."""
        handler = _HANDLERS.get(event.type)
        touched = handler(self, event, event.data) if handler else []
        self.version = event.version
        self.last_position = event.position
        self.updated_at = event.recorded_at
        return touched


def _reported(story: Story, event: RecordedEvent, data: dict[str, Any]) -> list[str]:
    occurred = event.occurred
    dev = Development(
        development_id=data["development_id"],
        headline=data["headline"],
        body=data["body"],
        kind=data["kind"],
        occurred_at=occurred.text,
        occurred_precision=occurred.precision,
        occurred_start=occurred.start.isoformat(),
        sources=[SourceRef(**s) for s in data.get("sources", [])],
        people=[PersonRef(**p) for p in data.get("people", [])],
        organizations=list(data.get("organizations", [])),
        places=list(data.get("places", [])),
        topics=list(data.get("topics", [])),
        reported_at=event.recorded_at,
        reported_position=event.position,
        updated_at=event.recorded_at,
        updated_position=event.position,
    )
    story.developments[dev.development_id] = dev
    story.development_count += 1
    return [dev.development_id]


def _quoted(story: Story, event: RecordedEvent, data: dict[str, Any]) -> list[str]:
    dev = story.developments[data["development_id"]]
    dev.quotes.append(
        Quote(
            quote_id=data["quote_id"],
            speaker=data["speaker"],
            role=data.get("role"),
            text=data["text"],
            recorded_at=event.recorded_at,
            position=event.position,
        )
    )
    dev.touch(event)
    return [dev.development_id]


def _corrected(story: Story, event: RecordedEvent, data: dict[str, Any]) -> list[str]:
    dev = story.developments[data["development_id"]]
    changes: dict[str, Any] = data["changes"]
    for field, value in changes.items():
        if field == "occurred_at":
            occurred = Occurred.parse(value)
            dev.occurred_at = occurred.text
            dev.occurred_precision = occurred.precision
            dev.occurred_start = occurred.start.isoformat()
        elif field == "sources":
            dev.sources = [SourceRef(**s) for s in value]
        elif field == "people":
            dev.people = [PersonRef(**p) for p in value]
        else:
            setattr(dev, field, value)
    dev.corrections.append(
        Correction(
            note=data["note"],
            fields=sorted(changes),
            recorded_at=event.recorded_at,
            position=event.position,
        )
    )
    dev.touch(event)
    return [dev.development_id]


def _retracted(story: Story, event: RecordedEvent, data: dict[str, Any]) -> list[str]:
    dev = story.developments[data["development_id"]]
    dev.retraction = Retraction(
        reason=data["reason"], recorded_at=event.recorded_at, position=event.position
    )
    dev.touch(event)
    return [dev.development_id]


def _retitled(story: Story, event: RecordedEvent, data: dict[str, Any]) -> list[str]:
    story.title = data["title"]
    if data.get("summary") is not None:
        story.summary = data["summary"]
    return []


def _retagged(story: Story, event: RecordedEvent, data: dict[str, Any]) -> list[str]:
    story.topics = list(data["topics"])
    story.places = list(data.get("places", []))
    return []


def _closed(story: Story, event: RecordedEvent, data: dict[str, Any]) -> list[str]:
    story.status = "closed"
    return []


def _reopened(story: Story, event: RecordedEvent, data: dict[str, Any]) -> list[str]:
    story.status = "open"
    return []


def _expected(story: Story, event: RecordedEvent, data: dict[str, Any]) -> list[str]:
    story.followups[data["followup_id"]] = FollowUp(
        followup_id=data["followup_id"],
        description=data["description"],
        subjects=list(data.get("subjects", [])),
        development_id=data.get("development_id"),
        expected_at=event.recorded_at,
    )
    return []


def _resolved(story: Story, event: RecordedEvent, data: dict[str, Any]) -> list[str]:
    followup = story.followups[data["followup_id"]]
    followup.resolved_at = event.recorded_at
    followup.resolved_by = data.get("development_id")
    followup.resolution_note = data.get("note")
    return []


_HANDLERS = {
    "development.reported": _reported,
    "quote.attributed": _quoted,
    "development.corrected": _corrected,
    "development.retracted": _retracted,
    "story.retitled": _retitled,
    "story.retagged": _retagged,
    "story.closed": _closed,
    "story.reopened": _reopened,
    "followup.expected": _expected,
    "followup.resolved": _resolved,
}


@dataclass
class StoryRules:
    """What an append must respect: the ids and status a story already has.

    A light fold of the same events as :class:`Story`, kept by the service for every
    story it appends to, so checking an append costs a few set look-ups.
    """

    opened: bool = False
    status: str = "open"
    developments: set[str] = dc_field(default_factory=set)
    retracted: set[str] = dc_field(default_factory=set)
    quotes: set[str] = dc_field(default_factory=set)
    followups: set[str] = dc_field(default_factory=set)

    def copy(self) -> StoryRules:
        """An independent copy, to check a batch against."""
        return StoryRules(
            self.opened,
            self.status,
            set(self.developments),
            set(self.retracted),
            set(self.quotes),
            set(self.followups),
        )

    def accept(
        self,
        stream: str,
        type_name: str,
        data: Mapping[str, Any],
        journal: list[tuple[str, Any]] | None = None,
    ) -> list[FieldProblem]:
        """Fold one event in; return what it breaks (pointers relative to the event).
        With ``journal``, every change is recorded there for :meth:`undo`."""
        problems: list[FieldProblem] = []
        if journal is not None:
            journal.append(("opened", self.opened))
            journal.append(("status", self.status))

        def refuse(field: str, message: str) -> None:
            problems.append(FieldProblem(field, message))

        if type_name == "story.opened":
            if self.opened:
                problems.append(StoryAlreadyOpen("/type", f"story {stream!r} is already open"))
            elif data["slug"] != stream:
                refuse("/data/slug", f"must equal the story's stream {stream!r}")
            self.opened = True
            return problems
        if not self.opened:
            problems.append(
                StoryMissing(
                    "/type", f"story {stream!r} does not exist yet; open it with story.opened first"
                )
            )
            return problems
        dev_id: str = data.get("development_id") or ""
        if type_name == "development.reported":
            if self.status == "closed":
                refuse("/type", f"story {stream!r} is closed; reopen it first")
            if dev_id in self.developments:
                refuse("/data/development_id", f"development {dev_id!r} already exists")
            _add(self.developments, dev_id, journal)
        elif type_name in _DEVELOPMENT_EVENTS:
            if dev_id not in self.developments:
                refuse("/data/development_id", f"no development {dev_id!r} in story {stream!r}")
            elif dev_id in self.retracted and type_name != "quote.attributed":
                refuse("/data/development_id", f"development {dev_id!r} is retracted")
            if type_name == "quote.attributed":
                if data["quote_id"] in self.quotes:
                    refuse("/data/quote_id", f"quote {data['quote_id']!r} already exists")
                _add(self.quotes, data["quote_id"], journal)
            if type_name == "development.retracted":
                _add(self.retracted, dev_id, journal)
        elif type_name == "story.closed":
            if self.status == "closed":
                refuse("/type", f"story {stream!r} is already closed")
            self.status = "closed"
        elif type_name == "story.reopened":
            if self.status != "closed":
                refuse("/type", f"story {stream!r} is not closed")
            self.status = "open"
        elif type_name in ("followup.expected", "followup.resolved"):
            followup = data["followup_id"]
            if type_name == "followup.expected" and followup in self.followups:
                refuse("/data/followup_id", f"follow-up {followup!r} already exists")
            if type_name == "followup.resolved" and followup not in self.followups:
                refuse("/data/followup_id", f"no follow-up {followup!r} in story {stream!r}")
            if dev_id and dev_id not in self.developments:
                refuse("/data/development_id", f"no development {dev_id!r} in story {stream!r}")
            _add(self.followups, followup, journal)
        return problems

    def undo(self, journal: list[tuple[str, Any]]) -> None:
        """Take back the changes recorded in ``journal``, newest first."""
        for what, value in reversed(journal):
            if what == "opened":
                self.opened = value
            elif what == "status":
                self.status = value
            else:
                value[0].discard(value[1])
        journal.clear()


def _add(found: set[str], item: str, journal: list[tuple[str, Any]] | None) -> None:
    if item not in found:
        found.add(item)
        if journal is not None:
            journal.append(("added", (found, item)))


_DEVELOPMENT_EVENTS = frozenset(
    {"quote.attributed", "development.corrected", "development.retracted"}
)


def check_append(
    stream: str,
    rules: StoryRules | None,
    events: list[ValidEvent],
    prior: list[ValidEvent] | None = None,
) -> StoryRules:
    """Refuse a batch that would break the story's rules, naming each event; return
    the rules as they are after it.

    ``rules`` is the stream's committed state (``None`` for a new stream) and
    ``prior`` the events already accepted after it but not yet committed. The batch
    is checked as a whole, in order, so a batch may open a story and report into it.
    """
    state = rules.copy() if rules is not None else StoryRules()
    for event in prior or []:
        state.accept(stream, event.type, event.model.__dict__)
    check_onto(stream, state, events)
    return state


def check_onto(stream: str, rules: StoryRules, events: list[ValidEvent]) -> None:
    """Fold a batch into ``rules`` if it breaks none of them; otherwise leave ``rules``
    as they were and refuse the batch, naming each event. Nothing is copied: what the
    batch changed is taken back on refusal.

    A batch that opens a story already open is refused with :class:`StoryExists`, one
    that writes to a story never opened with :class:`NoStory`; any other broken rule
    with :class:`ValidationFailed`."""
    journal: list[tuple[str, Any]] = []
    problems: list[FieldProblem] = []
    for index, event in enumerate(events):
        where = f"/{index}" if len(events) > 1 else ""
        problems.extend(
            p.moved(where) for p in rules.accept(stream, event.type, event.model.__dict__, journal)
        )
    if problems:
        rules.undo(journal)
        if any(isinstance(p, StoryAlreadyOpen) for p in problems):
            raise StoryExists(stream)
        if any(isinstance(p, StoryMissing) for p in problems):
            raise NoStory(stream)
        raise ValidationFailed(problems)


def fold(events: list[RecordedEvent]) -> Story | None:
    """Fold one stream's events, in order, into its story."""
    story: Story | None = None
    for event in events:
        if story is None:
            if event.type == "story.opened":
                story = Story.open(event)
        else:
            story.apply(event)
    return story


def rules_of(events: Iterable[RecordedEvent], rules: StoryRules | None = None) -> StoryRules:
    """Fold a stream's recorded events into (or onto) its rules."""
    state = rules if rules is not None else StoryRules()
    for event in events:
        state.accept(event.stream, event.type, event.data)
    return state

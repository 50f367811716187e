"""The news vocabulary: every event type, its strict schema, and the event envelope.

Pure domain: no I/O, nothing else of ours imported but :mod:`feedsvc.errors`.

A story is one stream. Every type is a pydantic model that refuses unknown fields and
wrong types; :func:`validate_new_event` turns any refusal into a
:class:`~feedsvc.errors.ValidationFailed` whose problems name each bad field by JSON
pointer. Types evolve by schema version: an old version still loads, because
:func:`upcast` lifts its data to the current shape on read, so the log is never
rewritten.
"""

from __future__ import annotations

import calendar
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property, lru_cache
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from feedsvc.errors import FieldProblem, ValidationFailed

SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
_SLUG_RE = re.compile(SLUG_PATTERN)
_SPACE_RE = re.compile(r"\s")
_XML_ILLEGAL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class Precision(StrEnum):
    """How precisely the article dates a development."""

    YEAR = "year"
    MONTH = "month"
    DAY = "day"
    INSTANT = "instant"


_YEAR_RE = re.compile(r"^(\d{4})$")
_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
_DAY_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_INSTANT_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})$"
)
OCCURRED_PATTERN = (
    r"^\d{4}(?:-\d{2}(?:-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?"
    r"(?:Z|[+-]\d{2}:\d{2}))?)?)?$"
)


@dataclass(frozen=True, order=True)
class Occurred:
    """When something happened in the world, at the precision the source gives.

    ``text`` is the canonical lexical form (``2013``, ``2016-11``, ``2017-10-12`` or an
    RFC 3339 instant with an offset); ``start`` is the first instant it can mean, in UTC,
    used for ordering only.
    """

    start: datetime
    precision: Precision
    text: str

    @classmethod
    def parse(cls, text: str) -> Occurred:
        """Parse the lexical form; raise ``ValueError`` naming what is wrong."""
        if not isinstance(text, str):
            raise ValueError("must be a string")
        return _parse_occurred(text)

    @classmethod
    def _parse(cls, text: str) -> Occurred:
        try:
            if m := _YEAR_RE.match(text):
                return cls(_utc(int(m[1]), 1, 1), Precision.YEAR, text)
            if m := _MONTH_RE.match(text):
                return cls(_utc(int(m[1]), int(m[2]), 1), Precision.MONTH, text)
            if m := _DAY_RE.match(text):
                start = _utc(int(m[1]), int(m[2]), int(m[3]))
                return cls(start, Precision.DAY, text)
        except ValueError as e:
            raise ValueError(f"{text!r} is not a real date ({e})") from None
        if _INSTANT_RE.match(text):
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError as e:
                raise ValueError(f"{text!r} is not a real time ({e})") from None
            return cls(moment.astimezone(UTC), Precision.INSTANT, text)
        if re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$", text):
            raise ValueError(f"{text!r} has no UTC offset; write it with Z or +HH:MM")
        raise ValueError(
            f"{text!r} is not YYYY, YYYY-MM, YYYY-MM-DD or an RFC 3339 time with offset"
        )

    def human(self) -> str:
        """The date as a reader sees it, no more precise than the source."""
        s = self.start
        if self.precision is Precision.YEAR:
            return f"{s.year}"
        if self.precision is Precision.MONTH:
            return f"{calendar.month_name[s.month]} {s.year}"
        if self.precision is Precision.DAY:
            return f"{calendar.month_name[s.month]} {s.day}, {s.year}"
        return s.strftime("%B %-d, %Y, %H:%M UTC")


@lru_cache(maxsize=8192)
def _parse_occurred(text: str) -> Occurred:
    # the same dates recur (a day's developments): parse each spelling once
    return Occurred._parse(text)


def _utc(year: int, month: int, day: int) -> datetime:
    if year < 1:
        raise ValueError("year must be 0001 or later")
    return datetime(year, month, day, tzinfo=UTC)


def _check_occurred(value: str) -> str:
    Occurred.parse(value)
    return value


_URL_RE = re.compile(r"^https?://(?:[^\s/?#@]+@)?[^\s/?#@:]+(?::\d+)?(?:[/?#]\S*)?$")


def _check_url(value: str) -> str:
    if not _URL_RE.match(value):
        if _SPACE_RE.search(value):
            raise ValueError("must not contain whitespace")
        raise ValueError("must be an absolute http(s) URL")
    return value


_CANONICAL_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
"""A UUID in its usual spelling: accepted without parsing it (``uuid.UUID`` takes
other spellings too, which are checked by it)."""


def _check_uuid(value: str) -> str:
    if _CANONICAL_UUID_RE.fullmatch(value):
        return value
    try:
        uuid.UUID(value)
    except ValueError:
        raise ValueError("must be a UUID") from None
    return value


def _check_text(value: str) -> str:
    if not value.strip():
        raise ValueError(NOT_BLANK_MESSAGE)
    return value


def _check_label(value: str) -> str:
    _check_text(value)
    if not slugify(value):
        raise ValueError("must contain at least one letter or digit")
    return value


def _check_slug(value: str) -> str:
    if not _SLUG_RE.match(value):
        raise ValueError(f"{value!r} is not a slug: use lowercase a-z, 0-9 and single hyphens")
    return value


OccurredText = Annotated[
    str,
    Field(
        json_schema_extra={"pattern": OCCURRED_PATTERN},
        examples=["2016-11", "2017-10-12"],
    ),
    AfterValidator(_check_occurred),
]
Slug = Annotated[
    str,
    StringConstraints(min_length=1, max_length=120),
    Field(json_schema_extra={"pattern": SLUG_PATTERN}),
    AfterValidator(_check_slug),
]
Url = Annotated[
    str,
    StringConstraints(max_length=2000, pattern=r"^https?://"),
    Field(json_schema_extra={"format": "uri"}),
    AfterValidator(_check_url),
]
UuidText = Annotated[
    str,
    Field(json_schema_extra={"format": "uuid"}),
    AfterValidator(_check_uuid),
]
NOT_BLANK = r"[^\s\x1c-\x1f]"
r"""A character ``str.strip()`` keeps: checked by pydantic-core, not a Python validator
(Rust's ``\s`` is Python's whitespace but for U+001C–U+001F)."""
NOT_BLANK_MESSAGE = "must not be empty or only whitespace"
Headline = Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=NOT_BLANK)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200_000, pattern=NOT_BLANK)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NOT_BLANK)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=80), AfterValidator(_check_label)]
HEADLINE_DESCRIPTION = (
    "Plain text, as every feed and page shows it: markup in it is removed, never shown"
    " (script, style and the other elements a body loses whole go with their content),"
    " and entities are decoded."
)
BODY_DESCRIPTION = (
    "HTML kept to an allowlist, or plain text (blank lines separate paragraphs) when it"
    " has no tags. Kept: p, a (href), em, strong, blockquote, ul, ol, li, br, time"
    " (datetime), cite, h2, h3; links only with http, https or mailto URLs, relative ones"
    " resolved against the story page. script, style, template, noscript, iframe,"
    " noembed, noframes, xmp, plaintext, textarea and title are removed with their"
    " content; every other element is unwrapped, its text kept (blocks such as div or"
    " table become paragraphs), and every other attribute is removed."
)


class _Model(BaseModel):
    """Strict, frozen, closed: unknown fields and coercions are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DevelopmentKind(StrEnum):
    """What sort of development a story step is."""

    STATEMENT = "statement"
    LETTER = "letter"
    RULING = "ruling"
    LAW = "law"
    RALLY = "rally"
    EXECUTIVE_ACTION = "executive-action"
    PRESS_RELEASE = "press-release"
    ANNOUNCEMENT = "announcement"
    REPORT = "report"
    OTHER = "other"


class Source(_Model):
    """Where a development is documented."""

    url: Url
    title: Name
    publisher: Name | None = None


class Person(_Model):
    """Someone a development concerns, with the role they had then."""

    name: Name
    role: Name | None = None


class StoryOpened(_Model):
    """A new story begins. Its slug is its stream and the last part of its URLs."""

    slug: Slug
    title: Headline
    summary: Text
    topics: list[Label] = Field(default_factory=list, max_length=50)
    places: list[Name] = Field(default_factory=list, max_length=50)


class DevelopmentReportedV1(_Model):
    """Version 1 of ``development.reported``: sources were bare URLs."""

    development_id: Slug
    headline: Headline = Field(description=HEADLINE_DESCRIPTION)
    body: Text = Field(description=BODY_DESCRIPTION)
    kind: Annotated[DevelopmentKind, Field(strict=False)]
    sources: list[Url] = Field(default_factory=list, max_length=50)
    people: list[Person] = Field(default_factory=list, max_length=100)
    places: list[Name] = Field(default_factory=list, max_length=50)
    topics: list[Label] = Field(default_factory=list, max_length=50)


class DevelopmentReported(_Model):
    """A development of the story: what happened, when (the envelope's
    ``occurred_at``), who was involved, and where it is documented."""

    development_id: Slug
    headline: Headline = Field(description=HEADLINE_DESCRIPTION)
    body: Text = Field(description=BODY_DESCRIPTION)
    kind: Annotated[DevelopmentKind, Field(strict=False)]
    sources: list[Source] = Field(default_factory=list, max_length=50)
    people: list[Person] = Field(default_factory=list, max_length=100)
    organizations: list[Name] = Field(default_factory=list, max_length=100)
    places: list[Name] = Field(default_factory=list, max_length=50)
    topics: list[Label] = Field(default_factory=list, max_length=50)


class QuoteAttributed(_Model):
    """Words attributed to a speaker, belonging to one development."""

    quote_id: Slug
    development_id: Slug
    speaker: Name
    role: Name | None = None
    text: Text


class DevelopmentChanges(_Model):
    """The fields a correction replaces; at least one."""

    headline: Headline | None = Field(default=None, description=HEADLINE_DESCRIPTION)
    body: Text | None = Field(default=None, description=BODY_DESCRIPTION)
    kind: Annotated[DevelopmentKind, Field(strict=False)] | None = None
    occurred_at: OccurredText | None = None
    sources: list[Source] | None = None
    people: list[Person] | None = None
    organizations: list[Name] | None = None
    places: list[Name] | None = None
    topics: list[Label] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> DevelopmentChanges:
        if not self.model_fields_set:
            raise ValueError("a correction must change at least one field")
        return self


class DevelopmentCorrected(_Model):
    """A development was wrong; ``note`` is the published correction note."""

    development_id: Slug
    changes: DevelopmentChanges
    note: Text


class DevelopmentRetracted(_Model):
    """A development is withdrawn. It stays in the feed, marked retracted."""

    development_id: Slug
    reason: Text


class StoryRetitled(_Model):
    """The story's title (and optionally summary) changes."""

    title: Headline
    summary: Text | None = None


class StoryRetagged(_Model):
    """The story's topics and places are replaced."""

    topics: list[Label] = Field(max_length=50)
    places: list[Name] = Field(default_factory=list, max_length=50)


class StoryClosed(_Model):
    """No more developments are expected."""

    reason: Text | None = None


class StoryReopened(_Model):
    """A closed story develops again."""

    reason: Text | None = None


class FollowUpExpected(_Model):
    """Something is pending: a decision, a ruling, a reply."""

    followup_id: Slug
    description: Text
    subjects: list[Name] = Field(default_factory=list, max_length=50)
    development_id: Slug | None = None


class FollowUpResolved(_Model):
    """A pending follow-up came about, in the named development (if any)."""

    followup_id: Slug
    development_id: Slug | None = None
    note: Text | None = None


class EventMetadata(_Model):
    """Who appended an event and why: never part of the story, always kept."""

    actor: Name | None = None
    correlation_id: UuidText | None = None
    causation_id: UuidText | None = None
    source: Name | None = None


@dataclass(frozen=True)
class EventType:
    """One (type, schema version) pair and its model."""

    name: str
    version: int
    model: type[BaseModel]
    description: str


def _types() -> dict[tuple[str, int], EventType]:
    table: list[tuple[str, int, type[BaseModel]]] = [
        ("story.opened", 1, StoryOpened),
        ("development.reported", 1, DevelopmentReportedV1),
        ("development.reported", 2, DevelopmentReported),
        ("quote.attributed", 1, QuoteAttributed),
        ("development.corrected", 1, DevelopmentCorrected),
        ("development.retracted", 1, DevelopmentRetracted),
        ("story.retitled", 1, StoryRetitled),
        ("story.retagged", 1, StoryRetagged),
        ("story.closed", 1, StoryClosed),
        ("story.reopened", 1, StoryReopened),
        ("followup.expected", 1, FollowUpExpected),
        ("followup.resolved", 1, FollowUpResolved),
    ]
    return {
        (n, v): EventType(n, v, m, (m.__doc__ or "").strip().split("\n\n")[0]) for n, v, m in table
    }


EVENT_TYPES: dict[tuple[str, int], EventType] = _types()
CURRENT_VERSIONS: dict[str, int] = {}
for _name, _version in EVENT_TYPES:
    CURRENT_VERSIONS[_name] = max(_version, CURRENT_VERSIONS.get(_name, 0))


def _reported_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    out["sources"] = [
        {"url": u, "title": urlsplit(u).hostname or u} for u in data.get("sources", [])
    ]
    return out


UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("development.reported", 1): _reported_v1_to_v2,
}


def upcast(type_name: str, schema_version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Lift stored data of an old schema version to the current shape."""
    version = schema_version
    while version < CURRENT_VERSIONS[type_name]:
        data = UPCASTERS[(type_name, version)](data)
        version += 1
    return data


@lru_cache(maxsize=65536)
def slugify(label: str) -> str:
    """The URL form of a topic label: ``federal grants`` → ``federal-grants``."""
    return "-".join(re.findall(r"[a-z0-9]+", label.lower()))


def problems_of(error: ValidationError, prefix: str = "") -> list[FieldProblem]:
    """Turn a pydantic error into one problem per bad field, by JSON pointer."""
    found: list[FieldProblem] = []
    for item in error.errors(include_url=False):
        loc = [str(p) for p in item["loc"] if not str(p).startswith("function-")]
        # pydantic names the constraint wrappers it passed through; drop them
        loc = [p for p in loc if p not in {"str", "list[str]"}]
        pointer = prefix + "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in loc)
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "string_pattern_mismatch" and item["ctx"]["pattern"] == NOT_BLANK:
            message = NOT_BLANK_MESSAGE
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        found.append(FieldProblem(pointer, message))
    return found


class NewEventIn(_Model):
    """An event as a client submits it, before the log gives it a place."""

    id: UuidText | None = None
    type: str
    schema_version: int | None = Field(default=None, ge=1)
    occurred_at: OccurredText
    data: dict[str, Any]
    metadata: EventMetadata = Field(default_factory=EventMetadata)


@dataclass(frozen=True)
class ValidEvent:
    """An event whose data passed its schema, in canonical JSON form."""

    id: str
    type: str
    schema_version: int
    occurred_at: str
    data_json: str
    metadata_json: str
    model: BaseModel
    client_id: bool = False
    """Whether the client chose the id (so the append may be a retry)."""

    @cached_property
    def occurred(self) -> Occurred:
        """The parsed ``occurred_at``."""
        return Occurred.parse(self.occurred_at)


def canonical_json(value: Any) -> str:
    """The one JSON spelling feedsvc stores: compact, keys in model order."""
    return orjson.dumps(value).decode()


def model_json(model: BaseModel) -> str:
    """Canonical JSON of a model, leaving out optional fields that are unset.

    pydantic-core's serializer writes the same bytes as :func:`canonical_json` of the
    model's JSON dump (compact, model order, UTF-8 unescaped; the models hold only
    strings, integers, lists and models), in one step."""
    return model.model_dump_json(exclude_unset=True)


def validate_data(
    type_name: str, schema_version: int, data: Any, prefix: str = "/data"
) -> BaseModel:
    """Validate ``data`` against its type's schema version."""
    if (type_name, schema_version) not in EVENT_TYPES:
        if type_name not in CURRENT_VERSIONS:
            known = ", ".join(sorted(CURRENT_VERSIONS))
            raise ValidationFailed(
                [
                    FieldProblem(
                        prefix.rsplit("/", 1)[0] + "/type",
                        f"unknown event type {type_name!r}; known: {known}",
                    )
                ]
            )
        raise ValidationFailed(
            [
                FieldProblem(
                    prefix.rsplit("/", 1)[0] + "/schema_version",
                    f"{type_name} has no schema version {schema_version}",
                )
            ]
        )
    model = EVENT_TYPES[(type_name, schema_version)].model
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ValidationFailed(problems_of(e, prefix)) from None


def validate_new_event(raw: Any, prefix: str = "") -> ValidEvent:
    """Check one submitted event completely; raise naming every bad field."""
    if not isinstance(raw, dict):
        raise ValidationFailed([FieldProblem(prefix, "an event must be a JSON object")])
    try:
        envelope = NewEventIn.model_validate(raw)
    except ValidationError as e:
        problems = problems_of(e, prefix)
        # also report problems inside data when its type is known
        if isinstance(raw.get("type"), str) and isinstance(raw.get("data"), dict):
            try:
                version = raw.get("schema_version") or CURRENT_VERSIONS.get(raw["type"], 1)
                if isinstance(version, int):
                    validate_data(raw["type"], version, raw["data"], prefix + "/data")
            except ValidationFailed as inner:
                problems += inner.problems
        raise ValidationFailed(problems) from None
    version = envelope.schema_version or CURRENT_VERSIONS.get(envelope.type, 1)
    model = validate_data(envelope.type, version, envelope.data, prefix + "/data")
    return ValidEvent(
        id=envelope.id or str(uuid.uuid4()),
        type=envelope.type,
        schema_version=version,
        occurred_at=envelope.occurred_at,
        data_json=model_json(model),
        metadata_json=model_json(envelope.metadata),
        model=model,
        client_id=envelope.id is not None,
    )


def strip_xml_illegal(text: str) -> str:
    """Remove characters XML 1.0 cannot carry (controls, lone surrogates, U+FFFE/F)."""
    return _XML_ILLEGAL_RE.sub("", text)


def is_slug(value: str) -> bool:
    """Whether ``value`` is a valid story or development slug."""
    return bool(_SLUG_RE.match(value))


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as the log holds it: the envelope with its place in the log.

    ``data_json`` and ``metadata_json`` are the exact stored text, so an export
    reproduces them byte for byte; :attr:`data` gives the data upcast to the current
    schema version of its type.
    """

    position: int
    id: str
    stream: str
    version: int
    type: str
    schema_version: int
    occurred_at: str
    recorded_at: str
    data_json: str
    metadata_json: str

    @property
    def data(self) -> dict[str, Any]:
        """The data, lifted to the current schema version of its type."""
        raw: dict[str, Any] = orjson.loads(self.data_json)
        return upcast(self.type, self.schema_version, raw)

    def data_only(self) -> dict[str, Any]:
        """The data exactly as stored, at its own schema version."""
        raw: dict[str, Any] = orjson.loads(self.data_json)
        return raw

    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata as a dict."""
        meta: dict[str, Any] = orjson.loads(self.metadata_json)
        return meta

    @property
    def occurred(self) -> Occurred:
        """The parsed ``occurred_at``."""
        return Occurred.parse(self.occurred_at)

    def as_dict(self) -> dict[str, Any]:
        """The export form: one NDJSON line's object, data and metadata verbatim."""
        return export_dict(*self.row())

    def to_json(self) -> bytes:
        """One line of the export format, without the newline."""
        return orjson.dumps(self.as_dict())

    def row(self) -> EventRow:
        """The fields as a tuple, in order (what :func:`export_dict` takes)."""
        return (
            self.position,
            self.id,
            self.stream,
            self.version,
            self.type,
            self.schema_version,
            self.occurred_at,
            self.recorded_at,
            self.data_json,
            self.metadata_json,
        )


EventRow = tuple[int, str, str, int, str, int, str, str, str, str]
"""A :class:`RecordedEvent`'s fields in order, as the log's rows hold them."""


def export_dict(
    position: int,
    id: str,
    stream: str,
    version: int,
    type: str,
    schema_version: int,
    occurred_at: str,
    recorded_at: str,
    data_json: str,
    metadata_json: str,
) -> dict[str, Any]:
    """The export form of one event from its fields (``export_dict(*row)`` for a row
    of the log): data and metadata verbatim, as JSON fragments."""
    return {
        "position": position,
        "id": id,
        "stream": stream,
        "version": version,
        "type": type,
        "schema_version": schema_version,
        "occurred_at": occurred_at,
        "recorded_at": recorded_at,
        "data": orjson.Fragment(data_json),
        "metadata": orjson.Fragment(metadata_json),
    }


RECORDED_AT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_recorded_at(moment: datetime) -> str:
    """The one spelling of ``recorded_at``: UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime(RECORDED_AT_FORMAT)


def parse_recorded_at(text: str) -> datetime:
    """Parse a ``recorded_at`` written by :func:`format_recorded_at`."""
    if len(text) == 27 and text[10] == "T" and text[19] == "." and text[26] == "Z":
        return datetime.fromisoformat(text)  # the same result, several times faster
    return datetime.strptime(text, RECORDED_AT_FORMAT).replace(tzinfo=UTC)

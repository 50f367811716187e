"""What the HTTP API takes in its query strings and answers in its bodies, as pydantic
models.

The handlers parse their query parameters with these models and build their JSON
answers with them; :mod:`feedsvc.web.openapi` generates the parameters and response
schemas of the OpenAPI document from the same models, so the document cannot drift
from what the service does. Limits that come from the settings (the page size, the
long-poll wait) are fields of models made per :class:`~feedsvc.settings.Settings`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from multidict import MultiDictProxy
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
)

from feedsvc.domain.events import CURRENT_VERSIONS, SLUG_PATTERN
from feedsvc.errors import FieldProblem, ValidationFailed
from feedsvc.settings import Settings

MAX_POSITION = 2**63 - 1
"""The largest position or version a query may name (SQLite's largest integer)."""
DEFAULT_LIMIT = 100
"""Events in a page when ``limit`` is not given (or the page size, if smaller)."""

Slug = Annotated[str, Field(pattern=SLUG_PATTERN, max_length=120)]


def _known_type(name: str) -> str:
    if name not in CURRENT_VERSIONS:
        raise ValueError(
            f"unknown event type {name!r}; known: {', '.join(sorted(CURRENT_VERSIONS))}"
        )
    return name


EventTypeName = Annotated[
    str,
    AfterValidator(_known_type),
    WithJsonSchema({"type": "string", "enum": sorted(CURRENT_VERSIONS)}),
]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> bytes:
        """The answer's body."""
        return self.model_dump_json().encode()


# -- answers ----------------------------------------------------------------------------


class AppendedEvent(_Answer):
    """One appended event: its id and where it is in the log."""

    id: str = Field(description="The event's id (yours, or generated).")
    position: int = Field(ge=1, description="Its position in the global log.")


class AppendWarning(_Answer):
    """A field whose text will not be shown exactly as sent."""

    pointer: str = Field(description="The field, as a JSON pointer into the request body.")
    detail: str = Field(description="What is shown instead, and why.")


class AppendResult(_Answer):
    """The answer to an append (201) or to its replay (200)."""

    stream: Slug
    version: int = Field(ge=1, description="The stream's version after the append.")
    events: list[AppendedEvent]
    recorded_at: str = Field(
        json_schema_extra={"format": "date-time"},
        description="When the log recorded the first of these events (each next one is "
        "recorded at least a microsecond later).",
    )
    replayed: bool = Field(
        description="True when these events were already appended: nothing was written "
        "and this is the original result."
    )
    warnings: list[AppendWarning] = Field(
        default_factory=list,
        description="Fields whose text feeds and pages will not show exactly as sent "
        "(markup removed from a headline, elements outside a body's allowlist). Empty "
        "when everything is shown as sent.",
    )


class RecordedEvent(_Answer):
    """An event as the log holds it (the export format)."""

    position: int = Field(ge=1)
    id: str = Field(json_schema_extra={"format": "uuid"})
    stream: Slug
    version: int = Field(ge=1)
    type: str
    schema_version: int = Field(ge=1)
    occurred_at: str
    recorded_at: str = Field(json_schema_extra={"format": "date-time"})
    data: dict[str, Any] = Field(description="As appended, at its own schema version.")
    metadata: dict[str, Any]


class LogCursor(_Answer):
    """Where a page of the global log ends."""

    next: int = Field(
        ge=0,
        description="Pass as `after` to read on; it moves past events the filters left out.",
    )
    head: int = Field(ge=0, description="The log's last position when the page was read.")


class EventPage(LogCursor):
    """A page of the global log."""

    events: list[RecordedEvent]

    @staticmethod
    def encode(events_json: bytes, cursor: LogCursor) -> bytes:
        """The page from its events already encoded as JSON (comma-separated, as the
        store answers them) and its cursor: the same bytes the model would give."""
        return b'{"events":[' + events_json + b"]," + cursor.to_json()[1:]


class StreamCursor(_Answer):
    """Where a page of one story's stream ends."""

    stream: Slug
    version: int = Field(ge=1, description="The stream's version (also its ETag).")
    next: int | None = Field(
        ge=1, description="The from_version of the next page; null at the end."
    )


class StreamPage(StreamCursor):
    """A page of one story's stream."""

    events: list[RecordedEvent]

    @staticmethod
    def encode(events_json: bytes, cursor: StreamCursor) -> bytes:
        """The page from its events already encoded as JSON (comma-separated; data
        and metadata verbatim, as the log holds them) and its cursor."""
        return b'{"events":[' + events_json + b"]," + cursor.to_json()[1:]


class Health(_Answer):
    """Liveness."""

    status: Literal["ok"] = "ok"


class Ready(_Answer):
    """Readiness: the database answers and the projections keep up."""

    status: Literal["ready"] = "ready"
    head: int = Field(ge=0)
    projection_lag: int | None = Field(
        description="Events the projections are behind the log (null: no projections)."
    )


class ProblemItem(BaseModel):
    """One bad value: exactly one of ``pointer`` (into the body), ``parameter`` (a query
    parameter) or ``header`` says where, ``detail`` what is wrong."""

    model_config = ConfigDict(extra="forbid")

    pointer: str | None = None
    parameter: str | None = None
    header: str | None = None
    detail: str


class Problem(BaseModel):
    """RFC 9457 problem details, with the members feedsvc adds."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(json_schema_extra={"format": "uri-reference"})
    title: str
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="What to fix.")
    errors: list[ProblemItem] | None = Field(
        default=None, description="Every bad value, where it is and what is wrong."
    )
    current_version: int | None = Field(
        default=None, ge=0, description="The stream's version now (409, 412)."
    )
    expected_version: int | str | None = Field(
        default=None, description="The version the request expected (409, 412)."
    )
    event_id: str | None = Field(default=None, description="The reused event id (409).")
    max_body_bytes: int | None = Field(default=None, description="The body limit (413).")
    max_events_per_request: int | None = Field(default=None, description="The events limit (413).")
    checks: dict[str, str] | None = Field(default=None, description="What failed (503).")
    head: int | None = Field(default=None, description="The log's head (503).")
    projection_lag: int | None = Field(default=None, description="How far behind (503).")

    def to_json(self) -> bytes:
        """The problem's body, without the members it does not have."""
        return self.model_dump_json(exclude_none=True).encode()


ANSWER_MODELS: tuple[type[BaseModel], ...] = (
    AppendResult,
    EventPage,
    StreamPage,
    Health,
    Ready,
    Problem,
)
"""Every body the API answers with, for the OpenAPI document."""


# -- query parameters -------------------------------------------------------------------


class Query(BaseModel):
    """Base of the query models: unknown parameters are refused, values are strings
    parsed as the field says."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    LISTS: ClassVar[tuple[str, ...]] = ()
    """The parameters that may repeat (a list each)."""

    @classmethod
    def parse(cls, query: MultiDictProxy[str] | Mapping[str, str]) -> Any:
        """The query's parameters, or a 400 naming each bad one. An empty value counts
        as not given."""
        raw: dict[str, Any] = {}
        for name in query:
            if name in raw:
                continue
            if name in cls.LISTS:
                many = query.getall(name) if isinstance(query, MultiDictProxy) else [query[name]]
                values = [v for v in many if v]
                if values:
                    raw[name] = values
            elif query[name] != "":
                raw[name] = query[name]
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ValidationFailed(_parameter_problems(cls, e), what="request") from None


def _parameter_problems(model: type[Query], error: ValidationError) -> list[FieldProblem]:
    known = ", ".join(model.model_fields)
    problems: list[FieldProblem] = []
    for item in error.errors(include_url=False):
        name = str(item["loc"][0]) if item["loc"] else ""
        if item["type"] == "extra_forbidden":
            message = f"unknown parameter; this resource takes {known}"
        else:
            message = f"{item['msg']} (got {item['input']!r})"
        problems.append(FieldProblem(name, message, "parameter"))
    return problems


_Position = Annotated[
    int, Field(ge=0, le=MAX_POSITION, description="Read events after this position.")
]
_Types = Annotated[
    list[EventTypeName],
    Field(description="Only events of these types (repeat the parameter)."),
]
_Stream = Annotated[Slug | None, Field(description="Only the events of this story.")]


def _limit(max_page_size: int) -> Any:
    return Field(
        default=min(DEFAULT_LIMIT, max_page_size),
        ge=1,
        le=max_page_size,
        description="Most events in the page.",
    )


@functools.lru_cache(maxsize=16)
def _log_query(max_page_size: int, max_wait_s: float) -> type[Query]:
    model: type[Query] = create_model(
        "LogQuery",
        __base__=Query,
        __doc__="The parameters of ``GET /api/events``.",
        after=(_Position, 0),
        limit=(int, _limit(max_page_size)),
        wait=(
            float,
            Field(
                default=0.0,
                ge=0,
                allow_inf_nan=False,
                description="Long poll: with no event to answer, wait up to this many "
                f"seconds for one (at most {max_wait_s:g}; more is taken as that).",
            ),
        ),
        type=(_Types, []),
        stream=(_Stream, None),
    )
    model.LISTS = ("type",)
    return model


def log_query(settings: Settings) -> type[Query]:
    """The parameters of ``GET /api/events`` under ``settings``."""
    return _log_query(settings.max_page_size, settings.max_wait_s)


@functools.lru_cache(maxsize=16)
def _stream_query(max_page_size: int) -> type[Query]:
    return create_model(
        "StreamQuery",
        __base__=Query,
        __doc__="The parameters of ``GET /api/stories/{slug}/events``.",
        from_version=(
            int,
            Field(default=1, ge=1, le=MAX_POSITION, description="First stream version to answer."),
        ),
        limit=(int, _limit(max_page_size)),
    )


def stream_query(settings: Settings) -> type[Query]:
    """The parameters of ``GET /api/stories/{slug}/events`` under ``settings``."""
    return _stream_query(settings.max_page_size)


class LiveQuery(Query):
    """The parameters of ``GET /api/events/live``."""

    LISTS: ClassVar[tuple[str, ...]] = ("type",)

    after: _Position | None = Field(
        default=None,
        description="Start after this position (Last-Event-ID takes precedence); "
        "without either, the stream starts at the current head.",
    )
    type: _Types = []
    stream: _Stream = None


class DocumentQuery(Query):
    """The parameters of every feed and page."""

    as_of: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="Show what the log knew at this recorded time (RFC 3339 with offset).",
    )

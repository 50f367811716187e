"""What a feed or page is made of, independent of its format, and where it lives.

The projections build these views from folded stories; the renderers turn them into
bytes. Every URL here is absolute, built from the configured public base URL, and
every time comes from the events (never the wall clock).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from feedsvc.domain.story import Development, Story
from feedsvc.urls import Route, document_routes

if TYPE_CHECKING:
    from feedsvc.rendering.feeds import EntryCache

# A fixed namespace: entry ids derive from it and the story and development slugs, so
# they are the same in every format and scope and survive a move to another host name.
ENTRY_NAMESPACE = uuid.UUID("6f1c1f52-5b0a-4b8e-9a59-3a3f2f0c7d11")


class FeedFormat(StrEnum):
    """The three feed formats, by the file extension in their URLs."""

    ATOM = "atom"
    RSS = "rss"
    JSON = "json"

    @property
    def content_type(self) -> str:
        """The media type served for this format, with charset."""
        return {
            FeedFormat.ATOM: "application/atom+xml; charset=utf-8",
            FeedFormat.RSS: "application/rss+xml; charset=utf-8",
            FeedFormat.JSON: "application/feed+json; charset=utf-8",
        }[self]


class ScopeKind(StrEnum):
    """Which developments a feed holds."""

    ALL = "all"
    STORY = "stories"
    TOPIC = "topics"


@dataclass(frozen=True, order=True)
class Scope:
    """One feed scope: every story, one story (by slug) or one topic (by slug)."""

    kind: ScopeKind
    key: str = ""

    def __hash__(self) -> int:
        # the key alone: cheaper than hashing the enum, and equal scopes have equal keys
        return hash(self.key)

    @property
    def name(self) -> str:
        """A stable text key for tables: ``all``, ``stories/<slug>``, ``topics/<slug>``."""
        return "all" if self.kind is ScopeKind.ALL else f"{self.kind.value}/{self.key}"

    @classmethod
    def from_name(cls, name: str) -> Scope:
        """Inverse of :attr:`name`."""
        if name == "all":
            return cls(ScopeKind.ALL)
        kind, _, key = name.partition("/")
        return cls(ScopeKind(kind), key)


def feed_titles(scope: Scope, label: str, story: Story | None) -> tuple[str, str]:
    """A scope's feed title and subtitle (``story``: the story of a story's scope)."""
    if scope.kind is ScopeKind.STORY:
        assert story is not None, scope
        return story.title, story.summary
    if scope.kind is ScopeKind.TOPIC:
        return f"Topic: {label}", f"Every development tagged {label}, newest first."
    return "All stories", "Every development of every story, newest first."


def entry_id(story_slug: str, development_id: str) -> str:
    """The permanent, globally unique id of a development's feed entry."""
    return "urn:uuid:" + str(uuid.uuid5(ENTRY_NAMESPACE, f"{story_slug}/{development_id}"))


def feed_id(scope: Scope) -> str:
    """The permanent id of a scope's feed (the same for all its archive pages)."""
    return "urn:uuid:" + str(uuid.uuid5(ENTRY_NAMESPACE, f"feed:{scope.name}"))


_DOCUMENTS: dict[tuple[str, str], Route] = {
    (route.scope, route.document): route for route in document_routes() if route.document
}
"""The document routes by (scope kind, document kind): ``("topics", "archive")``."""


@dataclass(frozen=True)
class Urls:
    """Every public URL of the service, built from the configured base URL and the
    URL scheme declared once in :mod:`feedsvc.urls` (whose :func:`~feedsvc.urls.parse_path`
    takes these paths apart again).
    """

    base: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", self.base.rstrip("/"))

    def index(self) -> str:
        """The index page."""
        return self.base + _DOCUMENTS["all", "index"].path()

    def story_page(self, slug: str) -> str:
        """A story's HTML timeline."""
        return self.base + _DOCUMENTS["stories", "page"].path(slug=slug)

    def topic_page(self, topic: str) -> str:
        """A topic's HTML page."""
        return self.base + _DOCUMENTS["topics", "page"].path(topic=topic)

    def html(self, scope: Scope) -> str:
        """The HTML page a scope's feed is the alternate of."""
        if scope.kind is ScopeKind.STORY:
            return self.story_page(scope.key)
        if scope.kind is ScopeKind.TOPIC:
            return self.topic_page(scope.key)
        return self.index()

    def feed_path(self, scope: Scope, fmt: FeedFormat, archive: int | None = None) -> str:
        """The path (no host) of a feed document."""
        route = _DOCUMENTS[scope.kind.value, "feed" if archive is None else "archive"]
        return route.path(slug=scope.key, topic=scope.key, fmt=fmt.value, page=archive)

    def feed(self, scope: Scope, fmt: FeedFormat, archive: int | None = None) -> str:
        """The absolute URL of a feed document."""
        return self.base + self.feed_path(scope, fmt, archive)


class EntryView:
    """One entry: a development and the story it belongs to.

    Given either the development, or its id and version (its ``updated_position``) with
    a function that reads that version: then it is read only when something asks for
    it, which a document whose entries are all rendered already never does.
    """

    __slots__ = ("_development", "_load", "development_id", "story", "version")

    def __init__(
        self,
        story: Story,
        development: Development | None = None,
        *,
        development_id: str = "",
        version: int = 0,
        load: Callable[[], Development] | None = None,
    ) -> None:
        self.story = story
        self._development = development
        self._load = load
        if development is not None:
            development_id, version = development.development_id, development.updated_position
        elif load is None:
            raise TypeError("an entry needs its development or a way to read it")
        self.development_id = development_id
        self.version = version

    @property
    def development(self) -> Development:
        """The development, read now if it was not given."""
        if self._development is None:
            assert self._load is not None
            self._development = self._load()
        return self._development

    def __repr__(self) -> str:
        return f"EntryView({self.story.slug!r}, {self.development_id!r}, {self.version})"


@dataclass(frozen=True)
class FeedView:
    """Everything one feed document shows, whatever its format.

    ``entries`` are in the order the document lists them (newest change first).
    ``archive`` is the archive page number for an RFC 5005 archive document, or
    ``None`` for the subscription document; ``archive_count`` is how many full
    archive pages exist (the subscription document links ``prev-archive`` to the
    last one). ``updated`` is a ``recorded_at`` string from the events.
    ``self_query`` is the query string of a document served for a query (``as_of=…``,
    percent-encoded), which its self link then names; ``None`` for the plain document.
    The RFC 5005 links always name the plain documents.
    """

    scope: Scope
    title: str
    subtitle: str
    updated: str
    entries: list[EntryView]
    urls: Urls
    archive: int | None = None
    archive_count: int = 0
    self_query: str | None = None
    entry_cache: EntryCache | None = field(default=None, compare=False, repr=False)
    """Where entries rendered for other documents of the same read model are kept."""

    def self_url(self, fmt: FeedFormat) -> str:
        """The URL of this document in ``fmt``: its feed URL, with ``self_query`` if any."""
        url = self.urls.feed(self.scope, fmt, self.archive)
        return url if self.self_query is None else f"{url}?{self.self_query}"

"""The URL scheme of the service, declared once.

:data:`ROUTES` lists every route: its name, method, template, what it is and the
name of its handler in :mod:`feedsvc.web`. Everything else is derived from it: the
aiohttp routes (:mod:`feedsvc.web.routes`), the URLs the renderers build
(:class:`feedsvc.rendering.model.Urls`), the paths the projections take apart
(:func:`parse_path`) and the paths of the OpenAPI document (:func:`document_routes`).

The public documents (served from the read model)::

    /                                   index page (HTML)
    /stories/<slug>                     a story's timeline (HTML)
    /topics/<topic>                     a topic's developments (HTML)
    /feeds/all.<fmt>                    every story
    /feeds/stories/<slug>.<fmt>         one story
    /feeds/topics/<topic>.<fmt>         one topic
    /feeds/.../archive/<n>.<fmt>        RFC 5005 archive page n (1 = oldest)

where ``<fmt>`` is ``atom``, ``rss`` or ``json``. This module imports nothing of
feedsvc, so that the domain, rendering, projections and web may all import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, NamedTuple

DocumentKind = Literal["index", "page", "feed", "archive"]
"""What a document route serves: the index page, a story's or topic's HTML page, a
subscription feed, or an RFC 5005 archive page of a feed."""


@dataclass(frozen=True)
class Parameter:
    """A path parameter of the document routes: its name, the regular expression a
    value must match to be routed, and what it is."""

    name: str
    pattern: str
    what: str


SLUG_PATTERN = "[a-z0-9]+(?:-[a-z0-9]+)*"
"""A story slug or a topic in URL form: lowercase letters and digits, single hyphens."""

FEED_FORMATS = ("atom", "rss", "json")
"""The feed formats, by the extension in their URLs."""

PARAMETERS: dict[str, Parameter] = {
    "slug": Parameter("slug", SLUG_PATTERN, "The story's slug (its stream)."),
    "topic": Parameter("topic", SLUG_PATTERN, "A topic in URL form (lowercase, hyphens)."),
    "fmt": Parameter(
        "fmt", "|".join(FEED_FORMATS), "atom: Atom 1.0; rss: RSS 2.0; json: JSON Feed 1.1."
    ),
    "page": Parameter(
        "page",
        "[1-9][0-9]{0,17}",
        "The archive page (RFC 5005); 1 holds the oldest entries.",
    ),
}
"""The parameters of the document routes, by name. The API routes take any path
segment: their handlers check it and answer a problem naming it."""

_PARAMETER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Route:
    """One route of the service.

    ``template`` is the path with ``{name}`` parameters, as OpenAPI writes it (and
    aiohttp, for the API routes). ``handler`` names the handler in :mod:`feedsvc.web`
    as ``module.function``. A document route (``document`` set) is served from the
    read model; ``scope`` says which feed scope it belongs to (``all``, ``stories``
    or ``topics``; the index belongs to ``all``) and its parameters are constrained
    by :data:`PARAMETERS`. ``head`` is whether a GET route answers HEAD too.
    """

    name: str
    method: str
    template: str
    what: str
    handler: str
    document: DocumentKind | None = None
    scope: str = ""
    head: bool = True

    @cached_property
    def parameters(self) -> tuple[str, ...]:
        """The names of the path parameters, in the order the path has them."""
        return tuple(_PARAMETER.findall(self.template))

    @cached_property
    def aiohttp_path(self) -> str:
        """The template as aiohttp routes it: document parameters with their pattern."""
        if self.document is None:
            return self.template
        return _PARAMETER.sub(
            lambda m: "{" + m[1] + ":" + PARAMETERS[m[1]].pattern + "}", self.template
        )

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """A regular expression matching exactly the paths this route serves."""
        parts = _PARAMETER.split(self.template)
        out = []
        for i, part in enumerate(parts):
            if i % 2 == 0:
                out.append(re.escape(part))
            else:
                pattern = PARAMETERS[part].pattern if self.document else "[^{}/]+"
                out.append(f"(?P<{part}>{pattern})")
        return re.compile("".join(out) + r"\Z")

    def path(self, **values: object) -> str:
        """The path with its parameters filled in (not checked: ``topic=""`` gives
        ``/topics/``)."""
        return self.template.format(**values)

    def match(self, path: str) -> dict[str, str] | None:
        """The parameters of ``path`` if this route serves it, else None."""
        found = self.regex.match(path)
        return found.groupdict() if found else None


def _document(name: str, template: str, what: str, kind: DocumentKind, scope: str) -> Route:
    return Route(name, "GET", template, what, "feeds.serve_document", kind, scope)


ROUTES: tuple[Route, ...] = (
    Route("healthz", "GET", "/healthz", "Liveness", "ops.healthz"),
    Route("readyz", "GET", "/readyz", "Readiness: database and projection lag", "ops.readyz"),
    Route("metrics", "GET", "/metrics", "Prometheus metrics", "ops.metrics"),
    Route(
        "openapi",
        "GET",
        "/api/openapi.json",
        "This API's OpenAPI 3.1 document",
        "openapi.openapi_json",
    ),
    Route(
        "append_events",
        "POST",
        "/api/stories/{slug}/events",
        "Append events to a story",
        "api.append_events",
    ),
    Route(
        "read_stream",
        "GET",
        "/api/stories/{slug}/events",
        "Read one story's events",
        "api.read_stream",
    ),
    Route("read_log", "GET", "/api/events", "Read the global log", "api.read_log"),
    Route(
        "live",
        "GET",
        "/api/events/live",
        "The log as Server-Sent Events",
        "api.live",
        head=False,
    ),
    _document("index", "/", "Index page: every story", "index", "all"),
    _document("story_page", "/stories/{slug}", "A story's readable timeline", "page", "stories"),
    _document("topic_page", "/topics/{topic}", "The stories of one topic", "page", "topics"),
    _document("all_feed", "/feeds/all.{fmt}", "Feed of all stories", "feed", "all"),
    _document(
        "all_archive",
        "/feeds/all/archive/{page}.{fmt}",
        "Archive page of the feed of all stories",
        "archive",
        "all",
    ),
    _document("story_feed", "/feeds/stories/{slug}.{fmt}", "Feed of one story", "feed", "stories"),
    _document(
        "story_archive",
        "/feeds/stories/{slug}/archive/{page}.{fmt}",
        "Archive page of one story's feed",
        "archive",
        "stories",
    ),
    _document("topic_feed", "/feeds/topics/{topic}.{fmt}", "Feed of one topic", "feed", "topics"),
    _document(
        "topic_archive",
        "/feeds/topics/{topic}/archive/{page}.{fmt}",
        "Archive page of one topic's feed",
        "archive",
        "topics",
    ),
)
"""Every route of the service, in the order it is registered."""

BY_NAME: dict[str, Route] = {route.name: route for route in ROUTES}
"""The routes by name."""


def route(name: str) -> Route:
    """The route called ``name``."""
    return BY_NAME[name]


def document_routes() -> list[Route]:
    """The routes of the documents served from the read model (feeds and pages), in
    the order they are registered. Each has ``template`` (OpenAPI path), ``what`` (a
    summary), ``document`` (``index``, ``page``, ``feed`` or ``archive``) and
    ``parameters`` (names of :data:`PARAMETERS`)."""
    return [r for r in ROUTES if r.document is not None]


class DocumentPath(NamedTuple):
    """What a document path names. ``scope`` is ``all``, ``stories`` or ``topics``;
    ``key`` the slug or topic (empty for ``all``); ``fmt`` the feed format and
    ``page`` the archive page, None where the path has none."""

    route: str
    document: DocumentKind
    scope: str
    key: str
    fmt: str | None
    page: int | None


_FEEDS_FIRST: list[tuple[Route, DocumentKind]] = sorted(
    ((r, r.document) for r in ROUTES if r.document is not None), key=lambda rk: rk[1] != "feed"
)


def parse_path(path: str) -> DocumentPath | None:
    """What the document at ``path`` is, or None if no document route serves it.
    The inverse of the paths :class:`~feedsvc.rendering.model.Urls` builds."""
    for candidate, kind in _FEEDS_FIRST:  # feeds are asked for most
        found = candidate.regex.match(path)
        if found is None:
            continue
        values = found.groupdict()
        page = values.get("page")
        return DocumentPath(
            candidate.name,
            kind,
            candidate.scope,
            values.get("slug") or values.get("topic") or "",
            values.get("fmt"),
            int(page) if page is not None else None,
        )
    return None

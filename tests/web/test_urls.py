"""The URL scheme is one table: the app serves exactly its routes, and every URL the
renderers build is taken apart by the table's parser into what it was built from."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest

from feedsvc.rendering.model import FeedFormat, Scope, ScopeKind, Urls
from feedsvc.urls import ROUTES, DocumentPath, document_routes, parse_path
from tests.web.conftest import SEED_STREAM, Service, Start

ATOM = "{http://www.w3.org/2005/Atom}"
TOPIC = "immigration"


async def test_the_app_registers_exactly_the_routes_of_the_table(svc: Service) -> None:
    registered = {
        (route.method, resource.canonical)
        for resource in svc.app.router.resources()
        for route in resource
    }
    table = {(r.method, r.template) for r in ROUTES}
    table |= {("HEAD", r.template) for r in ROUTES if r.method == "GET" and r.head}
    assert registered == table
    assert len({r.name for r in ROUTES}) == len(ROUTES)


def _sample(route_template: str) -> str:
    return route_template.format(slug=SEED_STREAM, topic=TOPIC, fmt="atom", page=1)


async def test_every_document_route_serves_its_document(start: Start) -> None:
    svc = await start(feed_size=4)  # small enough that every feed has an archive page
    for route in document_routes():
        path = _sample(route.template)
        response = await svc.client.get(path)
        assert response.status == 200, path
        if route.document in ("feed", "archive"):
            root = ElementTree.fromstring(await response.read())
            links = {e.get("rel"): e.get("href") for e in root.iterfind(f"{ATOM}link")}
            assert links["self"] == svc.settings.public_base_url + path


SCOPES = [
    Scope(ScopeKind.ALL),
    Scope(ScopeKind.STORY, SEED_STREAM),
    Scope(ScopeKind.TOPIC, "federal-grants"),
]


@pytest.mark.parametrize("scope", SCOPES, ids=lambda s: s.name)
@pytest.mark.parametrize("fmt", list(FeedFormat))
@pytest.mark.parametrize("archive", [None, 1, 12])
def test_every_feed_url_parses_back_to_its_scope_format_and_page(
    scope: Scope, fmt: FeedFormat, archive: int | None
) -> None:
    urls = Urls("https://news.example.org/")
    path = urls.feed_path(scope, fmt, archive)
    assert urls.feed(scope, fmt, archive) == "https://news.example.org" + path
    found = parse_path(path)
    assert found is not None
    assert (ScopeKind(found.scope), found.key) == (scope.kind, scope.key)
    assert (found.fmt, found.page) == (fmt.value, archive)
    assert found.document == ("feed" if archive is None else "archive")


def test_every_page_url_parses_back_to_its_scope() -> None:
    urls = Urls("https://news.example.org")
    pages = {
        urls.index(): ("index", "all", ""),
        urls.story_page(SEED_STREAM): ("page", "stories", SEED_STREAM),
        urls.topic_page("federal-grants"): ("page", "topics", "federal-grants"),
    }
    for scope in SCOPES:
        assert urls.html(scope) in pages
    for url, (document, scope_kind, key) in pages.items():
        found = parse_path(url.removeprefix(urls.base))
        assert found is not None
        assert (found.document, found.scope, found.key) == (document, scope_kind, key)
        assert (found.fmt, found.page) == (None, None)


@pytest.mark.parametrize(
    "path",
    [
        "/feeds/all.xml",
        "/feeds/all/archive/0.atom",
        "/feeds/stories/Not-A-Slug.atom",
        "/feeds/stories/two--hyphens.rss",
        "/feeds/places/connecticut.json",
        "/stories/",
        "/stories/a/b",
        "/api/events",
        "/healthz",
    ],
)
def test_a_path_no_document_route_serves_does_not_parse(path: str) -> None:
    assert parse_path(path) is None


def test_the_parser_names_the_route_that_serves_the_path() -> None:
    assert parse_path(f"/feeds/stories/{SEED_STREAM}/archive/3.rss") == DocumentPath(
        "story_archive", "archive", "stories", SEED_STREAM, "rss", 3
    )
    for route in document_routes():
        found = parse_path(_sample(route.template))
        assert found is not None and found.route == route.name
        assert route.match(_sample(route.template)) is not None

"""Feeds and pages over a real aiohttp server: formats, scopes, caching, compression."""

from __future__ import annotations

import gzip
import json
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser
from typing import Any
from xml.etree import ElementTree

import brotli
import feedparser
import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from lxml import etree

from feedsvc.service import StoryService
from feedsvc.settings import Settings
from feedsvc.web.app import create_app
from feedsvc.web.keys import PROJECTIONS, SERVICE
from tests.conftest import JSONFEED_SCHEMA, SEED_STREAM, reported
from tests.web.conftest import Service

Client = TestClient[web.Request, web.Application]
ClientMaker = Callable[[web.Application], Awaitable[Client]]
JSONFEED = json.loads(JSONFEED_SCHEMA.read_text())
SCOPES = ["/feeds/all", f"/feeds/stories/{SEED_STREAM}", "/feeds/topics/immigration"]
TYPES = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
}


@pytest.fixture
async def client(aiohttp_client: ClientMaker, settings: Settings) -> Client:
    """A real server on loopback, seeded, projections started."""
    return await aiohttp_client(create_app(settings))


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
async def test_every_scope_and_format_is_valid(client: Client, scope: str, fmt: str) -> None:
    response = await client.get(f"{scope}.{fmt}")
    assert response.status == 200
    assert response.headers["Content-Type"] == TYPES[fmt]
    body = await response.read()
    if fmt == "json":
        doc = json.loads(body)
        jsonschema.validate(doc, JSONFEED)
        assert doc["feed_url"] == f"http://127.0.0.1:8080{scope}.json"
        assert doc["items"]
        distinct_updated(body, fmt)
    else:
        feed = feedparser.parse(body)
        assert not feed.bozo, feed.get("bozo_exception")
        assert feed.entries
        assert all(e.link.startswith("http://127.0.0.1:8080/stories/") for e in feed.entries)
        if fmt == "atom":
            distinct_updated(body, fmt)


async def test_entry_ids_are_the_same_in_every_format_and_scope(client: Client) -> None:
    ids = []
    for scope in SCOPES[:2]:
        atom = feedparser.parse(await (await client.get(f"{scope}.atom")).read())
        rss = feedparser.parse(await (await client.get(f"{scope}.rss")).read())
        js = json.loads(await (await client.get(f"{scope}.json")).read())
        assert [e.id for e in atom.entries] == [e.id for e in rss.entries]
        assert [e.id for e in atom.entries] == [i["id"] for i in js["items"]]
        ids.append({e.id for e in atom.entries})
    assert ids[0] == ids[1]


async def test_conditional_get_answers_304_and_the_etag_wins(client: Client) -> None:
    path = f"/feeds/stories/{SEED_STREAM}.atom"
    first = await client.get(path)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert (await client.get(path, headers={"If-None-Match": etag})).status == 304
    assert (await client.get(path, headers={"If-Modified-Since": modified})).status == 304
    both = await client.get(
        path, headers={"If-None-Match": '"other"', "If-Modified-Since": modified}
    )
    assert both.status == 200
    assert first.headers["Cache-Control"] == "public, max-age=60"


@pytest.mark.parametrize(
    ("accept", "encoding"),
    [("gzip", "gzip"), ("br, gzip", "br"), ("gzip;q=1, br;q=0.5", "gzip"), ("identity", None)],
)
async def test_compression_by_accept_encoding(
    client: Client, accept: str, encoding: str | None
) -> None:
    path = "/feeds/all.rss"
    plain = await (await client.get(path, headers={"Accept-Encoding": "identity"})).read()
    response = await client.get(path, headers={"Accept-Encoding": accept}, auto_decompress=False)
    raw = await response.read()
    assert response.headers["Vary"] == "Accept-Encoding"
    assert response.headers.get("Content-Encoding") == encoding
    decoded = {"gzip": gzip.decompress, "br": brotli.decompress, None: lambda b: b}[encoding](raw)
    assert decoded == plain


async def test_head_answers_headers_without_a_body(client: Client) -> None:
    get = await client.get("/feeds/all.json")
    head = await client.head("/feeds/all.json")
    assert head.status == 200
    assert head.headers["ETag"] == get.headers["ETag"]
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    assert await head.read() == b""


async def test_unknown_story_or_topic_is_a_helpful_404(client: Client) -> None:
    story = await client.get("/feeds/stories/no-such-story.atom")
    assert story.status == 404
    assert SEED_STREAM in (await story.json())["detail"]
    topic = await client.get("/topics/no-such-topic")
    assert topic.status == 404
    assert "immigration" in (await topic.json())["detail"]


async def test_as_of_answers_what_was_known_then(client: Client) -> None:
    now = feedparser.parse(await (await client.get("/feeds/all.atom")).read())
    early = await client.get("/feeds/all.atom", params={"as_of": "2017-10-12T16:00:03Z"})
    assert early.status == 200
    then = feedparser.parse(await early.read())
    assert not then.bozo
    assert 0 < len(then.entries) < len(now.entries)
    assert early.headers["ETag"] != (await client.get("/feeds/all.atom")).headers["ETag"]
    before = await client.get(f"/stories/{SEED_STREAM}", params={"as_of": "2000-01-01T00:00:00Z"})
    assert before.status == 404
    bad = await client.get("/feeds/all.atom", params={"as_of": "last tuesday"})
    assert bad.status == 400
    assert (await bad.json())["errors"][0]["parameter"] == "as_of"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.alternates: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "link" and found.get("rel") == "alternate":
            self.alternates.append(found)


@pytest.mark.parametrize("path", ["/", f"/stories/{SEED_STREAM}", "/topics/immigration"])
async def test_pages_have_autodiscovery_for_every_format(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    parser = _Links()
    parser.feed(await response.text())
    assert sorted(a["type"] for a in parser.alternates) == sorted(
        t.split(";")[0] for t in TYPES.values()
    )


async def test_the_story_page_reads_as_a_timeline(client: Client) -> None:
    html = await (await client.get(f"/stories/{SEED_STREAM}")).text()
    assert html.index("2013") < html.index("November 2016") < html.index("August 2017")
    for pending in ("New York", "Chicago", "Philadelphia", "New Orleans", "Cook County"):
        assert pending in html


async def test_an_append_shows_in_every_format_of_its_story(client: Client) -> None:
    app = client.app
    assert app is not None
    service: StoryService = app[SERVICE]
    result = await service.append(
        SEED_STREAM, [reported("follow-up-ruling", headline="A judge rules")]
    )
    assert await app[PROJECTIONS].wait_for(result.positions[-1], timeout=30)
    for fmt in ("atom", "rss", "json"):
        body = await (await client.get(f"/feeds/stories/{SEED_STREAM}.{fmt}")).read()
        assert b"A judge rules" in body


async def test_archive_page_after_the_newest_redirects_to_the_current_feed(
    aiohttp_client: ClientMaker, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings.replace(feed_size=4)))
    full = await client.get(f"/feeds/stories/{SEED_STREAM}/archive/2.atom")
    assert full.status == 200
    assert feedparser.parse(await full.read()).entries
    pending = await client.get(
        f"/feeds/stories/{SEED_STREAM}/archive/3.atom", allow_redirects=False
    )
    assert pending.status == 307
    assert pending.headers["Location"] == f"/feeds/stories/{SEED_STREAM}.atom"
    assert (await client.get(f"/feeds/stories/{SEED_STREAM}/archive/9.atom")).status == 404


async def test_the_index_lists_the_story_with_its_latest_development(client: Client) -> None:
    html = await (await client.get("/")).text()
    assert "Justice Department finds Connecticut" in html
    assert "9 developments" in html
    assert "Latest:" in html and "/feeds/stories/ct-doj-section-1373-compliance.atom" in html


async def test_a_feed_served_from_memory_is_current_after_an_append(client: Client) -> None:
    app = client.app
    assert app is not None
    path = f"/feeds/stories/{SEED_STREAM}.atom"
    await app[PROJECTIONS].render_all()
    before = await client.get(path)
    etag = before.headers["ETag"]
    assert app[PROJECTIONS].cached(path) is not None  # answered from memory from now on
    assert (await client.get(path, headers={"If-None-Match": etag})).status == 304
    assert (await client.get(path)).headers["ETag"] == etag
    result = await app[SERVICE].append(
        SEED_STREAM, [reported("memory-check", headline="A court weighs in")]
    )
    assert await app[PROJECTIONS].wait_for(result.positions[-1], timeout=30)
    after = await client.get(path, headers={"If-None-Match": etag})
    assert after.status == 200
    assert after.headers["ETag"] != etag
    assert b"A court weighs in" in await after.read()


async def test_a_query_other_than_as_of_answers_the_document(client: Client) -> None:
    path = f"/feeds/stories/{SEED_STREAM}.json"
    plain = await client.get(path)
    tagged = await client.get(path, params={"utm_source": "reader"})
    assert tagged.status == 200
    assert tagged.headers["ETag"] == plain.headers["ETag"]
    assert await tagged.read() == await plain.read()


def _xml_links(body: bytes) -> dict[str, str]:
    """rel → href of a feed document's own links (Atom ``link``, RSS ``atom:link``)."""
    root = etree.fromstring(body)
    found = root.findall("{http://www.w3.org/2005/Atom}link")
    channel = root.find("channel")
    if channel is not None:
        found = channel.findall("{http://www.w3.org/2005/Atom}link")
    return {str(link.get("rel")): str(link.get("href")) for link in found}


@pytest.mark.parametrize(
    ("as_of", "encoded"),
    [
        ("2017-10-12T16:00:05Z", "2017-10-12T16:00:05Z"),
        ("2017-10-12T12:00:05-04:00", "2017-10-12T12:00:05-04:00"),
        ("2017-10-12T16:00:05+00:00", "2017-10-12T16:00:05%2B00:00"),
    ],
)
async def test_an_as_of_document_names_its_own_url_as_self(
    client: Client, as_of: str, encoded: str
) -> None:
    base = "http://127.0.0.1:8080/feeds/all"
    for fmt in ("atom", "rss"):
        response = await client.get(f"/feeds/all.{fmt}", params={"as_of": as_of})
        assert response.status == 200
        links = _xml_links(await response.read())
        assert links["self"] == f"{base}.{fmt}?as_of={encoded}"
        assert links["current"] == f"{base}.{fmt}"
    js = await (await client.get("/feeds/all.json", params={"as_of": as_of})).json(
        content_type=None
    )
    assert js["feed_url"] == f"{base}.json?as_of={encoded}"
    assert js["_feedsvc"]["current_url"] == f"{base}.json"
    live = _xml_links(await (await client.get("/feeds/all.atom")).read())
    assert live["self"] == f"{base}.atom"


async def test_as_of_spelt_two_ways_answers_each_with_its_own_self_link(client: Client) -> None:
    first = await client.get("/feeds/all.atom", params={"as_of": "2017-10-12T16:00:05Z"})
    second = await client.get("/feeds/all.atom", params={"as_of": "2017-10-12T16:00:05+00:00"})
    again = await client.get("/feeds/all.atom", params={"as_of": "2017-10-12T16:00:05Z"})
    first_self = _xml_links(await first.read())["self"]
    assert first_self.endswith("?as_of=2017-10-12T16:00:05Z")
    assert _xml_links(await second.read())["self"].endswith("%2B00:00")
    assert _xml_links(await again.read())["self"] == first_self
    assert first.headers["ETag"] != second.headers["ETag"]


ATOM_NS = "{http://www.w3.org/2005/Atom}"


def distinct_updated(body: bytes, fmt: str) -> list[str]:
    """Every entry's atom:updated (Atom) or date_modified (JSON Feed), asserting that no
    two entries share one (the W3C validator warns when two do)."""
    if fmt == "atom":
        root = ElementTree.fromstring(body)
        stamps = [e.findtext(f"{ATOM_NS}updated") or "" for e in root.iter(f"{ATOM_NS}entry")]
    else:
        stamps = [item["date_modified"] for item in json.loads(body)["items"]]
    assert stamps and all(stamps)
    assert len(set(stamps)) == len(stamps), stamps
    return stamps


async def test_events_appended_together_give_their_entries_distinct_updated(
    svc: Service,
) -> None:
    quoted = "jepsen-letter-to-justice-department"
    response = await svc.append(
        SEED_STREAM,
        [
            reported("together-one", headline="First of a pair", topics=["immigration"]),
            reported("together-two", headline="Second of a pair", topics=["immigration"]),
            {
                "type": "quote.attributed",
                "occurred_at": "2017-10-13",
                "data": {
                    "quote_id": "together-quote",
                    "development_id": quoted,
                    "speaker": "George Jepsen",
                    "text": "Said on the same day as the pair.",
                },
            },
        ],
    )
    assert response.status == 201, await response.text()
    answer = await response.json()
    assert await svc.app[PROJECTIONS].wait_for(answer["events"][-1]["position"], timeout=30)

    paths = [f"{scope}.{fmt}" for scope in SCOPES for fmt in ("atom", "json")]
    before: dict[str, bytes] = {}
    for path in paths:
        got = await svc.client.get(path)
        assert got.status == 200
        body = await got.read()
        assert b"First of a pair" in body and b"Second of a pair" in body, path
        assert b"Said on the same day as the pair." in body, path
        distinct_updated(body, path.rsplit(".", 1)[1])
        before[path] = body
    # RSS has no per-entry updated (pubDate is when first published, to the second)

    await svc.app[PROJECTIONS].rebuild()
    for path in paths:
        assert await (await svc.client.get(path)).read() == before[path], path


async def test_an_archive_page_number_past_any_page_is_not_found(client: Client) -> None:
    huge = "3363541849429431025664"
    for query in ({}, {"as_of": "2017-10-12T16:00:05Z"}):
        response = await client.get(f"/feeds/all/archive/{huge}.json", params=query)
        assert response.status == 404, await response.text()
        assert response.content_type == "application/problem+json"

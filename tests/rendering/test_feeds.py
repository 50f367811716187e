"""Feed documents as a feed reader, a validator and a re-reading service see them."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import feedgen.entry
import feedgen.feed
import feedparser
import jsonschema
import lxml.html
import pytest
from feedgen.feed import FeedGenerator
from lxml import etree

from feedsvc.domain.events import parse_recorded_at
from feedsvc.domain.story import Story
from feedsvc.rendering import (
    FeedFormat,
    FeedView,
    Scope,
    ScopeKind,
    Urls,
    entry_id,
    feed_id,
    render,
    render_atom,
    render_json,
    render_rss,
)
from feedsvc.rendering.sanitize import ALLOWED_ATTRIBUTES, ALLOWED_TAGS, plain_text
from tests.conftest import JSONFEED_SCHEMA

from .conftest import BASE_URL, RTL, SLUG, story_view

ATOM = "{http://www.w3.org/2005/Atom}"
FH = "{http://purl.org/syndication/history/1.0}"
SCHEMA_PATH = JSONFEED_SCHEMA
XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
RSS_DATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000$"
)

ViewMaker = Callable[..., FeedView]


def xml(data: bytes) -> etree._Element:
    return etree.fromstring(data, etree.XMLParser(huge_tree=True, resolve_entities=False))


def atom_entries(data: bytes) -> list[etree._Element]:
    return list(xml(data).iterfind(f"{ATOM}entry"))


def rss_items(data: bytes) -> list[etree._Element]:
    return list(xml(data).iterfind("channel/item"))


def json_doc(data: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(data)
    return doc


def atom_entry(data: bytes, development_id: str) -> etree._Element:
    wanted = entry_id(SLUG, development_id)
    return next(e for e in atom_entries(data) if e.findtext(f"{ATOM}id") == wanted)


def json_item(data: bytes, development_id: str) -> dict[str, Any]:
    wanted = entry_id(SLUG, development_id)
    return next(i for i in json_doc(data)["items"] if i["id"] == wanted)


def visible_text(fragment: str) -> str:
    """What a reader sees of an HTML fragment."""
    return " ".join(
        lxml.html.fragment_fromstring(fragment, create_parent="div").text_content().split()
    )


def all_views(make_view: ViewMaker) -> list[FeedView]:
    return [
        make_view(),
        make_view(archive_count=3),
        make_view(archive=1, archive_count=3),
        make_view(archive=2, archive_count=3),
        make_view(archive=3, archive_count=3),
        make_view(entries=False),
    ]


# -- parsing and validity -------------------------------------------------------------


@pytest.mark.parametrize("fmt", [FeedFormat.ATOM, FeedFormat.RSS])
def test_atom_and_rss_parse_cleanly_with_every_entry(
    make_view: ViewMaker, story: Story, fmt: FeedFormat
) -> None:
    for view in all_views(make_view):
        parsed = feedparser.parse(render(view, fmt))
        assert parsed.bozo == 0, parsed.get("bozo_exception")
        assert len(parsed.entries) == len(view.entries)
    assert len(story_view(story).entries) == len(story.developments)


def test_atom_has_every_required_element(make_view: ViewMaker, urls: Urls) -> None:
    for view in all_views(make_view):
        root = xml(render_atom(view))
        assert root.tag == f"{ATOM}feed"
        assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
        for name in ("id", "title", "updated"):
            assert len(root.findall(f"{ATOM}{name}")) == 1, name
        assert root.findtext(f"{ATOM}id") == feed_id(view.scope)
        assert RFC3339.match(root.findtext(f"{ATOM}updated") or "")
        # an author at feed level covers every entry (RFC 4287 4.1.1)
        assert root.findtext(f"{ATOM}author/{ATOM}name")
        links = {(e.get("rel"), e.get("type")): e.get("href") for e in root.iterfind(f"{ATOM}link")}
        self_url = urls.feed(view.scope, FeedFormat.ATOM, view.archive)
        assert links[("self", "application/atom+xml")] == self_url
        assert links[("alternate", "text/html")] == urls.html(view.scope)
        updated = [e.findtext(f"{ATOM}updated") for e in root.iterfind(f"{ATOM}entry")]
        assert len(set(updated)) == len(updated), "two entries share one atom:updated"
        for entry in root.iterfind(f"{ATOM}entry"):
            for name in ("id", "title", "updated"):
                assert len(entry.findall(f"{ATOM}{name}")) == 1, name
            assert (entry.findtext(f"{ATOM}title") or "").strip()
            for name in ("updated", "published"):
                assert RFC3339.match(entry.findtext(f"{ATOM}{name}") or ""), name
            content = entry.find(f"{ATOM}content")
            assert content is not None and content.get("type") == "html"
            assert (entry.findtext(f"{ATOM}id") or "").startswith("urn:uuid:")


def test_rss_has_every_required_element(view: FeedView, urls: Urls) -> None:
    channel = xml(render_rss(view)).find("channel")
    assert channel is not None
    for name in ("title", "link", "description", "lastBuildDate", "language", "generator"):
        assert (channel.findtext(name) or "").strip(), name
    for item in channel.iterfind("item"):
        assert (item.findtext("title") or "").strip()
        assert (item.findtext("description") or "").strip()
        assert RSS_DATE.match(item.findtext("pubDate") or "")
        guid = item.find("guid")
        assert guid is not None and guid.get("isPermaLink") == "false"


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()

    def is_uri(value: object) -> bool:
        return isinstance(value, str) and bool(re.match(r"^https?://[^\s/]+\S*$", value))

    def is_date_time(value: object) -> bool:
        return isinstance(value, str) and bool(RFC3339.match(value))

    checker.checks("uri")(is_uri)
    checker.checks("date-time")(is_date_time)
    return checker


def test_json_feed_validates_against_the_json_feed_schema(make_view: ViewMaker) -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=_format_checker())
    for view in all_views(make_view):
        doc = json_doc(render_json(view))
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
        assert errors == []
        modified = [item["date_modified"] for item in doc["items"]]
        assert len(set(modified)) == len(modified), "two items share one date_modified"
        assert doc["version"] == "https://jsonfeed.org/version/1.1"
        assert len(doc["items"]) == len(view.entries)


def test_empty_feed_is_valid_and_dated_by_the_view(make_view: ViewMaker) -> None:
    view = make_view(entries=False)
    root = xml(render_atom(view))
    assert root.find(f"{ATOM}entry") is None
    assert parse_datetime(root.findtext(f"{ATOM}updated")) == parse_recorded_at(view.updated)
    assert feedparser.parse(render_rss(view)).bozo == 0
    assert json_doc(render_json(view))["items"] == []


# -- entries ---------------------------------------------------------------------------


def entry_ids(data: dict[FeedFormat, bytes]) -> dict[FeedFormat, list[str]]:
    return {
        FeedFormat.ATOM: [
            e.findtext(f"{ATOM}id") or "" for e in atom_entries(data[FeedFormat.ATOM])
        ],
        FeedFormat.RSS: [i.findtext("guid") or "" for i in rss_items(data[FeedFormat.RSS])],
        FeedFormat.JSON: [i["id"] for i in json_doc(data[FeedFormat.JSON])["items"]],
    }


def render_all(view: FeedView) -> dict[FeedFormat, bytes]:
    return {fmt: render(view, fmt) for fmt in FeedFormat}


def test_entry_ids_are_the_same_in_every_format_and_survive_a_correction(
    story: Story, story_before: Story
) -> None:
    after = entry_ids(render_all(story_view(story)))
    before = entry_ids(render_all(story_view(story_before)))
    expected = {entry_id(SLUG, d) for d in story.developments}
    for fmt in FeedFormat:
        assert after[fmt] == after[FeedFormat.ATOM]
        assert set(after[fmt]) == set(before[fmt]) == expected


def test_a_correction_bumps_updated_and_shows_its_note(story: Story, story_before: Story) -> None:
    note = "An earlier version said the rally was in July; it was in August."
    corrected_at = parse_recorded_at(story.developments["rally"].corrections[0].recorded_at)
    old = render_all(story_view(story_before))
    new = render_all(story_view(story))

    old_entry, new_entry = (
        atom_entry(old[FeedFormat.ATOM], "rally"),
        atom_entry(new[FeedFormat.ATOM], "rally"),
    )
    assert parse_datetime(new_entry.findtext(f"{ATOM}updated")) == corrected_at
    assert parse_datetime(old_entry.findtext(f"{ATOM}updated")) < corrected_at
    assert new_entry.findtext(f"{ATOM}published") == old_entry.findtext(f"{ATOM}published")
    assert new_entry.findtext(f"{ATOM}title") == "Rally at the Capitol in August"
    shown = visible_text(new_entry.findtext(f"{ATOM}content") or "")
    assert f"Correction (October 13, 2017): {note}" in shown
    assert '<time datetime="2017-08">August 2017</time>' in (
        new_entry.findtext(f"{ATOM}content") or ""
    )
    assert note not in (old_entry.findtext(f"{ATOM}content") or "")

    item = json_item(new[FeedFormat.JSON], "rally")
    assert parse_datetime(item["date_modified"]) == corrected_at
    assert item["_feedsvc"]["corrections"][0]["note"] == note
    assert note in visible_text(item["content_html"])
    rss = feedparser.parse(new[FeedFormat.RSS])
    (rally,) = [e for e in rss.entries if e.id == entry_id(SLUG, "rally")]
    assert note in rally.description


def test_a_retracted_entry_stays_and_is_marked(view: FeedView) -> None:
    reason = "The statement was not the mayor's."
    data = render_all(view)
    entry = atom_entry(data[FeedFormat.ATOM], "misattributed")
    assert entry.findtext(f"{ATOM}title") == "[Retracted] Mayor calls the letter a threat"
    assert visible_text(entry.findtext(f"{ATOM}content") or "").startswith(f"Retracted: {reason}")
    item = json_item(data[FeedFormat.JSON], "misattributed")
    assert item["title"].startswith("[Retracted] ")
    assert item["_feedsvc"]["retracted"] is True
    assert item["_feedsvc"]["retraction"]["reason"] == reason
    titles = [i.findtext("title") for i in rss_items(data[FeedFormat.RSS])]
    assert "[Retracted] Mayor calls the letter a threat" in titles


def test_entry_carries_when_sources_people_and_quotes(view: FeedView, urls: Urls) -> None:
    data = render_all(view)
    content = atom_entry(data[FeedFormat.ATOM], "doj-letter").findtext(f"{ATOM}content") or ""
    assert '<time datetime="2017-10-12">October 12, 2017</time>' in content
    assert '<a href="https://www.justice.gov/opa/pr/ct-1373">DOJ letter</a>' in content
    shown = visible_text(content)
    assert "Alan R. Hanson, Acting Assistant Attorney General" in shown
    assert "U.S. Department of Justice" in shown
    assert "We have said all along that we comply with federal law." in shown
    assert "— Dannel P. Malloy, Governor" in shown
    # a relative link in the body is resolved against the story page; a javascript: one loses it
    assert f'href="{urls.base}/stories/other-story"' in content
    assert "javascript:" not in content
    older = atom_entry(data[FeedFormat.ATOM], "trust-act-amended").findtext(f"{ATOM}content")
    assert '<time datetime="2016-11">November 2016</time>' in (older or "")
    extension = json_item(data[FeedFormat.JSON], "doj-letter")["_feedsvc"]
    assert extension["occurred_at"] == "2017-10-12"
    assert extension["occurred_precision"] == "day"
    assert extension["quotes"][0]["speaker"] == "Dannel P. Malloy"
    assert extension["sources"][0]["url"] == "https://www.justice.gov/opa/pr/ct-1373"


def test_every_link_in_every_entry_is_absolute_and_allowlisted(view: FeedView) -> None:
    for item in json_doc(render_json(view))["items"]:
        root = lxml.html.fragment_fromstring(item["content_html"], create_parent="div")
        for element in root.iterdescendants():
            assert element.tag in ALLOWED_TAGS, element.tag
            assert set(element.attrib) <= ALLOWED_ATTRIBUTES.get(str(element.tag), frozenset())
            href = element.get("href")
            if href is not None:
                assert href.startswith(("https://", "http://", "mailto:")), href


def test_categories_are_development_then_story_topics_without_repeats(view: FeedView) -> None:
    entry = atom_entry(render_atom(view), "trust-act-amended")
    terms = [(c.get("term"), c.get("label")) for c in entry.iterfind(f"{ATOM}category")]
    assert terms == [
        ("sanctuary-policies", "Sanctuary policies"),
        ("immigration", "immigration"),
        ("federal-grants", "Federal grants"),
    ]
    assert json_item(render_json(view), "trust-act-amended")["tags"] == [
        "Sanctuary policies",
        "immigration",
        "Federal grants",
    ]


def test_long_bodies_and_right_to_left_text_arrive_whole(view: FeedView) -> None:
    data = render_all(view)
    long_item = json_item(data[FeedFormat.JSON], "long-read")
    assert long_item["content_html"].count("All work and no play.") == 4700
    assert atom_entry(data[FeedFormat.ATOM], "international").findtext(f"{ATOM}title") == RTL
    assert json_item(data[FeedFormat.JSON], "international")["title"] == RTL
    rss_titles = [i.findtext("title") for i in rss_items(data[FeedFormat.RSS])]
    assert RTL in rss_titles


# -- hostile input -----------------------------------------------------------------------


def test_no_script_or_event_handler_survives_anywhere(view: FeedView) -> None:
    for fmt, data in render_all(view).items():
        raw = data.decode("utf-8").lower()
        decoded = html.unescape(html.unescape(raw))  # XML escaping, then HTML escaping
        for needle in ("<script", "onerror", "onclick", "javascript:", "<img"):
            assert needle not in decoded, (fmt, needle)
    item = json_item(render_json(view), "hostile")
    assert item["title"] == "Mayor resigns"
    assert item["_feedsvc"]["people"] == [{"name": "Eve", "role": "Tester"}]
    assert "Clean text" in visible_text(item["content_html"])


def test_no_xml_illegal_character_reaches_any_format(view: FeedView) -> None:
    hostile = view.entries[[e.development.development_id for e in view.entries].index("hostile")]
    assert "\ud800" in hostile.development.headline  # the fixture holds a lone surrogate
    for fmt, data in render_all(view).items():
        text = data.decode("utf-8")  # strict: a surrogate could not have been encoded
        assert not XML_ILLEGAL.search(text), fmt
        assert not XML_ILLEGAL.search(html.unescape(text)), fmt
    for value in _strings(json_doc(render_json(view))):
        assert not XML_ILLEGAL.search(value)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_plain_text_removes_markup_even_behind_entities() -> None:
    assert plain_text("<script>alert(1)</script> Mayor <b>resigns</b>") == "Mayor resigns"
    assert plain_text("&lt;script&gt;alert(1)&lt;/script&gt;ok") == "ok"
    assert plain_text("3 < 4 & AT&T \x00\ud800") == "3 < 4 & AT&T"
    assert plain_text(RTL) == RTL


# -- feed level, history, determinism -----------------------------------------------------


def test_feed_times_are_the_views_never_the_clock(view: FeedView) -> None:
    updated = parse_recorded_at(view.updated)
    assert updated.year == 2017
    root = xml(render_atom(view))
    assert parse_datetime(root.findtext(f"{ATOM}updated")) == updated
    for entry, item in zip(root.iterfind(f"{ATOM}entry"), view.entries, strict=True):
        dev = item.development
        assert parse_datetime(entry.findtext(f"{ATOM}updated")) == parse_recorded_at(dev.updated_at)
        assert parse_datetime(entry.findtext(f"{ATOM}published")) == parse_recorded_at(
            dev.reported_at
        )
    channel = xml(render_rss(view)).find("channel")
    assert channel is not None
    assert parsedate_to_datetime(channel.findtext("lastBuildDate") or "") == updated
    for rss_item, item in zip(channel.iterfind("item"), view.entries, strict=True):
        published = parse_recorded_at(item.development.reported_at)
        assert parsedate_to_datetime(rss_item.findtext("pubDate") or "") == published
    doc = json_doc(render_json(view))
    assert parse_datetime(doc["_feedsvc"]["updated"]) == updated


def test_rendering_is_byte_for_byte_repeatable(story: Story) -> None:
    for fmt in FeedFormat:
        first = render(story_view(story), fmt)
        assert render(story_view(story), fmt) == first
        assert render(story_view(Story.model_validate(story.model_dump())), fmt) == first


def test_rendering_does_not_depend_on_hash_seed(story: Story) -> None:
    """Another process with another hash seed renders the same bytes."""
    digest = hashlib.sha256(b"".join(render(story_view(story), f) for f in FeedFormat))
    code = (
        "import hashlib, sys\n"
        "from tests.rendering.conftest import fold_story, story_view\n"
        "from feedsvc.rendering import FeedFormat, render\n"
        "v = story_view(fold_story())\n"
        "print(hashlib.sha256(b''.join(render(v, f) for f in FeedFormat)).hexdigest())\n"
    )
    root = Path(__file__).resolve().parents[2]
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == digest.hexdigest()


def history(data: bytes, fmt: FeedFormat) -> tuple[dict[str, str], bool]:
    """The RFC 5005 links (rel -> href) and whether fh:archive is present."""
    root = xml(data)
    container = root if fmt is FeedFormat.ATOM else root.find("channel")
    assert container is not None
    links = {
        e.get("rel") or "": e.get("href") or ""
        for e in container.iterfind(f"{ATOM}link")
        if e.get("rel") in ("current", "prev-archive", "next-archive")
    }
    return links, container.find(f"{FH}archive") is not None


@pytest.mark.parametrize("fmt", [FeedFormat.ATOM, FeedFormat.RSS])
@pytest.mark.parametrize(
    ("archive", "count", "prev", "next_"),
    [(None, 0, None, None), (None, 3, 3, None), (1, 3, None, 2), (2, 3, 1, 3), (3, 3, 2, 4)],
)
def test_rfc5005_links(
    make_view: ViewMaker,
    urls: Urls,
    fmt: FeedFormat,
    archive: int | None,
    count: int,
    prev: int | None,
    next_: int | None,
) -> None:
    view = make_view(archive=archive, archive_count=count)
    scope = view.scope
    links, is_archive = history(render(view, fmt), fmt)
    expected = {"current": urls.feed(scope, fmt)}
    if prev is not None:
        expected["prev-archive"] = urls.feed(scope, fmt, prev)
    if next_ is not None:
        expected["next-archive"] = urls.feed(scope, fmt, next_)
    assert links == expected
    assert is_archive == (archive is not None)
    self_links = [
        e.get("href") for e in xml(render(view, fmt)).iter(f"{ATOM}link") if e.get("rel") == "self"
    ]
    assert self_links == [urls.feed(scope, fmt, archive)]
    # the feed id is the same on every page of the scope
    if fmt is FeedFormat.ATOM:
        assert xml(render(view, fmt)).findtext(f"{ATOM}id") == feed_id(scope)


@pytest.mark.parametrize(
    ("archive", "count", "older"), [(None, 0, None), (None, 3, 3), (3, 3, 2), (1, 3, None)]
)
def test_json_feed_next_url_leads_to_older_items(
    make_view: ViewMaker, urls: Urls, archive: int | None, count: int, older: int | None
) -> None:
    view = make_view(archive=archive, archive_count=count)
    doc = json_doc(render_json(view))
    assert doc["feed_url"] == urls.feed(view.scope, FeedFormat.JSON, archive)
    assert doc["home_page_url"] == urls.story_page(SLUG)
    if older is None:
        assert "next_url" not in doc
    else:
        assert doc["next_url"] == urls.feed(view.scope, FeedFormat.JSON, older)
    assert doc["_feedsvc"]["archive"] == archive
    assert doc["_feedsvc"]["current_url"] == urls.feed(view.scope, FeedFormat.JSON)


def test_render_dispatches_by_format(view: FeedView) -> None:
    assert render(view, FeedFormat.ATOM) == render_atom(view)
    assert render(view, FeedFormat.RSS) == render_rss(view)
    assert render(view, FeedFormat.JSON) == render_json(view)


def test_all_stories_scope_links_to_the_index(story: Story, urls: Urls) -> None:
    view = FeedView(
        scope=Scope(ScopeKind.ALL),
        title="All stories",
        subtitle="",
        updated=story.updated_at,
        entries=story_view(story).entries,
        urls=urls,
    )
    doc = json_doc(render_json(view))
    assert doc["home_page_url"] == f"{BASE_URL}/"
    assert doc["feed_url"] == f"{BASE_URL}/feeds/all.json"
    assert "description" not in doc
    channel = xml(render_rss(view)).find("channel")
    assert channel is not None
    assert channel.findtext("description") == "All stories"  # RSS requires one
    assert feedparser.parse(render_atom(view)).bozo == 0


# -- feedgen 1.0.0 defects and their workarounds -------------------------------------------
# Each pair: a canary that shows the defect is still in feedgen, and a test that our
# output is right anyway. If a canary fails, feedgen changed: re-check the workaround.


def _entry_generator() -> tuple[Any, Any]:
    fg = FeedGenerator()
    fg.id("urn:x")
    fg.title("t")
    fg.description("d")
    fg.link(href="https://example.org/", rel="alternate")
    fe = fg.add_entry()
    fe.id("urn:e")
    fe.title("e")
    fe.content("c")
    return fg, fe


def test_canary_feedgen_dates_default_to_the_wall_clock() -> None:
    fg, fe = _entry_generator()
    now = datetime.now().astimezone()
    assert abs((fg.updated() - now).total_seconds()) < 60
    assert abs((fe.updated() - now).total_seconds()) < 60


def test_canary_feedgen_drops_entry_link_attributes() -> None:
    fg, fe = _entry_generator()
    fe.link(href="https://example.org/e", rel="alternate", type="text/html")
    link = xml(fg.atom_str()).find(f"{ATOM}entry/{ATOM}link")
    assert link is not None and link.get("type") is None and link.get("rel") is None


def test_entry_links_keep_rel_and_type(view: FeedView) -> None:
    for entry, item in zip(atom_entries(render_atom(view)), view.entries, strict=True):
        (link,) = entry.findall(f"{ATOM}link")
        assert link.get("rel") == "alternate"
        assert link.get("type") == "text/html"
        assert link.get("href") == f"{BASE_URL}/stories/{SLUG}#{item.development.development_id}"


def test_canary_feedgen_description_overwrites_content() -> None:
    fg, fe = _entry_generator()
    fe.content("<p>full</p>", type="html")
    fe.description("short")
    assert xml(fg.atom_str()).findtext(f"{ATOM}entry/{ATOM}content") == "short"


def test_the_full_content_is_in_every_format(view: FeedView) -> None:
    data = render_all(view)
    atom = [e.findtext(f"{ATOM}content") for e in atom_entries(data[FeedFormat.ATOM])]
    rss = [i.findtext("description") for i in rss_items(data[FeedFormat.RSS])]
    json_content = [i["content_html"] for i in json_doc(data[FeedFormat.JSON])["items"]]
    assert atom == rss == json_content
    assert all(c and "Story: " in c for c in atom)


def test_canary_feedgen_prepends_entries() -> None:
    fg, _ = _entry_generator()
    second = fg.add_entry()
    second.id("urn:second")
    second.title("second")
    second.content("c")
    ids = [e.findtext(f"{ATOM}id") for e in xml(fg.atom_str()).iterfind(f"{ATOM}entry")]
    assert ids == ["urn:second", "urn:e"]


def test_entries_keep_the_views_order(view: FeedView) -> None:
    expected = [entry_id(SLUG, e.development.development_id) for e in view.entries]
    for ids in entry_ids(render_all(view)).values():
        assert ids == expected


def test_canary_feedgen_rss_channel_link_is_the_last_link_added() -> None:
    fg, _ = _entry_generator()
    fg.link(href="https://example.org/feed.rss", rel="self")
    assert xml(fg.rss_str()).findtext("channel/link") == "https://example.org/feed.rss"


def test_rss_channel_link_is_the_html_page(view: FeedView, urls: Urls) -> None:
    channel = xml(render_rss(view)).find("channel")
    assert channel is not None
    assert channel.findtext("link") == urls.story_page(SLUG)


def test_rss_dates_do_not_depend_on_feedgen_formatting(
    view: FeedView, monkeypatch: pytest.MonkeyPatch
) -> None:
    """feedgen formats RSS dates under a process-wide locale switch; ours are rewritten
    without it, so even a broken feedgen formatter cannot reach the output."""
    expected = render_rss(view)
    monkeypatch.setattr(feedgen.feed, "formatRFC2822", lambda d: "garbage")
    monkeypatch.setattr(feedgen.entry, "formatRFC2822", lambda d: "garbage")
    assert render_rss(view) == expected
    assert b"garbage" not in expected


def test_generator_is_feedsvc_without_a_version(view: FeedView) -> None:
    generator = xml(render_atom(view)).find(f"{ATOM}generator")
    assert generator is not None
    assert generator.text == "feedsvc" and len(generator.attrib) == 0
    channel = xml(render_rss(view)).find("channel")
    assert channel is not None and channel.findtext("generator") == "feedsvc"


def parse_datetime(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))

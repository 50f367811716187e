"""The HTML pages as a browser and a feed reader's autodiscovery see them."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import lxml.html
import pytest

from feedsvc.domain.events import slugify
from feedsvc.domain.story import Story
from feedsvc.rendering import (
    EntryView,
    FeedFormat,
    Scope,
    ScopeKind,
    Urls,
    render_index,
    render_story,
    render_topic,
)

from .conftest import HOSTILE, RTL

MEDIA_TYPES = {
    FeedFormat.ATOM: "application/atom+xml",
    FeedFormat.RSS: "application/rss+xml",
    FeedFormat.JSON: "application/feed+json",
}
VOID = {"meta", "link", "br", "img", "hr", "input", "source", "wbr", "area", "col"}
XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


class _Balance(HTMLParser):
    """Checks that every element is closed, in order (a strict reading of our own HTML)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def check_html(data: bytes) -> lxml.html.HtmlElement:
    """Decode strictly, check the structure, and parse as a browser would."""
    text = data.decode("utf-8")
    assert text.startswith('<!DOCTYPE html>\n<html lang="en">')
    assert '<meta charset="utf-8">' in text
    assert not XML_ILLEGAL.search(text)
    balance = _Balance()
    balance.feed(text)
    balance.close()
    assert balance.problems == []
    assert balance.stack == []
    assert balance.doctype == "DOCTYPE html"
    root = lxml.html.document_fromstring(data)
    # no JavaScript of any kind
    assert root.xpath("//script") == []
    for element in root.iter():
        assert not [a for a in element.attrib if str(a).lower().startswith("on")]
        assert not str(element.get("href", "")).lower().startswith("javascript:")
    return root


def autodiscovery(root: lxml.html.HtmlElement) -> dict[str, str]:
    links = root.xpath("//head/link[@rel='alternate']")
    assert all(link.get("title") for link in links)
    return {link.get("type"): link.get("href") for link in links}


def feeds_of(scope: Scope, urls: Urls) -> dict[str, str]:
    return {MEDIA_TYPES[fmt]: urls.feed(scope, fmt) for fmt in FeedFormat}


def article(root: lxml.html.HtmlElement, element_id: str) -> lxml.html.HtmlElement:
    (found,) = root.xpath(f"//article[@id='{element_id}']")
    assert isinstance(found, lxml.html.HtmlElement)
    return found


def shown(element: lxml.html.HtmlElement) -> str:
    return " ".join(element.text_content().split())


TOPICS = [("immigration", "Immigration"), ("federal-grants", "Federal grants")]


# -- story page ---------------------------------------------------------------------------


def test_story_page_autodiscovers_all_three_feeds(story: Story, urls: Urls) -> None:
    root = check_html(render_story(story, urls))
    assert autodiscovery(root) == feeds_of(Scope(ScopeKind.STORY, story.slug), urls)


def test_story_timeline_is_in_the_order_things_happened(story: Story, urls: Urls) -> None:
    root = check_html(render_story(story, urls))
    ids = [a.get("id") for a in root.xpath("//section[@id='timeline']/article")]
    assert ids == [d.development_id for d in story.timeline()]
    assert ids[0] == "trust-act-amended"  # November 2016 comes first though reported later


def test_dates_are_shown_at_their_real_precision(story: Story, urls: Urls) -> None:
    root = check_html(render_story(story, urls))
    times = {
        a.get("id"): (a.xpath(".//time")[0].get("datetime"), a.xpath(".//time")[0].text)
        for a in root.xpath("//article")
        if a.get("id") not in ("rally", "misattributed")  # their notes come first
    }
    assert times["trust-act-amended"] == ("2016-11", "November 2016")
    assert times["doj-letter"] == ("2017-10-12", "October 12, 2017")
    assert times["long-read"] == ("2017", "2017")
    assert times["hostile"] == ("2017-10-12T20:30:00Z", "October 12, 2017, 20:30 UTC")
    assert '<time datetime="2017-08">August 2017</time>' in shown_html(article(root, "rally"))


def shown_html(element: lxml.html.HtmlElement) -> str:
    return str(lxml.html.tostring(element, encoding="unicode"))


def test_story_page_shows_corrections_retractions_quotes_and_sources(
    story: Story, urls: Urls
) -> None:
    root = check_html(render_story(story, urls))
    rally = shown(article(root, "rally"))
    assert "Rally at the Capitol in August" in rally
    assert (
        "Correction (October 13, 2017): An earlier version said the rally was in July;"
        " it was in August." in rally
    )
    retracted = article(root, "misattributed")
    assert "retracted" in (retracted.get("class") or "").split()
    assert "Retracted: The statement was not the mayor's." in shown(retracted)
    letter = article(root, "doj-letter")
    assert "We have said all along that we comply with federal law." in shown(
        letter.xpath(".//blockquote")[0]
    )
    assert "Dannel P. Malloy, Governor" in shown(letter)
    hrefs = letter.xpath(".//a/@href")
    assert "https://www.justice.gov/opa/pr/ct-1373" in hrefs
    assert f"{urls.base}/stories/other-story" in hrefs  # a relative body link, resolved
    assert all(h.startswith("https://") for h in root.xpath("//a/@href"))


def test_story_page_lists_pending_then_resolved_followups(story: Story, urls: Urls) -> None:
    root = check_html(render_story(story, urls))
    (section,) = root.xpath("//section[@id='followups']")
    pending, resolved = section.xpath("./ul")
    assert [li.get("id") for li in pending] == ["followup-doj-other-cities"]
    assert "Cook County" in shown(pending)
    assert [li.get("id") for li in resolved] == ["followup-governor-reply"]
    assert "Malloy replied the same day." in shown(resolved)
    assert resolved.xpath(".//a/@href") == [f"{urls.story_page(story.slug)}#doj-letter"]


def test_story_topics_link_to_their_pages(story: Story, urls: Urls) -> None:
    root = check_html(render_story(story, urls))
    hrefs = root.xpath("//header//a/@href")
    for label in story.topics:
        assert urls.topic_page(slugify(label)) in hrefs


def test_hostile_text_is_neither_run_nor_shown_as_markup(story: Story, urls: Urls) -> None:
    data = render_story(story, urls)
    root = check_html(data)
    hostile = article(root, "hostile")
    assert hostile.xpath(".//img") == []
    assert shown(hostile.xpath(".//h3")[0]) == "Mayor resigns"
    assert "Clean text" in shown(hostile)
    assert "Quoted" in shown(hostile)
    assert "alert" not in shown(root)
    assert b"<script" not in data and b"<img" not in data
    assert b"&lt;script" not in data and b"&lt;b&gt;" not in data
    assert HOSTILE.startswith("<script>")


def test_right_to_left_text_and_emoji_arrive_whole(story: Story, urls: Urls) -> None:
    root = check_html(render_story(story, urls))
    international = article(root, "international")
    assert shown(international.xpath(".//h3")[0]) == RTL
    assert international.xpath(".//h3/span/@dir") == ["auto"]
    assert "שלום 👋" in shown(international)


def test_pages_are_byte_for_byte_repeatable(story: Story, urls: Urls) -> None:
    assert render_story(story, urls) == render_story(story, urls)
    copy = Story.model_validate(story.model_dump())
    assert render_story(copy, urls) == render_story(story, urls)
    assert render_index([story], urls, TOPICS) == render_index([copy], urls, TOPICS)


# -- index page -------------------------------------------------------------------------------


def test_index_autodiscovers_the_all_stories_feeds(story: Story, urls: Urls) -> None:
    root = check_html(render_index([story], urls, TOPICS))
    assert autodiscovery(root) == feeds_of(Scope(ScopeKind.ALL), urls)


def test_index_lists_each_story_with_its_latest_development_and_feeds(
    story: Story, urls: Urls
) -> None:
    root = check_html(render_index([story], urls, TOPICS))
    (entry,) = root.xpath("//section[@id='stories']/article")
    text = shown(entry)
    assert story.title in text
    assert story.summary in text
    assert "Status: open" in text
    latest = story.timeline()[-1]
    assert f"{urls.story_page(story.slug)}#{latest.development_id}" in entry.xpath(".//a/@href")
    assert "October 12, 2017, 20:30 UTC" in text
    story_scope = Scope(ScopeKind.STORY, story.slug)
    for fmt in FeedFormat:
        assert urls.feed(story_scope, fmt) in entry.xpath(".//a/@href")


def test_index_lists_topics_and_the_feed_url_scheme(story: Story, urls: Urls) -> None:
    root = check_html(render_index([story], urls, TOPICS))
    (topics,) = root.xpath("//section[@id='topics']")
    hrefs = topics.xpath(".//a/@href")
    assert urls.topic_page("immigration") in hrefs
    assert urls.feed(Scope(ScopeKind.TOPIC, "federal-grants"), FeedFormat.RSS) in hrefs
    scheme = shown(root.xpath("//section[@id='feeds']")[0])
    for path in (
        "/stories/<slug>",
        "/feeds/all.<fmt>",
        "/feeds/topics/<topic>.<fmt>",
        "archive/<n>",
    ):
        assert path in scheme


def test_empty_index_is_still_a_page(urls: Urls) -> None:
    root = check_html(render_index([], urls, []))
    assert "No stories yet." in shown(root)


# -- topic page ---------------------------------------------------------------------------------


@pytest.fixture
def topic_entries(story: Story) -> list[EntryView]:
    return [EntryView(story, d) for d in story.timeline()]


def test_topic_page_autodiscovers_its_feeds_and_links_each_entry_home(
    story: Story, urls: Urls, topic_entries: list[EntryView]
) -> None:
    root = check_html(render_topic("immigration", "Immigration", topic_entries, urls))
    assert autodiscovery(root) == feeds_of(Scope(ScopeKind.TOPIC, "immigration"), urls)
    articles = root.xpath("//article")
    assert len(articles) == len(topic_entries)
    assert len({a.get("id") for a in articles}) == len(articles)
    for element, entry in zip(articles, topic_entries, strict=True):
        home = f"{urls.story_page(story.slug)}#{entry.development.development_id}"
        assert home in element.xpath(".//h3//a/@href")
        assert f"Story: {story.title}" in shown(element)

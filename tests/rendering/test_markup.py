"""Markup in events: one rule per field, the same in every feed format and on every page.

Headlines and the other short texts are plain text (markup removed); bodies are HTML
kept to the allowlist, where an element outside it is unwrapped with its text kept and
scripts, styles and raw-text elements go with their content.
"""

from __future__ import annotations

import json
import re
from itertools import pairwise
from typing import Any

import lxml.html
import pytest
from lxml import etree

from feedsvc.domain.events import DevelopmentReported, RecordedEvent, strip_xml_illegal
from feedsvc.domain.story import Story, fold
from feedsvc.ndjson import read_ndjson
from feedsvc.rendering import (
    EntryView,
    FeedFormat,
    Urls,
    entry_id,
    render,
    render_index,
    render_story,
    render_topic,
)
from feedsvc.rendering.sanitize import (
    ALLOWED_TAGS,
    CONTENT_DROPPED_TAGS,
    URL_SCHEMES,
    display_warnings,
    plain_text,
)
from tests.conftest import SEED

from .conftest import BASE_URL, SLUG, recorded_events, story_view

ATOM = "{http://www.w3.org/2005/Atom}"
URLS = Urls(BASE_URL)
BLOCKS_BODY = (
    "<div>Kept text</div><span>Span text</span><section>Section text</section>"
    "<font>Font text</font><table><tr><td>Cell one</td><td>Cell two</td></tr></table>"
    "<iframe><p>Frame fallback</p></iframe><noscript><p>No script</p></noscript>"
    "<script>alert(1)</script><style>p { color: red }</style>"
)


def opened(**data: Any) -> tuple[str, str, dict[str, Any]]:
    return (
        "story.opened",
        "2017-10-12",
        {"slug": SLUG, "title": "A story", "summary": "A summary.", "topics": ["Law"]} | data,
    )


def reported(development_id: str, headline: str, body: str) -> tuple[str, str, dict[str, Any]]:
    return (
        "development.reported",
        "2017-10-12",
        {
            "development_id": development_id,
            "headline": headline,
            "body": body,
            "kind": "ruling",
            "topics": ["Law"],
        },
    )


def story_of(*script: tuple[str, str, dict[str, Any]]) -> Story:
    story = fold(recorded_events(list(script)))
    assert story is not None
    return story


def shown(element: lxml.html.HtmlElement) -> str:
    return " ".join(element.text_content().split())


def page(data: bytes) -> lxml.html.HtmlElement:
    root = lxml.html.document_fromstring(data)
    assert isinstance(root, lxml.html.HtmlElement)
    return root


def fragment(html: str) -> lxml.html.HtmlElement:
    return lxml.html.fragment_fromstring(html, create_parent="div")


def feed_texts(story: Story, development_id: str) -> dict[str, tuple[str, str]]:
    """(entry title, content HTML) of one development in each feed format."""
    view = story_view(story)
    wanted = entry_id(SLUG, development_id)
    found: dict[str, tuple[str, str]] = {}
    atom = etree.fromstring(render(view, FeedFormat.ATOM))
    entry = next(e for e in atom.iterfind(f"{ATOM}entry") if e.findtext(f"{ATOM}id") == wanted)
    found["atom"] = (entry.findtext(f"{ATOM}title") or "", entry.findtext(f"{ATOM}content") or "")
    rss = etree.fromstring(render(view, FeedFormat.RSS))
    item = next(i for i in rss.iterfind("channel/item") if i.findtext("guid") == wanted)
    found["rss"] = (item.findtext("title") or "", item.findtext("description") or "")
    doc = json.loads(render(view, FeedFormat.JSON))
    js = next(i for i in doc["items"] if i["id"] == wanted)
    found["json"] = (js["title"], js["content_html"])
    return found


# -- plain text: the same everywhere -----------------------------------------------------------


def test_a_headline_with_markup_reads_the_same_in_every_feed_and_page() -> None:
    story = story_of(
        opened(title="The <i>court</i> story", summary="A <b>big</b> summary."),
        reported("ruling", "Court <b>rules</b>", "The court ruled."),
    )
    for fmt, (title, _) in feed_texts(story, "ruling").items():
        assert title == "Court rules", fmt
    story_page = page(render_story(story, URLS))
    assert [shown(h) for h in story_page.xpath("//article//h3")] == ["Court rules"]
    assert shown(story_page.xpath("//h1")[0]) == "The court story"
    assert story_page.findtext(".//title") == "The court story"
    topic_page = page(
        render_topic("law", "Law", [EntryView(story, d) for d in story.timeline()], URLS)
    )
    assert [shown(h) for h in topic_page.xpath("//article//h3")] == ["Court rules"]
    index = page(render_index([story], URLS, [("law", "Law")]))
    entry = index.xpath("//section[@id='stories']/article")[0]
    assert shown(entry.xpath(".//h3")[0]) == "The court story"
    assert "A big summary." in shown(entry)
    assert "Latest: Court rules" in shown(entry)
    for root in (story_page, topic_page, index):
        assert "<b>" not in shown(root) and "<i>" not in shown(root)


def test_the_latest_line_never_shows_script_text() -> None:
    story = story_of(
        opened(),
        reported("first", "First ruling", "Ruled."),
        reported("scripted", "<script>alert(1)</script>", "<script>alert(2)</script>Body text"),
    )
    index = page(render_index([story], URLS, []))
    (latest,) = index.xpath("//p[starts-with(normalize-space(.), 'Latest:')]")
    assert shown(latest).startswith("Latest: scripted")
    assert "alert" not in shown(index)
    for fmt, (title, content) in feed_texts(story, "scripted").items():
        assert title == "scripted", fmt
        assert "alert" not in shown(fragment(content)), fmt
        assert "Body text" in shown(fragment(content)), fmt


def test_other_texts_of_a_development_are_plain_text_on_pages_as_in_feeds() -> None:
    story = story_of(
        opened(),
        reported("ruling", "Ruling", "Ruled."),
        (
            "quote.attributed",
            "2017-10-12",
            {
                "quote_id": "q",
                "development_id": "ruling",
                "speaker": "<b>Judge</b> Ann",
                "text": "We <em>rule</em>.",
            },
        ),
    )
    (article,) = page(render_story(story, URLS)).xpath("//article[@id='ruling']")
    assert "We rule." in shown(article)
    assert "— Judge Ann" in shown(article)
    assert article.xpath(".//blockquote//em") == []
    content = feed_texts(story, "ruling")["atom"][1]
    assert "We rule." in shown(fragment(content))


# -- bodies: the allowlist ------------------------------------------------------------------------


def body_blocks(root: lxml.html.HtmlElement) -> list[str]:
    return [shown(p) for p in root.xpath(".//p") if shown(p)]


def test_a_body_keeps_the_text_of_elements_outside_the_allowlist_as_paragraphs() -> None:
    story = story_of(opened(), reported("blocks", "Blocks", BLOCKS_BODY))
    (article,) = page(render_story(story, URLS)).xpath("//article[@id='blocks']")
    (body,) = article.xpath(".//div[@dir='auto']")
    assert body_blocks(body) == ["Kept text", "Section text", "Cell one", "Cell two"]
    assert "Span text" in shown(body) and "Font text" in shown(body)
    assert body.xpath(".//p[not(normalize-space())]") == []
    for fmt, (_, content) in feed_texts(story, "blocks").items():
        root = fragment(content)
        for words in ("Kept text", "Span text", "Section text", "Font text", "Cell one"):
            assert words in shown(root), (fmt, words)
        for hidden in ("alert", "color", "Frame fallback", "No script", "<p>"):
            assert hidden not in shown(root), (fmt, hidden)
        assert root.xpath(".//p[not(normalize-space())]") == []


def test_a_body_has_dir_auto_on_the_story_and_topic_pages() -> None:
    rtl = "مدينة نيو هيفن ترحب بالقرار"
    story = story_of(opened(), reported("rtl", "RTL", f"{rtl}\n\nשלום"))
    (article,) = page(render_story(story, URLS)).xpath("//article[@id='rtl']")
    assert [body_blocks(d) for d in article.xpath(".//div[@dir='auto']")] == [[rtl, "שלום"]]
    topic = page(render_topic("law", "Law", [EntryView(story, story.developments["rtl"])], URLS))
    (article,) = topic.xpath("//article")
    assert [body_blocks(d) for d in article.xpath(".//div[@dir='auto']")] == [[rtl, "שלום"]]


# -- headings --------------------------------------------------------------------------------------


def test_every_page_has_exactly_one_h1() -> None:
    story = story_of(opened(), reported("big", "Big", "<h1>Shouting</h1><p>Calm text.</p>"))
    entries = [EntryView(story, d) for d in story.timeline()]
    for data in (
        render_index([story], URLS, [("law", "Law")]),
        render_index([], URLS, []),
        render_story(story, URLS),
        render_topic("law", "Law", entries, URLS),
    ):
        root = page(data)
        assert len(root.xpath("//h1")) == 1
        assert root.xpath("//main//h1") == []


def test_the_index_headings_nest_h1_then_h2_then_h3() -> None:
    story = story_of(opened(), reported("one", "One", "Text."))
    root = page(render_index([story], URLS, [("law", "Law")]))
    levels = [int(h.tag[1]) for h in root.iter("h1", "h2", "h3", "h4", "h5", "h6")]
    assert levels[0] == 1
    assert all(b - a <= 1 for a, b in pairwise(levels))


# -- display_warnings --------------------------------------------------------------------------


def seed_events() -> list[RecordedEvent]:
    return list(read_ndjson(SEED))


def test_no_event_of_the_seed_story_gets_a_warning() -> None:
    events = seed_events()
    assert len(events) > 20
    for event in events:
        assert display_warnings(event.type, event.data_only()) == [], event.position
        assert display_warnings(event.type, event.data) == [], event.position


def test_a_headline_with_markup_warns_with_what_is_shown() -> None:
    warnings = display_warnings(
        "development.reported",
        {
            "development_id": "x",
            "headline": "Court <b>rules</b>",
            "body": "Text.",
            "kind": "ruling",
        },
    )
    assert warnings == [
        ("/data/headline", "headlines are plain text: markup removed; shown as 'Court rules'")
    ]


@pytest.mark.parametrize(
    "headline",
    [
        "Plain headline",
        "  spaced out\t",
        "quotes \"double\" and 'single' > arrows",
        "non-breaking\u00a0space, \u2028 line separator, emoji \U0001f600",
        "controls \x00\x08\x0b\x0c\x1f removed, \ud800 lone surrogate, \ufffe",
        "\x85 next line, \ufffd replacement",
        "carriage\rreturn",
        "carriage\r\nreturn",
        "\ufeffbyte order mark first",
        "\x0c\ufeffbyte order mark after a control",
        "inner \ufeff byte order mark",
        "AT&T",
        "&amp;lt;b&amp;gt;",
        "1 < 2",
        "<b>bold</b>",
    ],
)
def test_a_plain_text_warns_exactly_when_it_is_not_shown_as_sent(headline: str) -> None:
    shown_as_sent = plain_text(headline) == strip_xml_illegal(headline).strip()
    warnings = display_warnings("development.reported", {"headline": headline, "body": "B."})
    assert (warnings == []) == shown_as_sent, warnings


def test_markup_outside_the_shown_texts_gives_no_warning() -> None:
    data: dict[str, Any] = {
        "development_id": "x",
        "headline": "H",
        "body": "AT&T said so.\r\nPlain.",
        "sources": [{"url": "https://example.com/?a=1&b=<2>", "title": "T"}],
        "kind": {"not", "json"},
    }
    assert display_warnings("development.reported", data) == []
    data["sources"][0]["title"] = "T &amp; <b>U</b>"
    assert display_warnings("development.reported", data) == [
        (
            "/data/sources/0/title",
            "titles are plain text: markup removed; shown as 'T & U'",
        )
    ]


def test_a_body_warns_for_what_the_allowlist_removes() -> None:
    body = (
        '<p onclick="x()">Hi</p><script>alert(1)</script><iframe></iframe>'
        '<a href="javascript:x">l</a>'
    )
    ((pointer, message),) = display_warnings(
        "development.reported", {"headline": "H", "body": body}
    )
    assert pointer == "/data/body"
    for named in ("<script>", "<iframe>", "onclick on <p>", "javascript:"):
        assert named in message
    assert "unwrapped" in message and "dropped with their content" in message


@pytest.mark.parametrize(
    "body",
    [
        "Plain text.\n\nTwo paragraphs, <3 and AT&T.",
        "<p>One</p>\n\n   <p>Two <em>em</em> <a href='/stories/x'>rel</a></p>",
        "Inline <strong>strong</strong> text\r\n\r\nand more",
        '<ul><li>a</li></ul><time datetime="2017-10-12">Oct 12</time><br/>',
    ],
)
def test_a_body_the_allowlist_keeps_does_not_warn(body: str) -> None:
    assert display_warnings("development.reported", {"headline": "H", "body": body}) == []


def test_every_shown_text_of_every_type_is_checked() -> None:
    b = "<b>x</b>"
    cases: list[tuple[str, dict[str, Any], list[str]]] = [
        (
            "story.opened",
            {"slug": "s", "title": b, "summary": b, "topics": ["a", b], "places": [b]},
            ["/data/title", "/data/summary", "/data/topics/1", "/data/places/0"],
        ),
        (
            "development.reported",  # schema version 1: sources are bare URLs
            {"headline": b, "body": "<div>d</div>", "sources": ["https://e.org/<b>"]},
            ["/data/headline", "/data/body"],
        ),
        (
            "development.reported",
            {
                "headline": "h",
                "body": "b",
                "sources": [{"url": "https://e.org", "title": b, "publisher": b}],
                "people": [{"name": b, "role": b}],
                "organizations": [b],
                "places": [b],
                "topics": [b],
            },
            [
                "/data/sources/0/title",
                "/data/sources/0/publisher",
                "/data/people/0/name",
                "/data/people/0/role",
                "/data/organizations/0",
                "/data/places/0",
                "/data/topics/0",
            ],
        ),
        (
            "development.corrected",
            {"development_id": "d", "changes": {"headline": b, "body": "<u>u</u>"}, "note": b},
            ["/data/changes/headline", "/data/changes/body", "/data/note"],
        ),
        (
            "quote.attributed",
            {"speaker": b, "role": b, "text": b},
            ["/data/speaker", "/data/role", "/data/text"],
        ),
        ("development.retracted", {"reason": b}, ["/data/reason"]),
        ("story.retitled", {"title": b, "summary": b}, ["/data/title", "/data/summary"]),
        (
            "followup.expected",
            {"description": b, "subjects": [b]},
            ["/data/description", "/data/subjects/0"],
        ),
        ("followup.resolved", {"note": b}, ["/data/note"]),
        ("story.closed", {"reason": "closed"}, []),
        ("no.such.type", {"headline": b}, []),
    ]
    for event_type, data, pointers in cases:
        assert [p for p, _ in display_warnings(event_type, data)] == pointers, event_type


def test_a_text_emptied_by_removing_markup_says_so() -> None:
    ((pointer, message),) = display_warnings("story.retitled", {"title": "<script>x</script>"})
    assert pointer == "/data/title"
    assert "leaves nothing to show" in message


def test_the_field_descriptions_state_the_rule_the_renderer_applies() -> None:
    body = DevelopmentReported.model_fields["body"].description or ""
    for tag in ALLOWED_TAGS | CONTENT_DROPPED_TAGS:
        assert re.search(rf"\b{tag}\b", body), tag
    for scheme in URL_SCHEMES:
        assert scheme in body
    headline = DevelopmentReported.model_fields["headline"].description or ""
    assert headline.startswith("Plain text")

"""HTML pages: the index, a story's timeline and a topic's developments.

HTML5 in UTF-8 with no JavaScript. Every text from the events is plain text, shown as
the feeds show it (markup removed, then escaped); a development's body is the only
markup that comes from outside, kept to the allowlist of
:mod:`feedsvc.rendering.sanitize`. Each page links its Atom, RSS and JSON feeds with
``<link rel="alternate">`` for autodiscovery. Nothing reads the clock, so the same
stories always give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from feedsvc.domain.events import slugify
from feedsvc.domain.story import Development, FollowUp, Story
from feedsvc.rendering.model import EntryView, FeedFormat, Scope, ScopeKind, Urls
from feedsvc.rendering.sanitize import (
    development_html,
    headline_text,
    occurred_html,
    plain_html,
    plain_text,
    recorded_html,
    text,
)

_FORMAT_NAMES = {
    FeedFormat.ATOM: "Atom",
    FeedFormat.RSS: "RSS",
    FeedFormat.JSON: "JSON Feed",
}
# the media type without its charset parameter, as link type attributes want it
_MEDIA_TYPES = {fmt: fmt.content_type.partition(";")[0] for fmt in FeedFormat}

_STYLE = """
body { font: 1rem/1.5 system-ui, sans-serif; max-width: 46rem; margin: 0 auto;
  padding: 1rem; color: #1a1a1a; background: #fff; }
a { color: #0645ad; }
h1 { line-height: 1.2; }
.meta, .feeds { color: #555; font-size: 0.9rem; }
article { border-top: 1px solid #ddd; padding: 0.5rem 0 1rem; }
article.retracted { opacity: 0.75; }
article.retracted h3 { text-decoration: line-through; }
.badge { background: #b00020; color: #fff; border-radius: 3px; padding: 0 0.3rem;
  font-size: 0.8rem; text-decoration: none; display: inline-block; }
blockquote { border-left: 3px solid #ccc; margin: 0.5rem 0; padding-left: 1rem; }
table { border-collapse: collapse; } td, th { padding: 0.2rem 0.5rem; text-align: left; }
code { font-size: 0.9rem; }
"""


def _page(title: str, scope: Scope, urls: Urls, body: str) -> bytes:
    """A whole HTML5 document around ``body``, with feed autodiscovery for ``scope``."""
    alternates = "".join(
        f'<link rel="alternate" type="{_MEDIA_TYPES[fmt]}"'
        f' href="{text(urls.feed(scope, fmt))}"'
        f' title="{text(title)} ({_FORMAT_NAMES[fmt]})">\n'
        for fmt in FeedFormat
    )
    document = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{text(title)}</title>\n"
        f"{alternates}"
        f"<style>{_STYLE}</style>\n"
        f"</head>\n<body>\n{body}</body>\n</html>\n"
    )
    return document.encode("utf-8")


def _feed_links(scope: Scope, urls: Urls) -> str:
    links = " · ".join(
        f'<a href="{text(urls.feed(scope, fmt))}" type="{_MEDIA_TYPES[fmt]}">'
        f"{_FORMAT_NAMES[fmt]}</a>"
        for fmt in FeedFormat
    )
    return f'<p class="feeds">Feeds: {links}</p>\n'


def _topic_link(label: str, urls: Urls) -> str:
    return f'<a href="{text(urls.topic_page(slugify(label)))}">{plain_html(label)}</a>'


def _development_link(story: Story, dev: Development, urls: Urls) -> str:
    href = f"{urls.story_page(story.slug)}#{dev.development_id}"
    return f'<a href="{text(href)}" dir="auto">{text(headline_text(dev))}</a>'


def _headline(dev: Development) -> str:
    badge = '<span class="badge">Retracted</span> ' if dev.retraction is not None else ""
    return f'{badge}<span dir="auto">{text(headline_text(dev))}</span>'


def _article(story: Story, dev: Development, urls: Urls, *, element_id: str, in_topic: bool) -> str:
    classes = "development retracted" if dev.retraction is not None else "development"
    headline = _headline(dev)
    if in_topic:
        href = f"{urls.story_page(story.slug)}#{dev.development_id}"
        headline = f'<a href="{text(href)}">{headline}</a>'
    return (
        f'<article id="{text(element_id)}" class="{classes}">\n'
        f"<h3>{headline}</h3>\n"
        f"{development_html(story, dev, urls, with_story=in_topic, body_dir=True)}\n"
        "</article>\n"
    )


def render_index(stories: list[Story], urls: Urls, topics: list[tuple[str, str]]) -> bytes:
    """The index page: every story (title, summary, status, latest development and its
    feeds), every topic (``(slug, label)`` pairs) and the feed URL scheme."""
    scope = Scope(ScopeKind.ALL)
    rows: list[str] = []
    for story in stories:
        timeline = story.timeline()
        latest = ""
        if timeline:
            dev = timeline[-1]
            marker = " (retracted)" if dev.retraction is not None else ""
            latest = (
                f'<p class="meta">Latest: {_development_link(story, dev, urls)}{marker},'
                f" {occurred_html(dev.occurred)}</p>\n"
            )
        rows.append(
            "<article>\n"
            f'<h3><a href="{text(urls.story_page(story.slug))}" dir="auto">'
            f"{plain_html(story.title)}</a></h3>\n"
            f'<p dir="auto">{plain_html(story.summary)}</p>\n'
            f'<p class="meta">Status: {text(story.status)} · {story.development_count} developments'
            f" · updated {recorded_html(story.updated_at)}</p>\n"
            f"{latest}"
            f"{_feed_links(Scope(ScopeKind.STORY, story.slug), urls)}"
            "</article>\n"
        )
    topic_rows = "".join(
        f'<li><a href="{text(urls.topic_page(slug))}">{plain_html(label)}</a> — '
        + " · ".join(
            f'<a href="{text(urls.feed(Scope(ScopeKind.TOPIC, slug), fmt))}">'
            f"{_FORMAT_NAMES[fmt]}</a>"
            for fmt in FeedFormat
        )
        + "</li>\n"
        for slug, label in topics
    )
    scheme = [
        ("/", "this page"),
        ("/stories/<slug>", "a story's timeline"),
        ("/topics/<topic>", "a topic's developments"),
        ("/feeds/all.<fmt>", "every story"),
        ("/feeds/stories/<slug>.<fmt>", "one story"),
        ("/feeds/topics/<topic>.<fmt>", "one topic"),
        ("/feeds/…/archive/<n>.<fmt>", "RFC 5005 archive page n (1 = oldest)"),
    ]
    scheme_rows = "".join(
        f"<tr><td><code>{text(urls.base + path)}</code></td><td>{text(what)}</td></tr>\n"
        for path, what in scheme
    )
    body = (
        "<header>\n<h1>Stories</h1>\n"
        f"{_feed_links(scope, urls)}"
        "</header>\n<main>\n"
        '<section id="stories">\n<h2>Stories</h2>\n'
        + ("".join(rows) or "<p>No stories yet.</p>\n")
        + "</section>\n"
        '<section id="topics">\n<h2>Topics</h2>\n'
        + (f"<ul>\n{topic_rows}</ul>\n" if topic_rows else "<p>No topics yet.</p>\n")
        + "</section>\n"
        '<section id="feeds">\n<h2>Feed URLs</h2>\n'
        "<p><code>&lt;fmt&gt;</code> is <code>atom</code>, <code>rss</code> or"
        " <code>json</code>.</p>\n"
        f"<table>\n{scheme_rows}</table>\n"
        "</section>\n</main>\n"
    )
    return _page("Stories", scope, urls, body)


def _followup(story: Story, followup: FollowUp, urls: Urls) -> str:
    parts = [f'<span dir="auto">{plain_html(followup.description)}</span>']
    if followup.subjects:
        parts.append(" (" + ", ".join(plain_html(s) for s in followup.subjects) + ")")
    parts.append(f'<br><span class="meta">expected since {recorded_html(followup.expected_at)}')
    related = story.developments.get(followup.development_id or "")
    if related is not None:
        parts.append(f"; after {_development_link(story, related, urls)}")
    if followup.resolved_at is not None:
        parts.append(f"; resolved {recorded_html(followup.resolved_at)}")
        resolved_by = story.developments.get(followup.resolved_by or "")
        if resolved_by is not None:
            parts.append(f" by {_development_link(story, resolved_by, urls)}")
    parts.append("</span>")
    if followup.resolution_note:
        parts.append(f'<br><span dir="auto">{plain_html(followup.resolution_note)}</span>')
    return f'<li id="followup-{text(followup.followup_id)}">{"".join(parts)}</li>\n'


def story_article(story: Story, dev: Development, urls: Urls) -> str:
    """One development's article on its story's page: it depends on the story's slug
    and the development alone, so it can be kept by the development's version."""
    return _article(story, dev, urls, element_id=dev.development_id, in_topic=False)


def render_story(story: Story, urls: Urls, articles: Sequence[str] | None = None) -> bytes:
    """A story's page: title, summary, topics, the timeline in the order things happened
    (corrections and retractions shown), then pending and resolved follow-ups.

    ``articles``: the timeline's articles (:func:`story_article`) in the order things
    happened, rendered earlier; by default rendered here from the story's developments.
    A follow-up links the developments it names that ``story`` holds."""
    scope = Scope(ScopeKind.STORY, story.slug)
    topics = " · ".join(_topic_link(label, urls) for label in story.topics if slugify(label))
    if articles is None:
        articles = [story_article(story, dev, urls) for dev in story.timeline()]
    timeline = "".join(articles)
    followups = list(story.followups.values())
    pending = "".join(_followup(story, f, urls) for f in followups if f.resolved_at is None)
    resolved = "".join(_followup(story, f, urls) for f in followups if f.resolved_at is not None)
    body = (
        f'<header>\n<p><a href="{text(urls.index())}">All stories</a></p>\n'
        f'<h1 dir="auto">{plain_html(story.title)}</h1>\n'
        f'<p dir="auto">{plain_html(story.summary)}</p>\n'
        f'<p class="meta">Status: {text(story.status)} · opened'
        f" {recorded_html(story.opened_at)} · updated {recorded_html(story.updated_at)}</p>\n"
        + (f'<p class="meta">Topics: {topics}</p>\n' if topics else "")
        + _feed_links(scope, urls)
        + "</header>\n<main>\n"
        '<section id="timeline">\n<h2>Timeline</h2>\n'
        + (timeline or "<p>No developments yet.</p>\n")
        + "</section>\n"
        '<section id="followups">\n<h2>Follow-ups</h2>\n'
        "<h3>Pending</h3>\n"
        + (f"<ul>\n{pending}</ul>\n" if pending else "<p>Nothing pending.</p>\n")
        + "<h3>Resolved</h3>\n"
        + (f"<ul>\n{resolved}</ul>\n" if resolved else "<p>Nothing resolved yet.</p>\n")
        + "</section>\n</main>\n"
    )
    return _page(plain_text(story.title) or story.slug, scope, urls, body)


def render_topic(topic_slug: str, label: str, entries: list[EntryView], urls: Urls) -> bytes:
    """A topic's page: its developments from every story, in the order given, each with
    a link to its place in its story's timeline."""
    scope = Scope(ScopeKind.TOPIC, topic_slug)
    articles = "".join(
        _article(
            e.story,
            e.development,
            urls,
            element_id=f"{e.story.slug}--{e.development.development_id}",
            in_topic=True,
        )
        for e in entries
    )
    body = (
        f'<header>\n<p><a href="{text(urls.index())}">All stories</a></p>\n'
        f'<h1 dir="auto">{plain_html(label)}</h1>\n'
        f"{_feed_links(scope, urls)}"
        "</header>\n<main>\n" + (articles or "<p>No developments yet.</p>\n") + "</main>\n"
    )
    return _page(plain_text(label) or topic_slug, scope, urls, body)

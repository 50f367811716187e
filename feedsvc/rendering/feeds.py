"""Feed documents: a :class:`~feedsvc.rendering.model.FeedView` as Atom 1.0, RSS 2.0 or
JSON Feed 1.1 bytes.

One entry per development. Its id (:func:`~feedsvc.rendering.model.entry_id`) is the
same in every format and survives corrections; a correction bumps its ``updated`` and
adds a visible note; a retracted development stays, titled ``[Retracted] …``. Every
time comes from the view (never the wall clock), so the same view always gives the same
bytes. Archive paging follows RFC 5005: the subscription document links ``current`` to
itself and ``prev-archive`` to the newest archive page; archive page *n* carries
``fh:archive`` and links ``current``, ``prev-archive`` (*n*-1) and ``next-archive``
(*n*+1) where those exist.

A document is assembled from its head and its entries' serialized fragments: each
entry version is rendered (sanitized, serialized through feedgen and lxml, or orjson)
once per format and kept in the read model's :class:`EntryCache`, and every document
that lists it (its story's, its topics' and the all-stories feed, their archive pages)
reuses those bytes. The bytes are those of the document built whole, entries and all
(``_atom_document``, ``_rss_document``, ``_json_document``, which also build the heads).

Atom and RSS are built with feedgen 1.0.0 and then finished with lxml, because
feedgen 1.0.0 gets these wrong (each is pinned by a test):

* the feed's and every entry's ``updated`` and RSS ``lastBuildDate`` default to the
  wall clock: all are set explicitly from the view;
* ``FeedEntry.atom_entry`` drops every attribute of an entry link but ``href`` (its loop
  variable shadows the link data): ``rel`` and ``type`` are put back afterwards;
* ``FeedEntry.description()`` overwrites the Atom content, and ``summary()`` takes the
  RSS description from the content: only ``content()`` is called;
* ``add_entry()`` prepends by default, reversing the entries: they are appended;
* the RSS channel ``<link>`` is whichever feed link was added last, whatever its
  ``rel``: the alternate (HTML) link is added last;
* RSS gets only the first ``rel="self"`` atom link, and feedgen has no
  ``fh:archive``: the RFC 5005 links and element are added afterwards;
* RSS dates are formatted after switching the whole process to the C locale
  (``locale.setlocale``, not thread-safe): every RSS date is rewritten with the
  locale-independent :func:`email.utils.format_datetime`;
* the generator carries feedgen's version: it is set to ``feedsvc``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import Any

import orjson
from feedgen.feed import FeedGenerator
from lxml import etree

from feedsvc.domain.events import parse_recorded_at, slugify, strip_xml_illegal
from feedsvc.domain.story import Development, Story
from feedsvc.rendering.model import (
    EntryView,
    FeedFormat,
    FeedView,
    entry_id,
    feed_id,
)
from feedsvc.rendering.sanitize import development_html, headline_text, plain_text

ATOM_NS = "http://www.w3.org/2005/Atom"
FH_NS = "http://purl.org/syndication/history/1.0"
JSONFEED_VERSION = "https://jsonfeed.org/version/1.1"
GENERATOR = "feedsvc"
"""The generator named in every feed; no version, so an upgrade does not change bytes."""
AUTHOR_NAME = "feedsvc newsroom"
"""The feed-level author (Atom requires one for every entry)."""
LANGUAGE = "en"

_ATOM = f"{{{ATOM_NS}}}"
_HTML_TYPE = "text/html"
# the media type without its charset parameter, as link type attributes want it
_MEDIA_TYPES = {fmt: fmt.content_type.partition(";")[0] for fmt in FeedFormat}
# Our own trees only; huge_tree because an entry may carry a 200,000-character body.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


@dataclass(frozen=True)
class _Entry:
    """One entry, computed once and shown by every format."""

    id: str
    title: str
    url: str
    published: datetime
    updated: datetime
    categories: list[tuple[str, str]]  # (term, label)
    content_html: str
    fragments: dict[FeedFormat, bytes] = field(default_factory=dict)
    """The entry serialized as it sits in a document of each format, by format: the
    JSON Feed item at once (built with the entry: nothing of the view is kept, since a
    projector's in-memory development changes after it is rendered), the Atom
    ``<entry>`` and RSS ``<item>`` when a document in that format first lists it."""


ENTRY_CACHE_BYTES = 32 << 20
"""What an entry cache may hold. Entries are ~10–20 KB each once rendered in every
format: 4,096 of them held ~60 MB and took a rebuild's process past its 256 MB bound
once every document was rendered."""


class EntryCache:
    """Rendered entries of one read model, by version: a development appears in its
    story's, every topic's and the all-stories feed, in three formats each, and is
    rendered once for all of them: its JSON Feed item at once, its Atom and RSS
    fragments when a document in that format first lists it.

    Within one log a development's ``updated_position`` names its version (every change
    to it moves it), so the key is that and what the entry shows of its story. Keep one
    cache per read model: another log may reuse the same ids and positions.
    """

    def __init__(self, max_bytes: int = ENTRY_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[object, ...], tuple[_Entry, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.rendered = 0
        """How many entries this cache has rendered (a look-up that missed)."""

    @property
    def held_bytes(self) -> int:
        """What the entries held are counted at (see :func:`_entry_bytes`)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, view: FeedView, item: EntryView) -> _Entry:
        """The entry of ``item``, rendered now or earlier."""
        story = item.story
        key = (
            view.urls.base,
            story.slug,
            story.title,
            tuple(story.topics),
            item.development_id,
            item.version,
        )
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                return cached[0]
        entry = _render_entry(view, item)
        size = _entry_bytes(entry)
        with self._lock:
            self.rendered += 1
            if key not in self._entries:
                self._entries[key] = (entry, size)
                self._bytes += size
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
        return entry


def _entry_bytes(entry: _Entry) -> int:
    """What an entry is counted at in the cache, when it is rendered: its HTML, and its
    JSON Feed item three times (the Atom and RSS fragments it will have once a document
    in that format lists it are about as long), plus its other fields."""
    return len(entry.content_html) + 3 * len(entry.fragments[FeedFormat.JSON]) + 512


def _entry(view: FeedView, item: EntryView) -> _Entry:
    if view.entry_cache is not None:
        return view.entry_cache.entry(view, item)
    return _render_entry(view, item)


def _render_entry(view: FeedView, item: EntryView) -> _Entry:
    story, dev = item.story, item.development
    title = headline_text(dev)
    if dev.retraction is not None:
        title = "[Retracted] " + title
    categories: list[tuple[str, str]] = []
    seen: set[str] = set()
    for label in [*dev.topics, *story.topics]:
        term = slugify(label)
        if term and term not in seen:
            seen.add(term)
            categories.append((term, plain_text(label) or term))
    entry = _Entry(
        id=entry_id(story.slug, dev.development_id),
        title=title,
        url=f"{view.urls.story_page(story.slug)}#{dev.development_id}",
        published=parse_recorded_at(dev.reported_at),
        updated=parse_recorded_at(dev.updated_at),
        categories=categories,
        content_html=development_html(story, dev, view.urls, with_story=True),
    )
    entry.fragments[FeedFormat.JSON] = _json_fragment(_json_item(entry, story, dev))
    return entry


def _history(view: FeedView, fmt: FeedFormat) -> list[tuple[str, str]]:
    """The RFC 5005 links of a document, as (rel, href), in a fixed order."""
    urls, scope, page = view.urls, view.scope, view.archive
    links = [("current", urls.feed(scope, fmt))]
    if page is None:
        if view.archive_count > 0:
            links.append(("prev-archive", urls.feed(scope, fmt, view.archive_count)))
        return links
    if page > 1:
        links.append(("prev-archive", urls.feed(scope, fmt, page - 1)))
    # An archive page is frozen when it fills, before the next one exists, so it always
    # names page + 1; until that page fills, its URL redirects to the current document.
    links.append(("next-archive", urls.feed(scope, fmt, page + 1)))
    return links


def _title(view: FeedView) -> str:
    return plain_text(view.title) or view.scope.name


def _categories(view: FeedView, entry: _Entry) -> list[dict[str, str]]:
    scheme = view.urls.topic_page("")
    return [{"term": t, "label": label, "scheme": scheme} for t, label in entry.categories]


def _rfc822(moment: datetime) -> str:
    return format_datetime(moment)


def _serialize(root: etree._Element) -> bytes:
    # declares fh: on the root when used, and drops feedgen's unused declarations
    etree.cleanup_namespaces(root, top_nsmap={"fh": FH_NS})
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True, pretty_print=True)


def _atom_document(view: FeedView, entries: list[_Entry]) -> bytes:
    """An Atom document with the view's head and ``entries``, built through feedgen.

    :func:`render_atom` calls it with no entries for a document's head and tail, and
    with the entries not serialized yet to cut their ``<entry>`` fragments out."""
    fmt = FeedFormat.ATOM
    urls = view.urls
    fg = FeedGenerator()
    fg.id(feed_id(view.scope))
    fg.title(_title(view))
    subtitle = plain_text(view.subtitle)
    if subtitle:
        fg.subtitle(subtitle)
    fg.updated(parse_recorded_at(view.updated))
    fg.author({"name": AUTHOR_NAME, "uri": urls.index()})
    fg.generator(GENERATOR)
    fg.language(LANGUAGE)
    fg.link(href=view.self_url(fmt), rel="self", type=_MEDIA_TYPES[fmt])
    fg.link(href=urls.html(view.scope), rel="alternate", type=_HTML_TYPE)
    for rel, href in _history(view, fmt):
        fg.link(href=href, rel=rel, type=_MEDIA_TYPES[fmt])
    for entry in entries:
        fe = fg.add_entry(order="append")
        fe.id(entry.id)
        fe.title(entry.title)
        fe.updated(entry.updated)
        fe.published(entry.published)
        fe.link(href=entry.url, rel="alternate", type=_HTML_TYPE)
        fe.content(entry.content_html, type="html")
        if entry.categories:
            fe.category(_categories(view, entry))
    root = etree.fromstring(fg.atom_str(), _PARSER)
    for element in root.iterfind(f"{_ATOM}entry/{_ATOM}link"):
        # feedgen 1.0.0 keeps only href; ours are all the alternate HTML page
        element.set("rel", "alternate")
        element.set("type", _HTML_TYPE)
    if view.archive is not None:
        archive = etree.Element(f"{{{FH_NS}}}archive")
        first_entry = root.find(f"{_ATOM}entry")
        if first_entry is None:
            root.append(archive)
        else:
            first_entry.addprevious(archive)
    return _serialize(root)


def _rss_document(view: FeedView, entries: list[_Entry]) -> bytes:
    """An RSS document with the view's head and ``entries``, built through feedgen
    (see :func:`_atom_document`)."""
    fmt = FeedFormat.RSS
    urls = view.urls
    fg = FeedGenerator()
    title = _title(view)
    fg.title(title)
    fg.description(plain_text(view.subtitle) or title)
    updated = parse_recorded_at(view.updated)
    fg.updated(updated)
    fg.generator(GENERATOR)
    fg.language(LANGUAGE)
    fg.link(href=view.self_url(fmt), rel="self", type=_MEDIA_TYPES[fmt])
    # last, because feedgen 1.0.0 makes the last link added the channel's <link>
    fg.link(href=urls.html(view.scope), rel="alternate", type=_HTML_TYPE)
    for entry in entries:
        fe = fg.add_entry(order="append")
        fe.id(entry.id)  # guid isPermaLink="false"
        fe.title(entry.title)
        fe.link(href=entry.url)
        fe.content(entry.content_html)  # becomes <description>, escaped
        fe.published(entry.published)
        if entry.categories:
            fe.category(_categories(view, entry))
    root = etree.fromstring(fg.rss_str(), _PARSER)
    channel = root.find("channel")
    assert channel is not None
    self_link = channel.find(f"{_ATOM}link")
    assert self_link is not None
    anchor = self_link
    for rel, href in _history(view, fmt):
        link = etree.Element(f"{_ATOM}link", href=href, rel=rel, type=_MEDIA_TYPES[fmt])
        anchor.addnext(link)
        anchor = link
    if view.archive is not None:
        anchor.addnext(etree.Element(f"{{{FH_NS}}}archive"))
    # feedgen formats dates under a process-wide locale switch; write them ourselves
    last_build = channel.find("lastBuildDate")
    assert last_build is not None
    last_build.text = _rfc822(updated)
    for item, entry in zip(channel.iterfind("item"), entries, strict=True):
        pub_date = item.find("pubDate")
        assert pub_date is not None
        pub_date.text = _rfc822(entry.published)
    return _serialize(root)


@dataclass(frozen=True)
class _Layout:
    """Where entries sit in a pretty-printed document of one XML format."""

    build: Callable[[FeedView, list[_Entry]], bytes]
    start: bytes
    """How every entry's fragment begins (its indented start tag and line break)."""
    end: bytes
    """How the document goes on after its last entry."""


_LAYOUTS = {
    FeedFormat.ATOM: _Layout(_atom_document, b"  <entry>\n", b"</feed>"),
    FeedFormat.RSS: _Layout(_rss_document, b"    <item>\n", b"  </channel>"),
}


def _assemble(view: FeedView, fmt: FeedFormat) -> bytes:
    """The view in ``fmt`` (Atom or RSS) from its head and its entries' fragments.

    lxml pretty-prints an element from its own content and depth alone (none of these
    elements has mixed content), and every entry's text is escaped, so an entry's
    bytes are the same in every document at the same depth, and an unescaped start
    tag of an entry never occurs inside one. The head is the document built without
    entries, cut where its entries would begin (after its last head element, where
    ``fh:archive`` also goes when a document has no entry); the entries not serialized
    yet are built together in one document and cut apart at their start tags.
    """
    layout = _LAYOUTS[fmt]
    entries = [_entry(view, item) for item in view.entries]
    missing = list({id(e): e for e in entries if fmt not in e.fragments}.values())
    if missing:
        built = layout.build(view, missing)
        body = built[built.index(layout.start) : built.rindex(layout.end)]
        pieces = body.split(layout.start)
        assert not pieces[0] and len(pieces) == len(missing) + 1, "entries cut apart"
        for entry, piece in zip(missing, pieces[1:], strict=True):
            entry.fragments[fmt] = layout.start + piece
    head = layout.build(view, [])
    cut = head.rindex(layout.end)
    return b"".join([head[:cut], *(e.fragments[fmt] for e in entries), head[cut:]])


def render_atom(view: FeedView) -> bytes:
    """The view as an Atom 1.0 document (RFC 4287, with RFC 5005 archive links)."""
    return _assemble(view, FeedFormat.ATOM)


def render_rss(view: FeedView) -> bytes:
    """The view as an RSS 2.0 document, with atom:link self and RFC 5005 links."""
    return _assemble(view, FeedFormat.RSS)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat()


def _json_item(entry: _Entry, story: Story, dev: Development) -> dict[str, Any]:
    retraction = dev.retraction
    return {
        "id": entry.id,
        "url": entry.url,
        "title": entry.title,
        "content_html": entry.content_html,
        "date_published": _rfc3339(entry.published),
        "date_modified": _rfc3339(entry.updated),
        "tags": [label for _, label in entry.categories],
        "_feedsvc": {
            "story": {
                "slug": story.slug,
                "title": plain_text(story.title),
                "url": entry.url.split("#", 1)[0],
            },
            "development_id": dev.development_id,
            "kind": dev.kind,
            "occurred_at": dev.occurred_at,
            "occurred_precision": dev.occurred_precision.value,
            "occurred_display": dev.occurred.human(),
            "sources": [
                {
                    "url": strip_xml_illegal(s.url),
                    "title": plain_text(s.title),
                    "publisher": plain_text(s.publisher) if s.publisher else None,
                }
                for s in dev.sources
            ],
            "people": [
                {"name": plain_text(p.name), "role": plain_text(p.role) if p.role else None}
                for p in dev.people
            ],
            "organizations": [plain_text(o) for o in dev.organizations],
            "places": [plain_text(p) for p in dev.places],
            "quotes": [
                {
                    "quote_id": q.quote_id,
                    "speaker": plain_text(q.speaker),
                    "role": plain_text(q.role) if q.role else None,
                    "text": plain_text(q.text),
                }
                for q in dev.quotes
            ],
            "corrections": [
                {
                    "note": plain_text(c.note),
                    "fields": list(c.fields),
                    "corrected_at": _rfc3339(parse_recorded_at(c.recorded_at)),
                }
                for c in dev.corrections
            ],
            "retracted": retraction is not None,
            "retraction": None
            if retraction is None
            else {
                "reason": plain_text(retraction.reason),
                "retracted_at": _rfc3339(parse_recorded_at(retraction.recorded_at)),
            },
        },
    }


def _json_fragment(item: dict[str, Any]) -> bytes:
    """A JSON Feed item as it sits in a document's ``items``: indented two levels.

    orjson escapes every line break inside a string, so each one in its output is
    indentation."""
    return orjson.dumps(item, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n    ")


def _json_document(view: FeedView, items: list[dict[str, Any]]) -> bytes:
    """A JSON Feed document with the view's head and ``items``.

    :func:`render_json` calls it with no items and puts the entries' fragments where
    the empty list is."""
    fmt = FeedFormat.JSON
    urls = view.urls
    history = dict(_history(view, fmt))
    doc: dict[str, Any] = {
        "version": JSONFEED_VERSION,
        "title": _title(view),
        "home_page_url": urls.html(view.scope),
        "feed_url": view.self_url(fmt),
    }
    subtitle = plain_text(view.subtitle)
    if subtitle:
        doc["description"] = subtitle
    if "prev-archive" in history:
        doc["next_url"] = history["prev-archive"]
    doc["authors"] = [{"name": AUTHOR_NAME, "url": urls.index()}]
    doc["language"] = LANGUAGE
    doc["items"] = items
    doc["_feedsvc"] = {
        "id": feed_id(view.scope),
        "scope": view.scope.name,
        "updated": _rfc3339(parse_recorded_at(view.updated)),
        "archive": view.archive,
        "archive_count": view.archive_count,
        "current_url": history["current"],
        "prev_archive_url": history.get("prev-archive"),
        "next_archive_url": history.get("next-archive"),
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


_NO_ITEMS = b'\n  "items": [],\n'
"""The empty item list in a document's head: a top-level key (the only line at that
indentation starting so; a quote inside a string value is escaped)."""


def render_json(view: FeedView) -> bytes:
    """The view as a JSON Feed 1.1 document.

    ``next_url`` leads to older items (the previous archive page), as JSON Feed paging
    does; the ``_feedsvc`` extension names the scope and the RFC 5005 pages, and each
    item's ``_feedsvc`` carries the development's structured facts.
    """
    items = [_entry(view, item).fragments[FeedFormat.JSON] for item in view.entries]
    head = _json_document(view, [])
    if not items:
        return head
    cut = head.index(_NO_ITEMS)
    return b"".join(
        [
            head[:cut],
            b'\n  "items": [\n    ',
            b",\n    ".join(items),
            b"\n  ],\n",
            head[cut + len(_NO_ITEMS) :],
        ]
    )


_RENDERERS: dict[FeedFormat, Callable[[FeedView], bytes]] = {
    FeedFormat.ATOM: render_atom,
    FeedFormat.RSS: render_rss,
    FeedFormat.JSON: render_json,
}


def render(view: FeedView, fmt: FeedFormat) -> bytes:
    """The view as a document in ``fmt``; the same view always gives the same bytes."""
    return _RENDERERS[fmt](view)

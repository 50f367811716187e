"""What a development looks like in HTML, and the rules that keep every text safe.

One rule per field, the same in every feed format and on every page:

* **Plain text**: headlines and every other short text (titles, summaries, quotes,
  names, roles, sources' titles and publishers, topics, places, notes, reasons,
  follow-up descriptions). Markup in them is removed, never shown (:func:`plain_text`),
  and the result is escaped where it goes into HTML (:func:`plain_html`). Feed readers
  disagree about whether an RSS or Atom title is HTML, so removing is the only rule that
  reads the same everywhere.
* **HTML kept to an allowlist**: a development's body. Elements in
  :data:`ALLOWED_TAGS` keep the attributes in :data:`ALLOWED_ATTRIBUTES`; links keep
  only ``http``, ``https`` and ``mailto`` URLs and resolve against the story page; the
  elements in :data:`CONTENT_DROPPED_TAGS` go with their content; every other element
  is unwrapped, its text kept (a block such as ``div`` or ``table`` becomes paragraphs).
  A body without tags is plain text whose blank lines separate paragraphs.

Both drop the characters XML 1.0 cannot carry (:func:`~feedsvc.domain.events.strip_xml_illegal`),
which also keeps every page encodable as UTF-8. :func:`display_warnings` tells a client,
field by field, when what it sent will not be shown as sent.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator, Mapping
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import nh3
import orjson

from feedsvc.domain.events import Occurred, Precision, parse_recorded_at, strip_xml_illegal
from feedsvc.domain.story import Development, Story
from feedsvc.rendering.model import Urls

ALLOWED_TAGS: frozenset[str] = frozenset(
    {"p", "a", "em", "strong", "blockquote", "ul", "ol", "li", "br", "time", "cite", "h2", "h3"}
)
"""The only elements an entry's HTML may contain."""

ALLOWED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "a": frozenset({"href"}),
    "time": frozenset({"datetime"}),
}
"""The only attributes, per element."""

URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto"})
"""The URL schemes a link may use; any other link loses its ``href``."""

CONTENT_DROPPED_TAGS: frozenset[str] = frozenset(
    {
        "script",
        "style",
        "template",
        "noscript",
        "iframe",
        "noembed",
        "noframes",
        "xmp",
        "plaintext",
        "textarea",
        "title",
    }
)
"""Elements removed with everything in them, in bodies and plain texts alike: scripts,
styles, templates, and the elements whose content a browser reads as raw text (it
would otherwise show as literal markup). Every other element outside the allowlist is
unwrapped and its text kept. (``svg`` and ``math`` content is dropped by the parser.)"""

_UNWRAPPED_BLOCKS = (
    "address|article|aside|caption|center|dd|details|dialog|div|dl|dt|fieldset|figcaption"
    "|figure|footer|form|h1|h4|h5|h6|header|hgroup|legend|main|nav|pre|section|summary"
    "|table|tbody|td|tfoot|th|thead|tr"
)
# A block outside the allowlist becomes a paragraph, so its text stays a block of its
# own rather than running into the next one's.
_UNWRAPPED_BLOCK_RE = re.compile(rf"<(/?)(?:{_UNWRAPPED_BLOCKS})(?=[\s/>])", re.IGNORECASE)
_EMPTY_PARAGRAPH_RE = re.compile(r"<p>\s*</p>")

# A tag-like run: a body holding one is treated as HTML, otherwise as plain text.
_TAG_RE = re.compile(r"</?[A-Za-z][^>]*>")
# A body with its own block structure keeps it; otherwise blank lines make paragraphs.
_BLOCK_RE = re.compile(r"<(?:p|blockquote|ul|ol|h2|h3)\b", re.IGNORECASE)
_PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t]*\n")


def text(value: str) -> str:
    """``value`` as HTML text: XML-illegal characters removed, then escaped."""
    return html.escape(strip_xml_illegal(value))


_DROPPED = set(CONTENT_DROPPED_TAGS)


@lru_cache(maxsize=65536)
def plain_text(value: str) -> str:
    """``value`` as plain text with no markup in it, for a feed's text fields.

    Tags are removed (with the content of :data:`CONTENT_DROPPED_TAGS`), entities are
    decoded, and this repeats until nothing changes, so markup hidden behind entities
    (``&lt;script&gt;``) is removed too. Leading and trailing whitespace is dropped.
    Remembered: names, places, publishers and topics recur in every feed.
    """
    current = strip_xml_illegal(value)
    for _ in range(16):
        stripped = html.unescape(nh3.clean(current, tags=set(), clean_content_tags=_DROPPED))
        if stripped == current:
            return current.strip()
        current = stripped
    return ""  # entities nested beyond reason: show nothing rather than markup


def clean_html(fragment: str, base_url: str) -> str:
    """Sanitize an HTML fragment to the allowlist; relative links resolve against
    ``base_url`` (an absolute URL), so every remaining ``href`` is absolute."""
    return _cleaner(base_url).clean(strip_xml_illegal(fragment))


_CLEANERS = threading.local()
_CLEANERS_KEPT = 1024


def _cleaner(base_url: str) -> nh3.Cleaner:
    """The allowlist's cleaner for links relative to ``base_url``: one per thread and
    base URL (building one costs about as much as cleaning a body), none shared
    between threads."""
    kept: dict[str, nh3.Cleaner] | None = getattr(_CLEANERS, "by_base", None)
    if kept is None:
        kept = _CLEANERS.by_base = {}
    cleaner = kept.get(base_url)
    if cleaner is None:
        if len(kept) >= _CLEANERS_KEPT:
            kept.clear()
        cleaner = kept[base_url] = nh3.Cleaner(
            tags=set(ALLOWED_TAGS),
            attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
            url_schemes=set(URL_SCHEMES),
            url_relative=("rewrite_with_base", base_url),
            link_rel=None,
            strip_comments=True,
            clean_content_tags=set(CONTENT_DROPPED_TAGS),
        )
    return cleaner


def body_html(body: str, base_url: str) -> str:
    """A development's body as sanitized HTML.

    A body without tags is plain text: it is escaped and its blank lines separate
    paragraphs. A body with tags but no block elements gets the same paragraphs around
    its inline markup; a body with block elements keeps its own structure, where a block
    outside the allowlist (``div``, ``section``, ``table``…) becomes a paragraph.
    """
    source = strip_xml_illegal(body).replace("\r\n", "\n").replace("\r", "\n")
    if _TAG_RE.search(source):
        source = _UNWRAPPED_BLOCK_RE.sub(r"<\1p", source)
    if not _BLOCK_RE.search(source):
        is_markup = bool(_TAG_RE.search(source))
        paragraphs = [p.strip() for p in _PARAGRAPH_BREAK_RE.split(source) if p.strip()]
        source = "".join(
            f"<p>{p if is_markup else html.escape(p, quote=False)}</p>" for p in paragraphs
        )
    return _EMPTY_PARAGRAPH_RE.sub("", clean_html(source, base_url))


def occurred_html(occurred: Occurred) -> str:
    """A ``<time>`` element for when something happened, at its real precision:
    ``<time datetime="2016-11">November 2016</time>``."""
    if occurred.precision is Precision.INSTANT:
        # HTML allows at most milliseconds; the minute is what the reader is shown
        machine = occurred.start.strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        machine = occurred.text
    return f'<time datetime="{html.escape(machine)}">{html.escape(occurred.human())}</time>'


def recorded_html(recorded_at: str) -> str:
    """A ``<time>`` element for the day the log recorded something."""
    day = parse_recorded_at(recorded_at).date()
    return occurred_html(Occurred.parse(day.isoformat()))


def kind_label(kind: str) -> str:
    """A development kind as a reader sees it: ``executive-action`` → ``Executive action``."""
    return kind.replace("-", " ").capitalize()


def _list(title: str, items: list[str]) -> str:
    if not items:
        return ""
    rows = "".join(f"<li>{item}</li>" for item in items)
    return f"<p><strong>{title}</strong></p><ul>{rows}</ul>"


def plain_html(value: str) -> str:
    """``value`` as HTML text with any markup in it removed first (see :func:`plain_text`)."""
    return html.escape(plain_text(value))


def headline_text(dev: Development) -> str:
    """A development's headline as every feed and page shows it: plain text, or the
    development's id when removing the markup leaves nothing."""
    return plain_text(dev.headline) or dev.development_id


def development_html(
    story: Story, dev: Development, urls: Urls, *, with_story: bool, body_dir: bool = False
) -> str:
    """The sanitized HTML of one development: what an entry's content and a timeline
    article show.

    In order: the retraction notice (``Retracted: reason``), one visible note per
    correction (``Correction (date): note``), when it happened and its kind, the body,
    the quotes, the sources (absolute links), the people, organizations and places, and,
    with ``with_story``, a link to the story it belongs to. The body is HTML kept to the
    allowlist (:func:`body_html`); every other text is plain text (:func:`plain_html`).
    With ``body_dir`` the body is wrapped in ``<div dir="auto">`` (pages), so a
    right-to-left body reads in its own direction.
    """
    esc = plain_html
    page = urls.story_page(story.slug)

    def named(name: str, role: str | None) -> str:
        return esc(name) + (f", {esc(role)}" if role else "")

    before: list[str] = []
    if dev.retraction is not None:
        before.append(
            f"<p><strong>Retracted:</strong> {esc(dev.retraction.reason)}"
            f" ({recorded_html(dev.retraction.recorded_at)})</p>"
        )
    for correction in dev.corrections:
        before.append(
            f"<p><strong>Correction ({recorded_html(correction.recorded_at)}):</strong>"
            f" {esc(correction.note)}</p>"
        )
    before.append(f"<p>{occurred_html(dev.occurred)} · {esc(kind_label(dev.kind))}</p>")
    body = body_html(dev.body, page)
    after: list[str] = []
    for quote in dev.quotes:
        after.append(
            f"<blockquote><p>{esc(quote.text)}</p></blockquote>"
            f"<p>— {named(quote.speaker, quote.role)}</p>"
        )
    after.append(
        _list(
            "Sources",
            [
                f'<a href="{text(s.url)}">{esc(s.title)}</a>'
                + (f", {esc(s.publisher)}" if s.publisher else "")
                for s in dev.sources
            ],
        )
    )
    after.append(_list("People", [named(p.name, p.role) for p in dev.people]))
    after.append(_list("Organizations", [esc(o) for o in dev.organizations]))
    after.append(_list("Places", [esc(p) for p in dev.places]))
    if with_story:
        after.append(f'<p>Story: <a href="{text(page)}">{esc(story.title)}</a></p>')
    if not body_dir:
        return clean_html("".join(before) + body + "".join(after), page)
    # the body is clean already; the wrapper is not in the allowlist, so it goes on after
    return (
        clean_html("".join(before), page)
        + f'<div dir="auto">{body}</div>'
        + clean_html("".join(after), page)
    )


# -- telling a client what will not be shown as sent ---------------------------------------

_Path = tuple[str, ...]
_SOURCE_TEXTS: tuple[_Path, ...] = (("sources", "*", "title"), ("sources", "*", "publisher"))
_DEVELOPMENT_TEXTS: tuple[_Path, ...] = (
    *_SOURCE_TEXTS,
    ("people", "*", "name"),
    ("people", "*", "role"),
    ("organizations", "*"),
    ("places", "*"),
    ("topics", "*"),
)
_SHOWN_FIELDS: dict[str, tuple[_Path, ...]] = {
    "story.opened": (("title",), ("summary",), ("topics", "*"), ("places", "*")),
    "development.reported": (("headline",), ("body",), *_DEVELOPMENT_TEXTS),
    "quote.attributed": (("speaker",), ("role",), ("text",)),
    "development.corrected": (
        ("changes", "headline"),
        ("changes", "body"),
        *(("changes", *path) for path in _DEVELOPMENT_TEXTS),
        ("note",),
    ),
    "development.retracted": (("reason",),),
    "story.retitled": (("title",), ("summary",)),
    "story.retagged": (("topics", "*"), ("places", "*")),
    "followup.expected": (("description",), ("subjects", "*")),
    "followup.resolved": (("note",),),
}
"""Per event type, the texts a reader is shown (``*``: every item of a list): the
``body`` fields are HTML kept to the allowlist, all others plain text."""
_NOUNS = {
    "headline": "headlines are",
    "title": "titles are",
    "summary": "summaries are",
    "text": "quotes are",
    "speaker": "names are",
    "name": "names are",
    "role": "roles are",
    "publisher": "publishers are",
    "organizations": "organizations are",
    "places": "places are",
    "topics": "topics are",
    "subjects": "subjects are",
    "note": "notes are",
    "reason": "reasons are",
    "description": "descriptions are",
}
_ALLOWED_LIST = ", ".join(sorted(ALLOWED_TAGS))
_BODY_RULE = (
    f"elements outside {_ALLOWED_LIST} are unwrapped (their text kept),"
    f" {', '.join(sorted(CONTENT_DROPPED_TAGS))} are dropped with their content,"
    " attributes other than "
    + ", ".join(f"{a} on {t}" for t, names in sorted(ALLOWED_ATTRIBUTES.items()) for a in names)
    + f" are dropped, and links keep only {', '.join(sorted(URL_SCHEMES))} URLs"
)


def _pointer_part(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _texts(value: Any, path: _Path, pointer: str) -> Iterator[tuple[str, str]]:
    """(JSON pointer, text) of every string ``path`` names in ``value``."""
    if not path:
        if isinstance(value, str):
            yield pointer, value
        return
    head, rest = path[0], path[1:]
    if head == "*":
        if isinstance(value, list):
            for index, item in enumerate(value):
                yield from _texts(item, rest, f"{pointer}/{index}")
    elif isinstance(value, Mapping) and head in value:
        yield from _texts(value[head], rest, f"{pointer}/{_pointer_part(head)}")


_MAY_SHOW_OTHERWISE = ("<", "&", "\r", "\ufeff")
"""The characters that can make a plain text show otherwise than sent (beyond the
characters XML cannot carry and the surrounding whitespace): markup, entities, a
carriage return, a byte order mark. A text without any is shown as sent."""


def _may_show_otherwise_text(value: str) -> bool:
    """Whether ``value`` holds a character of :data:`_MAY_SHOW_OTHERWISE` (a search
    per character: faster than a regular expression over long texts)."""
    return any(character in value for character in _MAY_SHOW_OTHERWISE)


def _may_show_otherwise(value: Any, path: _Path) -> bool:
    """Whether a string ``path`` names in ``value`` holds a character of
    :data:`_MAY_SHOW_OTHERWISE` (a body without ``<`` is shown as sent too)."""
    if not path:
        return isinstance(value, str) and _may_show_otherwise_text(value)
    head, rest = path[0], path[1:]
    if head == "*":
        if isinstance(value, list):
            for item in value:
                if _may_show_otherwise(item, rest):
                    return True
        return False
    return isinstance(value, Mapping) and head in value and _may_show_otherwise(value[head], rest)


_MAY_SHOW_OTHERWISE_JSON = (b"<", b"&", b"\\r", "\ufeff".encode())
"""The characters of :data:`_MAY_SHOW_OTHERWISE` in JSON text as orjson writes it
(UTF-8, a carriage return escaped)."""


def _may_warn(data: Any, paths: tuple[_Path, ...]) -> bool:
    """Whether a text ``paths`` name in ``data`` may warn. The whole of ``data`` is
    looked at first, as JSON, in one pass: most events hold no such character in any
    field; when one does (perhaps in a field not shown) the shown texts are looked at."""
    try:
        text = orjson.dumps(data)
    except TypeError:
        pass
    else:
        if not any(marker in text for marker in _MAY_SHOW_OTHERWISE_JSON):
            return False
    return any(_may_show_otherwise(data, path) for path in paths)


def _plain_warning(pointer: str, value: str) -> str | None:
    """The warning for a plain-text field, if the reader will not see ``value``."""
    if not _may_show_otherwise_text(value):
        return None
    shown = plain_text(value)
    if shown == strip_xml_illegal(value).strip():
        return None
    field = pointer.rsplit("/", 1)[-1]
    if field.isdigit():
        field = pointer.rsplit("/", 2)[-2]
    noun = _NOUNS.get(field, "texts are")
    if not shown:
        return f"{noun} plain text: markup removed, which leaves nothing to show"
    return f"{noun} plain text: markup removed; shown as {shown!r}"


class _Markup(HTMLParser):
    """What an HTML fragment holds that the allowlist will not keep."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: set[str] = set()
        self.attributes: set[str] = set()
        self.links: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.elements.add(tag)
            return
        kept = ALLOWED_ATTRIBUTES.get(tag, frozenset())
        for name, value in attrs:
            if name not in kept:
                self.attributes.add(f"{name} on <{tag}>")
            elif tag == "a" and name == "href":
                scheme = urlsplit((value or "").strip()).scheme.lower()
                if scheme and scheme not in URL_SCHEMES:
                    self.links.add(f"{scheme}:")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def _body_warning(pointer: str, value: str) -> str | None:
    """The warning for a body, if the reader will not see it as sent: only markup the
    allowlist does not keep counts, never whitespace or the paragraphs a plain body
    is given."""
    source = strip_xml_illegal(value)
    if not _TAG_RE.search(source):
        return None  # plain text, shown as written
    markup = _Markup()
    markup.feed(source)
    markup.close()
    removed: list[str] = []
    if markup.elements:
        removed.append("elements " + ", ".join(f"<{t}>" for t in sorted(markup.elements)))
    if markup.attributes:
        removed.append("attributes " + ", ".join(sorted(markup.attributes)))
    if markup.links:
        removed.append("links to " + ", ".join(sorted(markup.links)))
    if not removed:
        return None
    return f"removed what the allowlist does not keep ({'; '.join(removed)}): {_BODY_RULE}"


def display_warnings(event_type: str, data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Where an event's texts will not be shown as sent, and how they will be shown.

    Returns ``(pointer, message)`` pairs in field order, ``pointer`` a JSON pointer
    relative to the event object (``/data/headline``, ``/data/quotes/0/text``…). Plain
    text fields (headlines, titles, summaries, quotes, names, roles, sources' titles and
    publishers, topics, places, notes, reasons, follow-up descriptions) warn when markup
    or entities in them are removed, naming the text shown. Bodies warn when they hold
    elements, attributes or link schemes the allowlist does not keep; whitespace and
    paragraph wrapping never warn. An unknown type, or a field of the wrong type, gives
    no warning: validating the event is not this function's job. Pure: no I/O, no clock.
    """
    paths = _SHOWN_FIELDS.get(event_type, ())
    if not paths or not _may_warn(data, paths):
        return []
    warnings: list[tuple[str, str]] = []
    for path in paths:
        check = _body_warning if path[-1] == "body" else _plain_warning
        for pointer, value in _texts(data, path, "/data"):
            if (message := check(pointer, value)) is not None:
                warnings.append((pointer, message))
    return warnings

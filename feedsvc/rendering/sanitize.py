"""What a development looks like in HTML, and the rules that keep every text safe.

Text leaves feedsvc in two forms:

* **HTML** (an entry's content, the pages). Every text from the events is escaped with
  :func:`html.escape`; a development's body, which may hold simple markup, is kept to a
  small allowlist by nh3; and the assembled fragment passes the allowlist once more, which
  resolves relative links against the story page and drops every URL that is not
  ``http``, ``https`` or ``mailto``.
* **Plain text in feeds** (titles, category labels, the JSON Feed extension). Feed readers
  disagree about whether an RSS or Atom title is HTML, so markup is removed from these
  texts (:func:`plain_text`) rather than escaped.

Both drop the characters XML 1.0 cannot carry (:func:`~feedsvc.domain.events.strip_xml_illegal`),
which also keeps every page encodable as UTF-8.
"""

from __future__ import annotations

import html
import re
import threading
from functools import lru_cache

import nh3

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

# A tag-like run: a body holding one is treated as HTML, otherwise as plain text.
_TAG_RE = re.compile(r"</?[A-Za-z][^>]*>")
# A body with its own block structure keeps it; otherwise blank lines make paragraphs.
_BLOCK_RE = re.compile(r"<(?:p|blockquote|ul|ol|h2|h3)\b", re.IGNORECASE)
_PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t]*\n")


def text(value: str) -> str:
    """``value`` as HTML text: XML-illegal characters removed, then escaped."""
    return html.escape(strip_xml_illegal(value))


@lru_cache(maxsize=65536)
def plain_text(value: str) -> str:
    """``value`` as plain text with no markup in it, for a feed's text fields.

    Tags are removed (the content of ``script`` and ``style`` with them), entities are
    decoded, and this repeats until nothing changes, so markup hidden behind entities
    (``&lt;script&gt;``) is removed too. Leading and trailing whitespace is dropped.
    Remembered: names, places, publishers and topics recur in every feed.
    """
    current = strip_xml_illegal(value)
    for _ in range(16):
        stripped = html.unescape(nh3.clean(current, tags=set()))
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
        )
    return cleaner


def body_html(body: str, base_url: str) -> str:
    """A development's body as sanitized HTML.

    A body without tags is plain text: it is escaped and its blank lines separate
    paragraphs. A body with tags but no block elements gets the same paragraphs around
    its inline markup; a body with block elements keeps its own structure.
    """
    source = strip_xml_illegal(body).replace("\r\n", "\n").replace("\r", "\n")
    if not _BLOCK_RE.search(source):
        is_markup = bool(_TAG_RE.search(source))
        paragraphs = [p.strip() for p in _PARAGRAPH_BREAK_RE.split(source) if p.strip()]
        source = "".join(
            f"<p>{p if is_markup else html.escape(p, quote=False)}</p>" for p in paragraphs
        )
    return clean_html(source, base_url)


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


def development_html(
    story: Story, dev: Development, urls: Urls, *, with_story: bool, strip_markup: bool
) -> str:
    """The sanitized HTML of one development: what an entry's content and a timeline
    article show.

    In order: the retraction notice (``Retracted: reason``), one visible note per
    correction (``Correction (date): note``), when it happened and its kind, the body,
    the quotes, the sources (absolute links), the people, organizations and places, and,
    with ``with_story``, a link to the story it belongs to. Texts other than the body
    are escaped; with ``strip_markup`` (feeds) markup in them is removed first, so they
    read as they do in the feed's plain-text fields.
    """
    esc = plain_html if strip_markup else text
    page = urls.story_page(story.slug)

    def named(name: str, role: str | None) -> str:
        return esc(name) + (f", {esc(role)}" if role else "")

    parts: list[str] = []
    if dev.retraction is not None:
        parts.append(
            f"<p><strong>Retracted:</strong> {esc(dev.retraction.reason)}"
            f" ({recorded_html(dev.retraction.recorded_at)})</p>"
        )
    for correction in dev.corrections:
        parts.append(
            f"<p><strong>Correction ({recorded_html(correction.recorded_at)}):</strong>"
            f" {esc(correction.note)}</p>"
        )
    parts.append(f"<p>{occurred_html(dev.occurred)} · {esc(kind_label(dev.kind))}</p>")
    parts.append(body_html(dev.body, page))
    for quote in dev.quotes:
        parts.append(
            f"<blockquote><p>{esc(quote.text)}</p></blockquote>"
            f"<p>— {named(quote.speaker, quote.role)}</p>"
        )
    parts.append(
        _list(
            "Sources",
            [
                f'<a href="{text(s.url)}">{esc(s.title)}</a>'
                + (f", {esc(s.publisher)}" if s.publisher else "")
                for s in dev.sources
            ],
        )
    )
    parts.append(_list("People", [named(p.name, p.role) for p in dev.people]))
    parts.append(_list("Organizations", [esc(o) for o in dev.organizations]))
    parts.append(_list("Places", [esc(p) for p in dev.places]))
    if with_story:
        parts.append(f'<p>Story: <a href="{text(page)}">{esc(story.title)}</a></p>')
    return clean_html("".join(parts), page)

"""Feeds and pages over HTTP, served from precomputed documents.

A request does no rendering and no compressing: it picks the stored body (identity,
gzip or brotli by ``Accept-Encoding``), answers 304 when a validator matches (the ETag
wins over ``If-Modified-Since``), and sets ``Vary``, ``Cache-Control``, ``ETag`` and
``Last-Modified``. ``?as_of=<RFC 3339>`` answers with what the service knew then.

Most requests are for a current document already in memory: :class:`CachedDocuments`
answers those without awaiting anything, with headers built once per document and
encoding; everything else goes through :func:`serve_document`.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, NamedTuple

from aiohttp import hdrs, web
from multidict import CIMultiDict

from feedsvc.errors import FieldProblem, NotFound, ValidationFailed
from feedsvc.projections.documents import Document
from feedsvc.web.keys import PROJECTIONS, SETTINGS

if TYPE_CHECKING:
    from feedsvc.projections.runner import ProjectionRunner

_ENCODINGS = ("br", "gzip")


def choose_encoding(accept: str) -> str:
    """``br``, ``gzip`` or ``identity`` from an ``Accept-Encoding`` header (q-values
    honoured; ties go to brotli, the smaller)."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights[name] = q
    best, best_q = "identity", 0.0
    for encoding in _ENCODINGS:
        q = weights.get(encoding, weights.get("*", 0.0))
        if q > best_q:
            best, best_q = encoding, q
    return best


def _etag(doc: Document, encoding: str) -> str:
    # a strong ETag names one representation: each encoding has its own
    return doc.etag if encoding == "identity" else f'{doc.etag[:-1]}-{encoding}"'


def _not_modified(request: web.Request, doc: Document) -> bool:
    inm = request.headers.get(hdrs.IF_NONE_MATCH)
    if inm is not None:
        if inm == doc.etag or inm.strip() == "*":
            return True
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return bool(tags & {doc.etag, *(_etag(doc, e) for e in _ENCODINGS)})
    ims = request.headers.get(hdrs.IF_MODIFIED_SINCE)
    if ims is not None:
        try:
            since = parsedate_to_datetime(ims)
            return parsedate_to_datetime(doc.last_modified) <= since
        except (TypeError, ValueError):
            return False
    return False


def parse_as_of(value: str) -> datetime:
    """An RFC 3339 time with offset, or a 400 naming the ``as_of`` parameter."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or "T" not in value.upper():
        raise ValidationFailed(
            [
                FieldProblem(
                    "as_of",
                    f"{value!r} is not an RFC 3339 time with offset, e.g. 2017-10-12T16:00:00Z",
                    "parameter",
                )
            ],
            what="request",
        )
    return moment


async def serve_document(request: web.Request) -> web.StreamResponse:
    """GET and HEAD of every feed and page."""
    app = request.app
    runner = app[PROJECTIONS]
    path = request.path
    as_of = request.query.get("as_of") if request.query_string else None
    if as_of is not None:
        doc = await runner.document_as_of(path, parse_as_of(as_of), as_of)
    else:
        doc = await runner.document(path)
        if doc is None and "page" in request.match_info:
            doc = await runner.archive_document(path)
    if doc is None:
        redirect = await _archive_not_full(request)
        if redirect is None:
            raise _not_found(request)
        return redirect
    return _answer(request, doc, app[SETTINGS].cache_max_age)


class CachedDocuments:
    """The fast path of :func:`serve_document` for one app: a current document held in
    memory, answered without awaiting anything (most feed requests)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._runner: ProjectionRunner | None = None
        self._max_age = 0

    def answer(self, request: web.Request) -> web.Response | None:
        """What :func:`serve_document` would answer, if the document is in memory and
        current and no ``as_of`` is asked for; None otherwise (then ask it)."""
        url = request.rel_url
        path = url.path_safe  # the router's, already decoded (but for %2F and %25)
        if url.raw_query_string or "%" in path:
            return None
        runner = self._runner
        if runner is None:  # the app's projections exist once it has started
            if PROJECTIONS not in self.app:
                return None
            runner = self._runner = self.app[PROJECTIONS]
            self._max_age = self.app[SETTINGS].cache_max_age
        doc = runner.cached(path)
        return None if doc is None else _answer(request, doc, self._max_age)


def _answer(request: web.Request, doc: Document, max_age: int) -> web.Response:
    """``doc`` in the encoding the request accepts, or a 304 if it has it already."""
    headers = request.headers
    accept = headers.get(hdrs.ACCEPT_ENCODING)  # istr names: no case folding per look-up
    encoding = _encoding_of(accept) if accept else "identity"
    found = _headers(doc, encoding, max_age)
    if (hdrs.IF_NONE_MATCH in headers or hdrs.IF_MODIFIED_SINCE in headers) and _not_modified(
        request, doc
    ):
        return web.Response(status=304, headers=found.not_modified)
    return web.Response(body=doc.encoded(encoding), headers=found.full)


class _Headers(NamedTuple):
    """The headers of one document in one encoding: of a 200 and of a 304."""

    full: CIMultiDict[str]
    not_modified: CIMultiDict[str]


_HEADERS: dict[tuple[str, str, str, int], _Headers] = {}
_ENCODING_OF: dict[str, str] = {}


def _encoding_of(accept: str) -> str:
    """:func:`choose_encoding`, remembered per ``Accept-Encoding`` value (clients send
    few distinct ones; this runs on every feed request)."""
    found = _ENCODING_OF.get(accept)
    if found is None:
        found = choose_encoding(accept)
        if len(_ENCODING_OF) >= 1024:
            _ENCODING_OF.clear()
        _ENCODING_OF[accept] = found
    return found


def _headers(doc: Document, encoding: str, max_age: int) -> _Headers:
    """The headers of a 200 and of a 304 for one representation, built once per
    document and encoding (this runs on every feed request)."""
    key = (doc.path, doc.etag, encoding, max_age)
    found = _HEADERS.get(key)
    if found is None:
        validators = {
            "ETag": _etag(doc, encoding),
            "Last-Modified": doc.last_modified,
            "Cache-Control": f"public, max-age={max_age}",
            "Vary": "Accept-Encoding",
        }
        full = {**validators, "Content-Type": doc.content_type}
        if encoding != "identity":
            full["Content-Encoding"] = encoding
        if len(_HEADERS) >= 8192:
            _HEADERS.clear()
        found = _HEADERS[key] = _Headers(CIMultiDict(full), CIMultiDict(validators))
    return found


async def _archive_not_full(request: web.Request) -> web.Response | None:
    """The archive page after the newest full one: it will exist once it fills (and the
    newest full page already links to it), so until then it redirects to the current
    document, where its entries are."""
    page = request.match_info.get("page")
    if page is None:
        return None
    stem = request.path.rsplit("/archive/", 1)[0]
    fmt = request.match_info["fmt"]
    previous = f"{stem}/archive/{int(page) - 1}.{fmt}"
    runner = request.app[PROJECTIONS]
    # either may be recorded and not rendered yet (after a rebuild, say)
    if await runner.document(f"{stem}.{fmt}") is None:
        return None
    if (
        page != "1"
        and runner.stored(previous) is None
        and await runner.archive_document(previous) is None
    ):
        return None
    return web.Response(
        status=307,
        headers={"Location": f"{stem}.{fmt}", "Cache-Control": "no-cache"},
    )


def _not_found(request: web.Request) -> NotFound:
    runner = request.app[PROJECTIONS]
    parts = request.path.strip("/").split("/")
    if "topics" in parts:
        known = sorted(runner.labels("topics/"))
        what = "topic"
    else:
        known = sorted(runner.labels("stories/"))
        what = "story"
    listing = ", ".join(known[:50]) or "none yet"
    return NotFound(
        f"no {what} or feed at {request.path}; known {what} slugs: {listing}. "
        "Feeds live at /feeds/all.atom, /feeds/stories/<slug>.rss, "
        "/feeds/topics/<topic>.json (atom, rss or json)."
    )

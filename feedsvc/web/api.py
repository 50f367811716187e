"""The HTTP API for services: append to a story, follow the log.

* ``POST /api/stories/{slug}/events`` appends one event or an array of them,
  atomically, with a bearer token, an optional expected version (in the body or
  ``If-Match``) and idempotency by event id.
* ``GET /api/events`` reads the global log after a cursor, optionally long-polling;
  ``GET /api/stories/{slug}/events`` reads one story's stream;
  ``GET /api/events/live`` tails the log as Server-Sent Events, resuming after
  ``Last-Event-ID``.

Every refusal is an exception of :mod:`feedsvc.errors`, answered as RFC 9457
``application/problem+json`` by :mod:`feedsvc.web.problems`; no refused request
writes anything.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp_sse import sse_response

from feedsvc import urls
from feedsvc.auth import TokenInfo, ensure_admin_token, retry_after
from feedsvc.domain.events import (
    ValidEvent,
    is_slug,
)
from feedsvc.errors import (
    FieldProblem,
    Forbidden,
    MalformedBody,
    NoStory,
    PreconditionFailed,
    ProblemPlace,
    RateLimited,
    StoreError,
    StoryExists,
    TooLarge,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    WrongExpectedVersion,
)
from feedsvc.rendering.sanitize import display_warnings
from feedsvc.store import make_token_store
from feedsvc.store.port import AppendResult, EventStore, Expected
from feedsvc.web.keys import (
    COORDINATOR,
    METRICS,
    READ_AHEAD,
    SERVICE,
    SETTINGS,
    STOPPING,
    STORE,
    TOKENS,
)
from feedsvc.web.models import (
    MAX_POSITION,
    EventPage,
    LiveQuery,
    LogCursor,
    StreamCursor,
    StreamPage,
    log_query,
    stream_query,
)
from feedsvc.web.ops import ACTOR, REQUEST_ID, REQUEST_ID_HEADER

log = logging.getLogger("feedsvc.web")

SERVER_FIELDS = ("position", "recorded_at", "version", "stream")
"""Facts about an event that only the log may state."""
ENVELOPE_FIELDS = ("expected_version", "events")
JSON_TYPE = "application/json"
_ETAG_RE = re.compile(r'^"(\d{1,18})"$')

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bad_parameter(name: str, detail: str, place: ProblemPlace = "parameter") -> ValidationFailed:
    return ValidationFailed([FieldProblem(name, detail, place)], what="request")


# -- application life ---------------------------------------------------------------


async def tokens_ctx(app: web.Application) -> AsyncIterator[None]:
    """The token store and the first admin token."""
    settings = app[SETTINGS]
    tokens = make_token_store(settings)
    await tokens.open()
    try:
        path = await ensure_admin_token(tokens, settings.data_dir)
        if path is not None:
            log.warning("first start: wrote an admin token to %s (mode 0600)", path)
            print(f"feedsvc: first start: an admin token is in {path}", flush=True)
        app[TOKENS] = tokens
        app[STOPPING] = asyncio.Event()
        yield
    finally:
        await tokens.close()


async def stop_followers(app: web.Application) -> None:
    """On shutdown, end long polls and live streams so the appends in flight are
    all the server still waits for."""
    if STOPPING in app:
        app[STOPPING].set()


# -- append -------------------------------------------------------------------------


async def _authenticate(request: web.Request) -> TokenInfo:
    header = request.headers.get("Authorization", "")
    if not header:
        raise Unauthorized(
            "appending needs a bearer token: send 'Authorization: Bearer <token>' "
            "(an operator creates one with `feedsvc token create`)"
        )
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized(
            "the Authorization header must be 'Bearer <token>'", challenge_error="invalid_request"
        )
    token = await request.app[TOKENS].authenticate(secret)
    if token is None:
        raise Unauthorized(
            "the bearer token is unknown or revoked; ask an operator for a valid one",
            challenge_error="invalid_token",
        )
    request[ACTOR] = token.name
    return token


async def _check_rate(request: web.Request, token: TokenInfo) -> None:
    """Spend one append from the token's bucket, shared by every replica."""
    app = request.app
    settings = app[SETTINGS]
    rate, burst = settings.token_rate_per_s, settings.token_burst
    wait = await app[COORDINATOR].take(f"token:{token.name}", rate, burst)
    if wait > 0:
        after = retry_after(wait)
        raise RateLimited(
            f"token {token.name!r} may append {rate:g} times a second "
            f"(bursts of {max(1, burst):g}); retry after {after} s",
            retry_after=after,
        )


async def _read_json_body(request: web.Request) -> Any:
    settings = request.app[SETTINGS]
    if request.content_type != JSON_TYPE or (
        request.charset is not None and request.charset.lower() not in ("utf-8", "utf8")
    ):
        sent = request.headers.get("Content-Type", "no Content-Type")
        raise UnsupportedMediaType(
            f"send the events as {JSON_TYPE} (UTF-8), not {sent}", accepted=JSON_TYPE
        )
    too_large = TooLarge(
        f"the body is larger than {settings.max_body_bytes} bytes; "
        "split the events over several requests",
        "max_body_bytes",
        settings.max_body_bytes,
    )
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise too_large
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    if len(body) > settings.max_body_bytes:
        raise too_large
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise _malformed(body, e) from None


def _malformed(body: bytes, error: orjson.JSONDecodeError) -> MalformedBody:
    """Why ``body`` is not JSON, naming the field where that can be found: a string
    holding invalid UTF-8 or a lone surrogate (``"\\ud800"``) is well-formed JSON
    text for Python's own parser, which finds it for the pointer."""
    try:
        text = body.decode("utf-8")
        bad_byte: int | None = None
    except UnicodeDecodeError as e:
        text = body.decode("utf-8", "surrogateescape")
        bad_byte = e.start
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        if bad_byte is not None:
            message = f"invalid UTF-8: byte 0x{body[bad_byte]:02x} at offset {bad_byte}"
        else:
            message = f"not valid JSON: {error.msg}"
        return MalformedBody([FieldProblem("", message)])
    found = _first_unencodable(value, "")
    if found is None:  # orjson and json disagree on something else: say what orjson said
        return MalformedBody([FieldProblem("", f"not valid JSON: {error.msg}")])
    pointer, char = found
    if bad_byte is not None and 0xDC80 <= ord(char) <= 0xDCFF:
        message = f"invalid UTF-8: byte 0x{ord(char) - 0xDC00:02x} is not part of a character"
    else:
        message = (
            f"a lone surrogate (\\u{ord(char):04x}) is not a Unicode character; "
            "send the pair, or the character itself in UTF-8"
        )
    return MalformedBody([FieldProblem(pointer, message)])


def _is_surrogate(char: str) -> bool:
    return 0xD800 <= ord(char) <= 0xDFFF


def _first_unencodable(value: Any, pointer: str) -> tuple[str, str] | None:
    """The JSON pointer of the first string (member name or value) in ``value`` that
    holds a surrogate code point, with that code point."""
    if isinstance(value, str):
        bad = next((c for c in value if _is_surrogate(c)), None)
        return None if bad is None else (pointer, bad)
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_unencodable(item, f"{pointer}/{index}")
            if found is not None:
                return found
    if isinstance(value, dict):
        for key, item in value.items():
            safe = "".join("\ufffd" if _is_surrogate(c) else c for c in key)
            member = f"{pointer}/{safe.replace('~', '~0').replace('/', '~1')}"
            bad = next((c for c in key if _is_surrogate(c)), None)
            if bad is not None:
                return member, bad
            found = _first_unencodable(item, member)
            if found is not None:
                return found
    return None


def _expected_from(value: Any, pointer: str) -> Expected:
    if value in ("any", "no_stream"):
        return value  # type: ignore[no-any-return]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValidationFailed(
        [FieldProblem(pointer, 'must be a version (0 or more), "any" or "no_stream"')],
        what="request",
    )


def _if_match(request: web.Request) -> Expected | None:
    header = request.headers.get("If-Match")
    if header is None:
        return None
    value = header.strip()
    if value == "*":
        return "any"
    m = _ETAG_RE.match(value)
    if m is None:
        raise _bad_parameter(
            "If-Match",
            f'{value!r} is not one strong ETag of the stream, such as "7" '
            "(the version you last read)",
            place="header",
        )
    return int(m[1])


def _expected(in_body: Expected | None, in_header: Expected | None) -> Expected:
    """The expected version from the body or ``If-Match`` (both: they must agree)."""
    if in_body is not None and in_header is not None and in_body != in_header:
        raise ValidationFailed(
            [
                FieldProblem(
                    "/expected_version",
                    f"says {in_body} but If-Match says {in_header}; send one of them",
                )
            ],
            what="request",
        )
    for value in (in_body, in_header):
        if value is not None:
            return value
    return "any"


@functools.lru_cache(maxsize=64)
def _prefix(form: str, count: int) -> str:
    """What to put before the pointers of :meth:`StoryService.validate` (which index
    events only when there are several) to make them point into the body."""
    base = "/events" if form == "envelope" else ""
    return base + ("/0" if count == 1 and form != "object" else "")


def _parse_append_body(body: Any) -> tuple[list[Any], Expected | None, str]:
    """The submitted events, the expected version in the body, and the body form."""
    if isinstance(body, list):
        return body, None, "array"
    if isinstance(body, dict) and "events" in body:
        problems = [
            FieldProblem(f"/{k}", "unknown field; the body holds expected_version and events")
            for k in body
            if k not in ENVELOPE_FIELDS
        ]
        events = body["events"]
        if not isinstance(events, list):
            problems.append(FieldProblem("/events", "must be an array of events"))
        expected: Expected | None = None
        if "expected_version" in body:
            try:
                expected = _expected_from(body["expected_version"], "/expected_version")
            except ValidationFailed as e:
                problems.extend(e.problems)
        if problems:
            raise ValidationFailed(problems, what="request")
        return events, expected, "envelope"
    if isinstance(body, dict):
        return [body], None, "object"
    raise ValidationFailed(
        [
            FieldProblem(
                "",
                "the body must be an event object, an array of events, "
                "or {expected_version, events}",
            )
        ],
        what="request",
    )


def _validate(request: web.Request, raw_events: list[Any], actor: str) -> list[ValidEvent]:
    """Validate every event, refusing the fields only the server may set."""
    many = len(raw_events) > 1
    problems: list[FieldProblem] = []
    cleaned: list[Any] = []
    for index, raw in enumerate(raw_events):
        if isinstance(raw, dict):
            where = f"/{index}" if many else ""
            for name in SERVER_FIELDS:
                if name in raw:
                    problems.append(
                        FieldProblem(
                            f"{where}/{name}",
                            f"{name} is set by the server when the event is appended; leave it out",
                        )
                    )
            raw = {k: v for k, v in raw.items() if k not in SERVER_FIELDS}
        cleaned.append(raw)
    try:
        valid = request.app[SERVICE].validate(cleaned, actor)
    except ValidationFailed as e:
        raise ValidationFailed(problems + e.problems) from None
    if problems:
        raise ValidationFailed(problems)
    return valid


_WARNING_BASES = {"object": "", "array": "/{index}"}
"""Where a submitted event is in the body, by the body's form (the envelope's
otherwise)."""


def _display_warnings(raw_events: list[Any], form: str) -> list[dict[str, str]]:
    """Where the submitted texts will not be shown as sent, pointing into the body:
    the ``warnings`` of the answer (each a ``feedsvc.web.models.AppendWarning``)."""
    warnings: list[dict[str, str]] = []
    base_format = _WARNING_BASES.get(form, "/events/{index}")
    for index, raw in enumerate(raw_events):
        found = display_warnings(raw["type"], raw["data"])
        if found:
            base = base_format.format(index=index)
            warnings += [{"pointer": base + pointer, "detail": text} for pointer, text in found]
    return warnings


def _append_answer(
    request: web.Request, slug: str, result: AppendResult, warnings: list[dict[str, str]]
) -> web.Response:
    """The answer to an append: a ``feedsvc.web.models.AppendResult`` body, serialized directly
    (its members in the model's order) rather than through the model, once per
    request."""
    settings = request.app[SETTINGS]
    first_version = result.version - len(result.ids) + 1
    body = orjson.dumps(
        {
            "stream": result.stream,
            "version": result.version,
            "events": [
                {"id": event_id, "position": position}
                for event_id, position in zip(result.ids, result.positions, strict=True)
            ],
            "recorded_at": result.recorded_at,
            "replayed": result.replayed,
            "warnings": warnings,
        }
    )
    # what was created: the stream read from the first appended event on
    location = f"{urls.route('read_stream').path(slug=slug)}?from_version={first_version}"
    headers = {"Location": settings.public_base_url.rstrip("/") + location}
    if not result.replayed:
        headers["ETag"] = f'"{result.version}"'
    return web.Response(
        status=200 if result.replayed else 201,
        body=body,
        content_type=JSON_TYPE,
        headers=headers,
    )


async def append_events(request: web.Request) -> web.StreamResponse:
    """``POST /api/stories/{slug}/events``: append events to one story."""
    app = request.app
    settings, store = app[SETTINGS], app[STORE]
    slug = request.match_info["slug"]
    token = await _authenticate(request)
    await _check_rate(request, token)
    if not token.scope.may_append(slug):
        raise Forbidden(
            f"token {token.name!r} (scope {token.scope}) may not append to story {slug!r}"
        )
    body = await _read_json_body(request)
    raw_events, body_expected, form = _parse_append_body(body)
    header_expected = _if_match(request)
    expected = _expected(body_expected, header_expected)
    if not raw_events:
        pointer = "/events" if form == "envelope" else ""
        raise ValidationFailed([FieldProblem(pointer, "no events to append")], what="request")
    if len(raw_events) > settings.max_events_per_request:
        raise TooLarge(
            f"{len(raw_events)} events in one request; at most "
            f"{settings.max_events_per_request} are accepted: split them over several requests",
            "max_events_per_request",
            settings.max_events_per_request,
        )
    prefix = _prefix(form, len(raw_events))
    try:
        valid = _validate(request, raw_events, token.name)
    except ValidationFailed as e:
        raise e.moved(prefix) from None
    opens = any(event.type == "story.opened" for event in valid)
    if opens and not token.scope.may_open:
        raise Forbidden(
            f"token {token.name!r} (scope {token.scope}) may append to its stories but "
            "not open new ones; opening needs scope append:* or admin"
        )
    if not is_slug(slug):
        raise _not_a_story(slug)
    started = time.perf_counter()
    try:
        result = await app[SERVICE].append_valid(slug, valid, expected)
    except ValidationFailed as e:
        raise e.moved(prefix) from None
    except StoryExists:
        # opened before, or by a concurrent request (perhaps not yet committed)
        raise StoryExists(slug, await _opened_version(store, slug)) from None
    except WrongExpectedVersion as e:
        if header_expected is not None:  # If-Match is a precondition (RFC 9110)
            raise PreconditionFailed(e.stream, e.expected, e.current) from None
        raise
    metrics = app[METRICS]
    if result.replayed:
        metrics.appends_replayed.inc()
    else:
        metrics.append_latency.observe(time.perf_counter() - started)
        metrics.appended_events.inc(len(result.ids))
        metrics.appends_written.inc()
    return _append_answer(request, slug, result, _display_warnings(raw_events, form))


async def _opened_version(store: EventStore, slug: str, patience: float = 5.0) -> int:
    """The version of a story that a concurrent request is opening, once committed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while (version := await store.stream_version(slug)) == 0:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await store.wait_for(await store.head() + 1, min(remaining, 0.5))
    return version


def _not_a_story(slug: str) -> NoStory:
    if not is_slug(slug):
        return NoStory(
            slug, f"{slug!r} is not a story slug (lowercase a-z, 0-9 and single hyphens)"
        )
    return NoStory(slug)


# -- follow -------------------------------------------------------------------------


async def _wait_for_commit(
    store: EventStore,
    position: int,
    timeout: float,
    stopping: asyncio.Event,
    *also: asyncio.Future[Any],
) -> None:
    """Wait until the log reaches ``position``, the timeout passes, the server stops
    or one of ``also`` completes."""
    waiter = asyncio.ensure_future(store.wait_for(position, timeout))
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait([waiter, stop, *also], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, stop):
            task.cancel()
        await asyncio.gather(waiter, stop, return_exceptions=True)


async def read_log(request: web.Request) -> web.StreamResponse:
    """``GET /api/events``: the log after a cursor, a page at a time, long-polling."""
    app = request.app
    settings, store, stopping = app[SETTINGS], app[STORE], app[STOPPING]
    read_ahead = app[READ_AHEAD]
    query = log_query(settings).parse(request.query)
    after, limit = query.after, query.limit
    wait = min(query.wait, settings.max_wait_s)
    types, stream = query.type or None, query.stream
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    start = after
    while True:
        head = await store.head()
        events = await read_ahead.page(start, limit, types=types, stream=stream, head=head)
        remaining = deadline - loop.time()
        if events.count or remaining <= 0 or stopping.is_set():
            break
        # nothing up to the head matched: later reads begin there
        start = max(start, head)
        await _wait_for_commit(store, start + 1, remaining, stopping)
    # a short page holds every match up to the head, so the cursor moves to the head
    cursor = events.last if events.count == limit and events.last is not None else max(start, head)
    return web.Response(
        body=EventPage.encode(events.json, LogCursor(next=cursor, head=head)),
        content_type=JSON_TYPE,
        headers={"Cache-Control": "no-store"},
    )


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or etag in tags or f"W/{etag}" in tags


async def read_stream(request: web.Request) -> web.StreamResponse:
    """``GET /api/stories/{slug}/events``: one story's stream, from a version on."""
    app = request.app
    settings, store = app[SETTINGS], app[STORE]
    slug = request.match_info["slug"]
    query = stream_query(settings).parse(request.query)
    from_version, limit = query.from_version, query.limit
    current = await store.stream_version(slug) if is_slug(slug) else 0
    if current == 0:
        raise _not_a_story(slug)
    etag = f'"{current}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    # the stream may grow meanwhile: answer exactly the version the ETag names
    events = [e for e in await store.read_stream(slug, from_version, limit) if e.version <= current]
    more = bool(events) and events[-1].version < current
    next_version = events[-1].version + 1 if more else None
    return web.Response(
        body=StreamPage.encode(
            b",".join(e.to_json() for e in events),
            StreamCursor(stream=slug, version=current, next=next_version),
        ),
        content_type=JSON_TYPE,
        headers=headers,
    )


async def live(request: web.Request) -> web.StreamResponse:
    """``GET /api/events/live``: every new event as a Server-Sent Event.

    Each event's SSE id is its position, so a reconnecting client (which sends
    ``Last-Event-ID``) resumes exactly after the last event it received. Events are
    read from the store at the client's own pace, a page (``sse_queue`` events) at a
    time, so a slow client holds at most one page; one that stops reading is dropped
    after the send timeout.
    """
    app = request.app
    settings, store, stopping = app[SETTINGS], app[STORE], app[STOPPING]
    query = LiveQuery.parse(request.query)
    types, stream = query.type or None, query.stream
    last_event_id = request.headers.get("Last-Event-ID", "").strip()
    if last_event_id:
        if not last_event_id.isdigit() or int(last_event_id) > MAX_POSITION:
            raise _bad_parameter(
                "Last-Event-ID", f"{last_event_id!r} is not an event position", place="header"
            )
        after = int(last_event_id)
    elif query.after is not None:
        after = query.after
    else:
        after = await store.head()
    page = max(1, min(settings.sse_queue, settings.max_page_size))
    heartbeat = max(settings.sse_heartbeat_s, 0.01)
    headers = {REQUEST_ID_HEADER: request[REQUEST_ID]} if REQUEST_ID in request else {}
    async with sse_response(
        request,
        headers=headers,
        ping_interval=heartbeat,
        send_timeout=max(4 * heartbeat, 1.0),
    ) as sse:
        gone = asyncio.ensure_future(sse.wait())
        cursor = after
        try:
            while not stopping.is_set() and not gone.done():
                head = await store.head()
                events = await store.read_all(cursor, page, types=types, stream=stream, upto=head)
                for event in events:
                    await sse.send(
                        event.to_json().decode(), id=str(event.position), event=event.type
                    )
                if len(events) == page:
                    cursor = events[-1].position
                    continue
                cursor = max(cursor, head)
                await _wait_for_commit(store, cursor + 1, heartbeat, stopping, gone)
        except (ConnectionResetError, TimeoutError, StoreError) as e:
            log.info("live stream ended: %s", type(e).__name__)
        finally:
            gone.cancel()
    return sse

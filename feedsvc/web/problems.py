"""RFC 9457 problem details, and the one place feedsvc errors become HTTP answers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from feedsvc.errors import (
    ConfigError,
    DuplicateEventId,
    FeedsvcError,
    FieldProblem,
    Forbidden,
    ImportFailed,
    MalformedBody,
    NoStory,
    NotAFeedsvcDatabase,
    NotFound,
    NotReady,
    PreconditionFailed,
    RateLimited,
    SchemaTooNew,
    StoreUnavailable,
    StoryExists,
    TooLarge,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    WrongExpectedVersion,
)
from feedsvc.web.models import Problem

PROBLEM_TYPE = "application/problem+json"
_BASE = "urn:feedsvc:problem:"
REALM = 'Bearer realm="feedsvc"'
"""The bearer challenge of every 401 (RFC 6750)."""


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """An ``application/problem+json`` response; ``extra`` are members of
    :class:`~feedsvc.web.models.Problem`."""
    body = Problem(
        type=_BASE + (slug or str(status)), title=title, status=status, detail=detail, **extra
    )
    return web.Response(
        status=status,
        body=body.to_json(),
        content_type=PROBLEM_TYPE,
        headers=headers,
    )


def problem_item(p: FieldProblem) -> dict[str, str]:
    """One member of a problem's ``errors``: where (``pointer``, ``parameter`` or
    ``header``) and what is wrong (``detail``)."""
    return {p.place: p.pointer, "detail": p.message}


def _version_conflict(
    error: WrongExpectedVersion, status: int, title: str, slug: str
) -> web.Response:
    return problem(
        status,
        title,
        str(error),
        slug=slug,
        headers={"ETag": f'"{error.current}"'},
        current_version=error.current,
        expected_version=error.expected,
    )


def problem_for(error: FeedsvcError) -> web.Response:
    """Map the exception tree to RFC 9457 answers, in one place."""
    detail = str(error)
    if isinstance(error, ValidationFailed):
        errors = [problem_item(p) for p in error.problems]
        if isinstance(error, MalformedBody):
            return problem(400, "Malformed JSON", detail, slug="malformed-json", errors=errors)
        places = {p.place for p in error.problems}
        if places == {"parameter"} or places == {"header"}:
            (place,) = places
            return problem(400, f"Invalid {place}", detail, slug=f"invalid-{place}", errors=errors)
        return problem(400, "Invalid request", detail, slug="invalid", errors=errors)
    if isinstance(error, Unauthorized):
        challenge = REALM + (f', error="{error.challenge_error}"' if error.challenge_error else "")
        invalid = error.challenge_error == "invalid_token"
        return problem(
            401,
            "Invalid token" if invalid else "Authentication required",
            detail,
            slug="invalid-token" if invalid else "unauthorized",
            headers={"WWW-Authenticate": challenge},
        )
    if isinstance(error, Forbidden):
        return problem(403, "Out of scope", detail, slug="forbidden")
    if isinstance(error, RateLimited):
        return problem(
            429,
            "Too many requests",
            detail,
            slug="rate-limited",
            headers={"Retry-After": error.retry_after},
        )
    if isinstance(error, UnsupportedMediaType):
        return problem(
            415,
            "Unsupported media type",
            detail,
            slug="unsupported-media-type",
            headers={"Accept-Post": error.accepted},
        )
    if isinstance(error, TooLarge):
        limit: dict[str, Any] = {error.limit_name: error.limit}
        return problem(413, "Request too large", detail, slug="too-large", **limit)
    if isinstance(error, NoStory):
        return problem(404, "Unknown story", detail, slug="unknown-story")
    if isinstance(error, NotFound):
        return problem(404, "Not found", detail, slug="not-found")
    if isinstance(error, StoryExists):
        return problem(
            409,
            "Story exists",
            detail,
            slug="story-exists",
            headers={"ETag": f'"{error.current}"'},
            current_version=error.current,
        )
    if isinstance(error, PreconditionFailed):
        return _version_conflict(error, 412, "Precondition failed", "precondition-failed")
    if isinstance(error, WrongExpectedVersion):
        return _version_conflict(error, 409, "Version conflict", "version-conflict")
    if isinstance(error, DuplicateEventId):
        return problem(
            409, "Event id conflict", detail, slug="id-conflict", event_id=error.event_id
        )
    if isinstance(error, NotReady):
        return problem(
            503,
            "Not ready",
            detail,
            slug="not-ready",
            headers={"Cache-Control": "no-store", "Retry-After": "5"},
            **{"checks": error.checks, **error.facts},
        )
    if isinstance(error, StoreUnavailable):
        return problem(
            503, "Store unavailable", detail, slug="unavailable", headers={"Retry-After": "1"}
        )
    if isinstance(error, NotAFeedsvcDatabase | SchemaTooNew | ConfigError | ImportFailed):
        return problem(500, "Server misconfigured", detail, slug="misconfigured")
    return problem(500, "Internal error", "the server could not answer", slug="internal")


def problem_for_http(request: web.Request, error: web.HTTPException) -> web.Response | None:
    """An aiohttp error without a body of its own (an unknown route, a wrong method, a
    body too large) as problem+json; None for the rest (redirects, answers that have
    their text), which go out as they are."""
    if error.status >= 400 and error.content_type != PROBLEM_TYPE and not error.text:
        return problem(error.status, error.reason, error.reason, headers=dict(error.headers))
    if error.status in (404, 405) and error.content_type == "text/plain":
        return problem(
            error.status,
            error.reason,
            f"{request.method} {request.path}: {error.reason.lower()}",
            headers={k: v for k, v in error.headers.items() if k == "Allow"},
        )
    return None

"""RFC 9457 problem details, and the one place feedsvc errors become HTTP answers."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from feedsvc.errors import (
    ConfigError,
    DuplicateEventId,
    FeedsvcError,
    ImportFailed,
    NotAFeedsvcDatabase,
    SchemaTooNew,
    StoreUnavailable,
    ValidationFailed,
    WrongExpectedVersion,
)

PROBLEM_TYPE = "application/problem+json"
_BASE = "urn:feedsvc:problem:"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """An ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": _BASE + (slug or str(status)),
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type=PROBLEM_TYPE,
        headers=headers,
    )


def problem_for(error: FeedsvcError) -> web.Response:
    """Map the exception tree to HTTP, in one place."""
    if isinstance(error, ValidationFailed):
        return problem(
            400,
            "Invalid request",
            str(error),
            slug="invalid",
            errors=[{"pointer": p.pointer, "detail": p.message} for p in error.problems],
        )
    if isinstance(error, WrongExpectedVersion):
        return problem(
            409,
            "Version conflict",
            str(error),
            slug="version-conflict",
            headers={"ETag": f'"{error.current}"'},
            current_version=error.current,
            expected_version=error.expected,
        )
    if isinstance(error, DuplicateEventId):
        return problem(
            409, "Event id conflict", str(error), slug="id-conflict", event_id=error.event_id
        )
    if isinstance(error, StoreUnavailable):
        return problem(
            503, "Store unavailable", str(error), slug="unavailable", headers={"Retry-After": "1"}
        )
    if isinstance(error, NotAFeedsvcDatabase | SchemaTooNew | ConfigError | ImportFailed):
        return problem(500, "Server misconfigured", str(error), slug="misconfigured")
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

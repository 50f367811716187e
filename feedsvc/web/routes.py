"""Every route of the service, in one place."""

from __future__ import annotations

from aiohttp import web

from feedsvc.web import feeds


async def healthz(request: web.Request) -> web.Response:
    """The process answers."""
    return web.json_response({"status": "ok"})


def setup(app: web.Application) -> None:
    """Register every route."""
    app.router.add_get("/healthz", healthz)
    for path in feeds.DOCUMENT_ROUTES:
        app.router.add_get(path, feeds.serve_document)

"""Every route of the service, in one place."""

from __future__ import annotations

from aiohttp import web


async def healthz(request: web.Request) -> web.Response:
    """The process answers."""
    return web.json_response({"status": "ok"})


def setup(app: web.Application) -> None:
    """Register every route."""
    app.router.add_get("/healthz", healthz)

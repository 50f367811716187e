"""Every route of the service, in one place."""

from __future__ import annotations

from aiohttp import web

from feedsvc.web import api, feeds, openapi, ops


def setup(app: web.Application) -> None:
    """Register every route."""
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/api/openapi.json", openapi.openapi_json)
    app.router.add_post("/api/stories/{slug}/events", api.append_events)
    app.router.add_get("/api/stories/{slug}/events", api.read_stream)
    app.router.add_get("/api/events", api.read_log)
    app.router.add_get("/api/events/live", api.live, allow_head=False)
    for path in feeds.DOCUMENT_ROUTES:
        app.router.add_get(path, feeds.serve_document)

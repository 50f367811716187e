"""The aiohttp application: ``create_app(settings)`` and ``serve(settings)``.

Every resource lives in its own ``cleanup_ctx`` (database, the coordination with other
replicas, projections and their scheduler), so start-up and shutdown mirror each other;
every route is listed in :mod:`feedsvc.web.routes`, each wrapped in
:func:`feedsvc.web.ops.observed`, which gives requests their ids, turns errors into
problem+json answers, counts and logs them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from feedsvc.cli_support import import_seed_if_empty
from feedsvc.errors import FeedsvcError
from feedsvc.projections.runner import ProjectionRunner
from feedsvc.service import StoryService
from feedsvc.settings import Settings
from feedsvc.store import make_coordinator, make_store
from feedsvc.web import api, ops, routes
from feedsvc.web.keys import COORDINATOR, PROJECTIONS, READ_AHEAD, SERVICE, SETTINGS, STORE
from feedsvc.web.readahead import ReadAhead

log = logging.getLogger("feedsvc.web")


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.data_dir.parent.is_dir():
        settings.data_dir.mkdir(exist_ok=True)  # created on first start
    store = make_store(settings, create=True)
    await store.open()
    try:
        await import_seed_if_empty(settings, store)
        app[STORE] = store
        app[SERVICE] = StoryService(store, future_skew=timedelta(seconds=settings.future_skew_s))
        app[READ_AHEAD] = ReadAhead(store)
        yield
    finally:
        if READ_AHEAD in app:
            await app[READ_AHEAD].close()
        await store.close()


async def _coordinator_ctx(app: web.Application) -> AsyncIterator[None]:
    coordinator = make_coordinator(app[SETTINGS])
    await coordinator.open()
    app[COORDINATOR] = coordinator
    try:
        yield
    finally:
        await coordinator.close()


async def _projections_ctx(app: web.Application) -> AsyncIterator[None]:
    runner = ProjectionRunner(app[STORE], app[SETTINGS], app[COORDINATOR])
    await runner.start()
    app[PROJECTIONS] = runner
    try:
        yield
    finally:
        await runner.stop()


def create_app(settings: Settings) -> web.Application:
    """The whole service as an aiohttp application."""
    # no middlewares: routes.setup wraps every handler in ops.observed
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_coordinator_ctx)
    app.cleanup_ctx.append(ops.metrics_ctx)
    app.cleanup_ctx.append(api.tokens_ctx)
    app.on_shutdown.append(api.stop_followers)
    app.cleanup_ctx.append(_projections_ctx)
    routes.setup(app)
    return app


async def serve(settings: Settings) -> None:
    """Run the service until SIGTERM or SIGINT; finish what is in flight, then stop."""
    ops.configure_logging(settings)
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise FeedsvcError(
            f"cannot listen on {settings.http_host}:{settings.http_port}: {e.strerror}"
        ) from e
    origin = (
        "derived from http_host and http_port"
        if settings.public_base_url_derived
        else "set by public_base_url"
    )
    log.info(
        "feedsvc listening on %s:%s, public base URL %s (%s)",
        settings.http_host,
        settings.http_port,
        settings.public_base_url,
        origin,
    )
    print(
        f"feedsvc: serving {settings.public_base_url}/ (public base URL {origin}; "
        f"listening on {settings.http_host}:{settings.http_port}); Ctrl-C to stop",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("feedsvc stopping: finishing requests in flight")
        await runner.cleanup()

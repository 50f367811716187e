"""Operating the service: health, readiness, Prometheus metrics, request logs.

* ``/healthz`` answers while the process runs; ``/readyz`` only while the database
  answers and the projections are no more than ``ready_max_lag`` events behind.
* ``/metrics`` exposes a per-app :class:`~prometheus_client.CollectorRegistry`, so two
  apps in one process (the test suite) never share counters.
* :func:`request_middleware` gives every request an id (``X-Request-Id``, echoed when
  the client sent a sane one), counts it by route and status and writes one log line
  for it. Headers are never logged, so neither is ``Authorization``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from feedsvc.errors import ConfigError, StoreError
from feedsvc.settings import Settings
from feedsvc.web.keys import METRICS, PROJECTIONS, SETTINGS, STORE
from feedsvc.web.problems import problem

log = logging.getLogger("feedsvc.web")
access_log = logging.getLogger("feedsvc.access")

REQUEST_ID = web.RequestKey("request_id", str)
"""The id of the request being answered (also sent back as ``X-Request-Id``)."""
ACTOR = web.RequestKey("actor", str)
"""The name of the token that authenticated the request, for the request log."""

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    """Every metric of one app, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.appends = Counter(
            "feedsvc_appends",
            "Append requests answered with success, by result (written or replayed)",
            ["result"],
            registry=r,
        )
        self.appended_events = Counter(
            "feedsvc_appended_events", "Events written to the log by appends", registry=r
        )
        self.append_latency = Histogram(
            "feedsvc_append_duration_seconds",
            "Time from a validated append to its commit (including group commit wait)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.group_commit = Histogram(
            "feedsvc_group_commit_events",
            "Events written per group-commit transaction",
            buckets=_GROUP_BUCKETS,
            registry=r,
        )
        self.projection_lag = Gauge(
            "feedsvc_projection_lag_events",
            "How many events the projections are behind the log",
            registry=r,
        )
        self.head = Gauge(
            "feedsvc_log_head_position", "Position of the last event in the log", registry=r
        )
        self.requests = Counter(
            "feedsvc_http_requests",
            "HTTP requests answered, by method, route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "feedsvc_http_request_duration_seconds",
            "Time to answer HTTP requests, by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, elapsed: float) -> None:
        """Count one answered request and its latency (label children cached: this runs
        on every request)."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.request_latency.labels(route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(elapsed)


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Create the app's metrics; hook the store's group-commit sizes into them."""
    metrics = Metrics()
    store = app.get(STORE)
    if store is not None:
        store.add_commit_listener(metrics.group_commit.observe)
    app[METRICS] = metrics
    yield


# -- handlers ---------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """The process answers."""
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    """The database answers and the projections are close enough to the log."""
    app = request.app
    settings = app[SETTINGS]
    no_store = {"Cache-Control": "no-store"}
    try:
        async with asyncio.timeout(5):
            head = await app[STORE].head()
    except (StoreError, TimeoutError) as e:
        return problem(
            503,
            "Not ready",
            f"the database does not answer: {e or 'timed out'}",
            slug="not-ready",
            headers={**no_store, "Retry-After": "5"},
            checks={"database": "failing"},
        )
    lag: int | None = None
    if PROJECTIONS in app:
        lag = int(await app[PROJECTIONS].lag())
        if lag > settings.ready_max_lag:
            return problem(
                503,
                "Not ready",
                f"the projections are {lag} events behind the log "
                f"(ready at {settings.ready_max_lag} or fewer)",
                slug="not-ready",
                headers={**no_store, "Retry-After": "5"},
                checks={"database": "ok", "projections": "lagging"},
                head=head,
                projection_lag=lag,
            )
    return web.json_response(
        {"status": "ready", "head": head, "projection_lag": lag}, headers=no_store
    )


async def metrics(request: web.Request) -> web.Response:
    """Every metric in the Prometheus text format."""
    app = request.app
    m = app[METRICS]
    m.head.set(await app[STORE].head())
    if PROJECTIONS in app:
        m.projection_lag.set(await app[PROJECTIONS].lag())
    return web.Response(
        body=generate_latest(m.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
    )


# -- request ids, counts and logs ---------------------------------------------------


def route_of(request: web.Request) -> str:
    """The route template that answered (``/api/stories/{slug}/events``), never the
    raw path, so metrics labels stay few."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    """A request id unique to this process run: a random prefix and a counter (cheaper
    than a UUID per request, and as unique for correlating logs)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id, then count and log it once it is answered."""
    sent = request.headers.get(REQUEST_ID_HEADER)
    request_id = sent if sent and _SANE_REQUEST_ID.match(sent) else new_request_id()
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    except web.HTTPException as e:
        status = e.status
        e.headers[REQUEST_ID_HEADER] = request_id
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away, or the server is stopping
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = route_of(request)
        metrics_ = request.app.get(METRICS)
        if metrics_ is not None:
            metrics_.observe_request(request.method, route, status, elapsed)
        if access_log.isEnabledFor(logging.INFO):
            fields: dict[str, Any] = {
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                "request_id": request_id,
                "remote": request.remote,
            }
            if ACTOR in request:
                fields["actor"] = request[ACTOR]
            access_log.info(
                "%s %s %s %.1fms",
                request.method,
                request.path,
                status,
                elapsed * 1000,
                extra=fields,
            )


# -- logging ------------------------------------------------------------------------

_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def configure_logging(settings: Settings) -> None:
    """Send every log record to stderr, as JSON lines or plain text, at the set level."""
    level = settings.log_level.upper()
    if level not in LEVELS:
        raise ConfigError(f"log_level {settings.log_level!r} is not one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # APScheduler logs every job run at INFO: once per append here, so only its problems
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))

"""Operating the service: health, readiness, Prometheus metrics, request logs.

* ``/healthz`` answers while the process runs; ``/readyz`` only once this replica's
  projections have started (built or opened their read model and caught up with the
  log), and then while the database answers and they are no more than
  ``ready_max_lag`` events behind.
* ``/metrics`` exposes a per-app :class:`~prometheus_client.CollectorRegistry`, so two
  apps in one process (the test suite) never share counters.
* :func:`observed` wraps every route's handler: it gives the request an id
  (``X-Request-Id``, echoed when the client sent a sane one), turns errors into
  problem+json answers, counts the request by route and status and writes one log line
  for it. Headers are never logged, so neither is ``Authorization``.

That wrapper runs on every request, the cached feeds' included, so it stays cheap: no
aiohttp middleware chain, and request counts and latencies kept as plain numbers
(:class:`RequestStats`) that become Prometheus samples only when ``/metrics`` is read.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import re
import secrets
import sys
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from aiohttp import web
from multidict import istr
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from feedsvc.errors import ConfigError, FeedsvcError, NotReady, StoreError
from feedsvc.settings import Settings
from feedsvc.web.keys import METRICS, PROJECTIONS, SETTINGS, STORE
from feedsvc.web.models import Health, Ready
from feedsvc.web.problems import problem_for, problem_for_http

log = logging.getLogger("feedsvc.web")
access_log = logging.getLogger("feedsvc.access")

REQUEST_ID = web.RequestKey("request_id", str)
"""The id of the request being answered (also sent back as ``X-Request-Id``)."""
ACTOR = web.RequestKey("actor", str)
"""The name of the token that authenticated the request, for the request log."""

REQUEST_ID_HEADER: str = istr("X-Request-Id")  # istr: no case folding per look-up
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_go_float = cast(Callable[[float], str], floatToGoString)  # how Prometheus writes "le"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
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
        self.appends_written = self.appends.labels("written")
        """``appends`` of result ``written``, looked up once."""
        self.appends_replayed = self.appends.labels("replayed")
        """``appends`` of result ``replayed``, looked up once."""
        self.appended_events = Counter(
            "feedsvc_appended_events", "Events written to the log by appends", registry=r
        )
        self.append_latency = Histogram(
            "feedsvc_append_duration_seconds",
            "Time from a validated append to its commit (including group commit wait)",
            buckets=LATENCY_BUCKETS,
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
        self.requests = RequestStats(LATENCY_BUCKETS)
        r.register(RequestCollector(self.requests))


class _Series:
    """One (method, route, status): how many requests, and the latency histogram of
    their route (shared by every series of the route)."""

    __slots__ = ("count", "latency")

    def __init__(self, latency: list[float]) -> None:
        self.count = 0
        self.latency = latency


class RequestStats:
    """HTTP requests answered, by method, route and status, and their durations by
    route: plain numbers, counted on every request without locks or label look-ups
    (only the event loop's thread counts, and it is also the one that reads them, when
    ``/metrics`` is scraped: :class:`RequestCollector`)."""

    def __init__(self, buckets: Iterable[float]) -> None:
        self.bounds: tuple[float, ...] = (*sorted(buckets), math.inf)
        self.series: dict[tuple[str, str, int], _Series] = {}
        self.latency: dict[str, list[float]] = {}
        """By route: how many requests took up to each bucket's bound (not cumulative;
        the last bound is +Inf), then their summed durations in seconds."""
        self.created: dict[tuple[str, str, int] | str, float] = {}
        """When each series (and each route's histogram) was first counted: their
        ``_created`` samples."""

    def observe(self, method: str, route: str, status: int, elapsed: float) -> None:
        """Count one answered request that took ``elapsed`` seconds (this runs on
        every request)."""
        key = (method, route, status)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = self._new_series(key, route)
        series.count += 1
        latency = series.latency
        # the first bucket whose bound is >= elapsed: Prometheus' "le"
        latency[bisect_left(self.bounds, elapsed)] += 1
        latency[-1] += elapsed

    def _new_series(self, key: tuple[str, str, int], route: str) -> _Series:
        now = time.time()
        self.created[key] = now
        latency = self.latency.get(route)
        if latency is None:
            latency = self.latency[route] = [0.0] * (len(self.bounds) + 1)
            self.created[route] = now
        return _Series(latency)


class RequestCollector(Collector):
    """:class:`RequestStats` as ``feedsvc_http_requests_total`` (a counter by method,
    route and status) and ``feedsvc_http_request_duration_seconds`` (a histogram by
    route): the series a prometheus_client Counter and Histogram would expose."""

    COUNTER = "feedsvc_http_requests"
    COUNTER_HELP = "HTTP requests answered, by method, route and status"
    HISTOGRAM = "feedsvc_http_request_duration_seconds"
    HISTOGRAM_HELP = "Time to answer HTTP requests, by route"

    def __init__(self, stats: RequestStats) -> None:
        self.stats = stats

    def _families(self) -> tuple[CounterMetricFamily, HistogramMetricFamily]:
        return (
            CounterMetricFamily(
                self.COUNTER, self.COUNTER_HELP, labels=["method", "route", "status"]
            ),
            HistogramMetricFamily(self.HISTOGRAM, self.HISTOGRAM_HELP, labels=["route"]),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        stats = self.stats
        with_created = prometheus_metrics._use_created  # PROMETHEUS_DISABLE_CREATED_SERIES
        counter, histogram = self._families()
        for key, series in list(stats.series.items()):
            method, route, status = key
            created = stats.created[key] if with_created else None
            counter.add_metric([method, route, str(status)], series.count, created=created)
        bounds = [_go_float(b) for b in stats.bounds]
        for route, latency in list(stats.latency.items()):
            cumulative = itertools.accumulate(latency[:-1])
            histogram.add_metric([route], list(zip(bounds, cumulative, strict=True)), latency[-1])
            if with_created:
                name = f"{self.HISTOGRAM}_created"
                histogram.samples.append(Sample(name, {"route": route}, stats.created[route]))
        return [counter, histogram]


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
    return _json(Health().to_json(), {"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    """The database answers, and this replica's projections have started and are close
    enough to the log."""
    app = request.app
    settings = app[SETTINGS]
    no_store = {"Cache-Control": "no-store"}
    try:
        async with asyncio.timeout(5):
            head = await app[STORE].head()
    except (StoreError, TimeoutError) as e:
        raise NotReady(
            f"the database does not answer: {e or 'timed out'}", {"database": "failing"}
        ) from e
    runner = app.get(PROJECTIONS)
    if runner is None or not runner.ready:
        raise NotReady(
            "the projections are starting: the read model has not caught up with the log yet",
            {"database": "ok", "projections": "starting"},
            head=head,
        )
    lag = int(await runner.lag())
    if lag > settings.ready_max_lag:
        raise NotReady(
            f"the projections are {lag} events behind the log "
            f"(ready at {settings.ready_max_lag} or fewer)",
            {"database": "ok", "projections": "lagging"},
            head=head,
            projection_lag=lag,
        )
    return _json(Ready(head=head, projection_lag=lag).to_json(), no_store)


def _json(body: bytes, headers: dict[str, str]) -> web.Response:
    return web.Response(body=body, content_type="application/json", headers=headers)


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


# -- request ids, errors, counts and logs ----------------------------------------------

UNMATCHED = "unmatched"
"""The route label of requests no route matched (404, 405)."""

_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1 << 64)  # hex() of these: "0x1" and 16 digits, zero-padded


def new_request_id() -> str:
    """A request id unique to this process run: a random prefix and a counter (cheaper
    than a UUID per request, and as unique for correlating logs)."""
    return _ID_PREFIX + hex(next(_ID_COUNTER))[3:]


Answer = Callable[[web.Request], web.StreamResponse | None]
"""A synchronous fast path of a handler: its answer, or None when only the handler
itself can answer (it has to wait for something)."""


def observed(
    app: web.Application, handler: Handler, route: str, fast: Answer | None = None
) -> Handler:
    """``handler`` as a route of ``app`` (its template ``route``) answers: the request
    gets an id (``X-Request-Id``, the client's when it sent a sane one), errors become
    problem+json answers, and once answered the request is counted by method, route
    and status, its latency by route, and logged (``feedsvc.access``, INFO). ``fast``,
    if given, is tried first (a feed held in memory needs no await).

    :mod:`feedsvc.web.routes` wraps every handler in this instead of using aiohttp
    middlewares: it runs on every request, the cached feeds' included, and a wrapper
    that knows its route and app beforehand does less per request than a middleware
    chain that looks them up."""
    stats: RequestStats | None = None
    perf_counter = time.perf_counter

    async def answer(request: web.Request) -> web.StreamResponse:
        nonlocal stats
        sent = request.headers.get(REQUEST_ID_HEADER)
        request_id = sent if sent and _SANE_REQUEST_ID.match(sent) else new_request_id()
        request[REQUEST_ID] = request_id
        started = perf_counter()
        status = 500
        try:
            try:
                response = None if fast is None else fast(request)
                if response is not None:  # a new response: not prepared
                    response.headers[REQUEST_ID_HEADER] = request_id
                    status = response.status
                    return response
                response = await handler(request)
            except FeedsvcError as e:
                response = problem_for(e)
            except web.HTTPException as e:
                answered = problem_for_http(request, e)
                if answered is None:
                    raise
                response = answered
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
            elapsed = perf_counter() - started
            if stats is None:  # the app's metrics exist once it has started
                metrics_ = app.get(METRICS)
                stats = metrics_.requests if metrics_ is not None else None
            if stats is not None:
                stats.observe(request.method, route, status, elapsed)
            if access_log.isEnabledFor(_INFO):
                _log_request(request, route, status, elapsed, request_id)

    return answer


_INFO = logging.INFO


def _log_request(
    request: web.Request, route: str, status: int, elapsed: float, request_id: str
) -> None:
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

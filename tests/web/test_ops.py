"""Health, readiness, metrics, request ids and logs, and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from feedsvc.check import check_log
from feedsvc.errors import ConfigError
from feedsvc.projections.runner import ProjectionRunner
from feedsvc.settings import Settings
from feedsvc.store.sqlite import SQLiteEventStore
from feedsvc.web.keys import PROJECTIONS
from feedsvc.web.ops import LATENCY_BUCKETS, JsonFormatter, Metrics, configure_logging
from tests.conftest import REPO, SEED, reported
from tests.web.conftest import SEED_HEAD, SEED_STREAM, Service, Start, new_id


async def test_healthz_and_readyz_answer(svc: Service) -> None:
    response = await svc.client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    response = await svc.client.get("/readyz")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["status"] == "ready"
    assert body["head"] == SEED_HEAD
    if PROJECTIONS in svc.app:
        assert isinstance(body["projection_lag"], int)


class _Lagging:
    """Projections that report a fixed lag."""

    def __init__(self, lag: int) -> None:
        self.behind = lag

    async def lag(self) -> int:
        return self.behind


async def test_readyz_fails_while_projections_lag_too_far(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    lagging = _Lagging(5000)

    async def fake_lag(app: web.Application) -> AsyncIterator[None]:
        if PROJECTIONS in app:
            monkeypatch.setattr(app[PROJECTIONS], "lag", lagging.lag)
        else:
            app[PROJECTIONS] = cast(Any, lagging)
        yield

    svc = await start(fake_lag, ready_max_lag=1000)
    response = await svc.client.get("/readyz")
    assert response.status == 503
    body = await response.json(content_type="application/problem+json")
    assert "5000 events behind" in body["detail"]
    assert response.headers["Retry-After"]
    assert (await svc.client.get("/healthz")).status == 200  # alive, just not ready

    lagging.behind = 10
    assert (await svc.client.get("/readyz")).status == 200
    metrics = await scrape(svc)
    assert metrics["feedsvc_projection_lag_events"] == 10


async def scrape(svc: Service) -> dict[str, float]:
    """Every sample of /metrics by its name and labels (``name{a="b"}``)."""
    response = await svc.client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def test_metrics_count_appends_group_commits_and_requests(svc: Service) -> None:
    before = await scrape(svc)
    assert before["feedsvc_log_head_position"] == SEED_HEAD
    assert (await svc.append(SEED_STREAM, [reported("m-1"), reported("m-2")])).status == 201
    events = [{**reported("m-3"), "id": new_id()}]
    assert (await svc.append(SEED_STREAM, events)).status == 201
    assert (await svc.append(SEED_STREAM, events)).status == 200  # a replay writes nothing
    assert (await svc.append("no-such-story", reported("m-4"))).status == 404
    after = await scrape(svc)
    assert after['feedsvc_appends_total{result="written"}'] == 2
    assert after['feedsvc_appends_total{result="replayed"}'] == 1
    assert after["feedsvc_appended_events_total"] == 3
    assert after["feedsvc_append_duration_seconds_count"] == 2
    assert after["feedsvc_group_commit_events_count"] == 2
    assert after["feedsvc_group_commit_events_sum"] == 3
    assert after["feedsvc_log_head_position"] == SEED_HEAD + 3
    route = 'route="/api/stories/{slug}/events"'
    assert after[f'feedsvc_http_requests_total{{method="POST",{route},status="201"}}'] == 2
    assert after[f'feedsvc_http_requests_total{{method="POST",{route},status="404"}}'] == 1
    assert after['feedsvc_http_requests_total{method="GET",route="/metrics",status="200"}'] == 1


FEED_ROUTE = 'route="/feeds/stories/{slug}.{fmt}"'


async def test_metrics_count_feed_and_unmatched_requests_by_route_and_status(
    svc: Service,
) -> None:
    feed = f"/feeds/stories/{SEED_STREAM}.atom"
    before = await scrape(svc)
    first = await svc.client.get(feed)
    assert first.status == 200
    assert (
        await svc.client.get(feed, headers={"If-None-Match": first.headers["ETag"]})
    ).status == 304
    assert (await svc.client.head(feed)).status == 200
    assert (await svc.client.get(feed, headers={"Accept-Encoding": "gzip"})).status == 200
    assert (await svc.client.get("/no/such/page")).status == 404
    assert (await svc.client.post("/feeds/all.atom")).status == 405
    after = await scrape(svc)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    requests = "feedsvc_http_requests_total"
    assert delta(f'{requests}{{method="GET",{FEED_ROUTE},status="200"}}') == 2
    assert delta(f'{requests}{{method="GET",{FEED_ROUTE},status="304"}}') == 1
    assert delta(f'{requests}{{method="HEAD",{FEED_ROUTE},status="200"}}') == 1
    assert delta(f'{requests}{{method="GET",route="unmatched",status="404"}}') == 1
    assert delta(f'{requests}{{method="POST",route="unmatched",status="405"}}') == 1
    duration = "feedsvc_http_request_duration_seconds"
    assert delta(f"{duration}_count{{{FEED_ROUTE}}}") == 4
    assert delta(f"{duration}_sum{{{FEED_ROUTE}}}") > 0
    buckets = sorted(
        (float(key.split('le="')[1].split('"')[0]), value)
        for key, value in after.items()
        if key.startswith(f"{duration}_bucket{{") and FEED_ROUTE in key
    )
    assert buckets[-1] == (float("inf"), after[f"{duration}_count{{{FEED_ROUTE}}}"])
    assert [count for _, count in buckets] == sorted(count for _, count in buckets)
    assert (
        f'{requests.removesuffix("_total")}_created{{method="GET",{FEED_ROUTE},status="304"}}'
        in after
    )
    assert f"{duration}_created{{{FEED_ROUTE}}}" in after


async def test_unmatched_requests_are_problems_with_a_request_id(svc: Service) -> None:
    wrong_method = await svc.client.post("/feeds/all.atom", headers={"X-Request-Id": "wrong-1"})
    assert wrong_method.status == 405
    assert wrong_method.headers["Allow"] == "GET,HEAD"
    assert wrong_method.headers["X-Request-Id"] == "wrong-1"
    problem = await wrong_method.json(content_type="application/problem+json")
    assert problem["status"] == 405
    assert problem["detail"] == "POST /feeds/all.atom: method not allowed"
    not_there = await svc.client.head("/feeds/nothing/here")
    assert not_there.status == 404
    assert not_there.headers["Content-Type"] == "application/problem+json"
    assert len(not_there.headers["X-Request-Id"]) == 32
    # a path asked for before is remembered by its route, its method still checked
    assert (await svc.client.get("/healthz")).status == 200
    deleted = await svc.client.delete("/healthz")
    assert deleted.status == 405
    assert deleted.headers["Allow"] == "GET,HEAD"


def test_request_collector_exposes_what_prometheus_client_would() -> None:
    seen = [
        ("GET", "/feeds/stories/{slug}.{fmt}", 200, 0.0031),
        ("GET", "/feeds/stories/{slug}.{fmt}", 304, 0.0004),
        ("POST", "/api/stories/{slug}/events", 201, 0.2),
        ("GET", "/feeds/stories/{slug}.{fmt}", 200, 0.001),  # on a bucket's bound
        ("GET", "unmatched", 404, 25.0),  # past the last bound
    ]
    ours = Metrics()
    registry = CollectorRegistry(auto_describe=True)
    requests = Counter(
        "feedsvc_http_requests",
        "HTTP requests answered, by method, route and status",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "feedsvc_http_request_duration_seconds",
        "Time to answer HTTP requests, by route",
        ["route"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    for method, route, status, elapsed in seen:
        ours.requests.observe(method, route, status, elapsed)
        requests.labels(method, route, str(status)).inc()
        latency.labels(route).observe(elapsed)

    def http_requests(registry: CollectorRegistry) -> str:
        text = generate_latest(registry).decode()
        lines = [line for line in text.splitlines() if "feedsvc_http_request" in line]
        return re.sub(r"^(\S+_created\{.*\}) \S+$", r"\1 <time>", "\n".join(lines), flags=re.M)

    assert http_requests(ours.registry) == http_requests(registry)


async def test_every_answer_carries_a_request_id(svc: Service) -> None:
    response = await svc.client.get("/healthz", headers={"X-Request-Id": "trace-42"})
    assert response.headers["X-Request-Id"] == "trace-42"
    response = await svc.client.get("/no/such/page")
    assert response.status == 404
    generated = response.headers["X-Request-Id"]
    assert len(generated) == 32
    response = await svc.client.get("/healthz", headers={"X-Request-Id": "bad id\twith tab"})
    assert response.headers["X-Request-Id"] != "bad id\twith tab"


async def test_one_log_line_per_request_and_never_the_token(
    svc: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await svc.append(
        SEED_STREAM, reported("logged"), headers={"X-Request-Id": "append-1"}
    )
    assert response.status == 201
    [line] = [r for r in caplog.records if getattr(r, "request_id", None) == "append-1"]
    fields = vars(line)
    assert fields["method"] == "POST"
    assert fields["path"] == f"/api/stories/{SEED_STREAM}/events"
    assert fields["status"] == 201
    assert fields["duration_ms"] >= 0
    assert fields["actor"] == "admin"
    secret = svc.admin.removeprefix("fsv_")
    for record in caplog.records:
        assert secret not in JsonFormatter().format(record)


def test_json_logs_are_one_object_per_line() -> None:
    record = logging.LogRecord("feedsvc.access", logging.INFO, __file__, 1, "GET / 200", None, None)
    record.__dict__.update({"method": "GET", "status": 200, "request_id": "r1"})
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["msg"] == "GET / 200"
    assert parsed["level"] == "INFO"
    assert (parsed["method"], parsed["status"], parsed["request_id"]) == ("GET", 200, "r1")


def test_a_bad_log_level_is_a_config_error(web_settings: Settings) -> None:
    with pytest.raises(ConfigError, match="log_level"):
        configure_logging(web_settings.replace(log_level="LOUD"))


# -- graceful shutdown of a real `feedsvc serve` -------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = _free_port()
    data = tmp_path / "data"
    config = tmp_path / "feedsvc.toml"
    config.write_text(
        f"data_dir = {json.dumps(str(data))}\n"
        f"seed = {json.dumps(str(SEED))}\n"
        'http_host = "127.0.0.1"\n'
        f"http_port = {port}\n"
        f'public_base_url = "http://127.0.0.1:{port}"\n'
        "token_burst = 1000000\n"
        "token_rate_per_s = 1000000.0\n"
    )
    stderr = tmp_path / "stderr.log"
    child = subprocess.Popen(
        [sys.executable, "-m", "feedsvc.cli", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=stderr.open("wb"),
        cwd=REPO,  # as the suite runs: from a checkout
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")},
            "PYTHONFAULTHANDLER": "1",  # a crash at shutdown shows where, in stderr.log
        },
    )
    assert child.stdout is not None
    for raw in child.stdout:  # serve prints this line once it listens
        if b"serving" in raw:
            return child, port, data
    child.wait()
    pytest.fail(f"feedsvc serve did not start:\n{stderr.read_text()}")


async def _append_until_refused(port: int, token: str, child: subprocess.Popen[bytes]) -> list[str]:
    """Eight writers append until the server stops taking them; SIGTERM goes out after
    the 40th acknowledged append, while the others are in flight."""
    acknowledged: list[str] = []
    url = f"http://127.0.0.1:{port}/api/stories/{SEED_STREAM}/events"
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=60)

    async def writer(session: aiohttp.ClientSession, w: int) -> None:
        for i in range(1000):
            events = [{**reported(f"sigterm-{w}-{i}-{k}"), "id": new_id()} for k in range(2)]
            try:
                async with session.post(url, json=events, headers=headers) as response:
                    if response.status != 201:
                        return  # e.g. 503 while the store closes: not acknowledged
                    await response.read()
            except aiohttp.ClientError:
                return  # the server stopped listening or closed the connection
            acknowledged.extend(e["id"] for e in events)
            if len(acknowledged) == 80:
                child.send_signal(signal.SIGTERM)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(writer(session, w) for w in range(8)))
    return acknowledged


def test_sigterm_finishes_appends_in_flight_and_exits_0(tmp_path: Path) -> None:
    child, port, data = _start_server(tmp_path)
    try:
        token = (data / "admin.token").read_text().strip()
        acknowledged = asyncio.run(_append_until_refused(port, token, child))
        assert child.wait(timeout=60) == 0, (tmp_path / "stderr.log").read_text()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout:
            child.stdout.close()
    assert len(acknowledged) >= 80

    async def read_back() -> tuple[set[str], bool]:
        store = SQLiteEventStore(data / "feedsvc.sqlite3")
        await store.open()
        try:
            found = {e.id for e in await store.find(acknowledged)}
            return found, (await check_log(store)).ok
        finally:
            await store.close()

    found, sound = asyncio.run(read_back())
    assert found == set(acknowledged)  # every acknowledged append survived the stop
    assert sound
    logs = (tmp_path / "stderr.log").read_text()
    assert token.removeprefix("fsv_") not in logs
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line.get("status") == 201 for line in lines)  # JSON request logs


async def test_readyz_fails_until_the_projections_have_started(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = await start()
    assert (await svc.client.get("/readyz")).status == 200
    monkeypatch.setattr(ProjectionRunner, "ready", property(lambda self: False))
    response = await svc.client.get("/readyz")
    assert response.status == 503
    body = await response.json(content_type="application/problem+json")
    assert "starting" in body["detail"]

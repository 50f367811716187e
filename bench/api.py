"""The HTTP API: appends, following the log, freshness, each against a bare baseline.

Four measurements of the running service (``python -m feedsvc.cli --config <toml>
serve``, a separate process on 127.0.0.1), each beside a baseline measured in the
same run:

1. **1-event POST appends** (``POST /api/stories/{slug}/events``, one event, a bearer
   token, 64 connections, ``wrk`` with ``bench/lua/append.lua``): events/s against a
   bare aiohttp app (``bench/bare.py api``, same Python, its own process) that parses
   the same body with ``orjson.loads`` and answers 201.
2. **100-event POST appends** (a JSON array of 100 events): events/s against the same
   bare app and against a bare ``sqlite3`` loop committing 100-row transactions in
   this process (WAL, ``synchronous=FULL``; :func:`bench.append.through_sqlite3`).
3. **Following the log** (``GET /api/events?after=&limit=1000`` from position 0 to the
   head of a 200,000-event log, 20,000 with ``--quick``, by an aiohttp client in this
   process): events/s against reading and decoding the same rows in this process
   (``sqlite3`` SELECT of the same columns, ``orjson.loads`` of data and metadata).
4. **Freshness**: single-event POSTs at a steady 1,000 events/s (200 with ``--quick``)
   for 10 s (3 s), and for each 201 the time until the development shows in its
   story's JSON feed (``GET /feeds/stories/<slug>.json``, polled with
   ``If-None-Match``).

Every service run starts a fresh service on a copy of a prepared data folder (stories
opened, read model built; for the follow log a stub read model, see
:func:`follow_data`). The servers are pinned to CPU 0 and ``wrk`` and this process's
HTTP clients to CPU 1 with ``taskset`` when possible. Every figure is the median of 3
runs with the min and max.

Run: ``python -m bench.api [--quick]`` (or ``python -m bench`` for every benchmark);
``python -m bench.api --profile [--quick]`` records the service with py-spy under the
append loads instead and prints its top frames. Needs ``wrk``:
``apt-get update && apt-get install -y wrk``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import os
import random
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.append import FULL as APPEND_FULL
from bench.append import QUICK as APPEND_QUICK
from bench.append import development_reported, story_opened, through_sqlite3, workload
from bench.common import RUNS, Spread, load, machine_lines, py_spy, table
from bench.servers import (
    CLIENT_CPU,
    CONNECTIONS,
    SERVER_CPU,
    START_TIMEOUT_S,
    THREADS,
    WRK_INSTALL,
    Server,
    free_port,
    pinned,
    pinning,
    request,
    started,
    write_toml,
    wrk_output,
    wrk_process,
    wrk_version,
)
from feedsvc.projections.readmodel import PROJECTION_VERSIONS, ReadModel
from feedsvc.projections.runner import ProjectionRunner
from feedsvc.service import StoryService
from feedsvc.settings import Settings
from feedsvc.store import EventStore, make_store

SEED = 1373
FULL_SECONDS = 5
QUICK_SECONDS = 3
WARMUP_SECONDS = 1
TAIL_SECONDS = 1
"""a service run: wrk runs warm-up + measured window + tail, the window is measured"""
BATCH = 100
STORIES = 1000
SLUG_PREFIX = "bench-api-"
TEMPLATES = 1000
"""distinct event bodies wrk cycles through (each sent with fresh ids)"""

LOG_EVENTS_FULL = 200_000
LOG_EVENTS_QUICK = 20_000
LOG_STORIES = 200
PAGE = 1000
DATASET_VERSION = 3
"""part of the cached log's name: raise it when the generator changes"""

FRESH_RATE_FULL = 1000
FRESH_RATE_QUICK = 200
FRESH_STORIES = 50
FRESH_PREFIX = "bench-fresh-"
VISIBLE_WITHIN_S = 5.0
FRESH_SECONDS = 10
"""How long the freshness runs at FRESH_RATE_FULL offer POSTs (the issue's 10 s)."""
FRESH_RUNS = 2
POLLERS = 4
POLL_RATE = 400
"""feed polls per second at most, all pollers together: the polls load the service too"""
POLL_GAP_S = 0.005
"""a story's feed is polled at most once per POLL_GAP_S"""

PINNED = (
    f"servers (every thread) on CPU {SERVER_CPU}, wrk on CPU {CLIENT_CPU} (taskset); "
    f"this process on CPU {CLIENT_CPU} while it is an HTTP client and on CPU "
    f"{SERVER_CPU} while it runs an in-process baseline"
)
"""How the pinning is described when taskset can pin"""
LOG_LEVEL = "WARNING"
TOKEN_RATE = 1_000_000.0
TOKEN_BURST = 1_000_000
"""the token's rate limit, raised so the benchmark never meets it (the limiter still runs)"""
PUBLIC_BASE = "http://127.0.0.1:8080"
"""public_base_url of the settings used in this process for the follow log (never served)"""

BENCH = Path(__file__).parent
DATA_DIR = BENCH / "data"
LUA_APPEND = BENCH / "lua" / "append.lua"


# -- pinning, other work --------------------------------------------------------------------


@contextlib.contextmanager
def on_cpu(cpu: int, pin: bool) -> Iterator[None]:
    """Run this process on one CPU for a while (nothing when not pinning)."""
    if not pin:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _cpu_times() -> dict[int, tuple[int, int]]:
    """CPU number → (busy, total) jiffies since boot, from /proc/stat."""
    out: dict[int, tuple[int, int]] = {}
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *values = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    ticks = [int(v) for v in values[:8]]
                    idle = ticks[3] + ticks[4]  # idle + iowait
                    out[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    except OSError:
        pass
    return out


def cpu_busy(seconds: float = 1.0) -> dict[int, float]:
    """How busy each CPU is over ``seconds`` (0–1), before the benchmark loads it."""
    before = _cpu_times()
    time.sleep(seconds)
    after = _cpu_times()
    return {
        cpu: (after[cpu][0] - b[0]) / max(1, after[cpu][1] - b[1])
        for cpu, b in before.items()
        if cpu in after
    }


def _busy_line(busy: Mapping[int, float]) -> str:
    if not busy:
        return "other work: unknown (no /proc/stat)"
    shares = ", ".join(f"CPU {cpu} {100 * share:.0f}%" for cpu, share in sorted(busy.items()))
    warning = (
        "; WARNING: other work is running, the figures are not comparable"
        if max(busy.values()) > 0.1
        else ""
    )
    return f"other work, busy over 1 s before starting: {shares}{warning}"


# -- the service ---------------------------------------------------------------------------


def service_values(data_dir: Path, port: int, public_base: str | None = None) -> dict[str, Any]:
    """The service's settings: its own data folder, no seed, WARNING logs, no rate limit
    the benchmark could meet."""
    return {
        "data_dir": str(data_dir),
        "seed": "",
        "http_host": "127.0.0.1",
        "http_port": port,
        "public_base_url": public_base or f"http://127.0.0.1:{port}",
        "synchronous": "FULL",
        "token_rate_per_s": TOKEN_RATE,
        "token_burst": TOKEN_BURST,
        "log_level": LOG_LEVEL,
    }


def slugs(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(count)]


async def _build_read_model(store: EventStore, settings: Settings) -> None:
    runner = ProjectionRunner(store, settings)
    try:
        runner.open_current()
        await runner.rebuild(in_server=False)
    finally:
        await runner.stop()


async def open_stories(settings: Settings, names: Sequence[str]) -> int:
    """Open every story through StoryService (in this process), build the read model;
    return the log's head."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    store = make_store(settings, create=True)
    await store.open()
    try:
        service = StoryService(store)
        openings = [(slug, story_opened(rng, slug)) for slug in names]
        for i in range(0, len(openings), 256):
            await asyncio.gather(
                *(service.append(s, [e], "no_stream") for s, e in openings[i : i + 256])
            )
        await _build_read_model(store, settings)
        return await store.head()
    finally:
        await store.close()


def prepare_template(folder: Path, port: int, names: Sequence[str]) -> Path:
    """A data folder holding ``names`` opened and their read model; return it."""
    data = folder / "data"
    settings = Settings.load(None, environ={}, **service_values(data, port))
    head = asyncio.run(open_stories(settings, names))
    if head != len(names):
        raise AssertionError(f"the template log holds {head} events, not {len(names)}")
    return data


@dataclass
class Service:
    """A running service and what a client needs to append to it."""

    server: Server
    token: str
    data_dir: Path

    @property
    def port(self) -> int:
        return self.server.port

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def progress(self) -> tuple[int, int]:
        """(head of the log, position the projections reached), from /readyz."""
        reply = request(self.port, "GET", "/readyz")
        if reply.status not in (200, 503):
            raise self.server.fail(f"/readyz answered {reply.status}")
        body = reply.json()
        head, lag = int(body["head"]), int(body.get("projection_lag") or 0)
        return head, head - lag

    def wait_projected(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            head, projected = self.progress()
            if projected >= head:
                return
            if time.monotonic() > deadline:
                raise self.server.fail(f"projections at {projected}, head {head}")
            time.sleep(0.05)


@contextlib.contextmanager
def service(root: Path, name: str, template: Path, port: int, pin: bool) -> Iterator[Service]:
    """A service on a copy of ``template`` (a data folder), pinned to SERVER_CPU; ready
    (projections caught up) and with its admin token read; stopped on the way out."""
    folder = root / name
    data = folder / "data"
    shutil.copytree(template, data)
    config = folder / "feedsvc.toml"
    values = service_values(data, port)
    write_toml(values, config)
    if Settings.load(config, environ={}) != Settings.load(None, environ={}, **values):
        raise AssertionError(f"{config} does not load as the settings written")
    command = [sys.executable, "-m", "feedsvc.cli", "--config", str(config), "serve"]
    with started(name, pinned(command, SERVER_CPU, pin), port, folder) as server:
        server.wait_for("/healthz")
        token_file = data / "admin.token"
        if not token_file.exists():
            raise server.fail(f"no admin token at {token_file}")
        running = Service(server, token_file.read_text(encoding="utf-8").strip(), data)
        running.wait_projected()
        yield running


# -- events for wrk ---------------------------------------------------------------------------


def write_templates(path: Path, count: int) -> None:
    """``count`` development.reported events (bodies of 300–2000 bytes), one JSON object
    a line, with the markers the Lua script fills: __EVENT_ID__, __DEV_ID__."""
    rng = random.Random(SEED + 1)
    with open(path, "wb") as f:
        for _ in range(count):
            event = development_reported(rng, "__DEV_ID__")
            event["id"] = "__EVENT_ID__"
            f.write(orjson.dumps(event) + b"\n")


def filled(templates: Path, n: int, tag: str) -> list[dict[str, Any]]:
    """The first ``n`` templates filled as the Lua script fills them (for checks)."""
    lines = templates.read_text(encoding="utf-8").splitlines()[:n]
    out = []
    for i, line in enumerate(lines):
        event_id = f"{random.getrandbits(32):08x}-0000-4000-8000-{i:012x}"
        text = line.replace("__EVENT_ID__", event_id).replace("__DEV_ID__", f"{tag}-{i}")
        out.append(orjson.loads(text))
    return out


_RESULT = re.compile(r"^wrk-result (.*)$", re.M)
_STATUS = re.compile(r"^wrk-status (\d+) (\d+)$", re.M)


@dataclass(frozen=True)
class WrkRun:
    """What one wrk run of append.lua reports."""

    requests: int
    seconds: float
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    bytes_read: int

    @property
    def created(self) -> int:
        return self.statuses.get(201, 0)

    def problems(self) -> list[str]:
        out = [f"{n} × status {s}" for s, n in sorted(self.statuses.items()) if s != 201]
        out += [f"{n} socket {kind} errors" for kind, n in self.socket_errors.items() if n]
        return out


def parse_wrk(output: str) -> WrkRun:
    found = _RESULT.search(output)
    if found is None:
        raise AssertionError(f"no wrk-result line in wrk's output:\n{output}")
    values = {k: int(v) for k, v in (pair.split("=") for pair in found[1].split())}
    return WrkRun(
        requests=values["requests"],
        seconds=values["duration_us"] / 1e6,
        statuses={int(s): int(n) for s, n in _STATUS.findall(output)},
        socket_errors={k: values[k] for k in ("connect", "read", "write", "timeout")},
        p50_ms=values["p50_us"] / 1e3,
        p99_ms=values["p99_us"] / 1e3,
        bytes_read=values["bytes"],
    )


def wrk_arguments(
    port: int, token: str, templates: Path, per_request: int, prefix: str
) -> list[str]:
    """What follows ``wrk -t1 -c64 -d<seconds>s`` for a run of append.lua."""
    nonce = random.getrandbits(31)
    return [
        "--timeout",
        "10s",
        "-s",
        str(LUA_APPEND),
        "-H",
        f"Authorization: Bearer {token}",
        f"http://127.0.0.1:{port}",
        "--",
        str(templates),
        str(per_request),
        str(STORIES),
        prefix,
        str(nonce),
    ]


def start_wrk(
    port: int, token: str, templates: Path, per_request: int, seconds: float, pin: bool
) -> subprocess.Popen[str]:
    """Start ``wrk -t1 -c64 -d<seconds>s -s append.lua``, pinned to CLIENT_CPU."""
    arguments = wrk_arguments(port, token, templates, per_request, SLUG_PREFIX)
    return wrk_process(arguments, seconds, pin)


def finish_wrk(process: subprocess.Popen[str], seconds: float) -> WrkRun:
    """Wait for a wrk started for ``seconds`` (bounded) and parse what it printed."""
    return parse_wrk(wrk_output(process, seconds))


def wrk(
    port: int, token: str, templates: Path, per_request: int, seconds: float, pin: bool
) -> WrkRun:
    """One wrk run of append.lua, start to end."""
    return finish_wrk(start_wrk(port, token, templates, per_request, seconds, pin), seconds)


# -- 1 and 2: appends -------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendRun:
    """One timed wrk run against the service or the bare app."""

    wrk: WrkRun
    per_request: int
    cpu_s: float | None = None
    """CPU time of the server in the measured window"""
    window_s: float | None = None
    """the measured window inside the wrk run (service only)"""
    written: int | None = None
    """events the log grew by in the window (service only)"""
    projected: int | None = None
    """events the projections applied in the window (service only)"""
    notes: tuple[str, ...] = ()

    @property
    def answered(self) -> int:
        return self.wrk.created * self.per_request

    @property
    def answered_rate(self) -> float:
        """Events answered 201 per second over the whole wrk run."""
        return self.answered / self.wrk.seconds

    @property
    def rate(self) -> float:
        """Events per second: logged in the window (service), answered 201 (bare)."""
        if self.window_s is not None and self.written is not None:
            return self.written / self.window_s
        return self.answered_rate

    @property
    def flagged(self) -> bool:
        return bool(self.notes)

    @property
    def cpu_us_per_event(self) -> float | None:
        """CPU per event logged (service) or answered (bare app)."""
        events = self.answered if self.written is None else self.written
        return None if self.cpu_s is None or not events else self.cpu_s / events * 1e6


def check_append(port: int, headers: Mapping[str, str], events: list[dict[str, Any]]) -> None:
    """One POST of ``events`` to the first story must answer 201 with every event."""
    body = orjson.dumps(events[0] if len(events) == 1 else events)
    reply = request(
        port,
        "POST",
        f"/api/stories/{SLUG_PREFIX}0000/events",
        body,
        {**headers, "Content-Type": "application/json"},
    )
    if reply.status != 201 or len(reply.json().get("events", ())) != len(events):
        raise AssertionError(
            f"POST of {len(events)} event(s) to 127.0.0.1:{port} answered {reply.status}: "
            f"{reply.body[:500]!r}"
        )


def _warm(port: int, token: str, templates: Path, per_request: int, pin: bool) -> list[str]:
    warm = wrk(port, token, templates, per_request, WARMUP_SECONDS, pin)
    return [f"warm-up: {p}" for p in warm.problems()]


def append_service_run(
    root: Path,
    name: str,
    template: Path,
    port: int,
    templates: Path,
    per_request: int,
    seconds: int,
    pin: bool,
) -> AppendRun:
    """A fresh service: check one append, then one wrk run of warm-up, window and a
    tail; the log's growth, the projections and the CPU are measured in the window."""
    total = WARMUP_SECONDS + seconds + TAIL_SECONDS
    with service(root, name, template, port, pin) as svc:
        check_append(port, svc.auth(), filled(templates, per_request, f"check-{name}"))
        start_head, _ = svc.progress()
        process = start_wrk(port, svc.token, templates, per_request, total, pin)
        try:
            began = time.monotonic()
            time.sleep(WARMUP_SECONDS)
            t0, (head0, projected0), cpu0 = (
                time.monotonic(),
                svc.progress(),
                svc.server.cpu_seconds(),
            )
            time.sleep(max(0.0, began + WARMUP_SECONDS + seconds - time.monotonic()))
            t1, (head1, projected1), cpu1 = (
                time.monotonic(),
                svc.progress(),
                svc.server.cpu_seconds(),
            )
        finally:
            result = finish_wrk(process, total)
        time.sleep(0.5)  # appends in flight when wrk stopped commit
        end_head, _ = svc.progress()
        if svc.server.process.poll() is not None:
            raise svc.server.fail("exited during the run")
    notes = result.problems()
    acknowledged = result.created * per_request
    grown = end_head - start_head
    if not acknowledged <= grown <= acknowledged + CONNECTIONS * per_request:
        notes.append(f"the log grew by {grown} events but {acknowledged} were acknowledged")
    return AppendRun(
        wrk=result,
        per_request=per_request,
        cpu_s=None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
        window_s=t1 - t0,
        written=head1 - head0,
        projected=projected1 - projected0,
        notes=tuple(notes),
    )


def append_bare_run(
    bare: Server, templates: Path, per_request: int, seconds: int, pin: bool
) -> AppendRun:
    check_append(bare.port, {}, filled(templates, per_request, "check-bare"))
    notes = _warm(bare.port, "none", templates, per_request, pin)
    cpu0 = bare.cpu_seconds()
    result = wrk(bare.port, "none", templates, per_request, seconds, pin)
    cpu1 = bare.cpu_seconds()
    if bare.process.poll() is not None:
        raise bare.fail("exited during the run")
    return AppendRun(
        wrk=result,
        per_request=per_request,
        cpu_s=None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
        notes=tuple(notes + result.problems()),
    )


@dataclass
class AppendCase:
    name: str
    per_request: int
    service: list[AppendRun] = field(default_factory=list)
    bare: list[AppendRun] = field(default_factory=list)
    sqlite: list[float] = field(default_factory=list)
    """events/s of the bare sqlite3 loop (100-event case only)"""


@contextlib.contextmanager
def bare_api(root: Path, pin: bool) -> Iterator[Server]:
    """``bench/bare.py api`` on a free port and the servers' CPU, once it accepts
    connections; stopped on the way out."""
    port = free_port()
    command = [sys.executable, str(BENCH / "bare.py"), "api", str(port)]
    with started("bare", pinned(command, SERVER_CPU, pin), port, root / "bare") as bare:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            if bare.process.poll() is not None or time.monotonic() > deadline:
                raise bare.fail("did not start")
            time.sleep(0.05)
        yield bare


def measure_appends(root: Path, seconds: int, quick: bool, pin: bool) -> list[AppendCase]:
    """Measurements 1 and 2, RUNS times each, service and bare alternating."""
    port = free_port()
    template = prepare_template(root / "append-template", port, slugs(SLUG_PREFIX, STORIES))
    templates = root / "templates.jsonl"
    write_templates(templates, TEMPLATES)
    cases = [AppendCase("1-event POSTs", 1), AppendCase(f"{BATCH}-event POSTs", BATCH)]
    counts = APPEND_QUICK if quick else APPEND_FULL
    baseline = workload(random.Random(SEED), counts.stories, counts.batched, BATCH)
    with bare_api(root, pin) as bare:
        for number in range(RUNS):
            for case in cases:
                first_service = number % 2 == 0
                for which in ("service", "bare") if first_service else ("bare", "service"):
                    if which == "service":
                        name = f"service-{case.per_request}-{number}"
                        case.service.append(
                            append_service_run(
                                root,
                                name,
                                template,
                                port,
                                templates,
                                case.per_request,
                                seconds,
                                pin,
                            )
                        )
                        shutil.rmtree(root / name, ignore_errors=True)
                    else:
                        case.bare.append(
                            append_bare_run(bare, templates, case.per_request, seconds, pin)
                        )
                if case.per_request == BATCH:
                    folder = root / f"sqlite-{number}"
                    folder.mkdir()
                    with on_cpu(SERVER_CPU, pin):
                        case.sqlite.append(through_sqlite3(folder, baseline).rate)
                    shutil.rmtree(folder, ignore_errors=True)
            print(f"  appends: run {number + 1} of {RUNS} done", file=sys.stderr, flush=True)
    return cases


def _flag(spread: Spread, runs: Sequence[AppendRun]) -> str:
    return spread.show() + (" !" if any(r.flagged for r in runs) else "")


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def report_appends(cases: Sequence[AppendCase], seconds: int) -> str:
    header = [
        "events/s: median [min–max]",
        "service",
        "bare app",
        "× bare",
        "sqlite3 100/tx",
        "× sqlite3",
        "201/s",
        "projected/s",
        "p50 / p99 ms",
        "CPU µs/event",
    ]
    rows: list[list[str]] = []
    notes: list[str] = []
    for case in cases:
        service = Spread(tuple(r.rate for r in case.service))
        bare = Spread(tuple(r.rate for r in case.bare))
        sqlite = Spread(tuple(case.sqlite)) if case.sqlite else None
        answered = [r.answered_rate for r in case.service]
        projected = [(r.projected or 0) / (r.window_s or 1) for r in case.service]
        cpu = [r.cpu_us_per_event for r in case.service]
        bare_cpu = [r.cpu_us_per_event for r in case.bare]
        known = [c for c in cpu if c is not None]
        bare_known = [c for c in bare_cpu if c is not None]
        rows.append(
            [
                case.name,
                _flag(service, case.service),
                _flag(bare, case.bare),
                f"{service.median / bare.median:.2f}",
                sqlite.show() if sqlite else "",
                f"{service.median / sqlite.median:.2f}" if sqlite else "",
                f"{_median(answered):,.0f}",
                f"{_median(projected):,.0f}",
                f"{_median([r.wrk.p50_ms for r in case.service]):,.0f} / "
                f"{_median([r.wrk.p99_ms for r in case.service]):,.0f}",
                f"{_median(known):,.0f} / {_median(bare_known):,.1f}"
                if known and bare_known
                else "n/a",
            ]
        )
        for who, runs in (("service", case.service), ("bare app", case.bare)):
            for n, run_ in enumerate(runs):
                if run_.notes:
                    notes.append(f"! {case.name}, {who}, run {n + 1}: {'; '.join(run_.notes)}")
    legend = [
        f"service: events the log grew by per second in a {seconds} s window of a wrk run of",
        f"  {WARMUP_SECONDS} s warm-up + {seconds} s + {TAIL_SECONDS} s (from /readyz), "
        "median [min–max] of the runs;",
        f"  bare app: events answered 201 per second in a {seconds} s wrk run after "
        f"{WARMUP_SECONDS} s of warm-up.",
        "× bare, × sqlite3: the service median divided by the baseline median.",
        "201/s: the service's events answered 201 per second over its whole wrk run (below",
        "  'service' when the latency is a sizeable part of the run: answers still in flight).",
        "projected/s: events the projections applied per second in the window; below",
        "  'service' means the read model (feeds, pages) fell behind the log.",
        "p50 / p99: the service's request latency by wrk over the whole run, median of runs.",
        "CPU µs/event: service CPU time (user + system, every thread, from /proc) per event",
        "  logged in the window, projections included / the bare app's per event answered.",
        "!: a run saw answers other than 201, socket errors, or a log that grew by fewer",
        "  events than were answered 201 or by more than 64 requests' worth (listed below).",
    ]
    return table(header, rows) + "\n\n" + "\n".join(legend + notes)


# -- 3: following the log ------------------------------------------------------------------------


def log_dataset(events: int) -> tuple[Path, float | None]:
    """The cached SQLite file of an ``events``-event log, built the first time; returns
    it and the seconds building took (None when it was cached)."""
    final = DATA_DIR / f"api-log-v{DATASET_VERSION}-{events}"
    database = final / "feedsvc.sqlite3"
    if (final / "complete").exists():
        return database, None
    DATA_DIR.mkdir(exist_ok=True)
    building = DATA_DIR / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(building, ignore_errors=True)
    print(
        f"  generating a {events:,}-event log once, cached in {final} ...",
        file=sys.stderr,
        flush=True,
    )
    began = time.perf_counter()
    try:
        building.mkdir(parents=True)
        values = service_values(building, 8080, PUBLIC_BASE)
        asyncio.run(_generate_log(Settings.load(None, environ={}, **values), events))
        (building / "complete").write_text(f"{events} events\n", encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(building, final)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return database, time.perf_counter() - began


async def _generate_log(settings: Settings, events: int) -> None:
    """``events`` events: LOG_STORIES stories opened, then developments in appends of
    100 from 16 concurrent tasks, through StoryService. The log alone: no read model."""
    rng = random.Random(SEED + 2)
    names = slugs("bench-log-", LOG_STORIES)
    store = make_store(settings, create=True)
    await store.open()
    try:
        service = StoryService(store)
        for slug in names:
            await service.append(slug, [story_opened(rng, slug)], "no_stream")
        remaining = events - len(names)
        counter = iter(range(remaining // BATCH + 1))

        async def worker() -> None:
            for n in counter:
                size = min(BATCH, remaining - n * BATCH)
                if size <= 0:
                    return
                batch = [development_reported(rng, f"dev-{n}-{i}") for i in range(size)]
                await service.append(rng.choice(names), batch)

        await asyncio.gather(*(worker() for _ in range(16)))
        head = await store.head()
        if head != events:
            raise AssertionError(f"the generated log holds {head} events, not {events}")
    finally:
        await store.close()


def follow_data(database: Path, folder: Path, events: int) -> Path:
    """A data folder for the service holding a copy of the cached log and a stub read
    model; return it.

    The stub is what this code builds for an empty log, then marked (table
    ``projections``) as having applied the whole log, so the service starts at once:
    folding 200,000 developments into feeds and archive pages would take hours and many
    GB, and /api/events never reads the read model. Built at every run, so it always
    has the projection versions of the code being measured.
    """
    data = folder / "data"
    empty = folder / "empty"
    data.mkdir(parents=True)
    empty.mkdir()
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{database}{suffix}")
        if source.exists():
            shutil.copy2(source, data / f"feedsvc.sqlite3{suffix}")
    asyncio.run(_stub_read_model(empty, data, events))
    shutil.rmtree(empty, ignore_errors=True)
    return data


async def _stub_read_model(empty: Path, data: Path, head: int) -> None:
    empty_settings = Settings.load(None, environ={}, **service_values(empty, 8080, PUBLIC_BASE))
    store = make_store(empty_settings, create=True)
    await store.open()
    try:
        await _build_read_model(store, empty_settings)
    finally:
        await store.close()
    shutil.copytree(empty / "readmodel", data / "readmodel")
    settings = Settings.load(None, environ={}, **service_values(data, 8080, PUBLIC_BASE))
    runner = ProjectionRunner(store, settings)
    current = runner.open_current()
    await runner.stop()
    if current is None:
        raise AssertionError(f"no read model in {runner.folder}")
    conn = sqlite3.connect(current, isolation_level=None)
    try:
        conn.executemany(
            "INSERT OR REPLACE INTO projections (name, version, position) VALUES (?, ?, ?)",
            [(name, version, head) for name, version in PROJECTION_VERSIONS.items()],
        )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    model = ReadModel(current)
    try:
        if not model.current() or model.position() != head:
            raise AssertionError(f"the stub read model {current} is not current at {head}")
    finally:
        model.close()


@dataclass(frozen=True)
class FollowRun:
    events: int
    seconds: float
    pages: int
    bytes_read: int
    cpu_s: float | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def follow_http(port: int, head: int) -> FollowRun:
    """Read the whole log page by page from 0 as a client would: GET, decode, move on."""
    events = pages = size = 0
    after = 0
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.perf_counter()
        while after < head:
            url = f"http://127.0.0.1:{port}/api/events?after={after}&limit={PAGE}"
            async with session.get(url) as response:
                body = await response.read()
                if response.status != 200:
                    raise AssertionError(f"GET {url}: {response.status} {body[:300]!r}")
            page = orjson.loads(body)
            got = page["events"]
            if not got or got[0]["position"] <= after:
                raise AssertionError(f"GET {url}: no progress past {after}")
            events += len(got)
            pages += 1
            size += len(body)
            after = got[-1]["position"]
        seconds = time.perf_counter() - start
    if events != head:
        raise AssertionError(f"read {events} events over HTTP, the log holds {head}")
    return FollowRun(events, seconds, pages, size)


_SELECT = (
    "SELECT position, id, stream, version, type, schema_version, occurred_at, recorded_at, "
    "data, metadata FROM events WHERE position > ? ORDER BY position LIMIT ?"
)


def follow_inprocess(database: Path, head: int) -> FollowRun:
    """The baseline: the same rows and columns with sqlite3, data and metadata decoded."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        events = pages = size = 0
        after = 0
        loads = orjson.loads
        start = time.perf_counter()
        while True:
            rows = conn.execute(_SELECT, (after, PAGE)).fetchall()
            if not rows:
                break
            for row in rows:
                loads(row[8])
                loads(row[9])
                size += len(row[8]) + len(row[9])
            events += len(rows)
            pages += 1
            after = rows[-1][0]
        seconds = time.perf_counter() - start
    finally:
        conn.close()
    if events != head:
        raise AssertionError(f"read {events} rows in process, the log holds {head}")
    return FollowRun(events, seconds, pages, size)


@dataclass
class FollowResult:
    events: int
    database_bytes: int
    built_s: float | None
    cached_at: Path
    http: list[FollowRun] = field(default_factory=list)
    local: list[FollowRun] = field(default_factory=list)


def measure_follow(root: Path, quick: bool, pin: bool) -> FollowResult:
    events = LOG_EVENTS_QUICK if quick else LOG_EVENTS_FULL
    cached, built = log_dataset(events)
    data = follow_data(cached, root / "follow-data", events)
    result = FollowResult(events, cached.stat().st_size, built, cached.parent)
    port = free_port()
    with service(root, "follow", data, port, pin) as svc:
        head, _ = svc.progress()
        if head != events:
            raise svc.server.fail(f"the log holds {head} events, expected {events}")
        database = svc.data_dir / "feedsvc.sqlite3"
        with on_cpu(CLIENT_CPU, pin):  # warm-up: the OS cache and the service
            asyncio.run(follow_http(port, head))
        for number in range(RUNS):
            for which in ("http", "local") if number % 2 == 0 else ("local", "http"):
                if which == "http":
                    cpu0 = svc.server.cpu_seconds()
                    with on_cpu(CLIENT_CPU, pin):
                        run_ = asyncio.run(follow_http(port, head))
                    cpu1 = svc.server.cpu_seconds()
                    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
                    result.http.append(
                        FollowRun(run_.events, run_.seconds, run_.pages, run_.bytes_read, cpu)
                    )
                else:
                    with on_cpu(SERVER_CPU, pin):
                        result.local.append(follow_inprocess(database, head))
            print(f"  follow: run {number + 1} of {RUNS} done", file=sys.stderr, flush=True)
    shutil.rmtree(root / "follow", ignore_errors=True)
    shutil.rmtree(root / "follow-data", ignore_errors=True)
    return result


def report_follow(result: FollowResult) -> str:
    http = Spread(tuple(r.rate for r in result.http))
    local = Spread(tuple(r.rate for r in result.local))
    cpu = [r.cpu_s for r in result.http]
    per_event = (
        f"{_median([c / r.events * 1e6 for c, r in zip(cpu, result.http, strict=True) if c]):.1f}"
        if None not in cpu
        else "n/a"
    )
    mb = _median([r.bytes_read / r.seconds / 1e6 for r in result.http])
    header = [
        "events/s: median [min–max]",
        "service over HTTP",
        "in-process read+decode",
        "× in-process",
        "HTTP MB/s",
        "service CPU µs/event",
    ]
    rows = [
        [
            f"follow {result.events:,} events, pages of {PAGE}",
            http.show(),
            local.show(),
            f"{http.median / local.median:.2f}",
            f"{mb:,.0f}",
            per_event,
        ]
    ]
    built = (
        f"generated in {result.built_s:.0f} s this time"
        if result.built_s is not None
        else "generated earlier"
    )
    legend = [
        f"the log: {result.events:,} events ({result.database_bytes / 1e6:,.0f} MB of SQLite), "
        f"{LOG_STORIES} stories, {built}; cached in {result.cached_at}.",
        f"service over HTTP: one aiohttp client, GET /api/events?after=<next>&limit={PAGE} from",
        "  0 to the head, each page read whole and decoded with orjson.loads (one page in",
        "  flight, as a follower reads); after one unmeasured warm-up pass.",
        "in-process: sqlite3 SELECT of the same 10 columns, same pages, orjson.loads of",
        "  data and metadata per row; on the service's CPU.",
    ]
    return table(header, rows) + "\n\n" + "\n".join(legend)


# -- 4: freshness ----------------------------------------------------------------------------------


@dataclass
class Append:
    slug: str
    development_id: str
    sent: float
    acked: float
    position: int
    visible: float | None = None


@dataclass
class Watch:
    """What the pollers know of one story's feed."""

    etag: str | None = None
    pending: list[Append] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    polling: bool = False
    last_poll: float = 0.0
    unresolved_poll: float | None = None
    """when the last poll that left developments unseen was sent"""


@dataclass
class CpuUse:
    """What a server spent answering ``answered`` POSTs over ``seconds``: the service
    in a freshness run (polls included), or the bare app answering the same POSTs sent
    the same way, at the same pace (what the load alone costs)."""

    answered: int
    seconds: float
    cpu_s: float | None

    @property
    def busy(self) -> float:
        return math.nan if self.cpu_s is None else self.cpu_s / self.seconds

    @property
    def us_per_201(self) -> float:
        if self.cpu_s is None or not self.answered:
            return math.nan
        return self.cpu_s / self.answered * 1e6


async def paced(rate: int, count: int, send: Callable[[int], Coroutine[Any, Any, None]]) -> float:
    """Start ``send(i)`` for i in 0..count-1 at ``rate`` a second, by an asyncio timer
    (as many in flight as it takes); wait for them all; return how long offering took."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    start = loop.time()
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i)))
    offered_s = loop.time() - start
    await asyncio.gather(*tasks)
    return offered_s


async def paced_bare(bare: Server, bodies: Sequence[tuple[str, str, bytes]], rate: int) -> CpuUse:
    """POST ``bodies`` to the bare app at ``rate`` a second, as :func:`freshness` does."""
    answered = 0
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=30)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(i: int) -> None:
            nonlocal answered
            slug, _, body = bodies[i]
            url = f"http://127.0.0.1:{bare.port}/api/stories/{slug}/events"
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    answered += response.status == 201

        await post(0)  # a connection open before the clock starts
        answered = 0
        cpu0 = bare.cpu_seconds()
        start = loop.time()
        await paced(rate, len(bodies), post)
        seconds = loop.time() - start
        cpu1 = bare.cpu_seconds()
    return CpuUse(answered, seconds, None if cpu0 is None or cpu1 is None else cpu1 - cpu0)


@dataclass
class FreshRun:
    offered: int
    offered_s: float
    """how long offering them took (the pacing)"""
    acked_s: float
    """from the first POST to the last 201"""
    polled_s: float
    """from the first POST to the end of polling"""
    appends: list[Append]
    failures: dict[str, int]
    polls: int
    not_modified: int
    poll_failures: dict[str, int]
    poll_interval_ms: float
    """median time between two polls of a story while it had unseen developments"""
    client_busy: float
    server_cpu_s: float | None = None
    """the service's CPU time (every thread) from the first POST to the end of polling"""
    bare: CpuUse | None = None
    """the same POSTs, paced alike, to the bare app (no polls)"""

    @property
    def server(self) -> CpuUse:
        """The service's CPU over the run (polls included)."""
        return CpuUse(len(self.appends), self.polled_s, self.server_cpu_s)

    @property
    def ack_rate(self) -> float:
        return len(self.appends) / self.acked_s if self.acked_s > 0 else 0.0

    @property
    def delays_ms(self) -> list[float]:
        """visible − 201 of every acknowledged append, sorted; inf if not visible
        within VISIBLE_WITHIN_S."""
        return sorted(
            max(0.0, a.visible - a.acked) * 1e3
            if a.visible is not None and a.visible - a.acked <= VISIBLE_WITHIN_S
            else math.inf
            for a in self.appends
        )

    @property
    def visible_max_ms(self) -> float:
        return max((d for d in self.delays_ms if d != math.inf), default=math.nan)

    @property
    def never(self) -> int:
        return sum(1 for d in self.delays_ms if d == math.inf)

    @property
    def post_ms(self) -> list[float]:
        return sorted((a.acked - a.sent) * 1e3 for a in self.appends)

    @property
    def flagged(self) -> bool:
        return bool(self.failures or self.poll_failures)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def fresh_bodies(count: int, names: Sequence[str], seed: int) -> list[tuple[str, str, bytes]]:
    """(story, development id, JSON body) of each append, stories in turn."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        slug = names[i % len(names)]
        development_id = f"fresh-{seed}-{i}"
        out.append((slug, development_id, orjson.dumps(development_reported(rng, development_id))))
    return out


async def freshness(svc: Service, rate: int, seconds: int, seed: int) -> FreshRun:
    """Append at ``rate`` a second for ``seconds``; follow each story's JSON feed until
    every acknowledged development shows (or VISIBLE_WITHIN_S passes)."""
    names = slugs(FRESH_PREFIX, FRESH_STORIES)
    bodies = fresh_bodies(rate * seconds, names, seed)
    base = f"http://127.0.0.1:{svc.port}"
    headers = {**svc.auth(), "Content-Type": "application/json"}
    watches = {slug: Watch() for slug in names}
    appends: list[Append] = []
    failures: collections.Counter[str] = collections.Counter()
    poll_failures: collections.Counter[str] = collections.Counter()
    polls = not_modified = 0
    appending = True
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=30)

    async def post(session: aiohttp.ClientSession, slug: str, dev: str, body: bytes) -> None:
        sent = loop.time()
        try:
            async with session.post(
                f"{base}/api/stories/{slug}/events", data=body, headers=headers
            ) as response:
                answer = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as e:
            failures[type(e).__name__] += 1
            return
        acked = loop.time()
        if status != 201:
            failures[f"status {status}"] += 1
            return
        item = Append(slug, dev, sent, acked, int(orjson.loads(answer)["events"][0]["position"]))
        appends.append(item)
        watch = watches[slug]
        if dev in watch.seen:
            item.visible = acked  # shown before its 201 arrived
        else:
            watch.pending.append(item)

    def pick(now: float) -> str | None:
        """The least recently polled story with developments still unseen."""
        best: tuple[float, str] | None = None
        for slug, watch in watches.items():
            if watch.polling or now - watch.last_poll < POLL_GAP_S:
                continue
            watch.pending = [a for a in watch.pending if now - a.acked <= VISIBLE_WITHIN_S]
            if watch.pending and (best is None or watch.last_poll < best[0]):
                best = (watch.last_poll, slug)
        return best[1] if best else None

    def waiting(now: float) -> bool:
        return any(now - a.acked <= VISIBLE_WITHIN_S for w in watches.values() for a in w.pending)

    next_poll = loop.time()
    intervals: list[float] = []

    async def poller(session: aiohttp.ClientSession) -> None:
        nonlocal polls, not_modified, next_poll
        while True:
            now = loop.time()
            if now < next_poll:
                await asyncio.sleep(next_poll - now)
                continue
            slug = pick(now)
            if slug is None:
                if not appending and not waiting(now):
                    return
                await asyncio.sleep(0.001)
                continue
            next_poll = max(next_poll, now) + 1 / POLL_RATE
            watch = watches[slug]
            watch.polling = True
            watch.last_poll = now
            if watch.unresolved_poll is not None:
                intervals.append((now - watch.unresolved_poll) * 1e3)
            try:
                etag = {"If-None-Match": watch.etag} if watch.etag else {}
                async with session.get(f"{base}/feeds/stories/{slug}.json", headers=etag) as r:
                    body = await r.read()
                    status, new_etag = r.status, r.headers.get("ETag")
            except (aiohttp.ClientError, TimeoutError) as e:
                poll_failures[type(e).__name__] += 1
                continue
            finally:
                watch.polling = False
            got = loop.time()
            polls += 1
            watch.unresolved_poll = now
            if status == 304:
                not_modified += 1
                continue
            if status != 200:
                poll_failures[f"status {status}"] += 1
                continue
            watch.etag = new_etag
            shown = {item["_feedsvc"]["development_id"] for item in orjson.loads(body)["items"]}
            watch.seen |= shown
            top = max((a.position for a in watch.pending if a.development_id in shown), default=0)
            still = []
            for a in watch.pending:
                # the projections apply the log in order: anything before a shown
                # development was applied too, even if newer ones pushed it out of the feed
                if a.development_id in shown or a.position <= top:
                    a.visible = got
                else:
                    still.append(a)
            watch.pending = still
            if not still:
                watch.unresolved_poll = None

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        pollers = [asyncio.create_task(poller(session)) for _ in range(POLLERS)]
        cpu0 = time.process_time()
        server0 = svc.server.cpu_seconds()
        start = loop.time()
        offered_s = await paced(rate, len(bodies), lambda i: post(session, *bodies[i]))
        appending = False
        await asyncio.gather(*pollers)
        polled_s = loop.time() - start
        server1 = svc.server.cpu_seconds()
        busy = (time.process_time() - cpu0) / polled_s
    return FreshRun(
        offered=len(bodies),
        offered_s=offered_s,
        acked_s=max((a.acked for a in appends), default=start) - start,
        polled_s=polled_s,
        appends=appends,
        failures=dict(failures),
        polls=polls,
        not_modified=not_modified,
        poll_failures=dict(poll_failures),
        poll_interval_ms=percentile(sorted(intervals), 50),
        client_busy=busy,
        server_cpu_s=None if server0 is None or server1 is None else server1 - server0,
    )


def measure_freshness(root: Path, quick: bool, pin: bool) -> tuple[int, int, list[FreshRun]]:
    rate = FRESH_RATE_QUICK if quick else FRESH_RATE_FULL
    seconds = QUICK_SECONDS if quick else FRESH_SECONDS
    port = free_port()
    template = prepare_template(root / "fresh-template", port, slugs(FRESH_PREFIX, FRESH_STORIES))
    runs: list[FreshRun] = []
    with bare_api(root, pin) as bare:
        for number in range(FRESH_RUNS):
            name = f"fresh-{number}"
            with service(root, name, template, port, pin) as svc:
                with on_cpu(CLIENT_CPU, pin):
                    run = asyncio.run(freshness(svc, rate, seconds, SEED + number))
                if svc.server.process.poll() is not None:
                    raise svc.server.fail("exited during the run")
            shutil.rmtree(root / name, ignore_errors=True)
            bodies = fresh_bodies(rate * seconds, slugs(FRESH_PREFIX, FRESH_STORIES), SEED + number)
            with on_cpu(CLIENT_CPU, pin):
                run.bare = asyncio.run(paced_bare(bare, bodies, rate))
            runs.append(run)
            print(
                f"  freshness: run {number + 1} of {FRESH_RUNS} done", file=sys.stderr, flush=True
            )
    return rate, seconds, runs


SWEEP_RATES_FULL = (250, 500, 750)
SWEEP_RATES_QUICK = (100,)
"""Offered rates measured once each besides FRESH_RATE, to say where p99 passes the target."""
FRESH_TARGET_MS = 250.0


def measure_sweep(
    root: Path, rates: Sequence[int], quick: bool, pin: bool, spy_rate: int | None = None
) -> list[tuple[int, FreshRun, str | None]]:
    """One freshness run at each offered rate, each on a fresh copy of the template;
    with ``spy_rate``, the service is recorded by py-spy during that rate's run (the
    top frames are returned beside it)."""
    seconds = QUICK_SECONDS if quick else FULL_SECONDS
    port = free_port()
    template = prepare_template(root / "sweep-template", port, slugs(FRESH_PREFIX, FRESH_STORIES))
    found: list[tuple[int, FreshRun, str | None]] = []
    for number, rate in enumerate(rates):
        name = f"sweep-{rate}"
        frames = None
        with service(root, name, template, port, pin) as svc:
            spying = None
            raw = root / f"{name}.txt"
            if rate == spy_rate:
                spy = py_spy()
                if spy is None:
                    raise SystemExit("--spy needs py-spy: .venv/bin/pip install py-spy")
                command = [spy, "record", "--rate", "100", "--format", "raw", "--nonblocking"]
                command += ["--duration", str(seconds), "--output", str(raw), "--pid"]
                spying = subprocess.Popen(
                    pinned([*command, str(svc.server.process.pid)], CLIENT_CPU, pin),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            with on_cpu(CLIENT_CPU, pin):
                run = asyncio.run(freshness(svc, rate, seconds, SEED + 100 + number))
            if spying is not None:
                spying.wait(timeout=seconds + 60)
                frames = top_frames(raw) if raw.exists() else "py-spy wrote nothing"
            if svc.server.process.poll() is not None:
                raise svc.server.fail("exited during the run")
        shutil.rmtree(root / name, ignore_errors=True)
        found.append((rate, run, frames))
        print(f"  freshness sweep: {rate}/s done", file=sys.stderr, flush=True)
    return found


def report_sweep(runs: Sequence[tuple[int, FreshRun]]) -> str:
    """Freshness by offered rate, and the first rate whose p99 passes the target."""
    rows = []
    over = None
    for rate, run in sorted(runs, key=lambda r: r[0]):
        p99 = percentile(run.delays_ms, 99)
        if over is None and p99 > FRESH_TARGET_MS:
            over = rate
        rows.append(
            [
                f"{rate:,}",
                f"{run.ack_rate:,.0f}",
                _ms(percentile(run.delays_ms, 50)),
                _ms(p99),
                f"{run.never:,}",
                f"{100 * run.server.busy:.0f}%",
                f"{run.server.us_per_201:,.0f}",
            ]
        )
    header = ["offered/s", "201s/s", "p50 ms", "p99 ms", "never", "service CPU", "µs/201"]
    line = (
        f"p99 first exceeds {FRESH_TARGET_MS:g} ms at {over:,} POSTs/s offered (of the rates "
        "measured)"
        if over is not None
        else f"p99 stays within {FRESH_TARGET_MS:g} ms at every rate measured"
    )
    return table(header, rows) + "\n" + line


def _ms(value: float) -> str:
    """Milliseconds, or that it was not visible within VISIBLE_WITHIN_S."""
    if value == math.inf:
        return f">{VISIBLE_WITHIN_S * 1e3:,.0f}"
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def report_freshness(rate: int, seconds: int, runs: Sequence[FreshRun]) -> str:
    def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
        known = tuple(v for v in values if not math.isnan(v))
        if not known:
            return "n/a"
        s = Spread(known)
        return f"{fmt.format(s.median)} [{fmt.format(s.low)}–{fmt.format(s.high)}]"

    def delays(values: Sequence[float]) -> str:
        known = tuple(v for v in values if not math.isnan(v))
        if not known:
            return "n/a"
        s = Spread(known)
        return f"{_ms(s.median)} [{_ms(s.low)}–{_ms(s.high)}]"

    def pct(values: Sequence[float]) -> str:
        return spread([100 * v for v in values], "{:.0f}%")

    bare = [r.bare for r in runs if r.bare is not None]
    header = ["median [min–max] of the runs", "value"]
    rows = [
        ["POSTs offered, events/s", spread([r.offered / r.offered_s for r in runs])],
        ["answered 201", spread([len(r.appends) for r in runs])],
        ["201s per second (first POST to last 201)", spread([r.ack_rate for r in runs])],
        ["visible − 201, p50 ms", delays([percentile(r.delays_ms, 50) for r in runs])],
        ["visible − 201, p99 ms", delays([percentile(r.delays_ms, 99) for r in runs])],
        ["visible − 201, max of the visible, ms", delays([r.visible_max_ms for r in runs])],
        [f"not visible {VISIBLE_WITHIN_S:.0f} s after its 201", spread([r.never for r in runs])],
        ["POST → 201, p50 ms", spread([percentile(r.post_ms, 50) for r in runs])],
        ["POST → 201, p99 ms", spread([percentile(r.post_ms, 99) for r in runs])],
        ["feed polls per second", spread([r.polls / r.polled_s for r in runs])],
        ["polls answered 304", pct([r.not_modified / max(1, r.polls) for r in runs])],
        ["poll interval (story waiting), p50 ms", spread([r.poll_interval_ms for r in runs])],
        ["this process (the client) CPU busy", pct([r.client_busy for r in runs])],
        ["service CPU busy, polls included (its core)", pct([r.server.busy for r in runs])],
        ["service CPU per 201, polls included, µs", spread([r.server.us_per_201 for r in runs])],
        ["bare app, same POSTs paced alike: CPU busy", pct([b.busy for b in bare])],
        ["bare app, same POSTs paced alike: CPU per 201, µs", spread([b.us_per_201 for b in bare])],
    ]  # fmt: skip
    method = (
        f"method: this process POSTs single development.reported events at {rate}/s for "
        f"{seconds} s, paced by an asyncio timer (many in flight), in turn to "
        f"{FRESH_STORIES} stories. {POLLERS} pollers in the same process ({POLL_RATE} "
        "polls/s at most, together) GET /feeds/stories/<slug>.json with If-None-Match, "
        "always the least recently polled story that has acknowledged developments not "
        "yet seen. A development is visible when a poll answered after its 201 lists it, "
        "or a later development of its story (projections apply the log in order); the "
        "time is when that answer arrived, so figures include up to one poll interval. "
        "Seen before its own 201 counts as 0 ms. Service CPU: user + system of every "
        "thread, from /proc, from the first POST to the end of polling. Bare app: after "
        "each service run, the same bodies POSTed at the same pace by the same client to "
        "bench/bare.py api (parse + 201, no polls, on the service's core): what the load "
        "costs a server that does nothing else."
    )
    notes = textwrap.wrap(method, width=88, subsequent_indent="  ")
    for n, r in enumerate(runs):
        if r.flagged:
            problems = {**r.failures, **{f"poll {k}": v for k, v in r.poll_failures.items()}}
            notes.append(f"! run {n + 1}: {problems}")
    return table(header, rows) + "\n\n" + "\n".join(notes)


# -- the benchmark -------------------------------------------------------------------------------


def summary(
    cases: Sequence[AppendCase], follow: FollowResult, fresh: tuple[int, int, list[FreshRun]]
) -> str:
    header = ["measurement (medians)", "service", "baseline", "baseline is", "service/baseline"]
    rows: list[list[str]] = []
    for case in cases:
        service = _median([r.rate for r in case.service])
        bare = _median([r.rate for r in case.bare])
        rows.append(
            [
                f"{case.name}, {CONNECTIONS} conn.",
                f"{service:,.0f} ev/s",
                f"{bare:,.0f} ev/s",
                "bare aiohttp parse + 201",
                f"{service / bare:.2f}",
            ]
        )
        if case.sqlite:
            sqlite = _median(case.sqlite)
            rows.append(
                [
                    "",
                    "",
                    f"{sqlite:,.0f} ev/s",
                    "sqlite3, 100 rows/commit",
                    f"{service / sqlite:.2f}",
                ]
            )
    http = _median([r.rate for r in follow.http])
    local = _median([r.rate for r in follow.local])
    rows.append(
        [
            f"follow the log, pages of {PAGE}",
            f"{http:,.0f} ev/s",
            f"{local:,.0f} ev/s",
            "sqlite3 read + decode",
            f"{http / local:.2f}",
        ]
    )
    rate, _, runs = fresh
    p50 = _median([percentile(r.delays_ms, 50) for r in runs])
    p99 = _median([percentile(r.delays_ms, 99) for r in runs])
    worst = max((r.visible_max_ms for r in runs if not math.isnan(r.visible_max_ms)), default=0.0)
    never = _median([r.never for r in runs])
    answered = _median([len(r.appends) for r in runs])
    rows.append(
        [
            f"freshness at {rate} ev/s offered",
            f"p50 {_ms(p50)} / p99 {_ms(p99)} / max {_ms(worst)} ms",
            "",
            f"{never:,.0f} of {answered:,.0f} not visible in {VISIBLE_WITHIN_S:.0f} s",
            "",
        ]
    )
    return table(header, rows)


def run(quick: bool, *, show_machine: bool = True) -> None:
    """Measure and print the HTTP API's throughput and freshness."""
    if shutil.which("wrk") is None:
        raise SystemExit(
            f"bench.api needs wrk, the HTTP load generator: {WRK_INSTALL} (Debian/Ubuntu)"
        )
    seconds = QUICK_SECONDS if quick else FULL_SECONDS
    began = time.perf_counter()
    pin, pin_text = pinning("clients", PINNED)
    with tempfile.TemporaryDirectory(prefix="feedsvc-bench-") as tmp:
        root = Path(tmp)
        print(f"HTTP API ({'--quick' if quick else 'full'} run)")
        if show_machine:
            for line in machine_lines(root):
                print(f"  {line}")
        counts = APPEND_QUICK if quick else APPEND_FULL
        print(f"  {_busy_line(cpu_busy())}")
        print(f"  aiohttp: {aiohttp.__version__} (service, bare app and clients; same Python)")
        print(f"  pinning: {pin_text}")
        print(
            f"  service: {sys.executable} -m feedsvc.cli --config <tmp>/feedsvc.toml serve; "
            f"a fresh copy of a prepared data folder per run, synchronous FULL, log_level "
            f"{LOG_LEVEL}, token_rate_per_s {TOKEN_RATE:,.0f}, token_burst {TOKEN_BURST:,}"
        )
        print(f"  bare app: {sys.executable} bench/bare.py api <port> (orjson.loads + 201)")
        print(
            f"  appends: {wrk_version()}: wrk -t{THREADS} -c{CONNECTIONS} -d{seconds}s "
            f"--timeout 10s -s {LUA_APPEND.relative_to(BENCH.parent)} -H 'Authorization: "
            f"Bearer <admin token>' URL -- <templates> <1|{BATCH}> {STORIES} {SLUG_PREFIX} "
            f"<nonce>; {STORIES} stories opened first, each request to a random one, "
            f"{TEMPLATES} distinct development.reported bodies of 300–2000 bytes with fresh "
            f"ids; {WARMUP_SECONDS} s of warm-up before each run"
        )
        print(
            f"  sqlite3 baseline: bench.append.through_sqlite3, {counts.batched:,} events in "
            f"{BATCH}-row transactions, WAL, synchronous FULL"
        )
        print(
            f"  runs: {RUNS} of each append and follow measurement, alternating service and "
            f"baseline; freshness {FRESH_RUNS} at the target rate, then 1 at each lower rate",
            flush=True,
        )
        cases = measure_appends(root, seconds, quick, pin)
        follow = measure_follow(root, quick, pin)
        fresh = measure_freshness(root, quick, pin)
        sweep = measure_sweep(root, SWEEP_RATES_QUICK if quick else SWEEP_RATES_FULL, quick, pin)
        print()
        print(f"1, 2. POST appends ({seconds} s per run)")
        print(report_appends(cases, seconds))
        print()
        print("3. follow the log over HTTP")
        print(report_follow(follow))
        print()
        print("4. freshness: 201 to visible in the story's JSON feed")
        print(report_freshness(*fresh))
        print()
        print(
            f"5. freshness by offered rate (one run each, {seconds} s; at the rate of 4, its "
            "run with the middle p99, the higher of two)"
        )
        rate, _, fresh_runs = fresh
        middle = sorted(fresh_runs, key=lambda r: percentile(r.delays_ms, 99))[len(fresh_runs) // 2]
        print(report_sweep([*((r, run) for r, run, _ in sweep), (rate, middle)]))
        print()
        print("summary")
        print(summary(cases, follow, fresh))
        print(f"\nload average at the end: {load()} (1, 5, 15 min)")
        print(_busy_line(cpu_busy()).replace("before starting", "after the end"))
    print(f"\n(took {time.perf_counter() - began:.0f} s)", flush=True)


# -- profiling ------------------------------------------------------------------------------------


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    # installed packages and the standard library by module path, this checkout's files
    # by their path in it
    file = _LIBRARY.sub("", m["file"]).split(f"{BENCH.parent}/", 1)[-1]
    return f"{m['func']} ({file})"


_LIBRARY = re.compile(r"^.*/(?:site-packages|lib/python3\.\d+)/")


_PARTS = (
    "projections (Projector.apply, a worker thread)",
    "SQLite calls (the store's writer thread, aiosqlite's reader threads)",
    "other threads",
    "main thread: event loop in select (waiting, or waiting for the GIL after it)",
    "main thread: the rest (HTTP, handlers, JSON, validation)",
)


def _part(frames: Sequence[str]) -> str:
    """Which part of the service a stack (root first) belongs to."""
    if any(f.startswith("Projector.apply (") for f in frames):
        return _PARTS[0]
    if any(
        f.startswith(("_connection_worker_thread (", "SQLiteEventStore._write_group ("))
        for f in frames
    ):
        return _PARTS[1]
    if frames and frames[0].startswith("Thread._bootstrap ("):
        return _PARTS[2]
    if frames and frames[-1].startswith("EpollSelector.select ("):
        return _PARTS[3]
    return _PARTS[4]


def top_frames(raw: Path, count: int = 15) -> str:
    """Where the samples went, from py-spy's raw (collapsed) output: by part of the
    service, by function where the CPU was (self), and by feedsvc function (inclusive)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        samples = int(n)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        total += samples
        if frames:
            own[frames[-1]] += samples
        for name in set(frames):
            inclusive[name] += samples
        parts[_part(frames)] += samples
    if not total:
        return "(no samples)"

    def share(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    lines = [f"{total} samples (threads on CPU); by part of the service:"]
    lines += [f"  {share(parts[p])}  {p}" for p in _PARTS]
    lines.append("self (where the CPU was; C calls count for the Python frame calling them):")
    lines += [f"  {share(n)}  {name}" for name, n in own.most_common(count)]
    lines.append("inclusive, feedsvc functions (the function and what it called):")
    ours = [(name, n) for name, n in inclusive.most_common() if "(feedsvc/" in name]
    lines += [f"  {share(n)}  {name}" for name, n in ours[:count]]
    return "\n".join(lines)


def profile(quick: bool) -> None:
    """Record the service with py-spy under each append load and print its top frames."""
    spy = py_spy()
    if spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    if shutil.which("wrk") is None:
        raise SystemExit(f"bench.api needs wrk: {WRK_INSTALL}")
    seconds = QUICK_SECONDS if quick else FULL_SECONDS
    pin, pin_text = pinning("clients", PINNED)
    with tempfile.TemporaryDirectory(prefix="feedsvc-bench-") as tmp:
        root = Path(tmp)
        port = free_port()
        print(f"profiling the service under POST appends ({seconds} s each)")
        print(f"  pinning: {pin_text}; py-spy on CPU {CLIENT_CPU} too")
        print(f"  {_busy_line(cpu_busy())}")
        template = prepare_template(root / "template", port, slugs(SLUG_PREFIX, STORIES))
        templates = root / "templates.jsonl"
        write_templates(templates, TEMPLATES)
        for per_request in (1, BATCH):
            name = f"profile-{per_request}"
            raw = root / f"{name}.txt"
            command = [spy, "record", "--rate", "100", "--format", "raw", "--nonblocking"]
            command += ["--duration", str(seconds), "--output", str(raw), "--pid"]
            with service(root, name, template, port, pin) as svc:
                _warm(port, svc.token, templates, per_request, pin)
                head0, projected0 = svc.progress()
                spying = subprocess.Popen(
                    pinned([*command, str(svc.server.process.pid)], CLIENT_CPU, pin),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                try:
                    result = wrk(port, svc.token, templates, per_request, seconds, pin)
                    _, err = spying.communicate(timeout=seconds + 60)
                finally:
                    if spying.poll() is None:
                        spying.kill()
                        spying.wait()
                head1, projected1 = svc.progress()
            if spying.returncode != 0 or not raw.exists():
                raise SystemExit(f"py-spy failed: {err.decode(errors='replace')}")
            acknowledged = AppendRun(result, per_request).rate
            print(
                f"\n== {per_request}-event POSTs, sampled at 100 Hz (py-spy --nonblocking): "
                f"{acknowledged:,.0f} events/s answered 201, the log grew "
                f"{(head1 - head0) / result.seconds:,.0f}/s, projections applied "
                f"{(projected1 - projected0) / result.seconds:,.0f}/s; "
                f"{', '.join(result.problems()) or 'every answer 201'} =="
            )
            print(top_frames(raw))


def sweep_only(rates: Sequence[int], spy_rate: int | None) -> None:
    """``--freshness``: the freshness sweep alone (and py-spy at one rate)."""
    pin, pin_text = pinning("clients", PINNED)
    seconds = FULL_SECONDS
    with tempfile.TemporaryDirectory(prefix="feedsvc-bench-") as tmp:
        print(f"freshness by offered rate ({seconds} s each); pinning: {pin_text}")
        print(f"  {_busy_line(cpu_busy())}")
        found = measure_sweep(Path(tmp), rates, False, pin, spy_rate)
        print(report_sweep([(rate, run) for rate, run, _ in found]))
        for rate, _, frames in found:
            if frames is not None:
                print(f"\n== the service at {rate:,} POSTs/s offered, py-spy at 100 Hz ==")
                print(frames)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.api [--quick] [--profile | --freshness [--rates R,…] [--spy R]]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke run")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the service with py-spy under the append loads instead of measuring",
    )
    parser.add_argument(
        "--freshness",
        action="store_true",
        help="instead: only the freshness runs, one at each of --rates",
    )
    parser.add_argument(
        "--rates", default="250,500,750,1000", help="with --freshness: offered POSTs/s"
    )
    parser.add_argument(
        "--spy", type=int, help="with --freshness: record the service with py-spy at this rate"
    )
    args = parser.parse_args(argv)
    if args.freshness:
        sweep_only([int(r) for r in args.rates.split(",")], args.spy)
    elif args.profile:
        profile(args.quick)
    else:
        run(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

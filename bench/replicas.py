"""Scale-out: two feedsvc replicas on one PostgreSQL log behind nginx, against baselines.

The topology of docker-compose.scale.yml on loopback, as ``tests/test_topology.py``
runs it: a scratch PostgreSQL database (``feedsvc_bench_<random>``, dropped at the end),
two ``python -m feedsvc.cli --config <toml> serve`` processes on it, each with its own
data_dir, started one after the other, and the distribution's nginx running
config/nginx.conf with only its addresses and paths substituted
(:func:`tests.test_topology.render_nginx_conf`). Four measurements, each beside a
baseline measured in the same run:

1. **Appends through both replicas**: single-event POSTs, two ``wrk -c32`` running
   ``bench/lua/append.lua`` at once, one per replica (64 connections in all): the
   events/s the log grew by. Beside it, (a) one feedsvc node on SQLite under the same
   two ``wrk -c32`` and (b) a bare asyncpg loop in this process: 64 tasks over a pool of
   32 connections, each committing one row per transaction (an autocommit ``INSERT``)
   into a table made by feedsvc's own PostgreSQL migration, the same event bodies.
2. **Feed reads through nginx**: ``wrk -t1 -c64`` GETs of ``/feeds/all.atom``, plain
   (a cached 200) and with ``If-None-Match`` (a 304), beside a second ``server`` block
   of the same nginx serving the same bytes from a file with ``root``.
3. **Cross-replica freshness**: appends POSTed to replica A at a steady rate; for each
   201, the time until the development shows in the story's JSON feed read from
   replica B (polled).
4. **A replica killed with SIGKILL under load**: appends to both replicas, SIGKILL to
   A, every acknowledged event looked up in the log, B's errors counted, A restarted
   on its data_dir and timed until its ETags of the all-stories feeds equal B's.

Run: ``python -m bench.replicas [--quick]`` or ``python -m bench --only replicas``.
Needs PostgreSQL (``FEEDSVC_BENCH_DATABASE_URL``, by default
``postgresql://postgres@127.0.0.1:5432/postgres``: its user creates and drops the
scratch databases), nginx and wrk.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench import api, feeds
from bench.common import load, machine_lines, parse_args, table
from bench.servers import (
    WRK_INSTALL,
    cpu_seconds_of,
    free_port,
    get,
    scratch_database,
    started,
    write_toml,
    wrk_output,
    wrk_process,
    wrk_version,
)
from feedsvc.domain.events import ValidEvent, format_recorded_at, validate_new_event
from feedsvc.settings import Settings
from feedsvc.store.postgres import MIGRATIONS as PG_MIGRATIONS
from feedsvc.store.postgres import WRITE_LOCK
from tests.test_topology import (
    NGINX_CONF,
    nginx_argv,
    nginx_binary,
    prepare_nginx_dirs,
    render_nginx_conf,
    replica_names,
    scale_compose,
)

SERVER_ENV = "FEEDSVC_BENCH_DATABASE_URL"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
PREFIX = "bench-rep-"
"""Story slugs: PREFIX + 0000 … 0999 (api.STORIES of them, as append.lua expects)."""
PER_WRK = 32
"""Connections of each of the two wrk processes (64 in all)."""
BARE_TASKS = 64
BARE_POOL = 32
WARMUP_S = 1
TAIL_S = 1
SAMPLE_S = 0.02
"""How often pg_stat_activity is sampled during an append window."""

FRESH_STORIES = 50
FRESH_RATE = 200
VISIBLE_WITHIN_S = api.VISIBLE_WITHIN_S
POLL_GAP_S = 0.01
"""Least time between two polls of one story's feed on B."""
POLLS_IN_FLIGHT = 8

KILL_WRITERS = 8
"""Concurrent POST loops per replica in the kill test (16 connections in all)."""
READ_PATHS = ("/feeds/all.json", "/feeds/all.atom", "/feeds/all.rss")
CONVERGE_WITHIN_S = 60.0


@dataclass(frozen=True)
class Plan:
    """How long each part runs."""

    append_s: int
    rounds: int
    read_s: int
    read_rounds: int
    fresh_s: int
    kill_s: float


FULL = Plan(append_s=5, rounds=2, read_s=3, read_rounds=2, fresh_s=10, kill_s=9)
QUICK = Plan(append_s=2, rounds=1, read_s=1, read_rounds=1, fresh_s=3, kill_s=4)


# -- PostgreSQL: what the backends of a database are doing ----------------------------------


def _state(row: Any) -> str:
    """What one non-idle backend of pg_stat_activity is doing, in a few words."""
    state, kind, event = row["state"], row["wait_event_type"], row["wait_event"]
    if state == "idle in transaction":
        return "in a transaction, waiting for its client"
    if kind is None:
        return "running (CPU)"
    if kind == "Lock" and event == "advisory":
        return "waiting for the advisory lock"
    if event in ("WALSync", "WALWrite", "WALInitSync"):
        return "WAL write / fsync"
    return f"waiting on {kind}:{event}"


_LOCK_KEY = (WRITE_LOCK >> 32, WRITE_LOCK & 0xFFFFFFFF)
"""The store's advisory lock (a bigint key) as pg_locks shows it: classid, objid."""
_WRITE_LOCK = (
    "SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted) "
    "FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
    "AND database = (SELECT oid FROM pg_database WHERE datname = $1) "
    "AND classid = $2::bigint::oid AND objid = $3::bigint::oid"
)


class PgWatch:
    """While a load runs: pg_stat_activity of one database sampled every SAMPLE_S from
    a thread of its own, and the CPU time its backends used (from /proc)."""

    def __init__(self, url: str, database: str) -> None:
        self.url = url
        self.database = database
        self.states: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self.lock_held = 0
        """samples in which a transaction held the log's write lock"""
        self.lock_waiters = 0
        """transactions waiting for it, summed over the samples"""
        self.cpu_s: float | None = None
        self.backends = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="pg-watch", daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> PgWatch:
        self._thread.start()
        self._ready.wait(15)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)
        if self._error is not None:
            raise AssertionError(f"sampling pg_stat_activity failed: {self._error}")

    def _main(self) -> None:
        try:
            asyncio.run(self._watch())
        except BaseException as e:
            self._error = e
            self._ready.set()

    async def _watch(self) -> None:
        conn = await asyncpg.connect(self.url, timeout=10)
        try:
            pids = [
                int(r[0])
                for r in await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1 "
                    "AND pid <> pg_backend_pid()",
                    self.database,
                )
            ]
            before = {pid: cpu_seconds_of(pid) for pid in pids}
            self.backends = len(pids)
            self._ready.set()
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid() AND state <> 'idle'",
                    self.database,
                )
                held, waiting = await conn.fetchrow(_WRITE_LOCK, self.database, *_LOCK_KEY)
                self.samples += 1
                self.states.update(_state(r) for r in rows)
                self.lock_held += held > 0
                self.lock_waiters += waiting
                await asyncio.sleep(SAMPLE_S)
            spent = [
                (after - start)
                for pid, start in before.items()
                if start is not None and (after := cpu_seconds_of(pid)) is not None
            ]
            self.cpu_s = sum(spent) if spent else None
        finally:
            await conn.close()

    @property
    def held_share(self) -> float:
        """Share of the samples in which the log's write lock was held."""
        return self.lock_held / self.samples if self.samples else math.nan

    def breakdown(self) -> str:
        """Mean backends in each state per sample, busiest first."""
        if not self.samples:
            return "no samples"
        parts = [f"{n / self.samples:.2f} {what}" for what, n in self.states.most_common()]
        return ", ".join(parts) or "every backend idle"


async def _fetch_value(url: str, sql: str) -> Any:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def pg_facts(url: str) -> list[str]:
    """The server's version and the settings that decide what a commit costs."""
    version = asyncio.run(_fetch_value(url, "SELECT version()"))
    names = (
        "synchronous_commit",
        "fsync",
        "wal_sync_method",
        "commit_delay",
        "max_connections",
        "shared_buffers",
    )
    quoted = ", ".join(f"'{n}'" for n in names)
    settings = asyncio.run(
        _fetch_value(
            url,
            "SELECT string_agg(name || '=' || setting || COALESCE(unit, ''), ', ' "
            f"ORDER BY name) FROM pg_settings WHERE name IN ({quoted})",
        )
    )
    return [f"postgresql: {str(version).split(' on ')[0]} at 127.0.0.1; {settings}"]


# -- the topology ------------------------------------------------------------------------------


@dataclass
class Topology:
    """The running replicas and nginx, and what the benchmark needs to reach them."""

    database_url: str
    database: str
    root: Path
    replicas: list[api.Service] = field(default_factory=list)
    configs: list[Path] = field(default_factory=list)
    proxy: int = 0
    static: int = 0

    def head(self) -> int:
        """The log's head (one PostgreSQL log: any replica knows it)."""
        return self.replicas[-1].progress()[0]


def replica_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "feedsvc.cli", "--config", str(config), "serve"]


def replica_config(root: Path, name: str, port: int, database_url: str, proxy: int) -> Path:
    """The settings file of one replica: bench.api's service settings, the shared log,
    links to the proxy."""
    folder = root / name
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    values = api.service_values(data, port, f"http://127.0.0.1:{proxy}")
    values["database_url"] = database_url
    config = folder / "feedsvc.toml"
    write_toml(values, config)
    if Settings.load(config, environ={}).store_url != database_url:
        raise AssertionError(f"{config} does not name the shared log")
    return config


def start_replica(
    stack: contextlib.ExitStack, name: str, config: Path, port: int, token: str | None
) -> tuple[api.Service, float]:
    """Start one replica (its output in ``<folder>/<name>.log``), wait until /readyz
    answers 200 and its projections reached the head; the service and the seconds
    from start to ready."""
    began = time.monotonic()
    server = stack.enter_context(started(name, replica_command(config), port, config.parent))
    server.wait_for("/readyz")
    ready = time.monotonic() - began
    token_file = config.parent / "data" / "admin.token"
    if token is None:
        if not token_file.exists():
            raise server.fail(f"no admin token at {token_file}")
        token = token_file.read_text(encoding="utf-8").strip()
    running = api.Service(server, token, config.parent / "data")
    running.wait_projected()
    return running, ready


def nginx_config(base: Path, replica_ports: Sequence[int], proxy: int, static: int) -> Path:
    """config/nginx.conf rendered for loopback, plus one ``server`` block serving
    ``base/static`` from files (same http-level settings, same workers)."""
    binary = nginx_binary()
    names = replica_names(scale_compose())
    upstreams = {f"{n}:8080": f"127.0.0.1:{p}" for n, p in zip(names, replica_ports, strict=True)}
    prepare_nginx_dirs(base)
    (base / "static").mkdir(exist_ok=True)
    text = render_nginx_conf(
        NGINX_CONF.read_text(encoding="utf-8"), upstreams, f"127.0.0.1:{proxy}", base, binary
    )
    block = (
        "\n    # bench.replicas: the same bytes from a file\n"
        "    server {\n"
        f"        listen 127.0.0.1:{static};\n"
        "        server_name _;\n"
        f"        location / {{ root {base / 'static'}; }}\n"
        "    }\n"
    )
    end = text.rstrip().rfind("}")
    if end < 0:
        raise AssertionError("the rendered nginx.conf has no closing brace")
    conf = base / "nginx.conf"
    conf.write_text(text[:end] + block + text[end:], encoding="utf-8")
    return conf


@contextlib.contextmanager
def topology(root: Path, database_url: str) -> Iterator[Topology]:
    """Two replicas on the shared log (the first ready before the second starts, as
    compose starts them) and nginx in front; all stopped on the way out."""
    binary = nginx_binary()
    if binary is None:
        raise SystemExit("bench.replicas needs nginx: apt-get install -y nginx")
    topo = Topology(database_url, database_url.rsplit("/", 1)[1], root)
    topo.proxy, topo.static = free_port(), free_port()
    ports = [free_port(), free_port()]
    with contextlib.ExitStack() as stack:
        token: str | None = None
        for name, port in zip(("replica-a", "replica-b"), ports, strict=True):
            config = replica_config(root, name, port, database_url, topo.proxy)
            svc, _ = start_replica(stack, name, config, port, token)
            token = svc.token
            topo.replicas.append(svc)
            topo.configs.append(config)
        base = root / "nginx"
        conf = nginx_config(base, ports, topo.proxy, topo.static)
        proxy = stack.enter_context(
            started("nginx", nginx_argv(binary, base, conf), topo.proxy, base)
        )
        proxy.wait_for("/healthz")
        yield topo


# -- 1. appends --------------------------------------------------------------------------------


_GROUP = re.compile(r"^feedsvc_group_commit_events_(sum|count) ([0-9.e+]+)$", re.M)


def group_commits(port: int) -> tuple[float, float]:
    """(events, commits) of the group commits of the process on ``port`` so far."""
    found = {m[1]: float(m[2]) for m in _GROUP.finditer(get(port, "/metrics").body.decode())}
    return found.get("sum", 0.0), found.get("count", 0.0)


@dataclass(frozen=True)
class LoadRun:
    """One timed append load through feedsvc (two wrk -c32)."""

    window_s: float
    written: int
    wrk: list[api.WrkRun]
    server_cpu_s: float | None
    groups: list[tuple[float, float]]
    """(events, commits) per server process in the window"""
    pg: PgWatch | None
    notes: list[str]

    @property
    def rate(self) -> float:
        return self.written / self.window_s

    @property
    def acked(self) -> int:
        return sum(w.created for w in self.wrk)

    def per_event_us(self, cpu_s: float | None) -> float:
        return math.nan if cpu_s is None or not self.written else cpu_s / self.written * 1e6

    def group_sizes(self) -> str:
        return " / ".join(f"{e / c:.1f}" if c else "-" for e, c in self.groups)


def head_of(svc: api.Service) -> Callable[[], int]:
    """How to read the head of ``svc``'s log (from its /readyz)."""

    def head() -> int:
        return svc.progress()[0]

    return head


def append_load(
    targets: Sequence[api.Service],
    head: Callable[[], int],
    templates: Path,
    seconds: float,
    pg: tuple[str, str] | None,
) -> LoadRun:
    """Two ``wrk -t1 -c32`` runs of append.lua at once, one to each target (both to the
    one target when there is one), for warm-up + ``seconds`` + tail; what the log grew
    by in the middle window (``head()`` at its edges), the servers' CPU and group
    commits there, and (``pg``: server URL and database) what PostgreSQL did."""
    total = WARMUP_S + seconds + TAIL_S
    ports = [t.port for t in targets] if len(targets) == 2 else [targets[0].port] * 2
    tokens = [t.token for t in targets] if len(targets) == 2 else [targets[0].token] * 2
    servers = {t.port: t for t in targets}
    start_head = head()
    processes = [
        wrk_process(
            api.wrk_arguments(port, token, templates, 1, PREFIX),
            total,
            False,
            connections=PER_WRK,
        )
        for port, token in zip(ports, tokens, strict=True)
    ]
    watch = PgWatch(*pg) if pg is not None else None
    outputs: list[str] = []
    try:
        began = time.monotonic()
        time.sleep(WARMUP_S)

        def cpu() -> float | None:
            spent = [s.server.cpu_seconds() for s in servers.values()]
            return None if None in spent else sum(s for s in spent if s is not None)

        t0, head0, cpu0 = time.monotonic(), head(), cpu()
        groups0 = [group_commits(p) for p in servers]
        with watch if watch is not None else contextlib.nullcontext():
            time.sleep(max(0.0, began + WARMUP_S + seconds - time.monotonic()))
            t1, head1, cpu1 = time.monotonic(), head(), cpu()
        groups1 = [group_commits(p) for p in servers]
    finally:
        for process in processes:
            outputs.append(wrk_output(process, total))
    runs = [api.parse_wrk(out) for out in outputs]
    time.sleep(0.5)
    grown = head() - start_head
    acked = sum(r.created for r in runs)
    notes = [p for r in runs for p in r.problems()]
    if not acked <= grown <= acked + 2 * PER_WRK:
        notes.append(f"the log grew by {grown} events but {acked} were acknowledged")
    for s in servers.values():
        if s.server.process.poll() is not None:
            raise s.server.fail("exited during the run")
    return LoadRun(
        window_s=t1 - t0,
        written=head1 - head0,
        wrk=runs,
        server_cpu_s=None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
        groups=[(a[0] - b[0], a[1] - b[1]) for a, b in zip(groups1, groups0, strict=True)],
        pg=watch,
        notes=notes,
    )


@dataclass(frozen=True)
class BareRun:
    """The bare asyncpg loop: rows committed in the window, CPU of this process and of
    the pool's backends."""

    window_s: float
    written: int
    client_cpu_s: float
    pg: PgWatch

    @property
    def rate(self) -> float:
        return self.written / self.window_s


def bare_events(templates: Path) -> list[ValidEvent]:
    """The wrk templates filled once and validated: the bodies the replicas get."""
    return [validate_new_event(raw) for raw in api.filled(templates, api.TEMPLATES, "bare")]


_BARE_INSERT = (
    "INSERT INTO events (position, id, stream, version, type, schema_version, occurred_at, "
    "recorded_at, data, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)


async def bare_inserts(
    server: str, url: str, events: Sequence[ValidEvent], seconds: float
) -> BareRun:
    """BARE_TASKS asyncio tasks over a pool of BARE_POOL connections, each inserting one
    row per transaction (an autocommit INSERT: one round trip, one commit) until the
    time is up; WARMUP_S unmeasured first. Positions come from a counter in this
    process and versions from one per story (both going on from the table's): no lock,
    no read before writing."""
    stories = api.slugs(PREFIX, api.STORIES)
    loop = asyncio.get_running_loop()
    pool = await asyncpg.create_pool(url, min_size=BARE_POOL, max_size=BARE_POOL)
    try:
        position = int(await pool.fetchval("SELECT COALESCE(MAX(position), 0) FROM events"))
        versions = collections.Counter(
            {
                str(r[0]): int(r[1])
                for r in await pool.fetch("SELECT stream, MAX(version) FROM events GROUP BY stream")
            }
        )
        written = 0

        async def task(until: float) -> None:
            nonlocal position, written
            while loop.time() < until:
                position += 1
                event = events[position % len(events)]
                stream = stories[position % len(stories)]
                versions[stream] += 1
                await pool.execute(
                    _BARE_INSERT,
                    position,
                    str(uuid.uuid4()),
                    stream,
                    versions[stream],
                    event.type,
                    event.schema_version,
                    event.occurred_at,
                    format_recorded_at(datetime.now(UTC)),
                    event.data_json,
                    event.metadata_json,
                )
                written += 1

        await asyncio.gather(*(task(loop.time() + WARMUP_S) for _ in range(BARE_TASKS)))
        with PgWatch(server, url.rsplit("/", 1)[1]) as watch:
            cpu0, before, t0 = time.process_time(), written, loop.time()
            await asyncio.gather(*(task(t0 + seconds) for _ in range(BARE_TASKS)))
            t1, cpu1, after = loop.time(), time.process_time(), written
    finally:
        await pool.close()
    return BareRun(t1 - t0, after - before, cpu1 - cpu0, watch)


async def bare_table(url: str) -> None:
    """feedsvc's PostgreSQL events table (its first migration: DDL, indexes, triggers)."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(PG_MIGRATIONS[0])
    finally:
        await conn.close()


@dataclass
class Appends:
    replicas: list[LoadRun] = field(default_factory=list)
    sqlite: list[LoadRun] = field(default_factory=list)
    bare: list[BareRun] = field(default_factory=list)


def measure_appends(
    topo: Topology, server: str, bare_url: str, root: Path, templates: Path, plan: Plan
) -> Appends:
    """Part 1: plan.rounds rounds of replicas, SQLite node and bare loop, the order
    turning each round."""
    result = Appends()
    port = free_port()
    sqlite_template = api.prepare_template(
        root / "sqlite-template", port, api.slugs(PREFIX, api.STORIES)
    )
    events = bare_events(templates)
    asyncio.run(bare_table(bare_url))
    kinds = ["replicas", "sqlite", "bare"]
    for number in range(plan.rounds):
        for kind in kinds[number % 3 :] + kinds[: number % 3]:
            if kind == "replicas":
                result.replicas.append(
                    append_load(
                        topo.replicas,
                        topo.head,
                        templates,
                        plan.append_s,
                        (server, topo.database),
                    )
                )
            elif kind == "sqlite":
                name = f"sqlite-{number}"
                with api.service(root, name, sqlite_template, port, False) as svc:
                    result.sqlite.append(
                        append_load([svc], head_of(svc), templates, plan.append_s, None)
                    )
                shutil.rmtree(root / name, ignore_errors=True)
            else:
                result.bare.append(
                    asyncio.run(bare_inserts(server, bare_url, events, plan.append_s))
                )
        print(f"  appends: round {number + 1} of {plan.rounds} done", file=sys.stderr, flush=True)
    return result


def _med(values: Sequence[float]) -> float:
    usable = [v for v in values if not math.isnan(v)]
    return statistics.median(usable) if usable else math.nan


def _spread(values: Sequence[float], digits: int = 0) -> str:
    """median [min–max], or the one value."""
    if len(values) == 1:
        return f"{values[0]:,.{digits}f}"
    return f"{_med(values):,.{digits}f} [{min(values):,.{digits}f}–{max(values):,.{digits}f}]"


def report_appends(result: Appends) -> str:
    reps, lite, bare = result.replicas, result.sqlite, result.bare
    header = ["1-event appends, 64 conn.", "events/s", "CPU µs/event", "events/commit", "p99 ms"]
    rows = [
        [
            "2 replicas on PostgreSQL",
            _spread([r.rate for r in reps]),
            f"feedsvc {_med([r.per_event_us(r.server_cpu_s) for r in reps]):,.0f} "
            f"+ postgres {_med([r.per_event_us(r.pg.cpu_s if r.pg else None) for r in reps]):,.0f}",
            " ; ".join(r.group_sizes() for r in reps),
            " / ".join(f"{max(w.p99_ms for w in r.wrk):,.0f}" for r in reps),
        ],
        [
            "(a) 1 node on SQLite",
            _spread([r.rate for r in lite]),
            f"feedsvc {_med([r.per_event_us(r.server_cpu_s) for r in lite]):,.0f}",
            " ; ".join(r.group_sizes() for r in lite),
            " / ".join(f"{max(w.p99_ms for w in r.wrk):,.0f}" for r in lite),
        ],
        [
            f"(b) bare asyncpg, {BARE_TASKS} tasks / {BARE_POOL} conn.",
            _spread([b.rate for b in bare]),
            f"client {_med([b.client_cpu_s / b.written * 1e6 for b in bare]):,.0f} "
            f"+ postgres "
            f"{_med([(b.pg.cpu_s or math.nan) / b.written * 1e6 for b in bare]):,.0f}",
            "1",
            "",
        ],
    ]
    lines = [table(header, rows), ""]
    rate = _med([r.rate for r in reps])
    for label, base in (("bare asyncpg", bare), ("SQLite node", lite)):
        other = _med([b.rate for b in base])
        lines.append(f"replicas / {label}: {rate / other:.2f}×")
    for r in reps:
        if r.pg is None:
            continue
        commits = sum(c for _, c in r.groups)
        hold_ms = r.pg.held_share * r.window_s / commits * 1e3 if commits else math.nan
        lines.append(
            f"replicas' write lock (pg_advisory_xact_lock, one writer at a time): held in "
            f"{r.pg.held_share:.0%} of the samples, {r.pg.lock_waiters / r.pg.samples:.2f} "
            f"transactions waiting for it on average; {commits:,.0f} group commits in "
            f"{r.window_s:.1f} s, so about {hold_ms:.1f} ms held per commit of "
            f"{r.written / commits if commits else math.nan:.1f} events"
        )
    lines.append("what the database's backends were doing, mean per sample (every 20 ms):")
    for label, watches in (
        ("  replicas", [r.pg for r in reps if r.pg is not None]),
        ("  bare    ", [b.pg for b in bare]),
    ):
        for w in watches:
            lines.append(f"{label}: {w.backends} backends; {w.breakdown()}")
    for r in reps + lite:
        for note in r.notes:
            lines.append(f"! {note}")
    return "\n".join(lines)


# -- 2. reads through nginx --------------------------------------------------------------------


@dataclass
class Reads:
    path: str
    size: int
    proxy_etag: str
    static_etag: str
    runs: dict[str, list[feeds.WrkRun]] = field(default_factory=dict)


def measure_reads(topo: Topology, plan: Plan) -> Reads:
    """Part 2: wrk GETs of /feeds/all.atom through nginx (cached) and of the same bytes
    from nginx's static server, 200 and 304, plan.read_rounds rounds alternating."""
    path = "/feeds/all.atom"
    first = get(topo.proxy, path)
    # nginx files the first answer in its cache once the upstream response has ended,
    # which may be a moment after the client has it all: ask again until it is there
    for _ in range(20):
        cached = get(topo.proxy, path)
        if cached.header("X-Cache-Status") == "HIT":
            break
        time.sleep(0.05)
    if first.status != 200 or cached.header("X-Cache-Status") != "HIT":
        raise AssertionError(
            f"nginx: {path} answered {first.status}, then X-Cache-Status "
            f"{cached.header('X-Cache-Status')} (a HIT expected)"
        )
    static_file = topo.root / "nginx" / "static" / path.lstrip("/")
    static_file.parent.mkdir(parents=True, exist_ok=True)
    static_file.write_bytes(cached.body)
    served = get(topo.static, path)
    if served.status != 200 or served.body != cached.body:
        raise AssertionError(f"the static server answered {served.status}, other bytes")
    reads = Reads(path, len(cached.body), cached.header("ETag") or "", served.header("ETag") or "")
    cases = {
        "feedsvc via nginx, 200": (topo.proxy, {}),
        "static file, 200": (topo.static, {}),
        "feedsvc via nginx, 304": (topo.proxy, {"If-None-Match": reads.proxy_etag}),
        "static file, 304": (topo.static, {"If-None-Match": reads.static_etag}),
    }
    for port, headers in cases.values():
        answer = get(port, path, headers)
        if answer.status != (304 if headers else 200):
            raise AssertionError(f"127.0.0.1:{port}{path} {headers}: {answer.status}")
    for number in range(plan.read_rounds):
        names = list(cases) if number % 2 == 0 else [*reversed(list(cases))]
        for name in names:
            port, headers = cases[name]
            run = feeds.wrk(f"http://127.0.0.1:{port}{path}", headers, plan.read_s, False)
            reads.runs.setdefault(name, []).append(run)
    return reads


def report_reads(reads: Reads) -> str:
    header = ["GET " + reads.path, "req/s", "p50 / p99 ms", "baseline req/s", "× static"]
    rows = []
    for status in ("200", "304"):
        mine = reads.runs[f"feedsvc via nginx, {status}"]
        base = reads.runs[f"static file, {status}"]
        rows.append(
            [
                f"cached {status} via nginx",
                _spread([r.rate for r in mine]),
                f"{_med([r.p50_ms for r in mine]):.1f} / {_med([r.p99_ms for r in mine]):.1f}",
                _spread([r.rate for r in base]),
                f"{_med([r.rate for r in mine]) / _med([r.rate for r in base]):.2f}",
            ]
        )
    return table(header, rows) + (
        f"\nbody {reads.size:,} bytes; baseline: the same bytes from a file "
        "(a second server block of the same nginx, `root`), its own ETag"
    )


# -- 3. cross-replica freshness ----------------------------------------------------------------


@dataclass
class Fresh:
    appends: list[api.Append]
    offered: int
    offered_s: float
    failures: collections.Counter[str]
    polls: int
    not_modified: int
    poll_failures: collections.Counter[str]
    polled_s: float
    answers: dict[str, bytes]
    """the first body answered with each failing status"""
    busy: dict[str, float] = field(default_factory=dict)
    """CPU time over the run, as a share of one core: replica A, B, postgres, bench"""

    @property
    def delays_ms(self) -> list[float]:
        """B-visible − A's 201 of every acknowledged append (inf: not within 5 s)."""
        return sorted(
            max(0.0, a.visible - a.acked) * 1e3
            if a.visible is not None and a.visible - a.acked <= VISIBLE_WITHIN_S
            else math.inf
            for a in self.appends
        )


async def cross_freshness(a: api.Service, b: api.Service, rate: int, seconds: int) -> Fresh:
    """POST ``rate`` single events a second for ``seconds`` to A (FRESH_STORIES stories
    in turn); poll each story's JSON feed on B while it has acknowledged developments
    B has not shown, until all show or VISIBLE_WITHIN_S passes."""
    names = api.slugs(PREFIX, FRESH_STORIES)
    # a seed of its own: api.SEED's sequence made the ids of the stories' openings
    bodies = api.fresh_bodies(rate * seconds, names, random.randrange(1 << 30))
    headers = {**a.auth(), "Content-Type": "application/json"}
    pending: dict[str, list[api.Append]] = {s: [] for s in names}
    seen: dict[str, set[str]] = {s: set() for s in names}
    etags: dict[str, str] = {}
    watchers: dict[str, asyncio.Task[None]] = {}
    appends: list[api.Append] = []
    failures: collections.Counter[str] = collections.Counter()
    poll_failures: collections.Counter[str] = collections.Counter()
    counts = {"polls": 0, "304": 0}
    answers: dict[str, bytes] = {}
    gate = asyncio.Semaphore(POLLS_IN_FLIGHT)
    loop = asyncio.get_running_loop()

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512), timeout=aiohttp.ClientTimeout(total=30)
    ) as session:

        async def poll(slug: str) -> None:
            url = f"http://127.0.0.1:{b.port}/feeds/stories/{slug}.json"
            while True:
                now = loop.time()
                pending[slug] = [x for x in pending[slug] if now - x.acked <= VISIBLE_WITHIN_S]
                if not pending[slug]:
                    del watchers[slug]
                    return
                try:
                    async with gate:
                        condition = {"If-None-Match": etags[slug]} if slug in etags else {}
                        async with session.get(url, headers=condition) as r:
                            body, status, etag = await r.read(), r.status, r.headers.get("ETag")
                except (aiohttp.ClientError, TimeoutError) as e:
                    poll_failures[type(e).__name__] += 1
                    await asyncio.sleep(POLL_GAP_S)
                    continue
                got = loop.time()
                counts["polls"] += 1
                if status == 304:
                    counts["304"] += 1
                elif status != 200:
                    poll_failures[f"status {status}"] += 1
                else:
                    etags[slug] = etag or ""
                    shown = {i["_feedsvc"]["development_id"] for i in orjson.loads(body)["items"]}
                    seen[slug] |= shown
                    top = max(
                        (x.position for x in pending[slug] if x.development_id in shown),
                        default=0,
                    )
                    for x in pending[slug]:
                        if x.development_id in shown or x.position <= top:
                            x.visible = got
                    pending[slug] = [x for x in pending[slug] if x.visible is None]
                await asyncio.sleep(POLL_GAP_S)

        async def post(i: int) -> None:
            slug, dev, body = bodies[i]
            sent = loop.time()
            try:
                async with session.post(
                    f"http://127.0.0.1:{a.port}/api/stories/{slug}/events",
                    data=body,
                    headers=headers,
                ) as response:
                    answer, status = await response.read(), response.status
            except (aiohttp.ClientError, TimeoutError) as e:
                failures[type(e).__name__] += 1
                return
            acked = loop.time()
            if status != 201:
                failures[f"status {status}"] += 1
                answers.setdefault(f"status {status}", answer)
                return
            position = int(orjson.loads(answer)["events"][0]["position"])
            item = api.Append(slug, dev, sent, acked, position)
            appends.append(item)
            if dev in seen[slug]:
                item.visible = acked
                return
            pending[slug].append(item)
            if slug not in watchers:
                watchers[slug] = asyncio.create_task(poll(slug))

        start = loop.time()
        offered_s = await api.paced(rate, len(bodies), post)
        while watchers:
            await asyncio.gather(*list(watchers.values()))
        polled_s = loop.time() - start
    return Fresh(
        appends,
        len(bodies),
        offered_s,
        failures,
        counts["polls"],
        counts["304"],
        poll_failures,
        polled_s,
        answers,
    )


def measure_fresh(topo: Topology, server: str, plan: Plan) -> Fresh:
    """Part 3, with the CPU every party used meanwhile."""
    a, b = topo.replicas
    with PgWatch(server, topo.database) as watch:
        before = [a.server.cpu_seconds(), b.server.cpu_seconds(), time.process_time()]
        fresh = asyncio.run(cross_freshness(a, b, FRESH_RATE, plan.fresh_s))
        after = [a.server.cpu_seconds(), b.server.cpu_seconds(), time.process_time()]
    spent = [
        math.nan if x is None or y is None else y - x for x, y in zip(before, after, strict=True)
    ]
    fresh.busy = {
        "replica A": spent[0] / fresh.polled_s,
        "replica B": spent[1] / fresh.polled_s,
        "postgres backends": (watch.cpu_s or math.nan) / fresh.polled_s,
        "this process (client)": spent[2] / fresh.polled_s,
    }
    return fresh


def report_fresh(fresh: Fresh, rate: int, seconds: int) -> str:
    delays = fresh.delays_ms
    never = sum(1 for d in delays if d == math.inf)
    header = ["A → B freshness", "p50 ms", "p99 ms", "max ms", "never (5 s)", "201s", "target"]
    p99 = api.percentile(delays, 99)
    finite = [d for d in delays if d != math.inf]
    rows = [
        [
            f"{rate}/s to A for {seconds} s",
            f"{api.percentile(delays, 50):,.0f}",
            f"{p99:,.0f}" if p99 != math.inf else f">{VISIBLE_WITHIN_S * 1e3:,.0f}",
            f"{max(finite):,.0f}" if finite else "n/a",
            f"{never}",
            f"{len(fresh.appends):,} of {fresh.offered:,}",
            f"p99 ≤ 250 ms: {'met' if p99 <= 250 else 'NOT met'}",
        ]
    ]
    posts = sorted((x.acked - x.sent) * 1e3 for x in fresh.appends)
    extra = (
        f"POST to A p50 / p99: {api.percentile(posts, 50):,.0f} / "
        f"{api.percentile(posts, 99):,.0f} ms; offering took {fresh.offered_s:.1f} s; "
        f"polls of B: {fresh.polls:,} ({fresh.polls / fresh.polled_s:,.0f}/s, "
        f"{fresh.not_modified / max(1, fresh.polls):.0%} answered 304)"
    )
    busy = ", ".join(f"{name} {share:.0%}" for name, share in fresh.busy.items())
    extra += f"\nCPU over the run, share of one core: {busy}"
    problems = [f"{n} × {k} (POST)" for k, n in fresh.failures.items()] + [
        f"{n} × {k} (poll)" for k, n in fresh.poll_failures.items()
    ]
    out = table(header, rows) + "\n" + extra
    if problems:
        out += "\n! " + ", ".join(problems)
    for status, body in fresh.answers.items():
        out += f"\n! first {status} answer: {body[:400].decode(errors='replace')}"
    return out


# -- 4. SIGKILL under load ---------------------------------------------------------------------


@dataclass
class Kill:
    acked: dict[str, list[str]]
    """replica → event ids it answered 201"""
    unanswered: list[str]
    """ids sent to A that got no answer (in flight at the kill)"""
    post_errors: dict[str, collections.Counter[str]]
    """replica → failures, keyed 'before'/'after' the kill and kind"""
    reads: collections.Counter[str]
    """B's reads: 'ok before', 'ok after', and failures"""
    killed_at_s: float
    load_s: float
    missing: int = 0
    unanswered_in_log: int = 0
    ready_s: float = math.nan
    converged_s: float = math.nan
    etags: dict[str, str] = field(default_factory=dict)
    answers: dict[str, bytes] = field(default_factory=dict)
    """the first body answered with each failing status"""


async def load_and_kill(topo: Topology, lines: Sequence[str], seconds: float) -> Kill:
    """KILL_WRITERS POST loops to each replica and one reader of B's feeds for
    ``seconds``; SIGKILL to A a third of the way in."""
    a, b = topo.replicas
    names = api.slugs(PREFIX, api.STORIES)
    rng = random.Random(api.SEED)
    kill = Kill(
        {"A": [], "B": []},
        [],
        {"A": collections.Counter(), "B": collections.Counter()},
        collections.Counter(),
        seconds / 3,
        seconds,
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    killed = False

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=10)
    ) as session:

        async def writer(name: str, svc: api.Service) -> None:
            headers = {**svc.auth(), "Content-Type": "application/json"}
            while loop.time() - start < seconds:
                event_id = str(uuid.uuid4())
                body = (
                    rng.choice(lines)
                    .replace("__EVENT_ID__", event_id)
                    .replace("__DEV_ID__", f"kill-{event_id}")
                )
                url = f"http://127.0.0.1:{svc.port}/api/stories/{rng.choice(names)}/events"
                when = "after" if killed else "before"
                try:
                    async with session.post(url, data=body, headers=headers) as r:
                        answer, status = await r.read(), r.status
                except (aiohttp.ClientError, TimeoutError) as e:
                    kill.post_errors[name][f"{when}: {type(e).__name__}"] += 1
                    if name == "A" and not isinstance(e, aiohttp.ClientConnectorError):
                        kill.unanswered.append(event_id)
                    await asyncio.sleep(0.05)
                    continue
                if status == 201:
                    kill.acked[name].append(event_id)
                else:
                    kill.post_errors[name][f"{when}: status {status}"] += 1
                    kill.answers.setdefault(f"status {status}", answer)

        async def reader() -> None:
            i = 0
            while loop.time() - start < seconds:
                path = (
                    READ_PATHS[i % len(READ_PATHS)]
                    if i % 2
                    else (f"/feeds/stories/{names[i % len(names)]}.json")
                )
                i += 1
                when = "after" if killed else "before"
                try:
                    async with session.get(f"http://127.0.0.1:{b.port}{path}") as r:
                        await r.read()
                        kill.reads[f"{when}: {'ok' if r.status == 200 else r.status}"] += 1
                except (aiohttp.ClientError, TimeoutError) as e:
                    kill.reads[f"{when}: {type(e).__name__}"] += 1
                await asyncio.sleep(0.01)

        async def killer() -> None:
            nonlocal killed
            await asyncio.sleep(kill.killed_at_s)
            a.server.process.send_signal(signal.SIGKILL)
            killed = True

        tasks = [writer("A", a) for _ in range(KILL_WRITERS)]
        tasks += [writer("B", b) for _ in range(KILL_WRITERS)]
        await asyncio.gather(*tasks, reader(), killer())
    return kill


async def present(url: str, ids: Sequence[str]) -> int:
    """How many of ``ids`` are in the log."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE id = ANY($1)", ids))
    finally:
        await conn.close()


def etags_of(port: int) -> dict[str, str]:
    return {p: get(port, p).header("ETag") or "" for p in READ_PATHS}


def measure_kill(topo: Topology, stack: contextlib.ExitStack, templates: Path, plan: Plan) -> Kill:
    """Part 4: the load, the kill, the log checked, A restarted on its data_dir."""
    a, b = topo.replicas
    lines = [line for line in templates.read_text(encoding="utf-8").splitlines() if line]
    kill = asyncio.run(load_and_kill(topo, lines, plan.kill_s))
    a.server.process.wait(timeout=10)
    acked = kill.acked["A"] + kill.acked["B"]
    kill.missing = len(acked) - asyncio.run(present(topo.database_url, acked))
    if kill.unanswered:
        kill.unanswered_in_log = asyncio.run(present(topo.database_url, kill.unanswered))
    restarted, kill.ready_s = start_replica(
        stack, "replica-a-restarted", topo.configs[0], a.port, a.token
    )
    began = time.monotonic() - kill.ready_s
    deadline = began + CONVERGE_WITHIN_S
    while time.monotonic() < deadline:
        theirs, mine = etags_of(b.port), etags_of(restarted.port)
        if theirs == mine and all(theirs.values()):
            kill.converged_s = time.monotonic() - began
            kill.etags = mine
            break
        time.sleep(0.05)
    topo.replicas[0] = restarted
    return kill


def report_kill(kill: Kill) -> str:
    acked = len(kill.acked["A"]) + len(kill.acked["B"])
    lines = [
        f"load: {KILL_WRITERS} POST loops to each replica (aiohttp, one event each, "
        f"random story) and one reader of B for {kill.load_s:.0f} s; SIGKILL to A at "
        f"{kill.killed_at_s:.1f} s",
        f"acknowledged (201): {acked:,} (A {len(kill.acked['A']):,}, "
        f"B {len(kill.acked['B']):,}); missing from the log afterwards: {kill.missing} "
        f"({'no acknowledged append lost' if kill.missing == 0 else 'ACKNOWLEDGED APPENDS LOST'})",
        f"sent to A, no answer (in flight at the kill): {len(kill.unanswered)}, "
        f"of which in the log: {kill.unanswered_in_log}",
    ]
    for name in ("A", "B"):
        errors = ", ".join(f"{k} {n}" for k, n in sorted(kill.post_errors[name].items()))
        lines.append(f"POST errors to {name}: {errors or 'none'}")
    for status, body in kill.answers.items():
        lines.append(f"! first {status} answer: {body[:400].decode(errors='replace')}")
    lines.append(
        "B's reads (feeds of all stories and of single stories): "
        + ", ".join(f"{k} {n:,}" for k, n in sorted(kill.reads.items()))
    )
    converged = (
        f"{kill.converged_s:.1f} s"
        if not math.isnan(kill.converged_s)
        else f"NOT within {CONVERGE_WITHIN_S:.0f} s"
    )
    lines.append(
        f"A restarted on its data_dir: /readyz 200 after {kill.ready_s:.1f} s; the same "
        f"ETags as B for {', '.join(READ_PATHS)} after {converged} (from the restart)"
    )
    return "\n".join(lines)


# -- the benchmark -----------------------------------------------------------------------------


def summary(result: Appends, reads: Reads, fresh: Fresh, kill: Kill) -> str:
    rate = _med([r.rate for r in result.replicas])
    bare = _med([b.rate for b in result.bare])
    lite = _med([r.rate for r in result.sqlite])
    p99 = api.percentile(fresh.delays_ms, 99)
    header = ["target", "measured", "baseline", "ratio", "met"]
    rows = [
        [
            "appends, 2 replicas ≥ 1× bare asyncpg",
            f"{rate:,.0f} ev/s",
            f"{bare:,.0f} ev/s",
            f"{rate / bare:.2f}×",
            "yes" if rate >= bare else "NO",
        ],
        ["", "", f"SQLite node {lite:,.0f} ev/s", f"{rate / lite:.2f}×", ""],
    ]
    for status in ("200", "304"):
        mine = _med([r.rate for r in reads.runs[f"feedsvc via nginx, {status}"]])
        base = _med([r.rate for r in reads.runs[f"static file, {status}"]])
        rows.append(
            [
                f"cached {status} via nginx",
                f"{mine:,.0f} req/s",
                f"static {base:,.0f} req/s",
                f"{mine / base:.2f}×",
                "",
            ]
        )
    rows.append(
        [
            "freshness A → B, p99 ≤ 250 ms",
            f"p99 {p99:,.0f} ms",
            "",
            "",
            "yes" if p99 <= 250 else "NO",
        ]
    )
    b_errors = sum(kill.post_errors["B"].values()) + sum(
        n for k, n in kill.reads.items() if not k.endswith(": ok")
    )
    rows.append(
        [
            "SIGKILL: no acknowledged append lost",
            f"{kill.missing} lost",
            "",
            "",
            "yes" if kill.missing == 0 else "NO",
        ]
    )
    rows.append(
        [
            "SIGKILL: B keeps answering",
            f"{b_errors} errors",
            "",
            "",
            "yes" if not b_errors else "NO",
        ]
    )
    rows.append(
        [
            "SIGKILL: A converges to B's ETags",
            f"{kill.converged_s:.1f} s" if not math.isnan(kill.converged_s) else "never",
            "",
            "",
            "yes" if not math.isnan(kill.converged_s) else "NO",
        ]
    )
    return table(header, rows)


def run(quick: bool, *, show_machine: bool = True) -> None:
    """Run the four scale-out measurements and print them beside their baselines."""
    for tool in ("wrk",):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench.replicas needs {tool}: {WRK_INSTALL}")
    plan = QUICK if quick else FULL
    server = os.environ.get(SERVER_ENV, DEFAULT_SERVER)
    began = time.perf_counter()
    print(
        f"scale-out: 2 replicas on PostgreSQL behind nginx ({'--quick' if quick else 'full'} run)"
    )
    with tempfile.TemporaryDirectory(prefix="feedsvc-bench-") as tmp:
        root = Path(tmp)
        if show_machine:
            for line in machine_lines(root):
                print(f"  {line}")
        for line in pg_facts(server):
            print(f"  {line}")
        nginx = subprocess.run(
            [nginx_binary() or "nginx", "-v"], capture_output=True, text=True, check=False
        ).stderr.strip()
        print(
            f"  versions: {nginx}; {wrk_version()}; asyncpg {asyncpg.__version__}; "
            f"aiohttp {aiohttp.__version__}"
        )
        print(
            "  pinning: none: the replicas, PostgreSQL, nginx, wrk and this process share "
            f"every CPU ({os.cpu_count()}); figures move with other work on the machine"
        )
        print(
            f"  replicas: {sys.executable} -m feedsvc.cli --config <tmp>/replica-{{a,b}}/"
            "feedsvc.toml serve, each its own data_dir, database_url a scratch database "
            f"feedsvc_bench_<random> on {server.rsplit('/', 1)[0]}, log_level "
            f"{api.LOG_LEVEL}, token rate limit out of reach, public_base_url nginx; "
            f"{api.STORIES} stories opened first (through StoryService, in this process)"
        )
        with (
            scratch_database(server) as url,
            scratch_database(server, "feedsvc_bench_bare_") as bare_url,
            contextlib.ExitStack() as stack,
        ):
            settings = Settings.load(
                None, environ={}, **{**api.service_values(root / "prep", 0), "database_url": url}
            )
            asyncio.run(api.open_stories(settings, api.slugs(PREFIX, api.STORIES)))
            templates = root / "templates.jsonl"
            api.write_templates(templates, api.TEMPLATES)
            topo = stack.enter_context(topology(root, url))
            print(
                f"  1. appends: {wrk_version()}: 2 × wrk -t1 -c{PER_WRK} "
                f"-d{WARMUP_S + plan.append_s + TAIL_S:.0f}s "
                f"--timeout 10s -s bench/lua/append.lua (one per replica; both to the SQLite "
                f"node), events/s = growth of the log in the middle {plan.append_s:.0f} s; "
                f"bare: {BARE_TASKS} asyncio tasks over an asyncpg pool of {BARE_POOL}, "
                f"autocommit INSERT of one row each, {plan.append_s:.0f} s after "
                f"{WARMUP_S:.0f} s; {plan.rounds} round(s), order turning",
                flush=True,
            )
            appends = measure_appends(topo, server, bare_url, root, templates, plan)
            print(
                f"  2. reads: wrk -t1 -c64 -d{plan.read_s}s --latency, {plan.read_rounds} round(s)",
                flush=True,
            )
            reads = measure_reads(topo, plan)
            fresh = measure_fresh(topo, server, plan)
            kill = measure_kill(topo, stack, templates, plan)
            print()
            print("1. appends through two replicas on one PostgreSQL log")
            print(report_appends(appends))
            print()
            print("2. feed reads through nginx (config/nginx.conf rendered for loopback)")
            print(report_reads(reads))
            print()
            print(
                f"3. cross-replica freshness: 201 from A → the development in B's "
                f"/feeds/stories/<slug>.json ({FRESH_STORIES} stories in turn, polled with "
                f"If-None-Match at most every {POLL_GAP_S * 1e3:.0f} ms per story, "
                f"{POLLS_IN_FLIGHT} polls in flight)"
            )
            print(report_fresh(fresh, FRESH_RATE, plan.fresh_s))
            print()
            print("4. SIGKILL of replica A under load")
            print(report_kill(kill))
            print()
            print("summary")
            print(summary(appends, reads, fresh, kill))
        print(f"\nload average at the end: {load()} (1, 5, 15 min)")
    print(f"\n(took {time.perf_counter() - began:.0f} s)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.replicas [--quick]``."""
    args = parse_args(__doc__.split("\n")[0] if __doc__ else "", argv)
    run(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

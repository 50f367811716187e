"""Scale: rebuilding every projection over a large log, and starting up with one.

Over a realistic log made by ``bench.dataset`` (stories opened over time, developments
with 300–2000-byte bodies, quotes, corrections, retractions, follow-ups):

a. **full rebuild**: ``ProjectionRunner(store, settings).rebuild()`` in a child process
   (a fresh ``python``; the read model goes to ``data_dir/readmodel``), timed inside the
   child, with the child's peak RSS (its own ``VmHWM`` when it ends).
   The baseline, in this process and the same run: reading the same events through
   ``SQLiteEventStore.read_all`` in pages of 1000 and decoding each event's data
   (``event.data``). A rebuild may leave archive pages recorded but unrendered, for a
   server job; the child renders them all afterwards, timed apart ("every projection
   complete" is both). Targets: rebuild ≤ 2.5 × the baseline, peak RSS ≤ 256 MB.
b. **start-up**: from starting ``feedsvc serve`` (a child process, a temporary config
   pointing at that database and the read model (a) built, so nothing is rebuilt) until
   ``/readyz`` answers 200; then its RSS, and its RSS under 2 s of GETs of a story feed
   (``wrk`` if installed, else an aiohttp client loop), then of every story's feed in
   turn. Targets: ready ≤ 2 s, RSS ≤ 200 MB.
c. ``python -m bench.scale`` then runs ``bench.peer`` (feedsvc's store against the
   eventsourcing library); ``python -m bench`` runs that one as its own benchmark.

The issue asks for 1,000 stories and 1,000,000 events. That log is generated and
cached (``bench/data/``); ``--full-size`` rebuilds and starts up on it, measured
directly (over ten minutes here, so apart from ``python -m bench``). The default run
uses a log of the same shape with 20,000 events (``--quick``: 5,000 over 100 stories).

Run: ``python -m bench.scale [--quick]``; ``python -m bench.scale --profile [--quick]``
runs the rebuild under ``py-spy`` instead and prints the hottest frames;
``python -m bench.scale --fold [--quick] [--events N] [--batch B]`` instead folds the
cached 1,000,000-event log (its first ``N`` events; ``--quick``: the 5,000-event one)
with ``Projector.apply`` alone in this process, in batches of ``B`` (1000) into a
generation being built, and prints the milliseconds per 10,000 events along the way
(how the fold grows with the log, without the runner or rendering);
``python -m bench.scale --render [--quick]`` instead renders, in this process, every
current feed document and archive page of the rebuild's log folded once, whole (as
before entry fragments) and from entry fragments, and prints the time per document.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import dataset, peer
from bench.common import RUNS, machine_lines, py_spy, table
from bench.dataset import Size
from bench.servers import Reply, clean_env, free_port, get
from feedsvc.projections.documents import Document
from feedsvc.projections.projector import Projector
from feedsvc.projections.readmodel import connect
from feedsvc.projections.render import Renderer
from feedsvc.rendering import feeds
from feedsvc.rendering.model import FeedFormat, FeedView, Scope, Urls
from feedsvc.store.sqlite import SQLiteEventStore

RSS_TARGET_MB = 256
FIRST_TARGET_MS = 50.0
RATIO_TARGET = 2.5
READY_TARGET_S = 2.0
SERVE_RSS_TARGET_MB = 200
PAGE = 1000
BASE_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class Plan:
    """What one mode measures."""

    rebuild: Size
    """the log rebuilt, read by the baseline, and started with"""
    rebuild_runs: int
    baseline_runs: int
    startup_runs: int
    load_s: float
    archive_budget_s: float | None = None
    """How long the rebuild's child may render archive pages (None: all of them)."""


FULL = Plan(
    rebuild=Size(stories=1_000, events=20_000),
    rebuild_runs=1,
    baseline_runs=RUNS,
    startup_runs=RUNS,
    load_s=2.0,
)
FULL_SIZE = Plan(
    rebuild=dataset.FULL,
    rebuild_runs=1,
    baseline_runs=1,
    startup_runs=1,
    load_s=2.0,
    archive_budget_s=240.0,
)
"""``--full-size``: the rebuild and the start-up on the issue's whole log (over ten
minutes here, so not part of ``python -m bench``)."""
QUICK = Plan(
    rebuild=Size(stories=100, events=5_000),
    rebuild_runs=1,
    baseline_runs=RUNS,
    startup_runs=RUNS,
    load_s=2.0,
)


def _mb(kb: float) -> str:
    return f"{kb / 1024:,.0f} MB"


def _spread(values: Sequence[float], digits: int = 1) -> str:
    """``median [min–max]`` of a few runs with ``digits`` decimals (one run: the value)."""
    if len(values) == 1:
        return f"{values[0]:,.{digits}f}"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:,.{digits}f} [{low:,.{digits}f}–{high:,.{digits}f}]"


# -- (a) the rebuild, in a child process --------------------------------------------------------


def _status_kb(pid: int | str, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status (VmRSS, VmHWM), 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


async def _rebuild_child(config: Path, archive_budget_s: float | None) -> dict[str, Any]:
    """The child's work: one full rebuild of every projection, timed per batch, in a
    process set up as ``feedsvc rebuild`` sets up its own (the collector's thresholds)."""
    from feedsvc.cli_support import tune_gc
    from feedsvc.projections.runner import ProjectionRunner
    from feedsvc.settings import Settings
    from feedsvc.store import make_store

    tune_gc()
    settings = Settings.load(config, environ={})
    store = make_store(settings)
    await store.open()
    runner = ProjectionRunner(store, settings)
    try:
        runner.open_current()
        rss_before = _status_kb("self", "VmRSS")
        marks: list[tuple[int, float]] = []
        done = 0
        started = time.perf_counter()

        def progress(count: int) -> None:
            nonlocal done
            done += count
            marks.append((done, time.perf_counter() - started))

        position = await runner.rebuild(progress, in_server=False)
        seconds = time.perf_counter() - started
        hwm_rebuild = _status_kb("self", "VmHWM")
        first = await _first_requests(runner, settings.data_dir)
        # the documents: rebuild() leaves them pending, rendered after the swap when
        # first asked for or by the server's documents job; render them all here, timed
        document_items = 0
        started = time.perf_counter()
        while (count := await runner.render_pending(budget_s=60.0)) > 0:
            document_items += count
        documents_s = time.perf_counter() - started
        # archive pages: a rebuild may only record them, for a server job to render
        # later; render them all here too, timed apart
        archive_pages = _recorded_archives(settings.data_dir)
        archive_paths = 0
        started = time.perf_counter()
        while (count := await runner.render_archives()) > 0:
            archive_paths += count
            if archive_budget_s is not None and time.perf_counter() - started > archive_budget_s:
                break
        archives_s = time.perf_counter() - started
    finally:
        await runner.stop()
        await store.close()
    return {
        "position": position,
        "seconds": seconds,
        "render_s": seconds - (marks[-1][1] if marks else 0.0),
        "marks": marks,
        "archive_paths": archive_paths,
        "archive_pages": archive_pages,
        "archives_s": archives_s,
        "document_items": document_items,
        "documents_s": documents_s,
        "rss_before_kb": rss_before,
        "hwm_rebuild_kb": hwm_rebuild,
        "hwm_kb": _status_kb("self", "VmHWM"),
        "first": first,
    }


def _recorded_archives(data_dir: Path) -> int:
    """How many archive pages the current generation records and has not rendered."""
    with sqlite3.connect(f"file:{_generation(data_dir)}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT count(*) FROM archive_pages WHERE rendered = 0").fetchone()
    return int(row[0])


def _generation(data_dir: Path) -> Path:
    """The read model generation the pointer names."""
    folder = data_dir / "readmodel"
    return folder / (folder / "current").read_text().strip()


FIRST_SAMPLE = 200
"""Documents of each kind requested once right after the swap (fewer if there are not
that many)."""


async def _first_requests(runner: Any, data_dir: Path) -> dict[str, list[float]]:
    """Right after the swap, request a random sample of documents of every kind once,
    as the HTTP handlers do (``runner.document``, or ``runner.archive_document`` for an
    archive page), each still pending: kind → milliseconds of each first request."""
    import random

    from feedsvc.rendering.model import ScopeKind

    rng = random.Random(20261202)
    urls = runner.urls
    with sqlite3.connect(f"file:{_generation(data_dir)}?mode=ro", uri=True) as conn:
        scopes = [Scope.from_name(r[0]) for r in conn.execute("SELECT scope FROM scopes")]
        pages = conn.execute("SELECT scope, page FROM archive_pages WHERE rendered = 0").fetchall()
    stories = [s for s in scopes if s.kind is ScopeKind.STORY]
    topics = [s for s in scopes if s.kind is ScopeKind.TOPIC]
    fmts = list(FeedFormat)

    def sample(values: Sequence[Any]) -> list[Any]:
        return rng.sample(list(values), min(FIRST_SAMPLE, len(values)))

    base = len(urls.base)
    wanted: dict[str, list[str]] = {
        "story feed": [urls.feed_path(s, rng.choice(fmts)) for s in sample(stories)],
        "topic feed": [urls.feed_path(s, rng.choice(fmts)) for s in sample(topics)],
        "all-stories feed": [urls.feed_path(Scope.from_name("all"), f) for f in fmts],
        "story page": [urls.story_page(s.key)[base:] for s in sample(stories)],
        "topic page": [urls.topic_page(s.key)[base:] for s in sample(topics)],
        "index page": [urls.index()[base:]],
        "archive page": [
            urls.feed_path(Scope.from_name(scope), rng.choice(fmts), page)
            for scope, page in sample(pages)
        ],
    }
    times: dict[str, list[float]] = {}
    for kind, paths in wanted.items():
        for path in paths:
            began = time.perf_counter()
            if kind == "archive page":
                doc = await runner.archive_document(path)
            else:
                doc = await runner.document(path)
            elapsed = (time.perf_counter() - began) * 1000
            if doc is None:
                raise AssertionError(f"nothing at {path} after the rebuild")
            times.setdefault(kind, []).append(elapsed)
    return times


@dataclass(frozen=True)
class Rebuild:
    """One rebuild measured in a child process."""

    events: int
    seconds: float
    render_s: float
    marks: list[tuple[int, float]]
    archive_paths: int
    archive_pages: int
    """archive pages the rebuild recorded and left to render"""
    """archive documents left for the server's job, rendered after the rebuild"""
    archives_s: float
    document_items: int
    """render items (a feed in three formats, or a page) left pending by the rebuild"""
    documents_s: float
    rss_before_kb: int
    hwm_rebuild_kb: int
    """VmHWM when rebuild() returned, before the archive pages"""
    peak_kb: int
    """the child's VmHWM at its end: the peak of its own memory since it was started.
    (Not ``ru_maxrss`` from ``os.wait4``: on Linux that keeps the RSS of the forked
    copy of this process from before the exec, hundreds of MB after other benchmarks.)"""
    first: dict[str, list[float]]
    """kind of document → milliseconds of the first request of each one sampled right
    after the swap (it renders the document)"""

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def complete(self) -> bool:
        """Whether every archive page was rendered (not cut short by a time budget)."""
        return self.archive_paths >= 3 * self.archive_pages

    @property
    def complete_s(self) -> float:
        """Folding, then every document and archive page rendered (if complete)."""
        return self.seconds + self.documents_s + self.archives_s


def rebuild_in_child(
    config: Path, data_dir: Path, archive_budget_s: float | None = None
) -> Rebuild:
    """Rebuild from scratch (the read model folder removed first) in a new process."""
    shutil.rmtree(data_dir / "readmodel", ignore_errors=True)
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.scale", "--child-rebuild", str(config)]
            + ([] if archive_budget_s is None else ["--archive-budget", str(archive_budget_s)]),
            stdout=out,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status = os.waitpid(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stderr.close()
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"the rebuild child failed ({proc.returncode}):\n{err.decode()}")
    result = json.loads(text.strip().splitlines()[-1])
    return Rebuild(
        events=int(result["position"]),
        seconds=float(result["seconds"]),
        render_s=float(result["render_s"]),
        marks=[(int(n), float(t)) for n, t in result["marks"]],
        archive_paths=int(result["archive_paths"]),
        archive_pages=int(result["archive_pages"]),
        archives_s=float(result["archives_s"]),
        document_items=int(result["document_items"]),
        documents_s=float(result["documents_s"]),
        rss_before_kb=int(result["rss_before_kb"]),
        hwm_rebuild_kb=int(result["hwm_rebuild_kb"]),
        peak_kb=int(result["hwm_kb"]),
        first={k: [float(v) for v in vs] for k, vs in result["first"].items()},
    )


@dataclass(frozen=True)
class Fit:
    """How the fold's cost per event moves with the events already applied, fitted
    over the batches of one rebuild (least squares, weighted by batch size)."""

    a: float
    """seconds per event at an empty read model"""
    b: float
    """seconds per event added per event already applied"""
    batches: int


def fit(r: Rebuild) -> Fit:
    """Least squares of per-event cost against events applied, over the batches."""
    xs: list[float] = []
    ys: list[float] = []
    weights: list[float] = []
    before_n, before_t = 0, 0.0
    for n, t in r.marks:
        size = n - before_n
        if size > 0:
            xs.append((before_n + n) / 2)
            ys.append((t - before_t) / size)
            weights.append(size)
        before_n, before_t = n, t
    if len(xs) < 2:
        return Fit(ys[0] if ys else 0.0, 0.0, len(xs))
    total = sum(weights)
    mx = sum(w * x for w, x in zip(weights, xs, strict=True)) / total
    my = sum(w * y for w, y in zip(weights, ys, strict=True)) / total
    sxx = sum(w * (x - mx) ** 2 for w, x in zip(weights, xs, strict=True))
    sxy = sum(w * (x - mx) * (y - my) for w, x, y in zip(weights, xs, ys, strict=True))
    b = max(0.0, sxy / sxx) if sxx else 0.0
    return Fit(max(0.0, my - b * mx), b, len(xs))


# -- (a) the baseline, in this process --------------------------------------------------------


async def read_and_decode(path: Path) -> tuple[int, float]:
    """Read every event through SQLiteEventStore.read_all, decoding each one's data."""
    store = SQLiteEventStore(path, create=False)
    await store.open()
    try:
        return await peer.read_back(store)
    finally:
        await store.close()


# -- (b) start-up -------------------------------------------------------------------------------


def write_config(folder: Path, data_dir: Path) -> Path:
    """A feedsvc TOML config pointing at ``data_dir`` (no seed, quiet logs)."""
    config = folder / "feedsvc.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\n'
        'database = "feedsvc.sqlite3"\n'
        'seed = ""\n'
        'http_host = "127.0.0.1"\n'
        "http_port = 8080\n"
        f'public_base_url = "{BASE_URL}"\n'
        'synchronous = "FULL"\n'
        'log_level = "WARNING"\n'
    )
    return config


def _feedsvc_command() -> list[str]:
    script = Path(sys.executable).with_name("feedsvc")
    return [str(script)] if script.exists() else [sys.executable, "-m", "feedsvc.cli"]


@dataclass(frozen=True)
class Startup:
    """One start of ``feedsvc serve``."""

    ready_s: float
    rss_ready_kb: int
    one_feed: Load
    every_feed: Load
    peak_kb: int
    """VmHWM at the end"""


@dataclass(frozen=True)
class Load:
    """A few seconds of GETs against the running service."""

    requests: int
    seconds: float
    rss_max_kb: int
    tool: str

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def _wrk_script(folder: Path, paths: Sequence[str]) -> Path:
    script = folder / "paths.lua"
    listing = ", ".join(json.dumps(p) for p in paths)
    script.write_text(
        f"local paths = {{{listing}}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #paths + 1\n"
        '  return wrk.format("GET", paths[i])\n'
        "end\n"
    )
    return script


async def _client_loop(port: int, paths: Sequence[str], seconds: float) -> int:
    """GETs from 16 connections for ``seconds``; the requests answered 200."""
    done = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(offset: int) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < deadline:
                url = f"http://127.0.0.1:{port}{paths[i % len(paths)]}"
                async with session.get(url) as response:
                    await response.read()
                    if response.status == 200:
                        done += 1
                i += 1

        await asyncio.gather(*(worker(k) for k in range(16)))
    return done


def load(pid: int, port: int, folder: Path, paths: Sequence[str], seconds: float) -> Load:
    """GETs of ``paths`` in turn for ``seconds``, sampling the server's RSS meanwhile."""
    wrk = shutil.which("wrk")
    samples: list[int] = []
    started = time.perf_counter()
    if wrk:
        script = _wrk_script(folder, paths)
        proc = subprocess.Popen(
            [wrk, "-t1", "-c16", f"-d{seconds:g}s", "-s", str(script), f"http://127.0.0.1:{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        while proc.poll() is None:
            samples.append(_status_kb(pid, "VmRSS"))
            time.sleep(0.05)
        output = proc.stdout.read().decode() if proc.stdout else ""
        elapsed = time.perf_counter() - started
        requests = 0
        for line in output.splitlines():
            if "requests in" in line:
                requests = int(line.split()[0])
            if "Non-2xx" in line:
                raise RuntimeError(f"the service answered errors under load:\n{output}")
        return Load(requests, min(elapsed, seconds), max(samples, default=0), "wrk -t1 -c16")

    async def sampled() -> int:
        task = asyncio.ensure_future(_client_loop(port, paths, seconds))
        while not task.done():
            samples.append(_status_kb(pid, "VmRSS"))
            await asyncio.sleep(0.05)
        return await task

    requests = asyncio.run(sampled())
    return Load(requests, seconds, max(samples, default=0), "aiohttp client, 16 connections")


def start_and_load(
    config: Path, folder: Path, slugs: Sequence[str], head: int, seconds: float
) -> Startup:
    """Start ``feedsvc serve``, time it until /readyz answers 200, then load it."""
    port = free_port()
    env = clean_env()
    env["FEEDSVC_HTTP_PORT"] = str(port)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*_feedsvc_command(), "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"feedsvc serve exited with {proc.returncode}:\n{err}")
            try:
                reply = get(port, "/readyz")
            except OSError:
                reply = Reply(0, (), b"")
            if reply.status == 200:
                break
            if time.perf_counter() - started > 120:
                raise RuntimeError("feedsvc serve was not ready within 120 s")
            time.sleep(0.005)
        ready_s = time.perf_counter() - started
        if json.loads(reply.body)["head"] != head:
            raise RuntimeError(f"the service's head is not {head}: {reply.body!r}")
        rss_ready = _status_kb(proc.pid, "VmRSS")
        one = [f"/feeds/stories/{slugs[0]}.atom"]
        status = get(port, one[0]).status
        if status != 200:
            raise RuntimeError(f"GET {one[0]} answered {status}")
        one_feed = load(proc.pid, port, folder, one, seconds)
        every = [f"/feeds/stories/{slug}.atom" for slug in slugs]
        every_feed = load(proc.pid, port, folder, every, seconds)
        peak = _status_kb(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    return Startup(ready_s, rss_ready, one_feed, every_feed, peak)


# -- the benchmark -------------------------------------------------------------------------------


@dataclass
class Results:
    plan: Plan
    rebuilds: list[Rebuild] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    """seconds to read and decode the rebuilt log"""
    startups: list[Startup] = field(default_factory=list)


def _slugs(size: Size) -> list[str]:
    return [f"scale-story-{i:04d}" for i in range(size.stories)]


def run(quick: bool, *, show_machine: bool = True, full_size: bool = False) -> None:
    """Measure and print (a) the rebuild and (b) the start-up."""
    plan = FULL_SIZE if full_size else QUICK if quick else FULL
    began = time.perf_counter()
    mode = "--full-size" if full_size else "--quick" if quick else "full"
    print(f"scale: full rebuild and start-up ({mode} run)")
    with tempfile.TemporaryDirectory(prefix="feedsvc-bench-scale-") as tmp:
        root = Path(tmp)
        if show_machine:
            for line in machine_lines(root):
                print(f"  {line}")
        found = dataset.ensure(plan.rebuild, check_fresh=quick)
        data_dir = root / "data"
        data_dir.mkdir()
        database = data_dir / "feedsvc.sqlite3"
        shutil.copyfile(found.path, database)
        config = write_config(root, data_dir)
        print(
            f"  rebuild: {plan.rebuild_runs} run(s) in a child process; baseline: "
            f"{plan.baseline_runs} run(s) in this process; start-up: {plan.startup_runs} "
            f"run(s), {plan.load_s:g} s of load each",
            flush=True,
        )
        results = Results(plan)
        for number in range(max(plan.rebuild_runs, plan.baseline_runs)):
            if number < plan.baseline_runs:
                count, seconds = asyncio.run(read_and_decode(database))
                if count != plan.rebuild.events:
                    raise AssertionError(f"read {count} events, expected {plan.rebuild.events}")
                results.baseline.append(seconds)
            if number < plan.rebuild_runs:
                rebuild = rebuild_in_child(config, data_dir, plan.archive_budget_s)
                if rebuild.events != plan.rebuild.events:
                    raise AssertionError(f"rebuilt to {rebuild.events}, not {plan.rebuild.events}")
                results.rebuilds.append(rebuild)
                print(f"  rebuild {number + 1}: {rebuild.seconds:,.1f} s", file=sys.stderr)
        for _ in range(plan.startup_runs):
            results.startups.append(
                start_and_load(config, root, _slugs(plan.rebuild), plan.rebuild.events, plan.load_s)
            )
    print()
    print(report(results))
    print(f"\n(took {time.perf_counter() - began:.0f} s)", flush=True)


def report(results: Results) -> str:
    """Both tables and what they mean."""
    plan = results.plan
    out: list[str] = []
    n = plan.rebuild.events
    rebuild_s = statistics.median(r.seconds for r in results.rebuilds)
    complete_s = statistics.median(r.complete_s for r in results.rebuilds)
    base_s = statistics.median(results.baseline)
    peak = max(r.peak_kb for r in results.rebuilds)
    r0 = results.rebuilds[0]
    rows = [
        [
            f"rebuild(), {n:,} events",
            _spread([r.seconds for r in results.rebuilds]),
            _spread([r.rate for r in results.rebuilds], 0),
            f"{rebuild_s / base_s:,.1f}",
            _mb(peak),
        ],
    ]
    rows.append(
        [
            f"  + the {r0.document_items:,} current documents it left pending",
            _spread([r.documents_s for r in results.rebuilds]),
            "",
            "",
            "",
        ]
    )
    complete = all(r.complete for r in results.rebuilds)
    if r0.archive_pages and complete:
        rows.append(
            [
                f"  + the {r0.archive_pages:,} archive pages it left to render",
                _spread([r.archives_s for r in results.rebuilds]),
                "",
                "",
                "",
            ]
        )
    elif r0.archive_pages:
        rows.append(
            [
                f"  + {r0.archive_paths // 3:,} of the {r0.archive_pages:,} archive pages "
                f"it left (a {plan.archive_budget_s:g} s budget)",
                _spread([r.archives_s for r in results.rebuilds]),
                f"{r0.archive_paths / 3 / r0.archives_s:,.1f} pages/s",
                "",
                "",
            ]
        )
    rows.append(
        [
            "  = every projection complete",
            _spread([r.complete_s for r in results.rebuilds]) if complete else "not reached",
            _spread([r.events / r.complete_s for r in results.rebuilds], 0) if complete else "",
            f"{complete_s / base_s:,.1f}" if complete else "",
            "",
        ]
    )
    rows.append(
        [
            "baseline: read_all + decode, same events",
            _spread(results.baseline, 2),
            _spread([n / s for s in results.baseline], 0),
            "1.0",
            "",
        ]
    )
    extra = fit(r0)
    header = ["(a) full rebuild", "seconds", "events/s", "× baseline", "peak RSS"]
    out.append(table(header, rows))
    ratio_ok = complete and complete_s / base_s <= RATIO_TARGET
    if complete:
        complete_line = f"{complete_s / base_s:,.1f} ×, every projection complete"
    else:
        left = r0.archive_pages - r0.archive_paths // 3
        rate = r0.archive_paths / 3 / r0.archives_s
        complete_line = (
            f"every projection complete not reached: {left:,} archive pages were left "
            f"unrendered when the budget ran out; at the rate measured they would take "
            f"~{left / rate / 60:,.0f} min more (an estimate, not measured)"
        )
    out += [
        "",
        f"targets: rebuild ≤ {RATIO_TARGET:g} × baseline: {'met' if ratio_ok else 'NOT met'} "
        f"({complete_line}); peak RSS ≤ "
        f"{RSS_TARGET_MB} MB: {'met' if peak / 1024 <= RSS_TARGET_MB else 'NOT met'} "
        f"({_mb(peak)}).",
        f"phases (first run): folding {r0.seconds - r0.render_s:,.1f} s in batches of {PAGE} "
        f"and swapping {r0.render_s:,.1f} s (rebuild() returns: the new generation serves, "
        f"a request renders the document it asks for), then rendering the current "
        f"documents {r0.documents_s:,.1f} s"
        + (f", archive pages {r0.archives_s:,.1f} s" if r0.archive_pages else "")
        + ".",
        f"rebuild() alone (serving from the new generation, documents on demand): "
        f"{rebuild_s / base_s:,.1f} × baseline.",
        f"peak RSS: the child's VmHWM after the rebuild and every render ({_mb(r0.hwm_rebuild_kb)} "
        f"when rebuild() returned); the interpreter and imports were "
        f"{_mb(r0.rss_before_kb)} of it before the rebuild began.",
        f"fit over {extra.batches} batches: folding costs a + b·n per event, a = "
        f"{extra.a * 1e3:.2f} ms, b = {extra.b * 1e9:.2f} ms per million events already "
        f"applied." + (" Too few batches for a fit: a rough figure." if extra.batches < 5 else ""),
    ]
    rows = []
    worst = 0.0
    for kind, values in r0.first.items():
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        worst = max(worst, p99)
        rows.append(
            [
                kind,
                f"{len(values):,}",
                f"{statistics.median(values):.1f}",
                f"{p99:.1f}",
                f"{ordered[-1]:.1f}",
            ]
        )
    out += [
        "",
        table(["first request after the swap", "documents", "p50 ms", "p99 ms", "max ms"], rows),
        f"target: p99 ≤ {FIRST_TARGET_MS:g} ms for every kind: "
        f"{'met' if worst <= FIRST_TARGET_MS else 'NOT met'} (worst p99 {worst:.1f} ms). "
        f"A random sample of up to {FIRST_SAMPLE} of each kind, each still pending, requested "
        "once in the rebuild's process right after it returned, as the handlers ask "
        "(runner.document, runner.archive_document), one at a time.",
    ]
    starts = results.startups
    rows = [
        [
            "ready: start → /readyz 200",
            _spread([s.ready_s for s in starts], 2) + " s",
            f"≤ {READY_TARGET_S:g} s",
        ],
        [
            "RSS when ready",
            _mb(statistics.median(s.rss_ready_kb for s in starts)),
            f"≤ {SERVE_RSS_TARGET_MB} MB",
        ],
        [
            f"RSS max under load: one story feed ({starts[0].one_feed.tool})",
            _mb(max(s.one_feed.rss_max_kb for s in starts)),
            f"≤ {SERVE_RSS_TARGET_MB} MB",
        ],
        [
            f"RSS max under load: {plan.rebuild.stories:,} story feeds in turn",
            _mb(max(s.every_feed.rss_max_kb for s in starts)),
            f"≤ {SERVE_RSS_TARGET_MB} MB",
        ],
        ["peak RSS (VmHWM) at the end", _mb(max(s.peak_kb for s in starts)), ""],
        [
            "requests/s: one feed / every feed",
            f"{statistics.median(s.one_feed.rate for s in starts):,.0f} / "
            f"{statistics.median(s.every_feed.rate for s in starts):,.0f}",
            "",
        ],
    ]
    out += ["", table([f"(b) start-up, {n:,} events", "median [min–max] or max", "target"], rows)]
    ready_ok = statistics.median(s.ready_s for s in starts) <= READY_TARGET_S
    rss_ok = max(s.peak_kb for s in starts) / 1024 <= SERVE_RSS_TARGET_MB
    out.append(
        f"targets: ready ≤ {READY_TARGET_S:g} s: {'met' if ready_ok else 'NOT met'}; "
        f"RSS ≤ {SERVE_RSS_TARGET_MB} MB (peak): {'met' if rss_ok else 'NOT met'}."
    )
    return "\n".join(out)


# -- rendering from entry fragments ----------------------------------------------------------


class _WholeRenderer(Renderer):
    """A renderer writing each feed document whole, as before entry fragments: the
    entries sanitized once and kept in the entry cache (its JSON Feed item too), every
    document serialized with all its entries through feedgen and lxml, or orjson."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._items: dict[int, tuple[object, dict[str, Any]]] = {}

    def _whole(self, view: FeedView, fmt: FeedFormat) -> bytes:
        entries = [self.entry_cache.entry(view, item) for item in view.entries]
        if fmt is FeedFormat.ATOM:
            return feeds._atom_document(view, entries)
        if fmt is FeedFormat.RSS:
            return feeds._rss_document(view, entries)
        items = []
        for entry, item in zip(entries, view.entries, strict=True):
            kept = self._items.get(id(entry))
            if kept is None or kept[0] is not entry:
                kept = self._items[id(entry)] = (
                    entry,
                    feeds._json_item(entry, item.story, item.development),
                )
            items.append(kept[1])
        return feeds._json_document(view, items)

    def feed_docs(
        self, view: FeedView, updated: str, formats: Iterable[FeedFormat] = FeedFormat
    ) -> list[Document]:
        return [
            Document.make(
                self.urls.feed_path(view.scope, fmt, view.archive),
                fmt.content_type,
                self._whole(view, fmt),
                updated,
            )
            for fmt in formats
        ]


def _whole_projector(conn: sqlite3.Connection, urls: Urls, feed_size: int) -> Projector:
    """A projector whose renderer writes whole documents (:class:`_WholeRenderer`)."""
    projector = Projector(conn, urls, feed_size)
    projector.renderer = _WholeRenderer(projector.tables, projector.fold, urls, feed_size)
    return projector


@dataclass
class RenderTimes:
    """One path's render of every document of a folded read model."""

    name: str
    feeds: dict[FeedFormat, list[float]] = field(default_factory=dict)
    """seconds per current feed document, by format"""
    warm: list[float] = field(default_factory=list)
    """seconds per current feed document rendered again, its entries rendered already"""
    archives: list[float] = field(default_factory=list)
    """seconds per archive page (three formats)"""
    entries_rendered: int = 0
    entries_rendered_archives: int = 0
    documents: dict[str, bytes] = field(default_factory=dict)


def _render_all(projector: Projector, name: str) -> RenderTimes:
    """Render every scope's current document in each format (as first requests do),
    then every archive page in the order they filled (as the archives job does)."""
    times = RenderTimes(name)
    scopes = [
        Scope.from_name(row[0])
        for row in projector.conn.execute("SELECT scope FROM scopes ORDER BY scope")
    ]
    for scope in scopes:
        for fmt in FeedFormat:
            start = time.perf_counter()
            projector.render_feed(scope, fmt)
            times.feeds.setdefault(fmt, []).append(time.perf_counter() - start)
    times.entries_rendered = projector.renderer.entry_cache.rendered
    for scope in scopes:  # again: what re-rendering a document whose entries are known costs
        for fmt in FeedFormat:
            start = time.perf_counter()
            projector.render_feed(scope, fmt)
            times.warm.append(time.perf_counter() - start)
    assert projector.renderer.entry_cache.rendered == times.entries_rendered
    for scope, page in projector.pending_archives(1_000_000):
        start = time.perf_counter()
        projector.render_archive(scope, page)
        times.archives.append(time.perf_counter() - start)
    times.entries_rendered_archives = (
        projector.renderer.entry_cache.rendered - times.entries_rendered
    )
    times.documents = {
        str(p): bytes(b)
        for p, b in projector.conn.execute(
            "SELECT path, body FROM documents WHERE path LIKE '/feeds/%'"
        )
    }
    return times


def _ms(values: Sequence[float]) -> str:
    return f"{1e3 * statistics.mean(values):.2f}" if values else "-"


def render_fragments(quick: bool) -> None:
    """Per-document render time, whole documents (before) against documents assembled
    from entry fragments, on copies of one folded read model, in this process."""
    plan = QUICK if quick else FULL
    size = plan.rebuild
    print(f"render from fragments ({'--quick' if quick else 'full'} run)")
    print(f"  log: bench.dataset {size.describe()}, generated in memory; feed_size 50")
    events = list(dataset.events(size))
    folded = connect(":memory:")
    start = time.perf_counter()
    Projector(folded, Urls(BASE_URL), 50).apply(events, render_now=False)
    print(f"  folded in {time.perf_counter() - start:.1f} s (untimed below)")
    results: list[RenderTimes] = []
    for name in ("whole", "fragments", "whole", "fragments"):
        conn = connect(":memory:")
        folded.backup(conn)
        maker = _whole_projector if name == "whole" else Projector
        gc.collect()
        results.append(_render_all(maker(conn, Urls(BASE_URL), 50), name))
        conn.close()
    assert all(r.documents == results[0].documents for r in results), "bytes differ"
    rows = []
    for r in results:
        rows.append(
            [
                r.name,
                *(_ms(r.feeds[fmt]) for fmt in FeedFormat),
                _ms([t for fmt in FeedFormat for t in r.feeds[fmt]]),
                _ms(r.warm),
                _ms(r.archives),
                f"{max(r.archives) * 1e3:.1f}" if r.archives else "-",
                f"{r.entries_rendered:,} / {r.entries_rendered_archives:,}",
            ]
        )
    first = results[0]
    print(
        f"  {len(first.feeds[FeedFormat.ATOM]):,} scopes (current documents), "
        f"{len(first.archives):,} archive pages; runs alternate, each on a fresh copy of "
        "the folded read model with an empty entry cache; every run's documents are "
        "byte-identical"
    )
    print()
    print(
        table(
            [
                "ms per document (mean)",
                "Atom",
                "RSS",
                "JSON",
                "current, any",
                "again",
                "archive page",
                "archive max",
                "entries rendered cur. / arch.",
            ],
            rows,
        )
    )
    print()
    print(
        "whole: each document serialized with all its entries through feedgen + lxml "
        "(Atom, RSS)\n  or orjson (JSON), entries sanitized once per version (the entry "
        "cache, as before);\nfragments: each entry serialized once per version and format, "
        "a document its head + fragments.\ncurrent: Projector.render_feed(scope, fmt), "
        "one format per call, every scope, first request\n  of each (its entries read "
        "and parsed included); again: every one rendered a second time,\n  its entries "
        "rendered already (a catch-up's re-render of an unchanged entry);\n"
        "archive page: Projector.render_archive, three formats, "
        "every page in the order they filled; CPU of this process, not pinned."
    )


# -- the fold alone ------------------------------------------------------------------------------


def fold_batches(quick: bool, events: int | None, batch_size: int = PAGE) -> None:
    """Fold a cached log in batches of ``batch_size`` in this process, timing each
    ``Projector.apply`` (the events are read from the log between batches, untimed), and
    print the time per 10,000 events at each tenth of the way."""
    from feedsvc.cli_support import tune_gc

    size = QUICK.rebuild if quick else FULL_SIZE.rebuild
    found = dataset.ensure(size)
    limit = events or size.events
    tune_gc()
    per10k: collections.defaultdict[int, float] = collections.defaultdict(float)
    """10,000-event stretch → milliseconds folding it"""

    async def go(projector: Projector) -> None:
        store = SQLiteEventStore(found.path, create=False, readers=1)
        await store.open()
        try:
            after = 0
            while after < limit:
                batch = await store.read_all(after, min(batch_size, limit - after))
                if not batch:
                    break
                for event in batch:
                    _ = event.data  # decoded outside the timing, as the baseline does
                began = time.perf_counter()
                projector.apply(batch, render_now=False)
                per10k[(after + 1) // 10_000] += (time.perf_counter() - began) * 1000
                after = batch[-1].position
                if after % 100_000 < len(batch):
                    last = per10k[(after - 1) // 10_000]
                    print(f"    {after:,} events: {last:.0f} ms per 10,000", flush=True)
        finally:
            await store.close()

    with tempfile.TemporaryDirectory(prefix="feedsvc-bench-fold-") as tmp:
        conn = connect(Path(tmp) / "readmodel.sqlite3", building=True)
        projector = Projector(conn, Urls(BASE_URL), 50)
        asyncio.run(go(projector))
        conn.close()
    done = projector.position()
    print(
        f"fold alone: the first {done:,} events of {found.path.name}, "
        f"batches of {batch_size}, read before each batch (untimed)"
    )
    stretches = [per10k[i] for i in sorted(per10k)]
    tenth = max(1, len(stretches) // 10)
    print(
        "  ms per 10,000 events, each tenth of the way: "
        + " ".join(f"{stretches[i]:.0f}" for i in range(0, len(stretches), tenth))
    )
    if len(stretches) >= 91:
        at_100k, at_900k = stretches[10], stretches[90]
        print(
            f"  from 100,000: {at_100k:.0f} ms; from 900,000: {at_900k:.0f} ms "
            f"({at_900k / at_100k:.2f} ×; target ≤ 1.3 ×)"
        )
    total = sum(stretches) / 1000
    print(f"  all: {total:.2f} s ({done / total:,.0f} events/s)")


# -- profiling ----------------------------------------------------------------------------------


def profile(quick: bool) -> None:
    """Run one rebuild under py-spy and print its hottest frames (every thread)."""
    spy = py_spy()
    if spy is None:
        print("py-spy is not installed: pip install py-spy")
        return
    plan = QUICK if quick else FULL
    found = dataset.ensure(plan.rebuild)
    with tempfile.TemporaryDirectory(prefix="feedsvc-bench-profile-") as tmp:
        root = Path(tmp)
        data_dir = root / "data"
        data_dir.mkdir()
        shutil.copyfile(found.path, data_dir / "feedsvc.sqlite3")
        config = write_config(root, data_dir)
        raw = root / "profile.txt"
        child = [sys.executable, "-m", "bench.scale", "--child-rebuild", str(config)]
        subprocess.run(
            [spy, "record", "-r", "50", "-f", "raw", "-o", str(raw), "--", *child],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(hottest(raw.read_text()))


def hottest(raw: str, top: int = 25) -> str:
    """The frames where most samples were (self) and under which (inclusive)."""
    own: collections.Counter[str] = collections.Counter()
    under: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            under[frame] += int(count)
    lines = [f"{total} samples", "", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in under.most_common(top * 2)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.scale [--quick] [--profile | --render | --fold [--events N]]``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "scale").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke run")
    parser.add_argument(
        "--profile", action="store_true", help="run one rebuild under py-spy instead"
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="instead: per-document render time, whole documents against entry fragments",
    )
    parser.add_argument(
        "--fold",
        action="store_true",
        help="instead: time Projector.apply alone per batch over the cached log",
    )
    parser.add_argument(
        "--events", type=int, help="with --fold: the first N events of the full log"
    )
    parser.add_argument(
        "--batch", type=int, default=PAGE, help="with --fold: events per Projector.apply"
    )
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="instead: rebuild and start up on the whole 1,000,000-event log (over 10 min)",
    )
    parser.add_argument("--child-rebuild", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--archive-budget", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_rebuild:
        found = asyncio.run(_rebuild_child(args.child_rebuild, args.archive_budget))
        print(json.dumps(found), flush=True)
        return 0
    if args.profile:
        profile(args.quick)
        return 0
    if args.render:
        render_fragments(args.quick)
        return 0
    if args.fold:
        fold_batches(args.quick, args.events, args.batch)
        return 0
    if args.full_size:
        run(False, full_size=True)
        return 0
    run(args.quick)
    print("\n== bench.peer ==")
    peer.run(args.quick, show_machine=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Feed serving: requests/s of a cached story feed over HTTP, against a bare aiohttp app.

Measures how fast the running service answers ``GET /feeds/stories/<slug>.atom`` (a
50-entry Atom feed, precomputed and held in the document cache) over loopback, with
``wrk``, and the same in the same run from a bare aiohttp app that returns the same
bytes and headers from memory (``bench/bare.py feed``). Three cases:

* **200**: a plain GET (identity encoding);
* **304**: a GET with ``If-None-Match`` equal to the served ETag;
* **gzip**: a GET with ``Accept-Encoding: gzip`` (the stored gzip bytes).

Both servers are separate processes started from this one (the service with
``python -m feedsvc.cli --config <tmp toml> serve``, log level WARNING), pinned to CPU 0
with ``taskset``, and ``wrk -t1 -c64`` is pinned to CPU 1. Every measurement is run 3
times, alternating service and bare; the median is shown with the min and max.

Run: ``python -m bench.feeds [--quick]`` (or ``python -m bench`` for every benchmark).
Needs ``wrk``: ``apt-get update && apt-get install -y wrk``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.append import _PEOPLE, _WORDS, _event_id, development_reported, story_opened
from bench.common import RUNS, Spread, load, machine_lines, parse_args, table
from bench.servers import (
    CLIENT_CPU,
    CONNECTIONS,
    SERVER_CPU,
    START_TIMEOUT_S,
    THREADS,
    WRK_INSTALL,
    Reply,
    Server,
    free_port,
    get,
    pinned,
    pinning,
    run_wrk,
    started,
    write_toml,
    wrk_version,
)
from feedsvc.service import StoryService
from feedsvc.settings import Settings
from feedsvc.store import make_store

SEED = 1373
SLUG = "bench-feed-story"
DEVELOPMENTS = 60
FEED_SIZE = 50
FEED_PATH = f"/feeds/stories/{SLUG}.atom"
LOG_LEVEL = "WARNING"
"""The service's log level here: per-request log lines are INFO, so none is written."""

FULL_SECONDS = 5
QUICK_SECONDS = 3
WARMUP_SECONDS = 1
PINNED = f"servers on CPU {SERVER_CPU}, wrk on CPU {CLIENT_CPU} (taskset)"
"""How the pinning is described when taskset can pin"""

ATOM = "{http://www.w3.org/2005/Atom}"
_PUBLISHERS = (
    ("CT News Junkie", "ctnewsjunkie.com"),
    ("The Hartford Courant", "courant.com"),
    ("U.S. Department of Justice", "justice.gov"),
    ("Connecticut Mirror", "ctmirror.org"),
)


# -- the story ------------------------------------------------------------------------------


def _quote(rng: random.Random, development_id: str, n: int, occurred_at: str) -> dict[str, Any]:
    name, role = rng.choice(_PEOPLE)
    text = " ".join(rng.choices(_WORDS, k=rng.randint(12, 45))).capitalize() + "."
    return {
        "id": _event_id(rng),
        "type": "quote.attributed",
        "occurred_at": occurred_at,
        "data": {
            "quote_id": f"{development_id}-quote-{n}",
            "development_id": development_id,
            "speaker": name,
            "role": role,
            "text": text,
        },
        "metadata": {"actor": "bench", "source": "bench.feeds"},
    }


def story_appends(rng: random.Random) -> list[list[dict[str, Any]]]:
    """The story's appends: ``story.opened``, then per development one append of the
    ``development.reported`` (body of 300–2000 bytes, 1–3 sources) and 1–2 quotes."""
    appends = [[story_opened(rng, SLUG)]]
    for i in range(DEVELOPMENTS):
        development_id = f"development-{i + 1:02d}"
        event = development_reported(rng, development_id)
        data = event["data"]
        data["sources"] = [
            {
                "url": f"https://www.{domain}/2017/10/{development_id}",
                "title": data["headline"] if n == 0 else f"{publisher} on {data['headline']}",
                "publisher": publisher,
            }
            for n, (publisher, domain) in enumerate(rng.sample(_PUBLISHERS, rng.randint(1, 3)))
        ]
        quotes = [
            _quote(rng, development_id, n + 1, event["occurred_at"])
            for n in range(rng.randint(1, 2))
        ]
        appends.append([event, *quotes])
    return appends


async def write_story(settings: Settings) -> int:
    """Append the story through StoryService into the service's database; return the
    events written."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = make_store(settings, create=True)
    await store.open()
    try:
        service = StoryService(store)
        written = 0
        for n, events in enumerate(story_appends(random.Random(SEED))):
            await service.append(SLUG, events, "no_stream" if n == 0 else "any")
            written += len(events)
        head = await store.head()
        if head != written:
            raise AssertionError(f"the log holds {head} events, expected {written}")
        return written
    finally:
        await store.close()


# -- wrk ----------------------------------------------------------------------------------

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)\s*$", re.M)
_PERCENTILE = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_TOTAL = re.compile(r"^\s+(\d+) requests in [\d.]+\w+, ([\d.]+)([KMGT]?B) read\s*$", re.M)
_NON_OK = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True)
class WrkRun:
    """What one wrk run reports."""

    rate: float
    p50_ms: float
    p99_ms: float
    requests: int
    bytes_read: float
    socket_errors: int
    server_cpu_s: float | None = None
    """CPU time (user + system, every thread) the server process used during the run"""

    @property
    def bytes_per_response(self) -> float:
        return self.bytes_read / self.requests

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.server_cpu_s is None:
            return None
        return self.server_cpu_s / self.requests * 1e6


def parse_wrk(output: str) -> WrkRun:
    """Requests/sec, p50 and p99 latency, totals; a bad status stops the benchmark."""
    rate = _RATE.search(output)
    total = _TOTAL.search(output)
    latency = {m[1]: float(m[2]) * _TIME_UNITS[m[3]] for m in _PERCENTILE.finditer(output)}
    if rate is None or total is None or set(latency) != {"50", "99"}:
        raise AssertionError(f"cannot read wrk's output:\n{output}")
    non_ok = _NON_OK.search(output)
    if non_ok is not None and int(non_ok[1]) > 0:
        raise AssertionError(f"{non_ok[1]} responses were not 2xx or 3xx:\n{output}")
    errors = _SOCKET_ERRORS.search(output)
    return WrkRun(
        rate=float(rate[1]),
        p50_ms=latency["50"],
        p99_ms=latency["99"],
        requests=int(total[1]),
        bytes_read=float(total[2]) * _SIZE_UNITS[total[3]],
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def wrk(url: str, headers: Mapping[str, str], seconds: int, pin: bool) -> WrkRun:
    """``wrk -t1 -c64 -d<seconds>s --latency`` against ``url``, bounded in time."""
    arguments = ["--latency"]
    for name, value in headers.items():
        arguments += ["-H", f"{name}: {value}"]
    return parse_wrk(run_wrk([*arguments, url], seconds, pin))


# -- the benchmark ------------------------------------------------------------------------


@dataclass
class Case:
    """One kind of request, measured against both servers."""

    name: str
    what: str
    headers: dict[str, str]
    service: list[WrkRun] = field(default_factory=list)
    bare: list[WrkRun] = field(default_factory=list)


@dataclass(frozen=True)
class Feed:
    """What the service serves at FEED_PATH, fetched once it is up."""

    plain: Reply
    gzipped: Reply
    not_modified: Reply
    entries: int

    @property
    def etag(self) -> str:
        return self.plain.header("ETag") or ""


def _entries(body: bytes) -> int:
    return len(ET.fromstring(body).findall(f"{ATOM}entry"))


def fetch_feed(service: Server) -> Feed:
    """The feed as the service serves it, once it holds FEED_SIZE entries."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        plain = service.wait_for(FEED_PATH)
        entries = _entries(plain.body)
        if entries == FEED_SIZE:
            break
        if time.monotonic() > deadline:
            raise service.fail(f"{FEED_PATH} holds {entries} entries, not {FEED_SIZE}")
        time.sleep(0.2)
    etag = plain.header("ETag")
    if not etag:
        raise service.fail(f"{FEED_PATH} has no ETag")
    gzipped = get(service.port, FEED_PATH, {"Accept-Encoding": "gzip"})
    not_modified = get(service.port, FEED_PATH, {"If-None-Match": etag})
    return Feed(plain, gzipped, not_modified, entries)


def bare_spec(feed: Feed, port: int, folder: Path) -> Path:
    """Write the bare server's spec and body files; return the spec's path."""
    (folder / "body.atom").write_bytes(feed.plain.body)
    (folder / "body.atom.gz").write_bytes(feed.gzipped.body)
    spec = {
        "port": port,
        "path": FEED_PATH,
        "etag": feed.etag,
        "identity": {"body": "body.atom", "headers": list(feed.plain.comparable_headers().items())},
        "gzip": {
            "body": "body.atom.gz",
            "headers": list(feed.gzipped.comparable_headers().items()),
        },
        "not_modified": {"headers": list(feed.not_modified.comparable_headers().items())},
    }
    path = folder / "bare.json"
    path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return path


def verify(server: Server, cases: Sequence[Case], feed: Feed) -> None:
    """Each case answers what it should, byte for byte the service's answer: a run
    that measured 404s would be worthless."""
    replies = {case.name: get(server.port, FEED_PATH, case.headers) for case in cases}
    expected = {"200": feed.plain, "304": feed.not_modified, "gzip": feed.gzipped}
    for case in cases:
        reply, want = replies[case.name], expected[case.name]
        status = 304 if case.name == "304" else 200
        if reply.status != status:
            raise server.fail(f"case {case.name}: status {reply.status}, expected {status}")
        if reply.body != want.body:
            raise server.fail(
                f"case {case.name}: {len(reply.body)} body bytes differ from the service's "
                f"{len(want.body)}"
            )
        mine = reply.comparable_headers()
        mine.pop("X-Request-Id", None)
        theirs = want.comparable_headers()
        theirs.pop("X-Request-Id", None)
        if mine != theirs:
            raise server.fail(f"case {case.name}: headers {mine} differ from {theirs}")
    plain, gzipped, not_modified = replies["200"], replies["gzip"], replies["304"]
    if plain.header("Content-Encoding") is not None or len(plain.body) == 0:
        raise server.fail("case 200: not an identity body")
    if gzipped.header("Content-Encoding") != "gzip":
        raise server.fail("case gzip: no Content-Encoding: gzip")
    if gzip.decompress(gzipped.body) != feed.plain.body:
        raise server.fail("case gzip: the bytes do not decompress to the feed")
    if not_modified.body or not_modified.header("ETag") != feed.etag:
        raise server.fail("case 304: a body, or not the feed's ETag")


def settings_for(folder: Path, port: int) -> dict[str, Any]:
    """The service's settings: a fresh data folder, no seed, WARNING logs."""
    return {
        "data_dir": str(folder / "data"),
        "seed": "",
        "http_host": "127.0.0.1",
        "http_port": port,
        "public_base_url": f"http://127.0.0.1:{port}",
        "feed_size": FEED_SIZE,
        "log_level": LOG_LEVEL,
    }


@dataclass
class Bench:
    """Everything set up: both servers answering, the feed checked."""

    service: Server
    bare: Server
    feed: Feed
    cases: list[Case]
    pin: bool
    events: int


def make_cases(etag: str) -> list[Case]:
    return [
        Case("200", "GET, identity", {}),
        Case("304", "GET, If-None-Match: <ETag>", {"If-None-Match": etag}),
        Case("gzip", "GET, Accept-Encoding: gzip", {"Accept-Encoding": "gzip"}),
    ]


@contextmanager
def servers(folder: Path) -> Iterator[Bench]:
    """Write the story, start the service and the bare server (pinned when possible),
    check both; stop both on the way out, whatever happens."""
    pin, _ = pinning("wrk", PINNED)
    service_port, bare_port = free_port(), free_port()
    values = settings_for(folder, service_port)
    settings = Settings.load(None, environ={}, **values)
    config = folder / "feedsvc.toml"
    write_toml(values, config)
    if Settings.load(config, environ={}) != settings:
        raise AssertionError(f"{config} does not load as the settings written")
    events = asyncio.run(write_story(settings))
    python = sys.executable
    serve = [python, "-m", "feedsvc.cli", "--config", str(config), "serve"]
    with ExitStack() as stack:
        service = stack.enter_context(
            started("service", pinned(serve, SERVER_CPU, pin), service_port, folder)
        )
        service.wait_for("/healthz")
        feed = fetch_feed(service)
        cases = make_cases(feed.etag)
        verify(service, cases, feed)
        spec = bare_spec(feed, bare_port, folder)
        bare_command = [python, str(Path(__file__).with_name("bare.py")), "feed", str(spec)]
        bare = stack.enter_context(
            started("bare", pinned(bare_command, SERVER_CPU, pin), bare_port, folder)
        )
        bare.wait_for(FEED_PATH)
        verify(bare, cases, feed)
        yield Bench(service, bare, feed, cases, pin, events)


def measure(bench: Bench, seconds: int) -> None:
    """Warm both servers up, then RUNS runs of every case, alternating which server
    goes first."""

    def url(server: Server) -> str:
        return f"http://127.0.0.1:{server.port}{FEED_PATH}"

    for case in bench.cases:
        for server in (bench.service, bench.bare):
            wrk(url(server), case.headers, WARMUP_SECONDS, bench.pin)
    for number in range(RUNS):
        order = ["service", "bare"] if number % 2 == 0 else ["bare", "service"]
        for case in bench.cases:
            for name in order:
                server = bench.service if name == "service" else bench.bare
                before = server.cpu_seconds()
                result = wrk(url(server), case.headers, seconds, bench.pin)
                after = server.cpu_seconds()
                if before is not None and after is not None:
                    result = dataclasses.replace(result, server_cpu_s=after - before)
                (case.service if name == "service" else case.bare).append(result)
        print(f"  run {number + 1} of {RUNS} done", file=sys.stderr, flush=True)
    for server in (bench.service, bench.bare):
        if server.process.poll() is not None:
            raise server.fail(f"exited during the runs ({server.process.returncode})")


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _cpu(runs: Sequence[WrkRun]) -> float | None:
    values = [r.cpu_us_per_request for r in runs]
    return None if None in values else _median([v for v in values if v is not None])


def report(bench: Bench) -> str:
    """The table and what to read in it."""
    header = [
        "case",
        "service req/s: median [min–max]",
        "bare req/s: median [min–max]",
        "service/bare",
        "service p99",
        "bare p99",
        "p50 service / bare",
        "CPU µs/req service / bare",
        "bytes/resp",
    ]
    rows: list[list[str]] = []
    notes: list[str] = []
    for case in bench.cases:
        service = Spread(tuple(r.rate for r in case.service))
        bare = Spread(tuple(r.rate for r in case.bare))
        sizes = [
            _median([r.bytes_per_response for r in runs]) for runs in (case.service, case.bare)
        ]
        if abs(sizes[0] - sizes[1]) > 0.03 * max(sizes):
            notes.append(
                f"case {case.name}: wrk read {sizes[0]:,.0f} bytes per response from the "
                f"service but {sizes[1]:,.0f} from the bare app: not the same answers?"
            )
        errors = sum(r.socket_errors for r in (*case.service, *case.bare))
        if errors:
            notes.append(f"case {case.name}: wrk counted {errors} socket errors")
        cpu = (_cpu(case.service), _cpu(case.bare))
        rows.append(
            [
                case.name,
                service.show(),
                bare.show(),
                f"{service.median / bare.median:.2f}",
                f"{_median([r.p99_ms for r in case.service]):.1f} ms",
                f"{_median([r.p99_ms for r in case.bare]):.1f} ms",
                f"{_median([r.p50_ms for r in case.service]):.1f} / "
                f"{_median([r.p50_ms for r in case.bare]):.1f} ms",
                f"{cpu[0]:.0f} / {cpu[1]:.0f} ({cpu[1] / cpu[0]:.2f})"
                if cpu[0] and cpu[1]
                else "n/a",
                f"{sizes[0]:,.0f}",
            ]
        )
    legend = [
        "service/bare: the service's median req/s divided by the bare app's (1.00: no overhead).",
        "p50, p99: wrk's latency percentiles over 64 connections, the median of the runs.",
        "CPU µs/req: CPU time (user + system, all threads) the server process used per",
        "  response, from /proc/<pid>/stat, the median of the runs; in brackets bare/service,",
        "  the ratio the service would reach on an idle CPU. Less swayed by other work on",
        "  the machine than req/s.",
        "bytes/resp: what wrk read per response from the service, headers included.",
    ]
    return table(header, rows) + "\n\n" + "\n".join(legend + notes)


def run(quick: bool, *, show_machine: bool = True) -> None:
    """Measure and print feed serving throughput."""
    if shutil.which("wrk") is None:
        raise SystemExit(
            f"bench.feeds needs wrk, the HTTP load generator: {WRK_INSTALL} (Debian/Ubuntu)"
        )
    seconds = QUICK_SECONDS if quick else FULL_SECONDS
    began = time.perf_counter()
    _, pin_text = pinning("wrk", PINNED)
    with tempfile.TemporaryDirectory(prefix="feedsvc-bench-") as tmp:
        root = Path(tmp)
        print(f"feed serving over HTTP ({'--quick' if quick else 'full'} run)")
        if show_machine:
            for line in machine_lines(root):
                print(f"  {line}")
        with servers(root) as bench:
            feed = bench.feed
            print(f"  aiohttp: {aiohttp.__version__} (both servers, same Python, asyncio.run)")
            print(f"  load: {wrk_version()}, -t{THREADS} -c{CONNECTIONS} -d{seconds}s --latency")
            print(f"  pinning: {pin_text}")
            print(
                f"  service: python -m feedsvc.cli serve, log_level {LOG_LEVEL}, aiohttp "
                "access log off; bare: bench/bare.py feed <spec>, one route, no middleware, "
                "access log off"
            )
            print(
                f"  feed: {FEED_PATH}, {feed.entries} entries of a story of "
                f"{DEVELOPMENTS} developments ({bench.events} events); "
                f"{len(feed.plain.body):,} bytes, {len(feed.gzipped.body):,} gzipped"
            )
            print("  cases: " + "; ".join(f"{c.name} = {c.what}" for c in bench.cases))
            print(
                f"  runs: {RUNS} of {seconds} s per case and server, alternating service and "
                f"bare, after {WARMUP_SECONDS} s of warm-up each",
                flush=True,
            )
            measure(bench, seconds)
            logged = bench.service.log_lines()
        print()
        print(report(bench))
        print(f"service log: {logged} line(s) over the whole run (WARNING and above)")
        print(f"load average at the end: {load()} (1, 5, 15 min)")
    print(f"\n(took {time.perf_counter() - began:.0f} s)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.feeds [--quick]``."""
    args = parse_args(__doc__.split("\n")[0] if __doc__ else "feed serving", argv)
    run(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Append throughput: feedsvc's group commit against one fsync per commit.

Measures, in this process, how many events per second reach the log durably
(SQLite, WAL, ``synchronous=FULL``):

* through :class:`~feedsvc.store.sqlite.SQLiteEventStore` (events validated beforehand)
  and through :class:`~feedsvc.service.StoryService` (what the HTTP API calls: it
  validates the raw JSON, checks the story's rules, then appends);
* for single-event appends and for 100-event appends, each from 64 concurrent asyncio
  tasks;
* against a bare ``sqlite3`` loop measured in the same run: the same table (feedsvc's
  own ``events`` DDL), the same rows, WAL and ``synchronous=FULL``, one transaction per
  single insert and one per 100-row batch: the honest one-fsync-per-commit baseline.

The events are realistic ``development.reported`` events (bodies of 300–2000 bytes,
sources, people, places, topics) spread over many stories, each opened first. Every
figure is the median of 3 runs, each on a new database in a temporary folder.

Run: ``python -m bench.append [--quick]`` (or ``python -m bench`` for every benchmark).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import RUNS, Spread, machine_lines, parse_args, table
from feedsvc.domain.events import ValidEvent, format_recorded_at, validate_new_event
from feedsvc.service import StoryService
from feedsvc.store.sqlite import MIGRATIONS, SQLiteEventStore

SYNCHRONOUS = "FULL"
CONCURRENCY = 64
BATCH = 100
SEED = 1373

_INSERT = (
    "INSERT INTO events (position, id, stream, version, type, schema_version, "
    "occurred_at, recorded_at, data, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class Counts:
    """How much each run writes."""

    stories: int
    single: int
    """events written one per append (and one per transaction by the baseline)"""
    batched: int
    """events written 100 per append (and 100 per transaction by the baseline)"""


# the 100-event appends give each of the 64 tasks 3 appends (1 in --quick)
FULL = Counts(stories=300, single=3_000, batched=19_200)
QUICK = Counts(stories=100, single=384, batched=6_400)


# -- the events ---------------------------------------------------------------------------

_PROSE = (
    "the department of justice said on thursday that the state had shown no evidence of "
    "non-compliance with section 1373 and that its grant application would be reviewed "
    "the governor’s office welcomed the letter while the attorney general cautioned "
    "that further requests for information were pending from several cities including "
    "new york chicago philadelphia new orleans and cook county officials said the "
    "decision followed months of correspondence about detainer requests from immigration "
    "and customs enforcement police chiefs told reporters that local departments honor "
    "judicial warrants not administrative requests a spokesperson for the mayor declined "
    "to comment on the timeline advocates rallied outside the capitol in hartford "
    "lawmakers from both parties questioned whether the trust act conflicts with federal "
    "law a federal judge in san francisco had earlier blocked part of the executive order "
    "the council will take up the measure next week according to a draft agenda — "
    "résumé of the hearing was published by the clerk"
)
_WORDS = _PROSE.split()
_KINDS = ("statement", "letter", "ruling", "law", "rally", "executive-action", "report")
_PEOPLE = (
    ("Dannel P. Malloy", "Governor of Connecticut"),
    ("Jeff Sessions", "U.S. Attorney General"),
    ("Alan R. Hanson", "Acting Assistant Attorney General"),
    ("Luke Bronin", "Mayor of Hartford"),
    ("Toni Harp", "Mayor of New Haven"),
)
_ORGS = ("U.S. Department of Justice", "Office of Justice Programs", "ICE", "ACLU")
_PLACES = ("Connecticut", "Hartford", "New Haven", "New York", "Chicago", "Philadelphia")
_TOPICS = ("immigration", "federal grants", "sanctuary jurisdictions", "law enforcement")


_SENTENCES: list[str] = []


def _body(rng: random.Random) -> str:
    """News prose of 300 to 2000 bytes of UTF-8: paragraphs of sentences drawn from a
    pool of 2000 random ones, so no two bodies are alike."""
    if not _SENTENCES:
        pool = random.Random(SEED)
        _SENTENCES.extend(
            " ".join(pool.choices(_WORDS, k=pool.randint(8, 24))).capitalize() + "."
            for _ in range(2000)
        )
    target = rng.randint(330, 2000)  # trimmed below back to a word: 300 bytes at least
    paragraphs: list[str] = []
    size = 0
    while size < target:
        paragraphs.append(" ".join(rng.choices(_SENTENCES, k=rng.randint(2, 4))))
        size += len(paragraphs[-1].encode()) + 2
    text = "\n\n".join(paragraphs).encode()[:target].decode("utf-8", "ignore")
    text = text.rsplit(" ", 1)[0].rstrip() + "."
    assert 300 <= len(text.encode()) <= 2000, len(text.encode())
    return text


def _occurred(rng: random.Random) -> str:
    moment = datetime(2015, 1, 1, tzinfo=UTC).timestamp() + rng.random() * 9.5 * 365 * 86400
    when = datetime.fromtimestamp(int(moment), UTC)
    return when.strftime("%Y-%m-%d") if rng.random() < 0.5 else when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _event_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def story_opened(rng: random.Random, slug: str) -> dict[str, Any]:
    """The raw ``story.opened`` event of a benchmark story."""
    return {
        "id": _event_id(rng),
        "type": "story.opened",
        "occurred_at": "2017-10-12",
        "data": {
            "slug": slug,
            "title": f"Benchmark story {slug}",
            "summary": _body(rng)[:400].rsplit(" ", 1)[0] + ".",
            "topics": rng.sample(_TOPICS, 2),
            "places": rng.sample(_PLACES, 2),
        },
        "metadata": {"actor": "bench", "source": "bench.append"},
    }


def development_reported(rng: random.Random, development_id: str) -> dict[str, Any]:
    """A raw ``development.reported`` event as a newsroom client would send it."""
    headline = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 14))).capitalize()
    people = [{"name": n, "role": r} for n, r in rng.sample(_PEOPLE, rng.randint(1, 3))]
    return {
        "id": _event_id(rng),
        "type": "development.reported",
        "occurred_at": _occurred(rng),
        "data": {
            "development_id": development_id,
            "headline": headline,
            "body": _body(rng),
            "kind": rng.choice(_KINDS),
            "sources": [
                {
                    "url": f"https://news.example.org/2017/10/{development_id}",
                    "title": headline,
                    "publisher": "Example News",
                }
            ],
            "people": people,
            "organizations": rng.sample(_ORGS, rng.randint(1, 2)),
            "places": rng.sample(_PLACES, rng.randint(1, 3)),
            "topics": rng.sample(_TOPICS, rng.randint(1, 3)),
        },
        "metadata": {"actor": "bench", "correlation_id": _event_id(rng)},
    }


@dataclass(frozen=True)
class Workload:
    """The stories to open, then the appends to make: (story, events) each, as raw
    JSON-like dicts (for StoryService) and validated (for the store and the baseline,
    validated once, outside any timing)."""

    openings: list[tuple[str, dict[str, Any]]]
    appends: list[tuple[str, list[dict[str, Any]]]]
    valid_openings: list[tuple[str, ValidEvent]]
    valid_appends: list[tuple[str, list[ValidEvent]]]
    validation_rate: float
    """events/s of validate_new_event alone over the appends' events"""

    @property
    def events(self) -> int:
        return sum(len(events) for _, events in self.appends)


def workload(rng: random.Random, stories: int, events: int, per_append: int) -> Workload:
    """``events`` developments in appends of ``per_append``, each to a random story."""
    slugs = [f"bench-story-{i:04d}" for i in range(stories)]
    openings = [(slug, story_opened(rng, slug)) for slug in slugs]
    appends: list[tuple[str, list[dict[str, Any]]]] = []
    for n in range(events // per_append):
        slug = rng.choice(slugs)
        first = n * per_append
        batch = [development_reported(rng, f"dev-{first + i}") for i in range(per_append)]
        appends.append((slug, batch))
    valid_openings = [(s, validate_new_event(raw)) for s, raw in openings]
    start = time.perf_counter()
    valid_appends = [(s, [validate_new_event(raw) for raw in batch]) for s, batch in appends]
    rate = events / (time.perf_counter() - start)
    return Workload(openings, appends, valid_openings, valid_appends, rate)


# -- the three ways of writing them ---------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One timed run: events written, seconds taken, commits made."""

    events: int
    seconds: float
    commits: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def _concurrently(
    appends: Sequence[tuple[str, Any]], append: Callable[[str, Any], Awaitable[object]]
) -> float:
    """Make every append from CONCURRENCY tasks sharing one queue; return seconds."""
    queue: Iterator[tuple[str, Any]] = iter(appends)

    async def worker() -> None:
        for stream, events in queue:
            await append(stream, events)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - start


async def _open_store(folder: Path) -> SQLiteEventStore:
    store = SQLiteEventStore(folder / "feedsvc.sqlite3", synchronous=SYNCHRONOUS)
    await store.open()
    return store


async def _finish(store: SQLiteEventStore, expected_head: int, seconds: float, events: int) -> Run:
    head = await store.head()
    if head != expected_head:
        raise AssertionError(f"the log holds {head} events, expected {expected_head}")
    sizes = list(store.group_sizes)
    await store.close()
    commits = len(sizes) if len(sizes) < 1000 else round(events / (sum(sizes) / len(sizes)))
    return Run(events, seconds, commits)


async def through_store(folder: Path, work: Workload) -> Run:
    """The appends through SQLiteEventStore.append (validated beforehand)."""
    store = await _open_store(folder)
    await asyncio.gather(
        *(store.append(stream, [event], "no_stream") for stream, event in work.valid_openings)
    )
    store.group_sizes.clear()

    async def append(stream: str, events: list[ValidEvent]) -> object:
        return await store.append(stream, events)

    seconds = await _concurrently(work.valid_appends, append)
    return await _finish(store, len(work.openings) + work.events, seconds, work.events)


async def through_service(folder: Path, work: Workload) -> Run:
    """The appends through StoryService.append: validation, story rules, then the store."""
    store = await _open_store(folder)
    service = StoryService(store)
    await asyncio.gather(
        *(service.append(stream, [raw], "no_stream") for stream, raw in work.openings)
    )
    store.group_sizes.clear()

    async def append(stream: str, events: list[dict[str, Any]]) -> object:
        return await service.append(stream, events)

    seconds = await _concurrently(work.appends, append)
    return await _finish(store, len(work.openings) + work.events, seconds, work.events)


def through_sqlite3(folder: Path, work: Workload) -> Run:
    """The baseline: the same rows, one transaction per append, one connection."""
    openings, appends = work.valid_openings, work.valid_appends
    conn = sqlite3.connect(folder / "baseline.sqlite3", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
        (mode,) = conn.execute("PRAGMA synchronous").fetchone()
        if mode != 2:  # FULL
            raise AssertionError(f"synchronous is {mode}, not FULL")
        conn.executescript(MIGRATIONS[0])  # feedsvc's own events table, indexes, triggers
        versions: dict[str, int] = {}
        position = 0

        def rows(stream: str, events: Sequence[ValidEvent], recorded_at: str) -> list[Any]:
            nonlocal position
            out = []
            for event in events:
                position += 1
                versions[stream] = versions.get(stream, 0) + 1
                out.append(
                    (
                        position,
                        event.id,
                        stream,
                        versions[stream],
                        event.type,
                        event.schema_version,
                        event.occurred_at,
                        recorded_at,
                        event.data_json,
                        event.metadata_json,
                    )
                )
            return out

        now = format_recorded_at(datetime.now(UTC))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, [r for s, e in openings for r in rows(s, [e], now)])
        conn.execute("COMMIT")
        # rows are built ahead, so only the inserts and commits are timed
        batches = [rows(s, events, now) for s, events in appends]
        start = time.perf_counter()
        for batch in batches:
            conn.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:
                conn.execute(_INSERT, batch[0])
            else:
                conn.executemany(_INSERT, batch)
            conn.execute("COMMIT")
        seconds = time.perf_counter() - start
        (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
        if count != len(openings) + work.events:
            raise AssertionError(f"baseline holds {count} rows")
    finally:
        conn.close()
    return Run(work.events, seconds, len(batches))


# -- the benchmark ------------------------------------------------------------------------


@dataclass
class Scenario:
    """One shape of append, written the three ways, RUNS times each."""

    name: str
    work: Workload
    baseline: list[Run] = field(default_factory=list)
    store: list[Run] = field(default_factory=list)
    service: list[Run] = field(default_factory=list)


def run(quick: bool, *, show_machine: bool = True) -> None:
    """Measure and print the append throughput."""
    counts = QUICK if quick else FULL
    began = time.perf_counter()
    rng = random.Random(SEED)
    scenarios = [
        Scenario("1-event appends", workload(rng, counts.stories, counts.single, 1)),
        Scenario(f"{BATCH}-event appends", workload(rng, counts.stories, counts.batched, BATCH)),
    ]
    with tempfile.TemporaryDirectory(prefix="feedsvc-bench-") as tmp:
        root = Path(tmp)
        print(f"append throughput ({'--quick' if quick else 'full'} run)")
        if show_machine:
            for line in machine_lines(root):
                print(f"  {line}")
        print(f"  synchronous: {SYNCHRONOUS}, journal_mode: WAL (store and baseline)")
        print(f"  concurrency: {CONCURRENCY} asyncio tasks sharing one queue of appends")
        for s in scenarios:
            print(
                f"  {s.name}: {s.work.events:,} development.reported events in "
                f"{len(s.work.appends):,} appends per run, over {len(s.work.openings)} "
                "stories opened first (untimed)"
            )
        print(f"  runs: {RUNS} of each, interleaved, each on a new database", flush=True)
        for number in range(RUNS):
            for index, s in enumerate(scenarios):
                folder = root / f"run{number}-{index}"
                for name in ("baseline", "store", "service"):
                    (folder / name).mkdir(parents=True)
                s.baseline.append(through_sqlite3(folder / "baseline", s.work))
                s.store.append(asyncio.run(through_store(folder / "store", s.work)))
                s.service.append(asyncio.run(through_service(folder / "service", s.work)))
            print(f"  run {number + 1} of {RUNS} done", file=sys.stderr, flush=True)
    print()
    print(report(scenarios))
    print(f"\n(took {time.perf_counter() - began:.0f} s)", flush=True)


def report(scenarios: Sequence[Scenario]) -> str:
    """The results: events/s, median [min–max] of the runs, and the ratios."""
    header = [
        "events/s: median [min–max]",
        "bare sqlite3",
        "SQLiteEventStore",
        "× sqlite3",
        "StoryService",
        "× sqlite3",
        "events/commit",
    ]
    rows: list[list[str]] = []
    for s in scenarios:
        base = Spread(tuple(r.rate for r in s.baseline))
        store = Spread(tuple(r.rate for r in s.store))
        service = Spread(tuple(r.rate for r in s.service))
        per_commit = [
            statistics.median(r.events / r.commits for r in runs) for runs in (s.store, s.service)
        ]
        rows.append(
            [
                s.name,
                base.show(),
                store.show(),
                f"{store.median / base.median:.2f}",
                service.show(),
                f"{service.median / base.median:.2f}",
                " / ".join(f"{n:,.0f}" for n in per_commit),
            ]
        )
    validation = min(s.work.validation_rate for s in scenarios)
    notes = [
        "× sqlite3: the feedsvc median divided by the bare sqlite3 median; above 1 is faster",
        "  than one fsync per commit.",
        "events/commit: events per group commit (mean of a run, median of the runs),",
        f"  SQLiteEventStore / StoryService; the baseline commits 1 and {BATCH}.",
        f"validate_new_event alone: {validation:,.0f} events/s on one core (the CPU floor",
        "  StoryService pays per event before any database work).",
    ]
    return table(header, rows) + "\n\n" + "\n".join(notes)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.append [--quick]``."""
    args = parse_args(__doc__.split("\n")[0] if __doc__ else "append throughput", argv)
    run(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

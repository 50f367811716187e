"""A peer: feedsvc's event store against the ``eventsourcing`` library's SQLite recorder.

The same events, in the same run, each on a new database in a temporary folder:

* **eventsourcing**: ``eventsourcing.sqlite.SQLiteApplicationRecorder`` (its recorder
  API directly, no aggregates or application object), ``insert_events([one event])``
  per call, from one thread, and from 64 threads sharing the events; read back with
  ``select_notifications`` in pages of 1000, each event's JSON state decoded.
* **feedsvc**: :meth:`SQLiteEventStore.append` with one event per call, awaited one
  after the other, and from 64 concurrent asyncio tasks (group commit); read back with
  :meth:`SQLiteEventStore.read_all` in pages of 1000, each event's ``data`` decoded.

The events are the first events of the ``bench.dataset`` generator (stories opened,
developments with 300–2000-byte bodies, quotes, corrections, follow-ups): feedsvc gets
them as validated events (validated before the clock starts), eventsourcing as
``StoredEvent(originator_id=uuid5(story), originator_version, topic=type,
state=data JSON)``.

Durability as each library sets it up (the run prints what it reads back from each
connection): feedsvc opens its writer with ``journal_mode=WAL``, ``synchronous=FULL``,
one ``BEGIN IMMEDIATE … COMMIT`` per group. eventsourcing's ``SQLiteConnectionPool``
sets only ``journal_mode=WAL``; it leaves ``synchronous`` at SQLite's compiled default
(FULL for Python's sqlite3) and begins each transaction with a plain (deferred)
``BEGIN``; its pool hands out one writer connection at a time. Both therefore fsync the
WAL on every commit: a durable acknowledgement, one commit per call for eventsourcing.

Needs ``pip install -e '.[bench]'`` (eventsourcing>=9.3,<10); without it the
eventsourcing columns are skipped with a note. Run: ``python -m bench.peer [--quick]``
(``python -m bench.scale`` runs it too, after its own measurements).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.common import RUNS, Spread, machine_lines, parse_args, table
from bench.dataset import Size, events
from feedsvc.domain.events import RecordedEvent, ValidEvent, validate_new_event
from feedsvc.store.sqlite import SQLiteEventStore

CONCURRENCY = 64
PAGE = 1000
FULL_EVENTS = 3_000
QUICK_EVENTS = 500
_NAMESPACE = uuid.UUID("5f1d6c2e-9a53-4d0b-8a43-1b0f3c1d1373")
_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def available() -> bool:
    """Whether the eventsourcing library is installed."""
    return importlib.util.find_spec("eventsourcing") is not None


@dataclass(frozen=True)
class Run:
    """One timed run: events appended one per call, then read back."""

    events: int
    append_s: float
    read_s: float

    @property
    def append_rate(self) -> float:
        return self.events / self.append_s

    @property
    def read_rate(self) -> float:
        return self.events / self.read_s


@dataclass
class Column:
    """One way of appending, measured RUNS times."""

    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def append(self) -> Spread:
        return Spread(tuple(r.append_rate for r in self.runs))

    @property
    def read(self) -> Spread:
        return Spread(tuple(r.read_rate for r in self.runs))


@dataclass
class Results:
    """Everything one run of the comparison measured."""

    events: int
    columns: list[Column]
    durability: list[str]


# -- the events --------------------------------------------------------------------------------


def workload(count: int) -> list[RecordedEvent]:
    """The first ``count`` events of the bench.dataset generator."""
    return list(events(Size(stories=max(10, count // 100), events=count)))


def _valid(event: RecordedEvent) -> ValidEvent:
    raw = {
        "id": event.id,
        "type": event.type,
        "schema_version": event.schema_version,
        "occurred_at": event.occurred_at,
        "data": orjson.loads(event.data_json),
        "metadata": orjson.loads(event.metadata_json),
    }
    return validate_new_event(raw)


# -- eventsourcing -------------------------------------------------------------------------------


def eventsourcing_run(folder: Path, log: Sequence[RecordedEvent], threads: int) -> tuple[Run, str]:
    """Append with eventsourcing's SQLiteApplicationRecorder, one event per
    ``insert_events`` call, from ``threads`` threads; read every event back. Returns the
    run and the durability pragmas read from its own connection."""
    from eventsourcing.persistence import (  # type: ignore[import-not-found, unused-ignore]
        StoredEvent,
    )
    from eventsourcing.sqlite import (  # type: ignore[import-not-found, unused-ignore]
        SQLiteApplicationRecorder,
        SQLiteDatastore,
    )

    datastore = SQLiteDatastore(
        db_name=str(folder / "eventsourcing.sqlite3"),
        pool_size=5,
        max_overflow=10,
        pool_timeout=120.0,
    )
    try:
        recorder = SQLiteApplicationRecorder(datastore)
        recorder.create_table()
        stored = [
            StoredEvent(
                originator_id=uuid.uuid5(_NAMESPACE, e.stream),
                originator_version=e.version,
                topic=e.type,
                state=e.data_json.encode(),
            )
            for e in log
        ]
        with datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA journal_mode")
            journal = str(cursor.fetchone()[0])
            cursor.execute("PRAGMA synchronous")
            synchronous = _SYNCHRONOUS.get(int(cursor.fetchone()[0]), "?")
        queue: Iterator[StoredEvent] = iter(stored)
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    item = next(queue, None)
                if item is None:
                    return
                recorder.insert_events([item])

        start = time.perf_counter()
        if threads == 1:
            worker()
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for future in [pool.submit(worker) for _ in range(threads)]:
                    future.result()
        append_s = time.perf_counter() - start
        start = time.perf_counter()
        read = 0
        after = 0
        while True:
            page = recorder.select_notifications(after, PAGE, inclusive_of_start=False)
            if not page:
                break
            for notification in page:
                orjson.loads(notification.state)
            read += len(page)
            after = int(page[-1].id)
        read_s = time.perf_counter() - start
        if read != len(log) or int(recorder.max_notification_id()) != len(log):
            raise AssertionError(f"eventsourcing holds {read} events, expected {len(log)}")
    finally:
        datastore.close()
    return Run(len(log), append_s, read_s), f"journal_mode={journal}, synchronous={synchronous}"


# -- feedsvc ------------------------------------------------------------------------------------


async def read_back(store: SQLiteEventStore) -> tuple[int, float]:
    """Read every event of an open store through ``read_all`` in pages of PAGE,
    decoding each one's data (``event.data``); return the events read and the seconds."""
    count = 0
    after = 0
    started = time.perf_counter()
    while True:
        page = await store.read_all(after, PAGE)
        if not page:
            break
        for event in page:
            _ = event.data
        count += len(page)
        after = page[-1].position
    return count, time.perf_counter() - started


async def feedsvc_run(
    folder: Path, log: Sequence[RecordedEvent], valid: Sequence[ValidEvent], tasks: int
) -> tuple[Run, str]:
    """Append with SQLiteEventStore, one event per call, from ``tasks`` asyncio tasks;
    read every event back."""
    store = SQLiteEventStore(folder / "feedsvc.sqlite3", synchronous="FULL")
    await store.open()
    try:
        level, journal = await store.writer_pragmas()
        synchronous = _SYNCHRONOUS.get(level, "?")
        queue = iter(zip((e.stream for e in log), valid, strict=True))

        async def worker() -> None:
            for stream, event in queue:
                await store.append(stream, [event])

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        append_s = time.perf_counter() - start
        read, read_s = await read_back(store)
        if read != len(log) or await store.head() != len(log):
            raise AssertionError(f"feedsvc holds {read} events, expected {len(log)}")
    finally:
        await store.close()
    return Run(len(log), append_s, read_s), f"journal_mode={journal}, synchronous={synchronous}"


# -- the comparison ----------------------------------------------------------------------------


def measure(quick: bool, root: Path) -> Results:
    """Every column RUNS times, interleaved, each on a new database under ``root``."""
    count = QUICK_EVENTS if quick else FULL_EVENTS
    log = workload(count)
    valid = [_valid(e) for e in log]
    with_peer = available()
    peer = ["eventsourcing, 1 thread", f"eventsourcing, {CONCURRENCY} threads"]
    names = [*(peer if with_peer else []), "feedsvc, 1 task", f"feedsvc, {CONCURRENCY} tasks"]
    columns = {name: Column(name) for name in names}
    durability: dict[str, str] = {}
    for number in range(RUNS):
        for name in names:
            folder = root / f"run{number}-{name.replace(' ', '').replace(',', '-')}"
            folder.mkdir(parents=True)
            width = CONCURRENCY if name.endswith(("threads", "tasks")) else 1
            if name.startswith("eventsourcing"):
                run, pragmas = eventsourcing_run(folder, log, width)
                durability["eventsourcing"] = pragmas
            else:
                run, pragmas = asyncio.run(feedsvc_run(folder, log, valid, width))
                durability["feedsvc"] = pragmas
            columns[name].runs.append(run)
        print(f"  peer run {number + 1} of {RUNS} done", file=sys.stderr, flush=True)
    lines = [f"{who}: {pragmas}" for who, pragmas in sorted(durability.items())]
    if not with_peer:
        lines.append("eventsourcing not installed (pip install -e '.[bench]'): its rows skipped")
    return Results(count, list(columns.values()), lines)


def report(results: Results) -> str:
    """The table: events/s appending one event per call and reading back, with ratios."""
    columns = results.columns
    reference = next((c for c in columns if c.name == "eventsourcing, 1 thread"), columns[0])
    header = [
        "events/s: median [min–max]",
        "append, 1 event per call",
        "× ref",
        f"read back (pages of {PAGE}, decoded)",
        "× ref",
    ]
    rows = [
        [
            c.name,
            c.append.show(),
            f"{c.append.median / reference.append.median:.2f}",
            c.read.show(),
            f"{c.read.median / reference.read.median:.2f}",
        ]
        for c in columns
    ]
    notes = [
        f"× ref: the median divided by the median of '{reference.name}'.",
        "durability read back from each library's own writer connection:",
        *(f"  {line}" for line in results.durability),
        "  both fsync the WAL at every commit; eventsourcing commits once per call, feedsvc",
        "  once per group of the appends waiting at that moment (1 when called one at a time).",
    ]
    return table(header, rows) + "\n\n" + "\n".join(notes)


def run(quick: bool, *, show_machine: bool = True) -> None:
    """Measure and print the comparison."""
    count = QUICK_EVENTS if quick else FULL_EVENTS
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="feedsvc-bench-peer-") as tmp:
        root = Path(tmp)
        print(f"peer comparison: eventsourcing vs feedsvc ({'--quick' if quick else 'full'} run)")
        if show_machine:
            for line in machine_lines(root):
                print(f"  {line}")
        print(
            f"  {count:,} events (bench.dataset generator), appended one per call, then read "
            f"back; {RUNS} runs of each, interleaved, each on a new database",
            flush=True,
        )
        results = measure(quick, root)
    print()
    print(report(results))
    print(f"\n(took {time.perf_counter() - began:.0f} s)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.peer [--quick]``."""
    args = parse_args(__doc__.split("\n")[0] if __doc__ else "peer comparison", argv)
    run(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

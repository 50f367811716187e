"""The projection runner: APScheduler jobs that keep the read model current.

* **catch-up** applies new events in order. An append wakes it at once (a waker task
  follows the store's commits), and an interval run is the safety net for appends made
  by another process. It never overlaps itself: a wake while it runs makes it loop once
  more instead.
* **rebuild** folds the whole log into a fresh read model generation while the current
  one keeps serving, catches it up, then swaps it in atomically (a pointer file replaced
  with ``os.replace``). It only folds: every document of the new generation is recorded
  as pending and rendered after the swap, when first asked for or by the documents job
  (a request renders the one document it asks for, once). It runs on a configurable
  cron, on ``feedsvc rebuild``, and on start when a projection's version changed.

Replicas on one log each keep their own read model, and agree through the store's
:class:`~feedsvc.store.Coordinator`: the cron rebuild runs only on the replica that
leads ``rebuild_cron`` (each tries every ``LEAD_INTERVAL_S``, and again when the cron
fires), and a rebuild announced by ``feedsvc rebuild`` makes every replica rebuild its
own. With the local coordinator (SQLite) this process always leads, and ``feedsvc
rebuild`` builds into the shared data folder, which the server follows (the catch-up
job checks the read model's pointer).

Serving reads go through :meth:`ProjectionRunner.document`: an in-memory LRU of
precomputed documents in front of the read model file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from feedsvc.domain.events import RecordedEvent, format_recorded_at
from feedsvc.projections.documents import Document
from feedsvc.projections.projector import Changes, Projector
from feedsvc.projections.readmodel import ReadModel, connect, finish_building
from feedsvc.rendering.model import FeedFormat, Scope, ScopeKind, Urls
from feedsvc.settings import Settings
from feedsvc.store import Coordinator, make_coordinator
from feedsvc.store.port import EventStore
from feedsvc.urls import parse_path

log = logging.getLogger("feedsvc.projections")
T = TypeVar("T")

BATCH = 1000
_GENERATION = re.compile(r"^gen-(\d+)\.sqlite3$")
ARCHIVES_PER_RUN = 100
GATHER_S = 0.025
GATHER_EVENTS = 100
"""After an append wakes catch-up, and after a batch shorter than GATHER_EVENTS, it
waits GATHER_S so that appends arriving together are folded in one batch: a batch costs
~0.3 ms of its own (a transaction, the rows of every scope it touched), which single-event
batches paid per event under load. Freshness pays at most GATHER_S."""
RENDER_BUDGET_S = 0.25
"""How long one run of the documents job may render before it yields: the job keeps an
idle server's documents rendered without taking the CPU from appends under load (a
request renders what it asks for itself)."""
LEAD_INTERVAL_S = 5.0
"""How often a replica tries to lead the cron rebuild: when the leader dies, another
takes over within this long (and in any case when the cron next fires)."""
CRON_LEADERSHIP = "rebuild_cron"
STOP_JOBS_S = 10.0
"""How long a stop waits for the jobs in flight (a catch-up batch, a render, a try to
lead) to finish on their own before it cancels them; a cron rebuild is cancelled at
once."""


def item_of(path: str) -> str | None:
    """The render item that writes the document at ``path`` (None for archives and
    paths that are not documents)."""
    found = parse_path(path)
    if found is None or found.document == "archive":
        return None
    if found.document == "index":
        return "index"
    if found.document == "page" and found.scope == ScopeKind.STORY:
        return f"story:{found.key}"
    return f"feed:{Scope(ScopeKind(found.scope), found.key).name}"  # a feed, a topic page


def feed_of(path: str) -> tuple[Scope, FeedFormat] | None:
    """The scope and format of a subscription feed document path."""
    found = parse_path(path)
    if found is None or found.document != "feed" or found.fmt is None:
        return None
    return Scope(ScopeKind(found.scope), found.key), FeedFormat(found.fmt)


def story_of(path: str) -> str | None:
    """The story (stream) a story's page, feed or archive page belongs to; None for
    other paths."""
    found = parse_path(path)
    return found.key if found is not None and found.scope == ScopeKind.STORY else None


def archive_of(path: str) -> tuple[Scope, int, FeedFormat] | None:
    """The (scope, page, format) an archive document path names, if it names one."""
    found = parse_path(path)
    if found is None or found.document != "archive" or found.page is None or found.fmt is None:
        return None
    return Scope(ScopeKind(found.scope), found.key), found.page, FeedFormat(found.fmt)


_PROJECTIONS_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedsvc-projections")
"""The one thread that folds and renders: work on the read model is serialised by the
runner's lock anyway, and one thread keeps the large, short-lived buffers of rendering
in one malloc arena rather than one per thread of the default executor."""


async def _in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` in the projections thread; if the caller is cancelled, still wait
    for the thread to finish before the cancellation goes on, since it may be using a
    connection the caller is about to close."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(_PROJECTIONS_THREAD, functools.partial(fn, *args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        raise


class DocumentCache:
    """A byte-bounded LRU of documents by path."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._docs: OrderedDict[str, Document] = OrderedDict()
        self._bytes = 0

    def get(self, path: str) -> Document | None:
        """The cached document, marking it recently used."""
        doc = self._docs.get(path)
        if doc is not None:
            self._docs.move_to_end(path)
        return doc

    def put(self, doc: Document) -> None:
        """Cache a document, evicting the least recently used past the bound."""
        self.drop(doc.path)
        self._docs[doc.path] = doc
        self._bytes += doc.size
        while self._bytes > self.max_bytes and self._docs:
            _, old = self._docs.popitem(last=False)
            self._bytes -= old.size

    def drop(self, path: str) -> None:
        """Forget one path."""
        old = self._docs.pop(path, None)
        if old is not None:
            self._bytes -= old.size

    def clear(self) -> None:
        """Forget everything."""
        self._docs.clear()
        self._bytes = 0


class ProjectionRunner:
    """Owns the read model, its scheduler jobs, and the documents served from it."""

    def __init__(
        self, store: EventStore, settings: Settings, coordinator: Coordinator | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self._owns_coordinator = coordinator is None
        self.coordinator = make_coordinator(settings) if coordinator is None else coordinator
        """What this replica shares with the others (opened and closed by the runner
        when it made it itself)."""
        self.leads_cron = False
        """Whether this replica led the cron rebuild at its last try."""
        self._ready = False
        self._rebuilding = asyncio.Lock()
        self._rebuild_asked = False
        self._rebuild_task: asyncio.Task[None] | None = None
        self.urls = Urls(settings.public_base_url)
        self.folder = settings.data_dir / "readmodel"
        self.cache = DocumentCache()
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.rebuild_seconds: list[float] = []
        self._model: ReadModel | None = None
        self._projector: Projector | None = None
        self._lock = asyncio.Lock()
        self._position = 0
        self._advanced = asyncio.Event()
        self._running = False
        self._again = False
        self._waker: asyncio.Task[None] | None = None
        self._pending: set[str] = set()
        """Render items whose documents are out of date (rendered when first asked
        for, or by the documents job)."""
        self._partly: dict[str, set[str]] = {}
        """Pending items of which a request rendered some documents already: item →
        their paths."""
        self._as_of: OrderedDict[tuple[int, str, str | None], Document | None] = OrderedDict()
        self._serving = False
        """Whether this runner serves (started), so writes its generation unsynced."""
        self._stopping = False
        self._jobs: dict[asyncio.Task[Any], str] = {}
        """The scheduler jobs running now (their tasks), by job id."""

    # -- life cycle ---------------------------------------------------------------

    def open_current(self) -> Path | None:
        """Open the generation the pointer names, if any; return its path. A generation
        a server was writing without syncs when the machine went down is not opened
        (it may be corrupt): None, and :meth:`start` builds a new one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        current = self._current_generation()
        if current is not None and _written_before_a_restart(current):
            log.warning(
                "the machine restarted while read model %s had writes not synced to disk: "
                "building a new one",
                current.name,
            )
            current = None
        if current is not None:
            self._open(current)
        return current

    @property
    def ready(self) -> bool:
        """Started: the read model was built or opened, and caught up with the log as
        it was then (readiness also needs the lag to stay small)."""
        return self._ready

    async def start(self) -> None:
        """Open the current generation (building one if there is none or it is out of
        date), catch up, and start the jobs; from then on rebuild whenever a rebuild
        is announced."""
        self._stopping = False
        if self._owns_coordinator:
            await self.coordinator.open()
        await self.coordinator.subscribe_rebuild(self.request_rebuild)
        current = self.open_current()
        self._remove_stale_generations()
        if current is None:
            await self.rebuild()
        elif self._model is not None and not self._model.current():
            log.info("a projection version changed: rebuilding %s", current.name)
            await self.rebuild()
        self._serving = True
        self._unsync()
        await self.catch_up()
        interval = self.settings.catchup_interval_s
        jobs: list[tuple[str, Callable[[], Awaitable[object]], float]] = [
            ("catch-up", self._catch_up_job, interval),
            ("documents", self.render_pending, interval),
            ("archives", self.render_archives, max(1.0, interval / 5)),
        ]
        for job_id, job, seconds in jobs:
            self.scheduler.add_job(
                self._job(job_id, job),
                "interval",
                seconds=seconds,
                id=job_id,
                max_instances=1,
                coalesce=True,
            )
        if self.settings.rebuild_cron:
            self.scheduler.add_job(
                self._job("rebuild", self._cron_rebuild),
                CronTrigger.from_crontab(self.settings.rebuild_cron, timezone=UTC),
                id="rebuild",
                max_instances=1,
                coalesce=True,
            )
            self.scheduler.add_job(
                self._job("leadership", self.try_to_lead),
                "interval",
                seconds=LEAD_INTERVAL_S,
                id="leadership",
                max_instances=1,
                coalesce=True,
            )
            await self.try_to_lead()
        self.scheduler.start()
        self._waker = asyncio.create_task(self._wake_on_commit(), name="feedsvc-projection-waker")
        self._ready = True
        if self._rebuild_asked:  # announced while this replica was starting
            self.request_rebuild()

    async def stop(self) -> None:
        """Stop the jobs, let the batch in flight finish, close the read model.

        No job is cancelled half-way by the scheduler's shutdown (which APScheduler
        reports as an error with a traceback): the scheduler is paused, the jobs in
        flight finish (catch-up stops after its batch) or, past ``STOP_JOBS_S`` and for
        a cron rebuild, are cancelled by the runner, and only then is it shut down."""
        self._ready = False
        self._stopping = True
        if self._rebuild_task is not None:
            self._rebuild_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rebuild_task
            self._rebuild_task = None
        if self._waker is not None:
            self._waker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._waker
        await self._stop_jobs()
        if self._owns_coordinator:
            await self.coordinator.close()
        async with self._lock:
            if self._projector is not None:
                if self._model is not None:
                    await _in_thread(_sync, self._projector.conn, Path(self._model.path))
                self._projector.conn.close()
            if self._model is not None:
                self._model.close()
            self._projector = None
            self._model = None
            self._serving = False

    def _job(
        self, job_id: str, work: Callable[[], Awaitable[object]]
    ) -> Callable[[], Awaitable[None]]:
        """``work`` as a scheduler job that :meth:`stop` can wait for: it records its
        task while it runs, does nothing once the runner is stopping, and, when the stop
        cancels it, ends quietly (logged at INFO) rather than raising into APScheduler."""

        @functools.wraps(work)
        async def job() -> None:
            if self._stopping:
                return
            task = asyncio.current_task()
            assert task is not None
            self._jobs[task] = job_id
            try:
                await work()
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                log.info("the %s job was cancelled by the stop", job_id)
            finally:
                self._jobs.pop(task, None)

        return job

    async def _stop_jobs(self) -> None:
        """Run no more jobs, let those in flight finish (cancel a cron rebuild, and
        whatever is still running after ``STOP_JOBS_S``), then shut the scheduler down."""
        if not self.scheduler.running:
            return
        self.scheduler.pause()
        await asyncio.sleep(0)  # a job submitted just before the pause starts, sees the stop
        for task, job_id in list(self._jobs.items()):
            if job_id == "rebuild":
                task.cancel()
        if self._jobs:
            _, late = await asyncio.wait(list(self._jobs), timeout=STOP_JOBS_S)
            for task in late:
                log.warning(
                    "the %s job is still running at the stop: cancelling it", self._jobs.get(task)
                )
                task.cancel()
            if late:
                await asyncio.wait(late)
        self.scheduler.shutdown(wait=False)

    def _unsync(self) -> None:
        """Write the serving generation without syncs (``synchronous=OFF``), having
        first recorded durably that it is written so, under which boot of the machine.

        The read model is derived data. A process that dies loses nothing the kernel
        was given; only the machine going down can leave such a file corrupt, and then
        the boot id differs and the next start builds a new generation instead. A clean
        stop syncs it and removes the record (:func:`_sync`)."""
        boot = _boot_id()
        if not self._serving or boot is None or self._projector is None or self._model is None:
            return
        _write_durably(_marker(Path(self._model.path)), boot)
        self._projector.conn.execute("PRAGMA synchronous = OFF")

    # -- generations --------------------------------------------------------------

    def _pointer(self) -> Path:
        return self.folder / "current"

    def _current_generation(self) -> Path | None:
        try:
            name = self._pointer().read_text().strip()
        except FileNotFoundError:
            return None
        path = self.folder / name
        return path if _GENERATION.match(name) and path.exists() else None

    def _next_generation(self) -> Path:
        numbers = [int(m[1]) for p in self.folder.iterdir() if (m := _GENERATION.match(p.name))]
        return self.folder / f"gen-{max(numbers, default=0) + 1:06d}.sqlite3"

    def _open(self, path: Path) -> None:
        conn = connect(path)
        self._projector = Projector(conn, self.urls, self.settings.feed_size)
        self._model = ReadModel(path)
        self._position = self._projector.position()
        self._pending = self._projector.pending_items()

    def _remove_stale_generations(self) -> None:
        """Delete every generation file but the one serving (a crashed rebuild's too)."""
        keep = self._model.path if self._model else None
        for path in self.folder.iterdir():
            base = path.name.split("-wal")[0].split("-shm")[0].split(_UNSYNCED)[0]
            if _GENERATION.match(base) and (keep is None or self.folder / base != keep):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # -- catching up ----------------------------------------------------------------

    @property
    def position(self) -> int:
        """The last position the served read model has applied."""
        return self._position

    async def lag(self) -> int:
        """How many events the projections are behind the log."""
        return max(0, await self.store.head() - self._position)

    def wake(self) -> None:
        """Run the catch-up job now (or once more, if it is running)."""
        if self._running:
            self._again = True
            return
        job = self.scheduler.get_job("catch-up") if self.scheduler.running else None
        if job is not None:
            soon = datetime.now(UTC) + timedelta(seconds=GATHER_S)
            if job.next_run_time is None or job.next_run_time > soon:
                job.modify(next_run_time=soon)

    async def _wake_on_commit(self) -> None:
        seen = self._position
        while True:
            head = await self.store.wait_for(seen + 1, 30.0)
            if head > seen:
                seen = head
                self.wake()

    async def _catch_up_job(self) -> None:
        self._running = True
        try:
            await self._follow_pointer()
            while True:
                self._again = False
                await self.catch_up(gather_s=GATHER_S)
                if not self._again or self._stopping:
                    break
        finally:
            self._running = False

    async def catch_up(self, gather_s: float = 0.0) -> int:
        """Apply every event after the projections' position; return how many. With
        ``gather_s``, after a short batch wait that long (without the lock) so appends
        arriving meanwhile are folded together: a batch's own cost is paid once."""
        applied = 0
        while not self._stopping:
            # the lock is taken per batch: a request waiting to render a document
            # goes between two batches, not after the whole backlog
            async with self._lock:
                if self._projector is None:
                    break
                events = await self.store.read_all(self._position, BATCH)
                if not events:
                    break
                # fold only: the documents are rendered when first asked for
                changes = await _in_thread(self._projector.apply, events, render_now=False)
                items = changes.items()
                self._pending |= items
                for item in items:
                    self._partly.pop(item, None)
                self._position = events[-1].position
                applied += len(events)
                self._notify()
            if gather_s and len(events) < GATHER_EVENTS:
                await asyncio.sleep(gather_s)
        return applied

    async def _follow_pointer(self) -> None:
        """Serve the generation another process (``feedsvc rebuild``) swapped in."""
        current = self._current_generation()
        if current is None or self._model is None or current == Path(self._model.path):
            return
        async with self._lock:
            log.info("switching to read model %s built by another process", current.name)
            old_projector, old_model = self._projector, self._model
            self._open(current)
            self.cache.clear()
            self._as_of.clear()
            if old_projector is not None:
                old_projector.conn.close()
            old_model.close()
            self._remove_stale_generations()
            self._unsync()

    async def render_item(self, item: str) -> None:
        """Render one pending item now (a request is waiting for it)."""
        async with self._lock:
            if item not in self._pending or self._projector is None:
                return
            paths = await _in_thread(self._projector.render_items, [item])
            self._pending.discard(item)
            self._partly.pop(item, None)
        for path in paths:
            self.cache.drop(path)

    async def _render_feed(self, item: str, path: str, scope: Scope, fmt: FeedFormat) -> None:
        """Render only the feed document a request waits for; the item stays pending
        for its other documents."""
        async with self._lock:
            if item not in self._pending or self._projector is None:
                return
            if path in self._partly.get(item, ()):
                return
            paths = await _in_thread(self._projector.render_feed, scope, fmt)
            self._partly.setdefault(item, set()).update(paths)
        for written in paths:
            self.cache.drop(written)

    async def render_pending(self, budget_s: float = RENDER_BUDGET_S) -> int:
        """Render pending items for up to ``budget_s`` seconds (the documents job: an
        idle server ends with every document rendered); return how many."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        done = 0
        while self._pending and loop.time() < deadline:
            await self.render_item(min(self._pending))
            done += 1
        return done

    async def render_all(self) -> None:
        """Render every pending document and archive page (tests, benchmarks)."""
        while self._pending:
            await self.render_pending(budget_s=60.0)
        while await self.render_archives(10**6, budget_s=3600.0):
            pass

    async def render_archives(
        self, limit: int = ARCHIVES_PER_RUN, budget_s: float = RENDER_BUDGET_S
    ) -> int:
        """Render archive pages that filled but are not rendered yet, for up to
        ``budget_s`` seconds; return how many documents were written (a job: a rebuild
        records every page of history, and pages fill as stories grow; a request for
        one renders it itself). The lock is taken per page, so catching up goes
        between two pages, and nothing is rendered while the projections are behind."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        written = 0
        for _ in range(limit):
            if self._projector is None or loop.time() >= deadline:
                break
            if await self.lag() > 0:
                break
            async with self._lock:
                if self._projector is None:
                    break
                pages = await _in_thread(self._projector.pending_archives, 1)
                if not pages:
                    break
                paths = await _in_thread(self._projector.render_archive, *pages[0])
            for path in paths:
                self.cache.drop(path)
            written += len(paths)
        return written

    async def archive_document(self, path: str) -> Document | None:
        """The archive page at ``path``, rendered now if it is recorded but was not
        rendered yet (the archives job had not reached it)."""
        found = archive_of(path)
        if found is None:
            return None
        scope, page, fmt = found
        async with self._lock:
            if self._projector is None:
                return None
            # only the format asked for: the page stays recorded for the archives job,
            # which writes every format (the same bytes for this one)
            paths = await _in_thread(self._projector.render_archive, scope, page, (fmt,))
        for written in paths:
            self.cache.drop(written)
        return self.stored(path)

    def _notify(self) -> None:
        self._advanced.set()
        self._advanced = asyncio.Event()

    async def wait_for(self, position: int, timeout: float) -> bool:
        """Wait until the projections have applied ``position``; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._position < position:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), remaining)
        return True

    # -- rebuilding -------------------------------------------------------------------

    async def try_to_lead(self) -> bool:
        """Try to lead the cron rebuild among the replicas (the leadership job)."""
        leads = await self.coordinator.lead(CRON_LEADERSHIP)
        if leads != self.leads_cron:
            log.info("this replica %s the cron rebuild", "leads" if leads else "no longer leads")
        self.leads_cron = leads
        return leads

    async def _cron_rebuild(self) -> None:
        if await self.try_to_lead():
            await self.rebuild()
        else:
            log.info("the cron rebuild runs on the replica that leads it, not this one")

    def request_rebuild(self) -> None:
        """Rebuild soon, in the background (a rebuild was announced). Announcements
        while a rebuild runs make one more after it; before the runner has started,
        one once it has."""
        self._rebuild_asked = True
        if not self._ready:
            return
        if self._rebuild_task is None or self._rebuild_task.done():
            self._rebuild_task = asyncio.create_task(
                self._rebuild_while_asked(), name="feedsvc-announced-rebuild"
            )

    async def _rebuild_while_asked(self) -> None:
        while self._rebuild_asked:
            self._rebuild_asked = False
            try:
                await self.rebuild()
            except Exception:
                log.exception("the announced rebuild failed; the current read model serves on")

    async def rebuild(
        self, progress: Callable[[int], object] | None = None, *, in_server: bool = True
    ) -> int:
        """Build a fresh generation from the whole log, then swap it in. Returns the
        position it reached. Outside the server (``in_server=False``) old generations
        are left for the server to remove once it has switched. One rebuild runs at a
        time; another waits for it."""
        async with self._rebuilding:
            return await self._rebuild(progress, in_server=in_server)

    async def _rebuild(self, progress: Callable[[int], object] | None, *, in_server: bool) -> int:
        started = time.perf_counter()
        target = self._next_generation()
        conn = connect(target, building=True)
        projector = Projector(conn, self.urls, self.settings.feed_size)
        ahead: asyncio.Future[list[RecordedEvent]] | None = None
        try:
            after = 0
            ahead = asyncio.ensure_future(self.store.read_all(after, BATCH))
            while events := await ahead:
                # the next batch is read (in the store's thread) while this one folds
                ahead = asyncio.ensure_future(self.store.read_all(events[-1].position, BATCH))
                # fold only: every document is recorded as pending, and rendered after
                # the swap when first asked for, or by the documents job
                await _in_thread(projector.apply, events, render_now=False)
                after = events[-1].position
                if progress:
                    progress(len(events))
            await _in_thread(finish_building, conn, target)
            async with self._lock:
                # the last events appended while we built
                while events := await self.store.read_all(after, BATCH):
                    await _in_thread(projector.apply, events, render_now=False)
                    after = events[-1].position
                self._swap(target, projector, remove_old=in_server)
        except BaseException:
            if ahead is not None and not ahead.done():
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead
            conn.close()
            _delete_generation(target)
            raise
        self.rebuild_seconds.append(time.perf_counter() - started)
        del self.rebuild_seconds[:-100]
        log.info("rebuilt the read model to position %d in %s", after, target.name)
        return after

    def _swap(self, target: Path, projector: Projector, remove_old: bool = True) -> None:
        tmp = self._pointer().with_suffix(".tmp")
        tmp.write_text(target.name + "\n")
        os.replace(tmp, self._pointer())
        old_projector, old_model = self._projector, self._model
        self._projector = projector
        self._model = ReadModel(target)
        self._position = projector.position()
        self._pending = projector.pending_items()
        self._partly.clear()
        self.cache.clear()
        self._as_of.clear()
        self._unsync()
        self._notify()
        if old_projector is not None:
            old_projector.conn.close()
        if old_model is not None:
            old_model.close()
        if remove_old:
            self._remove_stale_generations()

    # -- serving ----------------------------------------------------------------------

    async def document(self, path: str) -> Document | None:
        """The current document at ``path`` (None if there is none), rendered first
        if events changed it since it was last rendered."""
        item = item_of(path)
        if item is not None and item in self._pending:
            feed = feed_of(path)
            if feed is None:
                await self.render_item(item)
            elif path not in self._partly.get(item, ()):
                await self._render_feed(item, path, *feed)
        return self.stored(path)

    def cached(self, path: str) -> Document | None:
        """What :meth:`document` answers when it need not wait: the document at ``path``
        if it is in memory and nothing waits to render it (the serving fast path, run on
        every feed request). None means: ask :meth:`document`."""
        if self._pending and (item := item_of(path)) is not None and item in self._pending:
            return None
        return self.cache.get(path)

    def stored(self, path: str) -> Document | None:
        """The document at ``path`` as last rendered (None if there is none)."""
        doc = self.cache.get(path)
        if doc is None and self._model is not None:
            doc = self._model.document(path)
            if doc is not None:
                self.cache.put(doc)
        return doc

    def labels(self, prefix: str) -> dict[str, str]:
        """Scope keys and labels (``prefix`` ``topics/`` or ``stories/``)."""
        return self._model.scope_labels(prefix) if self._model else {}

    async def document_as_of(
        self, path: str, moment: datetime, as_sent: str | None = None
    ) -> Document | None:
        """The document at ``path`` as the service would have served it at ``moment``:
        built from the events recorded up to then. ``as_sent`` is the ``as_of`` value
        as the request spelt it: a feed's self link names ``?as_of=<as_sent>``."""
        position = await self.store.position_at(format_recorded_at(moment))
        key = (position, path, as_sent)
        if key in self._as_of:
            self._as_of.move_to_end(key)
            return self._as_of[key]
        stream = story_of(path)
        events: list[RecordedEvent] = []
        after = 0
        while True:
            page = await self.store.read_all(after, BATCH, stream=stream, upto=position)
            if not page:
                break
            events.extend(page)
            after = page[-1].position
        # its own thread: a projection of a long log must not hold up catching up
        query = None if as_sent is None else "as_of=" + quote(as_sent, safe=":")
        doc = await asyncio.to_thread(self._build_as_of, events, path, query)
        self._as_of[key] = doc
        while len(self._as_of) > 64:
            self._as_of.popitem(last=False)
        return doc

    def _build_as_of(
        self, events: list[RecordedEvent], path: str, self_query: str | None
    ) -> Document | None:
        conn = connect(":memory:")
        try:
            projector = Projector(conn, self.urls, self.settings.feed_size, self_query=self_query)
            changes = Changes()
            for i in range(0, len(events), BATCH):
                changes.merge(projector.apply(events[i : i + BATCH], render_now=False))
            projector.render_changes(changes)
            if (found := archive_of(path)) is not None:
                scope, page, fmt = found
                projector.render_archive(scope, page, (fmt,))
            return ReadModel(":memory:", conn).document(path)
        finally:
            conn.close()

    def stats(self) -> dict[str, Any]:
        """Numbers for metrics and readiness."""
        return {
            "position": self._position,
            "rebuilds": len(self.rebuild_seconds),
            "leads_cron": self.leads_cron,
        }


def _delete_generation(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", _UNSYNCED):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


_UNSYNCED = "-unsynced"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str | None:
    """This boot of the machine (Linux); None where it cannot be told."""
    try:
        return _BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def _marker(generation: Path) -> Path:
    return generation.with_name(generation.name + _UNSYNCED)


def _written_before_a_restart(generation: Path) -> bool:
    """Whether a server wrote ``generation`` without syncs under another boot than
    this one, and never stopped cleanly."""
    try:
        boot = _marker(generation).read_text().strip()
    except FileNotFoundError:
        return False
    return boot != _boot_id()


def _write_durably(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as file:
        file.write(text + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync(conn: sqlite3.Connection, generation: Path) -> None:
    """Put everything written to ``generation`` on disk, and forget that it was
    written unsynced (a clean stop)."""
    marker = _marker(generation)
    if not marker.exists():
        return
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(generation, "rb+") as file:
        os.fsync(file.fileno())
    marker.unlink()
    _fsync_dir(generation.parent)

"""The runner: catch-up woken by appends, rebuild and swap, version change, crash resume,
and its coordination with other replicas (cron leadership, announced rebuilds)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sqlite3
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bench import dataset
from feedsvc.cli_support import import_seed_if_empty
from feedsvc.projections.runner import ProjectionRunner
from feedsvc.service import StoryService
from feedsvc.settings import Settings
from feedsvc.store import EventStore, make_store
from feedsvc.store.coordination import LocalCoordinator
from tests.conftest import SEED_STREAM, opened, reported


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[EventStore]:
    """The service's store with the seed story imported."""
    settings.data_dir.mkdir()
    s = make_store(settings, create=True)
    await s.open()
    await import_seed_if_empty(settings, s)
    yield s
    await s.close()


def all_documents(runner: ProjectionRunner) -> dict[str, bytes]:
    """Every document the runner serves, by path."""
    assert runner._model is not None
    conn = sqlite3.connect(runner._model.path)
    try:
        return {p: bytes(b) for p, b in conn.execute("SELECT path, body FROM documents")}
    finally:
        conn.close()


async def test_an_append_reaches_the_feeds(store: EventStore, settings: Settings) -> None:
    runner = ProjectionRunner(store, settings)
    await runner.start()
    try:
        result = await StoryService(store).append(
            SEED_STREAM, [reported("new-ruling", headline="Court rules on the grant")]
        )
        assert await runner.wait_for(result.positions[-1], timeout=30)
        for fmt in ("atom", "rss", "json"):
            doc = await runner.document(f"/feeds/stories/{SEED_STREAM}.{fmt}")
            assert doc is not None and b"Court rules on the grant" in doc.body
        everything = await runner.document("/feeds/all.atom")
        assert everything is not None and b"Court rules on the grant" in everything.body
        assert await runner.lag() == 0
    finally:
        await runner.stop()


async def test_rebuild_gives_byte_identical_documents_and_swaps(
    store: EventStore, settings: Settings
) -> None:
    service = StoryService(store)
    await service.append("other", [opened("other", topics=["immigration"]), reported("o1")])
    runner = ProjectionRunner(store, settings)
    await runner.start()
    try:
        await runner.catch_up()
        await runner.render_all()
        before = all_documents(runner)
        old_path = runner._model.path if runner._model else None
        await runner.rebuild()
        await runner.render_all()
        assert all_documents(runner) == before
        assert runner._model is not None and runner._model.path != old_path
        assert old_path is not None and not os.path.exists(old_path)  # noqa: ASYNC240
    finally:
        await runner.stop()


async def test_a_changed_projection_version_rebuilds_on_start(
    store: EventStore, settings: Settings
) -> None:
    runner = ProjectionRunner(store, settings)
    await runner.start()
    assert runner._model is not None
    first = Path(runner._model.path)
    await runner.stop()
    with sqlite3.connect(first) as conn:
        conn.execute("UPDATE projections SET version = 0 WHERE name = 'documents'")
    again = ProjectionRunner(store, settings)
    await again.start()
    try:
        assert again._model is not None and Path(again._model.path) != first
        assert again._model.current()
        assert await again.document(f"/stories/{SEED_STREAM}") is not None
    finally:
        await again.stop()


PROJECT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from feedsvc.settings import Settings
    from feedsvc.store import make_store
    from feedsvc.projections import runner as r

    r.BATCH = 7  # many small transactions, so the kill lands between and inside them

    async def main():
        settings = Settings.load(None, environ={}, data_dir=Path(sys.argv[1]), seed=None,
                                 public_base_url="http://127.0.0.1:8080")
        store = make_store(settings)
        await store.open()
        runner = r.ProjectionRunner(store, settings)
        runner.folder.mkdir(parents=True, exist_ok=True)
        target = runner._next_generation()
        (runner.folder / "current").write_text(target.name)
        runner._open(target)
        print("ready", flush=True)
        while True:
            await runner.catch_up()
            print(runner.position, flush=True)

    asyncio.run(main())
    """
)


async def test_kill_9_mid_batch_resumes_to_the_clean_state(
    store: EventStore, settings: Settings
) -> None:
    service = StoryService(store)
    for n in range(6):
        slug = f"s{n}"
        await service.append(slug, [opened(slug, topics=["t"])])
        await service.append(slug, [reported(f"d{i}") for i in range(25)])
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROJECT,
        str(settings.data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    ready = await child.stdout.readline()
    assert ready.strip() == b"ready", await child.stderr.read()
    first_batch = await child.stdout.readline()
    assert int(first_batch) > 0
    os.kill(child.pid, signal.SIGKILL)  # dies inside one of the batches after it
    await child.wait()

    resumed = ProjectionRunner(store, settings)
    await resumed.start()
    try:
        await resumed.catch_up()
        assert resumed.position == await store.head()
        await resumed.render_all()
        after_resume = all_documents(resumed)
        await resumed.rebuild()
        await resumed.render_all()
        assert all_documents(resumed) == after_resume
    finally:
        await resumed.stop()


async def test_a_rebuild_by_another_process_is_picked_up_by_the_server(
    store: EventStore, settings: Settings
) -> None:
    server = ProjectionRunner(store, settings)
    await server.start()
    try:
        before = all_documents(server)
        cli = ProjectionRunner(store, settings)  # what `feedsvc rebuild` does
        cli.open_current()
        await cli.rebuild(in_server=False)
        rebuilt = cli._model.path if cli._model else None
        await cli.stop()
        await server._catch_up_job()
        assert server._model is not None and server._model.path == rebuilt
        assert all_documents(server) == before
        assert sorted(p.name for p in server.folder.glob("gen-*.sqlite3")) == [
            Path(str(rebuilt)).name
        ]
    finally:
        await server.stop()


async def test_a_request_renders_its_own_format_and_never_serves_a_stale_one(
    store: EventStore, settings: Settings
) -> None:
    # no documents job in this test: only requests render
    runner = ProjectionRunner(store, dataclasses.replace(settings, catchup_interval_s=3600.0))
    await runner.start()
    service = StoryService(store)
    feed = f"/feeds/stories/{SEED_STREAM}"
    try:
        for n in range(3):
            headline = f"Ruling number {n} on the grant"
            result = await service.append(SEED_STREAM, [reported(f"ruling-{n}", headline=headline)])
            assert await runner.wait_for(result.positions[-1], timeout=30)
            # one format, then the next: each is current when asked for
            for fmt in ("json", "atom", "json", "rss", "atom"):
                doc = await runner.document(f"{feed}.{fmt}")
                assert doc is not None and headline.encode() in doc.body, (n, fmt)
    finally:
        await runner.stop()


async def test_an_archive_page_asked_for_is_written_in_its_format_and_the_job_writes_all(
    store: EventStore, settings: Settings
) -> None:
    """A first request for an archive page renders the format it asks for alone; the
    page stays recorded, and the archives job writes every format (that one the same)."""
    quiet = dataclasses.replace(settings, catchup_interval_s=3600.0, feed_size=4)
    runner = ProjectionRunner(store, quiet)
    await runner.start()
    page = f"/feeds/stories/{SEED_STREAM}/archive/1"
    try:
        assert runner.stored(f"{page}.atom") is None  # recorded by the rebuild, not rendered
        asked = await runner.archive_document(f"{page}.atom")
        assert asked is not None and b"<feed" in asked.body
        assert runner.stored(f"{page}.rss") is None and runner.stored(f"{page}.json") is None
        await runner.render_all()
        atom, rss, json = (runner.stored(f"{page}.{fmt}") for fmt in ("atom", "rss", "json"))
        assert atom is not None and atom.body == asked.body
        assert rss is not None and b"<rss" in rss.body
        assert json is not None and b'"items"' in json.body
    finally:
        await runner.stop()


def _read(path: Path) -> str:
    return path.read_text().strip()


def _marker_of(runner: ProjectionRunner) -> Path:
    assert runner._model is not None
    return Path(f"{runner._model.path}-unsynced")


async def test_a_clean_stop_syncs_the_read_model_written_without_syncs(
    store: EventStore, settings: Settings
) -> None:
    runner = ProjectionRunner(store, settings)
    await runner.start()
    marker = _marker_of(runner)
    assert _read(marker) == _read(Path("/proc/sys/kernel/random/boot_id"))
    result = await StoryService(store).append(SEED_STREAM, [reported("late", headline="Late")])
    assert await runner.wait_for(result.positions[-1], timeout=30)
    await runner.stop()
    assert not marker.exists()
    again = ProjectionRunner(store, settings)
    assert again.open_current() is not None and again.position == result.positions[-1]
    again._model.close()  # type: ignore[union-attr]
    again._projector.conn.close()  # type: ignore[union-attr]


async def test_a_read_model_written_unsynced_before_a_restart_is_built_again(
    store: EventStore, settings: Settings
) -> None:
    runner = ProjectionRunner(store, settings)
    await runner.start()
    await runner.render_all()
    before = all_documents(runner)
    marker = _marker_of(runner)
    await runner.stop()
    # as a server that went down with the machine leaves it: written under another boot
    marker.write_text("another-boot\n")
    restarted = ProjectionRunner(store, settings)
    await restarted.start()
    try:
        assert len(restarted.rebuild_seconds) == 1  # built again, not opened
        assert _read(marker) != "another-boot"
        await restarted.render_all()
        assert all_documents(restarted) == before
    finally:
        await restarted.stop()


class _Follower(LocalCoordinator):
    """A replica's coordination where another replica leads, and rebuilds are told."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[Callable[[], object]] = []

    async def lead(self, name: str) -> bool:
        return False

    async def subscribe_rebuild(self, listener: Callable[[], object]) -> None:
        self.listeners.append(listener)


async def test_the_cron_rebuild_runs_only_where_it_is_led_and_a_told_rebuild_everywhere(
    store: EventStore, settings: Settings
) -> None:
    follower = _Follower()
    runner = ProjectionRunner(
        store, dataclasses.replace(settings, rebuild_cron="0 0 1 1 *"), follower
    )
    await runner.start()
    try:
        assert not runner.leads_cron
        cron = runner.scheduler.get_job("rebuild")
        assert cron is not None
        await cron.func()
        assert len(runner.rebuild_seconds) == 1  # the one on start, not the cron's
        assert len(follower.listeners) == 1
        follower.listeners[0]()  # a rebuild is announced
        for _ in range(600):
            if len(runner.rebuild_seconds) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(runner.rebuild_seconds) == 2
        assert runner.ready and await runner.lag() == 0
    finally:
        await runner.stop()
    assert not runner.ready


async def test_the_local_coordinator_always_leads_the_cron_rebuild(
    store: EventStore, settings: Settings
) -> None:
    runner = ProjectionRunner(store, dataclasses.replace(settings, rebuild_cron="0 0 1 1 *"))
    await runner.start()
    try:
        assert runner.leads_cron
        cron = runner.scheduler.get_job("rebuild")
        assert cron is not None
        await cron.func()
        assert len(runner.rebuild_seconds) == 2
    finally:
        await runner.stop()


def _stored_position(runner_path: str | Path) -> int:
    """The position a read model file records as applied."""
    conn = sqlite3.connect(runner_path)
    try:
        row = conn.execute("SELECT MIN(position) FROM projections").fetchone()
        return int(row[0])
    finally:
        conn.close()


async def test_stopping_while_a_catch_up_is_in_flight_logs_no_error(
    store: EventStore, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A clean stop lets the catch-up batch in flight finish: no job is cancelled
    half-way (APScheduler logs a cancelled job as an ERROR with its traceback), and the
    position the runner reports is the one its read model recorded.

    The batch is held in flight for real: the one projections thread is kept busy, so
    the catch-up's fold waits for it while the stop begins."""
    from apscheduler.schedulers.base import STATE_RUNNING

    from feedsvc.projections import runner as runner_module

    caplog.set_level(logging.INFO)
    runner = ProjectionRunner(store, settings)
    await runner.start()
    assert runner._model is not None
    path = runner._model.path
    busy = threading.Event()
    blocker = asyncio.get_running_loop().run_in_executor(
        runner_module._PROJECTIONS_THREAD, busy.wait, 30.0
    )
    stopping: asyncio.Task[None] | None = None
    try:
        result = await StoryService(store).append(SEED_STREAM, [reported("in-flight")])
        head = result.positions[-1]
        for _ in range(600):  # the append wakes the catch-up job, which takes the lock
            if runner._running and runner._lock.locked():
                break
            await asyncio.sleep(0.01)
        assert runner._running and runner._lock.locked(), "the catch-up job did not start"
        assert runner.position < head
        stopping = asyncio.create_task(runner.stop())
        for _ in range(600):  # the stop has begun: the scheduler runs no more jobs
            if runner.scheduler.state != STATE_RUNNING:
                break
            await asyncio.sleep(0.01)
        assert runner.scheduler.state != STATE_RUNNING
    finally:
        busy.set()
        await blocker
        if stopping is not None:
            await asyncio.wait_for(stopping, 30)
        else:
            await runner.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.WARNING)
    assert runner.position == _stored_position(path) == head


async def test_a_rebuild_killed_while_it_folds_leaves_the_old_generation_serving(
    settings: Settings,
) -> None:
    """``feedsvc rebuild`` killed (SIGKILL) part way through the fold of a log: the
    server goes on serving the generation it had, byte for byte; a restart serves it
    too and removes what the killed rebuild left; the next rebuild completes."""
    settings.data_dir.mkdir()
    database = settings.data_dir / settings.database
    size = dataset.Size(stories=10, events=3_000)
    await asyncio.to_thread(dataset.generate, size, database)
    store = make_store(settings)
    await store.open()
    server = ProjectionRunner(store, settings)
    try:
        await server.start()
        await server.render_all()
        before = all_documents(server)
        assert server._model is not None
        serving = Path(server._model.path)

        config = Path(__file__).parents[2] / "config" / "feedsvc.toml"
        env = {**os.environ, "FEEDSVC_DATA_DIR": str(settings.data_dir)}
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "feedsvc.cli", "--config", str(config), "rebuild", env=env
        )
        partial = serving.with_name("gen-000002.sqlite3")
        # killed once its generation holds a few batches: well before the end of the fold
        while not (partial.exists() and partial.stat().st_size > 2 << 20):
            assert child.returncode is None, "the rebuild ended before it could be killed"
            await asyncio.sleep(0.002)
        os.kill(child.pid, signal.SIGKILL)
        assert await child.wait() == -signal.SIGKILL

        await server._catch_up_job()  # follows the pointer, which did not move
        assert server._model is not None and Path(server._model.path) == serving
        assert all_documents(server) == before
    finally:
        await server.stop()

    restarted = ProjectionRunner(store, settings)
    try:
        await restarted.start()
        assert restarted._model is not None and Path(restarted._model.path) == serving
        assert not partial.exists()
        assert all_documents(restarted) == before
        assert await restarted.rebuild() == size.events
    finally:
        await restarted.stop()
        await store.close()

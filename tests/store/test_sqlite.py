"""The SQLite adapter passes the store contract, and keeps the log safe in the file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from feedsvc.auth import Scope
from feedsvc.errors import NotAFeedsvcDatabase, SchemaTooNew, StoreUnavailable
from feedsvc.store.port import EventStore
from feedsvc.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SQLiteEventStore, _statements
from feedsvc.store.sqlite_tokens import SQLiteTokenStore
from tests.conftest import opened
from tests.store.contract import EventStoreContract, valid


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteEventStore]:
    """An open, empty SQLite store."""
    s = SQLiteEventStore(tmp_path / "log.sqlite3")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def reopen(
    store: SQLiteEventStore, tmp_path: Path
) -> AsyncIterator[Callable[[], Awaitable[EventStore]]]:
    """Close the store and open the same file again."""
    opened_again: list[SQLiteEventStore] = []

    async def _reopen() -> EventStore:
        await store.close()
        again = SQLiteEventStore(tmp_path / "log.sqlite3")
        await again.open()
        opened_again.append(again)
        return again

    yield _reopen
    for s in opened_again:
        await s.close()


class TestSQLiteContract(EventStoreContract):
    """The contract, against a real SQLite file."""


async def test_a_shared_group_commit_still_records_each_event_apart(
    store: SQLiteEventStore,
) -> None:
    await asyncio.gather(*[store.append(f"s{n}", [valid(opened(f"s{n}"))]) for n in range(20)])
    assert max(store.group_sizes) > 1  # some appends did share one transaction
    stamps = [e.recorded_at for e in await store.read_all(0, 100)]
    assert len(set(stamps)) == 20 and stamps == sorted(stamps)


async def test_an_append_whose_caller_is_cancelled_is_still_committed_with_its_group(
    store: SQLiteEventStore,
) -> None:
    async with store._group.lock:  # the group waits: every append below is queued
        waiting = [
            asyncio.ensure_future(store.append(f"c{n}", [valid(opened(f"c{n}"))])) for n in range(3)
        ]
        await asyncio.sleep(0)
        waiting[1].cancel()
    first, _, last = await asyncio.gather(*waiting, return_exceptions=True)
    assert waiting[1].cancelled()
    assert not isinstance(first, BaseException) and not isinstance(last, BaseException)
    assert [e.stream for e in await store.read_all(0, 10)] == ["c0", "c1", "c2"]
    assert [first.positions, last.positions] == [(1,), (3,)]


async def test_the_database_itself_refuses_update_and_delete(store: SQLiteEventStore) -> None:
    await store.append("a", [valid(opened("a"))])
    with sqlite3.connect(store.path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET data = '{}'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events")
    assert len(await store.read_all(0, 10)) == 1


async def test_wal_and_full_sync_by_default(store: SQLiteEventStore) -> None:
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.synchronous == "FULL"
    assert await store.writer_pragmas() == (2, "wal")  # what the writer really commits with


async def test_missing_folder_is_one_clear_error(tmp_path: Path) -> None:
    s = SQLiteEventStore(tmp_path / "nope" / "log.sqlite3")
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await s.open()


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(NotAFeedsvcDatabase, match="not a feedsvc database"):
        await SQLiteEventStore(path).open()


async def test_another_apps_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (x)")
    with pytest.raises(NotAFeedsvcDatabase, match="not a feedsvc one"):
        await SQLiteEventStore(path).open()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    s = SQLiteEventStore(path)
    await s.open()
    await s.close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNew, match="newer feedsvc"):
        await SQLiteEventStore(path).open()


async def test_an_older_schema_is_migrated_keeping_its_events(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    with sqlite3.connect(path) as conn:
        for statement in _statements(MIGRATIONS[0]):
            conn.execute(statement)
        conn.execute("PRAGMA application_id = 1717921124")
        conn.execute("PRAGMA user_version = 1")
        event = valid(opened("a"))
        conn.execute(
            "INSERT INTO events VALUES (1, ?, 'a', 1, 'story.opened', 1, '2017', "
            "'2017-10-12T00:00:00.000000Z', ?, '{}')",
            (event.id, event.data_json),
        )
    s = SQLiteEventStore(path)
    await s.open()
    try:
        assert await s.head() == 1
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        # the token store makes its own table in the migrated database
        tokens = SQLiteTokenStore(path)
        await tokens.open()
        try:
            secret = await tokens.create("ci", Scope.parse("admin"))
            assert (await tokens.authenticate(secret)) is not None
        finally:
            await tokens.close()
    finally:
        await s.close()


async def test_locked_database_is_unavailable_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    s = SQLiteEventStore(path, busy_timeout_ms=100)
    await s.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            await s.append("a", [valid(opened("a"))])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # and it recovers once the lock is gone
    result = await s.append("a", [valid(opened("a"))])
    assert result.positions == (1,)
    await s.close()


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("feedsvc-store-writer")]


async def test_the_writer_thread_goes_with_the_store(tmp_path: Path) -> None:
    """The writer has a thread of its own: a store closed, or refused on open, leaves no
    thread behind (a server that reopens its store, or a CLI command, would pile them up
    and never exit), and a closed store refuses appends with a clear error."""
    before = len(_writer_threads())
    path = tmp_path / "log.sqlite3"
    for attempt in range(3):
        s = SQLiteEventStore(path)
        await s.open()
        assert len(_writer_threads()) == before + 1
        await s.append(f"s{attempt}", [valid(opened(f"s{attempt}"))])
        await s.close()
        assert len(_writer_threads()) == before
        with pytest.raises(StoreUnavailable, match="closed"):
            await s.append("late", [valid(opened("late"))])
    not_sqlite = tmp_path / "x.sqlite3"
    not_sqlite.write_bytes(b"this is not a database" * 100)
    with pytest.raises(NotAFeedsvcDatabase):
        await SQLiteEventStore(not_sqlite).open()
    assert len(_writer_threads()) == before
    again = SQLiteEventStore(path)
    await again.open()
    try:
        assert await again.head() == 3
    finally:
        await again.close()

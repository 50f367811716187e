"""The PostgreSQL adapter passes the store contract, and the server itself keeps the log
append-only. Needs ``FEEDSVC_TEST_DATABASE_URL`` (see ``tests/conftest.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from feedsvc.domain.events import RecordedEvent
from feedsvc.errors import ImportFailed, SchemaTooNew, StoreUnavailable
from feedsvc.settings import Settings
from feedsvc.store import make_store, make_token_store
from feedsvc.store.port import EventStore
from feedsvc.store.postgres import SCHEMA_VERSION, WRITER_ROLE, PostgresEventStore
from feedsvc.store.postgres_tokens import PostgresTokenStore
from tests.conftest import opened, reported
from tests.store.contract import EventStoreContract, valid


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresEventStore]:
    """An open store on an empty database of the test's own."""
    s = PostgresEventStore(pg_url)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def reopen(
    store: PostgresEventStore, pg_url: str
) -> AsyncIterator[Callable[[], Awaitable[EventStore]]]:
    """Close the store and open the same database again."""
    opened_again: list[PostgresEventStore] = []

    async def _reopen() -> EventStore:
        await store.close()
        again = PostgresEventStore(pg_url)
        await again.open()
        opened_again.append(again)
        return again

    yield _reopen
    for s in opened_again:
        await s.close()


class TestPostgresContract(EventStoreContract):
    """The contract, against a real PostgreSQL database."""

    names_hold_nul = False


async def test_the_database_itself_refuses_update_delete_and_truncate(
    store: PostgresEventStore, pg_url: str
) -> None:
    await store.append("a", [valid(opened("a"))])
    conn = await asyncpg.connect(pg_url)  # the owner, not the writer role
    try:
        for statement in ("UPDATE events SET data = '{}'", "DELETE FROM events", "TRUNCATE events"):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute(statement)
    finally:
        await conn.close()
    assert len(await store.read_all(0, 10)) == 1


async def test_the_writer_role_may_only_read_and_insert(
    store: PostgresEventStore, pg_url: str
) -> None:
    await store.append("a", [valid(opened("a"))])
    conn = await asyncpg.connect(pg_url)
    try:
        privileges = {
            p: await conn.fetchval("SELECT has_table_privilege($1, 'events', $2)", WRITER_ROLE, p)
            for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
        }
        assert privileges == {
            "SELECT": True,
            "INSERT": True,
            "UPDATE": False,
            "DELETE": False,
            "TRUNCATE": False,
        }
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {WRITER_ROLE}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("UPDATE events SET data = '{}'")
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {WRITER_ROLE}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM events")
        # the store writes as that role: without its INSERT grant, appends are refused
        await conn.execute(f"REVOKE INSERT ON events FROM {WRITER_ROLE}")
        with pytest.raises(StoreUnavailable, match="permission denied"):
            await store.append("b", [valid(opened("b"))])
        await conn.execute(f"GRANT INSERT ON events TO {WRITER_ROLE}")
    finally:
        await conn.close()
    assert [e.stream for e in await store.read_all(0, 10)] == ["a"]
    assert (await store.append("b", [valid(opened("b"))])).positions == (2,)


async def test_a_fresh_database_is_migrated_once_by_stores_opening_together(
    pg_fresh_url: str,
) -> None:
    import asyncio

    stores = [PostgresEventStore(pg_fresh_url) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await stores[0].append("a", [valid(opened("a"))])
        assert [await s.head() for s in stores] == [1, 1, 1]
        conn = await asyncpg.connect(pg_fresh_url)
        try:
            rows = await conn.fetch(
                "SELECT component, version FROM feedsvc_migrations ORDER BY 1, 2"
            )
        finally:
            await conn.close()
        assert [tuple(r) for r in rows] == [("events", v) for v in range(1, SCHEMA_VERSION + 1)]
    finally:
        for s in stores:
            await s.close()


async def test_a_newer_schema_is_refused(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "INSERT INTO feedsvc_migrations (component, version) VALUES ('events', $1)",
            SCHEMA_VERSION + 1,
        )
    finally:
        await conn.close()
    with pytest.raises(SchemaTooNew, match="newer feedsvc"):
        await PostgresEventStore(pg_url).open()


async def test_an_unreachable_server_is_one_clear_error() -> None:
    store = PostgresEventStore("postgresql://feedsvc:secret@127.0.0.1:1/feedsvc")
    with pytest.raises(StoreUnavailable, match="cannot reach the server") as info:
        await store.open()
    assert "secret" not in str(info.value)  # the password is never shown
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.append("a", [valid(opened("a"))])


async def test_a_missing_database_is_named(pg_server: str) -> None:
    from tests.conftest import database_url

    with pytest.raises(StoreUnavailable, match="no such database"):
        await PostgresEventStore(database_url(pg_server, "feedsvc_no_such_db")).open()


def test_postgresql_urls_pick_the_postgresql_adapters(tmp_path: Path) -> None:
    for url in ("postgresql://u@db:5432/feeds", "postgres://u@db/feeds"):
        settings = Settings.load(None, environ={}, data_dir=tmp_path, database_url=url)
        store = make_store(settings)
        assert isinstance(store, PostgresEventStore) and store.url == url
        tokens = make_token_store(settings)
        assert isinstance(tokens, PostgresTokenStore) and tokens.url == url


async def test_names_holding_nul_are_refused_with_the_line(
    store: PostgresEventStore, seed_events: list[RecordedEvent]
) -> None:
    bad = dataclasses.replace(seed_events[1], stream="a\x00b")
    with pytest.raises(ImportFailed) as info:
        await store.import_events([seed_events[0], bad])
    assert info.value.line == 2 and "U+0000" in info.value.reason
    assert await store.head() == 0


async def test_a_dropped_listening_connection_is_made_again(
    store: PostgresEventStore, pg_url: str
) -> None:
    other = PostgresEventStore(pg_url)
    await other.open()
    try:
        listening = store._listener.get_server_pid()
        conn = await asyncpg.connect(pg_url)
        try:
            # as a server restart or a network failure would
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", listening)
        finally:
            await conn.close()
        await other.append("a", [valid(opened("a"))])
        assert await store.wait_for(1, timeout=10) == 1
        await other.append("a", [valid(reported("d1"))])
        assert await store.wait_for(2, timeout=10) == 2
    finally:
        await other.close()

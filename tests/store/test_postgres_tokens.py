"""The PostgreSQL token store passes the token contract, and a revocation by one
replica reaches another. Needs ``FEEDSVC_TEST_DATABASE_URL``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from feedsvc.auth import Scope
from feedsvc.errors import SchemaTooNew
from feedsvc.store.postgres_tokens import MIGRATIONS, PostgresTokenStore
from tests.store.token_contract import StoredTokens, TokenStoreContract


@pytest.fixture
async def tokens(pg_url: str) -> AsyncIterator[PostgresTokenStore]:
    """A token store on a database of the test's own."""
    store = PostgresTokenStore(pg_url)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def stored_tokens(pg_url: str) -> StoredTokens:
    """What the database holds, read over a connection of its own."""

    async def read() -> tuple[list[tuple[str, str, str]], str]:
        conn = await asyncpg.connect(pg_url)
        try:
            rows = await conn.fetch("SELECT name, hash, scope FROM tokens")
            dump = await conn.fetchval(
                "SELECT COALESCE(string_agg(row_to_json(t)::text, E'\\n'), '') FROM tokens t"
            )
        finally:
            await conn.close()
        return [(r[0], r[1], r[2]) for r in rows], str(dump)

    return read


class TestPostgresTokens(TokenStoreContract):
    """The token store contract, on a real PostgreSQL database."""


async def test_a_revocation_by_another_replica_counts_within_its_cache_time(
    tokens: PostgresTokenStore, pg_url: str
) -> None:
    secret = await tokens.create("ci", Scope.parse("admin"))
    other = PostgresTokenStore(pg_url, cache_s=0.2)
    await other.open()
    try:
        assert await other.authenticate(secret) is not None
        await tokens.revoke("ci")
        for _ in range(100):
            if await other.authenticate(secret) is None:
                break
            await asyncio.sleep(0.05)
        assert await other.authenticate(secret) is None
    finally:
        await other.close()


async def test_a_newer_token_schema_is_refused(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "INSERT INTO feedsvc_migrations (component, version) VALUES ('tokens', $1)",
            len(MIGRATIONS) + 1,
        )
    finally:
        await conn.close()
    with pytest.raises(SchemaTooNew, match="tokens schema"):
        await PostgresTokenStore(pg_url).open()

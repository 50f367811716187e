"""The PostgreSQL adapter of the token store: tokens in the ``tokens`` table of the
events database, through a small pool of its own.

The adapter owns its table through its own migrations (component ``tokens``). Like
the SQLite adapter it keeps the active tokens in memory for ``cache_s`` seconds: a
change made by this process counts at once, one made by another process (another
replica, ``feedsvc token revoke``) within ``cache_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

from feedsvc.auth import Scope, TokenError, TokenInfo, check_name, hash_secret, new_secret
from feedsvc.domain.events import format_recorded_at
from feedsvc.errors import StoreError, StoreUnavailable
from feedsvc.store import pg
from feedsvc.store.tokens import Active, CachedTokenStore

COMPONENT = "tokens"
"""The name of this adapter's migrations in ``feedsvc_migrations``."""

MIGRATIONS: list[str] = [
    # 1: the tokens (only a hash of each secret is kept)
    """
    CREATE TABLE tokens (
        name        text COLLATE "C" PRIMARY KEY,
        hash        text NOT NULL UNIQUE,
        scope       text NOT NULL,
        created_at  text NOT NULL,
        revoked_at  text
    );
    """,
]


class PostgresTokenStore(CachedTokenStore):
    """Tokens in the ``tokens`` table of a PostgreSQL database."""

    def __init__(self, url: str, *, cache_s: float = 1.0) -> None:
        super().__init__(cache_s)
        self.url = url
        self._pool: Any = None

    async def open(self) -> None:
        pool = await pg.create_pool(self.url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                await pg.migrate(conn, COMPONENT, MIGRATIONS, self.url)
        except BaseException as e:
            with contextlib.suppress(Exception):
                await pool.close()
            if isinstance(e, Exception) and not isinstance(e, StoreError):
                raise pg.translate(e, self.url) from e
            raise
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), pg.CONNECT_TIMEOUT_S)

    def _db(self) -> Any:
        if self._pool is None:
            raise StoreUnavailable("the token store is closed")
        return self._pool

    async def _run(self, method: str, sql: str, *params: object) -> Any:
        pool = self._db()
        try:
            return await getattr(pool, method)(sql, *params)
        except Exception as e:
            raise pg.translate(e, self.url) from e

    async def create(self, name: str, scope: Scope, secret: str | None = None) -> str:
        check_name(name)
        secret = secret or new_secret()
        now = format_recorded_at(datetime.now(UTC))
        pool = self._db()
        try:
            status = await pool.execute(
                "INSERT INTO tokens (name, hash, scope, created_at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, "
                "scope = excluded.scope, created_at = excluded.created_at, revoked_at = NULL "
                "WHERE tokens.revoked_at IS NOT NULL",
                name,
                hash_secret(secret),
                str(scope),
                now,
            )
            self._changed()
        except pg.UniqueViolation as e:
            raise TokenError(f"cannot store token {name!r}: {e}") from e
        except Exception as e:
            raise pg.translate(e, self.url) from e
        if status != "INSERT 0 1":
            raise TokenError(
                f"a token named {name!r} already exists; revoke it first or pick another name"
            )
        return secret

    async def list(self) -> list[TokenInfo]:
        rows = await self._run(
            "fetch", "SELECT name, scope, created_at, revoked_at FROM tokens ORDER BY name"
        )
        return [TokenInfo(r[0], Scope.parse(r[1]), r[2], r[3]) for r in rows]

    async def revoke(self, name: str) -> TokenInfo:
        now = format_recorded_at(datetime.now(UTC))
        await self._run(
            "execute",
            "UPDATE tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
            now,
            name,
        )
        self._changed()
        r = await self._run(
            "fetchrow",
            "SELECT name, scope, created_at, revoked_at FROM tokens WHERE name = $1",
            name,
        )
        if r is None:
            raise TokenError(f"no token named {name!r}; `feedsvc token list` shows them")
        return TokenInfo(r[0], Scope.parse(r[1]), r[2], r[3])

    async def _read_active(self) -> Active:
        rows = await self._run(
            "fetch", "SELECT name, hash, scope, created_at FROM tokens WHERE revoked_at IS NULL"
        )
        return [
            (str(stored), TokenInfo(name, Scope.parse(scope), created_at))
            for name, stored, scope, created_at in rows
        ]

    async def count(self) -> int:
        return int(await self._run("fetchval", "SELECT count(*) FROM tokens"))

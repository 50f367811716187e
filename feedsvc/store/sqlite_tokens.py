"""The SQLite adapter of the token store: tokens in the ``tokens`` table of the events
database, through a connection of its own.

The adapter owns its table: it creates it when missing (a database made before the
token store had its own adapter already has it, from the event store's migration 2).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from feedsvc.auth import Scope, TokenError, TokenInfo, check_name, hash_secret, new_secret
from feedsvc.domain.events import format_recorded_at
from feedsvc.errors import StoreUnavailable
from feedsvc.store.sqlite import APPLICATION_ID
from feedsvc.store.tokens import Active, CachedTokenStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    name        TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    scope       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
) STRICT
"""
"""The adapter's one table (only a hash of each secret is kept)."""


class SQLiteTokenStore(CachedTokenStore):
    """Tokens in the ``tokens`` table of the SQLite events database (which the event
    store creates: this adapter opens it, it does not make a new file)."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000, cache_s: float = 1.0) -> None:
        super().__init__(cache_s)
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: aiosqlite.Connection | None = None

    async def open(self) -> None:
        try:
            conn = await aiosqlite.connect(
                f"file:{self.path}?mode=rw",
                uri=True,
                isolation_level=None,
                timeout=self.busy_timeout_ms / 1000,
            )
        except sqlite3.Error as e:
            raise StoreUnavailable(f"cannot open token database {self.path}: {e}") from e
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            async with conn.execute("PRAGMA application_id") as cur:
                row = await cur.fetchone()
            if row is None or row[0] != APPLICATION_ID:
                raise StoreUnavailable(
                    f"{self.path} is not a feedsvc database: open it with the event store "
                    "first (it makes the file)"
                )
            await conn.execute(SCHEMA)
        except sqlite3.Error as e:
            await conn.close()
            raise StoreUnavailable(f"cannot prepare token database {self.path}: {e}") from e
        except StoreUnavailable:
            await conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def _db(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreUnavailable("the token store is closed")
        return self._conn

    async def create(self, name: str, scope: Scope, secret: str | None = None) -> str:
        check_name(name)
        secret = secret or new_secret()
        now = format_recorded_at(datetime.now(UTC))
        try:
            cursor = await self._db().execute(
                "INSERT INTO tokens (name, hash, scope, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, "
                "scope = excluded.scope, created_at = excluded.created_at, revoked_at = NULL "
                "WHERE tokens.revoked_at IS NOT NULL",
                (name, hash_secret(secret), str(scope), now),
            )
            self._changed()
        except sqlite3.IntegrityError as e:
            raise TokenError(f"cannot store token {name!r}: {e}") from e
        except sqlite3.Error as e:
            raise StoreUnavailable(f"cannot write token database {self.path}: {e}") from e
        if cursor.rowcount != 1:
            raise TokenError(
                f"a token named {name!r} already exists; revoke it first or pick another name"
            )
        return secret

    async def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        try:
            async with self._db().execute(sql, params) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as e:
            raise StoreUnavailable(f"cannot read token database {self.path}: {e}") from e

    async def list(self) -> list[TokenInfo]:
        rows = await self._rows(
            "SELECT name, scope, created_at, revoked_at FROM tokens ORDER BY name"
        )
        return [TokenInfo(r[0], Scope.parse(r[1]), r[2], r[3]) for r in rows]

    async def revoke(self, name: str) -> TokenInfo:
        now = format_recorded_at(datetime.now(UTC))
        try:
            await self._db().execute(
                "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (now, name),
            )
            self._changed()
        except sqlite3.Error as e:
            raise StoreUnavailable(f"cannot write token database {self.path}: {e}") from e
        rows = await self._rows(
            "SELECT name, scope, created_at, revoked_at FROM tokens WHERE name = ?", (name,)
        )
        if not rows:
            raise TokenError(f"no token named {name!r}; `feedsvc token list` shows them")
        r = rows[0]
        return TokenInfo(r[0], Scope.parse(r[1]), r[2], r[3])

    async def _read_active(self) -> Active:
        rows = await self._rows(
            "SELECT name, hash, scope, created_at FROM tokens WHERE revoked_at IS NULL"
        )
        return [
            (str(stored), TokenInfo(name, Scope.parse(scope), created_at))
            for name, stored, scope, created_at in rows
        ]

    async def count(self) -> int:
        rows = await self._rows("SELECT count(*) FROM tokens")
        return int(rows[0][0])

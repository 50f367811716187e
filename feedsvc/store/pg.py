"""Connection setup for the PostgreSQL adapters, in one place: pools from a
``postgresql://`` URL, driver errors translated to the store's, and schema migrations
versioned per component.

Every adapter (the event store, the token store, the coordination of replicas) gets
its connections here, so timeouts, the application name and the translation of
errors are the same for all of them.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import asyncpg

from feedsvc.errors import SchemaTooNew, StoreError, StoreUnavailable

APPLICATION_NAME = "feedsvc"
CONNECT_TIMEOUT_S = 10.0

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS feedsvc_migrations (
    component  text    NOT NULL,
    version    integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)
"""
"""Which migrations of which component (``events``, ``tokens``, ...) a database has."""

_MIGRATION_LOCK = 0x66656564_00000001
"""The advisory lock migrations hold: two processes starting at once migrate once."""


def display(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}@{host}"


def translate(error: BaseException, url: str) -> StoreError:
    """A driver or network error as the store's own error, naming the server."""
    where = display(url)
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return StoreUnavailable(f"{where}: no such database ({error})")
    if isinstance(
        error, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError
    ):
        return StoreUnavailable(f"{where}: the server refused the login ({error})")
    if isinstance(error, OSError | socket.gaierror | TimeoutError):
        return StoreUnavailable(f"{where}: cannot reach the server ({error or 'timed out'})")
    if isinstance(error, asyncpg.ReadOnlySQLTransactionError):
        return StoreUnavailable(f"{where}: the server is read-only ({error})")
    if isinstance(error, asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
        return StoreUnavailable(f"{where}: the connection failed ({error})")
    return StoreUnavailable(f"{where}: {error}")


async def _keep_session(connection: Any) -> None:
    """What a connection goes back to the pool with: nothing to undo. feedsvc leaves no
    session state on pooled connections (roles and locks are transaction-scoped, and
    LISTEN has connections of its own), so the reset asyncpg runs by default (a round
    trip of ``RESET ALL``, ``UNLISTEN *``, ... on every release) is not needed."""


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> Any:
    """A pool of connections to ``url`` (an ``asyncpg.Pool``); the store's error if the
    server cannot be reached or refuses."""
    try:
        return await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            reset=_keep_session,
            timeout=CONNECT_TIMEOUT_S,
            server_settings={"application_name": APPLICATION_NAME},
        )
    except Exception as e:
        raise translate(e, url) from e


async def connect(url: str) -> Any:
    """One connection of its own (an ``asyncpg.Connection``), e.g. to LISTEN on."""
    try:
        return await asyncpg.connect(
            url,
            timeout=CONNECT_TIMEOUT_S,
            server_settings={"application_name": APPLICATION_NAME},
        )
    except Exception as e:
        raise translate(e, url) from e


async def migrate(connection: Any, component: str, migrations: Sequence[str], url: str) -> int:
    """Apply the ``migrations`` of ``component`` the database does not have yet, each
    in its own transaction, under an advisory lock; refuse a database that has more
    of them than this feedsvc knows. Returns the version the database is at."""
    await connection.execute(f"SELECT pg_advisory_lock({_MIGRATION_LOCK})")
    try:
        await connection.execute(MIGRATIONS_TABLE)
        found = await connection.fetchval(
            "SELECT COALESCE(MAX(version), 0) FROM feedsvc_migrations WHERE component = $1",
            component,
        )
        version = int(found)
        if version > len(migrations):
            raise SchemaTooNew(
                f"{display(url)}: the {component} schema is at version {version}, made by a "
                f"newer feedsvc; this one knows up to {len(migrations)}. Upgrade feedsvc."
            )
        for number, script in enumerate(migrations[version:], start=version + 1):
            async with connection.transaction():
                await connection.execute(script)
                await connection.execute(
                    "INSERT INTO feedsvc_migrations (component, version) VALUES ($1, $2)",
                    component,
                    number,
                )
        return len(migrations)
    finally:
        await connection.execute(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})")


UniqueViolation = asyncpg.UniqueViolationError
"""The driver's error for a broken unique constraint (for adapters that answer it)."""

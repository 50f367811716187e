"""The store: ports (the event log, the tokens) and their adapters, one per database.

:func:`make_store`, :func:`make_token_store` and :func:`make_coordinator` pick the
adapters of the configured ``database_url``: ``sqlite:///…`` (the embedded default) or
``postgresql://…``.
Nothing outside this package names an adapter.
"""

from __future__ import annotations

from feedsvc.errors import ConfigError
from feedsvc.settings import Settings
from feedsvc.store.coordination import Coordinator, LocalCoordinator
from feedsvc.store.port import AppendResult, EventStore, Expected
from feedsvc.store.tokens import TokenStore

__all__ = [
    "AppendResult",
    "Coordinator",
    "EventStore",
    "Expected",
    "TokenStore",
    "make_coordinator",
    "make_store",
    "make_token_store",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
"""The URL schemes of a PostgreSQL server."""
_KNOWN = "sqlite:///, postgresql:// and postgres://"


def make_store(settings: Settings, create: bool = False) -> EventStore:
    """The configured event store (not yet opened); ``create`` lets it make a new
    SQLite file where there is none (a PostgreSQL database must exist; its tables are
    made on open)."""
    url = settings.store_url
    if url.startswith("sqlite:///"):
        from feedsvc.store.sqlite import SQLiteEventStore

        return SQLiteEventStore(
            settings.database_path,
            synchronous=settings.synchronous,
            busy_timeout_ms=settings.busy_timeout_ms,
            readers=settings.readers,
            max_group=settings.max_group_commit,
            create=create,
        )
    if url.startswith(POSTGRES_SCHEMES):
        from feedsvc.store.postgres import PostgresEventStore

        return PostgresEventStore(
            url, max_group=settings.max_group_commit, readers=settings.readers
        )
    raise ConfigError(f"database_url {url!r}: this feedsvc knows {_KNOWN}")


def make_token_store(settings: Settings) -> TokenStore:
    """The token store of the configured database (not yet opened; open the event
    store first: on SQLite it makes the file)."""
    url = settings.store_url
    if url.startswith("sqlite:///"):
        from feedsvc.store.sqlite_tokens import SQLiteTokenStore

        return SQLiteTokenStore(settings.database_path, busy_timeout_ms=settings.busy_timeout_ms)
    if url.startswith(POSTGRES_SCHEMES):
        from feedsvc.store.postgres_tokens import PostgresTokenStore

        return PostgresTokenStore(url)
    raise ConfigError(f"database_url {url!r}: this feedsvc knows {_KNOWN}")


def make_coordinator(settings: Settings) -> Coordinator:
    """The coordination of replicas on the configured database (not yet opened): in
    this process's memory for SQLite, through the server for PostgreSQL."""
    url = settings.store_url
    if url.startswith("sqlite:///"):
        return LocalCoordinator()
    if url.startswith(POSTGRES_SCHEMES):
        from feedsvc.store.pg_coordination import PostgresCoordinator

        return PostgresCoordinator(url)
    raise ConfigError(f"database_url {url!r}: this feedsvc knows {_KNOWN}")

"""Start-up helpers shared by the CLI and the web app."""

from __future__ import annotations

import logging

from feedsvc.ndjson import read_ndjson
from feedsvc.settings import Settings
from feedsvc.store.port import EventStore
from feedsvc.store.sqlite import SQLiteEventStore

log = logging.getLogger("feedsvc")


def make_store(settings: Settings, create: bool = False) -> SQLiteEventStore:
    """The configured event store (not yet opened)."""
    return SQLiteEventStore(
        settings.database_path,
        synchronous=settings.synchronous,
        busy_timeout_ms=settings.busy_timeout_ms,
        readers=settings.readers,
        max_group=settings.max_group_commit,
        create=create,
    )


async def import_seed_if_empty(settings: Settings, store: EventStore) -> int:
    """Import the configured seed log into an empty log; a no-op otherwise."""
    if settings.seed is None or await store.head() > 0:
        return 0
    events = read_ndjson(settings.seed)
    written = await store.import_events(events)
    log.info("imported the seed log %s: %d events", settings.seed, written)
    return written

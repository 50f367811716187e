"""Start-up helpers shared by the CLI and the web app."""

from __future__ import annotations

import gc
import logging

from feedsvc.ndjson import read_ndjson
from feedsvc.settings import Settings
from feedsvc.store.port import EventStore

log = logging.getLogger("feedsvc")

GC_THRESHOLDS = (50_000, 20, 10)
"""The cyclic garbage collector's thresholds for a feedsvc process (CPython's default:
700, 10, 10). The projections keep hundreds of thousands of objects in memory
(developments, memberships, scopes); with the default, young collections ran every 700
allocations and full ones often, and took about a fifth of the fold's time at scale
(bench/ANALYSIS.md). feedsvc's objects form few reference cycles: reference counting
frees nearly everything, and the collector only has to find the rare cycle."""


def tune_gc() -> None:
    """Set :data:`GC_THRESHOLDS`, and move what start-up made (modules, classes,
    functions) out of the collector's way for good (``gc.freeze``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def import_seed_if_empty(settings: Settings, store: EventStore) -> int:
    """Import the configured seed log into an empty log; a no-op otherwise."""
    if settings.seed is None or await store.head() > 0:
        return 0
    events = read_ndjson(settings.seed)
    written = await store.import_events(events)
    log.info("imported the seed log %s: %d events", settings.seed, written)
    return written

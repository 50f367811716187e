"""Fixtures shared by the whole suite: real SQLite files in tmp_path, the seed log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from feedsvc.ndjson import read_ndjson
from feedsvc.settings import Settings
from feedsvc.store.sqlite import SQLiteEventStore

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "events" / "seed" / "ct-doj-1373.ndjson"
SEED_STREAM = "ct-doj-section-1373-compliance"
JSONFEED_SCHEMA = REPO / "tests" / "data" / "jsonfeed-schema-v1.1.json"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a service whose data folder is a fresh tmp_path."""
    return Settings.load(
        None,
        environ={},
        data_dir=tmp_path / "data",
        seed=SEED,
        public_base_url="http://127.0.0.1:8080",
    )


@pytest.fixture
async def seeded_store(tmp_path: Path) -> AsyncIterator[SQLiteEventStore]:
    """An open SQLite store holding the seed story."""
    store = SQLiteEventStore(tmp_path / "seeded.sqlite3")
    await store.open()
    await store.import_events(read_ndjson(SEED))
    yield store
    await store.close()


def opened(slug: str, **data: Any) -> dict[str, Any]:
    """A story.opened event as a client submits it."""
    return {
        "type": "story.opened",
        "occurred_at": "2017-10-12",
        "data": {"slug": slug, "title": f"Story {slug}", "summary": "A summary.", **data},
    }


def reported(dev: str, occurred: str = "2017-10-12", **data: Any) -> dict[str, Any]:
    """A development.reported event as a client submits it."""
    return {
        "type": "development.reported",
        "occurred_at": occurred,
        "data": {
            "development_id": dev,
            "headline": f"Headline {dev}",
            "body": f"Body of {dev}.",
            "kind": "statement",
            **data,
        },
    }

"""Fixtures of the store tests."""

from __future__ import annotations

import pytest

from feedsvc.domain.events import RecordedEvent
from feedsvc.ndjson import read_ndjson
from tests.conftest import SEED


@pytest.fixture
def seed_events() -> list[RecordedEvent]:
    """The seed story's events as exported."""
    return read_ndjson(SEED)

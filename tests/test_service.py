"""StoryService: appends checked against a story's rules, chained per stream, when
other writers (another replica, another process) append to the same stories."""

from __future__ import annotations

import asyncio

import pytest

from feedsvc.errors import WrongExpectedVersion
from feedsvc.service import StoryService
from feedsvc.store import EventStore
from tests.conftest import SEED_STREAM, reported


async def test_appends_expecting_any_version_are_never_refused_by_another_writer(
    seeded_store: EventStore,
) -> None:
    # two services on one log stand for two replicas: each keeps its own view of a
    # stream, which the other's commits make stale
    replicas = [StoryService(seeded_store), StoryService(seeded_store)]
    head = await seeded_store.head()

    async def writer(service: StoryService, name: str) -> int:
        refused = 0
        for n in range(25):
            try:
                await service.append(SEED_STREAM, [reported(f"{name}-{n}")], "any")
            except WrongExpectedVersion:
                refused += 1
        return refused

    refusals = await asyncio.gather(*(writer(replicas[i % 2], f"w{i}") for i in range(8)))
    assert refusals == [0] * 8
    assert await seeded_store.head() == head + 8 * 25


async def test_an_exact_expected_version_is_still_refused_when_stale(
    seeded_store: EventStore,
) -> None:
    first, second = StoryService(seeded_store), StoryService(seeded_store)
    version = await seeded_store.stream_version(SEED_STREAM)
    await first.append(SEED_STREAM, [reported("first")], version)
    with pytest.raises(WrongExpectedVersion) as refused:
        await second.append(SEED_STREAM, [reported("second")], version)
    assert refused.value.current == version + 1

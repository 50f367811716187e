"""What only a second instance can show: two stores on one PostgreSQL database (as two
replicas would be) write one log, gapless and in order, and wake each other's waiters.
Needs ``FEEDSVC_TEST_DATABASE_URL`` (see ``tests/conftest.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from feedsvc.errors import WrongExpectedVersion
from feedsvc.store.postgres import PostgresEventStore
from tests.conftest import opened, reported
from tests.store.contract import valid


@pytest.fixture
async def pair(pg_url: str) -> AsyncIterator[tuple[PostgresEventStore, PostgresEventStore]]:
    """Two open stores on the same empty database."""
    one, two = PostgresEventStore(pg_url), PostgresEventStore(pg_url)
    await one.open()
    await two.open()
    yield one, two
    await one.close()
    await two.close()


async def test_a_follower_sees_every_event_once_in_order_while_both_write(
    pair: tuple[PostgresEventStore, PostgresEventStore], pg_url: str
) -> None:
    writers, appends = 8, 30
    appended: list[str] = []

    async def writer(n: int) -> None:
        store = pair[n % 2]
        first = valid(opened(f"w{n}"))
        await store.append(f"w{n}", [first])
        appended.append(first.id)
        for i in range(appends):
            events = [valid(reported(f"d{i}-{k}")) for k in range(1 + i % 3)]
            await store.append(f"w{n}", events)
            appended.extend(e.id for e in events)

    follower = PostgresEventStore(pg_url, readers=1)
    await follower.open()
    seen: list[str] = []
    pages_with_a_gap: list[list[int]] = []
    done = asyncio.Event()

    async def follow() -> None:
        after = 0
        while True:
            page = await follower.read_all(after, 7)
            positions = [e.position for e in page]
            if positions != list(range(after + 1, after + 1 + len(page))):
                pages_with_a_gap.append(positions)
            seen.extend(e.id for e in page)
            if page:
                after = page[-1].position
            elif done.is_set() and after == await follower.head():
                return
            else:
                await follower.wait_for(after + 1, timeout=0.2)

    try:
        following = asyncio.create_task(follow())
        await asyncio.gather(*(writer(n) for n in range(writers)))
        done.set()
        await asyncio.wait_for(following, 60)
        events = await follower.read_all(0, 10_000)
    finally:
        await follower.close()
    assert pages_with_a_gap == []
    assert len(seen) == len(set(seen)) == len(appended)
    assert set(seen) == set(appended)
    assert [e.position for e in events] == list(range(1, len(appended) + 1))
    assert [e.id for e in events] == seen
    stamps = [e.recorded_at for e in events]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    for n in range(writers):
        versions = [e.version for e in events if e.stream == f"w{n}"]
        assert versions == list(range(1, len(versions) + 1))


async def test_wait_for_wakes_on_a_commit_by_the_other_instance(
    pair: tuple[PostgresEventStore, PostgresEventStore],
) -> None:
    one, two = pair
    loop = asyncio.get_running_loop()
    for position in (1, 2, 3):
        waiting = asyncio.create_task(one.wait_for(position, timeout=10))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        started = loop.time()
        await two.append(f"s{position}", [valid(opened(f"s{position}"))])
        assert await waiting == position
        assert loop.time() - started < 10  # woken by the commit, not by its timeout


async def test_expected_version_races_across_instances_have_one_winner(
    pair: tuple[PostgresEventStore, PostgresEventStore],
) -> None:
    one, two = pair
    await one.append("a", [valid(opened("a"))])
    for round_ in range(3):
        version = round_ + 1
        results = await asyncio.gather(
            *(
                pair[n % 2].append("a", [valid(reported(f"r{round_}-{n}"))], version)
                for n in range(16)
            ),
            return_exceptions=True,
        )
        wins = [r for r in results if not isinstance(r, BaseException)]
        losses = [r for r in results if isinstance(r, WrongExpectedVersion)]
        assert len(wins) == 1 and len(losses) == 15
        assert wins[0].version == version + 1
        assert all(loss.current in (version, version + 1) for loss in losses)
    assert await one.stream_version("a") == await two.stream_version("a") == 4
    assert [e.version for e in await two.read_stream("a")] == [1, 2, 3, 4]


async def test_appends_of_both_instances_replay_each_other(
    pair: tuple[PostgresEventStore, PostgresEventStore],
) -> None:
    one, two = pair
    events = [valid(opened("a")), valid(reported("d1"))]
    first = await one.append("a", events)
    again = await two.append("a", events)
    assert again.replayed and again.positions == first.positions
    assert again.recorded_at == first.recorded_at
    assert await one.head() == 2

"""Read-ahead of the log: a follower paging through it gets the pages it would get without,
and never a page that a later commit should have grown."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from feedsvc.web.keys import READ_AHEAD, STORE
from feedsvc.web.readahead import ReadAhead
from tests.conftest import reported
from tests.web.conftest import SEED_HEAD, SEED_STREAM, Service, new_id
from tests.web.test_api_follow import page


async def settled(read_ahead: ReadAhead) -> None:
    """Wait for every read made ahead to finish."""
    for _ in range(200):
        if all(task.done() for task in read_ahead._pages.values()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a read ahead did not finish")


async def append_developments(svc: Service, count: int, tag: str) -> list[str]:
    events = [{**reported(f"{tag}-{i}"), "id": new_id()} for i in range(count)]
    response = await svc.append(SEED_STREAM, events)
    assert response.status == 201, await response.text()
    return [e["id"] for e in events]


async def test_full_pages_come_from_the_read_ahead_byte_for_byte(svc: Service) -> None:
    await append_developments(svc, 30, "bulk")
    head = SEED_HEAD + 30
    read_ahead, store = svc.app[READ_AHEAD], svc.app[STORE]
    after, hits_before = 0, read_ahead.hits
    while after < head:
        await settled(read_ahead)
        response = await svc.client.get("/api/events", params={"after": after, "limit": 4})
        assert response.status == 200
        body = await response.read()
        direct = await store.read_all_json(after, 4, upto=head)
        assert body.startswith(b'{"events":[' + direct.json + b"],")
        after = orjson.loads(body)["next"]
    # every page after the first was read ahead, but the last (short) one
    assert read_ahead.hits - hits_before == head // 4 - 1 + (head % 4 == 0)


async def test_a_short_page_read_ahead_is_not_served_after_a_commit(svc: Service) -> None:
    read_ahead = svc.app[READ_AHEAD]
    limit = SEED_HEAD - 1
    first = await page(svc, after=0, limit=limit)
    assert first["next"] == limit
    await settled(read_ahead)  # the page after it is read: one event, short
    added = await append_developments(svc, limit, "late")
    second = await page(svc, after=limit, limit=limit)
    assert [e["position"] for e in second["events"]] == list(range(SEED_HEAD, SEED_HEAD + limit))
    assert [e["id"] for e in second["events"][1:]] == added[: limit - 1]
    assert second["head"] == SEED_HEAD + limit


async def test_filters_are_part_of_what_is_read_ahead(svc: Service) -> None:
    await append_developments(svc, 6, "mixed")
    read_ahead, store = svc.app[READ_AHEAD], svc.app[STORE]
    everything = await store.read_all(0, 100)
    developments = [e.position for e in everything if e.type == "development.reported"]
    assert len(developments) < len(everything)
    only: dict[str, Any] = {"type": "development.reported", "limit": 2}
    seen: list[int] = []
    after = 0
    while after < len(everything):
        await settled(read_ahead)
        body = await page(svc, after=after, **only)
        seen.extend(e["position"] for e in body["events"])
        after = body["next"]
    assert seen == developments

    first = await page(svc, after=0, **only)
    await settled(read_ahead)  # the filtered page after it is read ahead
    unfiltered = await page(svc, after=first["next"], limit=2)
    assert [e["position"] for e in unfiltered["events"]] == [first["next"] + 1, first["next"] + 2]


async def test_what_is_held_is_bounded(svc: Service) -> None:
    await append_developments(svc, 40, "bound")
    store = svc.app[STORE]
    read_ahead = ReadAhead(store, max_pages=2)
    head = await store.head()
    try:
        for after in range(0, 20, 2):  # ten followers, each at its own cursor
            await read_ahead.page(after * 2, 2, types=None, stream=None, head=head)
            assert len(read_ahead._pages) <= 2
        await settled(read_ahead)
        assert len(read_ahead._pages) == 2
        small = ReadAhead(store, max_bytes=1)  # a page above a quarter of it is never kept
        await small.page(0, 2, types=None, stream=None, head=head)
        assert not small._pages
    finally:
        await read_ahead.close()
    assert not read_ahead._pages

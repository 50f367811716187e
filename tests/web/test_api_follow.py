"""GET /api/events and /api/stories/{slug}/events: what a follower of the log sees."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.conftest import SEED, reported
from tests.web.conftest import SEED_HEAD, SEED_STREAM, Service, new_id

SEED_LINES = [orjson.loads(line) for line in SEED.read_bytes().splitlines()]
QUOTES = [e["position"] for e in SEED_LINES if e["type"] == "quote.attributed"]


async def page(svc: Service, **params: Any) -> dict[str, Any]:
    """One page of the log."""
    response = await svc.client.get("/api/events", params=params)
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = await response.json()
    return body


async def test_paging_from_zero_gives_every_event_once_in_the_export_form(svc: Service) -> None:
    seen: list[dict[str, Any]] = []
    after = 0
    while True:
        body = await page(svc, after=after, limit=5)
        assert body["head"] == SEED_HEAD
        if not body["events"]:
            break
        seen.extend(body["events"])
        after = body["next"]
    assert seen == SEED_LINES  # byte for byte the export lines, data and metadata verbatim
    assert after == SEED_HEAD
    assert (await page(svc))["events"] == SEED_LINES  # default limit 100


async def test_filters_apply_and_the_cursor_moves_past_what_they_leave_out(
    svc: Service,
) -> None:
    first = await page(svc, type="quote.attributed", limit=3)
    assert [e["position"] for e in first["events"]] == QUOTES[:3]
    assert first["next"] == QUOTES[2]
    rest = await page(svc, type="quote.attributed", after=first["next"], limit=100)
    assert [e["position"] for e in rest["events"]] == QUOTES[3:]
    assert rest["next"] == SEED_HEAD  # a short page: nothing else matches up to the head

    response = await svc.client.get(
        "/api/events?type=story.opened&type=followup.expected&limit=100"
    )
    types = {e["type"] for e in (await response.json())["events"]}
    assert types == {"story.opened", "followup.expected"}

    nothing = await page(svc, stream="some-other-story")
    assert nothing == {"events": [], "next": SEED_HEAD, "head": SEED_HEAD}
    assert len((await page(svc, stream=SEED_STREAM))["events"]) == SEED_HEAD


async def test_bad_query_parameters_are_named(svc: Service) -> None:
    cases = {
        "after=-1": "after",
        "limit=0": "limit",
        "limit=100000": "limit",
        "limit=ten": "limit",
        "wait=soon": "wait",
        "type=story.exploded": "type",
        "stream=Not_A_Slug": "stream",
        "limt=5": "limt",
    }
    for query, name in cases.items():
        response = await svc.client.get(f"/api/events?{query}")
        assert response.status == 400, query
        body = await response.json(content_type="application/problem+json")
        assert body["errors"][0]["parameter"] == name, query


async def test_a_long_poll_answers_as_soon_as_an_event_arrives(svc: Service) -> None:
    poll = asyncio.ensure_future(page(svc, after=SEED_HEAD, wait=30))
    appended = await svc.append(SEED_STREAM, reported("breaking"))
    assert appended.status == 201
    body = await poll
    assert [e["data"]["development_id"] for e in body["events"]] == ["breaking"]
    assert body["next"] == SEED_HEAD + 1


async def test_a_long_poll_with_nothing_new_answers_an_empty_page(svc: Service) -> None:
    body = await page(svc, after=SEED_HEAD, wait=0.05)
    assert body == {"events": [], "next": SEED_HEAD, "head": SEED_HEAD}


async def test_a_filtered_long_poll_skips_events_that_do_not_match(svc: Service) -> None:
    poll = asyncio.ensure_future(page(svc, after=SEED_HEAD, wait=30, type="story.closed"))
    assert (await svc.append(SEED_STREAM, reported("not-a-closing"))).status == 201
    closing = {"type": "story.closed", "occurred_at": "2017-10-13", "data": {}}
    assert (await svc.append(SEED_STREAM, closing)).status == 201
    body = await poll
    assert [e["type"] for e in body["events"]] == ["story.closed"]
    assert body["next"] == SEED_HEAD + 2


async def test_one_story_stream_with_its_version_as_etag(svc: Service) -> None:
    url = f"/api/stories/{SEED_STREAM}/events"
    response = await svc.client.get(url)
    assert response.status == 200
    assert response.headers["ETag"] == f'"{SEED_HEAD}"'
    body = await response.json()
    assert body["version"] == SEED_HEAD
    assert body["events"] == SEED_LINES
    assert body["next"] is None

    response = await svc.client.get(url, params={"from_version": 20, "limit": 2})
    body = await response.json()
    assert [e["version"] for e in body["events"]] == [20, 21]
    assert body["next"] == 22

    response = await svc.client.get(url, headers={"If-None-Match": f'"{SEED_HEAD}"'})
    assert response.status == 304
    assert (await svc.append(SEED_STREAM, reported("changes-the-etag"))).status == 201
    response = await svc.client.get(url, headers={"If-None-Match": f'"{SEED_HEAD}"'})
    assert response.status == 200
    assert response.headers["ETag"] == f'"{SEED_HEAD + 1}"'

    response = await svc.client.get("/api/stories/no-such-story/events")
    assert response.status == 404
    assert response.content_type == "application/problem+json"


async def test_a_follower_paging_while_eight_writers_append_misses_nothing(
    svc: Service,
) -> None:
    acknowledged: list[str] = []
    writers_done = asyncio.Event()

    async def writer(w: int) -> None:
        for i in range(12):
            events = [{**reported(f"w{w}-{i}-{k}"), "id": new_id()} for k in range(1 + (i + w) % 3)]
            response = await svc.append(SEED_STREAM, events)
            assert response.status == 201, await response.text()
            acknowledged.extend(e["id"] for e in events)

    async def writers() -> None:
        await asyncio.gather(*(writer(w) for w in range(8)))
        writers_done.set()

    async def follower() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        after = 0
        while True:
            done = writers_done.is_set()
            body = await page(svc, after=after, limit=7, wait=0 if done else 0.5)
            seen.extend(body["events"])
            after = body["next"]
            if done and after >= body["head"]:
                return seen

    _, seen = await asyncio.gather(writers(), follower())
    positions = [e["position"] for e in seen]
    assert positions == list(range(1, len(seen) + 1))  # in order, no gap, no duplicate
    assert len(seen) == SEED_HEAD + len(acknowledged)
    assert {e["id"] for e in seen[SEED_HEAD:]} == set(acknowledged)

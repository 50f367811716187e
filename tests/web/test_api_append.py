"""POST /api/stories/{slug}/events: what a newsroom's service sees when it appends."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import orjson
from yarl import URL

from feedsvc.web.keys import TOKENS
from feedsvc.web.models import AppendResult
from tests.conftest import SEED, opened, reported
from tests.web.conftest import SEED_HEAD, SEED_STREAM, Service, Start, new_id

PROBLEM = "application/problem+json"


async def problem_of(response: Any, status: int) -> dict[str, Any]:
    """The problem body of a refusal, after checking its status and media type."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == PROBLEM, text
    body: dict[str, Any] = await response.json(content_type=PROBLEM)
    assert body["status"] == status
    assert body["detail"]
    return body


def pointers(body: dict[str, Any]) -> list[str]:
    """The JSON pointers a 400 names."""
    return [e["pointer"] for e in body["errors"]]


async def test_one_event_is_appended_with_its_position(svc: Service) -> None:
    response = await svc.append(SEED_STREAM, reported("governor-responds"))
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["stream"] == SEED_STREAM
    assert body["version"] == SEED_HEAD + 1
    assert [e["position"] for e in body["events"]] == [SEED_HEAD + 1]
    assert body["replayed"] is False
    assert response.headers["ETag"] == f'"{SEED_HEAD + 1}"'
    # Location names what was created: the stream from the new event on
    location = URL(response.headers["Location"])
    created = await svc.client.get(location.path_qs)
    assert [e["id"] for e in (await created.json())["events"]] == [body["events"][0]["id"]]
    [stored] = await svc.stream_events(SEED_STREAM, SEED_HEAD + 1)
    assert stored["id"] == body["events"][0]["id"]
    assert stored["data"]["development_id"] == "governor-responds"
    assert stored["recorded_at"] == body["recorded_at"]
    assert stored["metadata"]["actor"] == "admin"  # who appended it: the token's name


async def test_an_array_is_appended_atomically(svc: Service) -> None:
    quote = {
        "type": "quote.attributed",
        "occurred_at": "2017-10-12",
        "data": {
            "quote_id": "malloy-welcomes",
            "development_id": "malloy-reacts",
            "speaker": "Dannel Malloy",
            "text": "Good news.",
        },
    }
    response = await svc.append(SEED_STREAM, [reported("malloy-reacts"), quote])
    assert response.status == 201, await response.text()
    body = await response.json()
    assert [e["position"] for e in body["events"]] == [SEED_HEAD + 1, SEED_HEAD + 2]

    bad = reported("never-written")
    bad["data"]["headline"] = ""
    response = await svc.append(SEED_STREAM, [reported("also-never-written"), bad])
    problem = await problem_of(response, 400)
    assert pointers(problem) == ["/1/data/headline"]
    assert await svc.head() == SEED_HEAD + 2  # the good half was not written either


async def test_every_bad_field_is_named_by_its_json_pointer(svc: Service) -> None:
    first = reported("first")
    first["data"]["kind"] = "gossip"
    first["data"]["sources"] = [{"url": "not a url", "title": "x"}]
    second = reported("second", occurred="2017-13-01")
    second["data"]["surprise"] = True
    response = await svc.append(SEED_STREAM, [first, second])
    problem = await problem_of(response, 400)
    assert set(pointers(problem)) >= {
        "/0/data/kind",
        "/0/data/sources/0/url",
        "/1/occurred_at",
        "/1/data/surprise",
    }
    assert all(e["detail"] for e in problem["errors"])

    # in the {expected_version, events} form the pointers go through "events"
    response = await svc.append(SEED_STREAM, {"expected_version": "any", "events": [second]})
    problem = await problem_of(response, 400)
    assert "/events/0/occurred_at" in pointers(problem)
    # a single event object: pointers start at the object
    response = await svc.append(SEED_STREAM, second)
    assert "/occurred_at" in pointers(await problem_of(response, 400))
    assert await svc.head() == SEED_HEAD


async def test_server_side_facts_are_refused_by_name(svc: Service) -> None:
    event = {
        **reported("cheater"),
        "recorded_at": "2017-10-12T16:00:00.000000Z",
        "position": 1,
        "version": 2,
        "stream": "elsewhere",
    }
    problem = await problem_of(await svc.append(SEED_STREAM, event), 400)
    assert set(pointers(problem)) == {"/recorded_at", "/position", "/version", "/stream"}
    assert all("set by the server" in e["detail"] for e in problem["errors"])
    assert await svc.head() == SEED_HEAD


async def test_a_client_id_must_be_a_uuid_and_the_future_is_refused(svc: Service) -> None:
    event = {**reported("bad-id"), "id": "not-a-uuid"}
    assert pointers(await problem_of(await svc.append(SEED_STREAM, event), 400)) == ["/id"]
    future = reported("from-the-future", occurred="2999-01-01")
    problem = await problem_of(await svc.append(SEED_STREAM, future), 400)
    assert pointers(problem) == ["/occurred_at"]
    assert "future" in problem["errors"][0]["detail"]


async def test_malformed_json_and_wrong_shapes_are_400(svc: Service) -> None:
    response = await svc.client.post(
        f"/api/stories/{SEED_STREAM}/events",
        data=b'{"type": "development.reported",',
        headers={**svc.auth(), "Content-Type": "application/json"},
    )
    problem = await problem_of(response, 400)
    assert "not valid JSON" in problem["detail"]
    problem = await problem_of(await svc.append(SEED_STREAM, 42), 400)
    assert "event object" in problem["detail"]
    problem = await problem_of(await svc.append(SEED_STREAM, []), 400)
    assert "no events" in problem["detail"]
    body = {"expected_version": -1, "events": [reported("x")], "extra": 1}
    problem = await problem_of(await svc.append(SEED_STREAM, body), 400)
    assert set(pointers(problem)) == {"/expected_version", "/extra"}
    assert await svc.head() == SEED_HEAD


async def test_bad_text_in_a_field_is_named_by_its_pointer(svc: Service) -> None:
    async def post(raw: bytes) -> dict[str, Any]:
        response = await svc.client.post(
            f"/api/stories/{SEED_STREAM}/events",
            data=raw,
            headers={**svc.auth(), "Content-Type": "application/json"},
        )
        return await problem_of(response, 400)

    event = orjson.dumps(reported("bad-text"))
    good_body = b'"body":"Body of bad-text.'
    assert good_body in event
    # a byte that is not UTF-8 inside the body
    problem = await post(event.replace(good_body, good_body + b"\xff"))
    assert pointers(problem) == ["/data/body"]
    assert "invalid UTF-8" in problem["errors"][0]["detail"]
    assert "0xff" in problem["errors"][0]["detail"]
    # a lone surrogate escape in the body
    problem = await post(event.replace(good_body, good_body + b"\\ud800"))
    assert pointers(problem) == ["/data/body"]
    assert "lone surrogate" in problem["errors"][0]["detail"]
    # in the second event of an array
    array = (
        b"["
        + orjson.dumps(reported("fine"))
        + b","
        + event.replace(good_body, good_body + b"\\udc00")
        + b"]"
    )
    assert pointers(await post(array)) == ["/1/data/body"]
    # invalid UTF-8 outside any string is still named as such
    problem = await post(b"\xfe" + event)
    assert "invalid UTF-8" in problem["detail"]
    assert await svc.head() == SEED_HEAD


async def test_only_json_is_accepted(svc: Service) -> None:
    response = await svc.client.post(
        f"/api/stories/{SEED_STREAM}/events",
        data=b"type=development.reported",
        headers={**svc.auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    problem = await problem_of(response, 415)
    assert "application/json" in problem["detail"]
    assert response.headers["Accept-Post"] == "application/json"


async def test_large_bodies_and_too_many_events_are_413(start: Start) -> None:
    svc = await start(max_body_bytes=4096, max_events_per_request=2)
    big = reported("big", body="x" * 5000)
    problem = await problem_of(await svc.append(SEED_STREAM, big), 413)
    assert "4096" in problem["detail"]
    three = [reported(f"small-{i}") for i in range(3)]
    problem = await problem_of(await svc.append(SEED_STREAM, three), 413)
    assert "at most 2" in problem["detail"]
    assert await svc.head() == SEED_HEAD


async def test_appending_needs_a_valid_token(svc: Service) -> None:
    url = f"/api/stories/{SEED_STREAM}/events"
    response = await svc.client.post(url, json=reported("anonymous"))
    await problem_of(response, 401)
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="feedsvc"')
    response = await svc.append(SEED_STREAM, reported("guess"), token="fsv_guessed")
    await problem_of(response, 401)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    response = await svc.client.post(
        url, json=reported("basic"), headers={"Authorization": "Basic YWRtaW46YWRtaW4="}
    )
    await problem_of(response, 401)

    token = await svc.token("short-lived", "append:*")
    assert (await svc.append(SEED_STREAM, reported("while-valid"), token=token)).status == 201
    await svc.app[TOKENS].revoke("short-lived")
    await problem_of(await svc.append(SEED_STREAM, reported("revoked"), token=token), 401)
    assert await svc.head() == SEED_HEAD + 1


async def test_scopes_limit_stories_and_opening(svc: Service) -> None:
    elsewhere = await svc.token("other-desk", "append:some-other-story")
    problem = await problem_of(
        await svc.append(SEED_STREAM, reported("nope"), token=elsewhere), 403
    )
    assert "other-desk" in problem["detail"]

    desk = await svc.token("ct-desk", f"append:{SEED_STREAM},new-story")
    assert (await svc.append(SEED_STREAM, reported("yes"), token=desk)).status == 201
    problem = await problem_of(await svc.append("new-story", opened("new-story"), token=desk), 403)
    assert "open" in problem["detail"]

    wire = await svc.token("wire", "append:*")
    assert (await svc.append("new-story", opened("new-story"), token=wire)).status == 201
    assert (await svc.append("new-story", reported("first"), token=desk)).status == 201


async def test_unknown_stories_are_404_and_open_ones_cannot_be_opened_again(
    svc: Service,
) -> None:
    problem = await problem_of(await svc.append("no-such-story", reported("orphan")), 404)
    assert "story.opened" in problem["detail"]
    problem = await problem_of(await svc.append("Not A Slug", reported("orphan")), 404)

    problem = await problem_of(await svc.append(SEED_STREAM, opened(SEED_STREAM)), 409)
    assert problem["current_version"] == SEED_HEAD
    assert "already open" in problem["detail"]
    assert await svc.head() == SEED_HEAD


async def test_expected_version_in_body_or_if_match(svc: Service) -> None:
    body = {"expected_version": 5, "events": [reported("stale")]}
    response = await svc.append(SEED_STREAM, body)
    problem = await problem_of(response, 409)
    assert problem["current_version"] == SEED_HEAD
    assert str(SEED_HEAD) in problem["detail"]
    assert response.headers["ETag"] == f'"{SEED_HEAD}"'

    etag = f'"{SEED_HEAD}"'
    response = await svc.append(SEED_STREAM, reported("fresh"), headers={"If-Match": etag})
    assert response.status == 201
    # a stale If-Match is a failed precondition (RFC 9110), not a conflict in the body
    response = await svc.append(SEED_STREAM, reported("again"), headers={"If-Match": etag})
    problem = await problem_of(response, 412)
    assert problem["current_version"] == SEED_HEAD + 1
    assert response.headers["ETag"] == f'"{SEED_HEAD + 1}"'
    assert await svc.head() == SEED_HEAD + 1  # nothing written

    response = await svc.append(SEED_STREAM, reported("x"), headers={"If-Match": "yesterday"})
    assert (await problem_of(response, 400))["errors"][0]["header"] == "If-Match"
    body = {"expected_version": SEED_HEAD + 1, "events": [reported("y")]}
    response = await svc.append(SEED_STREAM, body, headers={"If-Match": '"3"'})
    await problem_of(response, 400)

    body = {"expected_version": "no_stream", "events": [opened("brand-new")]}
    assert (await svc.append("brand-new", body)).status == 201
    body = {"expected_version": 1, "events": [reported("first-development")]}
    assert (await svc.append("brand-new", body)).status == 201
    assert await svc.head() == SEED_HEAD + 3


async def test_a_replay_answers_the_original_result(svc: Service) -> None:
    events = [
        {**reported("replayed-1"), "id": new_id()},
        {**reported("replayed-2"), "id": new_id()},
    ]
    first = await svc.append(SEED_STREAM, events)
    assert first.status == 201
    original = await first.json()
    again = await svc.append(SEED_STREAM, events)
    assert again.status == 200
    replay = await again.json()
    assert replay["events"] == original["events"]
    assert replay["version"] == original["version"]
    assert replay["recorded_at"] == original["recorded_at"]
    assert replay["replayed"] is True
    # even an expected version that is stale by now answers the original result
    body = {"expected_version": 0, "events": events}
    assert (await svc.append(SEED_STREAM, body)).status == 200
    assert await svc.head() == SEED_HEAD + 2

    reused = {**reported("other-content"), "id": events[0]["id"]}
    problem = await problem_of(await svc.append(SEED_STREAM, reused), 409)
    assert problem["event_id"] == events[0]["id"]
    assert await svc.head() == SEED_HEAD + 2


async def test_a_replay_the_story_rules_would_accept_again_is_still_a_replay(
    svc: Service,
) -> None:
    # a retitle breaks no rule when repeated: the store recognises the retry by its id
    retitle = {
        "type": "story.retitled",
        "occurred_at": "2017-10-13",
        "data": {"title": "Connecticut and the sanctuary question"},
        "id": new_id(),
    }
    assert (await svc.append(SEED_STREAM, retitle)).status == 201
    again = await svc.append(SEED_STREAM, retitle)
    assert again.status == 200 and (await again.json())["replayed"] is True
    assert await svc.head() == SEED_HEAD + 1


async def test_racing_writers_on_one_expected_version_exactly_one_wins(svc: Service) -> None:
    async def write(i: int) -> tuple[int, dict[str, Any]]:
        body = {"expected_version": SEED_HEAD, "events": [reported(f"racer-{i}")]}
        response = await svc.append(SEED_STREAM, body)
        return response.status, await response.json(content_type=None)

    results = await asyncio.gather(*(write(i) for i in range(12)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 11
    assert all(body["current_version"] == SEED_HEAD + 1 for s, body in results if s == 409)
    assert await svc.head() == SEED_HEAD + 1


async def test_racing_openers_of_one_story_exactly_one_wins(svc: Service) -> None:
    responses = await asyncio.gather(
        *(svc.append("contested", opened("contested")) for _ in range(6))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [201] + [409] * 5
    assert await svc.head() == SEED_HEAD + 1


async def test_a_token_over_its_rate_is_told_when_to_retry(start: Start) -> None:
    svc = await start(token_rate_per_s=0.01, token_burst=2)
    assert (await svc.append(SEED_STREAM, reported("one"))).status == 201
    assert (await svc.append(SEED_STREAM, reported("two"))).status == 201
    response = await svc.append(SEED_STREAM, reported("three"))
    await problem_of(response, 429)
    assert int(response.headers["Retry-After"]) >= 1
    other = await svc.token("other", "append:*")  # buckets are per token
    assert (await svc.append(SEED_STREAM, reported("four"), token=other)).status == 201
    assert await svc.head() == SEED_HEAD + 3


async def test_a_locked_database_is_503_with_retry_after_and_writes_nothing(
    start: Start,
) -> None:
    svc = await start(busy_timeout_ms=50)
    blocker = sqlite3.connect(svc.settings.database_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        response = await svc.append(SEED_STREAM, reported("blocked"))
        problem = await problem_of(response, 503)
        assert "locked" in problem["detail"]
        assert int(response.headers["Retry-After"]) >= 1
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()
    assert await svc.head() == SEED_HEAD
    response = await svc.append(SEED_STREAM, reported("blocked"))
    assert response.status == 201
    assert (await response.json())["version"] == SEED_HEAD + 1


async def test_the_answer_warns_of_text_that_will_not_be_shown_as_sent(svc: Service) -> None:
    marked = reported(
        "marked-up",
        headline="Court <b>rules</b> on Connecticut",
        body="<p>The ruling.</p><script>alert(1)</script><iframe src='x'></iframe>",
    )
    body = [{**reported("plain-one"), "id": new_id()}, {**marked, "id": new_id()}]
    response = await svc.append(SEED_STREAM, body)
    assert response.status == 201, await response.text()
    answer = await response.json()
    warnings = {w["pointer"]: w["detail"] for w in answer["warnings"]}
    assert set(warnings) == {"/1/data/headline", "/1/data/body"}
    assert "Court rules on Connecticut" in warnings["/1/data/headline"]
    assert "script" in warnings["/1/data/body"]
    # a retry answers the original result, warnings included
    retried = await svc.append(SEED_STREAM, body)
    assert retried.status == 200
    assert (await retried.json())["warnings"] == answer["warnings"]
    plain = await svc.append(SEED_STREAM, {"events": [reported("plain-two")]})
    assert (await plain.json())["warnings"] == []


async def test_the_answer_is_the_documented_append_result(svc: Service) -> None:
    marked = {**reported("marked-answer", headline='<i>É</i> "q" \u2028'), "id": new_id()}
    response = await svc.append(SEED_STREAM, [marked, {**reported("plain-answer"), "id": new_id()}])
    assert response.status == 201, await response.text()
    body = await response.read()
    answer = AppendResult.model_validate_json(body)
    assert answer.model_dump_json().encode() == body
    assert [w.pointer for w in answer.warnings] == ["/0/data/headline"]
    replayed = await svc.append(SEED_STREAM, [marked])
    assert replayed.status == 200
    again = await replayed.read()
    assert AppendResult.model_validate_json(again).model_dump_json().encode() == again


async def test_the_seed_story_appends_without_warnings(start: Start) -> None:
    svc = await start(seed=None)
    for line in SEED.read_bytes().splitlines():
        event = orjson.loads(line)
        submitted = {k: event[k] for k in ("id", "type", "occurred_at", "data", "metadata")}
        response = await svc.append(event["stream"], submitted)
        assert response.status == 201, await response.text()
        assert (await response.json())["warnings"] == []

"""GET /api/events/live: the log as Server-Sent Events, resumable by Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import ClientResponse

from tests.conftest import SEED, reported
from tests.web.conftest import SEED_HEAD, SEED_STREAM, Service, Start

SEED_LINES = [orjson.loads(line) for line in SEED.read_bytes().splitlines()]
PATIENCE = 30  # seconds before a stuck stream fails the test instead of hanging it


@dataclass
class Message:
    """One SSE message as a browser's EventSource would dispatch it (or a comment)."""

    id: str | None = None
    event: str | None = None
    data: str = ""
    comment: str | None = None

    @property
    def json(self) -> dict[str, Any]:
        """The data, parsed."""
        value: dict[str, Any] = orjson.loads(self.data)
        return value


async def next_message(response: ClientResponse) -> Message:
    """Read the next message or comment off the stream."""
    message = Message()
    data: list[str] = []
    async with asyncio.timeout(PATIENCE):
        while True:
            raw = await response.content.readline()
            assert raw, "the server ended the stream"
            line = raw.decode().rstrip("\r\n")
            if line.startswith(":"):
                return Message(comment=line[1:].strip())
            if not line:
                if data or message.id is not None:
                    message.data = "\n".join(data)
                    return message
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "id":
                message.id = value
            elif field == "event":
                message.event = value
            elif field == "data":
                data.append(value)


async def events(response: ClientResponse, count: int) -> list[Message]:
    """The next ``count`` events, skipping heartbeats."""
    out: list[Message] = []
    while len(out) < count:
        message = await next_message(response)
        if message.comment is None:
            out.append(message)
    return out


async def test_live_events_carry_position_type_and_export_json(svc: Service) -> None:
    response = await svc.client.get("/api/events/live", params={"after": SEED_HEAD - 3})
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    backlog = await events(response, 3)
    assert [m.id for m in backlog] == [str(p) for p in range(SEED_HEAD - 2, SEED_HEAD + 1)]
    assert [m.event for m in backlog] == [e["type"] for e in SEED_LINES[-3:]]
    assert [m.json for m in backlog] == SEED_LINES[-3:]

    appended = await svc.append(SEED_STREAM, reported("live-development"))
    assert appended.status == 201
    [live] = await events(response, 1)
    assert live.id == str(SEED_HEAD + 1)
    assert live.event == "development.reported"
    assert live.json["data"]["development_id"] == "live-development"
    response.close()


async def test_without_a_position_the_stream_starts_at_the_head(svc: Service) -> None:
    response = await svc.client.get("/api/events/live")
    assert (await svc.append(SEED_STREAM, reported("first-new-one"))).status == 201
    [first] = await events(response, 1)
    assert first.id == str(SEED_HEAD + 1)
    response.close()


async def test_resuming_with_last_event_id_has_no_gap_and_no_duplicate(svc: Service) -> None:
    response = await svc.client.get("/api/events/live", params={"after": 0})
    received = await events(response, 5)
    response.close()  # the connection drops

    for name in ("while-away-1", "while-away-2", "while-away-3"):
        assert (await svc.append(SEED_STREAM, reported(name))).status == 201

    # EventSource reconnects to the same URL and sends the last id it saw
    response = await svc.client.get(
        "/api/events/live", params={"after": 0}, headers={"Last-Event-ID": received[-1].id or ""}
    )
    received += await events(response, SEED_HEAD + 3 - 5)
    assert (await svc.append(SEED_STREAM, reported("after-return"))).status == 201
    received += await events(response, 1)
    response.close()
    assert [int(m.id or 0) for m in received] == list(range(1, SEED_HEAD + 5))


async def test_filters_apply_to_the_live_stream(svc: Service) -> None:
    response = await svc.client.get(
        "/api/events/live", params={"after": 0, "type": "followup.expected"}
    )
    expected = [e for e in SEED_LINES if e["type"] == "followup.expected"]
    received = await events(response, len(expected))
    assert [m.json for m in received] == expected
    assert (await svc.append(SEED_STREAM, reported("filtered-out"))).status == 201
    followup = {
        "type": "followup.expected",
        "occurred_at": "2017-10-13",
        "data": {"followup_id": "doj-decision-cook-county-2", "description": "Pending."},
    }
    assert (await svc.append(SEED_STREAM, followup)).status == 201
    [live] = await events(response, 1)
    assert live.id == str(SEED_HEAD + 2)
    response.close()


async def test_heartbeats_keep_an_idle_stream_alive(start: Start) -> None:
    svc = await start(sse_heartbeat_s=0.05)
    response = await svc.client.get("/api/events/live")
    message = await next_message(response)
    assert message.comment is not None  # an SSE comment: ignored by EventSource
    response.close()


async def test_a_bad_last_event_id_is_400(svc: Service) -> None:
    response = await svc.client.get("/api/events/live", headers={"Last-Event-ID": "yesterday"})
    assert response.status == 400
    body = await response.json(content_type="application/problem+json")
    assert body["errors"][0]["header"] == "Last-Event-ID"


class _LiveStreamEnded(logging.Handler):
    """Sets an event when the request log records the end of a live stream."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.ended = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "route", None) == "/api/events/live":
            self.ended.set()


async def test_a_client_that_stops_reading_is_dropped_not_buffered(start: Start) -> None:
    svc = await start(sse_heartbeat_s=0.1)  # a stalled write is given up after 1 s
    watcher = _LiveStreamEnded()
    access = logging.getLogger("feedsvc.access")
    level = access.level
    access.addHandler(watcher)
    access.setLevel(logging.INFO)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.setblocking(False)
        server = svc.client.server
        await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET /api/events/live?after=0 HTTP/1.1\r\nHost: feedsvc\r\n\r\n")
        await writer.drain()
        # a backlog of megabytes that this client never reads
        for batch in range(2):
            events = [reported(f"bulky-{batch}-{i}", body="x" * 100_000) for i in range(9)]
            assert (await svc.append(SEED_STREAM, events)).status == 201
        async with asyncio.timeout(PATIENCE):
            await watcher.ended.wait()
        # what reached the client before the drop ends in EOF, not in a wait for more
        async with asyncio.timeout(PATIENCE):
            with contextlib.suppress(ConnectionResetError):
                while await reader.read(1 << 16):
                    pass
        writer.close()
    finally:
        access.removeHandler(watcher)
        access.setLevel(level)
        sock.close()

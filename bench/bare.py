"""The baseline servers of ``bench.api`` and ``bench.feeds``: bare aiohttp apps.

Not a benchmark (it has no ``run``, so ``python -m bench`` passes it by): the two
benchmarks start it as a process of its own, next to the real service, and it imports
nothing from the repository. Two apps, one route each:

``python bench/bare.py api PORT`` (``bench.api``): ``POST /api/stories/{slug}/events``

* reads the body and parses it with ``orjson.loads``, the parser the service uses
  (:func:`feedsvc.web.api._read_json_body`);
* answers ``201 Created`` with a JSON body of the service's shape (stream, version, one
  ``{id, position}`` per event, recorded_at, replayed), so both servers send about the
  same bytes back; a body that is not JSON gets a 400.

No authentication, validation or database: the difference between the two servers is
what the service does per append beyond HTTP and JSON parsing.

``python bench/bare.py feed SPEC.json`` (``bench.feeds``): a GET route answering the
service's bytes from memory. The spec (JSON, written by ``bench.feeds`` from what the
service answered) names the port, the path, the ETag, and for each answer its headers
and, for the two bodies, the file (next to the spec) holding the bytes:

* ``If-None-Match`` equal to the ETag: 304 with the service's 304 headers;
* ``Accept-Encoding`` containing ``gzip``: the service's gzip bytes and headers;
* anything else: the service's identity body and headers.

Both: no middleware, access log off, the default event loop (``asyncio.run``), served
on 127.0.0.1 and started and stopped the way :func:`feedsvc.web.app.serve` does it, so
the difference between a bare app and the service is what the service does per request.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

JSON_TYPE = "application/json"
MAX_BODY_BYTES = 1_048_576
"""The service's default ``max_body_bytes``: the same request size limit (api app)."""
RECORDED_AT = "2017-10-12T16:00:00.000000Z"
USAGE = "usage: python bench/bare.py api PORT | python bench/bare.py feed SPEC.json"


def api_app() -> web.Application:
    """One POST route that parses the body and answers 201."""
    position = 0

    async def append(request: web.Request) -> web.Response:
        nonlocal position
        slug = request.match_info["slug"]
        try:
            body: Any = orjson.loads(await request.read())
        except orjson.JSONDecodeError as e:
            return web.Response(status=400, text=f"not JSON: {e.msg}")
        events = body if isinstance(body, list) else [body]
        ids = [e.get("id") if isinstance(e, dict) else None for e in events]
        first = position + 1
        position += len(ids)
        answer = {
            "stream": slug,
            "version": len(ids),
            "events": [{"id": i, "position": first + n} for n, i in enumerate(ids)],
            "recorded_at": RECORDED_AT,
            "replayed": False,
        }
        return web.Response(status=201, body=orjson.dumps(answer), content_type=JSON_TYPE)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/api/stories/{slug}/events", append)
    return app


def feed_app(spec: dict[str, Any], folder: Path) -> web.Application:
    """One GET route at the spec's path, answering from bytes held in memory."""
    etag: str = spec["etag"]
    body = (folder / spec["identity"]["body"]).read_bytes()
    gzipped = (folder / spec["gzip"]["body"]).read_bytes()
    body_headers: dict[str, str] = dict(spec["identity"]["headers"])
    gzip_headers: dict[str, str] = dict(spec["gzip"]["headers"])
    not_modified_headers: dict[str, str] = dict(spec["not_modified"]["headers"])

    async def feed(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=not_modified_headers)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(body=gzipped, headers=gzip_headers)
        return web.Response(body=body, headers=body_headers)

    app = web.Application()
    app.router.add_get(spec["path"], feed)
    return app


async def serve(make_app: Callable[[], web.Application], port: int, path: str) -> None:
    """Serve the app ``make_app`` builds on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    runner = web.AppRunner(make_app(), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"bare: serving http://127.0.0.1:{port}{path}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """``python bench/bare.py api PORT`` or ``python bench/bare.py feed SPEC.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "api" and args[1].isdigit():
        asyncio.run(serve(api_app, int(args[1]), "/api/stories/<slug>/events"))
        return 0
    if len(args) == 2 and args[0] == "feed":
        spec_path = Path(args[1])
        spec: dict[str, Any] = json.loads(spec_path.read_text(encoding="utf-8"))
        folder = spec_path.parent
        asyncio.run(serve(lambda: feed_app(spec, folder), int(spec["port"]), spec["path"]))
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

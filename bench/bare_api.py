"""The baseline server of ``bench.api``: a bare aiohttp app that parses and answers 201.

Not a benchmark (it has no ``run``, so ``python -m bench`` passes it by): ``bench.api``
starts it as its own process, next to the real service, with ``python
bench/bare_api.py PORT`` (it imports nothing from the repository). One route,
``POST /api/stories/{slug}/events``:

* read the body and parse it with ``orjson.loads``, the parser the service uses
  (:func:`feedsvc.web.api._read_json_body`);
* answer ``201 Created`` with a JSON body of the service's shape (stream, version, one
  ``{id, position}`` per event, recorded_at, replayed), so both servers send about the
  same bytes back; a body that is not JSON gets a 400.

No authentication, validation, database or middleware, access log off, the default
event loop (``asyncio.run``), started and stopped the way
:func:`feedsvc.web.app.serve` does it: the difference between the two servers is what
the service does per append beyond HTTP and JSON parsing.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

JSON_TYPE = "application/json"
MAX_BODY_BYTES = 1_048_576
"""The service's default ``max_body_bytes``: the same request size limit."""
RECORDED_AT = "2017-10-12T16:00:00.000000Z"


def make_app() -> web.Application:
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


async def serve(port: int) -> None:
    """Serve on 127.0.0.1 until SIGTERM or SIGINT."""
    runner = web.AppRunner(make_app(), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"bare_api: serving http://127.0.0.1:{port}/api/stories/<slug>/events", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """``python bench/bare_api.py PORT``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python bench/bare_api.py PORT", file=sys.stderr)
        return 2
    asyncio.run(serve(int(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

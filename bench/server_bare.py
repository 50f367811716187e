"""The baseline server of ``bench.feeds``: a bare aiohttp app answering the same bytes.

Not a benchmark (``python -m bench`` skips it): ``bench.feeds`` starts it as its own
process, next to the real service, with ``python bench/server_bare.py SPEC.json``. The
spec (JSON, written by ``bench.feeds`` from what the service answered) names the port,
the path, the ETag, and for each answer its headers and, for the two bodies, the file
holding the bytes:

* ``If-None-Match`` equal to the ETag: 304 with the service's 304 headers;
* ``Accept-Encoding`` containing ``gzip``: the service's gzip bytes and headers;
* anything else: the service's identity body and headers.

One route, no middleware, access log off, the default event loop (``asyncio.run``),
started and stopped the way :func:`feedsvc.web.app.serve` does it, so the difference
between the two servers is what the service does per request.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web


def make_app(spec: dict[str, Any], folder: Path) -> web.Application:
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


async def serve(spec: dict[str, Any], folder: Path) -> None:
    """Serve on 127.0.0.1 until SIGTERM or SIGINT."""
    app = make_app(spec, folder)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", int(spec["port"]))
    await site.start()
    print(f"bare: serving http://127.0.0.1:{spec['port']}{spec['path']}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """``python bench/server_bare.py SPEC.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: server_bare.py SPEC.json", file=sys.stderr)
        return 2
    spec_path = Path(args[0])
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    asyncio.run(serve(spec, spec_path.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Read-ahead for followers of the log: the next full page, read before it is asked for.

A follower catching up on the log asks for a page, decodes it, then asks for the page
after it. Without read-ahead the server sits idle while the follower decodes, and the
follower waits while the server reads. After answering a full page, the server starts
reading the page that follows it, so the two overlap.

Only a full page (``limit`` events) read ahead is ever served: positions are assigned in
commit order and everything up to the head is committed, so the events after a cursor
that fill a page, all at or below the head when they were read, can never change. A short
page may grow with the next commit; it is dropped and the request reads afresh.

What is held is bounded: at most :attr:`ReadAhead.max_pages` pages and
:attr:`ReadAhead.max_bytes` bytes, oldest dropped first; a page above a quarter of the
bytes is never kept; one that is taken is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence

from feedsvc.store.port import EncodedEvents, EventStore

log = logging.getLogger("feedsvc.web")

Key = tuple[int, int, tuple[str, ...], str | None]
"""after, limit, types, stream"""


class ReadAhead:
    """Pages of the log read before they are asked for, one per follower's cursor."""

    def __init__(self, store: EventStore, max_pages: int = 16, max_bytes: int = 64 << 20):
        self.store = store
        self.max_pages = max_pages
        self.max_bytes = max_bytes
        self._pages: OrderedDict[Key, asyncio.Task[EncodedEvents]] = OrderedDict()
        self._closed = False
        self.hits = 0
        """pages answered from a read made ahead (tests and diagnostics)"""

    async def page(
        self,
        after: int,
        limit: int,
        *,
        types: Sequence[str] | None,
        stream: str | None,
        head: int,
    ) -> EncodedEvents:
        """The events after ``after`` up to ``head``, at most ``limit``, as
        :meth:`EventStore.read_all_json` reads them; a full page starts reading the next."""
        kinds = tuple(types or ())
        events = await self._taken((after, limit, kinds, stream))
        if events is None:
            events = await self.store.read_all_json(
                after, limit, types=types, stream=stream, upto=head
            )
        else:
            self.hits += 1
        if events.count == limit and events.last is not None:
            self._start((events.last, limit, kinds, stream), head, len(events.json))
        return events

    async def _taken(self, key: Key) -> EncodedEvents | None:
        task = self._pages.pop(key, None)
        if task is None:
            return None
        try:
            events = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                return None
            raise
        except Exception:  # the request reads for itself, and says what is wrong
            return None
        return events if events.count == key[1] else None

    def _start(self, key: Key, head: int, size: int) -> None:
        if self._closed or key in self._pages or size > self.max_bytes // 4:
            return
        after, limit, kinds, stream = key
        read = self.store.read_all_json(after, limit, types=kinds or None, stream=stream, upto=head)
        task = asyncio.ensure_future(read)
        task.add_done_callback(self._finished)
        self._pages[key] = task
        self._trim()

    def _finished(self, task: asyncio.Task[EncodedEvents]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.debug("reading the log ahead failed: %s", error)
        self._trim()

    def _trim(self) -> None:
        held = sum(
            len(t.result().json)
            for t in self._pages.values()
            if t.done() and not t.cancelled() and t.exception() is None
        )
        while self._pages and (len(self._pages) > self.max_pages or held > self.max_bytes):
            _, oldest = self._pages.popitem(last=False)
            if oldest.done() and not oldest.cancelled() and oldest.exception() is None:
                held -= len(oldest.result().json)
            oldest.cancel()

    async def close(self) -> None:
        """Stop every read in flight and drop what is held."""
        self._closed = True
        tasks = list(self._pages.values())
        self._pages.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

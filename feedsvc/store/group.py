"""Group commit, shared by the event store's adapters.

Concurrent appends queue up; one task takes every append waiting at that moment (up
to ``max_group`` events), hands them to the adapter's ``commit`` (which decides and
writes them in one transaction), and answers each with its own outcome: a refused
append gets its error and was written not at all, the others share one commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from feedsvc.domain.events import RecordedEvent, ValidEvent
from feedsvc.errors import StoreError, StoreUnavailable
from feedsvc.store.decide import AppendRequest, Outcome
from feedsvc.store.port import AppendResult, EventStore, Expected

Commit = Callable[[list[AppendRequest]], Awaitable[tuple[list[Outcome], list[RecordedEvent]]]]
"""Decide and write a group in one transaction: each append's outcome, and the rows
written."""


@dataclass
class _Queued:
    append: AppendRequest
    future: asyncio.Future[AppendResult] = field(repr=False)


class GroupCommit:
    """The queue of appends of one event store and the task that commits them in
    groups.

    ``translate`` turns a driver error raised by ``commit`` into the store's own (it
    is the answer of every append of the group); ``committed(rows)`` runs after every
    commit that wrote rows. ``lock`` is held while a group is written: an adapter
    holds it too for other writes (an import) that must not interleave.
    """

    def __init__(
        self,
        commit: Commit,
        translate: Callable[[Exception], StoreError],
        committed: Callable[[list[RecordedEvent]], None],
        max_group: int,
    ) -> None:
        self._commit = commit
        self._translate = translate
        self._committed = committed
        self.max_group = max_group
        self.lock = asyncio.Lock()
        self.group_sizes: list[int] = []
        """Sizes of recent group commits (events); trimmed to the last 1000."""
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start taking appends."""
        self._closing = False
        self._task = asyncio.create_task(self._loop(), name="feedsvc-group-commit")

    @property
    def open(self) -> bool:
        """Whether appends are taken."""
        return self._task is not None and not self._closing

    async def append(
        self, stream: str, events: Sequence[ValidEvent], expected: Expected
    ) -> AppendResult:
        """Queue one append and wait for its outcome.

        A caller cancelled while it waits cancels only its own future: the append
        stays queued and is committed with its group, whose other appends are
        answered as ever (the group skips an answer nobody waits for)."""
        return await self.submit(stream, events, expected)

    def submit(
        self, stream: str, events: Sequence[ValidEvent], expected: Expected
    ) -> asyncio.Future[AppendResult]:
        """Queue one append now; the future of its outcome."""
        if not self.open:
            raise StoreUnavailable("the event store is closed")
        if not events:
            raise ValueError("append needs at least one event")
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Queued(AppendRequest(stream, events, expected), future))
        return future

    async def close(self) -> None:
        """Take no more appends, let every queued one finish, then stop."""
        self._closing = True
        if self._task is None:
            return
        await self._queue.join()
        async with self.lock:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].append.events)
            while size < self.max_group and not self._queue.empty():
                queued = self._queue.get_nowait()
                batch.append(queued)
                size += len(queued.append.events)
            try:
                async with self.lock:
                    await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[_Queued]) -> None:
        try:
            outcomes, rows = await self._commit([q.append for q in batch])
        except asyncio.CancelledError:
            _fail(batch, StoreUnavailable("the event store closed"))
            raise
        except Exception as e:
            _fail(batch, e if isinstance(e, StoreError) else self._translate(e))
            return
        if rows:
            self.group_sizes.append(len(rows))
            del self.group_sizes[:-1000]
            self._committed(rows)
        for queued, outcome in zip(batch, outcomes, strict=True):
            if queued.future.done():
                continue
            if isinstance(outcome, BaseException):
                queued.future.set_exception(outcome)
            else:
                queued.future.set_result(outcome)


def _fail(batch: list[_Queued], error: BaseException) -> None:
    for queued in batch:
        if not queued.future.done():
            queued.future.set_exception(error)


class GroupCommitStore(EventStore):
    """What the adapters that write through a :class:`GroupCommit` share: appends go
    through the queue, and a commit tells the commit listeners and advances the head
    this process knows, waking whoever waits for it."""

    def __init__(
        self, commit: Commit, translate: Callable[[Exception], StoreError], max_group: int
    ):
        self._group = GroupCommit(commit, translate, self._on_commit, max_group)
        self._committed = asyncio.Event()
        """Set, and replaced, whenever the known head advances."""
        self._head = 0
        self._commit_listeners: list[Callable[[int], object]] = []

    def add_commit_listener(self, listener: Callable[[int], object]) -> None:
        self._commit_listeners.append(listener)

    @property
    def group_sizes(self) -> list[int]:
        """Sizes of recent group commits (events); trimmed to the last 1000."""
        return self._group.group_sizes

    async def append(
        self, stream: str, events: Sequence[ValidEvent], expected: Expected = "any"
    ) -> AppendResult:
        return await self.submit(stream, events, expected)

    def _on_commit(self, rows: list[RecordedEvent]) -> None:
        for listener in self._commit_listeners:
            listener(len(rows))
        self._advance(rows[-1].position)

    def _advance(self, head: int) -> None:
        """Learn that the log reached ``head``: wake the waiters if it moved on."""
        if head > self._head:
            self._head = head
            self._wake()

    def _wake(self) -> None:
        """Wake whoever waits for the head to move."""
        self._committed.set()
        self._committed = asyncio.Event()

    @property
    def known_head(self) -> int:
        """The head as last learned, without a database call."""
        return self._head

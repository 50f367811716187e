"""The projector: applies batches of events to one read model generation.

It joins three parts, each in a module of its own: the fold
(:mod:`feedsvc.projections.fold`: what the events change, held in memory between
batches), the read model's tables (:mod:`feedsvc.projections.tables`: every statement
on the file) and rendering (:mod:`feedsvc.projections.render`: the documents).

Synchronous by design: the runner hands it a batch of events in a worker thread, and
it applies the whole batch in one transaction that also records the position reached,
so a crash mid-batch leaves the previous batch's state and position, and the batch is
simply applied again. A filled archive page is only recorded by the fold; it is
rendered later, from that record, by :meth:`Projector.render_archive` (a background
job, or the first request), which keeps a rebuild from rendering every page of history
while it folds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from feedsvc.domain.events import RecordedEvent
from feedsvc.projections.fold import CACHED_DEVELOPMENTS, Batch, Changes, Fold
from feedsvc.projections.render import Renderer
from feedsvc.projections.tables import Tables
from feedsvc.rendering.model import FeedFormat, Scope, Urls

__all__ = ["Changes", "Projector"]


class Projector:
    """Applies events to one read model connection, and renders its documents."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        urls: Urls,
        feed_size: int = 50,
        *,
        cached_developments: int = CACHED_DEVELOPMENTS,
        self_query: str | None = None,
    ) -> None:
        self.conn = conn
        self.urls = urls
        self.feed_size = feed_size
        self.tables = Tables(conn)
        self.fold = Fold(self.tables, feed_size, cached_developments)
        self.renderer = Renderer(self.tables, self.fold, urls, feed_size, self_query)
        self._applied: int | None = None
        """The position the file holds, once read."""

    def position(self) -> int:
        """The last position applied (0 for a new read model)."""
        if self._applied is None:
            self._applied = self.tables.position()
        return self._applied

    def apply(self, events: list[RecordedEvent], *, render_now: bool = True) -> Changes:
        """Apply a batch in one transaction, with the position it reaches.

        With ``render_now`` the changed subscription documents and pages are rendered
        in the same transaction. Without, they are recorded as pending render items in
        that transaction, to be rendered by :meth:`render_items` (when first asked for,
        or by a background job) or :meth:`render_changes`; either gives the same bytes.
        """
        start = self.position()
        events = [e for e in events if e.position > start]
        if not events:
            return Changes()
        batch = Batch()
        changes = Changes()
        try:
            with self.tables.transaction():
                for event in events:
                    self.fold.apply(batch, event, changes)
                self.fold.flush(batch)
                if render_now:
                    self.renderer.render(changes)
                else:
                    self.tables.add_pending(changes.items())
                self.tables.set_position(events[-1].position)
        except BaseException:
            self.forget()
            raise
        self._applied = events[-1].position
        self.fold.committed(batch)
        return changes

    def forget(self) -> None:
        """Drop everything kept in memory (it is read again from the file)."""
        self._applied = None
        self.fold.forget()

    # -- rendering -------------------------------------------------------------------

    def render_changes(self, changes: Changes) -> set[str]:
        """Render the documents of ``changes`` from the current state, in one
        transaction; return the paths written."""
        with self.tables.transaction():
            self.renderer.render(changes)
            self.tables.remove_pending(changes.items())
        return changes.paths

    def pending_items(self) -> set[str]:
        """Render items recorded by :meth:`apply` and not rendered yet."""
        return self.tables.pending_items()

    def render_items(self, items: Iterable[str]) -> set[str]:
        """Render pending items now; return the paths written."""
        return self.render_changes(Changes.from_items(items))

    def render_feed(self, scope: Scope, fmt: FeedFormat) -> set[str]:
        """Render one format of a scope's subscription document now, in its own
        transaction (a request waits for it; its render item stays pending for the
        rest)."""
        with self.tables.transaction():
            return self.renderer.feed(scope, (fmt,))

    def pending_archives(self, limit: int) -> list[tuple[Scope, int]]:
        """Archive pages recorded but not rendered yet, in the order they filled (their
        rowid): pages that fill together share developments (a development enters its
        story's, every story's and its topics' scopes at once), so rendering them
        together finds those entries in the entry cache. In the order of the scopes'
        names, rendering every page after a rebuild took 35–45 % longer."""
        return [
            (Scope.from_name(scope), page) for scope, page in self.tables.pending_archives(limit)
        ]

    def render_archive(
        self, scope: Scope, page: int, formats: Sequence[FeedFormat] = tuple(FeedFormat)
    ) -> set[str]:
        """Render one recorded archive page (in every format unless told), in its own
        transaction."""
        with self.tables.transaction():
            return self.renderer.archive(scope, page, formats)

    def render_pending_archives(self, limit: int = 1_000_000) -> set[str]:
        """Render up to ``limit`` recorded archive pages; return the paths written."""
        paths: set[str] = set()
        for scope, page in self.pending_archives(limit):
            paths |= self.render_archive(scope, page)
        return paths

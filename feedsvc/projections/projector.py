"""The projector: folds events into the read model and renders what they changed.

Synchronous by design: the runner hands it a batch of events in a worker thread, and
it applies the whole batch in one transaction that also records the position reached,
so a crash mid-batch leaves the previous batch's state and position, and the batch is
simply applied again.

Nothing here reads the wall clock: every time in a document comes from the events, so
the same log always gives the same bytes.

How feeds are paged (RFC 5005): every development that enters a scope takes the next
*ordinal* of that scope. Archive page ``k`` holds ordinals ``(k-1)·N+1 … k·N`` with the
entries as they were at the event that filled it, so it never changes afterwards. At
that event the page is only *recorded* (which version of which development, under which
story title); it is rendered later, from that record, by :meth:`Projector.render_archive`
(a background job, or the first request), which keeps a rebuild from rendering every
page of history while it folds. The subscription document holds the ``N`` entries touched most
recently (reported, quoted, corrected or retracted), so a correction to an old entry
reaches subscribers with its ``updated`` bumped.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import orjson

from feedsvc.domain.events import RecordedEvent, slugify
from feedsvc.domain.story import Development, FollowUp, Story
from feedsvc.projections.documents import Document
from feedsvc.projections.readmodel import PROJECTION_VERSIONS
from feedsvc.rendering.feeds import EntryCache, render
from feedsvc.rendering.model import EntryView, FeedFormat, FeedView, Scope, ScopeKind, Urls
from feedsvc.rendering.pages import render_index, render_story, render_topic

ALL = Scope(ScopeKind.ALL)
CACHED_DEVELOPMENTS = 5_000
"""How many developments a projector keeps folded in memory between batches, the most
recently used. Each costs ~11 KB (its pydantic models, body, quotes and memberships):
5,000 keep a rebuild of a 1,000,000-event log near 220 MB where 20,000 took it past
380 MB, for ~6 % more folding time (developments read back when a quote or correction
names one that was dropped; bench/ANALYSIS.md)."""
CACHED_STORIES = 10_000
"""Past this many story headers in memory, a projector forgets them all and reads again."""
INDEX_STORIES = 200
"""The index page lists this many stories, the most recently changed first."""
HTML = "text/html; charset=utf-8"
_STATE = (
    "SELECT v.state FROM development_heads h JOIN development_versions v "
    "ON v.slug = h.slug AND v.development_id = h.development_id AND v.position = h.version "
    "WHERE h.slug = ? AND h.development_id = ?"
)
"""A development's current state."""
_DEV_EVENTS = frozenset({"quote.attributed", "development.corrected", "development.retracted"})
_FOLLOWUP_EVENTS = frozenset({"followup.expected", "followup.resolved"})
_NOT_IN_HEADER = {"developments", "followups"}
"""What a story's header row leaves out: developments and follow-ups are rows of their
own, so a batch rewrites a header of constant size however long the story has run."""


@lru_cache(maxsize=65536)
def story_scope(slug: str) -> Scope:
    """The scope of one story."""
    return Scope(ScopeKind.STORY, slug)


@lru_cache(maxsize=65536)
def topic_scope(label: str) -> Scope:
    """The scope of one topic, by its label."""
    return Scope(ScopeKind.TOPIC, slugify(label))


@dataclass
class _Batch:
    """What one batch changed."""

    dirty_stories: set[str] = field(default_factory=set)
    dirty_followups: dict[tuple[str, str], int | None] = field(default_factory=dict)
    """(slug, follow-up id) → the position that expected it when that was in this batch
    (a new row), else None (a row to update)."""
    dirty_devs: set[tuple[str, str]] = field(default_factory=set)
    dirty_scopes: set[Scope] = field(default_factory=set)
    new_entries: list[tuple[str, int, str, str]] = field(default_factory=list)
    """Scope memberships to insert: (scope, ordinal, slug, development id)."""
    joined: list[tuple[Scope, int, str, str, int]] = field(default_factory=list)
    """Every membership entered in this batch: (scope, ordinal, slug, development id,
    the position that entered it)."""
    touched: dict[tuple[str, str], int] = field(default_factory=dict)
    """The last position that touched each development in this batch."""
    archived: set[tuple[str, str]] = field(default_factory=set)
    """Developments changed in this batch whose current version an archive page just
    recorded: kept in ``development_versions`` before anything changes them again."""


@dataclass
class Changes:
    """Which scopes and stories need their documents rendered again."""

    scopes: set[Scope] = field(default_factory=set)
    stories: set[str] = field(default_factory=set)
    index: bool = False
    archives: bool = False
    """Whether an archive page filled (and waits to be rendered)."""
    paths: set[str] = field(default_factory=set)

    def items(self) -> set[str]:
        """The documents to render, as render items (see :func:`item_of`)."""
        found = {f"feed:{scope.name}" for scope in self.scopes}
        found |= {f"story:{slug}" for slug in self.stories}
        if self.index:
            found.add("index")
        return found

    @classmethod
    def from_items(cls, items: Iterable[str]) -> Changes:
        """The changes that render these items."""
        changes = cls()
        for item in items:
            kind, _, key = item.partition(":")
            if kind == "feed":
                changes.scopes.add(Scope.from_name(key))
            elif kind == "story":
                changes.stories.add(key)
            elif kind == "index":
                changes.index = True
        return changes

    def merge(self, other: Changes) -> None:
        """Add another batch's changes."""
        self.scopes |= other.scopes
        self.stories |= other.stories
        self.index = self.index or other.index
        self.archives = self.archives or other.archives
        self.paths |= other.paths


class Projector:
    """Applies events to one read model connection.

    The state the fold reads (story headers, recently touched developments and their
    scope memberships, every scope's row) is kept in memory between batches, so an
    event costs no look-up or JSON parse of what earlier batches wrote. The read model
    file stays the source of truth: the memory is a cache of what it holds after the
    last commit, dropped whole if a batch rolls back, and bounded to
    ``cached_developments`` developments (least recently touched go first).
    """

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
        self.self_query = self_query
        """The query string every feed document's self link carries (``as_of=…`` for a
        projection built to answer one), or None."""
        self.urls = urls
        self.feed_size = feed_size
        self.cached_developments = cached_developments
        self._stories: dict[str, Story] = {}
        """slug → story header, with the developments loaded so far."""
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        """The loaded developments, least recently used first."""
        self._memberships: dict[tuple[str, str], dict[Scope, int]] = {}
        """(slug, development id) → scope → the development's ordinal there."""
        self._shown_in: dict[str, set[Scope]] = {}
        """slug → every scope one of the story's developments has entered, for the
        stories whose set is known (opened in this fold, or read once)."""
        self._scopes: dict[Scope, tuple[str, str, int]] = {}
        """scope → (label, updated_at, entry count)."""
        self._tails: dict[Scope, deque[tuple[int, str, str]]] = {}
        """scope → its last ``feed_size`` entries (ordinal, slug, development id) entered
        since the fold's memory was last dropped: the archive page that fills is these."""
        self._untrimmed: dict[Scope, int] = {}
        """scope → rows written to its ``recent_entries`` since they were last trimmed
        to the feed's size (a scope missing here is trimmed when next written)."""
        self._entry_cache = EntryCache()
        self._applied: int | None = None
        """The position the file holds, once read."""

    # -- the public surface ------------------------------------------------------

    def position(self) -> int:
        """The last position applied (0 for a new read model)."""
        if self._applied is None:
            row = self.conn.execute("SELECT MIN(position) FROM projections").fetchone()
            self._applied = int(row[0]) if row and row[0] is not None else 0
        return self._applied

    def apply(self, events: list[RecordedEvent], *, render_now: bool = True) -> Changes:
        """Apply a batch in one transaction, with the position it reaches.

        With ``render_now`` the changed subscription documents and pages are rendered
        in the same transaction. Without, they are recorded as pending render items in
        that transaction, to be rendered by :meth:`render_items` (when first asked for,
        or by a background job) or :meth:`render_changes`; either gives the same bytes.
        """
        if not events:
            return Changes()
        start = self.position()
        events = [e for e in events if e.position > start]
        if not events:
            return Changes()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            batch = _Batch()
            changes = Changes()
            for event in events:
                self._apply(batch, event, changes)
            self._flush(batch)
            if render_now:
                self._render(changes)
            else:
                self.conn.executemany(
                    "INSERT OR IGNORE INTO pending_renders (item) VALUES (?)",
                    [(item,) for item in sorted(changes.items())],
                )
            self._set_position(events[-1].position)
            self.conn.execute("COMMIT")
            self._applied = events[-1].position
        except BaseException:
            self.conn.execute("ROLLBACK")
            self.forget()
            raise
        for slug, _ in batch.dirty_followups:
            # written: read again when an event names one
            self._stories[slug].followups.clear()
        self._trim()
        return changes

    def forget(self) -> None:
        """Drop everything kept in memory (it is read again from the file)."""
        self._applied = None
        self._stories.clear()
        self._recent.clear()
        self._memberships.clear()
        self._shown_in.clear()
        self._scopes.clear()
        self._tails.clear()
        self._untrimmed.clear()

    def _trim(self) -> None:
        """Unload the least recently used developments past the bound."""
        if len(self._stories) > CACHED_STORIES:
            self.forget()
        while len(self._recent) > self.cached_developments:
            (slug, dev_id), _ = self._recent.popitem(last=False)
            story = self._stories.get(slug)
            if story is not None:
                story.developments.pop(dev_id, None)
            self._memberships.pop((slug, dev_id), None)

    def render_changes(self, changes: Changes) -> set[str]:
        """Render the documents of ``changes`` from the current state, in one
        transaction; return the paths written."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self._render(changes)
            self.conn.executemany(
                "DELETE FROM pending_renders WHERE item = ?",
                [(item,) for item in sorted(changes.items())],
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return changes.paths

    def pending_items(self) -> set[str]:
        """Render items recorded by :meth:`apply` and not rendered yet."""
        return {r[0] for r in self.conn.execute("SELECT item FROM pending_renders")}

    def render_items(self, items: Iterable[str]) -> set[str]:
        """Render pending items now; return the paths written."""
        return self.render_changes(Changes.from_items(items))

    # -- folding -----------------------------------------------------------------

    def _set_position(self, position: int) -> None:
        self.conn.executemany(
            "INSERT INTO projections (name, version, position) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET version = excluded.version, "
            "position = excluded.position",
            [(name, version, position) for name, version in PROJECTION_VERSIONS.items()],
        )

    def _story(self, slug: str) -> Story | None:
        """The story's header as of the fold so far (None if it was never opened)."""
        story = self._stories.get(slug)
        if story is None:
            row = self.conn.execute("SELECT header FROM stories WHERE slug = ?", (slug,)).fetchone()
            if row is None:
                return None
            story = self._stories[slug] = Story.model_validate_json(row[0])
        return story

    def _dev(self, story: Story, dev_id: str) -> Development | None:
        """A development of a story the fold holds, loaded if it is not yet."""
        key = (story.slug, dev_id)
        dev = story.developments.get(dev_id)
        if dev is None:
            row = self.conn.execute(_STATE, key).fetchone()
            if row is None:
                return None
            dev = story.developments[dev_id] = Development.model_validate_json(row[0])
        self._recent[key] = None
        self._recent.move_to_end(key)
        return dev

    def _load_dev(self, story: Story, dev_id: str) -> Development | None:
        """Load a development into a story read for rendering (not the fold's)."""
        if dev_id not in story.developments:
            row = self.conn.execute(_STATE, (story.slug, dev_id)).fetchone()
            if row is None:
                return None
            story.developments[dev_id] = Development.model_validate_json(row[0])
        return story.developments[dev_id]

    def _apply(self, batch: _Batch, event: RecordedEvent, changes: Changes) -> None:
        slug = event.stream
        if event.type == "story.opened":
            story = Story.open(event)
            self._stories[slug] = story
            self._shown_in[slug] = set()
            batch.dirty_stories.add(slug)
            changes.index = True
            changes.stories.add(slug)
            self._touch_scope(batch, story_scope(slug), story.title, event, changes)
            for label in story.topics:
                self._touch_scope(batch, topic_scope(label), label, event, changes)
            self._touch_scope(batch, ALL, "All stories", event, changes)
            return
        found = self._story(slug)
        if found is None:
            return  # events of a stream that was never opened carry no story
        story = found
        dev_id = event.data.get("development_id") if event.type in _DEV_EVENTS else None
        if dev_id is not None:
            dev = self._dev(story, dev_id)
            if dev is None:
                return
            if (slug, dev_id) in batch.archived:
                batch.archived.discard((slug, dev_id))
                self._keep_version(slug, dev)
        followup_id = event.data.get("followup_id") if event.type in _FOLLOWUP_EVENTS else None
        if followup_id is not None:
            key = (slug, followup_id)
            if event.type == "followup.expected":
                batch.dirty_followups[key] = event.position
            else:
                self._followup(story, followup_id)
                batch.dirty_followups.setdefault(key, None)
        # a retag changes the categories of every entry of the story, wherever shown
        shown_before = self._story_scopes(batch, story) if event.type == "story.retagged" else set()
        topics_before = {topic_scope(label) for label in story.topics}
        touched = story.apply(event)
        batch.dirty_stories.add(slug)
        changes.stories.add(slug)
        changes.index = True
        if event.type == "story.retitled":
            for scope in self._story_scopes(batch, story):
                self._touch_scope(batch, scope, None, event, changes)
        if event.type == "story.retagged":
            for label in story.topics:
                self._touch_scope(batch, topic_scope(label), label, event, changes)
            self._retag_devs(batch, story, topics_before, event, changes)
            for scope in shown_before | self._story_scopes(batch, story):
                self._touch_scope(batch, scope, None, event, changes)
        if event.type == "development.reported":
            for new_id in touched:
                self._memberships[(slug, new_id)] = {}  # nothing to look up yet
                self._recent[(slug, new_id)] = None
        for touched_id in touched:
            dev = story.developments[touched_id]
            batch.dirty_devs.add((slug, touched_id))
            self._join_scopes(batch, story, dev, event, changes)
            batch.touched[(slug, touched_id)] = event.position
            for scope in self._member_of(slug, touched_id):
                self._touch_scope(batch, scope, None, event, changes)

    def _followup(self, story: Story, followup_id: str) -> None:
        """Load a follow-up into the fold's story if it is not there yet (a story's
        header leaves them out: they are rows of their own)."""
        if followup_id not in story.followups:
            row = self.conn.execute(
                "SELECT state FROM followups WHERE slug = ? AND followup_id = ?",
                (story.slug, followup_id),
            ).fetchone()
            if row is not None:
                story.followups[followup_id] = FollowUp.model_validate_json(row[0])

    def _dev_ids(self, slug: str) -> list[str]:
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT development_id FROM development_heads WHERE slug = ? "
                "ORDER BY reported_position",
                (slug,),
            )
        ]

    def _all_devs(self, story: Story) -> list[Development]:
        """Every development of a story read for rendering, loaded."""
        for dev_id in self._dev_ids(story.slug):
            self._load_dev(story, dev_id)
        return sorted(story.developments.values(), key=lambda d: d.reported_position)

    def _retag_devs(
        self,
        batch: _Batch,
        story: Story,
        topics_before: set[Scope],
        event: RecordedEvent,
        changes: Changes,
    ) -> None:
        """Enter every development of a just retagged story into the scopes of the
        topics the retag added, in the order they were reported.

        Every development is in the scopes of the story's topics before the retag (it
        entered them when reported, or at the retag that added them), so only the added
        ones are looked at, and no development is loaded: the cost is the story's
        memberships in those scopes, not its developments' state."""
        added: dict[Scope, str] = {}
        for label in story.topics:
            scope = topic_scope(label)
            if scope not in topics_before and scope not in added:
                added[scope] = label
        if not added:
            return
        self._write_entries(batch)
        dev_ids = [
            r[0]
            for r in self.conn.execute(
                "SELECT development_id FROM development_heads WHERE slug = ? "
                "ORDER BY reported_position, development_id",
                (story.slug,),
            )
        ]
        # of each written development, its memberships in the added scopes only
        written: dict[str, dict[Scope, int]] = {dev_id: {} for dev_id in dev_ids}
        by_name = {scope.name: scope for scope in added}
        marks = ", ".join("?" * len(by_name))
        for dev_id, name, ordinal in self.conn.execute(
            "SELECT development_id, scope, ordinal FROM memberships "
            f"WHERE slug = ? AND scope IN ({marks})",
            (story.slug, *by_name),
        ):
            found = written.get(dev_id)
            if found is not None:  # else reported in this batch: not in the heads yet
                found[by_name[name]] = int(ordinal)
        unwritten = sorted(
            (dev for dev_id, dev in story.developments.items() if dev_id not in written),
            key=lambda d: d.reported_position,
        )
        for dev_id in [*dev_ids, *(dev.development_id for dev in unwritten)]:
            held = self._memberships.get((story.slug, dev_id))
            current = held if held is not None else written[dev_id]
            for scope, label in added.items():
                if scope not in current:
                    self._enter(batch, story.slug, dev_id, scope, label, event, changes, current)
        # a development not held reads its memberships from the file if an event of
        # this batch loads it
        self._write_entries(batch)

    def _story_scopes(self, batch: _Batch, story: Story) -> set[Scope]:
        """Every scope showing the story or one of its developments."""
        shown = self._shown_in.get(story.slug)
        if shown is None:
            self._write_entries(batch)
            shown = self._shown_in[story.slug] = {
                Scope.from_name(r[0])
                for r in self.conn.execute(
                    "SELECT DISTINCT scope FROM memberships WHERE slug = ?", (story.slug,)
                )
            }
        return {story_scope(story.slug), ALL, *(topic_scope(t) for t in story.topics), *shown}

    def _member_of(self, slug: str, dev_id: str) -> dict[Scope, int]:
        """The scopes a development is in, each with its ordinal there."""
        key = (slug, dev_id)
        found = self._memberships.get(key)
        if found is None:
            rows = self.conn.execute(
                "SELECT scope, ordinal FROM memberships WHERE slug = ? AND development_id = ?",
                key,
            )
            found = self._memberships[key] = {Scope.from_name(r[0]): int(r[1]) for r in rows}
        return found

    def _join_scopes(
        self,
        batch: _Batch,
        story: Story,
        dev: Development,
        event: RecordedEvent,
        changes: Changes,
    ) -> None:
        """Enter ``dev`` into every scope it belongs to and is not in yet."""
        wanted = [story_scope(story.slug), ALL]
        labels = {story_scope(story.slug): story.title, ALL: "All stories"}
        for label in [*story.topics, *dev.topics]:
            scope = topic_scope(label)
            if scope not in labels:
                wanted.append(scope)
                labels[scope] = label
        current = self._member_of(story.slug, dev.development_id)
        for scope in wanted:
            if scope not in current:
                self._enter(
                    batch,
                    story.slug,
                    dev.development_id,
                    scope,
                    labels[scope],
                    event,
                    changes,
                    current,
                )

    def _enter(
        self,
        batch: _Batch,
        slug: str,
        dev_id: str,
        scope: Scope,
        label: str,
        event: RecordedEvent,
        changes: Changes,
        current: dict[Scope, int],
    ) -> None:
        """Enter a development into a scope at the scope's next ordinal; ``current``
        (its memberships) gets it too."""
        label, _, count = self._scope(scope, label, event)
        ordinal = count + 1
        batch.new_entries.append((scope.name, ordinal, slug, dev_id))
        batch.joined.append((scope, ordinal, slug, dev_id, event.position))
        current[scope] = ordinal
        shown = self._shown_in.get(slug)
        if shown is not None:
            shown.add(scope)
        tail = self._tails.get(scope)
        if tail is None:
            tail = self._tails[scope] = deque(maxlen=self.feed_size)
        tail.append((ordinal, slug, dev_id))
        self._scopes[scope] = (label, event.recorded_at, ordinal)
        batch.dirty_scopes.add(scope)
        changes.scopes.add(scope)
        if ordinal % self.feed_size == 0:
            self._record_archive(batch, scope, ordinal // self.feed_size)
            changes.archives = True

    def _scope(self, scope: Scope, label: str | None, event: RecordedEvent) -> tuple[str, str, int]:
        found = self._scopes.get(scope)
        if found is None:
            row = self.conn.execute(
                "SELECT label, updated_at, entries FROM scopes WHERE scope = ?", (scope.name,)
            ).fetchone()
            found = self._scopes[scope] = (
                (str(row[0]), str(row[1]), int(row[2]))
                if row
                else (label or scope.key, event.recorded_at, 0)
            )
        return found

    def _touch_scope(
        self,
        batch: _Batch,
        scope: Scope,
        label: str | None,
        event: RecordedEvent,
        changes: Changes,
    ) -> None:
        old_label, _, count = self._scope(scope, label, event)
        if scope.kind is ScopeKind.STORY:
            story = self._stories.get(scope.key)
            label = story.title if story else old_label
        self._scopes[scope] = (label or old_label, event.recorded_at, count)
        batch.dirty_scopes.add(scope)
        changes.scopes.add(scope)

    def _write_entries(self, batch: _Batch) -> None:
        """Insert the batch's new scope memberships (before anything reads them)."""
        if not batch.new_entries:
            return
        self.conn.executemany(
            "INSERT INTO memberships (scope, ordinal, slug, development_id) VALUES (?, ?, ?, ?)",
            sorted(batch.new_entries),
        )
        batch.new_entries.clear()

    def _write_recent(self, batch: _Batch) -> None:
        """Record what the batch touched in ``recent_entries``, and trim each scope
        there to the feed's size once it has been written that often.

        A membership is touched at the later of the position that entered it and the
        last position that touched its development. That only grows, so one that
        ranks below a scope's ``feed_size`` most recently touched can rank among them
        again only when it is touched again (and written here again): the rows below
        that rank can go, and of a scope's rows a batch writes only its own top
        ``feed_size`` (a row it leaves keeps an older, lower position there until
        trimmed, below the top either way). The cost of a batch is the rows it
        touched, whatever the size of the memberships table."""
        by_scope: dict[Scope, dict[int, tuple[int, str, str]]] = {}
        for scope, ordinal, slug, dev_id, joined in batch.joined:
            entries = by_scope.get(scope)
            if entries is None:
                entries = by_scope[scope] = {}
            touched = batch.touched.get((slug, dev_id), 0)
            entries[ordinal] = (joined if joined > touched else touched, slug, dev_id)
        for (slug, dev_id), position in batch.touched.items():
            for scope, ordinal in self._member_of(slug, dev_id).items():
                entries = by_scope.get(scope)
                if entries is None:
                    entries = by_scope[scope] = {}
                found = entries.get(ordinal)
                if found is None or found[0] < position:
                    entries[ordinal] = (position, slug, dev_id)
        upserts: list[tuple[str, int, str, str, int]] = []
        trim: list[tuple[str, int]] = []
        for scope, entries in by_scope.items():
            # past the batch's own top ``feed_size`` a row ranks below them for good
            kept = sorted(entries.items(), key=lambda e: (e[1][0], e[0]), reverse=True)
            del kept[self.feed_size :]
            name = scope.name
            upserts += [(name, ordinal, slug, dev_id, t) for ordinal, (t, slug, dev_id) in kept]
            before = self._untrimmed.get(scope)
            if before is None or before + len(kept) >= self.feed_size:
                trim.append((name, self.feed_size - 1))
                self._untrimmed[scope] = 0
            else:
                self._untrimmed[scope] = before + len(kept)
        upserts.sort()
        self.conn.executemany(
            "INSERT INTO recent_entries (scope, ordinal, slug, development_id, touched) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, ordinal) DO UPDATE SET "
            "touched = max(touched, excluded.touched)",
            upserts,
        )
        trim.sort()
        self.conn.executemany(
            "DELETE FROM recent_entries WHERE scope = ?1 AND (touched, ordinal) < ("
            "SELECT touched, ordinal FROM recent_entries WHERE scope = ?1 "
            "ORDER BY touched DESC, ordinal DESC LIMIT 1 OFFSET ?2)",
            trim,
        )

    def _flush(self, batch: _Batch) -> None:
        self._write_entries(batch)
        self._write_recent(batch)
        dirty = [
            (slug, dev_id, self._stories[slug].developments[dev_id])
            for slug, dev_id in sorted(batch.dirty_devs)
        ]
        self.conn.executemany(
            "INSERT OR IGNORE INTO development_versions (slug, development_id, position, state) "
            "VALUES (?, ?, ?, ?)",
            [
                (slug, dev_id, dev.updated_position, dev.model_dump_json())
                for slug, dev_id, dev in dirty
            ],
        )
        self.conn.executemany(
            "INSERT INTO development_heads (slug, development_id, occurred_start, "
            "reported_position, version) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (slug, development_id) DO UPDATE SET "
            "occurred_start = excluded.occurred_start, version = excluded.version",
            [
                (slug, dev_id, dev.occurred_start, dev.reported_position, dev.updated_position)
                for slug, dev_id, dev in dirty
            ],
        )
        rows = []
        for slug in sorted(batch.dirty_stories):
            story = self._stories[slug]
            latest = self.conn.execute(
                "SELECT development_id FROM development_heads WHERE slug = ? "
                "ORDER BY occurred_start DESC, reported_position DESC LIMIT 1",
                (slug,),
            ).fetchone()
            rows.append(
                (
                    slug,
                    story.model_dump_json(exclude=_NOT_IN_HEADER),
                    latest[0] if latest else None,
                    story.last_position,
                )
            )
        new, changed = [], []
        for (slug, followup_id), expected in sorted(batch.dirty_followups.items()):
            state = self._stories[slug].followups[followup_id].model_dump_json()
            if expected is None:
                changed.append((state, slug, followup_id))
            else:
                new.append((slug, followup_id, expected, state))
        self.conn.executemany(
            "INSERT INTO followups (slug, followup_id, position, state) VALUES (?, ?, ?, ?)", new
        )
        self.conn.executemany(
            "UPDATE followups SET state = ? WHERE slug = ? AND followup_id = ?", changed
        )
        self.conn.executemany(
            "INSERT INTO stories (slug, header, latest, last_position) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (slug) DO UPDATE SET header = excluded.header, "
            "latest = excluded.latest, last_position = excluded.last_position",
            rows,
        )
        self.conn.executemany(
            "INSERT INTO scopes (scope, label, updated_at, entries) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (scope) DO UPDATE SET label = excluded.label, "
            "updated_at = excluded.updated_at, entries = excluded.entries",
            [
                (scope.name, *self._scopes[scope])
                for scope in sorted(batch.dirty_scopes, key=lambda s: s.name)
            ],
        )

    # -- rendering ---------------------------------------------------------------

    def _feed_meta(self, scope: Scope, label: str) -> tuple[str, str]:
        if scope.kind is ScopeKind.STORY:
            story = self._story(scope.key)
            assert story is not None, scope
            return story.title, story.summary
        if scope.kind is ScopeKind.TOPIC:
            return f"Topic: {label}", f"Every development tagged {label}, newest first."
        return "All stories", "Every development of every story, newest first."

    def _put(self, docs: Iterable[Document]) -> set[str]:
        docs = list(docs)
        self.conn.executemany(
            "INSERT INTO documents (path, content_type, body, gzip, br, etag, last_modified) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
            "content_type = excluded.content_type, body = excluded.body, "
            "gzip = excluded.gzip, br = excluded.br, etag = excluded.etag, "
            "last_modified = excluded.last_modified",
            [(d.path, d.content_type, d.body, d.gzip, d.br, d.etag, d.last_modified) for d in docs],
        )
        return {d.path for d in docs}

    def _feed_docs(
        self, view: FeedView, updated: str, formats: Iterable[FeedFormat] = FeedFormat
    ) -> list[Document]:
        return [
            Document.make(
                self.urls.feed_path(view.scope, fmt, view.archive),
                fmt.content_type,
                render(view, fmt),
                updated,
            )
            for fmt in formats
        ]

    def _record_archive(self, batch: _Batch, scope: Scope, page: int) -> None:
        """Record archive page ``page`` of ``scope`` as it is now: it just filled.

        Its entries are the scope's tail in memory when that holds the whole page, else
        read from the file. Each is recorded by the version of its development: the one
        in memory when the fold holds it, else the last one written
        (``development_versions`` holds every version a batch ended with)."""
        label, updated, _ = self._scopes[scope]
        low = (page - 1) * self.feed_size + 1
        tail = self._tails.get(scope)
        found: list[tuple[str, str]]
        if tail is not None and len(tail) == self.feed_size and tail[0][0] == low:
            found = [(slug, dev_id) for _, slug, dev_id in reversed(tail)]
        else:
            self._write_entries(batch)
            found = self.conn.execute(
                "SELECT slug, development_id FROM memberships "
                "WHERE scope = ? AND ordinal BETWEEN ? AND ? ORDER BY ordinal DESC",
                (scope.name, low, page * self.feed_size),
            ).fetchall()
        rows = []
        shown: dict[str, tuple[str, str]] = {}
        for slot, (slug, dev_id) in enumerate(found):
            story = self._story(slug)
            assert story is not None, slug
            dev = story.developments.get(dev_id)
            if dev is not None:
                version = dev.updated_position
                if (slug, dev_id) in batch.dirty_devs:
                    # written at the end of the batch, or before a later event changes it
                    batch.archived.add((slug, dev_id))
            else:
                version = self._last_version(slug, dev_id)
            header = shown.get(slug)
            if header is None:
                header = shown[slug] = (story.title, orjson.dumps(story.topics).decode())
            rows.append((scope.name, page, slot, slug, dev_id, version, *header))
        self.conn.executemany(
            "INSERT INTO archive_entries (scope, page, slot, slug, development_id, "
            "dev_position, story_title, story_topics) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        title, subtitle = self._feed_meta(scope, label)
        self.conn.execute(
            "INSERT INTO archive_pages (scope, page, title, subtitle, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (scope.name, page, title, subtitle, updated),
        )

    def _last_version(self, slug: str, dev_id: str) -> int:
        """The position of the last version of a development written to the file."""
        row = self.conn.execute(
            "SELECT MAX(position) FROM development_versions WHERE slug = ? AND development_id = ?",
            (slug, dev_id),
        ).fetchone()
        assert row is not None and row[0] is not None, (slug, dev_id)
        return int(row[0])

    def _keep_version(self, slug: str, dev: Development) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO development_versions (slug, development_id, position, state) "
            "VALUES (?, ?, ?, ?)",
            (slug, dev.development_id, dev.updated_position, dev.model_dump_json()),
        )

    def pending_archives(self, limit: int) -> list[tuple[Scope, int]]:
        """Archive pages recorded but not rendered yet, in the order they filled (their
        rowid): pages that fill together share developments (a development enters its
        story's, every story's and its topics' scopes at once), so rendering them
        together finds those entries in the entry cache. In the order of the scopes'
        names, rendering every page after a rebuild took 35–45 % longer."""
        rows = self.conn.execute(
            "SELECT scope, page FROM archive_pages WHERE rendered = 0 ORDER BY rowid LIMIT ?",
            (limit,),
        ).fetchall()
        return [(Scope.from_name(scope), int(page)) for scope, page in rows]

    def render_archive(self, scope: Scope, page: int) -> set[str]:
        """Render one recorded archive page in every format, in its own transaction."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            paths = self._render_recorded(scope, page)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return paths

    def render_pending_archives(self, limit: int = 1_000_000) -> set[str]:
        """Render up to ``limit`` recorded archive pages; return the paths written."""
        paths: set[str] = set()
        for scope, page in self.pending_archives(limit):
            paths |= self.render_archive(scope, page)
        return paths

    def _render_recorded(self, scope: Scope, page: int) -> set[str]:
        meta = self.conn.execute(
            "SELECT title, subtitle, updated_at, rendered FROM archive_pages "
            "WHERE scope = ? AND page = ?",
            (scope.name, page),
        ).fetchone()
        if meta is None:
            return set()
        title, subtitle, updated, rendered = meta
        if rendered:
            return set()
        entries: list[EntryView] = []
        for slug, dev_id, version, story_title, topics in self.conn.execute(
            "SELECT slug, development_id, dev_position, story_title, story_topics "
            "FROM archive_entries WHERE scope = ? AND page = ? ORDER BY slot",
            (scope.name, page),
        ):
            story = Story(
                slug=slug,
                title=story_title,
                summary="",
                topics=orjson.loads(topics),
                opened_at="",
                updated_at="",
                version=0,
                last_position=0,
            )
            entries.append(
                EntryView(
                    story,
                    development_id=dev_id,
                    version=version,
                    load=self._version_loader(slug, dev_id, version),
                )
            )
        view = FeedView(
            scope=scope,
            title=title,
            subtitle=subtitle,
            updated=updated,
            entries=entries,
            urls=self.urls,
            archive=page,
            archive_count=page,
            self_query=self.self_query,
            entry_cache=self._entry_cache,
        )
        paths = self._put(self._feed_docs(view, updated))
        self.conn.execute(
            "UPDATE archive_pages SET rendered = 1 WHERE scope = ? AND page = ?",
            (scope.name, page),
        )
        return paths

    def _render(self, changes: Changes) -> None:
        for scope in sorted(changes.scopes):
            changes.paths |= self._render_feed(scope)
        if changes.index:
            changes.paths |= self._render_index()
        for slug in sorted(changes.stories):
            changes.paths |= self._render_story(slug)
        for scope in sorted(changes.scopes):
            if scope.kind is ScopeKind.TOPIC:
                changes.paths |= self._render_topic(scope)

    def _scope_row(self, scope: Scope) -> tuple[str, str, int]:
        row = self.conn.execute(
            "SELECT label, updated_at, entries FROM scopes WHERE scope = ?", (scope.name,)
        ).fetchone()
        return (str(row[0]), str(row[1]), int(row[2]))

    def _top(self, scope: Scope) -> list[EntryView]:
        """The scope's subscription entries, most recently touched first: the fold's
        developments where it holds them, else each by its current version, read from
        the file only if the entry cache has not rendered that version."""
        views: list[EntryView] = []
        for slug, dev_id, version in self.conn.execute(
            "SELECT r.slug, r.development_id, h.version FROM recent_entries r "
            "JOIN development_heads h ON h.slug = r.slug AND h.development_id = r.development_id "
            "WHERE r.scope = ? ORDER BY r.touched DESC, r.ordinal DESC LIMIT ?",
            (scope.name, self.feed_size),
        ).fetchall():
            story = self._story(slug)
            assert story is not None, slug
            dev = story.developments.get(dev_id)
            if dev is not None:
                views.append(EntryView(story, dev))
            else:
                views.append(
                    EntryView(
                        story,
                        development_id=dev_id,
                        version=version,
                        load=self._version_loader(slug, dev_id, version),
                    )
                )
        return views

    def _version_loader(self, slug: str, dev_id: str, version: int) -> Callable[[], Development]:
        """A function reading one stored version of a development."""

        def load() -> Development:
            row = self.conn.execute(
                "SELECT state FROM development_versions "
                "WHERE slug = ? AND development_id = ? AND position = ?",
                (slug, dev_id, version),
            ).fetchone()
            assert row is not None, (slug, dev_id, version)
            return Development.model_validate_json(row[0])

        return load

    def render_feed(self, scope: Scope, fmt: FeedFormat) -> set[str]:
        """Render one format of a scope's subscription document now, in its own
        transaction (a request waits for it; its render item stays pending for the
        rest)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            paths = self._render_feed(scope, (fmt,))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return paths

    def _render_feed(self, scope: Scope, formats: Iterable[FeedFormat] = FeedFormat) -> set[str]:
        label, updated, count = self._scope_row(scope)
        title, subtitle = self._feed_meta(scope, label)
        view = FeedView(
            scope=scope,
            title=title,
            subtitle=subtitle,
            updated=updated,
            entries=self._top(scope),
            urls=self.urls,
            archive=None,
            archive_count=count // self.feed_size,
            self_query=self.self_query,
            entry_cache=self._entry_cache,
        )
        return self._put(self._feed_docs(view, updated, formats))

    def _render_index(self) -> set[str]:
        stories: list[Story] = []
        updated = ""
        for header, latest in self.conn.execute(
            "SELECT header, latest FROM stories ORDER BY last_position DESC LIMIT ?",
            (INDEX_STORIES,),
        ).fetchall():
            story = Story.model_validate_json(header)
            if latest is not None:
                self._load_dev(story, latest)
            stories.append(story)
            updated = max(updated, story.updated_at)
        topics = sorted(
            (scope[len("topics/") :], label)
            for scope, label in self.conn.execute(
                "SELECT scope, label FROM scopes WHERE scope LIKE 'topics/%'"
            )
        )
        body = render_index(stories, self.urls, topics)
        return self._put([Document.make("/", HTML, body, updated)])

    def _render_story(self, slug: str) -> set[str]:
        row = self.conn.execute("SELECT header FROM stories WHERE slug = ?", (slug,)).fetchone()
        if row is None:
            return set()
        story = Story.model_validate_json(row[0])
        self._all_devs(story)
        story.followups = {
            followup_id: FollowUp.model_validate_json(state)
            for followup_id, state in self.conn.execute(
                "SELECT followup_id, state FROM followups WHERE slug = ? ORDER BY position",
                (slug,),
            )
        }
        body = render_story(story, self.urls)
        path = self.urls.story_page(slug)[len(self.urls.base) :]
        return self._put([Document.make(path, HTML, body, story.updated_at)])

    def _render_topic(self, scope: Scope) -> set[str]:
        label, updated, _ = self._scope_row(scope)
        body = render_topic(scope.key, label, self._top(scope), self.urls)
        path = self.urls.topic_page(scope.key)[len(self.urls.base) :]
        return self._put([Document.make(path, HTML, body, updated)])

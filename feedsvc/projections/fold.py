"""The fold: events into the state the read model's documents are made of.

:class:`Fold` applies one event at a time to what it holds in memory (story headers,
the developments touched recently and their scope memberships, every scope's row and
last entries), and records in a :class:`Batch` what the batch changed; at the end of
the batch :meth:`Fold.flush` writes that through :class:`~feedsvc.projections.tables.Tables`.
Which documents the batch changed is a :class:`Changes`, for the renderer.

How feeds are paged (RFC 5005): every development that enters a scope takes the next
*ordinal* of that scope. Archive page ``k`` holds ordinals ``(k-1)·N+1 … k·N`` with the
entries as they were at the event that filled it, so it never changes afterwards. At
that event the page is only *recorded* (which version of which development, under which
story title), to be rendered later from that record. The subscription document holds
the ``N`` entries touched most recently (reported, quoted, corrected or retracted), so a
correction to an old entry reaches subscribers with its ``updated`` bumped.

The memory is a cache of what the file holds after the last commit: dropped whole if a
batch rolls back, and bounded to ``cached_developments`` developments (the least
recently touched go first). Nothing here reads the wall clock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import orjson

from feedsvc.domain.events import RecordedEvent, slugify
from feedsvc.domain.story import Development, FollowUp, Story
from feedsvc.projections.tables import ArchiveEntry, Tables
from feedsvc.rendering.model import Scope, ScopeKind, feed_titles

ALL = Scope(ScopeKind.ALL)
CACHED_DEVELOPMENTS = 5_000
"""How many developments a fold keeps in memory between batches, the most recently
used. Each costs ~11 KB (its pydantic models, body, quotes and memberships): 5,000 keep
a rebuild of a 1,000,000-event log near 220 MB where 20,000 took it past 380 MB, for
~6 % more folding time (developments read back when a quote or correction names one
that was dropped; bench/ANALYSIS.md)."""
CACHED_STORIES = 10_000
"""Past this many story headers in memory, a fold forgets them all and reads again."""
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
class Batch:
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


class Fold:
    """The fold's memory over one read model, and the rules that change it."""

    def __init__(
        self, tables: Tables, feed_size: int, cached_developments: int = CACHED_DEVELOPMENTS
    ) -> None:
        self.tables = tables
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
        since the memory was last dropped: the archive page that fills is these."""
        self._untrimmed: dict[Scope, int] = {}
        """scope → rows written to its ``recent_entries`` since they were last trimmed
        to the feed's size (a scope missing here is trimmed when next written)."""

    # -- the memory ------------------------------------------------------------------

    def forget(self) -> None:
        """Drop everything held (it is read again from the file)."""
        self._stories.clear()
        self._recent.clear()
        self._memberships.clear()
        self._shown_in.clear()
        self._scopes.clear()
        self._tails.clear()
        self._untrimmed.clear()

    def committed(self, batch: Batch) -> None:
        """The batch is written: let go of what need not stay in memory."""
        for slug, _ in batch.dirty_followups:
            # written: read again when an event names one
            self._stories[slug].followups.clear()
        if len(self._stories) > CACHED_STORIES:
            self.forget()
        while len(self._recent) > self.cached_developments:
            (slug, dev_id), _ = self._recent.popitem(last=False)
            story = self._stories.get(slug)
            if story is not None:
                story.developments.pop(dev_id, None)
            self._memberships.pop((slug, dev_id), None)

    def holding(self) -> dict[str, int]:
        """How much the fold holds in memory: story headers, developments (bounded by
        ``cached_developments`` after each batch), their memberships, scopes."""
        return {
            "stories": len(self._stories),
            "developments": sum(len(story.developments) for story in self._stories.values()),
            "memberships": len(self._memberships),
            "scopes": len(self._scopes),
        }

    def story(self, slug: str) -> Story | None:
        """The story's header as of the fold so far (None if it was never opened)."""
        story = self._stories.get(slug)
        if story is None:
            header = self.tables.story_header(slug)
            if header is None:
                return None
            story = self._stories[slug] = Story.model_validate_json(header)
        return story

    def dev(self, story: Story, dev_id: str) -> Development | None:
        """A development of a story the fold holds, loaded if it is not yet."""
        key = (story.slug, dev_id)
        dev = story.developments.get(dev_id)
        if dev is None:
            state = self.tables.development_state(*key)
            if state is None:
                return None
            dev = story.developments[dev_id] = Development.model_validate_json(state)
        self._recent[key] = None
        self._recent.move_to_end(key)
        return dev

    def held(self, slug: str, dev_id: str) -> tuple[Story, Development | None]:
        """A story's header and, if the fold holds it, one of its developments."""
        story = self.story(slug)
        assert story is not None, slug
        return story, story.developments.get(dev_id)

    # -- folding -----------------------------------------------------------------------

    def apply(self, batch: Batch, event: RecordedEvent, changes: Changes) -> None:
        """Fold one event into the memory, recording in ``batch`` what to write and in
        ``changes`` what to render."""
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
        found = self.story(slug)
        if found is None:
            return  # events of a stream that was never opened carry no story
        story = found
        dev_id = event.data.get("development_id") if event.type in _DEV_EVENTS else None
        if dev_id is not None:
            dev = self.dev(story, dev_id)
            if dev is None:
                return
            if (slug, dev_id) in batch.archived:
                batch.archived.discard((slug, dev_id))
                self.tables.keep_version(
                    (slug, dev_id, dev.updated_position, dev.model_dump_json())
                )
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
            state = self.tables.followup_state(story.slug, followup_id)
            if state is not None:
                story.followups[followup_id] = FollowUp.model_validate_json(state)

    def _retag_devs(
        self,
        batch: Batch,
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
        dev_ids = self.tables.development_ids(story.slug)
        # of each written development, its memberships in the added scopes only
        written: dict[str, dict[Scope, int]] = {dev_id: {} for dev_id in dev_ids}
        by_name = {scope.name: scope for scope in added}
        for dev_id, name, ordinal in self.tables.memberships_in(story.slug, list(by_name)):
            found = written.get(dev_id)
            if found is not None:  # else reported in this batch: not in the heads yet
                found[by_name[name]] = ordinal
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

    def _story_scopes(self, batch: Batch, story: Story) -> set[Scope]:
        """Every scope showing the story or one of its developments."""
        shown = self._shown_in.get(story.slug)
        if shown is None:
            self._write_entries(batch)
            shown = self._shown_in[story.slug] = {
                Scope.from_name(name) for name in self.tables.scopes_showing(story.slug)
            }
        return {story_scope(story.slug), ALL, *(topic_scope(t) for t in story.topics), *shown}

    def _member_of(self, slug: str, dev_id: str) -> dict[Scope, int]:
        """The scopes a development is in, each with its ordinal there."""
        key = (slug, dev_id)
        found = self._memberships.get(key)
        if found is None:
            found = self._memberships[key] = {
                Scope.from_name(name): ordinal
                for name, ordinal in self.tables.memberships_of(slug, dev_id)
            }
        return found

    def _join_scopes(
        self,
        batch: Batch,
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
        batch: Batch,
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
            found = self._scopes[scope] = self.tables.scope_row(scope.name) or (
                label or scope.key,
                event.recorded_at,
                0,
            )
        return found

    def _touch_scope(
        self,
        batch: Batch,
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

    # -- archive pages -------------------------------------------------------------

    def _record_archive(self, batch: Batch, scope: Scope, page: int) -> None:
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
            found = self.tables.page_entries(scope.name, low, page * self.feed_size)
        rows: list[ArchiveEntry] = []
        shown: dict[str, tuple[str, str]] = {}
        for slot, (slug, dev_id) in enumerate(found):
            story = self.story(slug)
            assert story is not None, slug
            dev = story.developments.get(dev_id)
            if dev is not None:
                version = dev.updated_position
                if (slug, dev_id) in batch.dirty_devs:
                    # written at the end of the batch, or before a later event changes it
                    batch.archived.add((slug, dev_id))
            else:
                version = self.tables.last_version(slug, dev_id)
            header = shown.get(slug)
            if header is None:
                header = shown[slug] = (story.title, orjson.dumps(story.topics).decode())
            rows.append((scope.name, page, slot, slug, dev_id, version, *header))
        story = self.story(scope.key) if scope.kind is ScopeKind.STORY else None
        title, subtitle = feed_titles(scope, label, story)
        self.tables.record_archive(scope.name, page, (title, subtitle, updated), rows)

    # -- writing a batch -----------------------------------------------------------

    def _write_entries(self, batch: Batch) -> None:
        """Insert the batch's new scope memberships (before anything reads them)."""
        if not batch.new_entries:
            return
        self.tables.insert_memberships(sorted(batch.new_entries))
        batch.new_entries.clear()

    def _write_recent(self, batch: Batch) -> None:
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
        trim.sort()
        self.tables.put_recent(upserts, trim)

    def flush(self, batch: Batch) -> None:
        """Write what the batch changed."""
        self._write_entries(batch)
        self._write_recent(batch)
        dirty = [
            (slug, dev_id, self._stories[slug].developments[dev_id])
            for slug, dev_id in sorted(batch.dirty_devs)
        ]
        self.tables.keep_versions(
            [
                (slug, dev_id, dev.updated_position, dev.model_dump_json())
                for slug, dev_id, dev in dirty
            ]
        )
        self.tables.put_heads(
            [
                (slug, dev_id, dev.occurred_start, dev.reported_position, dev.updated_position)
                for slug, dev_id, dev in dirty
            ]
        )
        self.tables.put_stories(
            [
                (
                    slug,
                    self._stories[slug].model_dump_json(exclude=_NOT_IN_HEADER),
                    self.tables.latest_development(slug),
                    self._stories[slug].last_position,
                )
                for slug in sorted(batch.dirty_stories)
            ]
        )
        new, changed = [], []
        for (slug, followup_id), expected in sorted(batch.dirty_followups.items()):
            state = self._stories[slug].followups[followup_id].model_dump_json()
            if expected is None:
                changed.append((state, slug, followup_id))
            else:
                new.append((slug, followup_id, expected, state))
        self.tables.put_followups(new, changed)
        self.tables.put_scopes(
            [
                (scope.name, *self._scopes[scope])
                for scope in sorted(batch.dirty_scopes, key=lambda s: s.name)
            ]
        )

"""Rendering: the read model's documents, from what the fold holds and the tables keep.

Feed documents are assembled from entry fragments (:class:`~feedsvc.rendering.feeds.EntryCache`
renders each entry once per version and format); pages through
:mod:`feedsvc.rendering.pages`. A document's entries are the fold's developments where
it holds them, else their stored versions, read only if the entry cache has not
rendered that version. Every time in a document comes from the events, so the same log
always gives the same bytes.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import orjson

from feedsvc.domain.story import Development, FollowUp, Story
from feedsvc.projections.documents import Document
from feedsvc.projections.fold import Changes, Fold
from feedsvc.projections.tables import Tables
from feedsvc.rendering.feeds import EntryCache, render
from feedsvc.rendering.model import (
    EntryView,
    FeedFormat,
    FeedView,
    Scope,
    ScopeKind,
    Urls,
    feed_titles,
)
from feedsvc.rendering.pages import render_index, render_story, render_topic, story_article

INDEX_STORIES = 200
"""The index page lists this many stories, the most recently changed first."""
HTML = "text/html; charset=utf-8"


ARTICLE_CACHE_BYTES = 8 << 20
"""What a renderer keeps of story pages' articles (~2–5 KB each, more in memory when
they hold characters beyond Latin-1): the pages of the few stories changing now, whose
pages would otherwise be rendered whole again after each change."""


class ArticleCache:
    """Story pages' articles by (base URL, story, development, version), the least
    recently used dropped past :data:`ARTICLE_CACHE_BYTES` of memory."""

    def __init__(self, max_bytes: int = ARTICLE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._articles: OrderedDict[tuple[str, str, str, int], str] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, str, str, int]) -> str | None:
        """The article kept for ``key``, if any."""
        found = self._articles.get(key)
        if found is not None:
            self._articles.move_to_end(key)
        return found

    def put(self, key: tuple[str, str, str, int], article: str) -> None:
        """Keep an article."""
        if key in self._articles:
            return
        self._articles[key] = article
        self._bytes += sys.getsizeof(article)
        while self._bytes > self.max_bytes and len(self._articles) > 1:
            _, dropped = self._articles.popitem(last=False)
            self._bytes -= sys.getsizeof(dropped)


class Renderer:
    """Writes the documents of one read model generation."""

    def __init__(
        self,
        tables: Tables,
        fold: Fold,
        urls: Urls,
        feed_size: int,
        self_query: str | None = None,
    ) -> None:
        self.tables = tables
        self.fold = fold
        self.urls = urls
        self.feed_size = feed_size
        self.self_query = self_query
        """The query string every feed document's self link carries (``as_of=…`` for a
        projection built to answer one), or None."""
        self.entry_cache = EntryCache()
        self.articles = ArticleCache()

    def render(self, changes: Changes) -> None:
        """Render every document ``changes`` names; add their paths to it."""
        for scope in sorted(changes.scopes):
            changes.paths |= self.feed(scope)
        if changes.index:
            changes.paths |= self.index()
        for slug in sorted(changes.stories):
            changes.paths |= self.story_page(slug)
        for scope in sorted(changes.scopes):
            if scope.kind is ScopeKind.TOPIC:
                changes.paths |= self.topic_page(scope)

    def feed_docs(
        self, view: FeedView, updated: str, formats: Iterable[FeedFormat] = FeedFormat
    ) -> list[Document]:
        """The documents of a feed view, one per format."""
        return [
            Document.make(
                self.urls.feed_path(view.scope, fmt, view.archive),
                fmt.content_type,
                render(view, fmt),
                updated,
            )
            for fmt in formats
        ]

    def _put(self, docs: Sequence[Document]) -> set[str]:
        self.tables.put_documents(docs)
        return {d.path for d in docs}

    def _titles(self, scope: Scope, label: str) -> tuple[str, str]:
        story = self.fold.story(scope.key) if scope.kind is ScopeKind.STORY else None
        return feed_titles(scope, label, story)

    def _scope_row(self, scope: Scope) -> tuple[str, str, int]:
        row = self.tables.scope_row(scope.name)
        assert row is not None, scope
        return row

    def _stored(self, story: Story, dev_id: str, version: int) -> EntryView:
        """An entry of a stored version of a development, read only if the entry cache
        has not rendered that version."""

        def load() -> Development:
            state = self.tables.version_state(story.slug, dev_id, version)
            return Development.model_validate_json(state)

        return EntryView(story, development_id=dev_id, version=version, load=load)

    def _load_dev(self, story: Story, dev_id: str) -> Development | None:
        """Load a development into a story read for rendering (not the fold's)."""
        if dev_id not in story.developments:
            state = self.tables.development_state(story.slug, dev_id)
            if state is None:
                return None
            story.developments[dev_id] = Development.model_validate_json(state)
        return story.developments[dev_id]

    def _top(self, scope: Scope) -> list[EntryView]:
        """The scope's subscription entries, most recently touched first: the fold's
        developments where it holds them, else each by its current version."""
        views: list[EntryView] = []
        for slug, dev_id, version in self.tables.top_entries(scope.name, self.feed_size):
            story, dev = self.fold.held(slug, dev_id)
            views.append(
                EntryView(story, dev) if dev is not None else self._stored(story, dev_id, version)
            )
        return views

    # -- the documents ---------------------------------------------------------------

    def feed(self, scope: Scope, formats: Iterable[FeedFormat] = FeedFormat) -> set[str]:
        """A scope's subscription document, in ``formats``."""
        label, updated, count = self._scope_row(scope)
        title, subtitle = self._titles(scope, label)
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
            entry_cache=self.entry_cache,
        )
        return self._put(self.feed_docs(view, updated, formats))

    def archive(
        self, scope: Scope, page: int, formats: Sequence[FeedFormat] = tuple(FeedFormat)
    ) -> set[str]:
        """A recorded archive page in ``formats``, from its record (nothing if it is
        not recorded, or rendered already). It is marked rendered once written in
        every format; a page written in some is written again, the same bytes, then."""
        meta = self.tables.archive_page(scope.name, page)
        if meta is None:
            return set()
        title, subtitle, updated, rendered = meta
        if rendered:
            return set()
        entries: list[EntryView] = []
        for slug, dev_id, version, story_title, topics in self.tables.archive_entries(
            scope.name, page
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
            entries.append(self._stored(story, dev_id, version))
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
            entry_cache=self.entry_cache,
        )
        paths = self._put(self.feed_docs(view, updated, formats))
        if set(formats) == set(FeedFormat):
            self.tables.archive_rendered(scope.name, page)
        return paths

    def index(self) -> set[str]:
        """The index page: the stories changed most recently, and every topic."""
        stories: list[Story] = []
        updated = ""
        for header, latest in self.tables.latest_stories(INDEX_STORIES):
            story = Story.model_validate_json(header)
            if latest is not None:
                self._load_dev(story, latest)
            stories.append(story)
            updated = max(updated, story.updated_at)
        topics = sorted(
            (scope[len("topics/") :], label) for scope, label in self.tables.scope_labels("topics/")
        )
        body = render_index(stories, self.urls, topics)
        return self._put([Document.make("/", HTML, body, updated)])

    def story_page(self, slug: str) -> set[str]:
        """A story's page: every development and follow-up. Each development's article
        is rendered once per version and kept (a page of a long story is otherwise
        rendered whole again after each change); only developments whose article is not
        kept, or that a follow-up links to, are read."""
        header = self.tables.story_header(slug)
        if header is None:
            return set()
        story = Story.model_validate_json(header)
        articles: list[str] = []
        for dev_id, version in self.tables.timeline(slug):
            key = (self.urls.base, slug, dev_id, version)
            article = self.articles.get(key)
            if article is None:
                dev = self._load_dev(story, dev_id)
                assert dev is not None, (slug, dev_id)
                article = story_article(story, dev, self.urls)
                self.articles.put(key, article)
            articles.append(article)
        story.followups = {
            followup_id: FollowUp.model_validate_json(state)
            for followup_id, state in self.tables.followups(slug)
        }
        for followup in story.followups.values():
            for linked in (followup.development_id, followup.resolved_by):
                if linked:
                    self._load_dev(story, linked)
        body = render_story(story, self.urls, articles)
        path = self.urls.story_page(slug)[len(self.urls.base) :]
        return self._put([Document.make(path, HTML, body, story.updated_at)])

    def topic_page(self, scope: Scope) -> set[str]:
        """A topic's page: its subscription entries."""
        label, updated, _ = self._scope_row(scope)
        body = render_topic(scope.key, label, self._top(scope), self.urls)
        path = self.urls.topic_page(scope.key)[len(self.urls.base) :]
        return self._put([Document.make(path, HTML, body, updated)])

"""Documents assembled from entry fragments are the documents built whole."""

from __future__ import annotations

import dataclasses

import pytest

from feedsvc.domain.story import Story
from feedsvc.rendering import FeedFormat, FeedView, Urls, render
from feedsvc.rendering.feeds import EntryCache

from .conftest import story_view
from .whole import render_whole


def _views(story: Story, before: Story) -> list[FeedView]:
    """Current, archive, empty and as-of views of the story, before and after its
    correction and retraction, with subsets of the entries in other orders."""
    current = story_view(story)
    views = [
        current,
        story_view(before),
        story_view(story, archive=1, archive_count=3),
        story_view(story, archive=3, archive_count=3),
        story_view(story, archive_count=2),
        story_view(story, entries=False),
        story_view(story, archive=2, archive_count=2, entries=False),
        dataclasses.replace(current, self_query="as_of=2017-10-12T16%3A00%3A00Z"),
        dataclasses.replace(current, entries=current.entries[::-1]),
        dataclasses.replace(current, entries=current.entries[1::2]),
        dataclasses.replace(current, entries=current.entries[:1]),
        dataclasses.replace(current, urls=Urls("http://other.example.net/base")),
    ]
    return views


@pytest.mark.parametrize("fmt", list(FeedFormat))
def test_assembled_documents_are_the_documents_built_whole(
    story: Story, story_before: Story, fmt: FeedFormat
) -> None:
    views = _views(story, story_before)
    for view in views:  # every entry rendered for this document alone
        assert render(view, fmt) == render_whole(view, fmt), view
    cache = EntryCache()
    for _ in range(2):  # fragments rendered for one document, reused by the others
        for view in views:
            shared = dataclasses.replace(view, entry_cache=cache)
            assert render(shared, fmt) == render_whole(view, fmt), view


@pytest.mark.parametrize("fmt", list(FeedFormat))
def test_head_text_that_looks_like_where_entries_go_changes_nothing(
    story: Story, fmt: FeedFormat
) -> None:
    for text in ['"items": [],', '\n  "items": [],\n', "  <entry>\n</feed>", "<item></channel>"]:
        for entries in (True, False):
            view = dataclasses.replace(
                story_view(story, entries=entries), title=text, subtitle=text
            )
            assert render(view, fmt) == render_whole(view, fmt)


def test_each_entry_is_serialized_once_per_format(story: Story) -> None:
    cache = EntryCache()
    view = dataclasses.replace(story_view(story), entry_cache=cache)
    render(view, FeedFormat.ATOM)
    entry = cache.entry(view, view.entries[0])
    fragment = entry.fragments[FeedFormat.ATOM]
    assert set(entry.fragments) == {FeedFormat.ATOM, FeedFormat.JSON}
    render(dataclasses.replace(view, archive=1, archive_count=1), FeedFormat.ATOM)
    assert entry.fragments[FeedFormat.ATOM] is fragment


def test_the_entry_cache_holds_at_most_its_bytes_and_renders_the_same(story: Story) -> None:
    """A cache too small for a document's entries keeps within its bound (the oldest
    entries go first) and still gives the same bytes as a document rendered whole."""
    view = story_view(story)
    roomy = EntryCache()
    render(dataclasses.replace(view, entry_cache=roomy), FeedFormat.JSON)
    per_entry = roomy.held_bytes // len(roomy)
    assert len(roomy) == len(view.entries) > 2

    tight = EntryCache(max_bytes=2 * per_entry)
    shared = dataclasses.replace(view, entry_cache=tight)
    for fmt in FeedFormat:
        assert render(shared, fmt) == render_whole(view, fmt)
        assert tight.held_bytes <= 2 * per_entry and len(tight) < len(view.entries)

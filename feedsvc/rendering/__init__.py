"""Rendering: feed documents (Atom, RSS, JSON Feed) and HTML pages from folded stories.

Pure: views in, bytes out, no clock and no I/O, so the same input always renders to the
same bytes.
"""

from feedsvc.rendering.feeds import render, render_atom, render_json, render_rss
from feedsvc.rendering.model import (
    EntryView,
    FeedFormat,
    FeedView,
    Scope,
    ScopeKind,
    Urls,
    entry_id,
    feed_id,
)
from feedsvc.rendering.pages import render_index, render_story, render_topic

__all__ = [
    "EntryView",
    "FeedFormat",
    "FeedView",
    "Scope",
    "ScopeKind",
    "Urls",
    "entry_id",
    "feed_id",
    "render",
    "render_atom",
    "render_index",
    "render_json",
    "render_rss",
    "render_story",
    "render_topic",
]

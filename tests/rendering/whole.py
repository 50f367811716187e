"""Feed documents built whole, every entry through feedgen (or orjson) in one document:
the reference the documents assembled from entry fragments must equal byte for byte."""

from __future__ import annotations

from feedsvc.rendering import feeds
from feedsvc.rendering.model import FeedFormat, FeedView


def render_whole(view: FeedView, fmt: FeedFormat) -> bytes:
    """``view`` in ``fmt``, each entry rendered afresh and serialized with the document."""
    entries = [feeds._render_entry(view, item) for item in view.entries]
    if fmt is FeedFormat.JSON:
        items = [
            feeds._json_item(entry, item.story, item.development)
            for entry, item in zip(entries, view.entries, strict=True)
        ]
        return feeds._json_document(view, items)
    build = feeds._atom_document if fmt is FeedFormat.ATOM else feeds._rss_document
    return build(view, entries)

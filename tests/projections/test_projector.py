"""The projector folds the log into documents: deterministic, paged, corrected."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from typing import Any

import feedparser
import pytest

from bench import dataset
from feedsvc.domain.events import RecordedEvent, ValidEvent, validate_new_event
from feedsvc.domain.story import Development, FollowUp, Story
from feedsvc.ndjson import read_ndjson
from feedsvc.projections import render as render_module
from feedsvc.projections.fold import Batch, Fold
from feedsvc.projections.projector import Changes, Projector
from feedsvc.projections.readmodel import ReadModel, connect
from feedsvc.projections.render import ArticleCache
from feedsvc.rendering.feeds import render
from feedsvc.rendering.model import FeedFormat, FeedView, Urls, entry_id
from feedsvc.rendering.pages import render_story, story_article
from tests.conftest import SEED, SEED_STREAM, opened, reported
from tests.rendering.whole import render_whole

URLS = Urls("http://news.example.org")


def documents(conn: sqlite3.Connection) -> dict[str, bytes]:
    """path → body of every document in a read model."""
    return {p: bytes(b) for p, b in conn.execute("SELECT path, body FROM documents")}


def recorded(events: list[dict[str, Any]], stream: str, start: int = 1) -> list[RecordedEvent]:
    """Give raw events the places the log would."""
    out = []
    for offset, raw in enumerate(events):
        valid: ValidEvent = validate_new_event(raw)
        position = start + offset
        out.append(
            RecordedEvent(
                position,
                valid.id,
                stream,
                position,
                valid.type,
                valid.schema_version,
                valid.occurred_at,
                f"2020-01-01T00:00:{position % 60:02d}.{position:06d}Z",
                valid.data_json,
                valid.metadata_json,
            )
        )
    return out


def test_batching_does_not_change_a_single_byte() -> None:
    events = read_ndjson(SEED)
    one_by_one = connect(":memory:")
    projector = Projector(one_by_one, URLS, feed_size=4)
    for event in events:
        projector.apply([event])
        projector.render_pending_archives(1)  # archive pages rendered as they fill
    at_once = connect(":memory:")
    rebuilt = Projector(at_once, URLS, feed_size=4)
    rebuilt.render_changes(rebuilt.apply(events, render_now=False))
    rebuilt.render_pending_archives()  # ... or all at the end, as after a rebuild
    first, second = documents(one_by_one), documents(at_once)
    assert first == second
    assert "/feeds/all.atom" in first and "/stories/" + SEED_STREAM in first
    assert f"/feeds/stories/{SEED_STREAM}/archive/2.json" in first
    assert projector.position() == rebuilt.position() == len(events)


def test_applying_a_batch_twice_changes_nothing() -> None:
    events = read_ndjson(SEED)
    conn = connect(":memory:")
    projector = Projector(conn, URLS)
    projector.apply(events)
    before = documents(conn)
    assert projector.apply(events).paths == set()
    assert documents(conn) == before


def test_a_correction_keeps_the_id_bumps_updated_and_shows_the_note() -> None:
    events = recorded([opened("s"), reported("d1", headline="Mayor resigns")], "s")
    correction = recorded(
        [
            {
                "type": "development.corrected",
                "occurred_at": "2020-01-02",
                "data": {
                    "development_id": "d1",
                    "changes": {"headline": "Deputy mayor resigns"},
                    "note": "An earlier version named the wrong official.",
                },
            }
        ],
        "s",
        start=3,
    )
    conn = connect(":memory:")
    projector = Projector(conn, URLS)
    projector.apply(events)
    model = ReadModel(":memory:", conn)
    before = feedparser.parse(model.document("/feeds/stories/s.atom").body)  # type: ignore[union-attr]
    projector.apply(correction)
    after = feedparser.parse(model.document("/feeds/stories/s.atom").body)  # type: ignore[union-attr]
    assert before.entries[0].id == after.entries[0].id == entry_id("s", "d1")
    assert after.entries[0].title == "Deputy mayor resigns"
    assert after.entries[0].updated_parsed > before.entries[0].updated_parsed
    assert "An earlier version named the wrong official." in after.entries[0].summary


def test_a_retraction_stays_in_the_feed_marked() -> None:
    events = recorded(
        [
            opened("s"),
            reported("d1"),
            {
                "type": "development.retracted",
                "occurred_at": "2020-01-02",
                "data": {"development_id": "d1", "reason": "The source withdrew it."},
            },
        ],
        "s",
    )
    conn = connect(":memory:")
    Projector(conn, URLS).apply(events)
    feed = feedparser.parse(ReadModel(":memory:", conn).document("/feeds/stories/s.rss").body)  # type: ignore[union-attr]
    assert len(feed.entries) == 1
    assert "Retracted" in feed.entries[0].title
    assert "The source withdrew it." in feed.entries[0].summary


def test_archive_pages_wait_in_the_order_they_filled() -> None:
    """Pages that fill together share their entries: rendered in that order (not scope
    by scope), each entry is found in the entry cache (bench.scale: every archive page of
    the 20,000-event rebuild 25–30 % faster)."""
    raw = [opened("s")] + [reported(f"d{i}") for i in range(1, 11)]
    projector = Projector(connect(":memory:"), URLS, feed_size=3)
    projector.apply(recorded(raw, "s"))
    waiting = projector.pending_archives(100)
    assert {scope.name for scope, _ in waiting} == {"all", "stories/s"}
    assert [page for _, page in waiting] == [1, 1, 2, 2, 3, 3]


def test_archive_pages_are_frozen_once_full_and_linked() -> None:
    raw = [opened("s")] + [reported(f"d{i}") for i in range(1, 8)]
    conn = connect(":memory:")
    projector = Projector(conn, URLS, feed_size=3)
    projector.apply(recorded(raw, "s"))
    model = ReadModel(":memory:", conn)
    assert model.document("/feeds/stories/s/archive/1.atom") is None  # recorded, not rendered
    assert len(projector.render_pending_archives()) == 12  # 2 pages, 3 formats, story and all
    page1 = model.document("/feeds/stories/s/archive/1.atom")
    page2 = model.document("/feeds/stories/s/archive/2.atom")
    assert page1 is not None and page2 is not None
    assert model.document("/feeds/stories/s/archive/3.atom") is None  # 7 entries: 2 full pages
    assert [e.id for e in feedparser.parse(page1.body).entries] == [
        entry_id("s", f"d{i}") for i in (3, 2, 1)
    ]
    current = feedparser.parse(model.document("/feeds/stories/s.atom").body)  # type: ignore[union-attr]
    links = {link.rel: link.href for link in current.feed.links}
    assert links["prev-archive"] == "http://news.example.org/feeds/stories/s/archive/2.atom"
    assert [e.id for e in current.entries] == [entry_id("s", f"d{i}") for i in (7, 6, 5)]
    # correcting an archived entry leaves the archive alone and surfaces it in the feed
    projector.apply(
        recorded(
            [
                {
                    "type": "development.corrected",
                    "occurred_at": "2020-01-02",
                    "data": {"development_id": "d1", "changes": {"body": "Fixed."}, "note": "n"},
                }
            ],
            "s",
            start=9,
        )
    )
    projector.render_pending_archives()
    assert model.document("/feeds/stories/s/archive/1.atom") == page1
    current = feedparser.parse(model.document("/feeds/stories/s.atom").body)  # type: ignore[union-attr]
    assert current.entries[0].id == entry_id("s", "d1")
    archive_links = {link.rel: link.href for link in feedparser.parse(page1.body).feed.links}
    assert archive_links["next-archive"].endswith("/feeds/stories/s/archive/2.atom")
    assert archive_links["current"].endswith("/feeds/stories/s.atom")


def test_topics_collect_developments_across_stories() -> None:
    events = recorded([opened("a", topics=["Courts"]), reported("d1")], "a") + recorded(
        [opened("b"), reported("d2", topics=["courts", "Budget"])], "b", start=3
    )
    conn = connect(":memory:")
    Projector(conn, URLS).apply(events)
    model = ReadModel(":memory:", conn)
    courts = feedparser.parse(model.document("/feeds/topics/courts.atom").body)  # type: ignore[union-attr]
    assert {e.id for e in courts.entries} == {entry_id("a", "d1"), entry_id("b", "d2")}
    assert model.document("/topics/budget") is not None
    assert model.document("/feeds/topics/budget.json") is not None


def test_changes_report_the_paths_they_rendered() -> None:
    conn = connect(":memory:")
    changes: Changes = Projector(conn, URLS).apply(recorded([opened("a")], "a"))
    assert {"/", "/stories/a", "/feeds/stories/a.atom", "/feeds/all.json"} <= changes.paths


def _mixed_log() -> list[RecordedEvent]:
    """Four stories with every kind of event, from the benchmark generator, and a
    retagging at the end that enters every development of a story into a new topic."""
    events = list(dataset.events(dataset.Size(stories=4, events=500)))
    slug = events[0].stream
    retag = {
        "type": "story.retagged",
        "occurred_at": "2020-01-01",
        "data": {"topics": ["Courts", "A new topic"], "places": []},
    }
    events += recorded([retag], slug, start=len(events) + 1)
    kinds = {event.type for event in events}
    assert {"development.corrected", "quote.attributed", "development.retracted"} <= kinds
    return events


def _finish(projector: Projector) -> dict[str, bytes]:
    projector.render_items(projector.pending_items())
    projector.render_pending_archives()
    return documents(projector.conn)


def test_what_the_fold_keeps_in_memory_never_changes_a_byte() -> None:
    events = _mixed_log()
    reference = Projector(connect(":memory:"), URLS, feed_size=25)
    reference.apply(events, render_now=False)
    expected = _finish(reference)
    assert any("/archive/" in path for path in expected)

    # one event at a time, keeping a single development in memory
    tight = Projector(connect(":memory:"), URLS, feed_size=25, cached_developments=1)
    for event in events:
        tight.apply([event], render_now=False)
    assert _finish(tight) == expected

    # uneven batches, each by a new projector: nothing in memory from the last one
    conn = connect(":memory:")
    for start in range(0, len(events), 37):
        Projector(conn, URLS, feed_size=25).apply(events[start : start + 37], render_now=False)
    assert _finish(Projector(conn, URLS, feed_size=25)) == expected


class _FailingFold(Fold):
    """A fold whose write at the end of one batch fails (a full disk, say)."""

    failed = False

    def flush(self, batch: Batch) -> None:
        super().flush(batch)
        if not self.failed and self.tables.position() == 0 and len(batch.dirty_devs) > 20:
            self.failed = True
            raise sqlite3.OperationalError("database or disk is full")


class _FailingOnce(Projector):
    """A projector with a :class:`_FailingFold`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fold = self.renderer.fold = self.failing = _FailingFold(self.tables, self.feed_size)

    @property
    def failed(self) -> bool:
        return self.failing.failed


def test_a_batch_that_rolls_back_leaves_nothing_behind_in_memory_or_file() -> None:
    events = _mixed_log()
    reference = Projector(connect(":memory:"), URLS, feed_size=25)
    reference.apply(events, render_now=False)
    expected = _finish(reference)

    projector = _FailingOnce(connect(":memory:"), URLS, feed_size=25)
    with contextlib.suppress(sqlite3.OperationalError):
        projector.apply(events[:300], render_now=False)
    assert projector.failed and projector.position() == 0
    assert documents(projector.conn) == {}
    for start in range(0, len(events), 100):
        projector.apply(events[start : start + 100], render_now=False)
    assert _finish(projector) == expected


def _expected(followup_id: str, description: str) -> dict[str, Any]:
    return {
        "type": "followup.expected",
        "occurred_at": "2017-10-12",
        "data": {"followup_id": followup_id, "description": description},
    }


def test_follow_ups_keep_their_order_and_stay_out_of_the_story_header() -> None:
    slug = "long-story"
    ids = [f"{name}-decision" for name in ("zeta", "alpha", "mid", "beta", "omega", "kappa")]
    resolve = {
        "type": "followup.resolved",
        "occurred_at": "2017-10-13",
        "data": {"followup_id": "alpha-decision", "note": "Decided in favour."},
    }
    events = recorded(
        [opened(slug), reported("d1"), *(_expected(f, f"Waiting on {f}") for f in ids), resolve],
        slug,
    )
    conn = connect(":memory:")

    def header() -> str:
        return str(conn.execute("SELECT header FROM stories WHERE slug = ?", (slug,)).fetchone()[0])

    Projector(conn, URLS, feed_size=25).apply(events[:3], render_now=False)
    before = len(header())
    # each follow-up by a new projector: what it folds onto is read back from the file
    for event in events[3:]:
        Projector(conn, URLS, feed_size=25).apply([event], render_now=False)
    assert "Waiting on" not in header() and len(header()) - before < 100  # version, times
    projector = Projector(conn, URLS, feed_size=25)
    projector.render_items(projector.pending_items())
    page = dict(documents(conn))[f"/stories/{slug}"].decode()
    pending, resolved = page.split("<h3>Resolved</h3>")
    shown = [f for f in ids if f"Waiting on {f}" in pending]
    assert shown == [f for f in ids if f != "alpha-decision"]  # in the order expected
    assert sorted(shown, key=pending.index) == shown
    assert "Waiting on alpha-decision" in resolved and "Decided in favour." in resolved


def test_documents_assembled_from_entry_fragments_are_the_documents_built_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every current document and archive page of the generated log (corrections,
    retractions, retitles, a retagging) and of the seed story, rendered as the
    projector does (entries cached by version and serialized once per format), is the
    same bytes as the document built whole with every entry rendered afresh."""
    checked: list[str] = []

    def checking(view: FeedView, fmt: FeedFormat) -> bytes:
        body = render(view, fmt)
        assert body == render_whole(view, fmt), (view.scope, view.archive, fmt)
        checked.append(view.urls.feed_path(view.scope, fmt, view.archive))
        return body

    monkeypatch.setattr(render_module, "render", checking)
    for events, feed_size in ((_mixed_log(), 25), (read_ndjson(SEED), 4)):
        projector = Projector(connect(":memory:"), URLS, feed_size=feed_size)
        for start in range(0, len(events), 50):  # catch-up, rendering as it goes
            projector.apply(events[start : start + 50])
            projector.render_pending_archives()
        rebuilt = Projector(connect(":memory:"), URLS, feed_size=feed_size)
        rebuilt.apply(events, render_now=False)  # a rebuild, rendering after the fold
        _finish(rebuilt)
    assert any("/archive/" in path for path in checked)
    assert {path.rsplit(".", 1)[1] for path in checked} == {"atom", "rss", "json"}


def test_a_retagged_story_shows_its_new_topics_in_every_feed_after_catch_up() -> None:
    events = read_ndjson(SEED)
    retag = recorded(
        [
            {
                "type": "story.retagged",
                "occurred_at": "2017-10-13",
                "data": {"topics": ["immigration", "courts"]},
            }
        ],
        SEED_STREAM,
        start=len(events) + 1,
    )
    caught_up = connect(":memory:")
    projector = Projector(caught_up, URLS, feed_size=50)
    projector.apply(events)
    projector.apply(retag)  # a catch-up batch of its own, after every feed was rendered
    rebuilt = connect(":memory:")
    again = Projector(rebuilt, URLS, feed_size=50)
    again.render_changes(again.apply([*events, *retag], render_now=False))
    assert documents(caught_up) == documents(rebuilt)
    story_feed = feedparser.parse(documents(caught_up)[f"/feeds/stories/{SEED_STREAM}.atom"])
    terms = {tag.term for entry in story_feed.entries for tag in entry.tags}
    assert "courts" in terms


def test_what_a_batch_writes_and_keeps_does_not_grow_with_the_log() -> None:
    events = _mixed_log()
    feed_size = 5
    projector = Projector(connect(":memory:"), URLS, feed_size=feed_size)
    largest: dict[str, int] = {}
    for start in range(0, len(events), 20):
        projector.apply(events[start : start + 20], render_now=False)
        for scope, count in projector.conn.execute(
            "SELECT scope, COUNT(*) FROM recent_entries GROUP BY scope"
        ):
            largest[scope] = max(largest.get(scope, 0), count)
        # written follow-ups are read again when named, not held
        assert not any(story.followups for story in projector.fold._stories.values())
    # each scope keeps its feed's entries and fewer than one more feed's worth, plus
    # what the last batch wrote
    assert largest and max(largest.values()) < 2 * feed_size + 20
    total = projector.conn.execute("SELECT COUNT(*) FROM memberships").fetchone()[0]
    assert sum(largest.values()) < total
    expected = _finish(projector)
    reference = Projector(connect(":memory:"), URLS, feed_size=feed_size)
    reference.apply(events, render_now=False)
    assert _finish(reference) == expected


def test_retags_enter_every_development_once_whatever_the_fold_holds() -> None:
    events = list(dataset.events(dataset.Size(stories=4, events=300)))
    slug = events[0].stream
    old = next(e.data["development_id"] for e in events if e.type == "development.reported")
    extra = [
        {"type": "story.retagged", "occurred_at": "2020-01-01", "data": {"topics": ["Tides"]}},
        {
            "type": "quote.attributed",
            "occurred_at": "2020-01-01",
            "data": {"development_id": old, "quote_id": "q-late", "speaker": "A", "text": "B"},
        },
        {
            "type": "story.retagged",
            "occurred_at": "2020-01-01",
            "data": {"topics": ["Tides", "Moons", "moons"]},
        },
        {"type": "story.retagged", "occurred_at": "2020-01-01", "data": {"topics": ["Suns"]}},
        {"type": "story.retagged", "occurred_at": "2020-01-01", "data": {"topics": ["Tides"]}},
    ]
    events += recorded(extra, slug, start=len(events) + 1)
    reference = Projector(connect(":memory:"), URLS, feed_size=7)
    reference.apply(events, render_now=False)
    expected = _finish(reference)
    assert {"/feeds/topics/tides.atom", "/feeds/topics/moons.atom"} <= set(expected)
    for batch in (1, 2, 3):
        conn = connect(":memory:")
        tight = Projector(conn, URLS, feed_size=7, cached_developments=1)
        tight.apply(events[:-5], render_now=False)
        for start in range(len(events) - 5, len(events), batch):
            tight.apply(events[start : start + batch], render_now=False)
        assert _finish(tight) == expected
        duplicated = conn.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM memberships "
            "GROUP BY scope, slug, development_id HAVING COUNT(*) > 1)"
        ).fetchone()[0]
        assert duplicated == 0
        devs = conn.execute(
            "SELECT COUNT(*) FROM development_heads WHERE slug = ?", (slug,)
        ).fetchone()[0]
        for topic in ("tides", "moons", "suns"):
            entered = conn.execute(
                "SELECT COUNT(*) FROM memberships WHERE scope = ? AND slug = ?",
                (f"topics/{topic}", slug),
            ).fetchone()[0]
            assert entered == devs


def test_the_fold_holds_no_more_developments_than_its_bound_and_gives_the_same_bytes() -> None:
    """What bounds a rebuild's memory on a long log: after every batch the fold holds
    at most ``cached_developments`` developments (and their memberships), however many
    the log has, and its documents are those of a fold that holds everything."""
    events = list(dataset.events(dataset.Size(stories=8, events=1_200)))
    unbounded = Projector(connect(":memory:"), URLS, feed_size=25, cached_developments=10**6)
    unbounded.apply(events, render_now=False)
    everything = unbounded.fold.holding()["developments"]
    assert everything > 400  # the log has far more developments than the bound below

    bounded = Projector(connect(":memory:"), URLS, feed_size=25, cached_developments=40)
    for start in range(0, len(events), 100):
        bounded.apply(events[start : start + 100], render_now=False)
        held = bounded.fold.holding()
        assert held["developments"] <= 40, held
        assert held["memberships"] <= 40, held
    assert _finish(bounded) == _finish(unbounded)


def _story_whole(projector: Projector, slug: str) -> bytes:
    """The story's page rendered from the story with every development read afresh."""
    header = projector.tables.story_header(slug)
    assert header is not None
    story = Story.model_validate_json(header)
    for dev_id in projector.tables.development_ids(slug):
        state = projector.tables.development_state(slug, dev_id)
        assert state is not None
        story.developments[dev_id] = Development.model_validate_json(state)
    story.followups = {
        followup_id: FollowUp.model_validate_json(state)
        for followup_id, state in projector.tables.followups(slug)
    }
    return render_story(story, URLS)


def test_story_pages_from_kept_articles_are_the_pages_rendered_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A story page assembled from the articles kept by version (after catch-ups that
    quoted, corrected, retracted and re-dated developments, and on the seed story with
    developments reported together) is the page rendered from every development; a
    quote re-renders only the article of the development it names."""
    for events, feed_size in ((_mixed_log(), 25), (read_ndjson(SEED), 4)):
        projector = Projector(connect(":memory:"), URLS, feed_size=feed_size)
        for start in range(0, len(events), 40):  # catch-up, pages rendered as it goes
            projector.apply(events[start : start + 40])
        served = documents(projector.conn)
        for slug in {event.stream for event in events}:
            path = URLS.story_page(slug)[len(URLS.base) :]
            assert served[path] == _story_whole(projector, slug), slug

    rendered: list[str] = []

    def counting(story: Story, dev: Development, urls: Urls) -> str:
        rendered.append(dev.development_id)
        return story_article(story, dev, urls)

    monkeypatch.setattr(render_module, "story_article", counting)
    events = read_ndjson(SEED)
    projector = Projector(connect(":memory:"), URLS, feed_size=4)
    projector.apply(events)
    dev_id = next(e.data["development_id"] for e in events if e.type == "development.reported")
    quote = {
        "type": "quote.attributed",
        "occurred_at": "2018-01-01",
        "data": {
            "quote_id": "kept-articles-quote",
            "development_id": dev_id,
            "speaker": "A. Speaker",
            "text": "Said so.",
        },
    }
    rendered.clear()
    projector.apply(recorded([quote], SEED_STREAM, start=len(events) + 1))
    assert rendered == [dev_id]
    page = documents(projector.conn)[URLS.story_page(SEED_STREAM)[len(URLS.base) :]]
    assert b"Said so." in page and page == _story_whole(projector, SEED_STREAM)


def test_the_article_cache_keeps_within_its_bytes_dropping_the_least_recently_used() -> None:
    cache = ArticleCache(max_bytes=3 * sys.getsizeof("x" * 1000))
    for n in range(4):
        cache.put((URLS.base, "s", f"d{n}", 1), "x" * 1000)
        assert cache.get((URLS.base, "s", "d0", 1)) is not None or n == 3
    # d0 was used after each put, so d1 went first
    assert cache.get((URLS.base, "s", "d1", 1)) is None
    assert all(cache.get((URLS.base, "s", f"d{n}", 1)) for n in (0, 2, 3))

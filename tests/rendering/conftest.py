"""A real folded story to render: events validated as a client would send them, given
their place in the log, and folded. It holds a correction, a retraction, quotes,
follow-ups (one pending, one resolved), a 100 KB body, right-to-left text, emoji and a
hostile development (control characters, script and event-handler markup, U+FFFE/FFFF).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from feedsvc.domain.events import RecordedEvent, format_recorded_at, validate_new_event
from feedsvc.domain.story import Story, fold
from feedsvc.rendering.model import EntryView, FeedView, Scope, ScopeKind, Urls

BASE_URL = "https://news.example.org"
SLUG = "ct-doj-1373"
HOSTILE = "<script>alert(1)</script>\x00\x01\x0b<img src=x onerror=alert(1)>"
RTL = "مدينة نيو هيفن ترحب بالقرار — עיריית ניו הייבן מברכת על ההחלטה 🗽🇺🇸"
LONE_SURROGATE = "\ud800"
LOG_START = datetime(2017, 10, 12, 16, 0, 0, tzinfo=UTC)

# (type, occurred_at, data); recorded one minute apart, in this order
SCRIPT: list[tuple[str, str, dict[str, Any]]] = [
    (
        "story.opened",
        "2017-10-12",
        {
            "slug": SLUG,
            "title": "DOJ finds Connecticut in compliance with 8 U.S.C. § 1373",
            "summary": "The Justice Department says Connecticut complies with the federal "
            "law on sharing immigration status information.",
            "topics": ["Immigration", "Federal grants"],
            "places": ["Connecticut"],
        },
    ),
    (
        "development.reported",
        "2016-11",
        {
            "development_id": "trust-act-amended",
            "headline": "Connecticut amends its Trust Act",
            "body": "Connecticut narrows when police may hold people for federal "
            "immigration agents.\n\nThe change takes effect at once.",
            "kind": "law",
            "sources": [
                {
                    "url": "https://www.ctnewsjunkie.com/2017/10/12/doj",
                    "title": "DOJ finds CT in compliance",
                    "publisher": "CT News Junkie",
                }
            ],
            "people": [{"name": "Dannel P. Malloy", "role": "Governor"}],
            "organizations": ["Connecticut General Assembly"],
            "topics": ["Sanctuary policies", "immigration"],
        },
    ),
    (
        "development.reported",
        "2017-10-12",
        {
            "development_id": "doj-letter",
            "headline": "DOJ tells Connecticut it complies with Section 1373",
            "body": "<p>In a letter, the Justice Department says the state's laws "
            'comply. <a href="/stories/other-story">Earlier coverage</a>, '
            '<a href="javascript:alert(1)">a bad link</a>.</p>'
            "<p>The decision frees <em>Byrne JAG</em> money.</p>",
            "kind": "letter",
            "sources": [{"url": "https://www.justice.gov/opa/pr/ct-1373", "title": "DOJ letter"}],
            "people": [{"name": "Alan R. Hanson", "role": "Acting Assistant Attorney General"}],
            "organizations": ["U.S. Department of Justice"],
        },
    ),
    (
        "quote.attributed",
        "2017-10-12",
        {
            "quote_id": "malloy-quote",
            "development_id": "doj-letter",
            "speaker": "Dannel P. Malloy",
            "role": "Governor",
            "text": "We have said all along that we comply with federal law.",
        },
    ),
    (
        "development.reported",
        "2017-07",
        {
            "development_id": "rally",
            "headline": "Rally at the Capitol in July",
            "body": "Hundreds rally in Hartford.",
            "kind": "rally",
        },
    ),
    (
        "development.reported",
        "2017-09-01",
        {
            "development_id": "misattributed",
            "headline": "Mayor calls the letter a threat",
            "body": "A statement attributed to the mayor.",
            "kind": "statement",
        },
    ),
    (
        "development.reported",
        "2017-10-12T16:30:00-04:00",
        {
            "development_id": "hostile",
            "headline": f"{HOSTILE} Mayor resigns \ufffe\uffff",
            "body": f'{HOSTILE}<p onclick="alert(1)">Clean text</p>{RTL}',
            "kind": "other",
            "people": [{"name": f"<b>Eve</b>{HOSTILE}", "role": "Tester\x0b"}],
        },
    ),
    (
        "quote.attributed",
        "2017-10-12",
        {
            "quote_id": "hostile-quote",
            "development_id": "hostile",
            "speaker": "Mallory <script>x</script>",
            "text": f"Quoted {HOSTILE}",
        },
    ),
    (
        "development.reported",
        "2017-10-12",
        {
            "development_id": "international",
            "headline": RTL,
            "body": RTL + "\n\n" + "שלום 👋",
            "kind": "statement",
            "topics": ["International"],
        },
    ),
    (
        "development.reported",
        "2017",
        {
            "development_id": "long-read",
            "headline": "The long read",
            "body": ("All work and no play. " * 4700).strip(),  # about 100 KB
            "kind": "report",
        },
    ),
    (
        "followup.expected",
        "2017-10-12",
        {
            "followup_id": "doj-other-cities",
            "description": "DOJ decisions on New York, Chicago, Philadelphia, New Orleans "
            "and Cook County",
            "subjects": ["New York", "Chicago", "Philadelphia", "New Orleans", "Cook County"],
            "development_id": "doj-letter",
        },
    ),
    (
        "followup.expected",
        "2017-10-12",
        {"followup_id": "governor-reply", "description": "The governor's reply"},
    ),
    (
        "followup.resolved",
        "2017-10-12",
        {
            "followup_id": "governor-reply",
            "development_id": "doj-letter",
            "note": "Malloy replied the same day.",
        },
    ),
    # everything above is "before"; the correction and retraction follow
    (
        "development.corrected",
        "2017-10-13",
        {
            "development_id": "rally",
            "changes": {"headline": "Rally at the Capitol in August", "occurred_at": "2017-08"},
            "note": "An earlier version said the rally was in July; it was in August.",
        },
    ),
    (
        "development.retracted",
        "2017-10-13",
        {
            "development_id": "misattributed",
            "reason": "The statement was not the mayor's.",
        },
    ),
]
BEFORE_CORRECTION = len(SCRIPT) - 2


def recorded_at(number: int) -> datetime:
    """When the log recorded event ``number``: a minute apart, the correction and the
    retraction a day later."""
    late = timedelta(days=1) if number > BEFORE_CORRECTION else timedelta()
    return LOG_START + late + timedelta(minutes=number)


def recorded_events(script: list[tuple[str, str, dict[str, Any]]]) -> list[RecordedEvent]:
    """Validate each event as the service would and give it its place in the log."""
    events = []
    for number, (type_name, occurred_at, data) in enumerate(script, start=1):
        valid = validate_new_event(
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{SLUG}/{number}")),
                "type": type_name,
                "occurred_at": occurred_at,
                "data": data,
            }
        )
        events.append(
            RecordedEvent(
                position=number,
                id=valid.id,
                stream=SLUG,
                version=number,
                type=valid.type,
                schema_version=valid.schema_version,
                occurred_at=valid.occurred_at,
                recorded_at=format_recorded_at(recorded_at(number)),
                data_json=valid.data_json,
                metadata_json=valid.metadata_json,
            )
        )
    return events


def fold_story(count: int | None = None) -> Story:
    """The story folded from the first ``count`` events (all by default).

    The log cannot deliver a lone surrogate (orjson refuses to store or load one), so
    one is put into the folded state directly, as a defect elsewhere might.
    """
    story = fold(recorded_events(SCRIPT[:count]))
    assert story is not None
    hostile = story.developments["hostile"]
    hostile.headline += LONE_SURROGATE
    hostile.body += LONE_SURROGATE
    hostile.quotes[0].text += LONE_SURROGATE
    return story


def story_view(
    story: Story, *, archive: int | None = None, archive_count: int = 0, entries: bool = True
) -> FeedView:
    """A one-story feed view, newest change first, as the projection would build it."""
    devs = sorted(story.developments.values(), key=lambda d: d.updated_position, reverse=True)
    return FeedView(
        scope=Scope(ScopeKind.STORY, story.slug),
        title=story.title,
        subtitle=story.summary,
        updated=story.updated_at,
        entries=[EntryView(story, d) for d in devs] if entries else [],
        urls=Urls(BASE_URL),
        archive=archive,
        archive_count=archive_count,
    )


@pytest.fixture
def urls() -> Urls:
    """The public URLs of the test service."""
    return Urls(BASE_URL)


@pytest.fixture
def story() -> Story:
    """The whole story, correction and retraction included."""
    return fold_story()


@pytest.fixture
def story_before() -> Story:
    """The same story before its correction and retraction."""
    return fold_story(BEFORE_CORRECTION)


@pytest.fixture
def view(story: Story) -> FeedView:
    """The story's subscription feed."""
    return story_view(story)


@pytest.fixture
def make_view(story: Story) -> Callable[..., FeedView]:
    """Build other views of the story (archive pages, empty feeds)."""

    def make(**kwargs: Any) -> FeedView:
        return story_view(story, **kwargs)

    return make

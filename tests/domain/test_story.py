"""The fold of the seed story, and the rules an append must keep."""

from __future__ import annotations

import pytest

from feedsvc.domain.events import Precision, validate_new_event
from feedsvc.domain.story import check_append, check_onto, fold, rules_of
from feedsvc.errors import NoStory, StoryExists, ValidationFailed
from feedsvc.ndjson import read_ndjson
from tests.conftest import SEED, SEED_STREAM, opened, reported


def test_the_seed_story_folds_to_the_article() -> None:
    events = read_ndjson(SEED)
    story = fold(events)
    assert story is not None
    assert story.slug == SEED_STREAM
    timeline = story.timeline()
    assert timeline[0].occurred_at == "2013"
    assert timeline[0].occurred_precision is Precision.YEAR
    assert any(d.occurred_at == "2016-11" and d.kind == "rally" for d in timeline)
    assert any(d.occurred_at == "2017-08" and d.kind == "letter" for d in timeline)
    speakers = {q.speaker for d in timeline for q in d.quotes}
    assert {"Michael Lawlor", "Jeff Sessions", "Richard Blumenthal"} <= speakers
    pending = {f.followup_id for f in story.followups.values() if f.resolved_at is None}
    assert len(pending) == 5
    subjects = " ".join(s for f in story.followups.values() for s in f.subjects)
    for place in ("New York", "Chicago", "Philadelphia", "New Orleans", "Cook County"):
        assert place in subjects
    assert all("ctnewsjunkie.com" in s.url for d in timeline for s in d.sources)
    assert {e.recorded_at[:10] for e in events} == {"2017-10-12"}


def test_rules_are_checked_in_order_within_a_batch() -> None:
    batch = [validate_new_event(e) for e in (opened("a"), reported("d1"))]
    check_append("a", None, batch)  # opening and reporting together is fine
    with pytest.raises(NoStory, match="no story 'a'"):
        check_append("a", None, [validate_new_event(reported("d1"))])
    with pytest.raises(StoryExists, match="'a' is already open"):
        check_append("a", None, [*batch, validate_new_event(opened("a"))])
    with pytest.raises(ValidationFailed, match="already exists"):
        check_append("a", None, [*batch, validate_new_event(reported("d1"))])
    with pytest.raises(ValidationFailed, match="must equal"):
        check_append("b", None, [validate_new_event(opened("a"))])


def test_quotes_and_corrections_need_their_development() -> None:
    rules = rules_of(read_ndjson(SEED))
    quote = {
        "type": "quote.attributed",
        "occurred_at": "2017-10-12",
        "data": {"quote_id": "q-new", "development_id": "nope", "speaker": "X", "text": "Y"},
    }
    with pytest.raises(ValidationFailed) as info:
        check_append(SEED_STREAM, rules, [validate_new_event(quote)])
    assert info.value.problems[0].pointer == "/data/development_id"


def test_a_refused_batch_leaves_the_rules_as_they_were() -> None:
    rules = rules_of(read_ndjson(SEED))
    before = rules.copy()
    closing = {"type": "story.closed", "occurred_at": "2017-10-13", "data": {}}
    batch = [
        validate_new_event(closing),
        validate_new_event(reported("after-closing")),  # refused: the story is closed
    ]
    with pytest.raises(ValidationFailed):
        check_onto(SEED_STREAM, rules, batch)
    assert rules == before
    check_onto(SEED_STREAM, rules, [validate_new_event(reported("fine"))])
    assert rules.developments == before.developments | {"fine"}

"""The news vocabulary refuses bad events with messages that name the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from feedsvc.domain import events
from feedsvc.domain.events import (
    CURRENT_VERSIONS,
    Occurred,
    Precision,
    RecordedEvent,
    validate_new_event,
)
from feedsvc.domain.schemas import schema_files
from feedsvc.errors import ValidationFailed
from tests.conftest import REPO, opened, reported


def problems(raw: dict[str, Any]) -> dict[str, str]:
    """pointer → message for a refused event."""
    with pytest.raises(ValidationFailed) as info:
        validate_new_event(raw)
    return {p.pointer: p.message for p in info.value.problems}


def test_every_bad_field_is_named_at_once() -> None:
    found = problems(
        {
            "type": "story.opened",
            "occurred_at": "2017-10-12T10:00:00",
            "data": {"slug": "Not A Slug", "title": "", "summary": "x", "topics": [3], "x": 1},
        }
    )
    assert "no UTC offset" in found["/occurred_at"]
    assert "not a slug" in found["/data/slug"]
    assert "/data/title" in found
    assert "/data/topics/0" in found
    assert found["/data/x"] == "unknown field"


@pytest.mark.parametrize(
    ("occurred", "message"),
    [
        ("2017-02-30", "not a real date"),
        ("2017-13", "not a real date"),
        ("2017-10-12T25:00:00Z", "not a real time"),
        ("yesterday", "not YYYY"),
        ("2017-10-12 10:00:00+00:00", "not YYYY"),
    ],
)
def test_impossible_or_naive_dates_are_refused(occurred: str, message: str) -> None:
    assert message in problems(reported("d1", occurred))["/occurred_at"]


def test_whitespace_headline_wrong_kind_and_bad_url_are_refused() -> None:
    raw = reported(
        "d1", headline="   ", kind="rumour", sources=[{"url": "javascript:x", "title": "t"}]
    )
    found = problems(raw)
    assert "empty" in found["/data/headline"]
    assert "statement" in found["/data/kind"]
    assert "http" in found["/data/sources/0/url"]


def test_unknown_type_and_bad_id_are_refused() -> None:
    assert "unknown event type" in problems({**opened("a"), "type": "story.deleted"})["/type"]
    assert "UUID" in problems({**opened("a"), "id": "123"})["/id"]


def test_server_facts_cannot_be_set_by_the_client() -> None:
    found = problems({**opened("a"), "position": 4, "recorded_at": "2017-10-12T00:00:00Z"})
    assert found["/position"] == "unknown field"
    assert found["/recorded_at"] == "unknown field"


@pytest.mark.parametrize(
    ("text", "precision", "human"),
    [
        ("2013", Precision.YEAR, "2013"),
        ("2016-11", Precision.MONTH, "November 2016"),
        ("2017-10-12", Precision.DAY, "October 12, 2017"),
        ("2017-10-12T14:30:00-04:00", Precision.INSTANT, "October 12, 2017, 18:30 UTC"),
    ],
)
def test_occurred_keeps_its_precision(text: str, precision: Precision, human: str) -> None:
    occurred = Occurred.parse(text)
    assert occurred.precision is precision
    assert occurred.human() == human
    assert occurred.start.tzinfo is not None


def test_canonical_data_is_stable() -> None:
    event = validate_new_event(reported("d1", people=[{"name": "A"}]))
    again = validate_new_event({**reported("d1"), "data": event.model.model_dump()})
    assert validate_new_event(reported("d1", people=[{"name": "A"}])).data_json == event.data_json
    assert '"people":[{"name":"A"}]' in event.data_json
    assert again.model == event.model


def test_old_schema_versions_still_load_through_the_upcaster() -> None:
    v1 = validate_new_event(
        {**reported("d1", sources=["https://example.org/a"]), "schema_version": 1}
    )
    assert v1.schema_version == 1
    stored = RecordedEvent(
        1,
        v1.id,
        "a",
        2,
        v1.type,
        1,
        v1.occurred_at,
        "2017-10-12T00:00:00.000000Z",
        v1.data_json,
        v1.metadata_json,
    )
    assert stored.data["sources"] == [{"url": "https://example.org/a", "title": "example.org"}]
    assert CURRENT_VERSIONS["development.reported"] == 2


def test_schema_files_match_the_code() -> None:
    folder = REPO / "events" / "schemas"
    expected = schema_files()
    on_disk = {p.name: p.read_bytes() for p in folder.glob("*.json")}
    assert set(on_disk) == set(expected), "run: python -m feedsvc.domain.schemas"
    for name, body in expected.items():
        assert on_disk[name] == body, f"{name} drifted; run: python -m feedsvc.domain.schemas"


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2017, 10, 12, 14, 3, 5, 123456, tzinfo=UTC),
        datetime(2020, 1, 1, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_recorded_at_round_trips_in_utc(moment: datetime) -> None:
    parsed = events.parse_recorded_at(events.format_recorded_at(moment))
    assert parsed == moment and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    ["2017-10-12 14:03:05.123456Z", "2017-10-12T14:03:05,123456Z", "2017-10-12T14:03:05Z", ""],
)
def test_a_malformed_recorded_at_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="does not match format"):
        events.parse_recorded_at(text)


@pytest.mark.parametrize(
    "text",
    ['A "quoted" <b>bold</b> & back\\slash', "tab\tline\nfeed\x7f", "é€中😀\u2028\u202e\ufeff"],
)
def test_the_stored_spelling_is_compact_json_in_model_order(text: str) -> None:
    raw = reported("d1", headline=text, body=text, places=[text])
    valid = validate_new_event(raw)
    dumped = valid.model.model_dump(mode="json", exclude_unset=True)
    assert valid.data_json == orjson.dumps(dumped).decode()
    assert list(orjson.loads(valid.data_json))[:3] == ["development_id", "headline", "body"]

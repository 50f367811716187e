"""The event store contract: every adapter must pass this against a real database.

Subclass :class:`EventStoreContract` and provide the ``store`` fixture (an opened,
empty store), ``reopen`` (close it and open the same database again) and
``seed_events`` (``tests/store/conftest.py`` has it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest

from feedsvc.domain.events import (
    RecordedEvent,
    ValidEvent,
    parse_recorded_at,
    validate_new_event,
)
from feedsvc.errors import DuplicateEventId, ImportFailed, WrongExpectedVersion
from feedsvc.store.port import EventStore
from tests.conftest import opened, reported


def valid(raw: dict[str, Any], event_id: str | None = None) -> ValidEvent:
    """Validate a raw event, optionally with a fixed id."""
    return validate_new_event({**raw, "id": event_id} if event_id else raw)


class EventStoreContract:
    """Behaviour every EventStore adapter must show."""

    names_hold_nul: bool = True
    """Whether ids, stream names and types may hold U+0000 (PostgreSQL text cannot;
    data and metadata hold it everywhere, escaped in their JSON)."""

    async def test_append_assigns_gapless_positions_and_versions(self, store: EventStore) -> None:
        a = await store.append("a", [valid(opened("a")), valid(reported("d1"))], "no_stream")
        b = await store.append("b", [valid(opened("b"))])
        c = await store.append("a", [valid(reported("d2"))], 2)
        assert (a.positions, a.version) == ((1, 2), 2)
        assert (b.positions, b.version) == ((3,), 1)
        assert (c.positions, c.version) == ((4,), 3)
        assert await store.head() == 4
        events = await store.read_all(0, 100)
        assert [e.position for e in events] == [1, 2, 3, 4]
        assert [(e.stream, e.version) for e in events] == [("a", 1), ("a", 2), ("b", 1), ("a", 3)]

    async def test_recorded_at_never_goes_back(self, store: EventStore) -> None:
        for i in range(5):
            await store.append(f"s{i}", [valid(opened(f"s{i}"))])
        stamps = [e.recorded_at for e in await store.read_all(0, 10)]
        assert stamps == sorted(stamps)
        assert all(s.endswith("Z") for s in stamps)

    async def test_each_event_of_an_append_has_its_own_recorded_at(self, store: EventStore) -> None:
        result = await store.append(
            "a", [valid(opened("a")), valid(reported("d1")), valid(reported("d2"))]
        )
        stamps = [e.recorded_at for e in await store.read_all(0, 10)]
        assert len(set(stamps)) == 3 and stamps == sorted(stamps)
        assert result.recorded_at == stamps[0]
        moments = [parse_recorded_at(s) for s in stamps]
        assert [b - a for a, b in itertools.pairwise(moments)] == [timedelta(microseconds=1)] * 2

    async def test_appends_sharing_a_group_commit_get_distinct_recorded_at(
        self, store: EventStore
    ) -> None:
        results = await asyncio.gather(
            *[
                store.append(f"s{n}", [valid(opened(f"s{n}")), valid(reported(f"d{n}"))])
                for n in range(20)
            ]
        )
        events = await store.read_all(0, 100)
        stamps = [e.recorded_at for e in events]
        assert len(set(stamps)) == 40 and stamps == sorted(stamps)
        by_position = {e.position: e.recorded_at for e in events}
        assert all(r.recorded_at == by_position[r.positions[0]] for r in results)

    async def test_recorded_at_continues_after_a_later_imported_time(
        self, store: EventStore, seed_events: list[RecordedEvent]
    ) -> None:
        future = "2999-01-01T00:00:00.000000Z"
        await store.import_events([dataclasses.replace(seed_events[0], recorded_at=future)])
        result = await store.append("a", [valid(opened("a")), valid(reported("d1"))])
        stamps = [e.recorded_at for e in await store.read_all(0, 10)]
        assert stamps == [
            future,
            "2999-01-01T00:00:00.000001Z",
            "2999-01-01T00:00:00.000002Z",
        ]
        assert result.recorded_at == "2999-01-01T00:00:00.000001Z"

    async def test_expected_version_is_enforced(self, store: EventStore) -> None:
        await store.append("a", [valid(opened("a"))], "no_stream")
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("a", [valid(reported("d1"))], 5)
        assert info.value.current == 1
        with pytest.raises(WrongExpectedVersion):
            await store.append("a", [valid(reported("d1"))], "no_stream")
        assert await store.head() == 1

    async def test_a_batch_is_atomic(self, store: EventStore) -> None:
        await store.append("a", [valid(opened("a"))])
        first = valid(reported("d1"))
        with pytest.raises(DuplicateEventId):
            await store.append("a", [first, valid(reported("d2"), first.id)])
        assert await store.head() == 1

    async def test_replay_returns_the_original_result(self, store: EventStore) -> None:
        event_id = str(uuid.uuid4())
        events = [valid(opened("a"), event_id)]
        first = await store.append("a", events)
        again = await store.append("a", events, "no_stream")
        assert again.replayed and not first.replayed
        assert (again.positions, again.version) == (first.positions, first.version)
        assert again.recorded_at == first.recorded_at
        assert await store.head() == 1

    async def test_a_replay_of_several_events_answers_the_first_recorded_at(
        self, store: EventStore
    ) -> None:
        events = [valid(opened("a")), valid(reported("d1")), valid(reported("d2"))]
        first = await store.append("a", events)
        again = await store.append("a", events)
        assert again.replayed
        assert again == dataclasses.replace(first, replayed=True)

    async def test_the_same_append_twice_in_one_group_is_a_replay(self, store: EventStore) -> None:
        events = [valid(opened("a")), valid(reported("d1"))]
        one, two = await asyncio.gather(store.append("a", events), store.append("a", events))
        assert {one.replayed, two.replayed} == {False, True}
        assert dataclasses.replace(one, replayed=False) == dataclasses.replace(two, replayed=False)
        assert await store.head() == 2

    async def test_reused_id_with_other_content_is_a_conflict(self, store: EventStore) -> None:
        event_id = str(uuid.uuid4())
        await store.append("a", [valid(opened("a"), event_id)])
        with pytest.raises(DuplicateEventId) as info:
            await store.append("a", [valid(opened("a", title="Other"), event_id)])
        assert event_id in str(info.value)

    async def test_concurrent_appends_are_grouped_and_each_checked(self, store: EventStore) -> None:
        await store.append("a", [valid(opened("a"))])
        results = await asyncio.gather(
            *[store.append("a", [valid(reported(f"d{i}"))], 1) for i in range(20)],
            return_exceptions=True,
        )
        wins = [r for r in results if not isinstance(r, BaseException)]
        losses = [r for r in results if isinstance(r, WrongExpectedVersion)]
        assert len(wins) == 1 and len(losses) == 19
        assert await store.stream_version("a") == 2

    async def test_many_writers_leave_no_gap(self, store: EventStore) -> None:
        async def writer(n: int) -> None:
            await store.append(f"w{n}", [valid(opened(f"w{n}"))])
            for i in range(10):
                await store.append(f"w{n}", [valid(reported(f"d{i}"))])

        await asyncio.gather(*[writer(n) for n in range(16)])
        events = await store.read_all(0, 1000)
        assert [e.position for e in events] == list(range(1, 16 * 11 + 1))
        for n in range(16):
            versions = [e.version for e in events if e.stream == f"w{n}"]
            assert versions == list(range(1, 12))

    async def test_reads(self, store: EventStore) -> None:
        await store.append("a", [valid(opened("a")), valid(reported("d1"))])
        await store.append("b", [valid(opened("b"))])
        await store.append("a", [valid(reported("d2"))])
        stream = await store.read_stream("a", 2)
        assert [e.version for e in stream] == [2, 3]
        only = await store.read_all(0, 10, types=["story.opened"])
        assert [e.stream for e in only] == ["a", "b"]
        assert [e.position for e in await store.read_all(1, 2)] == [2, 3]
        assert [e.position for e in await store.read_all(0, 10, upto=2)] == [1, 2]
        assert await store.streams() == ["a", "b"]
        assert await store.stream_version("nope") == 0
        found = await store.find([stream[0].id, str(uuid.uuid4())])
        assert [e.id for e in found] == [stream[0].id]

    async def test_encoded_pages_are_the_export_form_byte_for_byte(self, store: EventStore) -> None:
        hostile = '\x00\x01\x1f"\\/\u2028\u2029\ufeff\u202e<script>é😀\x7f'
        name = hostile if self.names_hold_nul else hostile.replace("\x00", "")
        events = [
            RecordedEvent(
                position,
                f"{name}-{position}",
                stream,
                version,
                kind,
                1,
                "2026-11-28T01:00:00Z",
                f"2026-11-28T01:00:0{position}.000000Z",
                orjson.dumps({"body": hostile, "n": position}).decode(),
                orjson.dumps({"actor": hostile}).decode(),
            )
            for position, stream, version, kind in [
                (1, "a", 1, "story.opened"),
                (2, "a", 2, "development.reported"),
                (3, f"b{name}", 1, "story.opened"),
                (4, "a", 3, "development.reported"),
            ]
        ]
        assert await store.import_events(events) == 4
        cases: list[tuple[int, int, dict[str, Any], list[int]]] = [
            (0, 10, {}, [1, 2, 3, 4]),
            (1, 2, {}, [2, 3]),
            (0, 10, {"types": ["story.opened"]}, [1, 3]),
            (0, 10, {"stream": "a"}, [1, 2, 4]),
            (0, 10, {"upto": 2}, [1, 2]),
            (4, 10, {}, []),
            (0, 10, {"stream": "nope"}, []),
        ]
        for after, limit, kwargs, positions in cases:
            page = await store.read_all_json(after, limit, **kwargs)
            expected = [events[p - 1] for p in positions]
            assert (page.count, page.last) == (len(expected), positions[-1] if positions else None)
            assert page.json == b",".join(e.to_json() for e in expected)
            decoded = orjson.loads(b"[" + page.json + b"]")
            assert [e["id"] for e in decoded] == [e.id for e in expected]
            assert decoded == [orjson.loads(e.to_json()) for e in expected]

    async def test_position_at_maps_a_time_to_a_log_prefix(self, store: EventStore) -> None:
        await store.append("a", [valid(opened("a"))])
        await store.append("b", [valid(opened("b"))])
        events = await store.read_all(0, 10)
        assert await store.position_at("1999-01-01T00:00:00.000000Z") == 0
        assert await store.position_at(events[-1].recorded_at) == 2

    async def test_wait_for_wakes_on_append(self, store: EventStore) -> None:
        waiter = asyncio.create_task(store.wait_for(1, timeout=10))
        await asyncio.sleep(0)
        assert not waiter.done()
        await store.append("a", [valid(opened("a"))])
        assert await asyncio.wait_for(waiter, 5) == 1
        assert await store.wait_for(5, timeout=0.05) == 1

    async def test_import_round_trips_exactly_and_is_idempotent(
        self, store: EventStore, seed_events: list[RecordedEvent]
    ) -> None:
        assert await store.import_events(seed_events) == len(seed_events)
        assert await store.import_events(seed_events) == 0
        assert await store.read_all(0, 1000) == seed_events

    async def test_import_refuses_a_gap_and_writes_nothing(
        self, store: EventStore, seed_events: list[RecordedEvent]
    ) -> None:
        with pytest.raises(ImportFailed) as info:
            await store.import_events([*seed_events[:3], *seed_events[4:]])
        assert info.value.line == 4
        assert await store.head() == 0

    async def test_data_survives_reopen_byte_for_byte(self, store: EventStore, reopen: Any) -> None:
        event = valid(reported("d1", body="Ünïcode — “quotes” 🗞️"))
        await store.append("a", [valid(opened("a")), event])
        store2: EventStore = await reopen()
        [_, back] = await store2.read_all(0, 10)
        assert back.data_json == event.data_json
        assert back.data["body"] == "Ünïcode — “quotes” 🗞️"

"""kill -9 at any moment loses no acknowledged append and leaves no half-written one."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from feedsvc.check import CheckReport, check_log
from feedsvc.domain.events import RecordedEvent
from feedsvc.store.sqlite import SQLiteEventStore

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from feedsvc.service import StoryService
    from feedsvc.store.sqlite import SQLiteEventStore

    async def main():
        store = SQLiteEventStore(Path(sys.argv[1]))
        await store.open()
        service = StoryService(store)
        n = int(sys.argv[2])
        slug = f"crash-{n}"
        await service.append(slug, [{"type": "story.opened", "occurred_at": "2017",
            "data": {"slug": slug, "title": "t", "summary": "s"}}])
        async def writer(w):
            i = 0
            while True:
                i += 1
                events = [{"type": "development.reported", "occurred_at": "2017-10-12",
                           "data": {"development_id": f"w{w}-{i}-{k}", "headline": "h",
                                    "body": "x" * 500, "kind": "statement"}}
                          for k in range(1 + (i % 3))]
                result = await service.append(slug, events)
                print(" ".join(map(str, result.positions)), flush=True)
        await asyncio.gather(*(writer(w) for w in range(8)))

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("acks_before_kill", [1, 17, 150])
def test_kill_9_loses_no_acknowledged_append(tmp_path: Path, acks_before_kill: int) -> None:
    path = tmp_path / "log.sqlite3"
    acknowledged: list[int] = []
    for round_ in range(2):  # the second round appends after recovering from the first
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(round_)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert child.stdout is not None
        lines = 0
        while lines < acks_before_kill:
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else b""
            acknowledged.extend(int(p) for p in line.split())
            lines += 1
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        # whatever it printed before dying was acknowledged too
        acknowledged.extend(int(p) for p in child.stdout.read().split())
        child.stdout.close()
        if child.stderr:
            child.stderr.close()

    async def read_back() -> tuple[list[RecordedEvent], CheckReport]:
        store = SQLiteEventStore(path)
        await store.open()
        try:
            return await store.read_all(0, 1_000_000), await check_log(store)
        finally:
            await store.close()

    events, report = asyncio.run(read_back())
    assert set(acknowledged) <= {e.position for e in events}
    assert report.ok, report.problems
    # no batch is half-written: append i of a writer holds 1 + i % 3 developments
    batches: dict[str, int] = {}
    for event in events:
        if event.type == "development.reported":
            writer, i, _ = event.data["development_id"].rsplit("-", 2)
            key = f"{event.stream}/{writer}-{i}"
            batches[key] = batches.get(key, 0) + 1
    assert batches, "the writers appended nothing"
    for key, count in batches.items():
        assert count == 1 + int(key.rsplit("-", 1)[1]) % 3, key

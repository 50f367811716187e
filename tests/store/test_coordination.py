"""The coordination of replicas: the local adapter (one process) and the PostgreSQL
adapter, two instances of which stand for two replicas on one database.

The PostgreSQL tests run against the server named by ``FEEDSVC_TEST_DATABASE_URL``
(e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``), each module in a scratch
database of its own that is dropped afterwards; without the variable they are skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from feedsvc.auth import retry_after
from feedsvc.projections.runner import ProjectionRunner
from feedsvc.settings import Settings
from feedsvc.store import Coordinator, EventStore, make_coordinator
from feedsvc.store.coordination import LocalCoordinator
from feedsvc.store.pg_coordination import lock_key
from tests.conftest import REPO

TIMEOUT_S = 10.0
"""A generous bound on anything that should happen at once."""


# -- the local adapter -------------------------------------------------------------


async def test_the_local_bucket_is_per_key_and_refills() -> None:
    now = [0.0]
    local = LocalCoordinator(clock=lambda: now[0])
    assert [await local.take("a", 2.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await local.take("a", 2.0, 3) == pytest.approx(0.5)
    assert await local.take("b", 2.0, 3) == 0.0  # another key has its own bucket
    now[0] += 0.5
    assert await local.take("a", 2.0, 3) == 0.0
    assert await local.take("a", 2.0, 3) > 0
    assert await LocalCoordinator().take("a", 0, 1) == 0.0  # rate 0: no limit
    assert retry_after(0.01) == "1" and retry_after(2.2) == "3"


async def test_the_local_adapter_always_leads_and_never_announces(tmp_path: Path) -> None:
    local = make_coordinator(Settings.load(None, environ={}, data_dir=tmp_path))
    assert isinstance(local, LocalCoordinator)
    assert not local.broadcasts_rebuilds  # `feedsvc rebuild` builds the folder's model
    await local.open()
    heard: list[int] = []
    await local.subscribe_rebuild(lambda: heard.append(1))
    await local.announce_rebuild()
    assert await local.lead("rebuild_cron")
    await local.close()
    assert heard == []


# -- PostgreSQL: a database of its own per test (conftest's pg_url) --------------------


Pair = Callable[[], Awaitable[Coordinator]]


@pytest.fixture
async def replica(pg_url: str, tmp_path: Path) -> AsyncIterator[Pair]:
    """Open coordinators on the scratch database, as replicas of one service get
    them (closed afterwards)."""
    opened: list[Coordinator] = []

    async def new() -> Coordinator:
        settings = Settings.load(None, environ={}, data_dir=tmp_path, database_url=pg_url)
        coordinator = make_coordinator(settings)
        await coordinator.open()
        opened.append(coordinator)
        return coordinator

    yield new
    for coordinator in opened:
        await coordinator.close()


async def test_two_replicas_spend_from_one_bucket(replica: Pair) -> None:
    a, b = await replica(), await replica()
    assert a.broadcasts_rebuilds
    assert [await a.take("token:x", 0.01, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await b.take("token:x", 0.01, 3)  # the burst was spent on the other replica
    assert wait > 0
    assert int(retry_after(wait)) >= 1
    assert await b.take("token:y", 0.01, 3) == 0.0  # another key has its own bucket
    assert await a.take("token:x", 0, 3) == 0.0  # rate 0: no limit
    refused = await a.take("token:x", 0.01, 3, cost=10)
    assert refused > 0  # more than a bucket ever holds


async def test_concurrent_spending_on_two_replicas_never_exceeds_the_burst(replica: Pair) -> None:
    a, b = await replica(), await replica()
    waits = await asyncio.gather(
        *(replica_.take("token:busy", 0.001, 10) for replica_ in (a, b) for _ in range(20))
    )
    assert sum(1 for wait in waits if wait == 0) == 10
    assert all(wait > 0 for wait in waits if wait != 0)


async def test_a_bucket_refills_at_its_rate(replica: Pair) -> None:
    a, b = await replica(), await replica()
    assert await a.take("fast", 1000.0, 1) == 0.0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_S
    while (wait := await b.take("fast", 1000.0, 1)) > 0:
        assert wait <= 0.001 + 1e-9  # never more than one token's worth at this rate
        assert loop.time() < deadline
        await asyncio.sleep(wait)


async def test_one_replica_leads_and_another_takes_over_when_it_dies(
    replica: Pair, pg_url: str
) -> None:
    a, b = await replica(), await replica()
    assert await a.lead("rebuild_cron")
    assert await a.lead("rebuild_cron")  # still
    assert not await b.lead("rebuild_cron")
    assert await b.lead("other-job")  # leadership is per job

    admin = await asyncpg.connect(pg_url, timeout=TIMEOUT_S)
    try:
        # a's process dies: the server ends the session holding its lock
        key = lock_key("rebuild_cron") & 0xFFFF_FFFF_FFFF_FFFF
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid::bigint = $1 AND objid::bigint = $2",
            key >> 32,
            key & 0xFFFF_FFFF,
        )
        assert ended == 1
    finally:
        await admin.close()

    for _ in range(100):  # bounded tries
        if await b.lead("rebuild_cron"):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("no replica took over the leadership of a dead one")
    assert not await a.lead("rebuild_cron")  # reconnected, but b leads now


async def test_a_rebuild_announced_by_one_replica_reaches_the_others(
    replica: Pair, pg_url: str
) -> None:
    a, b = await replica(), await replica()
    heard = asyncio.Event()
    await b.subscribe_rebuild(heard.set)
    await a.announce_rebuild()
    await asyncio.wait_for(heard.wait(), TIMEOUT_S)

    # the listening connection drops: it is made again, and hears the next one
    admin = await asyncpg.connect(pg_url, timeout=TIMEOUT_S)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND query LIKE 'LISTEN%'"
        )
    finally:
        await admin.close()
    heard.clear()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_S
    while not heard.is_set():
        assert loop.time() < deadline, "the listener did not come back"
        await a.announce_rebuild()
        await asyncio.sleep(0.1)


# -- replicas: runners on one log, each with its own read model -------------------------


async def test_replicas_lead_the_cron_rebuild_once_and_each_rebuilds_when_told(
    pg_url: str, tmp_path: Path, seeded_store: EventStore
) -> None:
    runners: list[ProjectionRunner] = []
    for name in ("one", "two"):
        settings = Settings.load(
            None,
            environ={},
            data_dir=tmp_path / name,
            database_url=pg_url,
            public_base_url="http://127.0.0.1:8080",
            rebuild_cron="0 0 1 1 *",
        )
        runner = ProjectionRunner(seeded_store, settings)  # coordinates through the server
        await runner.start()
        runners.append(runner)
    try:
        one, two = runners
        assert one.ready and two.ready
        assert [one.leads_cron, two.leads_cron] == [True, False]
        cron = two.scheduler.get_job("rebuild")
        assert cron is not None
        await cron.func()  # the cron fires on a replica that does not lead: nothing
        assert len(two.rebuild_seconds) == len(one.rebuild_seconds) == 1  # on start

        config = tmp_path / "cli.toml"
        config.write_text(
            f"data_dir = {json.dumps(str(tmp_path / 'cli'))}\ndatabase_url = {json.dumps(pg_url)}\n"
        )
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "feedsvc.cli",
            "--config",
            str(config),
            "rebuild",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        out, err = await asyncio.wait_for(cli.communicate(), TIMEOUT_S * 3)
        assert cli.returncode == 0, err.decode()
        assert b"announced a rebuild" in out
        assert not (tmp_path / "cli" / "readmodel").exists()  # nothing built by the CLI

        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT_S * 3
        while any(len(r.rebuild_seconds) < 2 for r in runners):
            assert loop.time() < deadline, "a replica did not rebuild when told to"
            await asyncio.sleep(0.05)
        for runner in runners:
            await runner.render_all()
        docs = [await r.document("/feeds/all.atom") for r in runners]
        assert docs[0] is not None and docs[1] is not None
        assert docs[0].etag == docs[1].etag and docs[0].body == docs[1].body

        await one.stop()  # the leader goes away: the other takes the cron over
        for _ in range(100):
            if await two.try_to_lead():
                break
            await asyncio.sleep(0.1)
        assert two.leads_cron
    finally:
        for runner in runners:
            await runner.stop()

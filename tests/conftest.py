"""Fixtures shared by the whole suite: real SQLite files in tmp_path, the seed log, and
real PostgreSQL databases on the server named by ``FEEDSVC_TEST_DATABASE_URL``.

PostgreSQL fixtures (skipped, with how to run them, when the variable is unset; an
error, never a skip, when it is set and the server does not answer):

- ``pg_server``: the variable's URL (a maintenance database such as ``postgres``).
- ``pg_template``: a database ``feedsvc_test_<random>`` made for the session with the
  event and token schemas migrated, dropped at the end (with every per-test database).
  Nothing may stay connected to it: it is the template of the per-test databases.
- ``pg_url``: a fresh database of its own for one test, copied from the template (an
  empty, migrated log); what ``database_url`` / ``FEEDSVC_DATABASE_URL`` is set to.
- ``pg_fresh_url``: a database of its own without any feedsvc table (migrations).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from feedsvc.ndjson import read_ndjson
from feedsvc.settings import Settings
from feedsvc.store.sqlite import SQLiteEventStore

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "events" / "seed" / "ct-doj-1373.ndjson"
SEED_STREAM = "ct-doj-section-1373-compliance"
JSONFEED_SCHEMA = REPO / "tests" / "data" / "jsonfeed-schema-v1.1.json"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a service whose data folder is a fresh tmp_path."""
    return Settings.load(
        None,
        environ={},
        data_dir=tmp_path / "data",
        seed=SEED,
        public_base_url="http://127.0.0.1:8080",
    )


@pytest.fixture
async def seeded_store(tmp_path: Path) -> AsyncIterator[SQLiteEventStore]:
    """An open SQLite store holding the seed story."""
    store = SQLiteEventStore(tmp_path / "seeded.sqlite3")
    await store.open()
    await store.import_events(read_ndjson(SEED))
    yield store
    await store.close()


def opened(slug: str, **data: Any) -> dict[str, Any]:
    """A story.opened event as a client submits it."""
    return {
        "type": "story.opened",
        "occurred_at": "2017-10-12",
        "data": {"slug": slug, "title": f"Story {slug}", "summary": "A summary.", **data},
    }


def reported(dev: str, occurred: str = "2017-10-12", **data: Any) -> dict[str, Any]:
    """A development.reported event as a client submits it."""
    return {
        "type": "development.reported",
        "occurred_at": occurred,
        "data": {
            "development_id": dev,
            "headline": f"Headline {dev}",
            "body": f"Body of {dev}.",
            "kind": "statement",
            **data,
        },
    }


PG_ENV = "FEEDSVC_TEST_DATABASE_URL"
PG_SKIP_REASON = (
    f"needs PostgreSQL: set {PG_ENV}=postgresql://postgres@127.0.0.1:5432/postgres to run it"
)
T = TypeVar("T")


def run_apart(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on an event loop of its own, in a thread of its own (so a sync
    fixture can use asyncpg whatever loop the test runs on)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        async def main() -> T:
            return await work()

        try:
            result.append(asyncio.run(main()))
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=target, name="feedsvc-test-pg-admin")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def database_url(url: str, name: str) -> str:
    """``url`` with its database replaced by ``name``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def pg_admin(url: str, *statements: str) -> None:
    """Run statements (outside a transaction) on the database of ``url``."""
    import asyncpg

    async def work() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    run_apart(work)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The PostgreSQL server's URL from the environment; skips the test when unset,
    fails it when the server does not answer."""
    url = os.environ.get(PG_ENV, "")
    if not url:
        pytest.skip(PG_SKIP_REASON)
    try:
        pg_admin(url, "SELECT 1")
    except Exception as e:
        raise RuntimeError(f"{PG_ENV}={url}: the PostgreSQL server does not answer: {e}") from e
    return url


_pg_databases = itertools.count(1)


@pytest.fixture(scope="session")
def pg_template(pg_server: str) -> Iterator[str]:
    """A migrated, empty database for the session (the template of ``pg_url``)."""
    from feedsvc.store.postgres import PostgresEventStore
    from feedsvc.store.postgres_tokens import PostgresTokenStore

    name = f"feedsvc_test_{uuid.uuid4().hex[:12]}"
    pg_admin(pg_server, f'CREATE DATABASE "{name}" TEMPLATE template0')
    url = database_url(pg_server, name)

    async def migrate() -> None:
        events = PostgresEventStore(url)
        await events.open()
        await events.close()
        tokens = PostgresTokenStore(url)
        await tokens.open()
        await tokens.close()

    try:
        run_apart(migrate)
        yield url
    finally:
        _drop_databases(pg_server, name)


def _drop_databases(server: str, prefix: str) -> None:
    """Drop the session's databases, ending whatever connections are left on them."""
    import asyncpg

    async def work() -> None:
        conn = await asyncpg.connect(server, timeout=10)
        try:
            names = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2",
                prefix,
                f"{prefix}\\_%",
            )
            for (name,) in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    run_apart(work)


def _own_database(server: str, session_url: str, template: str) -> Iterator[str]:
    """A new database named after the session's, copied from ``template``; dropped
    after the test."""
    name = f"{urlsplit(session_url).path.lstrip('/')}_{next(_pg_databases)}"
    pg_admin(server, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield database_url(server, name)
    finally:
        pg_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_server: str, pg_template: str) -> Iterator[str]:
    """A database of this test's own holding an empty, migrated log."""
    yield from _own_database(pg_server, pg_template, urlsplit(pg_template).path.lstrip("/"))


@pytest.fixture
def pg_fresh_url(pg_server: str, pg_template: str) -> Iterator[str]:
    """A database of this test's own with no feedsvc table in it."""
    yield from _own_database(pg_server, pg_template, "template0")


def pytest_unconfigure(config: pytest.Config) -> None:
    """One line at the very end saying how many PostgreSQL tests did not run and how
    to run them."""
    terminalreporter = config.pluginmanager.get_plugin("terminalreporter")
    if terminalreporter is None:
        return
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if PG_ENV in str(getattr(report, "longrepr", ""))
    ]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} PostgreSQL tests skipped: set "
            f"{PG_ENV}=postgresql://postgres@127.0.0.1:5432/postgres to run them",
            yellow=True,
            bold=True,
        )
